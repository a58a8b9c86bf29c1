"""Tests of topaz_nb._cache: the byte-bounded LRU of decoded images."""

from __future__ import annotations

import threading
import time

import pytest
from PIL import Image

from topaz_nb._cache import DecodedCache, default_budget, image_nbytes


def _rgb(side: int) -> Image.Image:
    return Image.new("RGB", (side, side))  # side² × 4 bytes in Pillow's memory


def test_image_nbytes_counts_pillow_storage() -> None:
    assert image_nbytes(Image.new("RGB", (10, 10))) == 400
    assert image_nbytes(Image.new("L", (10, 10))) == 100
    assert image_nbytes(Image.new("I;16", (10, 10))) == 200


def test_evicts_least_recently_used_by_bytes() -> None:
    cache = DecodedCache(max_bytes=3 * 400)
    for key in "abc":
        cache.get_or_load(key, lambda: _rgb(10))
    assert len(cache) == 3 and cache.nbytes == 1200
    cache.get_or_load("a", lambda: pytest.fail("a is cached"))  # a is now most recent
    cache.get_or_load("d", lambda: _rgb(10))
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in "abcd" if k in cache}
    assert cache.nbytes == 1200
    cache.get_or_load("big", lambda: _rgb(20))  # 1600 bytes: evicts all the rest
    assert len(cache) == 1 and "big" in cache and cache.nbytes == 1600


def test_single_decode_when_threads_ask_at_once() -> None:
    cache = DecodedCache()
    calls: list[int] = []
    start = threading.Barrier(6)

    def loader() -> Image.Image:
        calls.append(1)
        time.sleep(0.2)
        return _rgb(4)

    results: list[Image.Image] = []

    def ask() -> None:
        start.wait()
        results.append(cache.get_or_load("k", loader))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(results) == 6 and all(r is results[0] for r in results)


def test_failed_load_reaches_waiters_and_is_not_cached() -> None:
    cache = DecodedCache()
    gate = threading.Event()

    def failing() -> Image.Image:
        gate.wait(5)
        raise OSError("broken")

    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            cache.get_or_load("k", lambda: pytest.fail("second loader must not run"))
        except OSError as exc:
            errors.append(exc)

    owner = threading.Thread(target=lambda: pytest.raises(OSError, cache.get_or_load, "k", failing))
    owner.start()
    time.sleep(0.05)
    other = threading.Thread(target=waiter)
    other.start()
    time.sleep(0.05)
    gate.set()
    owner.join()
    other.join()
    assert [str(e) for e in errors] == ["broken"]
    assert len(cache) == 0
    assert cache.get_or_load("k", lambda: _rgb(2)).size == (2, 2)


def test_get_discard_clear() -> None:
    cache = DecodedCache(max_bytes=10_000)
    img = cache.get_or_load(("x", 1), lambda: _rgb(5))
    assert cache.get(("x", 1)) is img and cache.get("nope") is None
    cache.discard(("x", 1))
    assert len(cache) == 0 and cache.nbytes == 0
    cache.get_or_load("y", lambda: _rgb(5))
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_default_budget_is_bounded() -> None:
    assert 256 << 20 <= default_budget() <= 2 << 30


# ---- PreviewStore ------------------------------------------------------------

PID = "0b5e5b0e-6a3c-4d53-9d2e-5a3f1c2b7d10"


def _cached_file(tmp_path, image: Image.Image, name: str = "output-abc123.png"):
    folder = tmp_path / PID
    folder.mkdir(exist_ok=True)
    path = folder / name
    image.save(path)
    return path


def test_preview_store_applies_only_to_download_cache_files(tmp_path):
    from topaz_nb._cache import PreviewStore

    assert PreviewStore.applies_to(tmp_path / PID / "output-abc123.png")
    assert PreviewStore.applies_to(tmp_path / PID / "input-k.jpg")
    assert not PreviewStore.applies_to(tmp_path / "photos" / "output-abc123.png")
    assert not PreviewStore.applies_to(tmp_path / PID / "holiday.png")
    assert not PreviewStore.applies_to(tmp_path / PID / ".output-abc123.png.p64.raw")


def test_preview_store_round_trip_and_staleness(tmp_path):
    from topaz_nb._cache import PreviewStore

    path = _cached_file(tmp_path, Image.new("RGB", (40, 30), (1, 2, 3)))
    store = PreviewStore(path, 64)
    assert store.load_image() is None and store.load_encoded("png-q85") is None
    preview = Image.new("RGB", (20, 15), (9, 8, 7))
    store.save_image(preview)
    store.save_encoded("png-q85", b"encoded-bytes")
    again = PreviewStore(path, 64)
    assert again.load_image().tobytes() == preview.tobytes()
    assert again.load_encoded("png-q85") == b"encoded-bytes"
    assert PreviewStore(path, 128).load_image() is None  # another size is another entry
    assert not list(path.parent.glob("*.part"))

    Image.new("RGB", (41, 30), (1, 2, 3)).save(path)  # the source changed: entries are stale
    assert again.load_image() is None and again.load_encoded("png-q85") is None


def test_second_view_of_a_cached_file_decodes_nothing(tmp_path):
    import os

    from topaz_nb.imaging import load_image

    # BMP: the same size on disk whatever the pixels, so the swap below keeps size and mtime.
    path = _cached_file(tmp_path, Image.new("RGB", (400, 300), (200, 40, 40)), "output-abc.bmp")
    first = load_image(path, label="output")
    assert first.preview(100).getpixel((50, 37)) == (200, 40, 40)
    png = first.preview_bytes(100, format="png")

    stat = path.stat()
    Image.new("RGB", (400, 300), (10, 200, 10)).save(path)
    assert path.stat().st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # Only a decode could see the new pixels: a second view reads the stored preview.
    second = load_image(path, label="output")
    assert second.preview(100).getpixel((50, 37)) == (200, 40, 40)
    assert second.preview_bytes(100, format="png") == png
