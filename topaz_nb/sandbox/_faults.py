"""Fault injection: the misbehaviour a real network and a real API show.

Faults are kept in the order they were injected.  For each request the
matching ``latency`` faults all apply (their delays add up), then the first
matching fault of any other kind decides the answer; every fault applied uses
up one of its ``times``.  That lets a test combine "slow" with "then fail".

Most faults change how an answer travels (late, cut, dropped, refused); the
``listing`` fault changes what the API's list of processes says, so the API
route applies it (it is handed the request's decisive fault), on
``GET /status`` only, in one of :data:`LISTING_MODES`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

SERVERS = ("api", "storage")

LISTING_MODES = ("endless", "stuck_cursor", "bad_entry", "overlap")
"""How a ``listing`` fault bends ``GET /status?paginated=true``: ``endless`` always
announces a next page, with a cursor never sent before (empty pages past the
end); ``stuck_cursor`` announces one and hands back the cursor it was given;
``bad_entry`` adds an entry whose process ID is not a UUID to the page;
``overlap`` starts each page with the last entry of the one before."""

# kind -> (required params, optional params, servers it makes sense on)
_KINDS: dict[str, tuple[frozenset[str], frozenset[str], tuple[str, ...]]] = {
    "latency": (frozenset({"seconds"}), frozenset(), SERVERS),
    "status": (frozenset({"code"}), frozenset({"retry_after", "message"}), SERVERS),
    "truncate": (frozenset({"after_bytes"}), frozenset(), SERVERS),
    "drop": (frozenset(), frozenset(), SERVERS),
    "expire": (frozenset(), frozenset(), ("storage",)),
    "omit_headers": (frozenset({"headers"}), frozenset(), SERVERS),
    "redirect": (frozenset({"location"}), frozenset({"code"}), SERVERS),
    "cut_by_close": (frozenset({"after_bytes"}), frozenset(), SERVERS),
    "storage_error": (frozenset(), frozenset({"error", "code", "message", "dialect"}),
                      ("storage",)),
    "listing": (frozenset({"mode"}), frozenset(), ("api",)),
    "gather": (frozenset({"count"}), frozenset({"timeout"}), SERVERS),
    "hang": (frozenset(), frozenset({"after_bytes", "timeout"}), SERVERS),
    "ignore_range": (frozenset(), frozenset(), ("storage",)),
    "change_etag": (frozenset(), frozenset({"etag"}), ("storage",)),
}
_ANY_KIND = frozenset({"range"})
"""Optional on every kind: ``range``, the exact ``Range`` header a request must
carry for the fault to apply (one part of a ranged download)."""
DIALECTS = ("s3", "gcs", "none")
"""How a ``storage_error`` fault words its document: S3's XML, Google Cloud
Storage's XML API, or no XML at all (an HTML page, as a proxy or CDN sends)."""


@dataclass
class Fault:
    """One injected fault; ``remaining`` is ``None`` for "until cleared"."""

    kind: str
    server: str
    path: str | None
    remaining: int | None
    params: dict[str, Any] = field(default_factory=dict)
    released: threading.Event = field(default_factory=threading.Event, repr=False,
                                      compare=False)
    _arrivals: threading.Condition = field(default_factory=threading.Condition, repr=False,
                                           compare=False)
    _arrived: int = field(default=0, repr=False, compare=False)

    def matches(self, server: str, path: str, range_header: str | None = None) -> bool:
        if self.kind == "listing" and not path.rstrip("/").endswith("/status"):
            return False  # the list of processes only, never one process's status
        wanted_range = self.params.get("range")
        if wanted_range is not None and (range_header or "").strip() != wanted_range:
            return False
        return (self.server == server and (self.remaining is None or self.remaining > 0)
                and (self.path is None or self.path in path))

    def gather(self) -> bool:
        """For a ``gather`` fault: count this answer as arrived and wait until
        ``count`` have; ``False`` when they did not within ``timeout`` seconds
        (the caller then drops the connection, so a test sees it failed)."""
        count = int(self.params["count"])
        with self._arrivals:
            self._arrived += 1
            self._arrivals.notify_all()
            return self._arrivals.wait_for(
                lambda: self._arrived >= count or self.released.is_set(),
                float(self.params.get("timeout") or 30.0)) and self._arrived >= count

    def hold(self) -> None:
        """For a ``hang`` fault: keep the answer unfinished until the faults are
        cleared (or the sandbox stops), at most ``timeout`` seconds."""
        self.released.wait(float(self.params.get("timeout") or 120.0))


def make_fault(kind: str, server: str, times: int | None, path: str | None,
               params: dict[str, Any]) -> Fault:
    """Check a fault's arguments now, so a typo fails at ``inject`` and not mid-test."""
    if kind not in _KINDS:
        raise ValueError(f"unknown fault kind {kind!r}: use one of {', '.join(_KINDS)}")
    required, optional, servers = _KINDS[kind]
    if server not in servers:
        raise ValueError(f"fault {kind!r} applies to server {' or '.join(map(repr, servers))},"
                         f" not {server!r}")
    missing = required - params.keys()
    if missing:
        raise TypeError(f"fault {kind!r} needs {', '.join(sorted(missing))}=")
    extra = params.keys() - required - optional - _ANY_KIND
    if extra:
        raise TypeError(f"fault {kind!r} takes no {', '.join(sorted(extra))}=")
    if times is not None and times < 1:
        raise ValueError(f"times must be a positive count or None, not {times!r}")
    if kind == "status" and not 100 <= int(params["code"]) <= 599:
        raise ValueError(f"status code must be 100..599, not {params['code']!r}")
    if kind == "storage_error":
        dialect = params.get("dialect") or "s3"
        if dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}, not {dialect!r}")
        if dialect != "none" and not params.get("error"):
            raise TypeError(f"fault 'storage_error' needs error= (the XML Code) for the "
                            f"{dialect} dialect")
        if not 400 <= int(params.get("code") or 403) <= 599:
            raise ValueError(f"status code must be 400..599, not {params['code']!r}")
    if kind == "listing" and params["mode"] not in LISTING_MODES:
        raise ValueError(f"listing mode must be one of {', '.join(LISTING_MODES)}, "
                         f"not {params['mode']!r}")
    if kind == "gather" and int(params["count"]) < 1:
        raise ValueError(f"gather count must be 1 or more, not {params['count']!r}")
    if kind == "omit_headers":
        if isinstance(params["headers"], str):
            raise TypeError("omit_headers takes headers=[...], a list of header names")
        params = {"headers": frozenset(h.lower() for h in params["headers"])}
    return Fault(kind, server, path, times, dict(params))


@dataclass
class Plan:
    """What one request should suffer: a total delay and at most one decisive fault."""

    delay: float = 0.0
    fault: Fault | None = None


class FaultBook:
    """The sandbox's fault list, shared by the handler threads of both servers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            for fault in self._faults:
                fault.released.set()  # wakes the answers a gather or hang holds
            self._faults.clear()

    def plan(self, server: str, path: str, range_header: str | None = None) -> Plan:
        plan = Plan()
        with self._lock:
            for fault in self._faults:
                if not fault.matches(server, path, range_header):
                    continue
                if fault.kind == "latency":
                    plan.delay += float(fault.params["seconds"])
                elif plan.fault is None:
                    plan.fault = fault
                else:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
            self._faults = [f for f in self._faults if f.remaining is None or f.remaining > 0]
        return plan
