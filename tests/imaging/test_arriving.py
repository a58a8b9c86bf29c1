"""Tests of topaz_nb.imaging.arriving and source.decode_while_arriving: a file
decoded while its bytes arrive, into its pyramid or into memory, kept only
when the download ends as the checked file.  The arriving bytes come from a
test double that lets them through when the test says, as a download would."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from topaz_nb.imaging import arriving as _arriving
from topaz_nb.imaging import pyramid as _pyramid
from topaz_nb.imaging.source import decode_while_arriving, load_image

pytestmark = pytest.mark.skipif(not _pyramid.available(), reason="pyvips is not installed")


def _noise(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Image.Image:
    bands = len(mode)
    data = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], bands), np.uint8)
    return Image.fromarray(data[..., 0] if bands == 1 else data, mode)


def _write(tmp_path: Path, name: str, im: Image.Image, **kw: object) -> Path:
    path = tmp_path / name
    im.save(path, **kw)
    return path


class _Arriving:
    """A file handed on in pieces as a download would: ``read`` blocks until
    the test lets more through, ``final`` until it says how the download ended."""

    def __init__(self, data: bytes) -> None:
        self.data, self.allowed, self.at = data, 0, 0
        self.cond = threading.Condition()
        self.ended = threading.Event()
        self.final_path: Path | None = None
        self.done = threading.Event()
        self.lose = False

    def allow(self, upto: int) -> None:
        with self.cond:
            self.allowed = upto
            self.cond.notify_all()

    def read(self, size: int) -> bytes:
        with self.cond:
            self.cond.wait_for(lambda: self.allowed > self.at or self.lose
                               or self.at >= len(self.data), 30)
            if self.lose:
                return b""
            piece = self.data[self.at:min(self.allowed, self.at + size)]
            self.at += len(piece)
            self.cond.notify_all()
            return piece

    def final(self) -> Path | None:
        self.ended.wait(30)
        return self.final_path

    def end(self, path: Path | None) -> None:
        self.final_path = path
        self.ended.set()


def _start(arriving: _Arriving, path: Path, kind: _arriving.Kind | None = "pyramid") -> object:
    return _arriving.start(arriving.read, size=len(arriving.data), choose=lambda head: kind,
                           pyramid_path=path, final=arriving.final, done=arriving.done.set)


def test_a_pyramid_built_from_arriving_bytes_is_the_files(tmp_path: Path) -> None:
    im = _noise((1300, 900))
    src = _write(tmp_path, "out.png", im)
    data = src.read_bytes()
    arriving = _Arriving(data)
    target = tmp_path / "p.tif"
    future = _start(arriving, target)
    arriving.allow(len(data) // 2)
    with arriving.cond:  # the decode reads what has arrived, before the rest
        assert arriving.cond.wait_for(lambda: arriving.at == len(data) // 2, 30)
    assert not target.exists()
    arriving.allow(len(data))
    arriving.end(src)
    pyr = future.result(30)  # type: ignore[attr-defined]
    assert isinstance(pyr, _pyramid.Pyramid) and arriving.done.is_set()
    assert pyr.region(0, (0, 0, 1300, 900)).tobytes() == im.tobytes()
    # Stamped with the final file: opened again as the file's pyramid.
    assert _pyramid.open_pyramid(target, src) is not None
    assert not list(tmp_path.glob("*.part"))


def test_a_small_png_is_decoded_into_memory_as_pillow_would(tmp_path: Path) -> None:
    for mode in ("RGB", "RGBA", "L", "LA"):
        im = _noise((300, 200), mode)
        src = _write(tmp_path, f"{mode}.png", im)
        arriving = _Arriving(src.read_bytes())
        arriving.allow(len(arriving.data))
        arriving.end(src)
        decoded = _start(arriving, tmp_path / "p.tif", "memory").result(30)  # type: ignore[attr-defined]
        with Image.open(src) as pil:
            pil.load()
            assert isinstance(decoded, Image.Image)
            assert (decoded.mode, decoded.size) == (pil.mode, pil.size)
            assert decoded.tobytes() == pil.tobytes()


@pytest.mark.parametrize("how", ["failed download", "lost bytes", "another size", "not chosen"])
@pytest.mark.parametrize("kind", ["pyramid", "memory"])
def test_what_was_decoded_is_thrown_away_unless_the_download_is_checked(
        tmp_path: Path, how: str, kind: _arriving.Kind) -> None:
    src = _write(tmp_path, "out.png", _noise((700, 500)))
    arriving = _Arriving(src.read_bytes())
    target = tmp_path / "p.tif"
    future = _start(arriving, target, None if how == "not chosen" else kind)
    if how == "lost bytes":
        arriving.allow(_arriving.HEAD_BYTES + 1000)
        with arriving.cond:
            arriving.cond.wait_for(lambda: arriving.at > _arriving.HEAD_BYTES, 30)
            arriving.lose = True
            arriving.cond.notify_all()
    else:
        arriving.allow(len(arriving.data))
    if how == "another size":
        arriving.end(_write(tmp_path, "other.png", _noise((10, 10))))
    else:
        arriving.end(None if how != "not chosen" else src)
    assert future.result(30) is None  # type: ignore[attr-defined]
    assert arriving.done.is_set()
    assert not target.exists() and not list(tmp_path.glob("p.tif*"))
    if how == "not chosen":  # only the head was read to decide
        assert arriving.at == _arriving.HEAD_BYTES


def test_a_decode_that_fails_early_lets_go_of_the_bytes_still_coming(tmp_path: Path) -> None:
    # A PNG whose pixel data is damaged past its header, with megabytes after
    # the damage: the decode stops there, and ends instead of waiting on a
    # pipe nobody reads.
    good = _write(tmp_path, "out.png", _noise((1500, 1500)), compress_level=0).read_bytes()
    cut = _arriving.HEAD_BYTES + 4096
    damaged = good[:cut] + bytes(len(good) - cut)
    arriving = _Arriving(damaged)
    arriving.allow(len(damaged))
    arriving.end(tmp_path / "out.png")
    future = _start(arriving, tmp_path / "p.tif")
    assert future.result(60) is None  # type: ignore[attr-defined]
    assert arriving.done.is_set() and not list(tmp_path.glob("p.tif*"))


@pytest.fixture
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pyramid, "MIN_PIXELS", 100_000)


def _chosen(tmp_path: Path, name: str, im: Image.Image, **kw: object) -> object:
    data = io.BytesIO()
    im.save(data, **kw)
    arriving = _Arriving(data.getvalue())
    arriving.allow(len(arriving.data))
    arriving.end(None)
    seen: list[object] = []  # the choice decode_while_arriving makes, recorded
    original = _arriving.start

    def spy(read, *, choose, **rest):  # type: ignore[no-untyped-def]
        return original(read, choose=lambda head: seen.append(choose(head)) or None, **rest)

    _arriving.start = spy  # type: ignore[assignment]
    try:
        future = decode_while_arriving(arriving.read, size=len(arriving.data),
                                       pyramid_path=tmp_path / f"{name}.tif",
                                       final=arriving.final, done=arriving.done.set)
        future.result(30)
    finally:
        _arriving.start = original  # type: ignore[assignment]
    return seen[0] if seen else "nothing read"


def test_what_an_arriving_image_is_decoded_into(small_threshold: None, tmp_path: Path) -> None:
    large, small = _noise((400, 300)), _noise((200, 150))
    assert _chosen(tmp_path, "a", large, format="PNG") == "pyramid"
    assert _chosen(tmp_path, "b", small, format="PNG") == "memory"
    assert _chosen(tmp_path, "c", small.convert("RGBA"), format="PNG") == "memory"
    # A JPEG's preview is drafted, not decoded whole: nothing to gain.
    assert _chosen(tmp_path, "d", large, format="JPEG") is None
    # What Pillow shows differently from the file's bytes stays with Pillow.
    assert _chosen(tmp_path, "e", small, format="PNG", transparency=(0, 0, 0)) is None
    assert _chosen(tmp_path, "f", small.convert("P"), format="PNG") is None
    assert _chosen(tmp_path, "g", small.convert("I;16"), format="PNG") is None


def test_a_source_image_uses_what_was_decoded_while_it_arrived(
        small_threshold: None, tmp_path: Path) -> None:
    big = _noise((700, 500))
    src = _write(tmp_path, "big.png", big)
    arriving = _Arriving(src.read_bytes())
    target = tmp_path / "p.tif"
    future = _start(arriving, target)
    arriving.allow(len(arriving.data))
    image = load_image(src, pyramid_path=target, arrived=future)  # type: ignore[arg-type]
    builds = _pyramid.builds
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(image.pyramid()))
    thread.start()
    arriving.end(src)
    thread.join(30)
    assert result and result[0] is not None
    assert _pyramid.builds == builds + 1  # that one decode, no second
    assert image.preview(256).size == (256, 183)

    small = _noise((300, 200))
    src = _write(tmp_path, "small.png", small)
    arriving = _Arriving(src.read_bytes())
    arriving.allow(len(arriving.data))
    arriving.end(src)
    future = _start(arriving, tmp_path / "q.tif", "memory")
    decoded = future.result(30)  # type: ignore[attr-defined]
    image = load_image(src, arrived=future)  # type: ignore[arg-type]
    assert image.full() is decoded  # the pixels decoded while it arrived, not the file's again
    assert image.full().tobytes() == small.tobytes()
