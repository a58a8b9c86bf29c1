"""Presigned HEAD/GET against object storage, into a disk cache: the facade.

:class:`Transfer` is what the rest of the package and notebooks construct; it
decides when a download is needed and composes the modules that do the work:

* :mod:`~topaz_nb.storage.refresh`: the link of one operation, refreshed at
  most once.  The transfer layer never holds the API key.  It is handed a
  :data:`~topaz_nb.links.LinkSource` instead, so when storage refuses a link
  (it lasts an hour) it can ask for a fresh one exactly once, and nothing here
  can leak the key or send it to a host that is not the API.
* :mod:`~topaz_nb.storage.download`: the HTTP side, streaming into a
  ``.part`` that becomes the cached file only once complete and checked;
  its docstring lists the integrity rules (complete means checked, content
  check, resume never splice, bounded, identity encoding, retries), which
  ``docs/ARCHITECTURE.md``, "Integrity rules", says for readers of the whole
  project.
* :mod:`~topaz_nb.storage.cache`: the cache layout (owned there alone;
  :class:`~topaz_nb.storage.cache.CacheEntry` hands the paths to everyone
  else), its sidecars, the cross-process lock of each object and the pins
  that keep a download in use from eviction (:meth:`Transfer.pin`).
* :mod:`~topaz_nb.storage.budget`: the cache's disk bound, least recently
  used first, never what is pinned (:meth:`Transfer.keep_within_budget`).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from .._ids import check_process_id
from ..links import SIDES, LinkSource, Side
from ..net.retry import DEFAULT_MAX_RETRY_AFTER, DEFAULT_MAX_RETRY_TIME
from . import budget
from .arrival import Arrival
from .cache import (
    CacheEntry,
    Pin,
    cache_key,
    clear,
    default_cache_dir,
    discard,
    hold,
    pin,
    sweep_stale_parts,
    sweep_stale_parts_in,
)
from .download import (
    DEFAULT_CONNECTIONS,
    DEFAULT_MAX_BYTES,
    DEFAULT_STALL_TIMEOUT,
    Downloader,
    ObjectInfo,
    ProgressCallback,
    make_session,
)
from .ranges import MIN_PART_SIZE, PART_SIZE
from .refresh import LinkHolder

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Fetched", "Transfer"]

_log = logging.getLogger("topaz_nb.transfer")

_BUDGET_INTERVAL = 10.0
"""Seconds between cache-size checks when fetches only hit the cache."""


@dataclass(frozen=True)
class Fetched:
    """One side of a process on local disk.

    ``from_cache`` says no GET was needed; ``bytes_downloaded`` counts body
    bytes received by this call (a restarted transfer counts its bytes twice).
    """

    process_id: str
    side: Side
    path: Path
    info: ObjectInfo
    from_cache: bool
    bytes_downloaded: int


class Transfer:
    """Presigned HEAD/GET into a disk cache; safe to share between threads
    and between processes sharing a cache directory.

    Parameters
    ----------
    cache_dir:
        Where files go; :func:`~topaz_nb.storage.cache.default_cache_dir` when
        ``None``.
    use_cache:
        With ``False`` every :meth:`download` sends a GET even when the file
        is cached.  The result is still written atomically to its usual place
        in ``cache_dir`` (replacing any older copy), so other readers never see
        a half-written file.
    chunk_size:
        Most bytes per read while streaming, and the step of progress reports
        (at least 1 MiB is sensible for images).
    timeout:
        Seconds to wait for a connection or for the next bytes of a response.
    retries:
        Bound on urllib3's retries of connection errors and 429/5xx answers,
        and separately on resumes of a body cut short.
    max_bytes:
        Ceiling on a body whose size neither the HEAD nor the GET announced
        (``Topaz.max_download_bytes``, 4 GB by default).  Past it the download
        stops with an error, so an endless body cannot fill the disk.  A body
        longer than an announced size is refused at that size.
    stall_timeout:
        A download is *stalled* when fewer than
        :data:`~topaz_nb.storage.download.STALL_BYTES` (64 KiB) arrived within
        ``stall_timeout`` seconds, counted from the start of the body or from
        the last time 64 KiB had arrived.  It is then abandoned with one line
        and its ``.part`` kept for resume (``Topaz.stall_timeout``, 30 s by
        default; ``0`` or ``None`` turns the check off).  A per-read socket
        timeout cannot see this: a body sending one byte a second never times
        out.
    max_retry_after:
        Longest wait, in seconds, that a storage ``Retry-After`` can ask for
        (``Topaz.max_retry_after``); see :mod:`topaz_nb.net.retry`.
    cache_max_bytes:
        Bound on the cache's disk use (``Topaz.cache_max_bytes``, 20 GB by
        default; ``None``: unbounded), kept by :meth:`keep_within_budget`:
        least recently used derived files first, then downloads
        (:mod:`topaz_nb.storage.budget`).
    connections:
        Range requests in flight for one large object
        (``Topaz.download_connections``, 4 by default; 1 turns parallel ranges
        off).  One stream from object storage is capped (S3: roughly 25–90
        MB/s) below what the link carries.  Only an object of known size of at
        least two parts is split; a smaller one, one of unknown size, or
        storage that does not answer ranges with ``206`` gets one stream.
    part_size:
        Bytes per Range request (8 MiB by default, so objects from 16 MB go
        in parts).
    clock:
        The monotonic clock the stall check reads (injectable for tests).
    """

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None, *,
                 use_cache: bool = True, chunk_size: int = 1 << 20,
                 timeout: float = 60.0, retries: int = 4,
                 max_bytes: int = DEFAULT_MAX_BYTES,
                 stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
                 max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
                 cache_max_bytes: int | None = None,
                 connections: int = DEFAULT_CONNECTIONS, part_size: int = PART_SIZE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if connections < 1:
            raise ValueError(f"connections must be 1 or more, got {connections}")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE}, got {part_size}")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries}")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if stall_timeout is not None and stall_timeout < 0:
            raise ValueError(f"stall_timeout must be 0 or more, got {stall_timeout}")
        self._cache_dir = Path(cache_dir).expanduser() if cache_dir is not None \
            else default_cache_dir()
        self.use_cache = use_cache
        if cache_max_bytes is not None and cache_max_bytes < 0:
            raise ValueError(f"cache_max_bytes must be 0 or more, got {cache_max_bytes}")
        self.cache_max_bytes = cache_max_bytes
        self._budget_checked = -math.inf
        self._budget_guard = threading.Lock()
        self._clock = clock
        self._downloader = Downloader(
            self._make_session(retries, max_retry_after=max_retry_after),
            chunk_size=chunk_size, timeout=timeout, retries=retries, max_bytes=max_bytes,
            stall_timeout=stall_timeout or None, connections=connections,
            part_size=part_size, clock=clock)
        self._swept_all = False

    @staticmethod
    def _make_session(retries: int, *, max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
                      max_retry_time: float = DEFAULT_MAX_RETRY_TIME) -> requests.Session:
        """The key-free session a Transfer sends its requests through
        (:func:`~topaz_nb.storage.download.make_session`)."""
        return make_session(retries, max_retry_after=max_retry_after,
                            max_retry_time=max_retry_time)

    # The download settings live on the downloader; these read and change them there.

    @property
    def chunk_size(self) -> int:
        return self._downloader.chunk_size

    @chunk_size.setter
    def chunk_size(self, value: int) -> None:
        self._downloader.chunk_size = value

    @property
    def timeout(self) -> float:
        return self._downloader.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._downloader.timeout = value

    @property
    def retries(self) -> int:
        return self._downloader.retries

    @retries.setter
    def retries(self, value: int) -> None:
        self._downloader.retries = value

    @property
    def max_bytes(self) -> int:
        return self._downloader.max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        self._downloader.max_bytes = value

    @property
    def stall_timeout(self) -> float | None:
        return self._downloader.stall_timeout

    @stall_timeout.setter
    def stall_timeout(self, value: float | None) -> None:
        self._downloader.stall_timeout = value

    @property
    def connections(self) -> int:
        return self._downloader.connections

    @connections.setter
    def connections(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"connections must be 1 or more, got {value}")
        self._downloader.connections = value

    @property
    def part_size(self) -> int:
        return self._downloader.part_size

    @part_size.setter
    def part_size(self, value: int) -> None:
        if value < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE}, got {value}")
        self._downloader.part_size = value

    @property
    def cache_dir(self) -> Path:
        return self._cache_dir

    def __repr__(self) -> str:
        return f"Transfer(cache_dir={str(self._cache_dir)!r}, use_cache={self.use_cache!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections; the cache stays."""
        self._downloader.close()

    # ------------------------------------------------------------------ HEAD

    def head(self, links: LinkSource, *, cancel: threading.Event | None = None) -> ObjectInfo:
        """Ask storage what the object is, without downloading it.

        A refused or already expired link is replaced once through
        ``links(True)``; a second refusal raises :class:`LinkExpired`, and an
        object storage says is gone a :class:`TransferError`, each with the
        ``reason`` storage gave (``exc.reason``, ``exc.storage_code``).  Setting
        ``cancel`` raises :class:`~topaz_nb.errors.Cancelled` within a second.
        """
        return self._downloader.head(LinkHolder(links), cancel)

    # ------------------------------------------------------------------ GET

    def fetch(self, links: LinkSource, process_id: str, side: Side, *,
              on_progress: ProgressCallback | None = None,
              cancel: threading.Event | None = None,
              on_arrival: Callable[[Arrival], None] | None = None) -> Fetched:
        """HEAD then download: the usual way to get one side onto disk.

        A cached copy costs the HEAD only.  HEAD and GET share one link and
        at most one refresh of it.  See :meth:`download` for ``cancel`` and
        ``on_arrival``.
        """
        pid, side = _check(process_id, side)
        holder = LinkHolder(links, pid, side)
        info = self._downloader.head(holder, cancel)
        return self._download(holder, info, on_progress, cancel, on_arrival)

    def download(self, links: LinkSource, process_id: str, side: Side, *,
                 info: ObjectInfo | None = None,
                 on_progress: ProgressCallback | None = None,
                 cancel: threading.Event | None = None,
                 on_arrival: Callable[[Arrival], None] | None = None) -> Fetched:
        """Get the object onto disk, from the cache when it is there.

        ``info`` is the object's HEAD answer (sent now when not given); it
        decides the cache file.  ``on_progress(done, total)`` is called every
        ``chunk_size`` bytes and at the end, ``total`` being ``None`` when the
        size is unknown; an exception raised from it stops the download.
        Setting ``cancel`` (from any thread) stops it within a second with
        :class:`~topaz_nb.errors.Cancelled`; what arrived stays as the
        ``.part`` file, so the next call resumes.

        When the object is downloaded (not a cache hit) and its size is known,
        ``on_arrival(arrival)`` is called first with the
        :class:`~topaz_nb.storage.arrival.Arrival` that hands its bytes on in
        order as they land, so decoding can start before the last one.
        """
        pid, side = _check(process_id, side)
        holder = LinkHolder(links, pid, side)
        if info is None:
            info = self._downloader.head(holder, cancel)
        return self._download(holder, info, on_progress, cancel, on_arrival)

    def pin(self, process_id: str, side: Side, info: ObjectInfo, *,
            cancel: threading.Event | None = None) -> Pin:
        """Keep this object's download from eviction by the cache's bound, in
        every thread and every process sharing the cache, until the returned
        :class:`~topaz_nb.storage.cache.Pin` is released (or dropped).

        Take it before :meth:`download` and hold it while the file is used (a
        comparison holds its pins until it is closed): ``download`` pins only
        while it runs.  The object need not be cached yet.
        """
        pid, side = _check(process_id, side)
        return pin(self.entry(pid, side, info), cancel, f"the {side} of {pid}")

    def entry(self, process_id: str, side: Side, info: ObjectInfo) -> CacheEntry:
        """The cache entry (paths of the file, sidecar, derived files) of an object."""
        pid, side = _check(process_id, side)
        return CacheEntry.at(self._cache_dir, pid, side,
                             cache_key(info.etag, info.last_modified, info.size))

    @staticmethod
    def derived_path(fetched_path: str | os.PathLike[str], name: str) -> Path | None:
        """Where a file derived from a downloaded file lives (``None`` when the
        file is not a download of a cache)."""
        entry = CacheEntry.of(fetched_path)
        return entry.derived(name) if entry is not None else None

    def cached(self, process_id: str, side: Side, info: ObjectInfo) -> Path | None:
        """The complete cached file for this object, or ``None``.

        The key is the ETag when storage sends one; otherwise Last-Modified
        with the size; otherwise the size; otherwise nothing beyond process ID
        and side.  That last fallback is sound because Topaz never changes the
        objects of a process: an ID names one upload and one result, deleted
        after 7 days but never rewritten.  A file counts only when its sidecar
        is there and its size and modification time match the sidecar (and
        the size matches a known size).
        """
        return self.entry(process_id, side, info).verified_file(info.size, info.etag)

    def discard(self, fetched: Fetched | str | os.PathLike[str]) -> None:
        """Delete a downloaded file with its sidecar and derived files, so the
        next fetch downloads it again.

        For a cached file found damaged (it does not decode, say): the cache
        heals instead of failing on every run until it is cleared by hand.
        """
        path = fetched.path if isinstance(fetched, Fetched) else Path(fetched)
        entry = CacheEntry.of(path)
        if entry is None or entry.directory.parent != self._cache_dir:
            raise ValueError(f"{path} is not a download in {self._cache_dir}")
        discard(entry, path)

    def keep_within_budget(self, in_use: Iterable[str | os.PathLike[str]] = (), *,
                           downloaded: bool = True) -> int:
        """Mark the downloads ``in_use`` as just used, then evict least recently
        used derived files and downloads (never those, nor any download pinned
        by :meth:`pin` anywhere) until the cache fits :attr:`cache_max_bytes`;
        returns the bytes freed (0 when unbounded).  Where what is in use
        takes more than the bound, the cache stays over it.

        Checking scans the cache folder, so when nothing was ``downloaded``
        (cache hits: a gallery reopening hundreds of processes) it happens at
        most every :data:`_BUDGET_INTERVAL` seconds; derived files written since
        (previews, pyramids) are counted then.
        """
        keep = tuple(Path(p) for p in in_use)
        for path in keep:
            budget.mark_used(path)
        if self.cache_max_bytes is None:
            return 0
        now = self._clock()
        with self._budget_guard:
            due = downloaded or now - self._budget_checked >= _BUDGET_INTERVAL
            if due:
                self._budget_checked = now
        return budget.enforce(self._cache_dir, self.cache_max_bytes, keep=keep) if due else 0

    def clear_cache(self, process_id: str | None = None) -> int:
        """Delete cached files of one process, or of all; returns how many
        downloads were deleted (their sidecars, derived files and any
        ``.part`` go with them).

        Only directories named like process IDs are touched, so pointing
        ``TOPAZ_NB_CACHE`` at a shared directory cannot wipe unrelated files.
        """
        return clear(self._cache_dir, process_id)

    # ------------------------------------------------------------- internals

    def _sweep(self, directory: Path) -> None:
        """Delete stale ``.part`` files: this object's folder on every fetch,
        the whole cache on the first fetch of this Transfer."""
        if not self._swept_all:
            self._swept_all = True
            sweep_stale_parts(self._cache_dir)
        sweep_stale_parts_in(directory)

    def _download(self, links: LinkHolder, info: ObjectInfo,
                  on_progress: ProgressCallback | None,
                  cancel: threading.Event | None,
                  on_arrival: Callable[[Arrival], None] | None = None) -> Fetched:
        pid, side = links.process_id, links.side
        entry = self.entry(pid, side, info)
        self._sweep(entry.directory)
        # Pinned before it is looked for, so that no check of the bound in any
        # thread or kernel evicts it between the download and our return.
        with pin(entry, cancel, f"the {side} of {pid}"):
            return self._download_pinned(entry, links, info, on_progress, cancel, on_arrival)

    def _download_pinned(self, entry: CacheEntry, links: LinkHolder, info: ObjectInfo,
                         on_progress: ProgressCallback | None,
                         cancel: threading.Event | None,
                         on_arrival: Callable[[Arrival], None] | None) -> Fetched:
        pid, side = links.process_id, links.side
        if self.use_cache:
            hit = entry.verified_file(info.size, info.etag)
            if hit is not None:
                _log.debug("cache hit for %s of %s: %s", side, pid, hit)
                return Fetched(pid, side, hit, info, True, 0)
        with hold(entry, cancel, f"the {side} of {pid}"):
            # Another thread or process may have finished the object while we waited.
            if self.use_cache:
                hit = entry.verified_file(info.size, info.etag, heal=True)
                if hit is not None:
                    return Fetched(pid, side, hit, info, True, 0)
            path, received = self._downloader.stream_to(entry, links, info, on_progress,
                                                        cancel, on_arrival)
        return Fetched(pid, side, path, info, False, received)


def _check(process_id: str, side: Side) -> tuple[str, Side]:
    pid = check_process_id(process_id)
    if side not in SIDES:
        raise ValueError(f"side must be 'input' or 'output', got {side!r}")
    return pid, side
