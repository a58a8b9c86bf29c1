"""Presigned HEAD/GET against object storage, into a disk cache.

The transfer layer never holds the API key.  It is handed a
:data:`~topaz_nb.links.LinkSource` instead, so when storage refuses a link (it
lasts an hour) it can ask for a fresh one exactly once, and nothing here can
leak the key or send it to a host that is not the API.

Why the download path looks the way it does:

* **Atomic files.**  Bytes go to ``<final name>.<random>.part`` in the cache
  directory and become the cached file only through :func:`os.replace` once
  the whole body has arrived and its length checked.  A file under its final
  name is therefore always complete; a ``.part`` file is never read, whoever
  left it behind (a crash, a kill, another thread still writing).
* **Resume.**  Images can be hundreds of megabytes.  A body cut short is
  continued with ``Range: bytes=<done>-`` (and ``If-Range`` when the object has
  a strong ETag); a server that answers ``200`` instead of ``206`` sent the
  whole object again, so the file restarts from zero (progress reports ``0``
  once).  Attempts are bounded by ``retries``.  urllib3 hands over whole
  chunks, so a resume starts at the last complete chunk, never mid-chunk.
* **Identity encoding.**  ``Accept-Encoding: identity`` keeps
  ``Content-Length`` equal to the bytes written, so the length check and the
  byte offsets of a resume mean what they say.
* **Retries.**  Connection errors and 429/5xx answers are retried by urllib3's
  :class:`~urllib3.util.Retry` on the session's adapter, with backoff and
  ``Retry-After``; the loop here only deals with bodies cut short.

Cache layout: ``<cache_dir>/<process id>/<side>-<key>.<ext>``, where the key
comes from the storage's validators (see :meth:`Transfer.cached`) and the
extension from the content type.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import glob
import hashlib
import logging
import mimetypes
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from ._version import __version__
from ._logsafe import install_log_filter
from ._retry import DEFAULT_MAX_RETRY_AFTER, DEFAULT_MAX_RETRY_TIME, make_retry
from ._ids import check_process_id
from .errors import LinkExpired, TransferError
from .links import SIDES, Link, LinkSource, Side, redact_url

__all__ = ["Fetched", "ObjectInfo", "Transfer", "default_cache_dir"]

_log = logging.getLogger("topaz_nb.transfer")

_CACHE_ENV = "TOPAZ_NB_CACHE"
_STALE_PART_SECONDS = 15 * 60
"""A ``.part`` file untouched this long belongs to no live download (every
chunk written bumps its mtime), so a successful download may delete it."""

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_KNOWN_EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/png": "png",
    "image/tiff": "tif",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/bmp": "bmp",
    "image/heic": "heic",
    "image/avif": "avif",
}
_SAFE_EXT = re.compile(r"[a-z0-9]{1,8}")
_QUERY = re.compile(r"\?[^\s'\"<>)]*")

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


class Transfer:
    """Presigned HEAD/GET into a disk cache; safe to share between threads.

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
        Bytes per read while streaming (at least 1 MiB is sensible for images).
    timeout:
        Seconds to wait for a connection or for the next bytes of a response.
    retries:
        Bound on urllib3's retries of connection errors and 429/5xx answers,
        and separately on resumes of a body cut short.
    """

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None, *,
                 use_cache: bool = True, chunk_size: int = 1 << 20,
                 timeout: float = 60.0, retries: int = 4) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries}")
        self._cache_dir = Path(cache_dir).expanduser() if cache_dir is not None \
            else default_cache_dir()
        self.use_cache = use_cache
        self.chunk_size = chunk_size
        self.timeout = timeout
        self.retries = retries
        self._session = self._make_session(retries)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

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
        session.headers["User-Agent"] = (
            f"topaz-nb/{__version__} {requests.utils.default_user_agent()}")
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

    def head(self, links: LinkSource) -> ObjectInfo:
        """Ask storage what the object is, without downloading it.

        A refused or already expired link is replaced once through
        ``links(True)``; a second refusal raises :class:`LinkExpired`.
        """
        return self._head(_Links(links))

    def _head(self, links: _Links) -> ObjectInfo:
        response = self._request("HEAD", links, {})
        with response:
            link = links.current()
            return _object_info(response, redact_url(link.head_url))

    # ------------------------------------------------------------------ GET

    def fetch(self, links: LinkSource, process_id: str, side: Side, *,
              on_progress: ProgressCallback | None = None) -> Fetched:
        """HEAD then download: the usual way to get one side onto disk.

        A cached copy costs the HEAD only.  HEAD and GET share one link and
        one refresh.
        """
        pid, side = _check(process_id, side)
        holder = _Links(links, pid, side)
        info = self._head(holder)
        return self._download(holder, info, on_progress)

    def download(self, links: LinkSource, process_id: str, side: Side, *,
                 info: ObjectInfo | None = None,
                 on_progress: ProgressCallback | None = None) -> Fetched:
        """Get the object onto disk, from the cache when it is there.

        ``info`` is the object's HEAD answer (sent now when not given); it
        decides the cache file.  ``on_progress(done, total)`` is called after
        every chunk, ``total`` being ``None`` when the size is unknown; an
        exception raised from it cancels the download.
        """
        pid, side = _check(process_id, side)
        holder = _Links(links, pid, side)
        if info is None:
            info = self._head(holder)
        return self._download(holder, info, on_progress)

    def cached(self, process_id: str, side: Side, info: ObjectInfo) -> Path | None:
        """The complete cached file for this object, or ``None``.

        The key is the ETag when storage sends one; otherwise Last-Modified
        with the size; otherwise the size; otherwise nothing beyond process ID
        and side.  That last fallback is sound because Topaz never changes the
        objects of a process: an ID names one upload and one result, deleted
        after 7 days but never rewritten.  A file whose length differs from a
        known size is not taken.
        """
        pid, side = _check(process_id, side)
        path = self._path_for(pid, side, info)
        return path if _complete(path, info.size) else None

    def clear_cache(self, process_id: str | None = None) -> int:
        """Delete cached files of one process, or of all; returns how many
        downloads were deleted (their derived previews go with them).

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
                    # Hidden files are previews derived from a download, not downloads.
                    removed += not item.name.startswith(".")
            try:
                directory.rmdir()
            except OSError:
                pass
        _log.debug("removed %d cached files from %s", removed, self._cache_dir)
        return removed

    # ------------------------------------------------------------- internals

    def _path_for(self, pid: str, side: Side, info: ObjectInfo) -> Path:
        return self._cache_dir / pid / f"{side}-{_cache_key(info)}.{_extension(info.content_type)}"

    def _lock_for(self, path: Path) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(str(path), threading.Lock())

    def _download(self, links: _Links, info: ObjectInfo,
                  on_progress: ProgressCallback | None) -> Fetched:
        pid, side = links.process_id, links.side
        final = self._path_for(pid, side, info)
        if self.use_cache and _complete(final, info.size):
            _log.debug("cache hit for %s of %s: %s", side, pid, final)
            return Fetched(pid, side, final, info, True, 0)
        with self._lock_for(final):
            # Another thread may have finished the same object while we waited.
            if self.use_cache and _complete(final, info.size):
                return Fetched(pid, side, final, info, True, 0)
            final.parent.mkdir(parents=True, exist_ok=True)
            received = self._stream_to(final, links, info, on_progress)
        _sweep_stale_parts(final)
        return Fetched(pid, side, final, info, False, received)

    def _stream_to(self, final: Path, links: _Links, info: ObjectInfo,
                   on_progress: ProgressCallback | None) -> int:
        """Write the object to a fresh ``.part`` file, check it, rename it."""
        part = final.with_name(f"{final.name}.{uuid.uuid4().hex}.part")
        done = 0
        received = 0
        total: int | None = info.size
        interruptions = 0
        if_range = _strong_etag(info)
        try:
            with open(part, "wb") as out:
                while True:
                    headers: dict[str, str] = {}
                    if done:
                        headers["Range"] = f"bytes={done}-"
                        if if_range:
                            headers["If-Range"] = if_range
                    response = self._request("GET", links, headers)
                    with response:
                        if done and response.status_code != 206:
                            _log.info("storage sent the whole %s of %s again instead of the "
                                      "rest; restarting from zero", links.side, links.process_id)
                            out.seek(0)
                            out.truncate()
                            done = 0
                            if on_progress is not None:
                                on_progress(0, total)
                        total = _expected_total(response, done, links, info)
                        try:
                            for chunk in response.iter_content(self.chunk_size):
                                if not chunk:
                                    continue
                                out.write(chunk)
                                done += len(chunk)
                                received += len(chunk)
                                if on_progress is not None:
                                    on_progress(done, total)
                            interrupted = None
                        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
                            interrupted = _scrub(f"{type(exc).__name__}: {exc}")
                    if total is None:
                        break  # no length to check: the body is what arrived
                    if done == total:
                        break
                    if done > total:
                        raise TransferError(
                            f"storage sent {done} bytes for the {links.side} of "
                            f"{links.process_id} but announced {total} "
                            f"({_shown_url(links)}); run again, and report it if it persists")
                    interruptions += 1
                    _log.info("%s of %s interrupted at %d of %d bytes (%s); attempt %d of %d",
                              links.side, links.process_id, done, total,
                              interrupted or "short body", interruptions, self.retries)
                    if interruptions > self.retries:
                        raise TransferError(
                            f"download of the {links.side} of {links.process_id} stopped at "
                            f"{done} of {total} bytes after {interruptions} attempts "
                            f"({_shown_url(links)}); check the connection and run again")
                    time.sleep(min(0.1 * interruptions, 1.0))
                out.flush()
                os.fsync(out.fileno())
            _replace(part, final, info.size)
        except BaseException:
            _unlink_quietly(part)
            raise
        _log.debug("downloaded %s of %s: %d bytes to %s",
                   links.side, links.process_id, done, final)
        return received

    def _request(self, method: str, links: _Links,
                 headers: dict[str, str]) -> requests.Response:
        """Send one HEAD or GET; a refused link is refreshed once, then final."""
        while True:
            link = links.current()
            what = f"the {link.side} of {link.process_id}"
            url = link.head_url if method == "HEAD" else link.download_url
            shown = redact_url(url)
            try:
                response = self._session.request(
                    method, url, headers=headers, stream=method == "GET",
                    timeout=self.timeout, allow_redirects=True)
            except (requests.RequestException, ValueError) as exc:  # ValueError: a malformed redirect
                reason = _scrub(f"{type(exc).__name__}: {exc}").splitlines()[0][:200]
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


