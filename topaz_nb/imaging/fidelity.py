"""Fidelity: what an output changed beyond resolution.

An upscaler should add detail without changing what the input shows.  To see
whether it did, the output is brought back to the input's pixel grid and
compared with the input there:

* **Back to the input grid.**  The part of the output that lies over the
  input (:func:`topaz_nb.imaging.align`) is shrunk to the input's pixels in
  *linear light*: an exact area average when the scale is a whole number (the
  usual 2×, 4×, 6×), Lanczos otherwise.  Averaging sRGB values instead would
  darken every fine high-contrast detail the model added and show it as a
  change.  Pillow does the work on 32-bit bands: an 8-bit → linear table
  (``point``), then ``reduce`` or ``resize``; nothing runs per pixel in Python.
* **Scores.**  ``psnr`` over the three sRGB channels (peak 255) and ``ssim``,
  the mean structural similarity of the luma (Wang et al. 2004, 7×7 uniform
  window, sample covariance, K1 = 0.01, K2 = 0.03: scikit-image's defaults for
  ``structural_similarity(..., data_range=255)``), in NumPy with summed-area
  tables.
* **Heat map.**  An ``"L"`` image on the input grid: 0 where the two agree
  within :data:`TOLERANCE` levels (the rounding of a faithful resample),
  brighter with the largest channel difference, ×:data:`HEAT_GAIN`.
* **Regions.**  The heat map's worst connected areas, as boxes in the
  *output's* pixels, worst first.

Everything is computed on the input's grid, so its cost follows the input's
size; only the first shrink reads the output's pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from .align import Placement, align
from .previews import Derived

TOLERANCE = 2.0
"""Differences up to this many 8-bit levels count as agreement (heat 0)."""

HEAT_GAIN = 4.0
"""Heat is ``(difference − TOLERANCE) × HEAT_GAIN``, clipped at 255."""

MAX_REGIONS = 5
"""How many of the worst regions :class:`Fidelity` lists."""

_REGION_HEAT = 48
"""A cell of the heat map whose mean heat reaches this belongs to a region."""

_SSIM_WINDOW = 7
_K1, _K2 = 0.01, 0.03

# Matt Zucker's degree-6 polynomial fit of matplotlib's magma (CC0).
_MAGMA = (
    (-0.002136485053939582, -0.000749655052795221, -0.005386127855323933),
    (0.2516605407371642, 0.6775232436837668, 2.494026599312351),
    (8.353717279216625, -3.577719514958484, 0.3144679030132573),
    (-27.66873308576866, 14.26473078096533, -13.64921318813922),
    (52.17613981234068, -27.94360607168351, 12.94416944238394),
    (-50.76852536473588, 29.04658282127291, 4.23415299384598),
    (18.65570506591883, -11.48977351997711, -5.601961508734096),
)


def magma() -> list[tuple[int, int, int]]:
    """The 256 colours of the magma colormap (black → purple → orange → pale yellow)."""
    table = []
    for i in range(256):
        x = i / 255
        rgb = []
        for ch in range(3):
            v = 0.0
            for coeffs in reversed(_MAGMA):
                v = v * x + coeffs[ch]
            rgb.append(min(255, max(0, round(v * 255))))
        table.append((rgb[0], rgb[1], rgb[2]))
    return table


@dataclass(frozen=True)
class Fidelity:
    """How faithfully an output keeps its input's content.

    * ``psnr``: peak signal-to-noise ratio in dB of the output shrunk to the
      input's grid against the input (``inf`` when identical); higher is
      more faithful.
    * ``ssim``: mean structural similarity of their luma, 0–1 (1 identical).
    * ``heatmap``: a mode ``"L"`` image of the input's size, 0 where they
      agree and brighter where they differ.
    * ``regions``: up to :data:`MAX_REGIONS` boxes ``(x, y, w, h)`` in the
      output's pixels around the worst differences, worst first.
    * ``input_size``, ``output_size``, ``placement``: the geometry used.
    """

    psnr: float
    ssim: float
    heatmap: Image.Image = field(repr=False)
    regions: list[tuple[int, int, int, int]]
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    placement: Placement = field(repr=False)

    def overlay(self) -> Image.Image:
        """The heat map in magma colours, as RGBA: transparent where output
        and input agree, opaque from a third of the scale up, so faint
        differences tint the picture and strong ones cover it."""
        table = magma()
        heat = self.heatmap
        rgb = [heat.point([c[ch] for c in table]) for ch in range(3)]
        alpha = heat.point(lambda v: min(255, 3 * v))
        return Image.merge("RGBA", (*rgb, alpha))

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers for a table or JSON (no image)."""
        return {"psnr": self.psnr, "ssim": self.ssim,
                "regions": [list(r) for r in self.regions]}


