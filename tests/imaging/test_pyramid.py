"""Tests of topaz_nb.imaging.pyramid: tiled pyramids of large images, and their use by
SourceImage and TileSource.  Real files; the size threshold is lowered so that
small files stand for large ones."""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from topaz_nb.errors import ImageError
from topaz_nb.imaging import pyramid as _pyramid
from topaz_nb.imaging.decoded import DecodedCache
from topaz_nb.imaging.source import load_image
from topaz_nb.imaging.tiles import TileSource

pytestmark = pytest.mark.skipif(not _pyramid.available(), reason="pyvips is not installed")


def _noise(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Image.Image:
    bands = len(mode)
    data = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], bands), np.uint8)
    return Image.fromarray(data[..., 0] if bands == 1 else data, mode)


@pytest.fixture
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pyramid, "MIN_PIXELS", 10_000)


def _write(tmp_path: Path, name: str, im: Image.Image, **kw: object) -> Path:
    path = tmp_path / name
    im.save(path, **kw)
    return path


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_full_resolution_regions_are_the_files_pixels(tmp_path: Path, mode: str) -> None:
    im = _noise((1300, 900), mode)
    src = _write(tmp_path, "out.png", im)
    pyr = _pyramid.build(src, tmp_path / "p.tif")
    assert pyr.size == (1300, 900)
    box = (500, 300, 1012, 812)
    got = pyr.region(0, box)
    assert got.mode == mode and got.tobytes() == im.crop(box).tobytes()
    # Edge tiles are partial: the right and bottom margins are read exactly too.
    edge = (1100, 700, 1300, 900)
    assert pyr.region(0, edge).tobytes() == im.crop(edge).tobytes()


def test_levels_halve_down_to_one_tile(tmp_path: Path) -> None:
    src = _write(tmp_path, "out.png", _noise((2100, 1000)))
    sizes = _pyramid.build(src, tmp_path / "p.tif").level_sizes
    assert sizes[0] == (2100, 1000)
    for (w0, h0), (w1, h1) in itertools.pairwise(sizes):
        assert abs(w1 - w0 / 2) <= 1 and abs(h1 - h0 / 2) <= 1
    assert max(sizes[-1]) <= _pyramid.TILE
    pyr = _pyramid.open_pyramid(tmp_path / "p.tif", src)
    assert pyr is not None
    assert pyr.level_for(1.0) == 0 and pyr.level_for(0.5) == 1 and pyr.level_for(0.3) == 1
    assert pyr.level_for(0.25) == 2


def test_gray_reads_as_rgb(tmp_path: Path) -> None:
    im = _noise((600, 400), "L")
    src = _write(tmp_path, "gray.png", im)
    got = _pyramid.build(src, tmp_path / "p.tif").region(0, (0, 0, 600, 400))
    assert got.mode == "RGB" and got.tobytes() == im.convert("RGB").tobytes()


def test_a_changed_source_makes_the_pyramid_stale(tmp_path: Path) -> None:
    src = _write(tmp_path, "out.png", _noise((700, 500)))
    path = tmp_path / "p.tif"
    _pyramid.build(src, path)
    assert _pyramid.open_pyramid(path, src) is not None
    _write(tmp_path, "out.png", _noise((700, 500), seed=5))
    os.utime(src, ns=(1, 1))
    assert _pyramid.open_pyramid(path, src) is None
    assert _pyramid.open_pyramid(tmp_path / "missing.tif", src) is None


def test_a_truncated_source_leaves_no_file(tmp_path: Path) -> None:
    src = _write(tmp_path, "out.png", _noise((900, 700)))
    src.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    pyvips = pytest.importorskip("pyvips")
    with pytest.raises(pyvips.Error):
        _pyramid.build(src, tmp_path / "p.tif")
    assert list(tmp_path.iterdir()) == [src]


def test_eligibility_is_large_plain_8_bit_display_pixels(small_threshold: None,
                                                        tmp_path: Path) -> None:
    plain = load_image(_write(tmp_path, "a.png", _noise((200, 100))),
                       pyramid_path=tmp_path / "a.tif")
    assert plain.has_pyramid
    tiny = load_image(_write(tmp_path, "b.png", _noise((50, 50))), pyramid_path=tmp_path / "b.tif")
    assert not tiny.has_pyramid  # below the threshold: the decoded LRU serves it
    sixteen = Image.fromarray(np.full((100, 200), 40000, np.uint16))
    deep = load_image(_write(tmp_path, "c.png", sixteen), pyramid_path=tmp_path / "c.tif")
    assert not deep.has_pyramid  # 16-bit goes through Pillow's display conversion
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = load_image(_write(tmp_path, "d.jpg", _noise((200, 100)), exif=exif),
                        pyramid_path=tmp_path / "d.tif")
    assert not turned.has_pyramid  # rotated by EXIF: oriented by Pillow
    no_path = load_image(tmp_path / "a.png")
    assert not no_path.has_pyramid and no_path.pyramid() is None


