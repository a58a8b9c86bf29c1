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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

__all__ = ["workers"]


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
