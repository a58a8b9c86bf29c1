"""Presigned links, and the one place that decides how they are shown.

A presigned URL is a bearer credential for an hour: anybody holding the query
string can read the image.  So a :class:`Link` never prints its full URLs, and
:func:`redact_url` is what every message, repr and log line uses instead;
:func:`scrub_urls` does the same to free text that may quote one (an exception
from a network library, a server's message, a log record).
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

Side = Literal["input", "output"]
SIDES: tuple[Side, Side] = ("input", "output")


def redact_url(url: str | None) -> str:
    """Drop the query string and fragment, which carry the signature."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    redacted = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
    return redacted + ("?…" if parts.query else "")


_URL_IN_TEXT = re.compile(r"https?://[^\s'\"<>]+")
_QUERY_IN_TEXT = re.compile(r"\?[^\s'\"<>)]+")


def scrub_urls(text: str) -> str:
    """``text`` with every URL redacted and every other query string cut.

    URLs go through :func:`redact_url` (credentials and query removed); a bare
    ``?query`` left over, as in urllib3's ``"GET /path?X-Amz-Signature=…"``
    log lines, becomes ``?…``.
    """
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), str(text))
    return _QUERY_IN_TEXT.sub(lambda m: m.group(0) if m.group(0) == "?…" else "?…", text)


@dataclass(frozen=True)
class Link:
    """One presigned pair of URLs to one stored object (input or output)."""

    process_id: str
    side: Side
    download_url: str = field(repr=False)
    head_url: str = field(repr=False)
    expiry: _dt.datetime

    @property
    def seconds_left(self) -> float:
        """Seconds until the storage starts refusing these URLs (negative once past)."""
        return (self.expiry - _dt.datetime.now(_dt.timezone.utc)).total_seconds()

    @property
    def expired(self) -> bool:
        return self.seconds_left <= 0

    def __repr__(self) -> str:
        return (f"Link(process_id={self.process_id!r}, side={self.side!r}, "
                f"download_url={redact_url(self.download_url)!r}, "
                f"expiry={self.expiry.isoformat()!r})")

    __str__ = __repr__


def utc_text(when: _dt.datetime) -> str:
    """A timestamp as people read it in tables and messages, in UTC."""
    return when.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def expiry_text(when: _dt.datetime) -> str:
    """When a link stops working, and how long that is from now."""
    left = (when - _dt.datetime.now(_dt.timezone.utc)).total_seconds()
    return f"{utc_text(when)} ({'expired' if left <= 0 else f'in {int(left // 60)} min'})"


LinkSource = Callable[[bool], Link]
"""Gives a link for one object; called with ``True`` it must fetch a fresh one.

The transfer layer takes one of these instead of a client, so it can refresh an
expired link without ever holding the API key.
"""
