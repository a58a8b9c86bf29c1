"""Demo jobs: real photos as "enhanced" outputs, degraded copies as inputs.

The bundled photos (see ``data/LICENSES.md``) play the enhanced output; the
input is a smaller (a quarter or a half), slightly blurred, heavily compressed
copy, so the comparison shows a visible difference.  Four photos become a
batch of two dozen processes by deriving variants at start-up (crops, flips,
tone changes, other scales), so the repository carries only the four files.
Encoded bytes are cached per process, so a second sandbox starts without
re-encoding anything.
"""

from __future__ import annotations

import functools
import io
import uuid
from dataclasses import dataclass
from importlib import resources

from PIL import Image, ImageEnhance, ImageFilter, ImageOps

NAMESPACE = uuid.UUID("6f1c2a4e-93b5-4d1e-9a57-3c0b8d2e7f10")


@dataclass(frozen=True)
class DemoJob:
    """One seeded job: ``photo`` is a file in ``data/``; ``ready_in`` makes it finish later."""

    name: str
    photo: str
    model: str
    category: str
    model_type: str = "GAN"
    status: str = "Completed"
    output_format: str = "png"
    letterbox: tuple[int, int] | None = None
    ready_in: float | None = None
    age: float = 0.0
    credits: int = 1
    message: str | None = None
    variant: str = ""
    """A derivation of the photo: ``crop-*``, ``flip``, ``mirror``, ``warm``,
    ``cool``, ``dark``, ``bright``, ``gray`` (see :func:`_variant`)."""
    scale: int = 4
    """The input is the output's size divided by this."""

    @property
    def process_id(self) -> str:
        return str(uuid.uuid5(NAMESPACE, self.name))


_FAILED_FACE = "Face recovery found no face in this image; try Standard V2 instead."

DEMO_JOBS: tuple[DemoJob, ...] = (
    DemoJob("astronaut", "astronaut.jpg", "Standard V2", "Enhance", output_format="png",
            age=3 * 3600.0),
    DemoJob("coffee", "coffee.jpg", "Standard", "Sharpen", output_format="jpeg",
            age=2 * 3600.0),
    DemoJob("rocket-square", "rocket.jpg", "High Fidelity V2", "Enhance", output_format="jpeg",
            letterbox=(640, 640), age=3600.0, credits=2),
    DemoJob("chelsea", "chelsea.jpg", "Normal", "Denoise", status="Processing",
            output_format="png", ready_in=30.0),
    DemoJob("coffee-redefine", "coffee.jpg", "Redefine", "Enhance", model_type="Generative",
            status="Failed", output_format="jpeg", age=1800.0, credits=4,
            message="The generative model could not process this image; try another model."),
    # The rest of the batch: variants of the same four photos, older than the above.
    DemoJob("astronaut-face", "astronaut.jpg", "Low Resolution V2", "Enhance",
            variant="crop-top", age=4 * 3600.0),
    DemoJob("astronaut-mirror", "astronaut.jpg", "Standard V2", "Enhance", variant="mirror",
            scale=2, age=4.5 * 3600.0),
    DemoJob("astronaut-warm", "astronaut.jpg", "High Fidelity V2", "Enhance",
            variant="warm", output_format="jpeg", age=5 * 3600.0, credits=2),
    DemoJob("astronaut-gray", "astronaut.jpg", "CGI", "Enhance", variant="gray",
            age=5.5 * 3600.0),
    DemoJob("coffee-cup", "coffee.jpg", "Standard", "Sharpen", variant="crop-center",
            output_format="jpeg", age=6 * 3600.0),
    DemoJob("coffee-dark", "coffee.jpg", "Strong", "Denoise", variant="dark", scale=2,
            age=6.5 * 3600.0),
    DemoJob("coffee-flip", "coffee.jpg", "Standard V2", "Enhance", variant="flip",
            output_format="jpeg", age=7 * 3600.0),
    DemoJob("coffee-cool", "coffee.jpg", "Text Refine", "Enhance", variant="cool",
            age=8 * 3600.0),
    DemoJob("rocket-launch", "rocket.jpg", "Standard V2", "Enhance", variant="crop-bottom",
            age=9 * 3600.0),
    DemoJob("rocket-bright", "rocket.jpg", "High Fidelity V2", "Enhance", variant="bright",
            scale=2, output_format="jpeg", age=10 * 3600.0, credits=2),
    DemoJob("rocket-mirror", "rocket.jpg", "Lens Blur", "Sharpen", variant="mirror",
            age=11 * 3600.0),
    DemoJob("rocket-recovery", "rocket.jpg", "Recovery", "Enhance", model_type="Generative",
            variant="crop-top", age=12 * 3600.0, credits=4),
    DemoJob("chelsea-face", "chelsea.jpg", "Low Resolution V2", "Enhance",
            variant="crop-center", age=13 * 3600.0),
    DemoJob("chelsea-warm", "chelsea.jpg", "Standard V2", "Enhance", variant="warm",
            scale=2, output_format="jpeg", age=14 * 3600.0),
    DemoJob("chelsea-gray", "chelsea.jpg", "Normal", "Denoise", variant="gray",
            age=16 * 3600.0),
    DemoJob("chelsea-flip", "chelsea.jpg", "CGI", "Enhance", variant="flip",
            age=18 * 3600.0),
    DemoJob("astronaut-bright", "astronaut.jpg", "Standard", "Sharpen", variant="bright",
            output_format="jpeg", age=24 * 3600.0),
    DemoJob("rocket-cool", "rocket.jpg", "Text Refine", "Enhance", variant="cool",
            scale=2, age=30 * 3600.0),
    DemoJob("chelsea-dark", "chelsea.jpg", "Face Recovery V1", "Enhance",
            model_type="Generative", status="Failed", variant="dark", age=20 * 3600.0,
            credits=4, message=_FAILED_FACE),
)
"""``Sandbox.demo_ids`` keeps this order: the first is a Completed process (what
``topaz-nb --demo fetch first`` opens), the fourth finishes 30 s after the
sandbox starts (for ``--wait``), the fifth and the last are Failed."""


