"""The one retry policy of topaz-nb: urllib3's ``Retry`` inside time budgets.

Both hosts (the API, through :class:`~topaz_nb.api.client.TopazClient`, and
object storage, through :class:`~topaz_nb.storage.transfer.Transfer`) mount a
:class:`BoundedRetry` made by :func:`make_retry` on their ``HTTPAdapter``, so
they wait and give up the same way.  Plain ``Retry`` would not do for a
notebook:

* **Retry-After is capped.**  urllib3 sleeps whatever a server asks; one
  ``Retry-After: 86400`` and a cell hangs for a day per retry.  Each wait that
  comes from the header is cut to ``max_retry_after`` seconds
  (:data:`DEFAULT_MAX_RETRY_AFTER`, the ``Topaz.max_retry_after`` setting).
* **One request has one time budget.**  From the first failure of a request,
  all its waits and new attempts end after ``max_time`` seconds; no attempt
  starts after that, whatever the retry counters still allow.
* **An unreachable host is reported in seconds.**  A name that does not
  resolve, a refused connection or a connect timeout means "cannot reach the
  host at all" (offline, a typo in the URL).  Such errors get at most
  ``unreachable_retries`` quick retries inside ``unreachable_time`` seconds
  instead of the long exponential backoff that 429 and 5xx deserve, so the
  first line of feedback comes within :data:`UNREACHABLE_TIME` seconds.
* **Ctrl-C works.**  Waits are ``time.sleep`` in the calling thread, which a
  KeyboardInterrupt ends at once; no wait is longer than its cap.

``sleep`` and ``clock`` can be given per policy (tests pass a recorder and a
fake clock); when they are not, the module's :func:`_sleep` and
:func:`_clock` are looked up at call time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

from urllib3.exceptions import ConnectTimeoutError, InvalidHeader, ProxyError
from urllib3.util.retry import Retry

__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_MAX_RETRY_AFTER",
    "DEFAULT_MAX_RETRY_TIME",
    "RETRY_STATUSES",
    "UNREACHABLE_TIME",
    "BoundedRetry",
    "is_unreachable",
    "make_retry",
]

DEFAULT_MAX_RETRY_AFTER = 60.0
"""Longest single wait a ``Retry-After`` header can ask for, in seconds."""
DEFAULT_MAX_RETRY_TIME = 60.0
"""Time budget for all the retries of one request, in seconds."""
UNREACHABLE_TIME = 4.0
"""Budget for retrying a host that cannot be reached at all (offline, DNS)."""
UNREACHABLE_RETRIES = 2
"""Retries of a host that cannot be reached at all: a blip, not an outage."""
UNREACHABLE_WAIT = 1.0
"""Longest single wait before retrying a host that cannot be reached."""
CONNECT_TIMEOUT = 3.05
"""Seconds to wait for a TCP connection (just over the 3 s SYN retransmit)."""
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Answers worth asking again: rate limiting and server-side failures."""


def _sleep(seconds: float) -> None:
    """The default wait: in the calling thread, so Ctrl-C interrupts it."""
    time.sleep(seconds)


def _clock() -> float:
    """The default clock of the budgets (monotonic: immune to clock changes)."""
    return time.monotonic()


def is_unreachable(error: BaseException | None) -> bool:
    """The error means the host could not be reached at all.

    urllib3 raises ``NameResolutionError`` for a name that does not resolve
    and ``NewConnectionError`` for a refused connection; both are
    ``ConnectTimeoutError`` subclasses, like a connect timeout itself.
    """
    if isinstance(error, ProxyError):
        error = getattr(error, "original_error", error)
    return isinstance(error, ConnectTimeoutError)


_OWN = ("max_time", "max_retry_after", "unreachable_time", "unreachable_retries",
        "deadline", "unreachable_deadline", "sleep_func", "clock")


