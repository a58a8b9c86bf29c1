"""Link refresh: the link one operation uses, replaced at most once.

The storage layer never holds the API key.  It is handed a
:data:`~topaz_nb.links.LinkSource` instead, so when storage refuses a link (it
lasts an hour) it can ask for a fresh one exactly once, and nothing here can
leak the key or send it to a host that is not the API.  A second refusal of a
fresh link is final: asking again could only loop against a wrong clock or a
deleted image.
"""

from __future__ import annotations

import logging
import threading

from ..links import Link, LinkSource, Side

__all__ = ["LinkHolder"]

# Refreshes have always been logged as the transfer layer's; users filter by this name.
_log = logging.getLogger("topaz_nb.transfer")


class LinkHolder:
    """One operation's view of a link source: at most one refresh, ever.

    Shared by the HEAD and the GET of one :meth:`Transfer.fetch`, so a link
    refreshed for the HEAD is reused for the GET and a second refusal is final.
    ``process_id`` and ``side`` name the object for messages and the cache.
    The parts of a ranged download share one holder from several threads, so
    the whole object gets one refresh however many parts are refused
    (:meth:`refresh_after`).
    """

    def __init__(self, source: LinkSource, process_id: str = "", side: Side = "output") -> None:
        self._source = source
        self._link: Link | None = None
        self._lock = threading.RLock()
        self.refreshed = False
        self.process_id = process_id
        self.side = side

    def current(self) -> Link:
        """The link to use now: asked for once (``source(False)``), and
        refreshed before any use when it has already expired."""
        with self._lock:
            if self._link is None:
                self._link = self._source(False)
                if self._link.expired and not self.refreshed:
                    _log.debug("link for the %s of %s expired before use; refreshing",
                               self._link.side, self._link.process_id)
                    self.refresh()
            assert self._link is not None
            return self._link

    def refresh_after(self, used: Link) -> bool:
        """After storage refused ``used``: ``True`` when a fresh link is there
        to try (this call fetched it, or another thread already replaced
        ``used``), ``False`` when the one refresh is spent on it."""
        with self._lock:
            if self._link is not None and self._link is not used:
                return True
            if self.refreshed:
                return False
            self.refresh()
            return True

    def refresh(self) -> Link:
        """A fresh link (``source(True)``), used from now on; callers check
        :attr:`refreshed` first, since one refresh is all an operation gets."""
        with self._lock:
            self.refreshed = True
            self._link = self._source(True)
            return self._link
