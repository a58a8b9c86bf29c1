"""Presigned HEAD/GET against object storage, into a disk cache.

The transfer layer never holds the API key.  It is handed a
:data:`~topaz_nb.links.LinkSource` instead, so when storage refuses a link (it
lasts an hour) it can ask for a fresh one exactly once, and nothing here can
leak the key or send it to a host that is not the API.

Why the download path looks the way it does (``docs/ARCHITECTURE.md``,
"Integrity rules", says the same for readers of the whole project):

* **Complete means checked.**  Bytes go to ``<stem>.part`` and become the
  cached file only through :func:`os.replace` once (a) the number of bytes
  equals the HEAD's Content-Length where there is one, or else the GET's, and
  (b) the body ended without a read error.  Storage may frame a body by
  chunks or by closing the connection, with no length at all; a read error
  then is the only sign of a body cut short, so it is never ignored.  A
  ``.part`` file is never opened as the image.
* **Content check.**  Where the ETag is a plain MD5 (32 hex digits, as S3
  gives for single-part objects) the MD5 is computed while streaming and a
  mismatch is refused.  A SHA-256 is always computed while streaming and kept
  in a JSON sidecar with the size and modification time; a cache hit checks
  size and mtime against the sidecar, so a file truncated or replaced behind
  our back is downloaded again instead of shown.
* **Resume, never splice.**  The ``.part`` name is fixed per object and a
  cross-process lock (``fcntl.flock``) guards it, so a download killed with its
  process is continued by the next one with ``Range: bytes=<done>-``.  A 206
  whose ETag or Content-Range total differs from the object being resumed
  restarts from zero; ``If-Range`` is sent as well but not relied on (S3
  ignores it).  A ``200`` instead of a ``206`` restarts from zero too.
* **Bounded.**  A body with no length stops at :attr:`Transfer.max_bytes`; a
  body that stalls (see :attr:`Transfer.stall_timeout`) is abandoned, its
  ``.part`` kept for resume; a ``cancel`` event is noticed within a second.
  The body is read on a helper thread with ``read1`` so those checks run
  every quarter second even while bytes trickle in one at a time.
* **Identity encoding.**  ``Accept-Encoding: identity`` keeps
  ``Content-Length`` equal to the bytes written, so the length check and the
  byte offsets of a resume mean what they say.
* **Retries.**  Connection errors and 429/5xx answers are retried by urllib3's
  :class:`~urllib3.util.Retry` on the session's adapter, with backoff and
  ``Retry-After``; the loop here only deals with bodies cut short.

Cache layout (owned here alone; :class:`CacheEntry` hands the paths to
everyone else): ``<cache_dir>/<process id>/<side>-<key>.<ext>``, where the key
comes from the storage's validators (see :meth:`Transfer.cached`) and the
extension from the sniffed format of the bytes, never from Content-Type.
Beside it, hidden: ``.<side>-<key>.json`` (the sidecar), ``.<side>-<key>.lock``
and ``.<side>-<key>.d.<name>`` (files derived from the download, such as
previews).  ``<side>-<key>.part`` and its ``.part.json`` hold a download in
progress.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import email.utils
import glob
import hashlib
import http.client
import json
import logging
import math
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import platformdirs
import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from .._ids import check_process_id
from ..net.logsafe import install_log_filter
from ..net.retry import DEFAULT_MAX_RETRY_AFTER, DEFAULT_MAX_RETRY_TIME, make_retry
from .._tasks import cancellable
from .._version import user_agent
from ..errors import Cancelled, LinkExpired, TransferError
from ..links import SIDES, Link, LinkSource, Side, redact_url, scrub_urls

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process per cache is assumed
    fcntl = None  # type: ignore[assignment]

__all__ = ["CacheEntry", "Fetched", "ObjectInfo", "Transfer", "default_cache_dir"]

_log = logging.getLogger("topaz_nb.transfer")

_CACHE_ENV = "TOPAZ_NB_CACHE"
_STALE_PART_SECONDS = 24 * 3600
"""A ``.part`` file untouched this long belongs to no live download (every
chunk written bumps its mtime, and a stalled download gives up within
``stall_timeout``), so any fetch may delete it."""

DEFAULT_MAX_BYTES = 4_000_000_000
"""Ceiling on a body whose size nobody announced (``Topaz.max_download_bytes``)."""
DEFAULT_STALL_TIMEOUT = 30.0
STALL_BYTES = 64 * 1024
"""A download is stalled when fewer than this many bytes arrived in
``stall_timeout`` seconds (see :class:`Transfer`)."""
_POLL_SECONDS = 0.25
"""How often a waiting download looks at its cancel event and stall clock."""

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_FORMAT_EXTENSIONS = {
    "JPEG": "jpg", "MPO": "jpg", "PNG": "png", "TIFF": "tif", "WEBP": "webp", "GIF": "gif",
    "BMP": "bmp", "HEIF": "heic", "AVIF": "avif", "JPEG2000": "jp2",
}
_SAFE_EXT = re.compile(r"[a-z0-9]{1,8}")
_STEM = re.compile(r"(?:input|output)-[A-Za-z0-9_-]{1,80}")
_BUDGET_INTERVAL = 10.0
"""Seconds between cache-size checks when fetches only hit the cache."""
_DERIVED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,80}")
_PLAIN_MD5 = re.compile(r"[0-9a-f]{32}")
_CONTENT_RANGE = re.compile(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*")
_SIDECAR_VERSION = 1
_INTERRUPTIONS = (requests.RequestException, urllib3.exceptions.HTTPError,
                  http.client.HTTPException, OSError)

ProgressCallback = Callable[[int, "int | None"], None]


def default_cache_dir() -> Path:
    """The per-user cache directory; ``TOPAZ_NB_CACHE`` overrides it."""
    override = os.environ.get(_CACHE_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    return platformdirs.user_cache_path("topaz-nb")


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD of a stored object said, with only a redacted URL kept.

    Storage headers are not part of the documented API, so every field may be
    ``None``; ``headers`` keeps the full response headers for whatever else a
    caller wants to show.
    """

    size: int | None
    content_type: str | None
    etag: str | None
    last_modified: _dt.datetime | None
    headers: Mapping[str, str] = field(repr=False, compare=False)
    url: str = ""


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


