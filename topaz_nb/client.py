"""The Topaz Image API, as far as reviewing results needs it: status and links.

:class:`TopazClient` is the only object that holds the API key.  It sends the
key as the ``X-API-Key`` header on each request to the API host and nowhere
else: redirects are not followed, so the header can never travel to another
host.  What it hands out are typed values: :class:`Status` and
:class:`~topaz_nb.links.Link`, whose presigned URLs the transfer layer fetches
without the key.

Transient failures (connection errors, 429, 5xx) are retried by urllib3's
``Retry`` with jittered exponential backoff and ``Retry-After`` honoured, all
inside a time budget, so a notebook cell never hangs for long.  Every other
answer becomes one of the classes in :mod:`topaz_nb.errors`, with a one-line
message that says what to do next.

Presigned links last an hour; asking for one costs a request, so links are
kept per ``(process_id, side)`` and reused until ``link_margin`` seconds before
they expire, which leaves time for a long download to finish on the same link.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ._version import __version__
from ._ids import check_process_id
from .errors import (
    ApiError,
    AuthenticationError,
    BadRequest,
    MissingApiKey,
    NotFound,
    NotReady,
    ProcessFailed,
    RateLimited,
    ServerError,
    TopazError,
    WaitTimeout,
)
from .links import Link, LinkSource, Side, redact_url

__all__ = ["DEFAULT_BASE_URL", "Status", "TopazClient"]

DEFAULT_BASE_URL = "https://api.topazlabs.com/image/v1"

_log = logging.getLogger("topaz_nb.client")

_KEY_HINT = "pass api_key=..., set TOPAZ_API_KEY, or run %topaz login"
_TERMINAL = frozenset({"Completed", "Failed", "Cancelled"})
_RETRY_STATUSES = (429, 500, 502, 503, 504)
# The spec allows at most 100 statuses per page; fewer pages, fewer requests.
_PAGE_LIMIT = 100
# Pacing of wait(): never faster than _POLL_MIN, never slower than _POLL_MAX.
_POLL_MIN = 0.5
_POLL_GROWTH = 1.5
_POLL_MAX = 10.0


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


@dataclass(frozen=True)
class Status:
    """One process as the Status endpoint reports it (``StatusResponse``).

    Times are aware UTC datetimes; fields the server left out are ``None``.
    ``raw`` keeps the whole answer for fields this class does not name.
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
            raw=dict(data),
        )

    def describe(self) -> str:
        """``Processing, 42%, ETA 12 s``: the short form used in messages."""
        text = f"{self.status}, {self.progress}%"
        if self.eta is not None and not self.terminal:
            left = (self.eta - _dt.datetime.now(_dt.timezone.utc)).total_seconds()
            text += f", ETA {_duration(left)}" if left > 0 else ", ETA passed"
        return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(0, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class _BoundedRetry(Retry):
    """urllib3 ``Retry`` whose waiting stops at a deadline.

    The deadline starts at the first failure of a request.  Backoff and
    ``Retry-After`` sleeps are cut to the time left, and no new attempt starts
    once it has passed, so a server asking for a long pause cannot stall a
    notebook beyond ``max_time`` (plus the attempts' own timeouts).
    """

    def __init__(self, *args: Any, max_time: float = 60.0,
                 deadline: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_time = max_time
        self.deadline = deadline

    def new(self, **kw: Any) -> _BoundedRetry:
        kw.setdefault("max_time", self.max_time)
        if self.deadline is None:
            kw.setdefault("deadline", time.monotonic() + self.max_time)
        else:
            kw.setdefault("deadline", self.deadline)
        return super().new(**kw)

    def _time_left(self) -> float:
        if self.deadline is None:
            return self.max_time
        return max(0.0, self.deadline - time.monotonic())

    def is_exhausted(self) -> bool:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return True
        return super().is_exhausted()

    def get_backoff_time(self) -> float:
        return min(super().get_backoff_time(), self._time_left())

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self._time_left())


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_URL_IN_TEXT = re.compile(r"https?://\S+")


class TopazClient:
    """Talks to the Topaz Image API host with one API key.

    ``api_key`` defaults to ``$TOPAZ_API_KEY`` and ``base_url`` to
    ``$TOPAZ_API_URL`` or :data:`DEFAULT_BASE_URL`.  ``timeout`` bounds each
    attempt; ``retries``, ``backoff_factor`` and ``max_retry_time`` bound the
    retrying of connection errors, 429 and 5xx.  Links are reused until
    ``link_margin`` seconds before they expire.

    Safe to share between threads fetching different sides of a process.
    """

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *,
                 timeout: float = 30.0, max_retry_time: float = 60.0, retries: int = 6,
                 backoff_factor: float = 0.5, link_margin: float = 300.0) -> None:
        key = api_key if api_key is not None else os.environ.get("TOPAZ_API_KEY", "")
        key = key.strip() if isinstance(key, str) else ""
        if not key:
            raise MissingApiKey(f"No Topaz API key: {_KEY_HINT}.")
        self._api_key = key
        url = base_url or os.environ.get("TOPAZ_API_URL", "").strip() or DEFAULT_BASE_URL
        url = url.rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TopazError(
                f"{redact_url(url)!r} is not an API address: expected a URL such as "
                f"{DEFAULT_BASE_URL!r} (check base_url or TOPAZ_API_URL)"
            )
        self._base_url = url
        self._host = parts.netloc.rpartition("@")[2]
        self._timeout = timeout
        self._retries = max(0, int(retries))
        self._link_margin = link_margin
        self._links: dict[tuple[str, Side], Link] = {}
        self._lock = threading.Lock()

        retry = _BoundedRetry(
            total=self._retries,
            backoff_factor=backoff_factor,
            backoff_jitter=backoff_factor / 2,
            backoff_max=max(0.0, min(30.0, max_retry_time)),
            status_forcelist=_RETRY_STATUSES,
            allowed_methods=frozenset({"GET"}),
            respect_retry_after_header=True,
            raise_on_status=False,
            max_time=max(0.0, max_retry_time),
        )
        self._session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._session.headers.update({
            "Accept": "application/json",
            "User-Agent": f"topaz-nb/{__version__} {requests.utils.default_user_agent()}",
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

    def __enter__(self) -> TopazClient:
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
        raise ApiError(
            f"The Topaz API at {self._host} sent an unexpected answer for the {side} link "
            f"of {pid} (no download_url, head_url and expiry); check base_url",
            status_code=200,
        )

    # ------------------------------------------------------------------ status

    def status(self, process_id: str) -> Status:
        """The current state of one process."""
        pid = check_process_id(process_id)
        data = self._get_json(f"/status/{pid}", pid=pid)
        if not isinstance(data, dict):
            raise ApiError(
                f"The Topaz API at {self._host} sent an unexpected status answer for {pid}; "
                "check base_url",
                status_code=200,
            )
        return Status.from_json(data)

    def statuses(self) -> list[Status]:
        """Every process the key can see (up to 7 days old), following all pages."""
        return list(self._iter_statuses())

    def _iter_statuses(self) -> Iterator[Status]:
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            params: dict[str, Any] = {"paginated": "true", "limit": _PAGE_LIMIT}
            if cursor:
                params["cursor"] = cursor
            data = self._get_json("/status", params=params)
            page: dict[str, Any]
            if isinstance(data, list):  # a server that ignores pagination
                items, page = data, {}
            elif isinstance(data, dict) and isinstance(data.get("data"), list):
                items, page = data["data"], data.get("pagination") or {}
            else:
                raise ApiError(
                    f"The Topaz API at {self._host} sent an unexpected list of statuses; "
                    "check base_url",
                    status_code=200,
                )
            for item in items:
                if isinstance(item, dict):
                    yield Status.from_json(item)
            cursor = page.get("next_cursor") if isinstance(page, dict) else None
            if not (isinstance(page, dict) and page.get("has_next_page")) \
                    or not isinstance(cursor, str) or not cursor or cursor in seen:
                return
            seen.add(cursor)

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
                verb = "was cancelled" if st.status == "Cancelled" else "failed"
                raise ProcessFailed(
                    f"Process {pid} {verb} and has no output; check its settings "
                    "and input, then start it again",
                    status=st.status,
                )
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise WaitTimeout(
                    f"Process {pid} is still {st.describe()} after {now - started:.0f} s; "
                    "wait longer (a larger timeout) or check later with "
                    f"%topaz {pid}"
                )
            pause = delay
            if st.eta is not None:
                left = (st.eta - _dt.datetime.now(_dt.timezone.utc)).total_seconds()
                pause = max(left, delay)
            pause = min(pause, _POLL_MAX)
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - now))
            delay = min(delay * _POLL_GROWTH, _POLL_MAX)
            time.sleep(pause)

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
                    url, params=params, timeout=self._timeout, allow_redirects=False,
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
                raise ApiError(
                    f"The Topaz API at {self._host} answered GET {path} with something "
                    "that is not JSON; check base_url",
                    status_code=200,
                ) from None
        raise self._api_error(resp, path, pid=pid, side=side)

    def _network_error(self, exc: BaseException) -> ServerError:
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
        if isinstance(exc, requests.exceptions.Timeout) or "Timeout" in kind:
            what = f"no answer within {self._timeout:g} s"
        elif isinstance(exc, (requests.exceptions.ChunkedEncodingError,
                              requests.exceptions.ContentDecodingError)):
            what = "the answer was cut short"
        else:
            what = f"connection failed ({kind})"
        _log.debug("network error on %s: %s", self._host, kind)
        return ServerError(
            f"Could not reach the Topaz API at {self._host}: {what}, even after retrying; "
            "check the network, or TOPAZ_API_URL",
            status_code=None,
        )

    def _server_message(self, resp: requests.Response) -> str | None:
        try:
            body = resp.json()
        except ValueError:
            return None
        msg = body.get("message") if isinstance(body, dict) else None
        if not isinstance(msg, str) or not msg.strip():
            return None
        msg = msg.replace(self._api_key, "<key>")
        msg = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), msg)
        return _one_line(msg)

    def _api_error(self, resp: requests.Response, path: str, *,
                   pid: str | None, side: Side | None) -> ApiError:
        code = resp.status_code
        server = self._server_message(resp)
        said = f"{code} {server or resp.reason or ''}".strip()
        kw: dict[str, Any] = {"status_code": code, "server_message": server}
        what = f"the {side} of {pid}" if side and pid else (pid or "the status list")
        if code == 400:
            return BadRequest(
                f"The Topaz API rejected the request for {what} ({said}); check the process ID",
                **kw)
        if code in (401, 403):
            verb = "did not get a valid API key" if code == 401 else "refused the API key"
            return AuthenticationError(
                f"The Topaz API {verb} ({said}); check the key: {_KEY_HINT}", **kw)
        if code == 404 and not pid:
            return NotFound(f"The Topaz API at {self._host} has no {path} ({said}); "
                            "check base_url", **kw)
        if code == 404:
            return NotFound(
                f"Process {pid} was not found ({said}): unknown process ID, or older "
                "than the 7-day retention; list current ones with TopazClient.statuses()",
                **kw)
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
            return ApiError(
                f"The Topaz API at {self._host} redirected GET {path} to "
                f"{target or 'elsewhere'}, which is not followed; check base_url", **kw)
        return ApiError(f"The Topaz API answered GET {path} with {said}", **kw)

    def _attempts(self) -> str:
        n = self._retries + 1
        return "1 attempt" if n == 1 else f"{n} attempts"

    def _not_ready(self, pid: str, **kw: Any) -> NotReady:
        try:
            st: Status | None = self.status(pid)
        except TopazError as exc:
            _log.debug("status of %s unavailable after 409: %s", pid, type(exc).__name__)
            st = None
        next_step = f"Use %topaz {pid} --wait, or TopazClient.wait()."
        if st is None:
            text = f"Output of {pid} is not ready yet. {next_step}"
        elif st.terminal and not st.done:
            text = (f"Output of {pid} does not exist: the process is {st.status}. "
                    "Start it again to get an output.")
        else:
            text = f"Output of {pid} is not ready: {st.describe()}. {next_step}"
        return NotReady(
            text,
            status=st.status if st else None,
            progress=st.progress if st else None,
            eta=st.eta if st else None,
            **kw,
        )
