"""Tests of topaz_nb.imaging.tiles: aligned deep-zoom tiles of both sides."""

from __future__ import annotations

import random
import threading

import pytest
from PIL import Image

from topaz_nb.imaging.decoded import DecodedCache
from topaz_nb.imaging.source import align, load_image
from topaz_nb.imaging.tiles import TileSource, cut


def _pattern(w: int, h: int) -> Image.Image:
    """Every pixel distinct: (x, y, x ^ y) modulo 256."""
    im = Image.new("RGB", (w, h))
    im.putdata([(x % 256, y % 256, (x ^ y) % 256) for y in range(h) for x in range(w)])
    return im


@pytest.fixture
def pair():
    cache = DecodedCache()
    small = _pattern(50, 40)
    big = _pattern(200, 160)  # a 4× "upscale"
    src = TileSource(load_image(small, label="input", cache=cache),
                     load_image(big, label="output", cache=cache))
    return small, big, src


def test_output_tile_is_exact_at_zoom_one(pair) -> None:
    _, big, src = pair
    tile = src.region("output", 30, 20, 64, 48)
    assert (tile.mode, tile.size) == ("RGBA", (64, 48))
    assert tile.tobytes() == big.crop((30, 20, 94, 68)).convert("RGBA").tobytes()


def test_output_tile_magnified_repeats_pixels(pair) -> None:
    _, big, src = pair
    tile = src.region("output", 10, 10, 8, 8, zoom=3)
    assert tile.size == (24, 24)
    for tx, ty in [(0, 0), (2, 2), (3, 0), (23, 23), (13, 7)]:
        assert tile.getpixel((tx, ty))[:3] == big.getpixel((10 + tx // 3, 10 + ty // 3))


def test_input_tile_shows_the_input_pixels_under_the_same_rect(pair) -> None:
    small, _, src = pair
    assert src.placement == align((50, 40), (200, 160))
    tile = src.region("input", 40, 20, 16, 8)  # = input rect (10, 5, 4, 2), 4× magnified
    for tx in range(16):
        for ty in range(8):
            assert tile.getpixel((tx, ty))[:3] == small.getpixel((10 + tx // 4, 5 + ty // 4))


def test_letterboxed_input_is_transparent_outside(pair) -> None:
    square = _pattern(20, 20)
    wide = _pattern(80, 40)
    src = TileSource(load_image(square, cache=DecodedCache()),
                     load_image(wide, cache=DecodedCache()))
    assert (src.placement.x, src.placement.width) == (20, 40)
    tile = src.region("input", 0, 0, 80, 40, zoom=0.5)
    assert tile.size == (40, 20)
    assert tile.getpixel((5, 10)) == (0, 0, 0, 0)  # left bar
    assert tile.getpixel((35, 10)) == (0, 0, 0, 0)  # right bar
    assert tile.getpixel((20, 10))[3] == 255


def test_outside_the_image_is_transparent(pair) -> None:
    _, big, src = pair
    tile = src.region("output", -10, -5, 20, 10)
    assert tile.getpixel((0, 0)) == (0, 0, 0, 0)
    assert tile.getpixel((9, 4)) == (0, 0, 0, 0)
    assert tile.getpixel((10, 5)) == big.getpixel((0, 0)) + (255,)
    assert src.region("output", 500, 500, 10, 10).getextrema()[3] == (0, 0)


def test_minified_tile_averages(pair) -> None:
    flat = Image.new("RGB", (100, 100), (90, 60, 30))
    tile = cut(flat, (0, 0, 100, 100), (10, 10))
    assert tile.getpixel((5, 5)) == (90, 60, 30, 255)


def test_alpha_is_kept() -> None:
    im = Image.new("RGBA", (10, 10), (1, 2, 3, 40))
    src = TileSource(load_image(im, cache=DecodedCache()), load_image(im, cache=DecodedCache()))
    assert src.region("output", 2, 2, 4, 4).getpixel((1, 1)) == (1, 2, 3, 40)


def test_many_threads_get_the_same_tiles(pair) -> None:
    _, _, src = pair
    rng = random.Random(7)
    requests = [(rng.choice(["input", "output"]), rng.uniform(-20, 180), rng.uniform(-20, 150),
                 rng.uniform(4, 60), rng.uniform(4, 60), rng.choice([0.5, 1, 2, 3.5]))
                for _ in range(80)]
    expected = [src.region(*r).tobytes() for r in requests]
    fresh = TileSource(pair[2].input, pair[2].output, cache=DecodedCache())
    results: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(offset, len(requests), 8):
                results[i] = fresh.region(*requests[i]).tobytes()
        except BaseException as exc:  # noqa: BLE001 -- surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [results[i] for i in range(len(requests))] == expected


def test_decoded_once_and_held(pair) -> None:
    src = pair[2]
    cache = DecodedCache(max_bytes=0)  # keeps only the newest image
    held = TileSource(src.input, src.output, cache=cache)
    held.region("output", 0, 0, 4, 4)
    held.region("input", 0, 0, 4, 4)
    assert len(cache) == 1  # the output was evicted from the cache ...
    out_image = held._image("output")
    held.region("output", 8, 8, 4, 4)
    assert held._image("output") is out_image  # ... but the tile source kept it


@pytest.mark.parametrize("args", [("left", 0, 0, 1, 1), ("output", 0, 0, 0, 5),
                                  ("output", 0, 0, 5, 5, -1.0),
                                  ("output", float("nan"), 0, 5, 5),
                                  ("output", 0, 0, 100000, 100000)])
def test_bad_requests(pair, args) -> None:
    with pytest.raises(ValueError):
        pair[2].region(*args)