class _Links:
    """One operation's view of a link source: at most one refresh, ever.

    Shared by the HEAD and the GET of one :meth:`Transfer.fetch`, so a link
    refreshed for the HEAD is reused for the GET and a second refusal is final.
    """

    def __init__(self, source: LinkSource, process_id: str = "", side: Side = "output") -> None:
        self._source = source
        self._link: Link | None = None
        self.refreshed = False
        self.process_id = process_id
        self.side = side

    def current(self) -> Link:
        if self._link is None:
            self._link = self._source(False)
            if self._link.expired and not self.refreshed:
                _log.debug("link for the %s of %s expired before use; refreshing",
                           self._link.side, self._link.process_id)
                self.refresh()
        assert self._link is not None
        return self._link

    def refresh(self) -> Link:
        self.refreshed = True
        self._link = self._source(True)
        return self._link


class _StorageSession(requests.Session):
    """A session that can never attach credentials, not even after a redirect.

    Presigned URLs carry their authorisation in the query string; any
    ``Authorization`` header (for instance one built from ``~/.netrc``) would
    only be a leak, so it is removed on every request and every redirect.
    """

    def rebuild_auth(self, prepared_request: Any, response: Any) -> None:
        _strip_credentials(prepared_request)


def _strip_credentials(request: Any) -> Any:
    for name in ("Authorization", "X-API-Key", "Cookie"):
        request.headers.pop(name, None)
    return request




@dataclass(frozen=True)
class CacheEntry:
    """The files of one cached object; the only description of the layout.

    Other modules (the preview store, :meth:`Transfer.clear_cache`) ask an
    entry for paths instead of parsing file names, so the layout can change
    here alone.  ``stem`` is ``<side>-<key>``.
    """

    directory: Path
    stem: str

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
        """What object the ``.part`` holds the start of (ETag, size), for resume."""
        return self.directory / f".{self.stem}.part.json"

    @property
    def lock(self) -> Path:
        return self.directory / f".{self.stem}.lock"

    def file_with(self, ext: str) -> Path:
        return self.directory / f"{self.stem}.{ext}"

    @property
    def file(self) -> Path | None:
        """The complete file the sidecar names (whether it still checks out or not)."""
        meta = _read_json(self.sidecar)
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


class _Digests:
    """MD5 (when the ETag can be checked) and SHA-256 of the bytes streamed."""

    def __init__(self, want_md5: bool) -> None:
        self._want_md5 = want_md5
        self.reset()

    def reset(self) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False) if self._want_md5 else None
        self.sha256 = hashlib.sha256()

    def update(self, data: bytes) -> None:
        if self.md5 is not None:
            self.md5.update(data)
        self.sha256.update(data)