class BoundedRetry(Retry):
    """urllib3 ``Retry`` whose waiting is capped, budgeted and quick to give up offline.

    ``max_time`` is the budget of one request from its first failure;
    ``max_retry_after`` caps each wait a ``Retry-After`` header asks for;
    ``unreachable_retries``/``unreachable_time`` bound the retrying of a host
    that cannot be reached.  ``deadline`` and ``unreachable_deadline`` are set
    by :meth:`increment` on the copies urllib3 makes per request; the policy
    mounted on an adapter never has them, so one request's budget is never
    another's.
    """

    def __init__(self, *args: Any, max_time: float = DEFAULT_MAX_RETRY_TIME,
                 max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
                 unreachable_time: float = UNREACHABLE_TIME,
                 unreachable_retries: int = UNREACHABLE_RETRIES,
                 deadline: float | None = None, unreachable_deadline: float | None = None,
                 sleep_func: Callable[[float], None] | None = None,
                 clock: Callable[[], float] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_time = max(0.0, float(max_time))
        self.max_retry_after = max(0.0, float(max_retry_after))
        self.unreachable_time = max(0.0, float(unreachable_time))
        self.unreachable_retries = max(0, int(unreachable_retries))
        self.deadline = deadline
        self.unreachable_deadline = unreachable_deadline
        self.sleep_func = sleep_func
        self.clock = clock

    def new(self, **kw: Any) -> BoundedRetry:
        for name in _OWN:
            kw.setdefault(name, getattr(self, name))
        return super().new(**kw)

    # -- time --------------------------------------------------------------

    def _now(self) -> float:
        return (self.clock or _clock)()

    def time_left(self) -> float:
        """Seconds left of this request's budget (all of it before the first failure)."""
        now = self._now()
        left = self.max_time if self.deadline is None else self.deadline - now
        if self._last_unreachable():
            budget = self.unreachable_time if self.unreachable_deadline is None \
                else self.unreachable_deadline - now
            left = min(left, budget)
        return max(0.0, left)

    def _last_unreachable(self) -> bool:
        return bool(self.history) and is_unreachable(self.history[-1].error)

    def _unreachable_count(self) -> int:
        return sum(1 for h in self.history if is_unreachable(h.error))

    # -- urllib3 hooks -----------------------------------------------------

    def increment(self, method: str | None = None, url: str | None = None,
                  *args: Any, **kwargs: Any) -> BoundedRetry:
        """Start the budgets at a request's first failure, then count as urllib3 does."""
        error = kwargs.get("error", args[1] if len(args) > 1 else None)
        start: BoundedRetry = self
        now = self._now()
        if start.deadline is None:
            start = start.new(deadline=now + self.max_time)
        if is_unreachable(error) and start.unreachable_deadline is None:
            start = start.new(unreachable_deadline=now + self.unreachable_time)
        return Retry.increment(start, method, url, *args, **kwargs)  # type: ignore[return-value]

    def is_exhausted(self) -> bool:
        if super().is_exhausted():
            return True
        now = self._now()
        if self.deadline is not None and now >= self.deadline:
            return True
        if self._last_unreachable():
            if self._unreachable_count() > self.unreachable_retries:
                return True
            if self.unreachable_deadline is not None and now >= self.unreachable_deadline:
                return True
        return False

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.max_retry_after)

    def get_backoff_time(self) -> float:
        backoff = super().get_backoff_time()
        if self._last_unreachable():
            backoff = min(backoff, UNREACHABLE_WAIT)
        return backoff

    def sleep(self, response: Any = None) -> None:
        """Wait before the next attempt: Retry-After (capped) or backoff, within the budget."""
        wait: float | None = None
        if self.respect_retry_after_header and response is not None:
            try:
                wait = self.get_retry_after(response)
            except InvalidHeader:
                wait = None
        if wait is None:
            wait = self.get_backoff_time()
        wait = min(wait, self.time_left())
        if wait > 0:
            (self.sleep_func or _sleep)(wait)


def make_retry(retries: int, *, methods: Collection[str], backoff_factor: float = 0.5,
               backoff_max: float = 30.0, max_time: float = DEFAULT_MAX_RETRY_TIME,
               max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
               other: int | None = None) -> BoundedRetry:
    """The package's retry policy for ``retries`` retries of ``methods``.

    Connection errors, 429 and 5xx are retried with jittered exponential
    backoff (never longer than ``backoff_max`` or the budget); the final
    error answer is returned to the caller, not raised, so it can be turned
    into a message that quotes it.
    """
    retries = max(0, int(retries))
    return BoundedRetry(
        total=retries, connect=retries, read=retries, status=retries, other=other,
        allowed_methods=frozenset(m.upper() for m in methods),
        status_forcelist=RETRY_STATUSES,
        backoff_factor=max(0.0, backoff_factor),
        backoff_jitter=max(0.0, backoff_factor) / 2,
        backoff_max=max(0.0, min(backoff_max, max_time)),
        respect_retry_after_header=True,
        raise_on_status=False,
        max_time=max_time,
        max_retry_after=max_retry_after,
    )
