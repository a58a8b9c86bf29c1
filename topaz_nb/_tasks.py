"""Worker threads that Ctrl-C can stop.

A user who presses Ctrl-C, or the notebook's interrupt button, expects the
cell to stop at once.  Python delivers that as :class:`KeyboardInterrupt` in
the main thread only; worker threads that are downloading go on, and a
:class:`~concurrent.futures.ThreadPoolExecutor` used as a context manager
waits for all of them on the way out (``shutdown(wait=True)``), which is how a
fetch used to survive two Ctrl-Cs.

:func:`workers` is the pool every fetch uses instead.  When its block is left
by an exception (the interrupt, or an error in one task), it sets the shared
``cancel`` event, which the transfer layer checks between chunks and while
waiting for bytes, drops the tasks not yet started, and returns without
joining the threads: they notice the event within a second, keep their
``.part`` files for a later resume, and end on their own.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .errors import Cancelled

__all__ = ["POLL_SECONDS", "cancellable", "child_event", "shared_pool", "workers"]

POLL_SECONDS = 0.25
"""How often a waiting thread looks at its ``cancel`` event."""

_T = TypeVar("_T")


_POOLS: dict[str, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def shared_pool(name: str, max_workers: int) -> ThreadPoolExecutor:
    """The process-wide pool named ``name``, made on first use, never at import.

    For work that outlives one call (tiles, builds ahead, cache writes).  Its
    threads are joined by :mod:`concurrent.futures` at interpreter exit.
    """
    with _POOLS_LOCK:
        pool = _POOLS.get(name)
        if pool is None:
            pool = _POOLS[name] = ThreadPoolExecutor(max_workers=max_workers,
                                                     thread_name_prefix=name)
        return pool


class _ChildEvent(threading.Event):
    """An event that also counts as set once its parent is.

    Setting it leaves the parent alone, so one process of a batch can stop
    its own downloads (one side failed) without stopping the batch, while
    Ctrl-C on the batch still reaches every process.
    """

    def __init__(self, parent: threading.Event) -> None:
        super().__init__()
        self._parent = parent

    def is_set(self) -> bool:
        return super().is_set() or self._parent.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        # Wake up in short slices so that the parent being set is seen too.
        remaining = timeout
        while not self.is_set():
            if remaining is not None and remaining <= 0:
                return False
            step = 0.05 if remaining is None else min(0.05, remaining)
            super().wait(step)
            if remaining is not None:
                remaining -= step
        return True


def child_event(parent: threading.Event | None) -> threading.Event:
    """A fresh cancel event for one task, also set whenever ``parent`` is."""
    return threading.Event() if parent is None else _ChildEvent(parent)


@contextlib.contextmanager
def workers(max_workers: int, name: str,
            cancel: threading.Event) -> Iterator[ThreadPoolExecutor]:
    """A thread pool whose block can be left at once; ``cancel`` is set when it is.

    On a normal exit the pool is shut down after its tasks, as usual.  On any
    exception, ``KeyboardInterrupt`` included, ``cancel`` is set, pending
    tasks are dropped and the exception propagates without waiting.
    """
    pool = ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix=name)
    try:
        yield pool
    except BaseException:
        cancel.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)

def cancellable(work: Callable[[], _T], cancel: threading.Event | None, message: str) -> _T:
    """Run ``work`` (a blocking request) so that ``cancel`` interrupts the wait.

    The request runs on a helper thread; when cancelled, its answer (a
    response, if it has ``close``) is closed whenever it comes and the caller
    gets :class:`~topaz_nb.errors.Cancelled` at once.  Without ``cancel`` the
    work simply runs in the calling thread.
    """
    if cancel is None:
        return work()
    if cancel.is_set():
        raise Cancelled(message)
    box: dict[str, Any] = {}
    finished = threading.Event()
    abandoned = threading.Event()
    guard = threading.Lock()

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc
        with guard:
            finished.set()
            if abandoned.is_set() and "value" in box:
                with contextlib.suppress(Exception):
                    box["value"].close()

    threading.Thread(target=run, name="topaz-transfer-request", daemon=True).start()
    while not finished.wait(POLL_SECONDS):
        if cancel.is_set():
            with guard:
                if not finished.is_set():
                    abandoned.set()
                    raise Cancelled(message)
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]
