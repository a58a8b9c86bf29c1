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

A download in use is never evicted, nor its derived files: one being
downloaded, opened by a fetch not yet finished, or behind a comparison or a
view not yet closed, in this kernel or in any other sharing the cache.  Those
users *pin* it (:func:`topaz_nb.storage.cache.pin`), and eviction works only
inside :func:`topaz_nb.storage.cache.unpinned`, skipping what is pinned.  When
the bound cannot be kept without them the cache stays over it, and
:func:`usage` says so and why (``topaz-nb cache info``).  "Used" is the
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

from .cache import CacheEntry, discard, pinned, unpinned

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
    """What the cache holds: bytes of downloads, of derived files and in all;
    how many downloads are in use now (pinned, so never evicted) and the bytes
    they keep with their derived files; the bound when one was given."""

    directory: Path
    processes: int
    downloads: int
    download_bytes: int
    derived_bytes: int
    total_bytes: int
    in_use: int = 0
    in_use_bytes: int = 0
    max_bytes: int | None = None

    @property
    def over_bound(self) -> bool:
        """The cache holds more than its bound (files in use keep it there, or
        no fetch has checked the bound since it was lowered)."""
        return self.max_bytes is not None and self.total_bytes > self.max_bytes


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
        # Another thread or kernel may evict or clear while this one looks.
        try:
            paths = list(folder.iterdir()) if folder.is_dir() else []
        except OSError:
            continue
        found = False
        for path in paths:
            entry = CacheEntry.of(path)
            if entry is None or entry.file != path:
                continue  # not the complete file its sidecar names (a .part, say)
            try:
                stat = path.stat()
            except OSError:
                continue
            found = True
            derived = [(p, _size(p)) for p in entry.derived_files()]
            marker = entry.derived(_USED)
            try:
                used = marker.stat().st_mtime
            except OSError:
                used = stat.st_mtime
            items.append(_Item(entry, path, used, stat.st_size, derived))
        if found:
            folders += 1
            total += sum(_size(p) for p in paths if p.is_file())
    return items, total, folders


def usage(cache_dir: Path, max_bytes: int | None = None) -> Usage:
    """What the cache in ``cache_dir`` holds now, and what of it is in use;
    ``max_bytes`` is the bound to report it against."""
    items, total, folders = _scan(cache_dir)
    busy = [i for i in items if pinned(i.entry)]
    return Usage(directory=cache_dir, processes=folders, downloads=len(items),
                 download_bytes=sum(i.download for i in items),
                 derived_bytes=sum(size for i in items for _, size in i.derived),
                 total_bytes=total, in_use=len(busy),
                 in_use_bytes=sum(i.download + sum(size for _, size in i.derived) for i in busy),
                 max_bytes=max_bytes)


def enforce(cache_dir: Path, max_bytes: int, keep: tuple[Path, ...] = ()) -> int:
    """Delete least recently used derived files, then downloads, until the
    cache in ``cache_dir`` takes at most ``max_bytes``; the downloads in
    ``keep`` and those in use anywhere (pinned), with their derived files,
    stay.  Returns the bytes freed."""
    if max_bytes < 0:
        raise ValueError("max_bytes must not be negative")
    items, total, _ = _scan(cache_dir)
    if total <= max_bytes:
        return 0
    kept = {Path(p) for p in keep}
    candidates = sorted((i for i in items if i.file not in kept), key=lambda i: i.used)
    in_use: set[Path] = set()
    freed = 0
    for item in candidates:  # 1. derived files, oldest use first
        if total - freed <= max_bytes:
            break
        with unpinned(item.entry) as free:
            if not free:
                in_use.add(item.file)
                continue
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
        if item.file in in_use:
            continue
        with unpinned(item.entry) as free:
            if not free:
                in_use.add(item.file)
                continue
            rest = item.download + sum(size for p, size in item.derived if p.exists())
            try:
                discard(item.entry, item.file)
            except (OSError, ValueError) as exc:
                _log.warning("could not evict %s from the cache: %s", item.file.name, exc)
                continue
        freed += rest
    if total - freed > max_bytes:
        in_use.update(i.file for i in items if i.file in kept)
        _log.info("the cache holds %d bytes, over its bound of %d: %d files are in use",
                  total - freed, max_bytes, len(in_use))
    return freed
