"""The download cache on disk: where its files are, what its records say, and
the locks that keep threads and processes from writing one object at once.

:class:`CacheEntry` is the one description of the layout; every other module
(the downloader, the budget, the preview store through
``Transfer.derived_path``) asks an entry for paths instead of parsing file
names, so the layout can change here alone.

Layout: ``<cache_dir>/<process id>/<side>-<key>.<ext>``, where the key comes
from the storage's validators (:func:`cache_key`) and the extension from the
sniffed format of the bytes, never from Content-Type.  Beside it, hidden:
``.<side>-<key>.json`` (the sidecar), ``.<side>-<key>.lock`` and
``.<side>-<key>.d.<name>`` (files derived from the download, such as
previews) and ``.<side>-<key>.pin`` (see below).  ``<side>-<key>.part`` and
its ``.part.json`` hold a download in progress.

A cached file counts only when its sidecar (size, modification time, ETag,
SHA-256) still matches it, so a file truncated or replaced behind our back is
downloaded again instead of shown.  The ``.part`` name is fixed per object and
a cross-process lock (``fcntl.flock``) guards it, so a download killed with its
process is continued by the next one; a ``.part`` nobody has written to for a
day is swept away.  Only folders named like process IDs are ever touched, so a
cache directory shared with other files cannot lose them.

A download *in use* (being downloaded, opened by a fetch not yet finished,
or behind a view still open) is *pinned*: whoever uses it holds a shared
``flock`` on the entry's pin file (:func:`pin`) for as long as it does.  The
cache's bound evicts an entry only inside :func:`unpinned`, which takes that
lock exclusively without waiting and skips the entry when it cannot: so no
thread, and no other kernel sharing the cache, ever loses a file it shows.
The kernel drops a dead process's flocks, so a crashed kernel pins nothing.
The pin file is never deleted with its download (a pin may be taken before
the download exists, and one file must carry every holder's lock).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import hashlib
import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from .._ids import check_process_id
from ..errors import Cancelled

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process per cache is assumed
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "POLL_SECONDS", "SIDECAR_VERSION", "CacheEntry", "Pin", "cache_key", "clear",
    "default_cache_dir", "discard", "hold", "is_safe_extension", "pin", "pinned", "read_json",
    "sweep_stale_parts", "sweep_stale_parts_in", "unpinned", "write_json",
]

# The cache's messages have always been the transfer layer's; users filter by this name.
_log = logging.getLogger("topaz_nb.transfer")

_CACHE_ENV = "TOPAZ_NB_CACHE"
_STALE_PART_SECONDS = 24 * 3600
"""A ``.part`` file untouched this long belongs to no live download (every
chunk written bumps its mtime, and a stalled download gives up within
``stall_timeout``), so any fetch may delete it."""
POLL_SECONDS = 0.25
"""How often a waiting download looks at its cancel event and stall clock."""
SIDECAR_VERSION = 1
"""Version of the JSON records (sidecar and ``.part.json``); another is not trusted."""

_SAFE_EXT = re.compile(r"[a-z0-9]{1,8}")
_STEM = re.compile(r"(?:input|output)-[A-Za-z0-9_-]{1,80}")
_DERIVED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,80}")


def default_cache_dir() -> Path:
    """The per-user cache directory; ``TOPAZ_NB_CACHE`` overrides it."""
    override = os.environ.get(_CACHE_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    return platformdirs.user_cache_path("topaz-nb")


def cache_key(etag: str | None, last_modified: _dt.datetime | None, size: int | None) -> str:
    """A filename-safe key from whichever validators storage sent.

    The ETag when there is one; otherwise Last-Modified with the size;
    otherwise the size; otherwise nothing beyond process ID and side.  That
    last fallback is sound because Topaz never changes the objects of a
    process: an ID names one upload and one result, deleted after 7 days but
    never rewritten.
    """
    if etag:
        return "etag-" + _digest(etag)
    if last_modified is not None:
        stamp = last_modified.astimezone(_dt.timezone.utc).isoformat()
        return "lm-" + _digest(f"{stamp}|{size}")
    if size is not None:
        return f"size-{size}"
    return "any"


def is_safe_extension(ext: str) -> bool:
    """Whether ``ext`` may end a cached file's name (short, lower case, no dot)."""
    return _SAFE_EXT.fullmatch(ext) is not None