class _BodyReader:
    """Reads a response body on a helper thread, handing pieces over a queue.

    A socket read blocks until bytes come or the socket's timeout passes, and
    a socket that timed out cannot be read again; so the waiting is done here
    and the downloading thread polls the queue, free to notice a cancel event
    or a stall every :data:`_POLL_SECONDS`.  ``read1`` returns whatever has
    arrived, so a trickling body still yields pieces.  :meth:`stop` shuts the
    socket's read side, which wakes a blocked read.
    """

    def __init__(self, response: requests.Response, size: int) -> None:
        self._raw = response.raw
        self._size = size
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=4)
        self._stopped = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="topaz-transfer-read",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopped.is_set():
                data = self._raw.read1(self._size, decode_content=False)
                if not data:
                    self._put(("end", None))
                    return
                self._put(("data", data))
        except BaseException as exc:  # noqa: BLE001 - handed to the downloading thread
            self._put(("error", exc))

    def _put(self, item: tuple[str, Any]) -> None:
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def next(self, timeout: float) -> tuple[str, Any] | None:
        """The next ``("data", bytes)``, ``("end", None)`` or ``("error", exc)``,
        or ``None`` when nothing came within ``timeout`` seconds."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item[0] != "data":
            self._ended = True
        return item

    def stop(self) -> None:
        self._stopped.set()
        if not self._ended:
            with contextlib.suppress(Exception):
                self._raw.shutdown()
        self._thread.join(1.0)


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
            waited = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waited:
                        on_wait()
                        waited = True
                    if cancel is None:
                        fcntl.flock(fd, fcntl.LOCK_EX)
                        break
                    if cancel.wait(_POLL_SECONDS / 2):
                        raise _Interrupted() from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


class _Interrupted(Exception):
    """Internal: a wait saw its cancel event set."""


class _WrongContent(TransferError):
    """Storage sent bytes that are not the object (wrong size or checksum);
    the ``.part`` is deleted, since resuming it could only repeat the error."""


class Transfer:
    """Presigned HEAD/GET into a disk cache; safe to share between threads
    and between processes sharing a cache directory.

    Parameters
    ----------
    cache_dir:
        Where files go; :func:`default_cache_dir` when ``None``.
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
        A download is *stalled* when fewer than :data:`STALL_BYTES` (64 KiB)
        arrived within ``stall_timeout`` seconds, counted from the start of
        the body or from the last time 64 KiB had arrived.  It is then
        abandoned with one line and its ``.part`` kept for resume
        (``Topaz.stall_timeout``, 30 s by default; ``0`` or ``None`` turns the
        check off).  A per-read socket timeout cannot see this: a body sending
        one byte a second never times out.
    max_retry_after:
        Longest wait, in seconds, that a storage ``Retry-After`` can ask for
        (``Topaz.max_retry_after``); see :mod:`topaz_nb.net.retry`.
    cache_max_bytes:
        Bound on the cache's disk use (``Topaz.cache_max_bytes``, 20 GB by
        default; ``None``: unbounded), kept by :meth:`keep_within_budget`:
        least recently used derived files first, then downloads
        (:mod:`topaz_nb.storage.budget`).
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
                 clock: Callable[[], float] = time.monotonic) -> None:
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
        self.chunk_size = chunk_size
        self.timeout = timeout
        self.retries = retries
        self.max_bytes = max_bytes
        self.stall_timeout = stall_timeout or None
        if cache_max_bytes is not None and cache_max_bytes < 0:
            raise ValueError(f"cache_max_bytes must be 0 or more, got {cache_max_bytes}")
        self.cache_max_bytes = cache_max_bytes
        self._budget_checked = -math.inf
        self._clock = clock
        self._session = self._make_session(retries, max_retry_after=max_retry_after)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._swept_all = False

    @staticmethod
    def _make_session(retries: int, *, max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
                      max_retry_time: float = DEFAULT_MAX_RETRY_TIME) -> requests.Session:
        """A key-free session retrying HEAD/GET by the package's one policy (:mod:`._retry`).

        ``max_retry_after`` caps each wait a ``Retry-After`` asks for and
        ``max_retry_time`` bounds all the retries of one request.
        """
        install_log_filter()
        session = _StorageSession()
        session.auth = _strip_credentials
        session.headers["Accept-Encoding"] = "identity"
        session.headers["User-Agent"] = user_agent()
        retry = make_retry(retries, methods=("HEAD", "GET"), other=0, backoff_factor=0.2,
                           backoff_max=5.0, max_time=max_retry_time,
                           max_retry_after=max_retry_after)
        adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=8)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    @property
    def cache_dir(self) -> Path:
        return self._cache_dir

    def __repr__(self) -> str:
        return f"Transfer(cache_dir={str(self._cache_dir)!r}, use_cache={self.use_cache!r})"

    def __enter__(self) -> Transfer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections; the cache stays."""
        self._session.close()

    # ------------------------------------------------------------------ HEAD

    def head(self, links: LinkSource, *, cancel: threading.Event | None = None) -> ObjectInfo:
        """Ask storage what the object is, without downloading it.

        A refused or already expired link is replaced once through
        ``links(True)``; a second refusal raises :class:`LinkExpired`.  Setting
        ``cancel`` raises :class:`~topaz_nb.errors.Cancelled` within a second.
        """
        return self._head(_Links(links), cancel)

    def _head(self, links: _Links, cancel: threading.Event | None) -> ObjectInfo:
        response = self._request("HEAD", links, {}, cancel)
        with response:
            link = links.current()
            return _object_info(response, redact_url(link.head_url))

    # ------------------------------------------------------------------ GET

    def fetch(self, links: LinkSource, process_id: str, side: Side, *,
              on_progress: ProgressCallback | None = None,
              cancel: threading.Event | None = None) -> Fetched:
        """HEAD then download: the usual way to get one side onto disk.

        A cached copy costs the HEAD only.  HEAD and GET share one link and
        at most one refresh of it.  See :meth:`download` for ``cancel``.
        """
        pid, side = _check(process_id, side)
        holder = _Links(links, pid, side)
        info = self._head(holder, cancel)
        return self._download(holder, info, on_progress, cancel)

    def download(self, links: LinkSource, process_id: str, side: Side, *,
                 info: ObjectInfo | None = None,
                 on_progress: ProgressCallback | None = None,
                 cancel: threading.Event | None = None) -> Fetched:
        """Get the object onto disk, from the cache when it is there.

        ``info`` is the object's HEAD answer (sent now when not given); it
        decides the cache file.  ``on_progress(done, total)`` is called every
        ``chunk_size`` bytes and at the end, ``total`` being ``None`` when the
        size is unknown; an exception raised from it stops the download.
        Setting ``cancel`` (from any thread) stops it within a second with
        :class:`~topaz_nb.errors.Cancelled`; what arrived stays as the
        ``.part`` file, so the next call resumes.
        """
        pid, side = _check(process_id, side)
        holder = _Links(links, pid, side)
        if info is None:
            info = self._head(holder, cancel)
        return self._download(holder, info, on_progress, cancel)

    def entry(self, process_id: str, side: Side, info: ObjectInfo) -> CacheEntry:
        """The cache entry (paths of the file, sidecar, derived files) of an object."""
        pid, side = _check(process_id, side)
        return CacheEntry(self._cache_dir / pid, f"{side}-{_cache_key(info)}")

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
        return self._hit(self.entry(process_id, side, info), info)

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
        with self._exclusive(entry, None, "", ""):
            _discard_entry(entry, path)
        _log.info("discarded %s from the cache", path.name)

    def keep_within_budget(self, in_use: Iterable[str | os.PathLike[str]] = (), *,
                           downloaded: bool = True) -> int:
        """Mark the downloads ``in_use`` as just used, then evict least recently
        used derived files and downloads (never those) until the cache fits
        :attr:`cache_max_bytes`; returns the bytes freed (0 when unbounded).

        Checking scans the cache folder, so when nothing was ``downloaded``
        (cache hits: a gallery reopening hundreds of processes) it happens at
        most every :data:`_BUDGET_INTERVAL` seconds; derived files written since
        (previews, pyramids) are counted then.
        """
        from . import budget as _budget

        keep = tuple(Path(p) for p in in_use)
        for path in keep:
            _budget.mark_used(path)
        if self.cache_max_bytes is None:
            return 0
        now = self._clock()
        with self._locks_guard:
            due = downloaded or now - self._budget_checked >= _BUDGET_INTERVAL
            if due:
                self._budget_checked = now
        return _budget.enforce(self, self.cache_max_bytes, keep=keep) if due else 0

    def clear_cache(self, process_id: str | None = None) -> int:
        """Delete cached files of one process, or of all; returns how many
        downloads were deleted (their sidecars, derived files and any
        ``.part`` go with them).

        Only directories named like process IDs are touched, so pointing
        ``TOPAZ_NB_CACHE`` at a shared directory cannot wipe unrelated files.
        """
        if process_id is not None:
            dirs = [self._cache_dir / check_process_id(process_id)]
        elif self._cache_dir.is_dir():
            dirs = [d for d in self._cache_dir.iterdir() if d.is_dir() and _is_pid(d.name)]
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
        _log.debug("removed %d cached files from %s", removed, self._cache_dir)
        return removed

    # ------------------------------------------------------------- internals

    def _lock_for(self, entry: CacheEntry) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(str(entry.part), threading.Lock())

    @contextlib.contextmanager
    def _exclusive(self, entry: CacheEntry, cancel: threading.Event | None,
                   side: str, pid: str) -> Iterator[None]:
        """Hold the entry against other threads and other processes.

        Waiting is cancellable: the thread lock is polled and the file lock
        tried without blocking while a cancel event is given.
        """
        lock = self._lock_for(entry)
        while not lock.acquire(timeout=_POLL_SECONDS):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"Cancelled: the download of the {side} of {pid} was waiting "
                                "for another one of the same image; run it again to resume")
        try:
            entry.directory.mkdir(parents=True, exist_ok=True)
            file_lock = _FileLock(entry.lock)
            try:
                file_lock.acquire(cancel, lambda: _log.info(
                    "waiting for another process to finish downloading %s", entry.stem))
            except _Interrupted:
                raise Cancelled(f"Cancelled: the download of the {side} of {pid} was waiting "
                                "for another process downloading the same image; run it "
                                "again to resume") from None
            try:
                yield
            finally:
                file_lock.release()
        finally:
            lock.release()

    def _hit(self, entry: CacheEntry, info: ObjectInfo, *, heal: bool = False) -> Path | None:
        """The entry's file when its sidecar vouches for it; with ``heal`` a
        file that fails the check is discarded (call it holding the entry)."""
        meta = _read_json(entry.sidecar)
        path = entry.file
        if meta is None or path is None:
            return None
        try:
            stat = path.stat()
            good = (meta.get("v") == _SIDECAR_VERSION and path.is_file()
                    and stat.st_size == meta.get("size") and stat.st_mtime_ns == meta.get("mtime_ns")
                    and (info.size is None or info.size == stat.st_size)
                    and (info.etag is None or meta.get("etag") == info.etag))
        except OSError:
            good = False
        if good:
            return path
        if heal:
            _log.info("cached %s no longer matches its record; downloading it again", path.name)
            _discard_entry(entry, path)
        return None

    def _sweep(self, directory: Path) -> None:
        """Delete stale ``.part`` files: this object's folder on every fetch,
        the whole cache on the first fetch of this Transfer."""
        if not self._swept_all:
            self._swept_all = True
            _sweep_stale_parts(p for p in self._cache_dir.glob("*/*.part")
                               if _is_pid(p.parent.name))  # never a user's own folder
        _sweep_stale_parts(directory.glob("*.part"))

    def _download(self, links: _Links, info: ObjectInfo, on_progress: ProgressCallback | None,
                  cancel: threading.Event | None) -> Fetched:
        pid, side = links.process_id, links.side
        entry = self.entry(pid, side, info)
        self._sweep(entry.directory)
        if self.use_cache:
            hit = self._hit(entry, info)
            if hit is not None:
                _log.debug("cache hit for %s of %s: %s", side, pid, hit)
                return Fetched(pid, side, hit, info, True, 0)
        with self._exclusive(entry, cancel, side, pid):
            # Another thread or process may have finished the object while we waited.
            if self.use_cache:
                hit = self._hit(entry, info, heal=True)
                if hit is not None:
                    return Fetched(pid, side, hit, info, True, 0)
            path, received = self._stream_to(entry, links, info, on_progress, cancel)
        return Fetched(pid, side, path, info, False, received)

    def _resume_point(self, entry: CacheEntry, info: ObjectInfo) -> tuple[int, dict[str, Any]]:
        """Bytes of a ``.part`` that may be continued, and what it is known to hold.

        Only a ``.part`` recorded as the start of this very object (same ETag,
        same size, same Last-Modified, as far as storage told) is continued.
        """
        meta = _read_json(entry.part_meta)
        try:
            have = entry.part.stat().st_size
        except OSError:
            have = 0
        lm = info.last_modified.isoformat() if info.last_modified else None
        if (meta is None or have == 0 or meta.get("etag") != info.etag
                or meta.get("size") != info.size or meta.get("last_modified") != lm
                or (info.size is not None and have >= info.size)):
            return 0, {"v": _SIDECAR_VERSION, "etag": info.etag, "size": info.size,
                       "last_modified": lm, "total": info.size}
        return have, meta

    def _stream_to(self, entry: CacheEntry, links: _Links, info: ObjectInfo,
                   on_progress: ProgressCallback | None,
                   cancel: threading.Event | None) -> tuple[Path, int]:
        """Write the object to its ``.part``, resuming it, check it, rename it."""
        part = entry.part
        what = f"the {links.side} of {links.process_id}"
        done, part_meta = self._resume_point(entry, info)
        etag: str | None = info.etag or part_meta.get("etag")
        total: int | None = info.size if info.size is not None else part_meta.get("total")
        digests = _Digests(want_md5=_plain_md5(etag) is not None)
        received = 0
        interruptions = 0
        try:
            with open(part, "r+b" if done else "wb") as out:
                if done:
                    _log.info("resuming %s from %d bytes left by an earlier download",
                              what, done)
                    _feed(out, done, digests)  # one read of what is on disk, for the checksums
                _write_json(entry.part_meta, part_meta)
                while True:
                    headers: dict[str, str] = {}
                    if done:
                        headers["Range"] = f"bytes={done}-"
                        if etag and not etag.startswith("W/"):
                            headers["If-Range"] = f'"{etag}"'
                    response = self._request("GET", links, headers, cancel)
                    with response:
                        restart = self._splice_risk(response, done, etag, total, what) \
                            if done else None
                        if restart is not None:
                            _log.info("storage answered the resume of %s %s; restarting from "
                                      "zero", what, restart)
                            done = _restart(out, digests, on_progress, total)
                            if response.status_code != 200:
                                # This body continues something else: ask again, whole.
                                interruptions += 1
                                if interruptions > self.retries:
                                    raise _WrongContent(
                                        f"storage would not resume {what} without changing it "
                                        f"({restart}, {_shown_url(links)}); run it again")
                                continue
                        got_etag = _parse_etag(response.headers.get("ETag"))
                        if response.status_code == 206:
                            total = _range_total(response) or total
                        else:
                            length = _parse_int(response.headers.get("Content-Length"))
                            if info.size is not None and length is not None \
                                    and length != info.size:
                                raise _WrongContent(
                                    f"storage announced {length} bytes for {what} but its HEAD "
                                    f"said {info.size} ({_shown_url(links)}); run it again, "
                                    "and report it if it persists")
                            if etag and got_etag and got_etag != etag and not etag.startswith("W/"):
                                raise _WrongContent(
                                    f"{what} changed between its HEAD and its GET (ETag "
                                    f"{etag} then {got_etag}); run it again")
                            total = length if length is not None else total
                        if etag is None and got_etag:
                            etag = got_etag  # the HEAD had none: check against the GET's
                            if _plain_md5(etag) is not None and digests.md5 is None:
                                digests = _Digests(True)
                                _feed(out, done, digests)
                        if (etag, total) != (part_meta.get("etag"), part_meta.get("total")):
                            part_meta.update(etag=etag, total=total)
                            _write_json(entry.part_meta, part_meta)
                        done, got, interrupted = self._read_body(
                            response, out, digests, done, total, links, on_progress, cancel)
                        received += got
                    if interrupted is None and (total is None or done == total):
                        break
                    interruptions += 1
                    _log.info("%s interrupted at %d of %s bytes (%s); attempt %d of %d", what,
                              done, total if total is not None else "unknown",
                              interrupted or "short body", interruptions, self.retries)
                    if interruptions > self.retries:
                        of = f" of {total}" if total is not None else ""
                        raise TransferError(
                            f"download of {what} stopped at {done}{of} bytes after "
                            f"{interruptions} attempts ({_shown_url(links)}); check the "
                            "connection and run it again to resume")
                    if cancel is not None:
                        cancel.wait(min(0.1 * interruptions, 1.0))
                    else:
                        time.sleep(min(0.1 * interruptions, 1.0))
                expected_md5 = _plain_md5(etag)
                if expected_md5 is not None and digests.md5 is not None \
                        and digests.md5.hexdigest() != expected_md5:
                    raise _WrongContent(
                        f"the {done} bytes received for {what} do not match the MD5 in its "
                        f"ETag ({_shown_url(links)}); run it again, and report it if it "
                        "persists")
                out.flush()
                os.fsync(out.fileno())
        except _WrongContent:
            _unlink_quietly(part)
            _unlink_quietly(entry.part_meta)
            raise
        final = entry.file_with(_sniffed_extension(part))
        old = entry.file
        for stale in [*entry.derived_files(), *([old] if old is not None and old != final else [])]:
            _unlink_quietly(stale)
        _unlink_quietly(entry.sidecar)
        os.replace(part, final)
        stat = final.stat()
        _write_json(entry.sidecar, {
            "v": _SIDECAR_VERSION, "file": final.name, "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns, "etag": etag, "validator": _cache_key(info),
            "sha256": digests.sha256.hexdigest(),
        })
        _unlink_quietly(entry.part_meta)
        _log.debug("downloaded %s: %d bytes to %s", what, done, final)
        return final, received

    @staticmethod
    def _splice_risk(response: requests.Response, done: int, etag: str | None,
                     total: int | None, what: str) -> str | None:
        """Why this answer to a Range request cannot continue the ``.part``, or
        ``None`` when it can.  Never trusts ``If-Range`` alone: S3 ignores it."""
        status = response.status_code
        if status == 416:
            return "refused the range (HTTP 416)"
        if status != 206:
            return f"by sending the whole object again (HTTP {status})"
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != done:
            return "at the wrong place"
        got_etag = _parse_etag(response.headers.get("ETag"))
        if etag and got_etag and got_etag != etag:
            return f"from a different object (ETag {got_etag}, not {etag})"
        if match.group(3) != "*" and total is not None and int(match.group(3)) != total:
            return f"from an object of {match.group(3)} bytes, not {total}"
        return None

    def _read_body(self, response: requests.Response, out: IO[bytes], digests: _Digests,
                   done: int, total: int | None, links: _Links,
                   on_progress: ProgressCallback | None,
                   cancel: threading.Event | None) -> tuple[int, int, str | None]:
        """Append the body to ``out``: ``(done, received, interruption or None)``.

        Raises :class:`Cancelled`, a stall :class:`TransferError`, or
        :class:`_WrongContent` past the announced size or the ceiling.
        """
        what = f"the {links.side} of {links.process_id}"
        limit = total if total is not None else self.max_bytes
        reader = _BodyReader(response, self.chunk_size)
        received = 0
        reported = done
        mark_time, mark_bytes = self._clock(), 0
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    raise Cancelled(f"Cancelled: the download of {what} at {done} bytes; "
                                    "run it again to resume")
                item = reader.next(_POLL_SECONDS)
                now = self._clock()
                if item is not None:
                    kind, value = item
                    if kind == "end":
                        if on_progress is not None and reported != done:
                            on_progress(done, total)
                        return done, received, None
                    if kind == "error":
                        if isinstance(value, _INTERRUPTIONS):
                            reason = scrub_urls(f"{type(value).__name__}: {value}")
                            return done, received, reason.splitlines()[0][:200]
                        raise value
                    if done + len(value) > limit:
                        if total is not None:
                            raise _WrongContent(
                                f"storage sent more than the {total} bytes announced for "
                                f"{what} ({_shown_url(links)}); run it again, and report it "
                                "if it persists")
                        raise _WrongContent(
                            f"{what} passed {self.max_bytes} bytes with no size announced "
                            f"({_shown_url(links)}); stopped at the ceiling "
                            "Topaz.max_download_bytes, raise it if the image is that large")
                    out.write(value)
                    out.flush()  # what the .part holds is what a resume continues from
                    digests.update(value)
                    done += len(value)
                    received += len(value)
                    if received - mark_bytes >= STALL_BYTES:
                        mark_time, mark_bytes = now, received
                    if on_progress is not None and done // self.chunk_size != \
                            reported // self.chunk_size:
                        on_progress(done, total)
                        reported = done
                if self.stall_timeout is not None and now - mark_time >= self.stall_timeout:
                    raise TransferError(
                        f"download of {what} stalled: under 64 KiB in {self.stall_timeout:g} s, "
                        f"at {done} bytes ({_shown_url(links)}); run it again to resume "
                        "(Topaz.stall_timeout sets the limit)")
        finally:
            reader.stop()

    def _request(self, method: str, links: _Links, headers: dict[str, str],
                 cancel: threading.Event | None = None) -> requests.Response:
        """Send one HEAD or GET; a refused link is refreshed once, then final.

        A ``416`` to a Range request is returned (the caller restarts); other
        error statuses raise.
        """
        while True:
            link = links.current()
            what = f"the {link.side} of {link.process_id}"
            url = link.head_url if method == "HEAD" else link.download_url
            shown = redact_url(url)
            try:
                response = cancellable(
                    lambda: self._session.request(
                        method, url, headers=headers, stream=method == "GET",
                        timeout=self.timeout, allow_redirects=True),
                    cancel, f"Cancelled: the {method} of {what}; run it again to resume")
            except (requests.RequestException, ValueError) as exc:  # ValueError: a malformed redirect
                reason = scrub_urls(f"{type(exc).__name__}: {exc}").splitlines()[0][:200]
                raise TransferError(
                    f"{method} of {what} failed ({shown}): {reason}; "
                    "check the connection and run again") from None
            status = response.status_code
            if status in (401, 403):
                response.close()
                if not links.refreshed:
                    _log.info("storage refused the link for %s (HTTP %d); fetching a fresh "
                              "one", what, status)
                    links.refresh()
                    continue
                raise LinkExpired(
                    f"storage refused the link to {what} as expired or invalid (HTTP {status}, "
                    f"{shown}) even after a fresh one was fetched; check the computer's clock "
                    "and run again (images are kept 7 days)")
            if status == 416 and "Range" in headers:
                return response
            if status >= 400:
                response.close()
                hint = ("the image is gone (images are kept 7 days)" if status in (404, 410)
                        else "run again later")
                raise TransferError(
                    f"storage answered HTTP {status} to the {method} of {what} ({shown}); {hint}")
            _log.debug("%s %s -> %d", method, shown, status)
            return response


# ------------------------------------------------------------------ helpers


def _check(process_id: str, side: Side) -> tuple[str, Side]:
    pid = check_process_id(process_id)
    if side not in SIDES:
        raise ValueError(f"side must be 'input' or 'output', got {side!r}")
    return pid, side


def _is_pid(name: str) -> bool:
    try:
        return check_process_id(name) == name
    except ValueError:
        return False


def _object_info(response: requests.Response, shown_url: str) -> ObjectInfo:
    headers = response.headers
    return ObjectInfo(
        size=_parse_int(headers.get("Content-Length")),
        content_type=headers.get("Content-Type") or None,
        etag=_parse_etag(headers.get("ETag")),
        last_modified=_parse_date(headers.get("Last-Modified")),
        headers=CaseInsensitiveDict(headers),
        url=shown_url,
    )


def _parse_int(value: str | None) -> int | None:
    try:
        number = int(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number >= 0 else None


def _parse_etag(value: str | None) -> str | None:
    if not value or not value.strip():
        return None
    value = value.strip()
    weak = value[:2].upper() == "W/"
    body = value[2:] if weak else value
    body = body.strip('"')
    return ("W/" + body) if weak else body or None


def _parse_date(value: str | None) -> _dt.datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.timezone.utc)


def _plain_md5(etag: str | None) -> str | None:
    """The MD5 an ETag states, when it is one: S3 gives the MD5 of a
    single-part object; a multipart ETag has a ``-<parts>`` suffix."""
    if etag and _PLAIN_MD5.fullmatch(etag.lower()):
        return etag.lower()
    return None


def _range_total(response: requests.Response) -> int | None:
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
    if match and match.group(3) != "*":
        return int(match.group(3))
    return None


def _cache_key(info: ObjectInfo) -> str:
    """A filename-safe key from whichever validators storage sent."""
    if info.etag:
        return "etag-" + _digest(info.etag)
    if info.last_modified is not None:
        stamp = info.last_modified.astimezone(_dt.timezone.utc).isoformat()
        return "lm-" + _digest(f"{stamp}|{info.size}")
    if info.size is not None:
        return f"size-{info.size}"
    return "any"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def _sniffed_extension(path: Path) -> str:
    """The extension for the format the bytes are, whatever Content-Type said
    (storage sends ``application/octet-stream``, or an error page as
    ``text/html`` with an image's name); ``bin`` when they are no image."""
    from .._sniff import UnrecognisedImage, open_header

    try:
        with open(path, "rb") as fp:
            image = open_header(fp)
            fmt = (image.format or "").upper()
    except (UnrecognisedImage, OSError):
        return "bin"
    ext = _FORMAT_EXTENSIONS.get(fmt, fmt.lower())
    return ext if _SAFE_EXT.fullmatch(ext) else "bin"


def _feed(out: IO[bytes], length: int, digests: _Digests) -> None:
    """Hash the first ``length`` bytes of ``out`` and leave it positioned after them."""
    out.seek(0)
    left = length
    while left > 0:
        block = out.read(min(left, 1 << 20))
        if not block:
            break
        digests.update(block)
        left -= len(block)
    out.seek(length)
    out.truncate()


def _restart(out: IO[bytes], digests: _Digests, on_progress: ProgressCallback | None,
             total: int | None) -> int:
    out.seek(0)
    out.truncate()
    digests.reset()
    if on_progress is not None:
        on_progress(0, total)
    return 0




def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write atomically, so a reader sees the old record or the new one."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(json.dumps(data, sort_keys=True), "utf-8")
        os.replace(tmp, path)
    except OSError:
        _unlink_quietly(tmp)
        raise


def _discard_entry(entry: CacheEntry, path: Path | None = None) -> None:
    for item in {*entry.derived_files(), *([path] if path else []),
                 *([entry.file] if entry.file else [])}:
        _unlink_quietly(item)
    _unlink_quietly(entry.sidecar)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _sweep_stale_parts(parts: Iterator[Path]) -> None:
    """Delete ``.part`` files (and their records) that no download is still writing."""
    cutoff = time.time() - _STALE_PART_SECONDS
    for leftover in parts:
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
                _unlink_quietly(leftover.with_name(f".{leftover.stem}.part.json"))
                _log.debug("removed stale %s", leftover.name)
        except OSError:
            pass


def _shown_url(links: _Links) -> str:
    return redact_url(links.current().download_url)