def _strong_etag(info: ObjectInfo) -> str | None:
    """The ``If-Range`` value: only a strong ETag may be used there."""
    if not info.etag or info.etag.startswith("W/"):
        return None
    return f'"{info.etag}"'


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


def _extension(content_type: str | None) -> str:
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    ext = _KNOWN_EXTENSIONS.get(mime)
    if ext is None and mime:
        guessed = mimetypes.guess_extension(mime, strict=False)
        ext = guessed.lstrip(".").lower() if guessed else None
    return ext if ext and _SAFE_EXT.fullmatch(ext) else "bin"


def _complete(path: Path, size: int | None) -> bool:
    try:
        stat = path.stat()
    except OSError:
        return False
    return path.is_file() and (size is None or stat.st_size == size)


def _expected_total(response: requests.Response, done: int, links: _Links,
                    info: ObjectInfo) -> int | None:
    """How long the whole object is, according to this response."""
    length = _parse_int(response.headers.get("Content-Length"))
    if response.status_code == 206:
        match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*",
                             response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != done:
            raise TransferError(
                f"storage resumed the {links.side} of {links.process_id} at the wrong place "
                f"({_shown_url(links)}); run again")
        if match.group(3) != "*":
            return int(match.group(3))
        return done + length if length is not None else info.size
    if length is not None:
        return length
    return None


def _replace(part: Path, final: Path, size: int | None) -> None:
    try:
        os.replace(part, final)
    except PermissionError:
        # Windows refuses to replace a file that is open; a complete copy
        # written by someone else is as good as ours.
        if _complete(final, size):
            _unlink_quietly(part)
            return
        raise


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _sweep_stale_parts(final: Path) -> None:
    """Delete ``.part`` files of this object that no download is still writing."""
    cutoff = time.time() - _STALE_PART_SECONDS
    for leftover in final.parent.glob(f"{glob.escape(final.name)}.*.part"):
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
                _log.debug("removed stale %s", leftover.name)
        except OSError:
            pass


def _shown_url(links: _Links) -> str:
    return redact_url(links.current().download_url)


def _scrub(text: str) -> str:
    """Remove query strings from text that may quote a presigned URL."""
    return _QUERY.sub("?…", text)