@dataclass(frozen=True)
class CacheEntry:
    """The files of one cached object; the only description of the layout.

    Other modules (the downloader, the budget, the preview store) ask an
    entry for paths instead of parsing file names, so the layout can change
    here alone.  ``stem`` is ``<side>-<key>``.
    """

    directory: Path
    stem: str

    @classmethod
    def at(cls, cache_dir: Path, process_id: str, side: str, key: str) -> CacheEntry:
        """The entry of one side of a process in ``cache_dir``, ``key`` being
        its :func:`cache_key` (the caller has checked ID and side)."""
        return cls(cache_dir / process_id, f"{side}-{key}")

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> CacheEntry | None:
        """The entry a downloaded file belongs to, or ``None`` for a file that
        is not a download of a cache (a user's own file, a derived file)."""
        path = Path(path)
        stem, dot, ext = path.name.rpartition(".")
        if not dot or ext == "part" or not _STEM.fullmatch(stem) \
                or not _SAFE_EXT.fullmatch(ext) or not _is_pid(path.parent.name):
            return None
        return cls(path.parent, stem)

    @property
    def sidecar(self) -> Path:
        """JSON record of the complete file: name, size, validator, SHA-256, mtime."""
        return self.directory / f".{self.stem}.json"

    @property
    def part(self) -> Path:
        """The download in progress; never read as the image."""
        return self.directory / f"{self.stem}.part"

    @property
    def part_meta(self) -> Path:
        """What object the ``.part`` holds the start of (ETag, size), for resume;
        for a download in parallel ranges also ``ranges``, the ``[start, end)``
        byte ranges already written (:class:`~topaz_nb.storage.ranges.Done`)."""
        return self.directory / f".{self.stem}.part.json"

    @property
    def lock(self) -> Path:
        return self.directory / f".{self.stem}.lock"

    @property
    def pin_file(self) -> Path:
        """Carries the shared locks of those using the download (:func:`pin`);
        it outlives the download, like :attr:`lock`."""
        return self.directory / f".{self.stem}.pin"

    def file_with(self, ext: str) -> Path:
        return self.directory / f"{self.stem}.{ext}"

    @property
    def file(self) -> Path | None:
        """The complete file the sidecar names (whether it still checks out or not)."""
        meta = read_json(self.sidecar)
        name = meta.get("file") if meta else None
        if not isinstance(name, str) or Path(name).name != name \
                or not name.startswith(self.stem + "."):
            return None
        return self.directory / name

    def derived(self, name: str) -> Path:
        """Where a file derived from this download (a preview, say) lives.

        It sits beside the download, hidden, and goes when the download is
        discarded or the cache cleared.
        """
        if not _DERIVED_NAME.fullmatch(name):
            raise ValueError(f"not a safe derived file name: {name!r}")
        return self.directory / f".{self.stem}.d.{name}"

    def derived_files(self) -> list[Path]:
        return sorted(self.directory.glob(f".{glob.escape(self.stem)}.d.*"))

    def verified_file(self, size: int | None, etag: str | None, *,
                      heal: bool = False) -> Path | None:
        """The entry's file when its sidecar vouches for it, or ``None``.

        It counts only when the sidecar is there and the file's size and
        modification time match it, and the size and ETag match those storage
        states now (where it states them).  With ``heal`` a file that fails
        the check is discarded (call it holding the entry, see :func:`hold`).
        """
        meta = read_json(self.sidecar)
        path = self.file
        if meta is None or path is None:
            return None
        try:
            stat = path.stat()
            good = (meta.get("v") == SIDECAR_VERSION and path.is_file()
                    and stat.st_size == meta.get("size") and stat.st_mtime_ns == meta.get("mtime_ns")
                    and (size is None or size == stat.st_size)
                    and (etag is None or meta.get("etag") == etag))
        except OSError:
            good = False
        if good:
            return path
        if heal:
            _log.info("cached %s no longer matches its record; downloading it again", path.name)
            self.remove_files(path)
        return None

    def commit(self, ext: str, *, etag: str | None, validator: str, sha256: str,
               keep: Iterable[str] = ()) -> Path:
        """Make the checked ``.part`` the entry's file ``<stem>.<ext>`` and record it.

        Files derived from an older download and an older file of another
        extension go first, and the old sidecar before the rename, so no record
        ever vouches for bytes it was not written for.  Derived files whose
        names start with one of ``keep`` are being made from this download's
        bytes as they arrived, and stay (they carry their own stamp of the
        file they were made from).
        """
        final = self.file_with(ext)
        old = self.file
        kept = tuple(keep)
        derived = [p for p in self.derived_files() if not (kept and p.name.startswith(kept))]
        for stale in [*derived, *([old] if old is not None and old != final else [])]:
            _unlink_quietly(stale)
        _unlink_quietly(self.sidecar)
        os.replace(self.part, final)
        stat = final.stat()
        write_json(self.sidecar, {
            "v": SIDECAR_VERSION, "file": final.name, "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns, "etag": etag, "validator": validator,
            "sha256": sha256,
        })
        _unlink_quietly(self.part_meta)
        return final

    def drop_part(self) -> None:
        """Delete the download in progress and its record (it cannot be resumed)."""
        _unlink_quietly(self.part)
        _unlink_quietly(self.part_meta)

    def remove_files(self, path: Path | None = None) -> None:
        """Delete the file (and ``path``, an older name of it), its derived
        files and its sidecar; call it holding the entry."""
        for item in {*self.derived_files(), *([path] if path else []),
                     *([self.file] if self.file else [])}:
            _unlink_quietly(item)
        _unlink_quietly(self.sidecar)


