"""Aligned tiles of both sides of a comparison, for deep zoom.

A tile is asked for as a rectangle of the *output's* pixel grid and a zoom.
The output side is cut from the output's pixels; the input side from the
input pixels lying under the same rectangle (through the :class:`Placement`),
so both tiles show the same part of the scene at the same size.

Resampling: when a tile magnifies its side (or shows it 1:1) pixels are
repeated with NEAREST, so a tile at 100 % and above shows the real pixels of
that file, the input's included (a 4× upscale shows each input pixel as a 4×4
block, which is what the output is judged against).  When a tile shrinks its
side it is reduced by an integer factor and then resampled with BICUBIC.

Each tile crops only the part of the decoded image it needs (plus the filter's
margin) before resampling, so once the images are decoded the time per tile
depends on the tile's size, not the image's.

Large images are not decoded here at all: a side whose source has a pyramid
(:mod:`topaz_nb.imaging.pyramid`) is cut from the smallest level that still has
the tile's resolution, read from disk tile by tile.
"""

from __future__ import annotations

import math
import threading
from typing import Protocol

from PIL import Image

from .align import Placement, align
from .decoded import DecodedCache

SIDES = ("input", "output")

#: Largest tile handed out, in pixels (a 8192×8192 view).
MAX_TILE_PIXELS = 8192 * 8192

_TRANSPARENT = (0, 0, 0, 0)
_EPS = 1e-9


class _Decodable(Protocol):
    @property
    def size(self) -> tuple[int, int]: ...

    def full(self, *, cache: DecodedCache | None = None) -> Image.Image: ...


class _Croppable(Protocol):
    """What :func:`cut` needs of an image: a PIL image, or a pyramid level."""

    @property
    def size(self) -> tuple[int, int]: ...

    def crop(self, box: tuple[int, int, int, int]) -> Image.Image: ...


def tile_size(x: float, y: float, w: float, h: float, zoom: float) -> tuple[int, int]:
    """The pixel size of a tile of the grid rectangle ``(x, y, w, h)`` at
    ``zoom``, after checking the request: tile requests come from the browser,
    so nonsense or a huge tile is refused before any pixel is touched."""
    values = (x, y, w, h, zoom)
    if not all(math.isfinite(v) for v in values) or w <= 0 or h <= 0 or zoom <= 0:
        raise ValueError(f"a tile needs finite x, y and positive w, h, zoom; got {values}")
    size = (max(1, round(w * zoom)), max(1, round(h * zoom)))
    if size[0] * size[1] > MAX_TILE_PIXELS:
        raise ValueError(f"a tile of {size[0]}×{size[1]} px is larger than "
                         f"{MAX_TILE_PIXELS} px; ask for smaller tiles")
    return size


class TileSource:
    """Cuts aligned tiles of both sides from full-resolution pixels for deep zoom.

    The full-resolution images are decoded on the first tile of each side
    (through ``cache``, by default the cache each side was loaded with) and
    then held by this object until :meth:`close`, so that tiles never wait
    for a decode again even when the cache has to evict them.  Thread-safe.
    """

    def __init__(self, input: _Decodable, output: _Decodable, *,
                 placement: Placement | None = None,
                 cache: DecodedCache | None = None) -> None:
        self.input = input
        self.output = output
        self.output_size: tuple[int, int] = tuple(output.size)  # type: ignore[assignment]
        self.placement = placement if placement is not None else align(input.size, output.size)
        self._cache = cache
        self._held: dict[str, Image.Image] = {}
        self._locks = {side: threading.Lock() for side in SIDES}

    def region(self, side: str, x: float, y: float, w: float, h: float,
               zoom: float = 1.0) -> Image.Image:
        """An RGBA image of ``round(w*zoom) × round(h*zoom)`` px showing the
        output-grid rectangle ``(x, y, w, h)`` of ``side`` (``"input"`` or
        ``"output"``); parts outside that image are transparent."""
        if side not in SIDES:
            raise ValueError(f"side must be 'input' or 'output', not {side!r}")
        size = tile_size(x, y, w, h, zoom)
        rect = (x, y, w, h) if side == "output" else self.placement.to_input(x, y, w, h)
        source = self.input if side == "input" else self.output
        pyramid = source.pyramid() if hasattr(source, "pyramid") else None
        if pyramid is None:
            return cut(self._image(side), rect, size)
        level = pyramid.level_for(size[0] / rect[2])
        (fw, fh), (lw, lh) = pyramid.size, pyramid.level_sizes[level]
        kx, ky = lw / fw, lh / fh
        scaled = (rect[0] * kx, rect[1] * ky, rect[2] * kx, rect[3] * ky)
        return cut(pyramid.view(level), scaled, size)

    def close(self) -> None:
        """Let go of the decoded images (the cache may still keep them)."""
        self._held.clear()

    def _image(self, side: str) -> Image.Image:
        held = self._held.get(side)
        if held is not None:
            return held
        with self._locks[side]:
            held = self._held.get(side)
            if held is None:
                source = self.input if side == "input" else self.output
                held = self._held[side] = source.full(cache=self._cache)
            return held


def cut(image: _Croppable, rect: tuple[float, float, float, float],
        size: tuple[int, int]) -> Image.Image:
    """Resample the rectangle ``rect`` (x, y, w, h in ``image`` pixels) of
    ``image`` to an RGBA image of ``size``, transparent outside ``image``."""
    sx, sy, sw, sh = rect
    ow, oh = size
    canvas = Image.new("RGBA", size, _TRANSPARENT)
    kx, ky = ow / sw, oh / sh  # tile pixels per image pixel
    width, height = image.size
    # Clip to the image, then snap the destination to whole tile pixels and
    # take the source box that maps exactly onto it.
    dx0 = round((max(sx, 0.0) - sx) * kx)
    dy0 = round((max(sy, 0.0) - sy) * ky)
    dx1 = round((min(sx + sw, width) - sx) * kx)
    dy1 = round((min(sy + sh, height) - sy) * ky)
    dx0, dy0 = max(dx0, 0), max(dy0, 0)
    dx1, dy1 = min(dx1, ow), min(dy1, oh)
    if dx1 <= dx0 or dy1 <= dy0:
        return canvas
    bx0 = min(max(sx + dx0 / kx, 0.0), width)
    by0 = min(max(sy + dy0 / ky, 0.0), height)
    bx1 = min(max(sx + dx1 / kx, 0.0), width)
    by1 = min(max(sy + dy1 / ky, 0.0), height)
    magnify = kx >= 1 - _EPS and ky >= 1 - _EPS
    margin = 0 if magnify else math.ceil(2 / min(kx, ky)) + 1  # BICUBIC support
    ix0 = max(0, math.floor(bx0) - margin)
    iy0 = max(0, math.floor(by0) - margin)
    ix1 = min(width, math.ceil(bx1) + margin)
    iy1 = min(height, math.ceil(by1) + margin)
    piece = image.crop((ix0, iy0, ix1, iy1))
    box = (bx0 - ix0, by0 - iy0, bx1 - ix0, by1 - iy0)
    target = (dx1 - dx0, dy1 - dy0)
    exact = piece.size == target and all(abs(a - b) < _EPS for a, b in
                                           zip(box, (0, 0, *target)))
    if not exact:
        if magnify:
            piece = piece.resize(target, Image.Resampling.NEAREST, box=box)
        else:
            piece = piece.resize(target, Image.Resampling.BICUBIC, box=box, reducing_gap=2.0)
    if piece.mode != "RGBA":
        piece = piece.convert("RGBA")
    canvas.paste(piece, (dx0, dy0))
    return canvas
