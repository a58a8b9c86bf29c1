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
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from .._tasks import cancellable
from .._text import storage_refused
from .._version import user_agent
from ..errors import Cancelled, LinkExpired, TransferError
from ..links import Link, redact_url, scrub_urls
from ..net.logsafe import install_log_filter
from ..net.retry import DEFAULT_MAX_RETRY_AFTER, DEFAULT_MAX_RETRY_TIME, make_retry
from .cache import (
    POLL_SECONDS,
    SIDECAR_VERSION,
    CacheEntry,
    cache_key,
    is_safe_extension,
    read_json,
    write_json,
)
from .refresh import LinkHolder
from .refusal import Refusal, from_document, read_document

__all__ = [
    "DEFAULT_MAX_BYTES", "DEFAULT_STALL_TIMEOUT", "STALL_BYTES", "Downloader", "ObjectInfo",
    "ProgressCallback", "make_session",
]

_log = logging.getLogger("topaz_nb.transfer")

DEFAULT_MAX_BYTES = 4_000_000_000
"""Ceiling on a body whose size nobody announced (``Topaz.max_download_bytes``)."""
DEFAULT_STALL_TIMEOUT = 30.0
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
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
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
                  cancel: threading.Event | None) -> tuple[Path, int]:
        """Write the object to its ``.part``, resuming it, check it, make it
        the entry's file: ``(path, bytes received by this call)``."""
        part = entry.part
        what = f"the {links.side} of {links.process_id}"
        done, part_meta = self._resume_point(entry, info)
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
                            response, out, digests, done, total, links, on_progress, cancel)
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
                             sha256=digests.sha256.hexdigest())
        _log.debug("downloaded %s: %d bytes to %s", what, done, final)
        return final, received

    def _read_body(self, response: requests.Response, out: IO[bytes], digests: _Digests,
                   done: int, total: int | None, links: LinkHolder,
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
                if refusal.reason != "gone" and not links.refreshed:
                    _log.info("storage refused the link for %s (HTTP %d%s); fetching a fresh "
                              "one", what, status, f" {refusal.code}" if refusal.code else "")
                    links.refresh()
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


def _shown_url(links: LinkHolder) -> str:
    return redact_url(links.current().download_url)
