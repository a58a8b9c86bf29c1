"""Panes on one grid, and their tiles: blocks (nearest) or interpolated (smooth)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from topaz_nb.imaging.source import load_image
from topaz_nb.view.panes import PaneTiles, placements_on, smooth_cut


def _ramp(w: int, h: int) -> Image.Image:
    row = np.linspace(0, 255, w).round().astype(np.uint8)
    return Image.fromarray(np.repeat(np.tile(row, (h, 1))[..., None], 3, axis=2))


def test_every_pane_is_placed_on_the_first_outputs_grid() -> None:
    input_, same, half, wide = placements_on((400, 300), [(100, 75), (400, 300), (200, 150),
                                                          (400, 200)])
    assert (input_.width, input_.height, input_.scale) == (400, 300, 4)
    assert (same.x, same.y, same.width) == (0, 0, 400)
    assert half.scale == 2
    assert (wide.y, wide.height) == (50, 200)  # letterboxed, as the API places an input


def test_nearest_tiles_repeat_pixels_and_smooth_ones_interpolate() -> None:
    small = _ramp(16, 4)
    tiles = PaneTiles([load_image(small), load_image(small.resize((64, 16)))],
                      placements_on((64, 16), [(16, 4), (64, 16)]))
    blocks = np.asarray(tiles.region(0, 0, 0, 64, 16))[..., 0]
    assert np.array_equal(blocks[:, 0::4], blocks[:, 3::4])  # 4×4 blocks
    smooth = np.asarray(tiles.region(0, 0, 0, 64, 16, smooth=True))[..., 0].astype(int)
    assert len(set(smooth[8].tolist())) > 40  # a ramp, not sixteen steps
    assert np.abs(smooth[8, 8:-8] - blocks[8, 8:-8]).max() <= 16
    # A pane that is not magnified is cut exactly either way.
    assert np.array_equal(np.asarray(tiles.region(1, 0, 0, 64, 16, smooth=True)),
                          np.asarray(tiles.region(1, 0, 0, 64, 16)))


def test_smooth_cut_leaves_what_lies_outside_the_image_transparent() -> None:
    tile = smooth_cut(_ramp(8, 8), (-2, -2, 8, 8), (32, 32))
    alpha = np.asarray(tile)[..., 3]
    assert alpha[:8].max() == 0 and alpha[:, :8].max() == 0
    assert alpha[8:, 8:].min() == 255


def test_bad_rectangles_are_refused() -> None:
    tiles = PaneTiles([load_image(_ramp(8, 8))], placements_on((8, 8), [(8, 8)]))
    with pytest.raises(ValueError, match="positive w, h"):
        tiles.region(0, 0, 0, 0, 8)
