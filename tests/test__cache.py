"""Tests of the caches behind a view: decoded images in memory
(``topaz_nb._decoded``) and previews on disk (``topaz_nb._previews``).

Threads are ordered with events and semaphores, never with sleeps.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path

import pytest
from PIL import Image

from topaz_nb import _decoded
from topaz_nb._decoded import DecodedCache, default_budget, image_nbytes
from topaz_nb._previews import PreviewStore
from topaz_nb.transfer import CacheEntry, ObjectInfo, Transfer


def _rgb(side: int) -> Image.Image:
    return Image.new("RGB", (side, side))  # side² × 4 bytes in Pillow's memory


@pytest.fixture
def waiting(monkeypatch: pytest.MonkeyPatch) -> threading.Semaphore:
    """Released once by every thread that starts waiting for another's load."""
    entered = threading.Semaphore(0)

    class Observed(Future):  # type: ignore[type-arg]
        def result(self, timeout: float | None = None) -> object:
            entered.release()
            return super().result(timeout)

    monkeypatch.setattr(_decoded, "Future", Observed)
    return entered


def test_the_old_module_name_still_imports() -> None:
    from topaz_nb import _cache

    assert _cache.DecodedCache is DecodedCache and _cache.PreviewStore is PreviewStore


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


def test_single_decode_when_threads_ask_at_once(waiting: threading.Semaphore) -> None:
    cache = DecodedCache()
    calls: list[int] = []
    loading, release = threading.Event(), threading.Event()

    def loader() -> Image.Image:
        calls.append(1)
        loading.set()
        assert release.wait(10)
        return _rgb(4)

    results: list[Image.Image] = []
    owner = threading.Thread(target=lambda: results.append(cache.get_or_load("k", loader)))
    owner.start()
    assert loading.wait(10)
    others = [threading.Thread(target=lambda: results.append(cache.get_or_load("k", loader)))
              for _ in range(5)]
    for t in others:
        t.start()
    for _ in others:  # every other thread is now waiting on the owner's load
        assert waiting.acquire(timeout=10)
    release.set()
    for t in [owner, *others]:
        t.join(10)
    assert len(calls) == 1
    assert len(results) == 6 and all(r is results[0] for r in results)


def test_failed_load_reaches_waiters_and_is_not_cached(waiting: threading.Semaphore) -> None:
    cache = DecodedCache()
    loading, gate = threading.Event(), threading.Event()

    def failing() -> Image.Image:
        loading.set()
        assert gate.wait(10)
        raise OSError("broken")

    errors: list[BaseException] = []

    def run(loader: object) -> None:
        try:
            cache.get_or_load("k", loader)  # type: ignore[arg-type]
        except OSError as exc:
            errors.append(exc)

    owner = threading.Thread(target=run, args=(failing,))
    owner.start()
    assert loading.wait(10)
    other = threading.Thread(target=run, args=(lambda: pytest.fail("second loader ran"),))
    other.start()
    assert waiting.acquire(timeout=10)  # the second thread waits on the first's load
    gate.set()
    owner.join(10)
    other.join(10)
    assert [str(e) for e in errors] == ["broken", "broken"]
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
INFO = ObjectInfo(None, None, "0123abcd", None, {})


def _cached_file(tmp_path: Path, image: Image.Image, ext: str = "png") -> Path:
    """A file where the transfer layer would put a download of ``INFO``."""
    entry = Transfer(tmp_path).entry(PID, "output", INFO)
    entry.directory.mkdir(parents=True, exist_ok=True)
    path = entry.file_with(ext)
    image.save(path)
    return path


def test_preview_store_applies_only_to_download_cache_files(tmp_path: Path) -> None:
    download = _cached_file(tmp_path, Image.new("RGB", (4, 4)))
    assert PreviewStore.applies_to(download)
    assert PreviewStore.applies_to(tmp_path / PID / "input-k.jpg")
    assert not PreviewStore.applies_to(tmp_path / "photos" / download.name)
    assert not PreviewStore.applies_to(tmp_path / PID / "holiday.png")
    entry = CacheEntry.of(download)
    assert entry is not None
    derived = entry.derived("p64.raw")
    assert not PreviewStore.applies_to(derived) and not PreviewStore.applies_to(entry.part)


def test_preview_files_are_where_the_transfer_layer_says(tmp_path: Path) -> None:
    path = _cached_file(tmp_path, Image.new("RGB", (40, 30), (1, 2, 3)))
    store = PreviewStore(path, 64)
    store.save_image(Image.new("RGB", (20, 15)))
    store.save_encoded("webp-q85", b"encoded")
    assert Transfer.derived_path(path, "p64.raw").is_file()  # type: ignore[union-attr]
    assert Transfer.derived_path(path, "p64.webp-q85").is_file()  # type: ignore[union-attr]
    assert Transfer.derived_path(tmp_path / "mine.png", "p64.raw") is None
    entry = CacheEntry.of(path)
    assert entry is not None and len(entry.derived_files()) == 2
    # Clearing the cache takes derived files with the download.
    assert Transfer(tmp_path).clear_cache(PID) == 1
    assert not any(tmp_path.rglob("*"))


def test_preview_store_round_trip_and_staleness(tmp_path: Path) -> None:
    path = _cached_file(tmp_path, Image.new("RGB", (40, 30), (1, 2, 3)))
    store = PreviewStore(path, 64)
    assert store.load_image() is None and store.load_encoded("png-q85") is None
    preview = Image.new("RGB", (20, 15), (9, 8, 7))
    store.save_image(preview)
    store.save_encoded("png-q85", b"encoded-bytes")
    again = PreviewStore(path, 64)
    loaded = again.load_image()
    assert loaded is not None and loaded.tobytes() == preview.tobytes()
    assert again.load_encoded("png-q85") == b"encoded-bytes"
    assert PreviewStore(path, 128).load_image() is None  # another size is another entry
    assert not list(path.parent.glob("*.tmp"))

    Image.new("RGB", (41, 30), (1, 2, 3)).save(path)  # the source changed: entries are stale
    assert again.load_image() is None and again.load_encoded("png-q85") is None


def test_a_file_outside_the_cache_gets_no_entries(tmp_path: Path) -> None:
    path = tmp_path / "holiday.png"
    Image.new("RGB", (4, 4)).save(path)
    store = PreviewStore(path, 64)
    store.save_image(Image.new("RGB", (2, 2)))
    assert store.load_image() is None and list(tmp_path.iterdir()) == [path]


def test_second_view_of_a_cached_file_decodes_nothing(tmp_path: Path) -> None:
    import os

    from topaz_nb.imaging import load_image

    # BMP: the same size on disk whatever the pixels, so the swap below keeps size and mtime.
    path = _cached_file(tmp_path, Image.new("RGB", (400, 300), (200, 40, 40)), "bmp")
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
