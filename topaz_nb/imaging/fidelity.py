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
  At 1× the output's own values are compared.
* **Scores.**  ``psnr`` over the three sRGB channels (peak 255) and ``ssim``,
  the mean structural similarity of the luma (Wang et al. 2004, 7×7 uniform
  window, sample covariance, K1 = 0.01, K2 = 0.03: scikit-image's defaults for
  ``structural_similarity(..., data_range=255)``), in NumPy with window sums.
* **Heat map.**  An ``"L"`` image on the input grid: 0 where the two agree
  within :data:`TOLERANCE` levels (the rounding of a faithful resample),
  brighter with the largest channel difference, ×:data:`HEAT_GAIN`.
* **Regions.**  The heat map's worst connected areas, as boxes in the
  *output's* pixels, worst first.

Everything is computed on the input's grid, in bands of rows: a band of the
output is shrunk (in strips that stay in the CPU's cache), compared, and
dropped before the next, with the last rows of its luma carried over so that
every SSIM window counts once.  The extra memory is the one-byte heat map
(held twice while it becomes an image) and a few megabytes of working arrays,
at any size, and no full-size copy of either image is made; only the shrink
reads the output's pixels.

Any geometry the view can show gives a result: an output of another aspect
is compared where it overlaps the input (letterboxed or cropped to fill), and
one covering no whole input pixel gives a :class:`Fidelity` whose ``reason``
says so, with no scores.
"""

from __future__ import annotations

import functools
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
    * ``reason``: ``None`` when the scores were computed; otherwise one line
      saying why they could not be (an output that covers no whole pixel of
      its input; for a Topaz result or a view, also an image that could not
      be decoded whole), and then ``psnr`` and ``ssim`` are ``None``, the heat
      map is all 0 and there are no regions.  Callers show the line where the
      scores would be; nothing is raised for any geometry.
    """

    psnr: float | None
    ssim: float | None
    heatmap: Image.Image = field(repr=False)
    regions: list[tuple[int, int, int, int]]
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    placement: Placement = field(repr=False)
    reason: str | None = None

    @classmethod
    def not_computed(cls, input_size: tuple[int, int], output_size: tuple[int, int],
                     reason: str, *, crop_to_fill: bool | None = None) -> Fidelity:
        """The result that says ``reason`` instead of scores (see :attr:`reason`)."""
        return cls(psnr=None, ssim=None, heatmap=Image.new("L", input_size), regions=[],
                   input_size=input_size, output_size=output_size,
                   placement=align(input_size, output_size, crop_to_fill=crop_to_fill),
                   reason=reason)

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
                "regions": [list(r) for r in self.regions], "reason": self.reason}


def fidelity(input: Any, output: Any, *, crop_to_fill: bool | None = None) -> Fidelity:
    """Compare ``output`` with ``input`` on the input's grid (see the module doc).

    Both may be PIL images, arrays, paths, bytes or
    :class:`~topaz_nb.imaging.SourceImage`; the output may be any scale and
    aspect of the input and is aligned as :func:`topaz_nb.imaging.align`
    does.  Where the scores cannot be computed the result says why in
    :attr:`Fidelity.reason` instead of raising; only an image that cannot be
    decoded raises (:class:`~topaz_nb.errors.ImageError`).
    """
    inp = _pixels(input, "input")
    out = _pixels(output, "output")
    placement = align(inp.size, out.size, crop_to_fill=crop_to_fill)
    overlap = _overlap(placement, inp.size, out.size)
    if overlap is None:
        from .._text import fidelity_no_overlap

        return Fidelity.not_computed(inp.size, out.size,
                                     fidelity_no_overlap(inp.size, out.size, crop_to_fill),
                                     crop_to_fill=crop_to_fill)
    box_in, box_out = overlap
    np = _numpy()
    full_heat = np.zeros((inp.height, inp.width), dtype=np.uint8)
    psnr, ssim = _score(inp, out, box_in, box_out, full_heat)
    heatmap = Image.fromarray(full_heat)
    regions = [_to_output(placement, r, out.size) for r in _regions(full_heat)]
    return Fidelity(psnr=psnr, ssim=ssim, heatmap=heatmap, regions=regions,
                    input_size=inp.size, output_size=out.size, placement=placement)


# -- steps ---------------------------------------------------------------------------