def fidelity(input: Any, output: Any, *, crop_to_fill: bool | None = None) -> Fidelity:
    """Compare ``output`` with ``input`` on the input's grid (see the module doc).

    Both may be PIL images, arrays, paths, bytes or
    :class:`~topaz_nb.imaging.SourceImage`; the output may be any scale of the
    input and is aligned as :func:`topaz_nb.imaging.align` does.
    """
    inp = _pixels(input, "input")
    out = _pixels(output, "output")
    placement = align(inp.size, out.size, crop_to_fill=crop_to_fill)
    box_in, box_out = _overlap(placement, inp.size, out.size)
    x0, y0, x1, y1 = box_in
    shrunk = _shrink_linear(out, box_out, (x1 - x0, y1 - y0))
    reference = _planes(inp if box_in == (0, 0, *inp.size) else inp.crop(box_in))
    psnr, ssim, heat = _compare(reference, shrunk)
    np = _numpy()
    full_heat = np.zeros((inp.height, inp.width), dtype=np.uint8)
    full_heat[y0:y1, x0:x1] = heat
    heatmap = Image.fromarray(full_heat)
    regions = [_to_output(placement, r, out.size) for r in _regions(full_heat)]
    return Fidelity(psnr=psnr, ssim=ssim, heatmap=heatmap, regions=regions,
                    input_size=inp.size, output_size=out.size, placement=placement)


# -- steps ---------------------------------------------------------------------------

def _numpy() -> Any:
    import numpy

    return numpy


def _pixels(source: Any, label: str) -> Image.Image:
    from .source import SourceImage, load_image

    image = source if isinstance(source, SourceImage) else load_image(source, label=label)
    full = image.full()
    return full if full.mode == "RGB" else full.convert("RGB")


def _overlap(placement: Placement, in_size: tuple[int, int],
             out_size: tuple[int, int]) -> tuple[tuple[int, int, int, int],
                                                 tuple[float, float, float, float]]:
    """The whole input pixels the output covers, and the output box over them."""
    iw, ih = in_size
    ax, ay, aw, ah = placement.to_input(0, 0, *out_size)
    x0, y0 = max(0, math.ceil(ax - 1e-6)), max(0, math.ceil(ay - 1e-6))
    x1, y1 = min(iw, math.floor(ax + aw + 1e-6)), min(ih, math.floor(ay + ah + 1e-6))
    if x1 <= x0 or y1 <= y0:
        raise ValueError("the output does not cover any whole pixel of the input")
    bx, by, bw, bh = placement.to_output(x0, y0, x1 - x0, y1 - y0)
    return (x0, y0, x1, y1), (bx, by, bx + bw, by + bh)


_LINEAR_ONE = 1 << 16


def _srgb_to_linear_table() -> list[int]:
    table = []
    for v in range(256):
        c = v / 255
        lin = c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
        table.append(round(lin * _LINEAR_ONE))
    return table


def _shrink_linear(out: Image.Image, box: tuple[float, float, float, float],
                   size: tuple[int, int]) -> list[Any]:
    """The output's ``box`` shrunk to ``size`` in linear light: three sRGB planes (float32)."""
    np = _numpy()
    table = _srgb_to_linear_table()
    bx0, by0, bx1, by1 = box
    factor = (bx1 - bx0) / size[0]
    whole = round(factor)
    integer = (whole >= 1 and abs(factor - whole) < 1e-6
               and abs((by1 - by0) / size[1] - whole) < 1e-6
               and all(abs(v - round(v)) < 1e-6 for v in box))
    to_srgb = _linear_to_srgb_table()
    planes = []
    if integer:
        rounded = (round(box[0]), round(box[1]), round(box[2]), round(box[3]))
        crop = out if rounded == (0, 0, *out.size) else out.crop(rounded)
        for band in crop.split():
            linear = band.point(table, "I")
            if whole > 1:
                linear = linear.reduce(whole)
            planes.append(to_srgb[np.asarray(linear)])
    else:
        for band in out.split():
            linear = band.point(table, "I").convert("F")
            shrunk = np.asarray(linear.resize(size, Image.Resampling.LANCZOS, box=box,
                                              reducing_gap=3.0))
            index = np.clip(shrunk + 0.5, 0, _LINEAR_ONE).astype(np.int32)
            planes.append(to_srgb[index])
    return planes