def test_preview_and_tiles_share_one_decode_and_survive_a_restart(small_threshold: None,
                                                                  tmp_path: Path) -> None:
    big = _noise((1600, 1200), seed=2)
    out_path = _write(tmp_path, "out.png", big)
    small = _noise((400, 300), seed=3)
    in_path = _write(tmp_path, "in.png", small)
    before = _pyramid.builds
    cache = DecodedCache()
    out = load_image(out_path, label="output", cache=cache, pyramid_path=tmp_path / "o.tif")
    inp = load_image(in_path, label="input", cache=cache, pyramid_path=tmp_path / "i.tif")
    preview = out.preview(300)
    assert preview.size == (300, 225)
    assert _pyramid.builds == before + 1  # the preview's decode wrote the pyramid
    # Tiles from many threads at once, and a background preparation: no new decode.
    source = TileSource(inp, out)
    threads = [threading.Thread(target=source.region, args=("output", 512 * i, 0, 512, 512))
               for i in range(3)] + [threading.Thread(target=out.prepare_tiles)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert _pyramid.builds == before + 1
    assert len(cache) == 0  # nothing was decoded whole
    tile = source.region("output", 512, 512, 512, 512)
    assert tile.convert("RGB").tobytes() == big.crop((512, 512, 1024, 1024)).tobytes()
    # 4× input, 1:1 on the output grid: each input pixel is a 4×4 block.
    in_tile = np.asarray(source.region("input", 0, 0, 64, 64).convert("RGB"))
    assert np.array_equal(in_tile, np.asarray(small)[:16, :16].repeat(4, 0).repeat(4, 1))
    assert _pyramid.builds == before + 2  # the input's own (over the lowered threshold)
    # A reduced level serves a zoomed-out tile: about the mean of the pixels.
    half = source.region("output", 0, 0, 1024, 1024, zoom=0.5)
    assert half.size == (512, 512)
    expected = np.asarray(big.crop((0, 0, 1024, 1024)).reduce(2), np.int16)
    assert np.abs(np.asarray(half.convert("RGB"), np.int16) - expected).mean() < 3
    # A new kernel: the pyramid on disk is used as it is.
    again = load_image(out_path, label="output", cache=DecodedCache(),
                       pyramid_path=tmp_path / "o.tif")
    again.prepare_tiles()
    assert again.pyramid_ready() and _pyramid.builds == before + 2


def test_a_damaged_large_file_fails_with_one_line(small_threshold: None, tmp_path: Path) -> None:
    path = _write(tmp_path, "out.png", _noise((900, 700)))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    image = load_image(path, label="output of x", pyramid_path=tmp_path / "o.tif")
    with pytest.raises(ImageError) as info:
        image.preview(100)
    assert "output of x" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "o.tif").exists()


def test_flat_images_are_deflated_and_photos_are_not(tmp_path: Path) -> None:
    flat = Image.new("RGBA", (1500, 1200), (10, 200, 30, 128))
    src = _write(tmp_path, "flat.png", flat)
    pyr = _pyramid.build(src, tmp_path / "flat.tif")
    assert (tmp_path / "flat.tif").stat().st_size < 1500 * 1200 * 4 // 20
    assert pyr.region(0, (0, 0, 600, 600)).tobytes() == flat.crop((0, 0, 600, 600)).tobytes()
    photo = _write(tmp_path, "photo.png", _noise((1500, 1200)))
    _pyramid.build(photo, tmp_path / "photo.tif")
    assert (tmp_path / "photo.tif").stat().st_size >= 1500 * 1200 * 3


def test_a_pyramid_that_cannot_be_written_says_so(small_threshold: None, tmp_path: Path) -> None:
    path = _write(tmp_path, "out.png", _noise((900, 700)))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the pyramid's folder should be")
    image = load_image(path, label="output of x", pyramid_path=blocker / "o.tif")
    with pytest.raises(ImageError) as info:
        image.preview(100)
    message = str(info.value)
    assert "output of x: cannot write its tile pyramid" in message and "\n" not in message
    assert "corrupt" not in message

