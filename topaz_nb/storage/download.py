"""HTTP against object storage: presigned HEAD and GET, streamed into a
cache entry's ``.part``, resumed, checked, and only then made the cached file.

:class:`Downloader` does the requests and the streaming; the facade
(:class:`~topaz_nb.storage.transfer.Transfer`) decides when to download and
holds the entry's lock meanwhile.  Why the download path looks the way it
does (``docs/ARCHITECTURE.md``, "Integrity rules", says the same for readers
of the whole project):

* **Complete means checked.**  Bytes go to ``<stem>.part`` and become the
  cached file only through :func:`os.replace` once (a) the number of bytes
  equals the HEAD's Content-Length where there is one, or else the GET's, and
  (b) the body ended without a read error.  Storage may frame a body by
  chunks or by closing the connection, with no length at all; a read error
  then is one sign of a body cut short, so it is never ignored, but a
  connection closed early looks like a clean end.  So with no length the
  bytes must also reach the end their own format marks
  (:mod:`topaz_nb._format_end`: PNG ``IEND``, JPEG ``EOI``, what a TIFF's
  IFDs or a WebP's RIFF header promise, GIF's trailer); short of it the
  ``.part`` is kept (its JSON says ``size_unknown``) and the rest asked for
  with a Range.  A format with no end to check counts as complete only when
  storage answers that Range with ``416`` (nothing past these bytes).  A
  ``.part`` file is never opened as the image.
* **Content check.**  Where the ETag is a plain MD5 (32 hex digits, as S3
  gives for single-part objects) the MD5 is computed while streaming and a
  mismatch is refused.  A SHA-256 is always computed while streaming and kept
  in a JSON sidecar with the size and modification time; a cache hit checks
  size and mtime against the sidecar, so a file truncated or replaced behind
  our back is downloaded again instead of shown.
* **Resume, never splice.**  The ``.part`` name is fixed per object and a
  cross-process lock (``fcntl.flock``, :func:`~topaz_nb.storage.cache.hold`)
  guards it, so a download killed with its process is continued by the next
  one with ``Range: bytes=<done>-``.  A 206 whose ETag or Content-Range total
  differs from the object being resumed restarts from zero; ``If-Range`` is
  sent as well but not relied on (S3 ignores it).  A ``200`` instead of a
  ``206`` restarts from zero too.
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
* **Parallel ranges.**  One stream from S3 is capped well below the link, so
  an object of a known size of at least two parts (16 MB by default) is
  fetched as up to ``connections`` Range requests in flight on one link,
  each written at its offset (:mod:`~topaz_nb.storage.ranges` plans them,
  records in the ``.part.json`` the ranges written, so a resume fetches
  exactly the missing ones, and hashes the in-order prefix as parts land).
  The first part is a probe: only a ``206`` of the right place, total and
  ETag lets the others start.  Every part is checked the same way; one from
  an object of another ETag or total restarts the whole object (never a
  splice), and a ``200``, a ``416`` or an answer with no length falls back
  to one stream from the contiguous prefix.
* **Bytes handed on as they land.**  ``stream_to(on_arrival=...)`` publishes
  the in-order prefix through an :class:`~topaz_nb.storage.arrival.Arrival`
  (after it is written, so another descriptor reads it); a restart from zero
  voids it and the end says whether it became the cached file, so work done
  on the arriving bytes (a decode) is kept only then.
* **No credentials.**  Presigned URLs carry their authorisation in the query
  string; the session strips every other credential, after redirects too.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import email.utils
import functools
import hashlib
import http.client
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from .._tasks import cancellable, child_event
from .._text import storage_refused
from .._version import user_agent
from ..errors import Cancelled, LinkExpired, TransferError
from ..links import Link, redact_url, scrub_urls
from ..net.logsafe import install_log_filter
from ..net.retry import DEFAULT_MAX_RETRY_AFTER, DEFAULT_MAX_RETRY_TIME, make_retry
from .arrival import Arrival
from .cache import (
    POLL_SECONDS,
    SIDECAR_VERSION,
    CacheEntry,
    cache_key,
    is_safe_extension,
    read_json,
    write_json,
)
from .ranges import PART_SIZE, Done, InOrderHasher, plan, worth_splitting
from .refresh import LinkHolder
from .refusal import Refusal, from_document, read_document

__all__ = [
    "DEFAULT_CONNECTIONS", "DEFAULT_MAX_BYTES", "DEFAULT_STALL_TIMEOUT", "STALL_BYTES",
    "Downloader", "ObjectInfo",
    "ProgressCallback", "make_session",
]

_log = logging.getLogger("topaz_nb.transfer")

DEFAULT_MAX_BYTES = 4_000_000_000
"""Ceiling on a body whose size nobody announced (``Topaz.max_download_bytes``)."""
DEFAULT_STALL_TIMEOUT = 30.0
DEFAULT_CONNECTIONS = 4
"""Range requests in flight for one large object (``Topaz.download_connections``)."""
STALL_BYTES = 64 * 1024
"""A download is stalled when fewer than this many bytes arrived in
``stall_timeout`` seconds (see :class:`~topaz_nb.storage.transfer.Transfer`)."""

_FORMAT_EXTENSIONS = {
    "JPEG": "jpg", "MPO": "jpg", "PNG": "png", "TIFF": "tif", "WEBP": "webp", "GIF": "gif",
    "BMP": "bmp", "HEIF": "heic", "AVIF": "avif", "JPEG2000": "jp2",
}
_PLAIN_MD5 = re.compile(r"[0-9a-f]{32}")
_CONTENT_RANGE = re.compile(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*")
_INTERRUPTIONS = (requests.RequestException, urllib3.exceptions.HTTPError,
                  http.client.HTTPException, OSError)

ProgressCallback = Callable[[int, "int | None"], None]


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


# ------------------------------------------------------------------ session


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


def make_session(retries: int, *, max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
                 max_retry_time: float = DEFAULT_MAX_RETRY_TIME) -> requests.Session:
    """A key-free session retrying HEAD/GET by the package's one policy
    (:mod:`topaz_nb.net.retry`).

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


