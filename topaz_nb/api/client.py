"""The Topaz Image API, as far as reviewing results needs it: status and links.

:class:`TopazClient` is the only object that holds the API key.  It sends the
key as the ``X-API-Key`` header on each request to the API host and nowhere
else: redirects are not followed, so the header can never travel to another
host.  What it hands out are typed values: :class:`Status` and
:class:`~topaz_nb.links.Link`, whose presigned URLs the transfer layer fetches
without the key.

Transient failures (connection errors, 429, 5xx) are retried by the
package's one policy, :mod:`topaz_nb.net.retry`: jittered exponential backoff,
``Retry-After`` honoured but capped (``max_retry_after``), all inside a time
budget (``max_retry_time``), and a host that cannot be reached at all (offline,
a name that does not resolve, a refused connection) given up on within
seconds, so a notebook cell never hangs for long.  Every other answer becomes
one of the classes in :mod:`topaz_nb.errors`, with a one-line message that says
what to do next; sentences about processes come from :func:`topaz_nb._text.say`
in the words of a library call (place ``"python"``): the entry points rephrase
them for their own place from the data the errors carry.

Presigned links last an hour; asking for one costs a request, so links are
kept per ``(process_id, side)`` and reused until ``link_margin`` seconds before
they expire, which leaves time for a long download to finish on the same link.
"""

from __future__ import annotations

import datetime as _dt
import errno
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NameResolutionError

from .. import _text
from .._ids import check_process_id
from .._version import user_agent
from ..errors import (
    ApiError,
    AuthenticationError,
    BadRequest,
    InvalidFilter,
    MissingApiKey,
    NotFound,
    NotReady,
    ProcessFailed,
    RateLimited,
    ServerError,
    TopazError,
    WaitTimeout,
)
from ..links import Link, LinkSource, Side, redact_url, scrub_urls
from ..net.logsafe import install_log_filter
from ..net.retry import CONNECT_TIMEOUT, DEFAULT_MAX_RETRY_AFTER, is_unreachable, make_retry

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["DEFAULT_BASE_URL", "STATUSES", "Listing", "Status", "TopazClient", "parse_since",
           "parse_status"]

DEFAULT_BASE_URL = "https://api.topazlabs.com/image/v1"

_log = logging.getLogger("topaz_nb.client")

_KEY_HINT = "pass api_key=..., or set TOPAZ_API_KEY"
_TERMINAL = frozenset({"Completed", "Failed", "Cancelled"})
STATUSES: tuple[str, ...] = ("Pending", "Processing", "Completed", "Failed", "Cancelled")
"""Every status the API reports, as :meth:`TopazClient.recent` accepts them."""
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)\s*$", re.IGNORECASE)
RETENTION = _dt.timedelta(days=7)
"""How long the API keeps a process; older ones are gone from every list."""
# Status fields a server may explain a failure in; the spec names none.
_REASON_FIELDS = ("message", "error", "reason")
# The spec allows at most 100 statuses per page; fewer pages, fewer requests.
_PAGE_LIMIT = 100
# One listing reads at most this many pages, for at most this long: a server
# that announces another page for ever (a fresh cursor each time) is stopped.
# 100 full pages are 10,000 processes, more than a week of most accounts.
_LIST_PAGES = 100
_LIST_SECONDS = 60.0
# Pacing of wait(): never faster than _POLL_MIN, never slower than _POLL_MAX.
_POLL_MIN = 0.5
_POLL_GROWTH = 1.5
_POLL_MAX = 10.0


def _pause(seconds: float) -> None:
    """The wait between two polls of :meth:`TopazClient.wait`, in the calling
    thread so Ctrl-C ends it (tests replace it to record the pacing)."""
    time.sleep(seconds)


def _clock() -> float:
    """The time a listing's budget is measured with (tests replace it with a fake)."""
    return time.monotonic()


