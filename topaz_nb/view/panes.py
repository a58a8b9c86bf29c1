"""The panes of a view: one input and up to :data:`~topaz_nb.view.modes.MAX_OUTPUTS` outputs.

Every pane is drawn on one pixel grid, the first output's (pane 1).  Pane 0
is the input, placed by :func:`topaz_nb.imaging.align` as in a two-image
comparison; every further output is placed on that grid the same way, so a 2×
and a 4× result of one input line up.

Tiles of a pane are cut from its full-resolution pixels.  ``smooth`` decides
how a pane that the grid *magnifies* (the input of a 4× upscale) is
resampled: BICUBIC interpolation, so that comparing it with an output shows
what the model added rather than the input's pixel blocks, or (``smooth`` off)
NEAREST, the real input pixels as blocks (a :class:`~topaz_nb.imaging.tiles.TileSource`,
which reads a large pane from its pyramid).
"""

from __future__ import annotations

import math
import threading
from typing import Any

from PIL import Image

from ..imaging.align import Placement, align
from ..imaging.tiles import TileSource, tile_size

_TRANSPARENT = (0, 0, 0, 0)


class PaneTiles:
    """Cuts tiles of any pane.

    A pane shown as it is, or enlarged as blocks, is cut by a
    :class:`~topaz_nb.imaging.tiles.TileSource` pairing it with the grid's output
    (so a large pane reads its pyramid, as the first output does); a
    magnified pane drawn smoothly is interpolated from its decoded pixels,
    held after its first tile.
    """

    def __init__(self, sources: list[Any], placements: list[Placement]) -> None:
        self.sources = sources
        self.placements = placements
        self._held: dict[int, Image.Image] = {}
        self._cutters: dict[int, TileSource] = {}
        self._lock = threading.Lock()

    def region(self, pane: int, x: float, y: float, w: float, h: float, zoom: float = 1.0, *,
               smooth: bool = False) -> Image.Image:
        """The grid rectangle ``(x, y, w, h)`` of ``pane`` as an RGBA image of
        ``round(w*zoom) × round(h*zoom)`` px, transparent outside the pane."""
        size = tile_size(x, y, w, h, zoom)
        rect = self.placements[pane].to_input(x, y, w, h)
        if smooth and size[0] / rect[2] > 1 + 1e-9:
            return smooth_cut(self._image(pane), rect, size)
        return self._cutter(pane).region("input", x, y, w, h, zoom=zoom)

    def close(self) -> None:
        self._held.clear()
        for cutter in self._cutters.values():
            cutter.close()

    def _cutter(self, pane: int) -> TileSource:
        with self._lock:
            cutter = self._cutters.get(pane)
            if cutter is None:
                grid = self.sources[1] if len(self.sources) > 1 else self.sources[0]
                cutter = self._cutters[pane] = TileSource(self.sources[pane], grid,
                                                          placement=self.placements[pane])
            return cutter

    def _image(self, pane: int) -> Image.Image:
        held = self._held.get(pane)
        if held is None:
            with self._lock:
                held = self._held.get(pane)
                if held is None:
                    held = self._held[pane] = self.sources[pane].full()
        return held


def placements_on(grid: tuple[int, int], sizes: list[tuple[int, int]], *,
                  crop_to_fill: bool | None = None) -> list[Placement]:
    """Where each pane lies on ``grid``: every size aligned as an input onto it."""
    return [align(size, grid, crop_to_fill=crop_to_fill) for size in sizes]


def smooth_cut(image: Image.Image, rect: tuple[float, float, float, float],
               size: tuple[int, int]) -> Image.Image:
    """Like :func:`topaz_nb.imaging.tiles.cut` for a magnified rectangle, interpolated
    (BICUBIC, edge pixels repeated) instead of repeated as blocks."""
    sx, sy, sw, sh = rect
    ow, oh = size
    kx, ky = ow / sw, oh / sh
    width, height = image.size
    dx0 = max(0, round((max(sx, 0.0) - sx) * kx))
    dy0 = max(0, round((max(sy, 0.0) - sy) * ky))
    dx1 = min(ow, round((min(sx + sw, width) - sx) * kx))
    dy1 = min(oh, round((min(sy + sh, height) - sy) * ky))
    canvas = Image.new("RGBA", size, _TRANSPARENT)
    if dx1 <= dx0 or dy1 <= dy0:
        return canvas
    bx0, by0 = sx + dx0 / kx, sy + dy0 / ky
    bx1, by1 = sx + dx1 / kx, sy + dy1 / ky
    margin = 3
    ix0, iy0 = max(0, math.floor(bx0) - margin), max(0, math.floor(by0) - margin)
    ix1, iy1 = min(width, math.ceil(bx1) + margin), min(height, math.ceil(by1) + margin)
    piece = image.crop((ix0, iy0, ix1, iy1))
    if piece.mode not in ("RGB", "RGBA"):
        piece = piece.convert("RGBA")
    box = (bx0 - ix0, by0 - iy0, bx1 - ix0, by1 - iy0)
    piece = piece.resize((dx1 - dx0, dy1 - dy0), Image.Resampling.BICUBIC, box=box)
    canvas.paste(piece.convert("RGBA"), (dx0, dy0))
    return canvas