def _linear_to_srgb_table() -> Any:
    """sRGB value (0–255, float32) of every linear level 0 … 2¹⁶ (a 256 KB table)."""
    np = _numpy()
    lin = np.arange(_LINEAR_ONE + 1, dtype=np.float64) / _LINEAR_ONE
    srgb = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055)
    return (srgb * 255).astype(np.float32)


def _planes(image: Image.Image) -> list[Any]:
    np = _numpy()
    return [np.asarray(band, dtype=np.float32) for band in image.split()]


def _window_mean(a: Any, k: int) -> Any:
    """Mean over every k×k window lying wholly inside ``a``: running sums along
    each axis by doubling (sums of 1, 2, 4, … neighbours), a few float32 adds a
    pixel and no long partial sums to lose precision in."""
    return _running_sum(_running_sum(a, k, 0), k, 1) * (1.0 / (k * k))


def _running_sum(a: Any, k: int, axis: int) -> Any:
    """Sums of ``k`` consecutive values along ``axis`` (length ``n - k + 1``)."""
    n = a.shape[axis] - k + 1

    def part(x: Any, start: int) -> Any:
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, start + n)
        return x[tuple(index)]

    total, offset, width, block = None, 0, 1, a
    while k:
        if k & 1:
            piece = part(block, offset)
            total = piece.copy() if total is None else total + piece
            offset += width
        k >>= 1
        if k:
            index = [slice(None)] * a.ndim
            head, tail = list(index), list(index)
            head[axis], tail[axis] = slice(None, -width), slice(width, None)
            block = block[tuple(head)] + block[tuple(tail)]
            width *= 2
    return total


def _compare(reference: list[Any], shrunk: list[Any]) -> tuple[float, float, Any]:
    np = _numpy()
    diffs = [s - r for r, s in zip(reference, shrunk)]
    mse = sum(float(np.vdot(d.ravel(), d.ravel())) for d in diffs) / (3 * diffs[0].size)
    psnr = math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)
    weights = (0.299, 0.587, 0.114)
    ssim = _ssim(sum(w * r for w, r in zip(weights, reference)),
                 sum(w * s for w, s in zip(weights, shrunk)))
    worst = np.maximum(np.maximum(np.abs(diffs[0]), np.abs(diffs[1])), np.abs(diffs[2]))
    worst -= TOLERANCE
    worst *= HEAT_GAIN
    np.clip(worst, 0, 255, out=worst)
    worst += 0.5
    return psnr, ssim, worst.astype(np.uint8)