_CHUNK_PIXELS = 1 << 16
"""Input pixels compared at a time (at least 28 rows): each of the twenty-odd
float32 working planes is about 256 KB, so a band stays in cache and memory
does not grow with the image beyond the one-byte heat map.  For 2000×1500
against 8000×6000 on one core here, 64 K pixels took 0.26 s and 128 K 0.27 s."""

_REDUCING_GAP = 3.0
"""Above this shrink a non-whole scale is box-reduced by a whole factor
before Lanczos (Pillow's ``reducing_gap``): as sharp, and faster."""

_STRIP_ROWS = 32
"""Output rows shrunk at a time: a strip whose 32-bit band (1 MB for an
8000-px row) stays in the CPU's cache between the table, the reduce and the
copy out; about twice as fast as passing over the whole output, and 64 rows
were 15 % slower."""


def _numpy() -> Any:
    import numpy

    return numpy


def _pixels(source: Any, label: str) -> Image.Image:
    """The decoded image as it is (any mode): strips are converted to RGB as
    they are read, so no full-size copy is made."""
    from .source import SourceImage, load_image

    image = source if isinstance(source, SourceImage) else load_image(source, label=label)
    return image.full()


def _overlap(placement: Placement, in_size: tuple[int, int], out_size: tuple[int, int],
             ) -> tuple[tuple[int, int, int, int], tuple[float, float, float, float]] | None:
    """The whole input pixels the output covers, and the output box over them
    (clamped to the output: a float rounding of about 1e-14 past its edge is
    no pixel); ``None`` when the output covers no whole input pixel."""
    iw, ih = in_size
    ow, oh = out_size
    ax, ay, aw, ah = placement.to_input(0, 0, *out_size)
    x0, y0 = max(0, math.ceil(ax - 1e-6)), max(0, math.ceil(ay - 1e-6))
    x1, y1 = min(iw, math.floor(ax + aw + 1e-6)), min(ih, math.floor(ay + ah + 1e-6))
    if x1 <= x0 or y1 <= y0:
        return None
    bx, by, bw, bh = placement.to_output(x0, y0, x1 - x0, y1 - y0)
    box = (min(max(0.0, bx), ow), min(max(0.0, by), oh),
           min(max(0.0, bx + bw), ow), min(max(0.0, by + bh), oh))
    if box[2] <= box[0] or box[3] <= box[1]:
        return None
    return (x0, y0, x1, y1), box


_LINEAR_ONE = 1 << 16


@functools.cache
def _srgb_to_linear_table() -> list[float]:
    """Linear level (a whole number, 0 … 2¹⁶) of every 8-bit sRGB value, as
    floats: Pillow maps a band through it into 32-bit float pixels (faster
    than into integers, and the means round to the same levels)."""
    table = []
    for v in range(256):
        c = v / 255
        lin = c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
        table.append(float(round(lin * _LINEAR_ONE)))
    return table


@functools.cache
def _linear_to_srgb_table() -> Any:
    """sRGB value (0–255, float32) of every linear level 0 … 2¹⁶ (a 256 KB table).

    The 256 levels an 8-bit value maps to give that value back exactly, so a
    block of one colour shrinks to that colour and an exact upscale scores
    ``inf``."""
    np = _numpy()
    lin = np.arange(_LINEAR_ONE + 1, dtype=np.float64) / _LINEAR_ONE
    srgb = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055)
    table = (srgb * 255).astype(np.float32)
    table[[int(v) for v in _srgb_to_linear_table()]] = np.arange(256, dtype=np.float32)
    table.flags.writeable = False
    return table


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def _planes(image: Image.Image) -> list[Any]:
    np = _numpy()
    return [np.asarray(band, dtype=np.float32) for band in _rgb(image).split()]


