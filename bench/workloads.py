"""Generated input/output pairs of realistic size, cached in ``bench/.cache/``.

Flat colour compresses absurdly well and would make every download and PNG
decode look free, so the outputs are a bundled demo photo upscaled to the
target size with per-pixel Gaussian noise (sensor-like grain) and a soft
vignette gradient.  That lands an 8000×6000 PNG at about 100 MB, the size real
upscaled photos have.  The input of each pair is the output shrunk 4× and
saved as JPEG, so both sides show the same scene, as after a real 4× upscale.

Generation takes a minute or two once (the 200 MP PNG dominates); later runs
find the files by name and reuse them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageChops

CACHE = Path(__file__).resolve().parent / ".cache"
_PHOTO = Path(__file__).resolve().parents[1] / "topaz_nb" / "sandbox" / "data" / "coffee.jpg"
_NOISE_SIGMA = 10.0
_SCALE = 4
_GENERATOR_VERSION = 1


@dataclass(frozen=True)
class Workload:
    """One comparison to measure: an input file and an output file on disk."""

    name: str
    output_size: tuple[int, int]
    output_format: str  # "png" or "jpeg"
    input_path: Path
    output_path: Path

    @property
    def input_size(self) -> tuple[int, int]:
        return (self.output_size[0] // _SCALE, self.output_size[1] // _SCALE)

    @property
    def output_megapixels(self) -> float:
        return self.output_size[0] * self.output_size[1] / 1e6

    def describe(self) -> dict[str, object]:
        data = asdict(self)
        data.update(input_path=str(self.input_path), output_path=str(self.output_path),
                    input_size=list(self.input_size), output_size=list(self.output_size),
                    input_bytes=self.input_path.stat().st_size,
                    output_bytes=self.output_path.stat().st_size)
        return data


#: name -> (output size, output format); the input is always a JPEG 4× smaller.
SPECS: dict[str, tuple[tuple[int, int], str]] = {
    "S": ((4000, 3000), "png"),
    "L-jpeg": ((8000, 6000), "jpeg"),
    "L-png": ((8000, 6000), "png"),
    "XL": ((16384, 12288), "png"),
    "RGBA": ((22000, 22000), "rgba-png"),
}


def _paths(name: str, size: tuple[int, int], fmt: str) -> tuple[Path, Path]:
    stem = f"v{_GENERATOR_VERSION}-{size[0]}x{size[1]}"
    ext = "jpg" if fmt == "jpeg" else "png"
    if fmt == "rgba-png":
        stem += "-rgba"
    return (CACHE / f"{stem}-input.jpg", CACHE / f"{stem}-output-{fmt}.{ext}")


def _photo_like(size: tuple[int, int]) -> Image.Image:
    """The demo photo cropped to 4:3, upscaled, with grain and a vignette.

    Everything runs in Pillow's C code (no per-pixel Python), so even 200 MP
    takes seconds, not minutes.
    """
    with Image.open(_PHOTO) as photo:
        src = photo.convert("RGB")
    w, h = src.size
    crop_w = min(w, round(h * 4 / 3))
    src = src.crop(((w - crop_w) // 2, 0, (w - crop_w) // 2 + crop_w, h))
    base = src.resize(size, Image.Resampling.BICUBIC)
    del src
    grain = Image.effect_noise(size, _NOISE_SIGMA)
    base = ImageChops.add(base, Image.merge("RGB", (grain, grain.rotate(180), grain.transpose(
        Image.Transpose.FLIP_LEFT_RIGHT))), scale=1.0, offset=-128)
    del grain
    vignette = Image.radial_gradient("L").resize(size, Image.Resampling.BILINEAR)
    shade = ImageChops.invert(vignette).point(lambda v: 200 + v * 55 // 255)
    return ImageChops.multiply(base, Image.merge("RGB", (shade, shade, shade)))


def _generate_rgba(size: tuple[int, int], input_path: Path, output_path: Path) -> None:
    """A large RGBA PNG of flat shapes over transparency, a few MB as a file but
    1.9 GB decoded (22000²): written by libvips, which streams it, since Pillow
    would have to hold it whole."""
    import pyvips

    w, h = size
    xy = pyvips.Image.xyz(w, h)
    x, y = xy[0], xy[1]
    ring = (((x - w / 2) ** 2 + (y - h / 2) ** 2) ** 0.5 / 900).cast("int") % 2
    red = (x * 255 / w).cast("uchar")
    green = (y * 255 / h).cast("uchar")
    blue = (ring * 200).cast("uchar")
    alpha = ((ring * 155) + 100).cast("uchar")
    image = red.bandjoin([green, blue, alpha]).copy(interpretation="srgb")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_suffix(".part.png")
    image.pngsave(str(tmp), compression=6)
    tmp.replace(output_path)
    if not input_path.exists():
        small = image.resize(1 / _SCALE).flatten(background=[128, 128, 128])
        tmp = input_path.with_suffix(".part.jpg")
        small.jpegsave(str(tmp), Q=92)
        tmp.replace(input_path)


def _generate(size: tuple[int, int], fmt: str, input_path: Path, output_path: Path) -> None:
    if fmt == "rgba-png":
        _generate_rgba(size, input_path, output_path)
        return
    image = _photo_like(size)
    CACHE.mkdir(parents=True, exist_ok=True)
    if not input_path.exists():
        small = image.reduce(_SCALE)
        tmp = input_path.with_suffix(".part")
        small.save(tmp, "JPEG", quality=92)
        tmp.replace(input_path)
    tmp = output_path.with_suffix(".part")
    if fmt == "jpeg":
        image.save(tmp, "JPEG", quality=95)
    else:
        image.save(tmp, "PNG")  # zlib level 6, what image tools write by default
    tmp.replace(output_path)


def ensure(names: list[str] | None = None, log: bool = True) -> list[Workload]:
    """The workloads, generating any whose files are missing (once)."""
    chosen = names or list(SPECS)
    workloads = []
    for name in chosen:
        size, fmt = SPECS[name]
        input_path, output_path = _paths(name, size, fmt)
        if not (input_path.exists() and output_path.exists()):
            started = time.perf_counter()
            if log:
                print(f"generating workload {name} ({size[0]}×{size[1]} {fmt}) in {CACHE} …",
                      flush=True)
            _generate(size, fmt, input_path, output_path)
            if log:
                print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
        workloads.append(Workload(name, size, fmt, input_path, output_path))
    return workloads


if __name__ == "__main__":
    for wl in ensure():
        print(wl.describe())
