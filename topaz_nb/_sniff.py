"""Recognise what a byte stream really is, and read an image's header only.

Presigned storage links fail by answering with an HTML or XML error page and a
``200``-looking body, and users rename files freely, so neither the file name
nor the Content-Type is trusted: the first bytes decide.

:func:`open_header` opens the header through Pillow's own format plugins, like
``Image.open`` does, but without Pillow's process-wide decompression-bomb
check.  The size limits of topaz-nb are checked by the caller against the
header with a message that gives the real dimensions; Pillow's check would
instead raise (or only warn, between one and two times its ceiling) before the
dimensions are known.
"""

from __future__ import annotations

import struct
from typing import IO

from PIL import Image, ImageFile

#: Bytes the format plugins look at to recognise a file (as ``Image.open``).
_PREFIX = 16

_HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<title")


class UnrecognisedImage(Exception):
    """No Pillow plugin accepted the data; ``damaged`` names a format whose
    signature matched but whose header could not be read."""

    def __init__(self, damaged: str | None, reason: str | None) -> None:
        super().__init__(reason or "unrecognised format")
        self.damaged = damaged
        self.reason = reason


def describe_non_image(head: bytes) -> str | None:
    """Say what ``head`` (the first kilobyte or so) looks like when it is
    clearly text rather than an image; ``None`` when it may be an image."""
    if not head:
        return "it is empty (0 bytes)"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n\x0c").lower()
    if text.startswith(b"<"):
        if text.startswith(_HTML_MARKERS) or any(m in text for m in _HTML_MARKERS):
            return "it looks like an HTML page (an error page from the storage?)"
        if text.startswith(b"<svg") or b"<svg" in text:
            return "it is an SVG drawing, which Topaz neither takes nor produces"
        return "it looks like an XML document (an error page from the storage?)"
    if text[:1] in (b"{", b"["):
        return "it looks like a JSON document (an error response?)"
    return None


def open_header(fp: IO[bytes]) -> ImageFile.ImageFile:
    """Read the header of the image in ``fp`` without decoding pixels.

    The returned image reads from ``fp``, which stays owned by the caller (it
    is not closed by Pillow).  Raises :class:`UnrecognisedImage`.
    """
    start = fp.tell()
    prefix = fp.read(_PREFIX)
    tried: set[str] = set()
    damaged: tuple[str, str] | None = None
    # Common plugins first (cheap), then every plugin, as Image.open does.
    for register in (Image.preinit, Image.init):
        register()
        for fmt in list(Image.ID):
            if fmt in tried:
                continue
            tried.add(fmt)
            factory, accept = Image.OPEN[fmt]
            accepted = accept(prefix) if accept else True
            if not accepted or isinstance(accepted, str):
                continue
            fp.seek(start)
            try:
                return factory(fp, "")
            except (SyntaxError, OSError, ValueError, IndexError, TypeError, KeyError,
                    EOFError, struct.error) as exc:
                if damaged is None and accept is not None:
                    damaged = (fmt, str(exc) or type(exc).__name__)
    if damaged is not None:
        raise UnrecognisedImage(*damaged)
    raise UnrecognisedImage(None, None)