class _Shrink:
    """The output's box shrunk to the input's grid in linear light, a band of
    input rows at a time: :meth:`rows` gives three sRGB planes (float32).

    An exact area average when the scale is a whole number (Pillow's
    ``reduce`` of 32-bit linear bands; at 1× the output's own values), Lanczos
    otherwise (``resize`` of a crop reaching past the band by the filter's
    support, so the band's pixels are those of shrinking the whole box)."""

    def __init__(self, out: Image.Image, box: tuple[float, float, float, float],
                 size: tuple[int, int]) -> None:
        self.out, self.box, self.size = out, box, size
        bx0, by0, bx1, by1 = box
        factor = (bx1 - bx0) / size[0]
        whole = round(factor)
        self.whole = whole if (
            whole >= 1 and abs(factor - whole) < 1e-6
            and abs((by1 - by0) / size[1] - whole) < 1e-6
            and all(abs(v - round(v)) < 1e-6 for v in box)) else 0

    def rows(self, r0: int, r1: int) -> list[Any]:
        """Input rows ``r0 … r1`` (counted from the box's top), as three planes."""
        np = _numpy()
        planes = [np.empty((r1 - r0, self.size[0]), dtype=np.float32) for _ in range(3)]
        if self.whole:
            self._exact(r0, r1, planes)
        else:
            self._lanczos(r0, r1, planes)
        return planes

    def _exact(self, r0: int, r1: int, planes: list[Any]) -> None:
        np = _numpy()
        k, w = self.whole, self.size[0]
        ox, oy = round(self.box[0]), round(self.box[1])
        table, to_srgb = _srgb_to_linear_table(), _linear_to_srgb_table()
        step = max(1, _STRIP_ROWS // k)
        for s0 in range(r0, r1, step):
            s1 = min(r1, s0 + step)
            strip = _rgb(self.out.crop((ox, oy + s0 * k, ox + w * k, oy + s1 * k)))
            for plane, band in zip(planes, strip.split()):
                target = plane[s0 - r0:s1 - r0]
                if k == 1:
                    target[...] = np.asarray(band)
                else:
                    mean = np.asarray(band.point(table, "F").reduce(k))
                    index = (mean + 0.5).astype(np.int32)
                    np.take(to_srgb, index, out=target, mode="clip")

    def _lanczos(self, r0: int, r1: int, planes: list[Any]) -> None:
        """Pillow's ``resize(LANCZOS, box, reducing_gap=3.0)`` of the whole box,
        band by band: the same whole-factor reduce from the same origin first
        (:data:`_REDUCING_GAP`), then Lanczos over a crop of the reduced rows
        reaching past the band by the filter's support."""
        np = _numpy()
        ow, oh = self.out.size
        bx0, by0, bx1, by1 = self.box
        w, h = self.size
        sx, sy = (bx1 - bx0) / w, (by1 - by0) / h
        fx, fy = int(sx / _REDUCING_GAP) or 1, int(sy / _REDUCING_GAP) or 1
        if fx > 1 or fy > 1:
            # Pillow's "safe box": the box widened by the filter's support.
            px, py = 2.5 * sx, 2.5 * sy
            origin = (max(0, int(bx0 - px)), max(0, int(by0 - py)),
                      min(ow, math.ceil(bx1 + px)), min(oh, math.ceil(by1 + py)))
        else:
            origin = (0, 0, ow, oh)
        ox0, oy0, ox1, oy1 = origin
        # The box and the reduced image's size on the reduced grid.
        gx0, gy0, gx1 = (bx0 - ox0) / fx, (by0 - oy0) / fy, (bx1 - ox0) / fx
        gw, gh = -(-(ox1 - ox0) // fx), -(-(oy1 - oy0) // fy)
        gsx, gsy = sx / fx, sy / fy
        # Lanczos reaches 3 pixels each way, widened by the shrink; two more
        # cover the rounding of where Pillow starts it.
        reach_x, reach_y = 3 * max(1.0, gsx) + 2, 3 * max(1.0, gsy) + 2
        cx0, cx1 = max(0, math.floor(gx0 - reach_x)), min(gw, math.ceil(gx1 + reach_x))
        table, to_srgb = _srgb_to_linear_table(), _linear_to_srgb_table()
        step = max(8, math.ceil(_STRIP_ROWS * 2 / sy))
        for s0 in range(r0, r1, step):
            s1 = min(r1, s0 + step)
            top, bottom = gy0 + s0 * gsy, gy0 + s1 * gsy
            cy0, cy1 = max(0, math.floor(top - reach_y)), min(gh, math.ceil(bottom + reach_y))
            strip = _rgb(self.out.crop((ox0 + cx0 * fx, oy0 + cy0 * fy,
                                        min(ox1, ox0 + cx1 * fx), min(oy1, oy0 + cy1 * fy))))
            box = (gx0 - cx0, top - cy0, min(gx1, cx1) - cx0, min(bottom, cy1) - cy0)
            for plane, band in zip(planes, strip.split()):
                linear = band.point(table, "F")
                if fx > 1 or fy > 1:
                    linear = linear.reduce((fx, fy))
                shrunk = np.asarray(linear.resize((w, s1 - s0), Image.Resampling.LANCZOS,
                                                  box=box))
                index = np.clip(shrunk + 0.5, 0, _LINEAR_ONE).astype(np.int32)
                np.take(to_srgb, index, out=plane[s0 - r0:s1 - r0], mode="clip")


def _score(inp: Image.Image, out: Image.Image, box_in: tuple[int, int, int, int],
           box_out: tuple[float, float, float, float], heat: Any) -> tuple[float, float]:
    """PSNR and SSIM over the input's ``box_in``, filling ``heat`` there.

    The box is taken in bands of rows (:data:`_CHUNK_PIXELS`); each band's
    sums are kept in float64, and the last rows of its luma carry over to the
    next band, so every SSIM window is counted once, exactly as over the whole
    box at once."""
    np = _numpy()
    x0, y0, x1, y1 = box_in
    w, h = x1 - x0, y1 - y0
    shrink = _Shrink(out, box_out, (w, h))
    k = _SSIM_WINDOW
    windowed = min(w, h) >= k
    rows = max(4 * k, -(-_CHUNK_PIXELS // w))
    sse = ssim_sum = 0.0
    carry: tuple[Any, Any] | None = None
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        reference = _planes(inp.crop((x0, y0 + r0, x1, y0 + r1)))
        shrunk = shrink.rows(r0, r1)
        diffs = [s - r for r, s in zip(reference, shrunk)]
        heat[y0 + r0:y0 + r1, x0:x1] = _heat(diffs)
        for d in diffs:  # squares rounded alike in any band, summed in float64
            sse += float(np.square(d, out=d).sum(dtype=np.float64))
        del diffs
        lx, ly = _luma(reference), _luma(shrunk)
        del reference, shrunk
        if not windowed:
            ssim_sum += float(np.abs(lx - ly).sum(dtype=np.float64))
            continue
        if carry is not None:
            lx, ly = np.concatenate((carry[0], lx)), np.concatenate((carry[1], ly))
        if lx.shape[0] >= k:
            ssim_sum += _ssim_sum(lx, ly)
        carry = (lx[-(k - 1):].copy(), ly[-(k - 1):].copy())
    mse = sse / (3 * w * h)
    psnr = math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)
    if windowed:
        ssim = ssim_sum / ((w - k + 1) * (h - k + 1))
    else:  # too small for one window: how far apart the luma is, on average
        ssim = 1 - ssim_sum / (w * h) / 255
    return psnr, float(min(1.0, max(0.0, ssim)))


def _luma(planes: list[Any]) -> Any:
    """Luma (Rec. 601 weights) of three float32 planes."""
    r, g, b = planes
    y = 0.299 * r
    y += 0.587 * g
    y += 0.114 * b
    return y


def _heat(diffs: list[Any]) -> Any:
    """The largest channel difference beyond :data:`TOLERANCE`, ×:data:`HEAT_GAIN`, as uint8."""
    np = _numpy()
    worst = np.abs(diffs[0])
    for d in diffs[1:]:
        np.maximum(worst, np.abs(d), out=worst)
    worst -= TOLERANCE
    worst *= HEAT_GAIN
    np.clip(worst, 0, 255, out=worst)
    worst += 0.5
    return worst.astype(np.uint8)


def _window_mean(a: Any, k: int) -> Any:
    """Mean over every k×k window lying wholly inside ``a``: running sums along
    each axis by doubling (sums of 1, 2, 4, … neighbours), a few float32 adds a
    pixel and no long partial sums to lose precision in."""
    total = _running_sum(_running_sum(a, k, 0), k, 1)
    total *= 1.0 / (k * k)
    return total


def _running_sum(a: Any, k: int, axis: int) -> Any:
    """Sums of ``k`` consecutive values along ``axis`` (length ``n - k + 1``)."""
    n = a.shape[axis] - k + 1

    def cut(x: Any, start: int, stop: int | None) -> Any:
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, stop)
        return x[tuple(index)]

    total: Any = None
    owned, offset, width, block = False, 0, 1, a
    while k:
        if k & 1:
            piece = cut(block, offset, offset + n)
            if total is None:
                total = piece  # a view: never added into
            elif owned:
                total += piece
            else:
                total, owned = total + piece, True
            offset += width
        k >>= 1
        if k:
            block = cut(block, 0, -width) + cut(block, width, None)
            width *= 2
    return total if owned else total.copy()


def _ssim_sum(x: Any, y: Any) -> float:
    """The sum of the SSIM of every 7×7 window wholly inside two 2-D luma arrays (0–255)."""
    np = _numpy()
    k = _SSIM_WINDOW
    # Centred values keep the squares small, so float32 sums stay exact enough.
    # One plane at a time: a band's plane and its partial sums stay in cache.
    cx = np.subtract(x, 128, dtype=np.float32)
    cy = np.subtract(y, 128, dtype=np.float32)
    mx, my = _window_mean(cx, k), _window_mean(cy, k)
    mxx = _window_mean(cx * cx, k)
    myy = _window_mean(cy * cy, k)
    mxy = _window_mean(cx * cy, k)
    del cx, cy
    n = k * k
    cov = np.float32(n / (n - 1))
    vx = cov * (mxx - mx * mx)
    vy = cov * (myy - my * my)
    vxy = cov * (mxy - mx * my)
    mx += 128
    my += 128
    c1, c2 = np.float32((_K1 * 255) ** 2), np.float32((_K2 * 255) ** 2)
    num = mx * my
    num *= 2
    num += c1
    vxy *= 2
    vxy += c2
    num *= vxy
    mx *= mx
    my *= my
    mx += my
    mx += c1
    vx += vy
    vx += c2
    mx *= vx
    num /= mx
    return float(num.sum(dtype=np.float64))


def _ssim(x: Any, y: Any) -> float:
    """Mean SSIM of two 2-D arrays with values 0–255 (windows inside both only)."""
    np = _numpy()
    k = _SSIM_WINDOW
    if min(x.shape) < k:
        return 1.0 if np.array_equal(x, y) else float(
            max(0.0, 1 - np.mean(np.abs(x - y)) / 255))
    count = (x.shape[0] - k + 1) * (x.shape[1] - k + 1)
    return float(min(1.0, max(0.0, _ssim_sum(x, y) / count)))


def _regions(heat: Any) -> list[tuple[int, int, int, int]]:
    """The worst connected hot areas of ``heat``, as input-pixel boxes, worst first.

    The map is scored in square cells (about 1/48 of the long side, at least
    8 px; the last row and column of cells may reach past the map and count
    0 there); hot cells that touch form a region, scored by its total heat,
    and its box is tightened to the hot pixels inside it.
    """
    np = _numpy()
    h, w = heat.shape
    cell = max(8, max(w, h) // 48)
    rows, cols = -(-h // cell), -(-w // cell)
    means = _cell_sums(heat, cell) / float(cell * cell)
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


def _cell_sums(heat: Any, cell: int) -> Any:
    """Sums of ``heat`` over square cells from the top left (partial cells at
    the bottom and right edges sum what they hold), in uint32."""
    np = _numpy()

    def along(a: Any, axis: int) -> Any:
        n = a.shape[axis]
        whole = n // cell
        a = np.moveaxis(a, axis, 0)
        parts = []
        if whole:
            blocks = a[:whole * cell].reshape(whole, cell, *a.shape[1:])
            parts.append(blocks.sum(axis=1, dtype=np.uint32))
        if n % cell:
            parts.append(a[whole * cell:].sum(axis=0, dtype=np.uint32)[None])
        return np.moveaxis(np.concatenate(parts), 0, axis)

    return along(along(heat, 0), 1)


def _to_output(placement: Placement, box: tuple[int, int, int, int],
               out_size: tuple[int, int]) -> tuple[int, int, int, int]:
    x, y, w, h = placement.to_output(*box)
    ow, oh = out_size
    x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
    x1, y1 = min(ow, math.ceil(x + w)), min(oh, math.ceil(y + h))
    return (x0, y0, max(1, x1 - x0), max(1, y1 - y0))


# -- kept beside the download ------------------------------------------------------

_STORE_VERSION = 2


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
            reason = meta["reason"]
            psnr = float(meta["psnr"])
            return Fidelity(psnr=None if reason else math.inf if psnr >= 1e9 else psnr,
                            ssim=None if reason else float(meta["ssim"]), heatmap=heat,
                            regions=[tuple(r) for r in meta["regions"]],  # type: ignore[misc]
                            input_size=in_size, output_size=out_size,  # type: ignore[arg-type]
                            placement=align(in_size, out_size, crop_to_fill=crop_to_fill),
                            reason=str(reason) if reason else None)
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
        if result.psnr is not None and not math.isfinite(result.psnr):
            record["psnr"] = 1e9  # JSON has no infinity; read back as "identical"
        tmp = meta_path.with_name(meta_path.name + suffix)
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, meta_path)
    except OSError:
        pass  # a cache that cannot be written only means computing again next time
    return result
