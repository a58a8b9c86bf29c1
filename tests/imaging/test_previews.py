"""Previews kept on disk beside downloads (``topaz_nb.imaging.previews``), at the
paths the owner of the files' layout hands out (here the transfer layer's)."""

from __future__ import annotations

import functools
from pathlib import Path

from PIL import Image

from topaz_nb.imaging.previews import PreviewStore
from topaz_nb.storage import CacheEntry, ObjectInfo, Transfer

PID = "0b5e5b0e-6a3c-4d53-9d2e-5a3f1c2b7d10"
INFO = ObjectInfo(None, None, "0123abcd", None, {})


def _cached_file(tmp_path: Path, image: Image.Image, ext: str = "png") -> Path:
    """A file where the transfer layer would put a download of ``INFO``."""
    entry = Transfer(tmp_path).entry(PID, "output", INFO)
    entry.directory.mkdir(parents=True, exist_ok=True)
    path = entry.file_with(ext)
    image.save(path)
    return path


def _store(path: Path, max_side: int) -> PreviewStore:
    """The store the comparison makes for a download: derived paths from the cache."""
    return PreviewStore(path, max_side, functools.partial(Transfer.derived_path, path))


def _derived(path: Path):  # type: ignore[no-untyped-def]
    return functools.partial(Transfer.derived_path, path)


def test_preview_files_are_where_the_transfer_layer_says(tmp_path: Path) -> None:
    path = _cached_file(tmp_path, Image.new("RGB", (40, 30), (1, 2, 3)))
    store = _store(path, 64)
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
    store = _store(path, 64)
    assert store.load_image() is None and store.load_encoded("png-q85") is None
    preview = Image.new("RGB", (20, 15), (9, 8, 7))
    store.save_image(preview)
    store.save_encoded("png-q85", b"encoded-bytes")
    again = _store(path, 64)
    loaded = again.load_image()
    assert loaded is not None and loaded.tobytes() == preview.tobytes()
    assert again.load_encoded("png-q85") == b"encoded-bytes"
    assert _store(path, 128).load_image() is None  # another size is another entry
    assert not list(path.parent.glob("*.tmp"))

    Image.new("RGB", (41, 30), (1, 2, 3)).save(path)  # the source changed: entries are stale
    assert again.load_image() is None and again.load_encoded("png-q85") is None


def test_a_file_outside_the_cache_gets_no_entries(tmp_path: Path) -> None:
    path = tmp_path / "holiday.png"
    Image.new("RGB", (4, 4)).save(path)
    store = _store(path, 64)
    store.save_image(Image.new("RGB", (2, 2)))
    assert store.load_image() is None and list(tmp_path.iterdir()) == [path]


def test_an_image_opened_without_derived_paths_writes_nothing_beside_it(tmp_path: Path) -> None:
    from topaz_nb.imaging.source import load_image

    # Even a file where the cache would keep a download: only its owner says where
    # derived files go, and here no one did.
    path = _cached_file(tmp_path, Image.new("RGB", (400, 300), (200, 40, 40)))
    image = load_image(path, label="output")
    image.preview_bytes(100, format="png")
    assert image.derived_path("p100.raw") is None
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_second_view_of_a_cached_file_decodes_nothing(tmp_path: Path) -> None:
    import os

    from topaz_nb.imaging.source import load_image

    # BMP: the same size on disk whatever the pixels, so the swap below keeps size and mtime.
    path = _cached_file(tmp_path, Image.new("RGB", (400, 300), (200, 40, 40)), "bmp")
    first = load_image(path, label="output", derived=_derived(path))
    assert first.preview(100).getpixel((50, 37)) == (200, 40, 40)
    png = first.preview_bytes(100, format="png")

    stat = path.stat()
    Image.new("RGB", (400, 300), (10, 200, 10)).save(path)
    assert path.stat().st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # Only a decode could see the new pixels: a second view reads the stored preview.
    second = load_image(path, label="output", derived=_derived(path))
    assert second.preview(100).getpixel((50, 37)) == (200, 40, 40)
    assert second.preview_bytes(100, format="png") == png
