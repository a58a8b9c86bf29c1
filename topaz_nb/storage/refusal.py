"""Why storage refused a request, from the error document it sent.

S3 and Google Cloud Storage's XML API answer a refused presigned request with
``<Error><Code>…</Code><Message>…</Message>…</Error>``, and the ``Code`` says
what happened far better than the status: S3 answers ``403 AccessDenied`` for
an object that is gone when the link's signer may not list the bucket, and for
a link that has expired (with the message ``Request has expired``); a changed
URL is ``SignatureDoesNotMatch``; GCS answers an expired link with ``400
ExpiredToken``.  A HEAD's answer has no body, so whoever needs the reason for
a refused HEAD asks the GET link for one byte (see
:meth:`~topaz_nb.storage.download.Downloader`).

The document is read with a few regular expressions over at most 64 KiB,
never with an XML parser: it comes from a server, and nothing in it but those
few elements is wanted.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_DOCUMENT", "Refusal", "from_document", "read_document"]

MAX_DOCUMENT = 64 * 1024
"""Most bytes of an error body read: S3's and GCS's documents are a few hundred."""

_ELEMENT = {name: re.compile(rf"<{name}>([^<]{{0,2000}})</{name}>")
            for name in ("Code", "Message", "Details")}
_EXPIRED_CODES = frozenset({"ExpiredToken", "ExpiredRequest", "RequestExpired",
                            "TokenRefreshRequired"})


@dataclass(frozen=True)
class Refusal:
    """What storage said about a refused request.

    ``reason`` is one of ``"expired"`` (the link's time is up),
    ``"signature"`` (the URL was changed: ``SignatureDoesNotMatch``),
    ``"gone"`` (no such object: ``NoSuchKey``, or a 404), ``"denied"``
    (``AccessDenied`` for any other reason, which S3 also gives for a deleted
    object), ``"unexplained"`` (no error document) or ``"other"`` (a code not
    listed here, shown as it is).
    """

    status: int
    code: str | None = None
    message: str | None = None
    reason: str = "unexplained"


def from_document(status: int, body: bytes) -> Refusal:
    """The refusal an error document states (``body`` may be empty or HTML)."""
    text = body[:MAX_DOCUMENT].decode("utf-8", "replace")
    found: dict[str, str | None] = {}
    for name, pattern in _ELEMENT.items():
        match = pattern.search(text)
        value = " ".join(html.unescape(match.group(1)).split()) if match else ""
        found[name] = value or None
    code, message = found["Code"], found["Message"]
    said = " ".join(x for x in (message, found["Details"]) if x).lower()
    if code in _EXPIRED_CODES or (code in (None, "AccessDenied") and "expired" in said):
        reason = "expired"
    elif code == "SignatureDoesNotMatch":
        reason = "signature"
    elif code in ("NoSuchKey", "NoSuchBucket") or status in (404, 410):
        reason = "gone"
    elif code == "AccessDenied":
        reason = "denied"
    elif code is None:
        reason = "unexplained"
    else:
        reason = "other"
    return Refusal(status, code, message, reason)


def read_document(response: Any) -> bytes:
    """At most :data:`MAX_DOCUMENT` bytes of a (streamed) error answer's body;
    nothing when it cannot be read (a HEAD, a connection gone)."""
    if getattr(getattr(response, "request", None), "method", None) == "HEAD":
        return b""
    try:
        return response.raw.read(MAX_DOCUMENT, decode_content=True) or b""
    except Exception:  # noqa: BLE001 - the reason is a nicety; the status is what counts
        return b""
