"""Fidelity: the output shrunk back to the input's grid, scored and mapped."""

from __future__ import annotations

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
