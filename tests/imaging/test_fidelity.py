"""Fidelity: the output shrunk back to the input's grid, scored and mapped."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import topaz_nb
from topaz_nb.imaging.fidelity import Fidelity, _ssim, fidelity, magma

PATCH = (96, 64, 64, 48)  # x, y, w, h in output pixels


def _scene(size: tuple[int, int] = (80, 60)) -> Image.Image:
    """A smooth gradient with a few soft shapes: every 4×4 block is near-flat."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 40 + 150 * xx / w
    g = 60 + 120 * yy / h
    b = 128 + 60 * np.sin(xx / 9) * np.cos(yy / 7)
    return Image.fromarray(np.stack([r, g, b], axis=-1).round().astype(np.uint8))


def _upscaled(inp: Image.Image, k: int = 4) -> Image.Image:
    return inp.resize((inp.width * k, inp.height * k), Image.Resampling.NEAREST)


def _patched(out: Image.Image) -> Image.Image:
    rng = np.random.default_rng(7)
    x, y, w, h = PATCH
    noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    patched = out.copy()
    patched.paste(Image.fromarray(noise), (x, y))
    return patched


def test_an_exact_upscale_is_faithful() -> None:
    inp = _scene()
    result = fidelity(inp, _upscaled(inp))
    assert isinstance(result, Fidelity)
    assert result.psnr > 60  # only the rounding of the linear-light round trip
    assert result.ssim == pytest.approx(1.0)
    assert result.heatmap.mode == "L" and result.heatmap.size == inp.size
    assert result.heatmap.getextrema() == (0, 0)
    assert result.regions == []