# ------------------------------------------------------------------ records


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON record, or ``None`` when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write atomically, so a reader sees the old record or the new one."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(json.dumps(data, sort_keys=True), "utf-8")
        os.replace(tmp, path)
    except OSError:
        _unlink_quietly(tmp)
        raise


# ------------------------------------------------------------------ locks


class _Interrupted(Exception):
    """Internal: a wait saw its cancel event set."""


def _flock(fd: int, operation: int, cancel: threading.Event | None,
           on_wait: Callable[[], None]) -> None:
    """Take ``flock(fd, operation)``, calling ``on_wait`` once if it has to
    wait; with ``cancel`` the wait polls it and ends in :class:`_Interrupted`."""
    waited = False
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if not waited:
                on_wait()
                waited = True
            if cancel is None:
                fcntl.flock(fd, operation)
                return
            if cancel.wait(POLL_SECONDS / 2):
                raise _Interrupted() from None


class _FileLock:
    """An exclusive lock shared by every process using the cache.

    ``fcntl.flock`` where it exists (the kernel drops it when its holder dies,
    even by SIGKILL); elsewhere a no-op, and one process per cache is assumed.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def acquire(self, cancel: threading.Event | None, on_wait: Callable[[], None]) -> None:
        if fcntl is None:
            return
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _flock(fd, fcntl.LOCK_EX, cancel, on_wait)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(entry: CacheEntry) -> threading.Lock:
    """The entry's lock among this process's threads: one per object for the
    whole process, so a download, a discard and an eviction by the budget
    exclude each other whichever ``Transfer`` they go through."""
    with _thread_locks_guard:
        return _thread_locks.setdefault(str(entry.part), threading.Lock())


@contextlib.contextmanager
def hold(entry: CacheEntry, cancel: threading.Event | None = None,
         what: str = "this image") -> Iterator[None]:
    """Hold the entry against other threads and other processes.

    Waiting is cancellable: the thread lock is polled and the file lock tried
    without blocking while a cancel event is given; when it is set the wait
    ends with :class:`~topaz_nb.errors.Cancelled`, naming the download
    ``what`` (``"the output of <id>"``).
    """
    lock = _thread_lock(entry)
    while not lock.acquire(timeout=POLL_SECONDS):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"Cancelled: the download of {what} was waiting "
                            "for another one of the same image; run it again to resume")
    try:
        entry.directory.mkdir(parents=True, exist_ok=True)
        file_lock = _FileLock(entry.lock)
        try:
            file_lock.acquire(cancel, lambda: _log.info(
                "waiting for another process to finish downloading %s", entry.stem))
        except _Interrupted:
            raise Cancelled(f"Cancelled: the download of {what} was waiting "
                            "for another process downloading the same image; run it "
                            "again to resume") from None
        try:
            yield
        finally:
            file_lock.release()
    finally:
        lock.release()


# ------------------------------------------------------------------ pins

# Without fcntl (Windows) one process per cache is assumed, and pins are counted here.
_local_pins: dict[str, int] = {}
_local_pins_guard = threading.Lock()


class Pin:
    """One user's hold on a download, keeping it from eviction (:func:`pin`).

    :meth:`release` lets go (once; later calls do nothing); so does dropping
    the last reference, and the kernel does when the process ends.
    """

    def __init__(self, entry: CacheEntry, fd: int | None) -> None:
        self.entry = entry
        self._release = weakref.finalize(self, _unpin, str(entry.pin_file), fd)

    @property
    def held(self) -> bool:
        return self._release.alive

    def release(self) -> None:
        """Let go of the download: the cache's bound may evict it from now on."""
        self._release()

    def __enter__(self) -> Pin:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "" if self.held else " released"
        return f"<Pin {self.entry.directory.name}/{self.entry.stem}{state}>"