def _photo(name: str) -> Image.Image:
    with (resources.files(__package__) / "data" / name).open("rb") as fh:
        image = Image.open(fh)
        image.load()
    return image.convert("RGB")


def _variant(image: Image.Image, variant: str) -> Image.Image:
    """The photo as a variant job shows it: cropped, flipped, or in another tone."""
    w, h = image.size
    if variant.startswith("crop-"):
        side = min(w, h) * 5 // 8
        x = (w - side) // 2
        y = {"top": 0, "center": (h - side) // 2, "bottom": h - side}[variant[5:]]
        return image.crop((x, y, x + side, y + side))
    if variant == "flip":
        return ImageOps.flip(image)
    if variant == "mirror":
        return ImageOps.mirror(image)
    if variant == "gray":
        return ImageOps.grayscale(image).convert("RGB")
    if variant in ("warm", "cool"):
        r, g, b = image.split()
        more, less = (r, b) if variant == "warm" else (b, r)
        more = more.point(lambda v: min(255, int(v * 1.12)))
        less = less.point(lambda v: int(v * 0.88))
        return Image.merge("RGB", (more, g, less) if variant == "warm" else (less, g, more))
    if variant in ("dark", "bright"):
        return ImageEnhance.Brightness(image).enhance(0.6 if variant == "dark" else 1.3)
    if variant:
        raise ValueError(f"unknown demo variant {variant!r}")
    return image


def _degrade(image: Image.Image, scale: int = 4) -> bytes:
    small = image.resize((max(1, image.width // scale), max(1, image.height // scale)),
                         Image.Resampling.BILINEAR)
    small = small.filter(ImageFilter.GaussianBlur(0.6))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=35)
    return buf.getvalue()


def _letterbox(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    scale = min(size[0] / image.width, size[1] / image.height)
    fitted = image.resize((round(image.width * scale), round(image.height * scale)),
                          Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", size, (0, 0, 0))
    canvas.paste(fitted, ((size[0] - fitted.width) // 2, (size[1] - fitted.height) // 2))
    return canvas


@functools.cache
def demo_bytes(job: DemoJob) -> tuple[bytes, bytes | None]:
    """``(input, output)`` encoded files of a demo job; no output for a failed job."""
    photo = _variant(_photo(job.photo), job.variant)
    source = _degrade(photo, job.scale)
    if job.status in ("Failed", "Cancelled"):
        return source, None
    enhanced = _letterbox(photo, job.letterbox) if job.letterbox else photo
    buf = io.BytesIO()
    if job.output_format == "png":
        enhanced.save(buf, "PNG", compress_level=1)
    else:
        enhanced.save(buf, "JPEG", quality=95)
    return source, buf.getvalue()