# ------------------------------------------------------------------ streaming


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
    or a stall every :data:`~topaz_nb.storage.cache.POLL_SECONDS`.  ``read1``
    returns whatever has arrived, so a trickling body still yields pieces.
    :meth:`stop` shuts the socket's read side, which wakes a blocked read.
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
                self._queue.put(item, timeout=POLL_SECONDS)
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


class _WrongContent(TransferError):
    """Storage sent bytes that are not the object (wrong size or checksum);
    the ``.part`` is deleted, since resuming it could only repeat the error."""


class _RestartObject(Exception):
    """A part came from an object of another ETag or size: the bytes written
    so far may belong to another version, so the whole object starts again."""


class _OneStream(Exception):
    """Storage did not serve a part as asked (a ``200``, a ``416``, no length,
    another place): the download goes on as one stream."""


class _Stopped(Exception):
    """A part saw its download's stop event (cancel, or another part failed)."""


class _WakingEvent(threading.Event):
    """An event that also wakes the thread waiting on ``wake`` when set."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self._wake = wake

    def set(self) -> None:
        super().set()
        self._wake.set()


@dataclass
class _Ranged:
    """What the parts of one ranged download share, guarded by ``lock``."""

    entry: CacheEntry
    links: LinkHolder
    fd: int
    size: int
    etag: str | None
    done: Done
    meta: dict[str, Any]
    arrival: Arrival | None = None  # told of the in-order prefix as it grows
    lock: threading.Lock = field(default_factory=threading.Lock)
    wake: threading.Event = field(default_factory=threading.Event)  # progress to report
    written: int = 0  # bytes written by this attempt
    received: int = 0  # bytes received by this call, over every attempt

    def mark(self, start: int, end: int) -> None:
        """Record ``[start, end)`` as written, in memory and in the ``.part.json``."""
        with self.lock:
            self.done.add(start, end)
            self.meta["ranges"] = self.done.record()
            write_json(self.entry.part_meta, self.meta)


class Downloader:
    """HEAD and GET of presigned links through one key-free session, and the
    streaming of a body into a cache entry.

    The settings mean what :class:`~topaz_nb.storage.transfer.Transfer`
    documents, which checks them and may change them between downloads; the
    caller holds the entry (:func:`~topaz_nb.storage.cache.hold`) while
    :meth:`stream_to` writes it.
    """

    def __init__(self, session: requests.Session, *, chunk_size: int, timeout: float,
                 retries: int, max_bytes: int, stall_timeout: float | None,
                 connections: int = DEFAULT_CONNECTIONS, part_size: int = PART_SIZE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.connections = connections
        self.part_size = part_size
        self.chunk_size = chunk_size
        self.timeout = timeout
        self.retries = retries
        self.max_bytes = max_bytes
        self.stall_timeout = stall_timeout
        self._clock = clock

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()

    def head(self, links: LinkHolder, cancel: threading.Event | None) -> ObjectInfo:
        """What storage says the object is (a refused link refreshed once)."""
        response = self._request("HEAD", links, {}, cancel)
        with response:
            link = links.current()
            return _object_info(response, redact_url(link.head_url))

    def _resume_point(self, entry: CacheEntry, info: ObjectInfo) -> tuple[int, dict[str, Any]]:
        """Bytes of a ``.part`` that may be continued, and what it is known to hold.

        Only a ``.part`` recorded as the start of this very object (same ETag,
        same size, same Last-Modified, as far as storage told) is continued.
        """
        meta = read_json(entry.part_meta)
        try:
            have = entry.part.stat().st_size
        except OSError:
            have = 0
        if meta is not None and "ranges" in meta:
            # Left by a ranged download: only its gapless start is a prefix.
            record = Done.from_record(info.size, meta["ranges"]) \
                if info.size is not None else None
            have = min(have, record.prefix) if record is not None else 0
            meta = {k: v for k, v in meta.items() if k != "ranges"}
        lm = info.last_modified.isoformat() if info.last_modified else None
        # A .part begun when no size was known is the start of this object
        # too if storage now tells its size, as long as the ETag is the same.
        learnt_size = (meta is not None and meta.get("size_unknown") is True
                       and meta.get("size") is None and bool(info.etag)
                       and not str(info.etag).startswith("W/"))
        if (meta is None or have == 0 or meta.get("etag") != info.etag
                or (meta.get("size") != info.size and not learnt_size)
                or meta.get("last_modified") != lm
                or (info.size is not None and have >= info.size)):
            return 0, {"v": SIDECAR_VERSION, "etag": info.etag, "size": info.size,
                       "last_modified": lm, "total": info.size}
        if learnt_size:
            meta = {**meta, "size": info.size, "total": info.size, "size_unknown": False}
        return have, meta

    def stream_to(self, entry: CacheEntry, links: LinkHolder, info: ObjectInfo,
                  on_progress: ProgressCallback | None,
                  cancel: threading.Event | None,
                  on_arrival: Callable[[Arrival], None] | None = None) -> tuple[Path, int]:
        """Write the object to its ``.part``, resuming it, check it, make it
        the entry's file: ``(path, bytes received by this call)``.

        A large object of known size goes in parallel ranges
        (:meth:`_stream_ranged`); whatever storage does not serve that way
        continues here, as one stream from the contiguous prefix.

        ``on_arrival(arrival)`` is called once, before the first request, with
        the :class:`~topaz_nb.storage.arrival.Arrival` that publishes the
        in-order prefix as it grows (objects of a known size only): work on the
        bytes may start before the last one is in.
        """
        arrival: Arrival | None = None
        if on_arrival is not None and info.size is not None and info.size <= self.max_bytes \
                and hasattr(os, "pread"):  # readers read at an offset (not on Windows)
            entry.part.touch(exist_ok=True)  # the readers' descriptors open it
            arrival = Arrival(entry.part, info.size, entry.derived)
            on_arrival(arrival)
        final: Path | None = None
        try:
            before = 0
            if worth_splitting(info.size, self.part_size, self.connections) \
                    and info.size is not None and info.size <= self.max_bytes:
                # An announced size past the ceiling is never preallocated; one stream reads it.
                ranged, before = self._stream_ranged(entry, links, info, on_progress, cancel,
                                                     arrival)
                if ranged is not None:
                    final = ranged
                    return ranged, before
            final, received = self._stream_one(entry, links, info, on_progress, cancel, arrival)
            return final, before + received
        finally:
            if arrival is not None:
                arrival.finish(final)

    def _stream_one(self, entry: CacheEntry, links: LinkHolder, info: ObjectInfo,
                    on_progress: ProgressCallback | None,
                    cancel: threading.Event | None,
                    arrival: Arrival | None = None) -> tuple[Path, int]:
        """One GET streamed into the ``.part`` (resumed with ``Range: bytes=<done>-``)."""
        part = entry.part
        what = f"the {links.side} of {links.process_id}"
        done, part_meta = self._resume_point(entry, info)
        if arrival is not None and arrival.published > done:
            arrival.restart()  # the .part is not continued: what readers had is void
        etag: str | None = info.etag or part_meta.get("etag")
        total: int | None = info.size if info.size is not None else part_meta.get("total")
        digests = _Digests(want_md5=_plain_md5(etag) is not None)
        received = 0
        interruptions = 0
        unframed: str | None = None  # why the last body with no length is not the whole object
        try:
            with open(part, "r+b" if done else "wb") as out:
                if done:
                    _log.info("resuming %s from %d bytes left by an earlier download",
                              what, done)
                    _feed(out, done, digests)  # one read of what is on disk, for the checksums
                    if arrival is not None:
                        arrival.grow(done)
                write_json(entry.part_meta, part_meta)
                while True:
                    headers: dict[str, str] = {}
                    if done:
                        headers["Range"] = f"bytes={done}-"
                        if etag and not etag.startswith("W/"):
                            headers["If-Range"] = f'"{etag}"'
                    response = self._request("GET", links, headers, cancel)
                    with response:
                        if done and total is None and _ends_at(response, done):
                            _log.info("storage says %s ends at the %d bytes received (HTTP 416 "
                                      "to a request for the rest)", what, done)
                            break
                        restart = _splice_risk(response, done, etag, total) if done else None
                        if restart is not None:
                            _log.info("storage answered the resume of %s %s; restarting from "
                                      "zero", what, restart)
                            if arrival is not None:
                                arrival.restart()  # before the bytes change under its readers
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
                        if (etag, total, total is None) != (part_meta.get("etag"),
                                                             part_meta.get("total"),
                                                             part_meta.get("size_unknown")):
                            # size_unknown: only the format's end can tell this .part complete.
                            part_meta.update(etag=etag, total=total, size_unknown=total is None)
                            write_json(entry.part_meta, part_meta)
                        done, got, interrupted = self._read_body(
                            response, out, digests, done, total, links, on_progress, cancel,
                            arrival)
                        received += got
                    unframed = None
                    if interrupted is None and total is None:
                        unframed = _unframed_end(part, done)
                        if unframed is None:
                            break
                        interrupted = unframed
                    if interrupted is None and (total is None or done == total):
                        break
                    interruptions += 1
                    _log.info("%s interrupted at %d of %s bytes (%s); attempt %d of %d", what,
                              done, total if total is not None else "unknown",
                              interrupted or "short body", interruptions, self.retries)
                    if interruptions > self.retries:
                        of = f" of {total}" if total is not None else ""
                        if unframed is not None:
                            raise TransferError(
                                f"download of {what} stopped at {done} bytes after "
                                f"{interruptions} attempts: {unframed} ({_shown_url(links)}); "
                                "run it again to resume")
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
            entry.drop_part()
            raise
        final = entry.commit(_sniffed_extension(part), etag=etag,
                             validator=cache_key(info.etag, info.last_modified, info.size),
                             sha256=digests.sha256.hexdigest(),
                             keep=arrival.claimed if arrival is not None else ())
        _log.debug("downloaded %s: %d bytes to %s", what, done, final)
        return final, received

    # -------------------------------------------------------------- ranged

    def _ranged_start(self, entry: CacheEntry, info: ObjectInfo) -> tuple[Done, dict[str, Any]]:
        """The ranges of the ``.part`` that may be kept, and its record.

        Kept only when ``.part.json`` says they are of this very object (same
        ETag, size, Last-Modified); a ``.part`` of one stream counts as its
        first bytes.
        """
        assert info.size is not None
        size = info.size
        lm = info.last_modified.isoformat() if info.last_modified else None
        fresh = {"v": SIDECAR_VERSION, "etag": info.etag, "size": size, "last_modified": lm,
                 "total": size}
        meta = read_json(entry.part_meta)
        try:
            have = entry.part.stat().st_size
        except OSError:
            have = 0
        if meta is None or have == 0 or meta.get("v") != SIDECAR_VERSION \
                or meta.get("etag") != info.etag or meta.get("size") != size \
                or meta.get("last_modified") != lm:
            return Done(size), fresh
        if "ranges" in meta:
            done = Done.from_record(size, meta["ranges"])
            if done is None or have < size:  # preallocated to the size when begun
                return Done(size), fresh
        else:
            done = Done(size, [(0, min(have, size))] if have < size else [])
        return done, {**fresh, "ranges": done.record()}

    def _stream_ranged(self, entry: CacheEntry, links: LinkHolder, info: ObjectInfo,
                       on_progress: ProgressCallback | None,
                       cancel: threading.Event | None,
                       arrival: Arrival | None = None) -> tuple[Path | None, int]:
        """Fetch the object in parallel Range requests: ``(path, bytes received)``,
        or ``(None, bytes received)`` when storage wants one stream instead (the
        ``.part`` then holds the contiguous prefix, recorded as one stream's)."""
        assert info.size is not None
        what = f"the {links.side} of {links.process_id}"
        done, meta = self._ranged_start(entry, info)
        fd = os.open(entry.part, os.O_RDWR | os.O_CREAT, 0o666)
        run = _Ranged(entry, links, fd, info.size, info.etag, done, meta, arrival)
        restarts = 0
        try:
            if not done.total:
                os.ftruncate(fd, 0)
            else:
                _log.info("resuming %s: %d of %d bytes left by an earlier download", what,
                          done.total, info.size)
            os.ftruncate(fd, info.size)  # every part writes at its offset
            while True:
                meta["ranges"] = done.record()
                write_json(entry.part_meta, meta)
                try:
                    digests = self._run_parts(run, on_progress, cancel)
                    break
                except _RestartObject as why:
                    restarts += 1
                    if restarts > self.retries:
                        raise _WrongContent(
                            f"storage would not serve {what} in parts without changing it "
                            f"({why}, {_shown_url(links)}); run it again") from None
                    _log.info("a part of %s came %s; restarting the whole object", what, why)
                    run.done = done = Done(info.size)
                    run.written = 0
                    if arrival is not None:
                        arrival.restart()
                    os.ftruncate(fd, 0)
                    os.ftruncate(fd, info.size)
                    if on_progress is not None:
                        on_progress(0, info.size)
                except _OneStream as why:
                    prefix = done.prefix
                    _log.info("storage answered a part of %s %s; going on as one stream "
                              "from %d bytes", what, why, prefix)
                    os.ftruncate(fd, prefix)
                    meta.pop("ranges", None)
                    write_json(entry.part_meta, meta)
                    return None, run.received
            expected_md5 = _plain_md5(run.etag)
            if expected_md5 is not None and digests.md5 is not None \
                    and digests.md5.hexdigest() != expected_md5:
                raise _WrongContent(
                    f"the {info.size} bytes received for {what} do not match the MD5 in its "
                    f"ETag ({_shown_url(links)}); run it again, and report it if it persists")
            os.fsync(fd)
        except _WrongContent:
            os.close(fd)
            fd = -1
            entry.drop_part()
            raise
        finally:
            if fd >= 0:
                os.close(fd)
        final = entry.commit(_sniffed_extension(entry.part), etag=run.etag,
                             validator=cache_key(info.etag, info.last_modified, info.size),
                             sha256=digests.sha256.hexdigest(),
                             keep=arrival.claimed if arrival is not None else ())
        _log.debug("downloaded %s in parts: %d bytes to %s", what, info.size, final)
        return final, run.received

    def _run_parts(self, run: _Ranged, on_progress: ProgressCallback | None,
                   cancel: threading.Event | None) -> _Digests:
        """Fetch the missing ranges on a pool of ``connections`` threads,
        hashing the in-order prefix meanwhile; the digests of the whole file.

        This thread only waits: for the parts, for ``cancel`` (noticed within
        :data:`POLL_SECONDS`) and to hash.  On any way out the parts are told
        to stop and joined (each notices within a poll), so no thread writes
        the ``.part`` once the caller lets go of the entry.
        """
        what = f"the {run.links.side} of {run.links.process_id}"
        digests = _Digests(want_md5=_plain_md5(run.etag) is not None)
        hasher = InOrderHasher(run.fd, digests)
        parts = plan(run.done.missing(), self.part_size, self.connections)
        stop = child_event(cancel)
        probed = _WakingEvent(run.wake)
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.connections, len(parts))),
                                  thread_name_prefix="topaz-transfer-part")
        futures: list[Future[None]] = []
        launched = len(parts) <= 1
        base = run.done.total
        reported = base
        try:
            if parts:
                futures.append(pool.submit(self._part, run, *parts[0], stop, probed))
                futures[0].add_done_callback(lambda _: run.wake.set())
            while True:
                if cancel is not None and cancel.is_set():
                    raise Cancelled(f"Cancelled: the download of {what} at {run.done.total} "
                                    "bytes; run it again to resume")
                if not launched and probed.is_set():
                    for a, b in parts[1:]:
                        futures.append(pool.submit(self._part, run, a, b, stop, None))
                        futures[-1].add_done_callback(lambda _: run.wake.set())
                    launched = True
                run.wake.wait(POLL_SECONDS)
                run.wake.clear()
                finished = launched and all(f.done() for f in futures)
                for future in futures:
                    if future.done() and future.exception() is not None:
                        raise future.exception()  # type: ignore[misc]
                with run.lock:
                    prefix, written, etag = run.done.prefix, run.written, run.etag
                if _plain_md5(etag) is not None and digests.md5 is None:
                    digests = _Digests(want_md5=True)  # an ETag learnt from the parts
                    hasher = InOrderHasher(run.fd, digests)
                hasher.advance(prefix, budget=16 * self.chunk_size)
                if run.arrival is not None:
                    run.arrival.grow(prefix)
                have = base + written
                if on_progress is not None and have // self.chunk_size != \
                        reported // self.chunk_size:
                    on_progress(min(have, run.size), run.size)
                    reported = have
                if finished:  # seen before the errors were looked at: none is missed
                    break
            if not run.done.complete:  # parts stopped early: only a cancel does that
                raise Cancelled(f"Cancelled: the download of {what} at {run.done.total} "
                                "bytes; run it again to resume")
            hasher.advance(run.size)
            if on_progress is not None and reported != run.size:
                on_progress(run.size, run.size)
            return digests
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def _part(self, run: _Ranged, start: int, end: int, stop: threading.Event,
              probed: threading.Event | None) -> None:
        """Fetch ``[start, end)`` into the ``.part``, resuming a cut answer from
        where it stopped; records what it wrote on every way out."""
        what = f"the {run.links.side} of {run.links.process_id}"
        at = [start]  # where the part has got to, moved by _read_part as it writes
        attempts = 0
        try:
            while at[0] < end:
                pos = at[0]
                response = self._request("GET", run.links, {"Range": f"bytes={pos}-{end - 1}"},
                                         stop)
                with response:
                    covers = self._check_part(response, run, pos, end)
                    if probed is not None:
                        probed.set()
                    interrupted = self._read_part(response, run, at, covers, stop,
                                                  lambda upto: run.mark(start, upto))
                pos = at[0]
                if interrupted is None and pos == covers:
                    continue  # all it said it would send (perhaps less than asked)
                attempts += 1
                _log.info("a part of %s was interrupted at %d of %d-%d (%s); attempt %d of %d",
                          what, pos, start, end, interrupted or "short body", attempts,
                          self.retries)
                if attempts > self.retries:
                    raise TransferError(
                        f"download of {what} stopped at bytes {pos} of {start}-{end} after "
                        f"{attempts} attempts ({_shown_url(run.links)}); check the connection "
                        "and run it again to resume")
                if stop.wait(min(0.1 * attempts, 1.0)):
                    raise _Stopped
        except (_Stopped, Cancelled):
            return
        finally:
            if at[0] > start:
                run.mark(start, at[0])

    @staticmethod
    def _check_part(response: requests.Response, run: _Ranged, pos: int, end: int) -> int:
        """Where the answer to ``Range: bytes=<pos>-<end - 1>`` ends (exclusive);
        raises :class:`_RestartObject` when it is of another object and
        :class:`_OneStream` when it is not the range asked for."""
        status = response.status_code
        if status != 206:
            raise _OneStream(f"with HTTP {status} to a Range request")
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if match is None or match.group(3) == "*":
            raise _OneStream("with no Content-Range total")
        first, last, total = int(match.group(1)), int(match.group(2)), int(match.group(3))
        if total != run.size:
            raise _RestartObject(f"from an object of {total} bytes, not {run.size}")
        got_etag = _parse_etag(response.headers.get("ETag"))
        with run.lock:
            if run.etag and got_etag and got_etag != run.etag:
                raise _RestartObject(f"from a different object (ETag {got_etag}, "
                                     f"not {run.etag})")
            if run.etag is None and got_etag and not got_etag.startswith("W/"):
                run.etag = got_etag  # the HEAD had none: every part must match this one
        length = _parse_int(response.headers.get("Content-Length"))
        if first != pos or not pos <= last < end or length != last - first + 1:
            raise _OneStream(f"with bytes {first}-{last} when asked for {pos}-{end - 1}")
        return last + 1

    def _read_part(self, response: requests.Response, run: _Ranged, at: list[int], until: int,
                   stop: threading.Event, record: Callable[[int], None]) -> str | None:
        """Write the body from ``at[0]`` on, moving ``at[0]`` past each write
        (so whatever ends the part, its bytes are recorded); the interruption,
        or ``None`` for a clean end.  Every quarter part, ``record(at[0])``
        writes the progress down, so a SIGKILL loses less than that per part.

        Raises :class:`_Stopped`, a stall :class:`TransferError`, or
        :class:`_WrongContent` past ``until``.
        """
        what = f"the {run.links.side} of {run.links.process_id}"
        reader = _BodyReader(response, self.chunk_size)
        mark_time, mark_bytes, got = self._clock(), 0, 0
        pos = at[0]
        record_every = max(self.chunk_size, self.part_size // 4)
        recorded = 0
        try:
            while True:
                if stop.is_set():
                    raise _Stopped
                item = reader.next(POLL_SECONDS)
                now = self._clock()
                if item is not None:
                    kind, value = item
                    if kind == "end":
                        return None
                    if kind == "error":
                        if isinstance(value, _INTERRUPTIONS):
                            reason = scrub_urls(f"{type(value).__name__}: {value}")
                            return reason.splitlines()[0][:200]
                        raise value
                    if pos + len(value) > until:
                        raise _WrongContent(
                            f"storage sent more than the range it announced for {what} "
                            f"({_shown_url(run.links)}); run it again, and report it if it "
                            "persists")
                    view = memoryview(value)
                    while view:
                        written = os.pwrite(run.fd, view, pos)
                        view = view[written:]
                        pos += written
                        at[0] = pos
                    got += len(value)
                    with run.lock:
                        if (run.written + len(value)) // self.chunk_size \
                                != run.written // self.chunk_size:
                            run.wake.set()  # a step of progress for the waiting thread
                        run.written += len(value)
                        run.received += len(value)
                    if got - mark_bytes >= STALL_BYTES:
                        mark_time, mark_bytes = now, got
                    if got - recorded >= record_every and pos < until:
                        record(pos)
                        recorded = got
                if self.stall_timeout is not None and now - mark_time >= self.stall_timeout:
                    raise _stalled(what, f"bytes {pos}", self.stall_timeout, run.links)
        finally:
            reader.stop()

    def _read_body(self, response: requests.Response, out: IO[bytes], digests: _Digests,
                   done: int, total: int | None, links: LinkHolder,
                   on_progress: ProgressCallback | None,
                   cancel: threading.Event | None,
                   arrival: Arrival | None = None) -> tuple[int, int, str | None]:
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
                item = reader.next(POLL_SECONDS)
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
                    if arrival is not None and total is not None and done <= total:
                        arrival.grow(done)
                    if received - mark_bytes >= STALL_BYTES:
                        mark_time, mark_bytes = now, received
                    if on_progress is not None and done // self.chunk_size != \
                            reported // self.chunk_size:
                        on_progress(done, total)
                        reported = done
                if self.stall_timeout is not None and now - mark_time >= self.stall_timeout:
                    raise _stalled(what, f"{done} bytes", self.stall_timeout, links)
        finally:
            reader.stop()

    def _request(self, method: str, links: LinkHolder, headers: dict[str, str],
                 cancel: threading.Event | None = None) -> requests.Response:
        """Send one HEAD or GET; a refused link is refreshed once, then final.

        The refusal's reason is read from storage's error document
        (:mod:`~topaz_nb.storage.refusal`): an object that is gone is not worth
        a fresh link, and a 400 refuses the link only when its token expired
        (GCS).  A ``416`` to a Range request is returned (the caller restarts
        or, with no size known, takes it as the object's end); other error
        statuses raise.
        """
        while True:
            link = links.current()
            what = f"the {link.side} of {link.process_id}"
            url = link.head_url if method == "HEAD" else link.download_url
            shown = redact_url(url)
            try:
                response = cancellable(
                    functools.partial(
                        self.session.request, method, url, headers=headers,
                        stream=method == "GET", timeout=self.timeout, allow_redirects=True),
                    cancel, f"Cancelled: the {method} of {what}; run it again to resume")
            except (requests.RequestException, ValueError) as exc:  # ValueError: a malformed redirect
                reason = scrub_urls(f"{type(exc).__name__}: {exc}").splitlines()[0][:200]
                raise TransferError(
                    f"{method} of {what} failed ({shown}): {reason}; "
                    "check the connection and run again") from None
            status = response.status_code
            refusal = _refusal(response, method) if status in (400, 401, 403, 404, 410) \
                else None
            if refusal is not None and status == 400 and method == "HEAD":
                refusal = self._explain_head(link, refusal, cancel)  # GCS: 400 ExpiredToken
            if refusal is not None and (status != 400 or refusal.reason == "expired"):
                if refusal.reason != "gone" and (links.current() is not link
                                                 or not links.refreshed):
                    _log.info("storage refused the link for %s (HTTP %d%s); fetching a fresh "
                              "one", what, status, f" {refusal.code}" if refusal.code else "")
                    if links.refresh_after(link):
                        continue
                if refusal.reason != "gone" and method == "HEAD" and refusal.code is None:
                    # A HEAD's answer has no body: ask the GET link why, for one byte.
                    refusal = self._explain_head(links.current(), refusal, cancel)
                raise _refused(refusal, method, links, shown)
            if status == 416 and "Range" in headers:
                return response
            if status >= 400:
                response.close()
                raise TransferError(
                    f"storage answered HTTP {status} to the {method} of {what} ({shown}); "
                    "run again later", status_code=status, method=method,
                    process_id=link.process_id or None, side=link.side, url=shown)
            _log.debug("%s %s -> %d", method, shown, status)
            return response

    def _explain_head(self, link: Link, refusal: Refusal,
                      cancel: threading.Event | None) -> Refusal:
        """The reason storage gives the GET link for refusing, when the HEAD
        link was refused without one; ``refusal`` when the GET tells nothing."""
        try:
            probe = cancellable(
                functools.partial(self.session.request, "GET", link.download_url,
                                  headers={"Range": "bytes=0-0"}, stream=True,
                                  timeout=self.timeout, allow_redirects=True),
                cancel, f"Cancelled: the HEAD of the {link.side} of {link.process_id}; run it "
                "again to resume")
        except (requests.RequestException, ValueError):
            return refusal
        with probe:
            if probe.status_code < 400:
                return refusal
            said = from_document(probe.status_code, read_document(probe))
        return Refusal(refusal.status, said.code, said.message, said.reason) \
            if said.code is not None else refusal


# ------------------------------------------------------------------ helpers


def _refusal(response: requests.Response, method: str) -> Refusal:
    """What an error answer's document says (a HEAD's has none); the answer is closed."""
    with response:
        body = read_document(response) if method == "GET" else b""
    return from_document(response.status_code, body)


def _refused(refusal: Refusal, method: str, links: LinkHolder, shown: str) -> TransferError:
    """The error for a final refusal, its message worded for Python code
    (:func:`topaz_nb._text.storage_refused`; the other places word it from
    the same data)."""
    cls = TransferError if refusal.reason == "gone" else LinkExpired
    link = links.current()  # names its object even when the holder was made without
    exc = cls(reason=refusal.reason, status_code=refusal.status, storage_code=refusal.code,
              storage_message=refusal.message, method=method,
              process_id=link.process_id or None, side=link.side, url=shown)
    exc.args = (storage_refused(exc, "python"),)
    return exc


def _splice_risk(response: requests.Response, done: int, etag: str | None,
                 total: int | None) -> str | None:
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


def _ends_at(response: requests.Response, done: int) -> bool:
    """Whether this answer to ``Range: bytes=<done>-`` says the object is
    ``done`` bytes long: a 416 ("no byte there"), whose ``Content-Range:
    bytes */<length>``, when sent, names that very length."""
    if response.status_code != 416:
        return False
    sent = response.headers.get("Content-Range")
    if sent is None:
        return True
    match = re.fullmatch(r"\s*bytes\s+\*/(\d+)\s*", sent)
    return match is not None and int(match.group(1)) == done


def _unframed_end(part: Path, done: int) -> str | None:
    """``None`` when the ``done`` bytes of a body that came with no length
    reach the end their format marks (:mod:`topaz_nb._format_end`); else why
    they cannot be taken as the whole object yet."""
    from .._format_end import reaches_end

    with open(part, "rb") as fp:
        ends = reaches_end(fp, done)
    if ends:
        return None
    if ends is False:
        return "the body, sent with no size, ended before the end its image format marks"
    return "storage sent no size and the format has no end to check"


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


def _sniffed_extension(path: Path) -> str:
    """The extension for the format the bytes are, whatever Content-Type said
    (storage sends ``application/octet-stream``, or an error page as
    ``text/html`` with an image's name); ``bin`` when they are no image."""
    from .._sniff import UnrecognisedImage, open_header  # Pillow: loaded on first download

    try:
        with open(path, "rb") as fp:
            image = open_header(fp)
            fmt = (image.format or "").upper()
    except (UnrecognisedImage, OSError):
        return "bin"
    ext = _FORMAT_EXTENSIONS.get(fmt, fmt.lower())
    return ext if is_safe_extension(ext) else "bin"


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


def _stalled(what: str, where: str, timeout: float, links: LinkHolder) -> TransferError:
    """A body that stalled (under :data:`STALL_BYTES` within ``timeout``), whether
    a whole body or one part of a ranged download; its ``.part`` is kept."""
    return TransferError(
        f"download of {what} stalled: under 64 KiB in {timeout:g} s, at {where} "
        f"({_shown_url(links)}); run it again to resume (Topaz.stall_timeout sets the limit)")


def _shown_url(links: LinkHolder) -> str:
    return redact_url(links.current().download_url)
