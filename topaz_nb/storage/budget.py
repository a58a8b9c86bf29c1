"""The download cache's disk use, bounded: least recently used goes first.

A pyramid is about 4 bytes a pixel (806 MB for a 201 MP output, beside its
426 MB PNG), so a few dozen large processes would fill a laptop's disk.
:func:`enforce` keeps the cache under ``Topaz.cache_max_bytes``:

1. derived files (previews, pyramids) of the least recently used downloads
   are deleted first: they are rebuilt from the download when needed;
2. then whole downloads, least recently used first, through
   :func:`topaz_nb.storage.cache.discard` (which takes the entry's lock, so
   no download of it is under way, and removes its sidecar and derived files
   with it).

The downloads of the process being viewed are never evicted.  "Used" is the
modification time of a small derived marker file (:func:`mark_used`) written
each time a process is fetched, falling back to the download's own time.

The bound is checked when a fetch downloads something, at most every 10 s
when fetches only hit the cache, and after a pyramid is written (the
comparison passes that hook to :func:`topaz_nb.imaging.load_image`).  Previews
written in between can leave the cache over its bound by a few MB until then.

Paths come from :class:`topaz_nb.storage.cache.CacheEntry`, the one owner
of the cache layout; nothing here parses file names.  The facade
(:meth:`topaz_nb.storage.transfer.Transfer.keep_within_budget`) decides when
to check; this module knows the cache and nothing above it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .cache import CacheEntry, discard

_log = logging.getLogger("topaz_nb.cache")

#: Default bound on the cache's disk use (``Topaz.cache_max_bytes``).
DEFAULT_MAX_BYTES = 20_000_000_000
_USED = "used"


@dataclass
class _Item:
    entry: CacheEntry
    file: Path
    used: float
    download: int
    derived: list[tuple[Path, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Usage:
    """What the cache holds: bytes of downloads, of derived files and in all."""

    directory: Path
    processes: int
    downloads: int
    download_bytes: int
    derived_bytes: int
    total_bytes: int


def mark_used(path: Path) -> None:
    """Record that the download at ``path`` was just used (for eviction order)."""
    entry = CacheEntry.of(path)
    if entry is None:
        return
    marker = entry.derived(_USED)
    with contextlib.suppress(OSError):
        marker.touch()
        os.utime(marker)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _scan(cache_dir: Path) -> tuple[list[_Item], int, int]:
    """Every complete download with its derived files; and the total bytes of
    the process folders and of folders with any download in them."""
    items: list[_Item] = []
    total = 0
    folders = 0
    if not cache_dir.is_dir():
        return items, 0, 0
    for folder in cache_dir.iterdir():
        if not folder.is_dir():
            continue
        found = False
        for path in folder.iterdir():
            if not path.is_file():
                continue
            if CacheEntry.of(path) is None:
                continue
            entry = CacheEntry.of(path)
            assert entry is not None
            if entry.file != path:
                continue  # not the complete file its sidecar names (a .part, say)
            found = True
            derived = [(p, _size(p)) for p in entry.derived_files()]
            marker = entry.derived(_USED)
            try:
                used = marker.stat().st_mtime
            except OSError:
                used = path.stat().st_mtime
            items.append(_Item(entry, path, used, _size(path), derived))
        if found:
            folders += 1
            total += sum(_size(p) for p in folder.iterdir() if p.is_file())
    return items, total, folders


def usage(cache_dir: Path) -> Usage:
    """What the cache in ``cache_dir`` holds now."""
    items, total, folders = _scan(cache_dir)
    return Usage(directory=cache_dir, processes=folders, downloads=len(items),
                 download_bytes=sum(i.download for i in items),
                 derived_bytes=sum(size for i in items for _, size in i.derived),
                 total_bytes=total)


def enforce(cache_dir: Path, max_bytes: int, keep: tuple[Path, ...] = ()) -> int:
    """Delete least recently used derived files, then downloads, until the
    cache in ``cache_dir`` takes at most ``max_bytes``; the downloads in
    ``keep`` (and their derived files) stay.  Returns the bytes freed."""
    if max_bytes < 0:
        raise ValueError("max_bytes must not be negative")
    items, total, _ = _scan(cache_dir)
    if total <= max_bytes:
        return 0
    kept = {Path(p) for p in keep}
    candidates = sorted((i for i in items if i.file not in kept), key=lambda i: i.used)
    freed = 0
    for item in candidates:  # 1. derived files, oldest use first
        for path, size in item.derived:
            if total - freed <= max_bytes:
                break
            if path == item.entry.derived(_USED):
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                freed += size
    for item in candidates:  # 2. whole downloads
        if total - freed <= max_bytes:
            break
        rest = item.download + sum(size for p, size in item.derived if p.exists())
        try:
            discard(item.entry, item.file)
        except (OSError, ValueError) as exc:
            _log.warning("could not evict %s from the cache: %s", item.file.name, exc)
            continue
        freed += rest
    if total - freed > max_bytes:
        _log.info("the cache holds %d bytes, over its bound of %d: the rest is in use",
                  total - freed, max_bytes)
    return freed
