"""Tests of topaz_nb.imaging.align: the input's place on the output grid."""

from __future__ import annotations

import pytest

from topaz_nb.imaging.align import Placement, align


def test_same_aspect_covers_exactly() -> None:
    p = align((1000, 500), (4000, 2000))
    assert (p.x, p.y, p.width, p.height) == (0, 0, 4000, 2000)
    assert p.scale == 4.0 and p.scale_y == 4.0
    assert p.to_input(400, 200, 40, 20) == (100, 50, 10, 5)


def test_same_aspect_up_to_rounding_of_one_side() -> None:
    # output_width=2000 for a 1001×667 input gives round(667*2000/1001) = 1333.
    p = align((1001, 667), (2000, 1333))
    assert (p.x, p.y, p.width, p.height) == (0, 0, 2000, 1333)
    assert p.to_input(2000, 1333, 0, 0)[:2] == pytest.approx((1001, 667))


def test_letterbox_wider_output() -> None:
    p = align((100, 100), (400, 200))
    assert (p.x, p.y, p.width, p.height) == (100, 0, 200, 200)
    assert p.scale == 2.0
    assert p.to_input(100, 0, 200, 200) == (0, 0, 100, 100)


def test_letterbox_taller_output() -> None:
    p = align((200, 100), (200, 300))
    assert (p.x, p.y, p.width, p.height) == (0, 100, 200, 100)
    assert align((200, 100), (200, 300), crop_to_fill=False) == p


def test_crop_to_fill_covers_and_centres() -> None:
    p = align((100, 100), (400, 200), crop_to_fill=True)
    assert (p.x, p.y, p.width, p.height) == (0, -100, 400, 400)
    assert p.scale == 4.0
    assert p.to_input(0, 0, 400, 200) == (0, 25, 100, 50)


def test_one_pixel_edge_cases() -> None:
    assert align((1, 1), (1, 1)) == Placement(0, 0, 1, 1, 1, 1)
    assert align((1, 1), (8, 8)).scale == 8
    p = align((1, 1), (100, 50))
    assert (p.x, p.y, p.width, p.height) == (25, 0, 50, 50)
    c = align((1, 1), (100, 50), crop_to_fill=True)
    assert (c.x, c.y, c.width, c.height) == (0, -25, 100, 100)
    t = align((1, 2), (1, 1))
    assert (t.x, t.y, t.width, t.height) == (0.25, 0, 0.5, 1)


def test_to_output_inverts_to_input() -> None:
    p = align((300, 200), (1000, 1000))
    rect = (12.5, 40.0, 100.0, 60.0)
    assert p.to_output(*p.to_input(*rect)) == pytest.approx(rect)
    assert p.as_dict()["scale"] == pytest.approx(1000 / 300)


@pytest.mark.parametrize("bad", [(0, 10), (10, -1), ("a", 3), (5,)])
def test_bad_sizes_are_refused(bad) -> None:
    with pytest.raises(ValueError):
        align(bad, (10, 10))
