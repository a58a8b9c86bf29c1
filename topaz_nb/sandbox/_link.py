"""A shaped link: the storage host at the speed real object storage has.

Over loopback, bytes are free, so a downloader that opens four connections
looks no better than one that opens one.  Real object storage caps one HTTP
stream (about 25 MB/s per connection), shares a link among all of a client's
connections (about 100 MB/s), and takes about 20 ms before the first byte.
:class:`Link` says those three numbers; the storage server then paces every
body it sends through a :class:`_Shaper`: one bucket per connection and one
bucket shared by all the server's handler threads, and it waits ``latency``
before each answer.

The buckets keep virtual time rather than tokens: sending ``n`` bytes at
``rate`` bytes/s occupies a bucket for ``n / rate`` seconds, starting when the
bucket is next free (or now, if it has been idle: idle time is never banked, so
there is no burst above the rate).  A piece leaves once both its buckets have
served it.  The clock and the sleep are the link's own, so a test can replace
them and read the waits the shaper asked for instead of timing anything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Link"]


@dataclass(frozen=True)
class Link:
    """How fast the storage host sends: bytes/s per connection and over all
    connections together, and the wait before each answer's first byte.

    ``None`` for a rate means no cap of that kind.  ``clock`` (monotonic
    seconds) and ``sleep`` default to :mod:`time`'s; tests pass fakes::

        Sandbox(link=Link(per_connection=25e6, shared=100e6, latency=0.02))
    """

    per_connection: float | None = None
    shared: float | None = None
    latency: float = 0.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("per_connection", "shared"):
            rate = getattr(self, name)
            if rate is not None and not rate > 0:
                raise ValueError(f"Link {name} must be a positive number of bytes per second "
                                 f"or None for no cap, not {rate!r}")
        if not self.latency >= 0:
            raise ValueError(f"Link latency must be zero or more seconds, not {self.latency!r}")


_CATCH_UP = 0.005
"""A bucket this few seconds behind its schedule keeps it, rather than restarting
from now: a sleep or a write always overshoots a little, and restarting would lose
that on every piece (a 25 MB/s link measured 23.6 MB/s).  Within a busy spell the
schedule itself is the bound, so no burst ever exceeds the rate."""


class _Bucket:
    """One rate: the virtual time at which it is next free."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.free_at = 0.0

    def reserve(self, size: int, now: float) -> float:
        """Book ``size`` bytes from now on; returns when they are through."""
        if self.rate is None:
            return now
        start = self.free_at if now - self.free_at <= _CATCH_UP else now
        self.free_at = start + size / self.rate
        return self.free_at


class _Pacer:
    """One connection's side of the link."""

    def __init__(self, shaper: _Shaper) -> None:
        self._shaper = shaper
        self._own = _Bucket(shaper.link.per_connection)

    def wait_for(self, size: int) -> float:
        """How long to wait before sending ``size`` more bytes (books them)."""
        return self._shaper.book(self._own, size)

    def pace(self, size: int) -> None:
        """Wait until ``size`` more bytes may leave on this connection."""
        wait = self.wait_for(size)
        if wait > 0:
            self._shaper.link.sleep(wait)


class _Shaper:
    """A :class:`Link` at work in one server: the shared bucket and its lock."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self._lock = threading.Lock()
        self._shared = _Bucket(link.shared)

    def connection(self) -> _Pacer:
        return _Pacer(self)

    def book(self, own: _Bucket, size: int) -> float:
        now = self.link.clock()
        done = own.reserve(size, now)
        with self._lock:
            done = max(done, self._shared.reserve(size, now))
        # The piece holds this connection until it has left.
        own.free_at = max(own.free_at, done)
        return done - now

    def first_byte(self) -> None:
        """Hold an answer for the link's latency before its status line."""
        if self.link.latency > 0:
            self.link.sleep(self.link.latency)