def _unpin(key: str, fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock
        return
    with _local_pins_guard:
        left = _local_pins.get(key, 0) - 1
        if left > 0:
            _local_pins[key] = left
        else:
            _local_pins.pop(key, None)


def pin(entry: CacheEntry, cancel: threading.Event | None = None,
        what: str = "this image") -> Pin:
    """Pin ``entry``'s download (there or still to come) against eviction,
    for every thread and every process sharing the cache, until the returned
    :class:`Pin` is released.

    Take it *before* looking for the file: an eviction under way then either
    finishes first (the file is found gone and downloaded again) or sees the
    pin.  Waiting for such an eviction is cancellable like :func:`hold`.
    """
    entry.directory.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        with _local_pins_guard:
            key = str(entry.pin_file)
            _local_pins[key] = _local_pins.get(key, 0) + 1
        return Pin(entry, None)
    while True:
        fd = os.open(entry.pin_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _flock(fd, fcntl.LOCK_SH, cancel, lambda: _log.debug(
                "waiting for the cache's bound to finish with %s", entry.stem))
            if _same_file(fd, entry.pin_file):
                return Pin(entry, fd)
        except _Interrupted:
            os.close(fd)
            raise Cancelled(f"Cancelled: the download of {what} was waiting for the cache "
                            "to make room; run it again to resume") from None
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the pin file went (the cache was cleared) while we waited: pin anew


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


@contextlib.contextmanager
def unpinned(entry: CacheEntry) -> Iterator[bool]:
    """Whether nobody pins ``entry`` now; while the block runs with ``True``,
    nobody can (a :func:`pin` waits), so its download may be deleted there.

    Never waits: an entry in use yields ``False`` at once, as does one whose
    pin file cannot be opened (nothing may be deleted without knowing).
    """
    if fcntl is None:
        with _local_pins_guard:
            yield str(entry.pin_file) not in _local_pins
        return
    try:
        fd = os.open(entry.pin_file, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        fd = -1
    if fd < 0:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            free = True
        except OSError:  # held by a pin (BlockingIOError), or no locks on this disk
            free = False
        yield free
    finally:
        os.close(fd)


def pinned(entry: CacheEntry) -> bool:
    """Whether some thread or process pins ``entry`` now (for reports; to
    delete, use :func:`unpinned`, which also keeps new pins out meanwhile)."""
    if fcntl is None:
        with _local_pins_guard:
            return str(entry.pin_file) in _local_pins
    try:
        fd = os.open(entry.pin_file, os.O_RDONLY)
    except OSError:
        return False  # never pinned: a pin creates the file
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return isinstance(exc, BlockingIOError)
    finally:
        os.close(fd)
    return False


# ------------------------------------------------------------------ housekeeping


def discard(entry: CacheEntry, path: Path) -> None:
    """Delete the download ``path`` of ``entry`` with its sidecar and derived
    files, holding the entry so that no download of it is under way; the next
    fetch downloads it again."""
    with hold(entry):
        entry.remove_files(path)
    _log.info("discarded %s from the cache", path.name)


def clear(cache_dir: Path, process_id: str | None = None) -> int:
    """Delete cached files of one process, or of all; returns how many
    downloads were deleted (their sidecars, derived files and any ``.part``
    go with them).

    Only directories named like process IDs are touched, so pointing
    ``TOPAZ_NB_CACHE`` at a shared directory cannot wipe unrelated files.
    """
    if process_id is not None:
        dirs = [cache_dir / check_process_id(process_id)]
    elif cache_dir.is_dir():
        dirs = [d for d in cache_dir.iterdir() if d.is_dir() and _is_pid(d.name)]
    else:
        dirs = []
    removed = 0
    for directory in dirs:
        if not directory.is_dir():
            continue
        for item in directory.iterdir():
            if item.is_file() or item.is_symlink():
                try:
                    item.unlink()
                except FileNotFoundError:
                    continue
                # Hidden files are sidecars, locks and derived files, not downloads.
                removed += not item.name.startswith(".") and not item.name.endswith(".part")
        with contextlib.suppress(OSError):
            directory.rmdir()
    _log.debug("removed %d cached files from %s", removed, cache_dir)
    return removed


def sweep_stale_parts(cache_dir: Path) -> None:
    """Delete the ``.part`` files no download is still writing, in every
    process folder of the cache (never in a user's own folder)."""
    _sweep(p for p in cache_dir.glob("*/*.part") if _is_pid(p.parent.name))


def sweep_stale_parts_in(directory: Path) -> None:
    """Delete the ``.part`` files no download is still writing, in one
    process folder."""
    _sweep(directory.glob("*.part"))


def _sweep(parts: Iterable[Path]) -> None:
    """Delete ``.part`` files (and their records) untouched for a day."""
    cutoff = time.time() - _STALE_PART_SECONDS
    for leftover in parts:
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
                _unlink_quietly(leftover.with_name(f".{leftover.stem}.part.json"))
                _log.debug("removed stale %s", leftover.name)
        except OSError:
            pass


def _is_pid(name: str) -> bool:
    try:
        return check_process_id(name) == name
    except ValueError:
        return False


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
