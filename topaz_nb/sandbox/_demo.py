"""Demo jobs: real photos as "enhanced" outputs, degraded copies as inputs.

The bundled photos (see ``data/LICENSES.md``) play the enhanced output; the
input is a quarter-size, slightly blurred, heavily compressed copy, so a 4×
comparison shows a visible difference.  Encoded bytes are cached per process,
so a second sandbox starts without re-encoding anything.
"""

from __future__ import annotations

import functools
import io
import uuid
from dataclasses import dataclass
from importlib import resources

from PIL import Image, ImageFilter

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

    @property
    def process_id(self) -> str:
        return str(uuid.uuid5(NAMESPACE, self.name))


DEMO_JOBS: tuple[DemoJob, ...] = (
    DemoJob("astronaut", "astronaut.jpg", "Standard V2", "Enhance", output_format="png",
            age=3 * 3600.0),
    DemoJob("coffee", "coffee.jpg", "Standard", "Sharpen", output_format="jpeg",
            age=2 * 3600.0),
    DemoJob("rocket-square", "rocket.jpg", "High Fidelity V2", "Enhance", output_format="jpeg",
            letterbox=(640, 640), age=3600.0, credits=2),
    DemoJob("chelsea", "chelsea.jpg", "Normal", "Denoise", status="Processing",
            output_format="png", ready_in=20.0),
    DemoJob("coffee-redefine", "coffee.jpg", "Redefine", "Enhance", model_type="Generative",
            status="Failed", output_format="jpeg", age=1800.0, credits=4,
            message="The generative model could not process this image; try another model."),
)
"""Completed jobs first: ``Sandbox.demo_ids`` keeps this order."""


def _photo(name: str) -> Image.Image:
    with (resources.files(__package__) / "data" / name).open("rb") as fh:
        image = Image.open(fh)
        image.load()
    return image.convert("RGB")


def _degrade(image: Image.Image) -> bytes:
    small = image.resize((max(1, image.width // 4), max(1, image.height // 4)),
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
    photo = _photo(job.photo)
    source = _degrade(photo)
    if job.status in ("Failed", "Cancelled"):
        return source, None
    enhanced = _letterbox(photo, job.letterbox) if job.letterbox else photo
    buf = io.BytesIO()
    if job.output_format == "png":
        enhanced.save(buf, "PNG", compress_level=1)
    else:
        enhanced.save(buf, "JPEG", quality=95)
    return source, buf.getvalue()


# -- a model shoot-out: one source, three "models" --------------------------------------

@dataclass(frozen=True)
class ShootoutModel:
    """One of the shoot-out's "models": a name and what it does to the source."""

    name: str
    model: str
    effect: str  # "lanczos", "sharpen" or "invent"

    @property
    def process_id(self) -> str:
        return str(uuid.uuid5(NAMESPACE, "shootout/" + self.name))


SHOOTOUT_PHOTO = "coffee.jpg"
SHOOTOUT_SCALE = 4
SHOOTOUT_MODELS: tuple[ShootoutModel, ...] = (
    ShootoutModel("lanczos", "Lanczos (reference)", "lanczos"),
    ShootoutModel("sharpen", "Sharpen Standard", "sharpen"),
    ShootoutModel("invent", "Generative Redefine", "invent"),
)
"""A plain upscale, a sharpened one, and one that invents a small patch."""

SHOOTOUT_SOURCE_ID = str(uuid.uuid5(NAMESPACE, "shootout/source"))
"""The one ``source_id`` every shoot-out process reports."""


def shootout_patch(output_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where the "invent" model pastes content that is not in the input (output pixels)."""
    w, h = output_size
    return (w * 5 // 8, h // 4, w // 8, h // 6)


@functools.cache
def shootout_bytes() -> tuple[bytes, dict[str, bytes]]:
    """``(input, {model name: output})``: a quarter-size photo and three 4× results.

    Made from a bundled photo on first use (a second or two), so the
    repository carries no extra files.
    """
    photo = _photo(SHOOTOUT_PHOTO)
    small = photo.resize((photo.width // SHOOTOUT_SCALE, photo.height // SHOOTOUT_SCALE),
                         Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, "PNG")
    source = buf.getvalue()
    size = (small.width * SHOOTOUT_SCALE, small.height * SHOOTOUT_SCALE)
    plain = small.resize(size, Image.Resampling.LANCZOS)
    outputs: dict[str, bytes] = {}
    for spec in SHOOTOUT_MODELS:
        image = plain
        if spec.effect == "sharpen":
            image = plain.filter(ImageFilter.UnsharpMask(radius=2, percent=120, threshold=2))
        elif spec.effect == "invent":
            image = plain.copy()
            x, y, w, h = shootout_patch(size)
            # Content the input does not have: another part of the scene,
            # mirrored and enlarged, pasted in as a model might hallucinate it.
            donor = photo.crop((0, 0, photo.width // 4, photo.height // 4))
            donor = donor.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((w, h))
            image.paste(donor, (x, y))
        out = io.BytesIO()
        image.save(out, "PNG", compress_level=1)
        outputs[spec.name] = out.getvalue()
    return source, outputs