def _ssim(x: Any, y: Any) -> float:
    """Mean SSIM of two 2-D arrays with values 0–255 (windows inside both only)."""
    np = _numpy()
    k = _SSIM_WINDOW
    if min(x.shape) < k:
        return 1.0 if np.array_equal(x, y) else float(
            max(0.0, 1 - np.mean(np.abs(x - y)) / 255))
    # Centred values keep the squares small, so float32 sums stay exact enough.
    x = np.asarray(x, dtype=np.float32) - 128
    y = np.asarray(y, dtype=np.float32) - 128
    n = k * k
    cov = n / (n - 1)
    mx, my = _window_mean(x, k), _window_mean(y, k)
    vx = cov * (_window_mean(x * x, k) - mx * mx)
    vy = cov * (_window_mean(y * y, k) - my * my)
    vxy = cov * (_window_mean(x * y, k) - mx * my)
    mx += 128
    my += 128
    c1, c2 = (_K1 * 255) ** 2, (_K2 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(min(1.0, max(0.0, float(s.mean(dtype=np.float64)))))


def _regions(heat: Any) -> list[tuple[int, int, int, int]]:
    """The worst connected hot areas of ``heat``, as input-pixel boxes, worst first.

    The map is scored in square cells (about 1/48 of the long side, at least
    8 px); hot cells that touch form a region, scored by its total heat, and
    its box is tightened to the hot pixels inside it.
    """
    np = _numpy()
    h, w = heat.shape
    cell = max(8, max(w, h) // 48)
    rows, cols = -(-h // cell), -(-w // cell)
    padded = np.zeros((rows * cell, cols * cell), dtype=np.float32)
    padded[:h, :w] = heat
    means = padded.reshape(rows, cell, cols, cell).mean(axis=(1, 3))
    hot = means >= _REGION_HEAT
    seen = np.zeros_like(hot)
    found: list[tuple[float, tuple[int, int, int, int]]] = []
    for r0, c0 in zip(*np.nonzero(hot)):
        if seen[r0, c0]:
            continue
        stack, cells = [(int(r0), int(c0))], []
        seen[r0, c0] = True
        while stack:
            r, c = stack.pop()
            cells.append((r, c))
            for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)):
                rr, cc = r + dr, c + dc
                if 0 <= rr < rows and 0 <= cc < cols and hot[rr, cc] and not seen[rr, cc]:
                    seen[rr, cc] = True
                    stack.append((rr, cc))
        rs, cs = [p[0] for p in cells], [p[1] for p in cells]
        y0, y1 = min(rs) * cell, min(h, (max(rs) + 1) * cell)
        x0, x1 = min(cs) * cell, min(w, (max(cs) + 1) * cell)
        # Tighten to the pixels as hot as a region's cells, reaching one cell
        # further for their edges.
        ey0, ey1 = max(0, y0 - cell), min(h, y1 + cell)
        ex0, ex1 = max(0, x0 - cell), min(w, x1 + cell)
        part = heat[ey0:ey1, ex0:ex1] >= _REGION_HEAT
        ys, xs = np.nonzero(part.any(axis=1))[0], np.nonzero(part.any(axis=0))[0]
        if len(ys) and len(xs):
            y0, y1 = ey0 + int(ys[0]), ey0 + int(ys[-1]) + 1
            x0, x1 = ex0 + int(xs[0]), ex0 + int(xs[-1]) + 1
        score = float(sum(means[r, c] for r, c in cells)) * cell * cell
        found.append((score, (x0, y0, x1 - x0, y1 - y0)))
    found.sort(key=lambda item: -item[0])
    return [box for _, box in found[:MAX_REGIONS]]


def _to_output(placement: Placement, box: tuple[int, int, int, int],
               out_size: tuple[int, int]) -> tuple[int, int, int, int]:
    x, y, w, h = placement.to_output(*box)
    ow, oh = out_size
    x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
    x1, y1 = min(ow, math.ceil(x + w)), min(oh, math.ceil(y + h))
    return (x0, y0, max(1, x1 - x0), max(1, y1 - y0))


# -- kept beside the download ------------------------------------------------------

_STORE_VERSION = 1


def cached_fidelity(input: Any, output: Any, *, input_file: Any = None, output_file: Any = None,
                    derived: Derived | None = None,
                    crop_to_fill: bool | None = None) -> Fidelity:
    """:func:`fidelity`, kept on disk beside a downloaded output.

    The scores and regions go to the output's derived file ``fidelity.json``
    and the heat map to ``fidelity.png``, at the paths ``derived`` hands out
    (the download cache's, so discarding the download or clearing the cache
    removes them).  The record names both files' sizes and modification times
    and the alignment rule, and is ignored once any of them changes.  Without
    ``derived``, or where it gives no path, it is computed every time.
    """
    import json
    import os
    from pathlib import Path

    meta_path = derived("fidelity.json") if derived is not None else None
    heat_path = derived("fidelity.png") if derived is not None else None
    stamp: dict[str, Any] | None = None
    if meta_path is not None and heat_path is not None and input_file is not None \
            and output_file is not None:
        try:
            a, b = Path(input_file).stat(), Path(output_file).stat()
            stamp = {"v": _STORE_VERSION, "crop_to_fill": crop_to_fill,
                     "input": [a.st_size, a.st_mtime_ns], "output": [b.st_size, b.st_mtime_ns]}
        except OSError:
            stamp = None
    if meta_path is None or heat_path is None or stamp is None:
        return fidelity(input, output, crop_to_fill=crop_to_fill)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("stamp") == stamp:
            with Image.open(heat_path) as im:
                heat = im.convert("L")
            in_size, out_size = tuple(meta["input_size"]), tuple(meta["output_size"])
            return Fidelity(psnr=float(meta["psnr"]), ssim=float(meta["ssim"]), heatmap=heat,
                            regions=[tuple(r) for r in meta["regions"]],  # type: ignore[misc]
                            input_size=in_size, output_size=out_size,  # type: ignore[arg-type]
                            placement=align(in_size, out_size, crop_to_fill=crop_to_fill))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    result = fidelity(input, output, crop_to_fill=crop_to_fill)
    suffix = f".{os.getpid()}.tmp"
    try:
        tmp = heat_path.with_name(heat_path.name + suffix)
        result.heatmap.save(tmp, "PNG")
        os.replace(tmp, heat_path)
        record = {"stamp": stamp, **result.as_dict(), "input_size": list(result.input_size),
                  "output_size": list(result.output_size)}
        record["psnr"] = result.psnr if math.isfinite(result.psnr) else 1e9
        tmp = meta_path.with_name(meta_path.name + suffix)
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, meta_path)
    except OSError:
        pass  # a cache that cannot be written only means computing again next time
    return result
