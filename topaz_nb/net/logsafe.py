"""Keeping presigned signatures out of log files.

urllib3 logs request lines (``urllib3.connectionpool``) and every retry
(``urllib3.util.retry``: ``Incremented Retry for (url='/path?X-Amz-…')``) at
DEBUG, query string included.  A presigned query is a bearer credential for
an hour, so a user who turns on debug logging to see why a download is slow
would be writing readable links into their logs.

:class:`ScrubUrls` rewrites such records through
:func:`topaz_nb.links.scrub_urls`, the one home of URL redaction; nothing is
dropped.  A filter on a logger only sees records created on that very logger
(not those of its children), so :func:`install_log_filter` puts one on each
urllib3 logger that can quote a URL.  It runs when a client or a transfer is
first made, never at import: importing topaz_nb changes no global state.
"""

from __future__ import annotations

import logging
import threading

from ..links import scrub_urls

__all__ = ["LOGGERS", "ScrubUrls", "install_log_filter"]

LOGGERS = ("urllib3", "urllib3.connectionpool", "urllib3.util.retry",
           "urllib3.connection", "urllib3.poolmanager", "urllib3.response")
"""The loggers that can quote a request URL."""

_lock = threading.Lock()


class ScrubUrls(logging.Filter):
    """Redacts URLs and query strings in a record's message; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's problem to report
            return True
        clean = scrub_urls(text)
        if clean != text:
            record.msg, record.args = clean, ()
        return True


def install_log_filter() -> None:
    """Put one :class:`ScrubUrls` on each of :data:`LOGGERS`; calling again adds none."""
    with _lock:
        for name in LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, ScrubUrls) for f in logger.filters):
                logger.addFilter(ScrubUrls())