def _utc(value: Any) -> _dt.datetime | None:
    """Unix seconds from the API as an aware UTC datetime; 0 or junk means unknown."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    try:
        return _dt.datetime.fromtimestamp(value, _dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _reason(data: dict[str, Any]) -> str | None:
    """The server's explanation in a raw status, one line with URLs redacted.

    The official spec defines no such field; servers that explain a Failed
    process use ``message``, ``error`` or ``reason``, so the first non-empty
    one of those is taken.
    """
    for name in _REASON_FIELDS:
        value = data.get(name)
        if isinstance(value, str) and value.strip():
            return _text.one_line(scrub_urls(value), 200)
    return None


@dataclass(frozen=True)
class Status:
    """One process as the Status endpoint reports it (``StatusResponse``).

    Times are aware UTC datetimes; fields the server left out are ``None``.
    ``reason`` is the server's explanation of a failure when the status
    carried one (see :func:`_reason`).  ``raw`` keeps the whole answer for
    fields this class does not name.
    """

    process_id: str
    status: str
    progress: int = 0
    eta: _dt.datetime | None = None
    filename: str | None = None
    input_format: str | None = None
    input_width: int | None = None
    input_height: int | None = None
    output_format: str | None = None
    output_width: int | None = None
    output_height: int | None = None
    category: str | None = None
    model_type: str | None = None
    model: str | None = None
    crop_to_fill: bool = False
    credits: int | None = None
    creation_time: _dt.datetime | None = None
    modification_time: _dt.datetime | None = None
    source_id: str | None = None
    reason: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        """The process will not change any more (Completed, Failed or Cancelled)."""
        return self.status in _TERMINAL

    @property
    def done(self) -> bool:
        """The output exists and can be downloaded."""
        return self.status == "Completed"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Status:
        """Build from a ``StatusResponse`` object, tolerating missing fields."""
        progress = _int(data.get("progress"))
        return cls(
            process_id=str(data.get("process_id") or ""),
            status=str(data.get("status") or "Unknown"),
            progress=max(0, min(100, progress)) if progress is not None else 0,
            eta=_utc(data.get("eta")),
            filename=_str(data.get("filename")),
            input_format=_str(data.get("input_format")),
            input_width=_int(data.get("input_width")),
            input_height=_int(data.get("input_height")),
            output_format=_str(data.get("output_format")),
            output_width=_int(data.get("output_width")),
            output_height=_int(data.get("output_height")),
            category=_str(data.get("category")),
            model_type=_str(data.get("model_type")),
            model=_str(data.get("model")),
            crop_to_fill=data.get("crop_to_fill") is True,
            credits=_int(data.get("credits")),
            creation_time=_utc(data.get("creation_time")),
            modification_time=_utc(data.get("modification_time")),
            source_id=_str(data.get("source_id")),
            reason=_reason(data),
            raw=dict(data),
        )

    def describe(self) -> str:
        """``Processing, 42%, ETA 12 s``: the short form used in messages."""
        return _text.progress_state(self.status, self.progress, self.eta)


class Listing(list[Status]):
    """Statuses from the API's list, and what the listing left out of them.

    A list, so every caller of :meth:`TopazClient.recent` and
    :meth:`TopazClient.statuses` keeps working; beside the statuses it says
    what a reader should know about them: ``cut`` is why paging stopped before
    the API's last page (``"cursor"``: a page cursor came back a second time;
    ``"no_cursor"``: more pages were announced without one; ``"pages"`` or
    ``"time"``: the listing's bound of 100 pages or 60 seconds), or ``None``
    when the list was read to its end; ``pages`` and ``seconds`` are what it
    took; ``skipped`` counts entries that were not a process (no process ID
    that is a UUID), left out so that the others are still listed.  Each
    process is in it once.  :meth:`notes` says all that in the words of a place.
    """

    cut: _text.ListingCut | None = None
    pages: int = 0
    seconds: float = 0.0
    skipped: int = 0

    def notes(self, place: _text.Place = "python") -> list[str]:
        """One line per thing left out (cut short, entries skipped); none when complete."""
        lines = []
        if self.cut is not None:
            lines.append(_text.listing_cut(self.cut, self.pages, self.seconds, place))
        if self.skipped:
            lines.append(_text.listing_skipped(self.skipped, place))
        return lines


class TopazClient:
    """Talks to the Topaz Image API host with one API key.

    ``api_key`` defaults to ``$TOPAZ_API_KEY`` and ``base_url`` to
    ``$TOPAZ_API_URL`` or :data:`DEFAULT_BASE_URL`.  ``timeout`` bounds each
    attempt (connecting gets at most a few seconds of it: a host that does not
    answer is better reported soon); ``retries``, ``backoff_factor`` and
    ``max_retry_time`` bound the retrying of connection errors, 429 and 5xx,
    and ``max_retry_after`` caps each wait a ``Retry-After`` header asks for.
    Links are reused until ``link_margin`` seconds before they expire.

    Safe to share between threads fetching different sides of a process.
    """

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *,
                 timeout: float = 30.0, max_retry_time: float = 60.0, retries: int = 6,
                 backoff_factor: float = 0.5, link_margin: float = 300.0,
                 max_retry_after: float = DEFAULT_MAX_RETRY_AFTER) -> None:
        if api_key is not None and not (isinstance(api_key, str) and api_key.strip()):
            raise MissingApiKey("The API key given is empty: pass the key from your Topaz "
                                "account as api_key=..., or set TOPAZ_API_KEY.")
        key = api_key if api_key is not None else os.environ.get("TOPAZ_API_KEY", "")
        key = key.strip() if isinstance(key, str) else ""
        if not key:
            raise MissingApiKey()
        self._api_key = key
        url = base_url or os.environ.get("TOPAZ_API_URL", "").strip() or DEFAULT_BASE_URL
        url = url.rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _address_error(
                TopazError, f"{redact_url(url)!r} is not an API address: expected a URL such "
                f"as {DEFAULT_BASE_URL!r}")
        self._base_url = url
        self._host = parts.netloc.rpartition("@")[2]
        self._timeout = timeout
        self._retries = max(0, int(retries))
        self._link_margin = link_margin
        self._links: dict[tuple[str, Side], Link] = {}
        self._lock = threading.Lock()

        self._connect_timeout = min(timeout, CONNECT_TIMEOUT)
        retry = make_retry(self._retries, methods=("GET",), backoff_factor=backoff_factor,
                           backoff_max=30.0, max_time=max(0.0, max_retry_time),
                           max_retry_after=max_retry_after)
        install_log_filter()
        self._session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._session.headers.update({
            "Accept": "application/json",
            "User-Agent": user_agent(),
        })

    # ------------------------------------------------------------------ basics

    @property
    def base_url(self) -> str:
        """The API root every request goes to (no trailing slash)."""
        return self._base_url

    def __repr__(self) -> str:
        return f"TopazClient(base_url={self._base_url!r}, key='set')"

    __str__ = __repr__

    def close(self) -> None:
        """Release pooled connections; cached links stay usable."""
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------- links

    def link(self, process_id: str, side: Side, *, refresh: bool = False) -> Link:
        """A presigned link to one side of a process, reused while it has time left.

        ``refresh=True`` asks the API for a new one, which is what a download
        does once when storage refuses the link it had.
        """
        pid = check_process_id(process_id)
        if side not in ("input", "output"):
            raise TopazError(f"side must be 'input' or 'output', not {side!r}")
        key = (pid, side)
        if not refresh:
            with self._lock:
                cached = self._links.get(key)
            if cached is not None and cached.seconds_left > self._link_margin:
                _log.debug("reusing %s link of %s (%.0f s left)", side, pid, cached.seconds_left)
                return cached
        path = f"/download/{pid}" if side == "output" else f"/download/input/{pid}"
        data = self._get_json(path, pid=pid, side=side)
        link = self._parse_link(data, pid, side)
        with self._lock:
            self._links[key] = link
        return link

    def output_link(self, process_id: str) -> Link:
        """The processed image's link; :class:`NotReady` until it is Completed."""
        return self.link(process_id, "output")

    def input_link(self, process_id: str) -> Link:
        """The uploaded image's link."""
        return self.link(process_id, "input")

    def link_source(self, process_id: str, side: Side) -> LinkSource:
        """A key-free callable the transfer layer uses to get (and refresh) one link."""
        pid = check_process_id(process_id)

        def source(refresh: bool = False) -> Link:
            return self.link(pid, side, refresh=refresh)

        return source

    def _parse_link(self, data: Any, pid: str, side: Side) -> Link:
        if isinstance(data, dict):
            download_url, head_url = data.get("download_url"), data.get("head_url")
            expiry = _utc(data.get("expiry"))
            if isinstance(download_url, str) and isinstance(head_url, str) and download_url \
                    and head_url and expiry is not None:
                return Link(process_id=pid, side=side, download_url=download_url,
                            head_url=head_url, expiry=expiry)
        raise _address_error(
            ApiError, f"The Topaz API at {self._host} sent an unexpected answer for the "
            f"{side} link of {pid} (no download_url, head_url and expiry)", status_code=200)

    # ------------------------------------------------------------------ status

    def status(self, process_id: str) -> Status:
        """The current state of one process."""
        pid = check_process_id(process_id)
        data = self._get_json(f"/status/{pid}", pid=pid)
        if not isinstance(data, dict):
            raise _address_error(
                ApiError, f"The Topaz API at {self._host} sent an unexpected status answer "
                f"for {pid}", status_code=200)
        return Status.from_json(data)

    def statuses(self) -> Listing:
        """Every process the key can see (up to 7 days old), following the pages
        within the listing's bounds (see :class:`Listing`), in the API's order."""
        return self._list(_PAGE_LIMIT)

    def recent(self, limit: int | None = None, status: str | None = None,
               since: str | float | _dt.timedelta | _dt.datetime | None = None) -> Listing:
        """The account's processes, newest first, up to ``limit`` of them.

        ``status`` keeps one status (``"Completed"``, ``"failed"``: any case);
        ``since`` keeps those created at most that long ago: ``"30m"``,
        ``"2h"``, ``"3d"``, seconds, a ``timedelta`` or an aware ``datetime``.
        Both are checked before any request (:class:`~topaz_nb.errors.InvalidFilter`).
        Pages (of at most ``limit``, and at most 100) are followed only until
        ``limit`` processes are found, or until a page reaches past ``since``:
        the API lists newest first.  A server that ignores pagination sends its
        whole list at once, which is then sorted here.

        The answer is a :class:`Listing`: each process once (``limit`` counts
        distinct processes), entries that are not a process skipped and
        counted, and paging bounded; ``notes(place)`` says what was left out.
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise InvalidFilter(f"limit must be a whole number of at least 1, not {limit!r}")
        wanted = parse_status(status) if status is not None else None
        cutoff = parse_since(since) if since is not None else None

        def keep(st: Status) -> bool:
            if cutoff is not None and st.creation_time is not None \
                    and st.creation_time < cutoff:
                return False
            return wanted is None or st.status == wanted

        def enough(found: Listing, page: list[Status]) -> bool:
            # Pages come newest first: once a page reaches past ``since``, or
            # enough processes are found, later pages can only hold older ones.
            oldest = min((st.creation_time for st in page if st.creation_time), default=None)
            return (limit is not None and len(found) >= limit) or (
                cutoff is not None and oldest is not None and oldest < cutoff)

        page_size = min(limit, _PAGE_LIMIT) if limit is not None else _PAGE_LIMIT
        found = self._list(page_size, keep=keep, enough=enough)
        found.sort(key=_newest_first)
        if limit is not None:
            del found[limit:]
        return found

    def _list(self, page_size: int, *, keep: Callable[[Status], bool] | None = None,
              enough: Callable[[Listing, list[Status]], bool] | None = None) -> Listing:
        """Follow the pages of ``GET /status`` (``paginated=true``) within the bounds.

        Statuses that ``keep`` accepts are collected, each process once, until
        ``enough(found, page)`` holds or the API has no next page.  A cursor
        already followed (the pages would repeat for ever), none where more
        pages are announced, ``_LIST_PAGES`` pages or ``_LIST_SECONDS``
        seconds stop it too, and say so in ``cut``.  A server that ignores
        pagination answers with its whole list at once.
        """
        found = Listing()
        ids: set[str] = set()
        cursors: set[str] = set()
        cursor: str | None = None
        started = _clock()
        while True:
            params: dict[str, Any] = {"paginated": "true", "limit": page_size}
            if cursor:
                params["cursor"] = cursor
            data = self._get_json("/status", params=params)
            found.pages += 1
            paginated = not isinstance(data, list)  # a list: pagination ignored
            pagination: Any
            if isinstance(data, list):
                items, pagination = data, {}
            elif isinstance(data, dict) and isinstance(data.get("data"), list):
                items, pagination = data["data"], data.get("pagination") or {}
            else:
                raise _address_error(
                    ApiError, f"The Topaz API at {self._host} sent an unexpected list of "
                    "statuses", status_code=200)
            page: list[Status] = []
            for item in items:
                st = _listed(item)
                if st is None:
                    found.skipped += 1
                    continue
                page.append(st)
                if st.process_id not in ids:
                    ids.add(st.process_id)
                    if keep is None or keep(st):
                        found.append(st)
            if not paginated or (enough is not None and enough(found, page)):
                break
            if not (isinstance(pagination, dict) and pagination.get("has_next_page")):
                break
            sent = pagination.get("next_cursor")
            next_cursor = sent if isinstance(sent, str) else ""
            if not next_cursor:
                found.cut = "no_cursor"
            elif next_cursor in cursors:
                found.cut = "cursor"
            elif found.pages >= _LIST_PAGES:
                found.cut = "pages"
            elif _clock() - started >= _LIST_SECONDS:
                found.cut = "time"
            if found.cut is not None:
                break
            cursor = next_cursor
            cursors.add(next_cursor)
        found.seconds = _clock() - started
        if found.cut is not None or found.skipped:
            _log.debug("listing: %d pages in %.1f s, cut=%s, %d entries skipped",
                       found.pages, found.seconds, found.cut, found.skipped)
        return found

    def wait(self, process_id: str, timeout: float | None = None,
             on_progress: Callable[[Status], None] | None = None) -> Status:
        """Poll until the process ends; return its Completed status.

        Polls are paced by the server's ETA, never faster than every
        0.5 s and never slower than every 10 s, so a long job costs few
        requests and a short one is noticed soon after it finishes.
        """
        pid = check_process_id(process_id)
        started = time.monotonic()
        deadline = None if timeout is None else started + max(0.0, timeout)
        delay = _POLL_MIN
        while True:
            st = self.status(pid)
            if on_progress is not None:
                on_progress(st)
            if st.done:
                return st
            if st.terminal:
                raise _phrased(ProcessFailed("", status=st.status, process_id=pid,
                                             reason=st.reason))
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise WaitTimeout(
                    f"Process {pid} is still {st.describe()} after "
                    f"{_text.duration(now - started)}; call TopazClient.wait({pid!r}) "
                    "again with a larger timeout, or check later"
                )
            pause = delay
            if st.eta is not None:
                left = (st.eta - _dt.datetime.now(_dt.timezone.utc)).total_seconds()
                pause = max(left, delay)
            pause = min(pause, _POLL_MAX)
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - now))
            delay = min(delay * _POLL_GROWTH, _POLL_MAX)
            _pause(pause)

    # -------------------------------------------------------------------- HTTP

    def _get_json(self, path: str, *, params: dict[str, Any] | None = None,
                  pid: str | None = None, side: Side | None = None) -> Any:
        """GET ``base_url + path`` with the key; the parsed JSON, or a mapped error."""
        url = self._base_url + path
        # The body of a small JSON answer is read after urllib3's retries are
        # done with the request, so a body cut short gets one more request here.
        for body_attempt in (1, 2):
            try:
                resp = self._session.get(
                    url, params=params, timeout=(self._connect_timeout, self._timeout),
                    allow_redirects=False,
                    headers={"X-API-Key": self._api_key},
                )
            except (requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError) as exc:
                if body_attempt == 1:
                    _log.debug("GET %s: body cut short (%s); asking again", path,
                               type(exc).__name__)
                    continue
                raise self._network_error(exc) from None
            except requests.exceptions.RequestException as exc:
                raise self._network_error(exc) from None
            break
        _log.debug("GET %s -> %s", path, resp.status_code)
        if resp.status_code == 200:
            try:
                return resp.json()
            except ValueError:
                raise _address_error(
                    ApiError, f"The Topaz API at {self._host} answered GET {path} with "
                    "something that is not JSON", status_code=200) from None
        raise self._api_error(resp, path, pid=pid, side=side)

    def _network_error(self, exc: BaseException) -> ServerError:
        """One line for a request that never got an answer, saying what to check."""
        reason: BaseException = exc
        # requests wraps urllib3's MaxRetryError, which wraps the real cause.
        for _ in range(8):
            inner = getattr(reason, "reason", None)
            if not isinstance(inner, BaseException):
                inner = reason.args[0] if reason.args else None
            if not isinstance(inner, BaseException) or inner is reason:
                break
            reason = inner
        kind = type(reason).__name__
        _log.debug("network error on %s: %s", self._host, kind)
        if isinstance(exc, (requests.exceptions.ChunkedEncodingError,
                            requests.exceptions.ContentDecodingError)):
            return ServerError(
                f"The answer of the Topaz API at {self._host} was cut short, even after "
                "retrying; try again, and check the network if it keeps happening",
                status_code=None)
        if isinstance(reason, NameResolutionError) or _is_gaierror(reason):
            what = "its name does not resolve (offline, or a typo in the address?)"
        elif is_unreachable(reason) and _refused(reason):
            what = "the connection was refused (nothing listens at that address)"
        elif is_unreachable(reason) or isinstance(exc, requests.exceptions.ConnectTimeout):
            what = f"no connection within {self._connect_timeout:g} s"
        elif isinstance(exc, requests.exceptions.Timeout) or "Timeout" in kind:
            return ServerError(
                f"The Topaz API at {self._host} sent no answer within {self._timeout:g} s, "
                "even after retrying; try again later, or pass a larger timeout=",
                status_code=None)
        else:
            what = f"the connection failed ({kind})"
        return _address_error(ServerError, f"Could not reach the Topaz API at {self._host}: "
                              f"{what}", status_code=None)

    def _clean(self, text: str, limit: int = 200) -> str:
        """Server-sent text made safe to show: no key, no presigned query, one line."""
        return _text.one_line(scrub_urls(text.replace(self._api_key, "<key>")), limit)

    def _server_message(self, resp: requests.Response) -> str | None:
        try:
            body = resp.json()
        except ValueError:
            return None
        msg = body.get("message") if isinstance(body, dict) else None
        if not isinstance(msg, str) or not msg.strip():
            return None
        return self._clean(msg)

    def _api_error(self, resp: requests.Response, path: str, *,
                   pid: str | None, side: Side | None) -> ApiError:
        code = resp.status_code
        server = self._server_message(resp)
        said = f"{code} {server or self._clean(resp.reason or '', 80)}".strip()
        kw: dict[str, Any] = {"status_code": code, "server_message": server,
                              "process_id": pid}
        what = f"the {side} of {pid}" if side and pid else (pid or "the status list")
        if code == 400:
            return BadRequest(
                f"The Topaz API rejected the request for {what} ({said}); check the process ID",
                **kw)
        if code in (401, 403):
            verb = "did not accept the API key" if code == 401 else "refused the API key"
            return AuthenticationError(
                f"The Topaz API {verb} ({said}); check the key: {_KEY_HINT}", **kw)
        if code == 404 and not pid:
            return _address_error(
                NotFound, f"The Topaz API at {self._host} has no {path} ({said})", **kw)
        if code == 404:
            return _phrased(NotFound("", **kw))
        if code == 409 and side == "output" and pid:
            return self._not_ready(pid, **kw)
        if code == 429:
            return RateLimited(
                f"The Topaz API is limiting requests ({said}), still after "
                f"{self._attempts()}; wait a minute, then try again", **kw)
        if 500 <= code < 600:
            return ServerError(
                f"The Topaz API at {self._host} failed ({said}), still after "
                f"{self._attempts()}; try again later", **kw)
        if 300 <= code < 400:
            target = urlsplit(resp.headers.get("Location", "")).netloc.rpartition("@")[2]
            return _address_error(
                ApiError, f"The Topaz API at {self._host} redirected GET {path} to "
                f"{self._clean(target, 80) or 'elsewhere'}, which is not followed", **kw)
        return ApiError(f"The Topaz API answered GET {path} with {said}", **kw)

    def _attempts(self) -> str:
        n = self._retries + 1
        return "1 attempt" if n == 1 else f"{n} attempts"

    def _not_ready(self, pid: str, **kw: Any) -> NotReady:
        """409 on an output: ask the status, so the error says why and what next."""
        try:
            st: Status | None = self.status(pid)
        except TopazError as exc:
            _log.debug("status of %s unavailable after 409: %s", pid, type(exc).__name__)
            st = None
        return _phrased(NotReady(
            "",
            status=st.status if st else None,
            progress=st.progress if st else None,
            eta=st.eta if st else None,
            reason=st.reason if st else None,
            **kw,
        ))


_E = TypeVar("_E", bound=TopazError)


def _listed(item: Any) -> Status | None:
    """One entry of the API's list as a :class:`Status` with its canonical process
    ID; ``None`` for an entry that is not a process (no ID that is a UUID)."""
    if not isinstance(item, dict):
        return None
    try:
        pid = check_process_id(item.get("process_id"))
    except TopazError:
        return None
    st = Status.from_json(item)
    return st if st.process_id == pid else replace(st, process_id=pid)


def _newest_first(st: Status) -> float:
    return -(st.creation_time.timestamp() if st.creation_time is not None else 0.0)


def parse_status(value: str) -> str:
    """``"failed"`` → ``"Failed"``: a status name in the API's spelling, or
    :class:`InvalidFilter` naming the ones there are."""
    for name in STATUSES:
        if isinstance(value, str) and value.strip().lower() == name.lower():
            return name
    raise InvalidFilter(f"{value!r} is not a process status: use one of {', '.join(STATUSES)}")


def parse_since(value: str | float | _dt.timedelta | _dt.datetime,
                now: _dt.datetime | None = None) -> _dt.datetime:
    """The aware UTC time ``value`` reaches back to: ``"2h"`` is two hours before now.

    Durations are a number with ``s``, ``m``/``min``, ``h`` or ``d``; anything
    else, a negative one, or one past the API's 7-day retention is
    :class:`InvalidFilter`.
    """
    now = now or _dt.datetime.now(_dt.timezone.utc)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise InvalidFilter("since needs a timezone-aware datetime (for example "
                                "datetime.now(timezone.utc) - timedelta(hours=2))")
        return value
    if isinstance(value, _dt.timedelta):
        span = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        span = _dt.timedelta(seconds=value)
    else:
        match = _SINCE.match(value) if isinstance(value, str) else None
        if match is None:
            raise InvalidFilter(f"{value!r} is not a duration: use a number with s, m, h or d, "
                                "such as 30m, 2h or 3d")
        span = _dt.timedelta(seconds=float(match[1]) * _UNITS[match[2].lower()])
    if span < _dt.timedelta(0):
        raise InvalidFilter(f"since must reach back in time, not forward ({value!r})")
    if span > RETENTION:
        raise InvalidFilter(f"since reaches back {_text.duration(span.total_seconds())}, "
                            "past the 7 days the API keeps processes: use 7d or less")
    return now - span


def _phrased(exc: _E) -> _E:
    """``exc`` with its message set by :func:`_text.say` for a library call.

    Built from the data the error carries, so the entry points that rephrase
    it for their own place say the same thing in their own words.
    """
    exc.args = (_text.say(exc, "python"),)
    return exc


def _address_error(cls: type[_E], problem: str, **kw: Any) -> _E:
    """An error whose likely cure is another API address.

    ``problem`` says what happened; the next step, which names the address
    setting, is added by :func:`_text.say` in the words of each place.
    """
    exc = cls("", **kw)
    exc.address_problem = problem
    return _phrased(exc)


def _is_gaierror(exc: BaseException) -> bool:
    import socket

    seen: BaseException | None = exc
    for _ in range(4):
        if isinstance(seen, socket.gaierror):
            return True
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
    return False


def _refused(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(4):
        if isinstance(seen, ConnectionRefusedError) or (
                isinstance(seen, OSError) and seen.errno == errno.ECONNREFUSED):
            return True
        if seen is not None and "refused" in str(seen).lower():
            return True
        seen = (seen.__cause__ or seen.__context__) if seen is not None else None
    return False