def test_an_invented_patch_scores_lower_lights_up_and_is_the_worst_region() -> None:
    inp = _scene()
    smooth = inp.resize((320, 240), Image.Resampling.LANCZOS)
    clean = fidelity(inp, smooth)
    bad = fidelity(inp, _patched(smooth))
    assert bad.psnr <= clean.psnr - 3
    assert bad.ssim < clean.ssim
    heat = np.asarray(bad.heatmap, dtype=np.float32)
    x, y, w, h = (v // 4 for v in PATCH)
    inside = heat[y:y + h, x:x + w].mean()
    outside = np.delete(heat, np.s_[y:y + h], axis=0).mean()
    assert inside > 10 * max(outside, 1)
    # The brightest pixel is over the patch.
    py, px = np.unravel_index(np.argmax(heat), heat.shape)
    assert x <= px < x + w and y <= py < y + h
    rx, ry, rw, rh = bad.regions[0]
    px0, py0, pw, ph = PATCH
    assert rx <= px0 and ry <= py0 and rx + rw >= px0 + pw and ry + rh >= py0 + ph
    assert rw * rh <= 4 * pw * ph  # around the patch, not the whole picture


def test_the_output_may_be_any_scale_and_regions_are_in_its_pixels() -> None:
    inp = _scene((90, 60))
    out = _patched(inp.resize((300, 200), Image.Resampling.LANCZOS))
    result = fidelity(inp, out)
    assert result.output_size == (300, 200)
    rx, ry, rw, rh = result.regions[0]
    px0, py0, pw, ph = PATCH
    assert rx <= px0 + pw // 2 <= rx + rw and ry <= py0 + ph // 2 <= ry + rh
    assert rx + rw <= 300 and ry + rh <= 200


def test_a_letterboxed_output_is_compared_where_the_input_lies() -> None:
    inp = _scene((80, 40))
    canvas = Image.new("RGB", (160, 160), "black")
    canvas.paste(_upscaled(inp, 2), (0, 40))
    result = fidelity(inp, canvas)
    assert result.psnr > 60  # only the rounding of the linear-light round trip
    assert result.regions == []


def test_arrays_and_paths_are_accepted(tmp_path: object) -> None:
    inp = _scene()
    path = tmp_path / "out.png"  # type: ignore[operator]
    _upscaled(inp).save(path)
    result = fidelity(np.asarray(inp), path)
    assert result.psnr > 60  # only the rounding of the linear-light round trip


def test_ssim_matches_the_usual_definition_on_a_known_case() -> None:
    x = np.tile(np.arange(16, dtype=np.float64) * 10, (16, 1))
    assert _ssim(x, x) == pytest.approx(1.0)
    # A constant offset keeps the structure and contrast, only the luminance term drops.
    shifted = _ssim(x, x + 20)
    assert 0.9 < shifted < 1.0
    assert _ssim(x, x[::-1, ::-1].copy()) < 0.5


def test_magma_runs_dark_to_light() -> None:
    table = magma()
    assert len(table) == 256
    assert sum(table[0]) < 30 and sum(table[-1]) > 650
    assert table[128][0] > table[128][2] - 60  # the purple-red middle


def test_the_overlay_is_transparent_where_nothing_changed() -> None:
    inp = _scene()
    result = fidelity(inp, _patched(_upscaled(inp)))
    overlay = result.overlay()
    assert overlay.mode == "RGBA" and overlay.size == inp.size
    assert overlay.getpixel((0, 0))[3] == 0
    x, y = PATCH[0] // 4 + 4, PATCH[1] // 4 + 4
    assert overlay.getpixel((x, y))[3] > 0


def test_fidelity_is_public_and_lazy() -> None:
    assert topaz_nb.fidelity is fidelity


# -- any geometry -----------------------------------------------------------------

_GEOMETRIES = [
    # (input size, output size): aspect changes, letterbox, crop, 1×, tiny, degenerate
    ((640, 480), (700, 500)),
    ((640, 480), (1280, 1000)),
    ((1920, 1080), (3840, 2400)),
    ((80, 60), (80, 60)),
    ((80, 60), (320, 240)),
    ((80, 60), (40, 30)),
    ((80, 60), (33, 70)),
    ((90, 60), (300, 200)),
    ((1, 1), (1, 1)),
    ((1, 1), (4, 4)),
    ((1, 1), (7, 3)),
    ((1, 9), (4, 36)),
    ((9, 1), (36, 4)),
    ((1, 9), (9, 1)),
    ((1000, 2), (2, 1000)),
    ((3, 1000), (12, 4000)),
    ((50, 50), (1, 1)),
    ((50, 50), (1, 300)),
    ((300, 1), (1, 1)),
]


@pytest.mark.parametrize("crop_to_fill", [None, True])
@pytest.mark.parametrize(("in_size", "out_size"), _GEOMETRIES)
def test_every_geometry_gives_scores_or_a_reason_and_never_raises(
        in_size: tuple[int, int], out_size: tuple[int, int], crop_to_fill: bool | None) -> None:
    inp = _scene(in_size)
    result = fidelity(inp, _scene(out_size), crop_to_fill=crop_to_fill)
    assert result.input_size == in_size and result.output_size == out_size
    assert result.heatmap.mode == "L" and result.heatmap.size == in_size
    assert result.overlay().size == in_size
    for x, y, w, h in result.regions:
        assert 0 <= x and 0 <= y and w >= 1 and h >= 1
        assert x + w <= out_size[0] and y + h <= out_size[1]
    if result.reason is None:
        assert result.psnr is not None and result.ssim is not None
        assert result.psnr > 0 and 0.0 <= result.ssim <= 1.0
    else:
        assert result.psnr is None and result.ssim is None and result.regions == []
        assert result.reason.startswith("not computed: ") and "\n" not in result.reason
        assert f"{out_size[0]}×{out_size[1]} output" in result.reason
        assert result.heatmap.getextrema() == (0, 0)


def test_the_aspect_changes_seen_in_use_are_scored() -> None:
    # Each raised "box offset can't be negative" (an offset of -3e-14 handed to Pillow).
    for in_size, out_size, crop in (((640, 480), (700, 500), None),
                                    ((640, 480), (1280, 1000), True),
                                    ((1920, 1080), (3840, 2400), True)):
        result = fidelity(Image.new("RGB", in_size), Image.new("RGB", out_size),
                          crop_to_fill=crop)
        assert (result.psnr, result.ssim, result.reason) == (math.inf, 1.0, None)


def test_an_output_covering_no_whole_input_pixel_says_so() -> None:
    result = fidelity(_scene((1000, 2)), _scene((2, 1000)), crop_to_fill=True)
    assert (result.psnr, result.ssim) == (None, None)
    assert result.reason == ("not computed: the 2×1000 output (cropped to fill) covers no "
                             "whole pixel of the 1000×2 input")
    assert result.as_dict() == {"psnr": None, "ssim": None, "regions": [],
                                "reason": result.reason}
    # Fitted instead (the API's default), the same pair is scored.
    assert fidelity(_scene((1000, 2)), _scene((2, 1000))).reason is None


@pytest.mark.parametrize("size", [(1, 1), (1, 9), (9, 1), (3, 1000), (1000, 3), (6, 6),
                                  (7, 7), (640, 480), (481, 97)])
def test_identical_images_are_identical_at_any_aspect(size: tuple[int, int]) -> None:
    image = _scene(size)
    result = fidelity(image, image.copy())
    assert result.psnr == math.inf and result.ssim == 1.0
    assert result.heatmap.getextrema() == (0, 0) and result.regions == []
    # An exact (pixel-repeating) upscale shrinks back to the very same pixels.
    exact = fidelity(image, image.resize((size[0] * 3, size[1] * 3), Image.Resampling.NEAREST))
    assert (exact.psnr, exact.ssim) == (math.inf, 1.0)


def test_a_changed_aspect_is_compared_where_the_input_lies() -> None:
    inp = _scene((160, 120))
    # Cropped to fill 1280×1000: the input is scaled by 1000/120 and its sides cut.
    wide = inp.resize((1333, 1000), Image.Resampling.LANCZOS).crop((26, 0, 1306, 1000))
    clean = fidelity(inp, wide, crop_to_fill=True)
    assert clean.reason is None and clean.psnr is not None and clean.psnr > 35
    assert clean.ssim is not None and clean.ssim > 0.97
    patched = wide.copy()
    patched.paste(Image.new("RGB", (120, 120), (255, 0, 255)), (600, 400))
    bad = fidelity(inp, patched, crop_to_fill=True)
    assert bad.psnr is not None and bad.psnr < clean.psnr - 10
    rx, ry, rw, rh = bad.regions[0]
    assert rx <= 660 <= rx + rw and ry <= 460 <= ry + rh


# -- the same numbers, band by band -----------------------------------------------

def _whole_image_reference(inp: Image.Image, out: Image.Image) -> tuple[float, float, np.ndarray]:
    """PSNR, SSIM and heat of an exact whole-factor shrink, computed over the
    whole image at once in float64 (the definition the module doc gives)."""
    k = out.width // inp.width
    a = np.asarray(out, dtype=np.float64) / 255
    linear = np.where(a <= 0.04045, a / 12.92, ((a + 0.055) / 1.055) ** 2.4)
    h, w = inp.height, inp.width
    mean = linear.reshape(h, k, w, k, 3).mean(axis=(1, 3))
    srgb = np.where(mean <= 0.0031308, mean * 12.92, 1.055 * mean ** (1 / 2.4) - 0.055) * 255
    ref = np.asarray(inp, dtype=np.float64)
    diff = srgb - ref
    psnr = 10 * math.log10(255.0 ** 2 / float((diff ** 2).mean()))
    weights = np.array([0.299, 0.587, 0.114])
    ssim = _ssim((ref @ weights).astype(np.float32), (srgb @ weights).astype(np.float32))
    heat = np.clip((np.abs(diff).max(axis=2) - 2.0) * 4.0, 0, 255) + 0.5
    return psnr, ssim, heat.astype(np.uint8)


def test_bands_give_the_numbers_of_the_whole_image(monkeypatch: pytest.MonkeyPatch) -> None:
    from topaz_nb.imaging import fidelity as module

    inp = _scene((203, 157))
    out = _patched(inp.resize((812, 628), Image.Resampling.LANCZOS))
    psnr, ssim, heat = _whole_image_reference(inp, out)
    default = fidelity(inp, out)
    # Bands of 30 rows and a last one of 7, shrunk 2 input rows at a time.
    monkeypatch.setattr(module, "_CHUNK_PIXELS", 203 * 30)
    monkeypatch.setattr(module, "_STRIP_ROWS", 8)
    banded = fidelity(inp, out)
    for result in (default, banded):
        assert result.psnr == pytest.approx(psnr, abs=1e-3)
        assert result.ssim == pytest.approx(ssim, abs=1e-6)
        got = np.asarray(result.heatmap, dtype=np.int16)
        assert np.abs(got - heat).max() <= 1 and (got != heat).mean() < 0.001
    assert banded.psnr == pytest.approx(default.psnr, rel=1e-9)
    assert banded.ssim == pytest.approx(default.ssim, rel=1e-9)
    assert banded.regions == default.regions


@pytest.mark.parametrize("size", [(677, 523), (1489, 1147), (90, 48)])
def test_bands_of_a_lanczos_shrink_are_those_of_pillow_over_the_whole_box(
        size: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole-factor reduce first above a 3× shrink (here 7.3×), plain Lanczos
    below it, and upscaling back for an output smaller than the input."""
    from topaz_nb.imaging import fidelity as module

    inp = _scene((203, 157))
    out = _patched(inp.resize(size, Image.Resampling.BICUBIC))
    box = (0.0, 0.0, float(size[0]), float(size[1]))
    table = module._srgb_to_linear_table()
    to_srgb = module._linear_to_srgb_table()
    whole = []
    for band in out.split():
        linear = band.point(table, "I").convert("F").resize(
            inp.size, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
        whole.append(to_srgb[np.clip(np.asarray(linear) + 0.5, 0, 1 << 16).astype(np.int32)])
    monkeypatch.setattr(module, "_STRIP_ROWS", 8)
    banded = module._Shrink(out, box, inp.size)
    assert not banded.whole
    planes = [np.concatenate(parts) for parts in zip(
        *(banded.rows(r, min(157, r + 20)) for r in range(0, 157, 20)))]
    for got, want in zip(planes, whole):
        assert np.abs(got - want).max() < 0.05


# -- memory -------------------------------------------------------------------------

_MEASURE = r"""
import gc, json, sys
import numpy as np
from PIL import Image
from topaz_nb.imaging.fidelity import fidelity

def status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

w, h, k = (int(v) for v in sys.argv[1:4])
rng = np.random.default_rng(1)
pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
inp = Image.fromarray(pixels)
big = np.repeat(np.repeat(pixels, k, axis=0), k, axis=1) if k > 1 else pixels.copy()
big[::7] ^= 3
out = Image.fromarray(big)
del pixels, big
fidelity(inp.crop((0, 0, 64, 64)), out.crop((0, 0, 64 * k, 64 * k)))  # imports, tables
gc.collect()
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak (VmHWM) to what is resident now
except OSError:
    print(json.dumps(None))
    sys.exit()
loaded = status("VmRSS")
result = fidelity(inp, out)
print(json.dumps({"loaded": loaded, "peak": status("VmHWM"), "psnr": result.psnr}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(("size", "scale"), [((4000, 3000), 1), ((1000, 750), 4)])
def test_extra_memory_stays_under_40_bytes_per_input_pixel(size: tuple[int, int],
                                                            scale: int) -> None:
    """A 12 MP photo through a 1× model, and a 4× upscale: the child's peak
    resident memory while scoring, over what it held with both images loaded."""
    run = subprocess.run([sys.executable, "-c", _MEASURE, str(size[0]), str(size[1]),
                          str(scale)], capture_output=True, text=True, timeout=240, check=True)
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    if measured is None:
        pytest.skip("this kernel does not let a process reset its peak memory")
    assert measured["psnr"] > 30
    extra = (measured["peak"] - measured["loaded"]) / (size[0] * size[1])
    assert extra <= 40, f"{extra:.1f} bytes per input pixel"
