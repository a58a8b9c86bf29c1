"""Whether an image file holds everything its own format says it has.

A body framed by nothing but the end of its connection (no Content-Length, or
chunks re-framed by a proxy after its upstream was cut) looks complete however
early it stopped.  The storage layer then asks the bytes themselves:

* **PNG**: the chunks, followed by their lengths, reach a whole ``IEND``;
* **JPEG**: the segments and the entropy-coded scans, followed marker by
  marker, reach ``EOI``; with an MPF index (a multi-picture file, as cameras
  write), every picture it lists lies inside the file;
* **TIFF** (and BigTIFF): every IFD, every out-of-line value and every strip
  or tile that an IFD of the chain, a SubIFD or the Exif/GPS IFD points to
  lies inside the file;
* **WebP**: the file holds as many bytes as its RIFF header promises;
* **GIF**: the blocks, followed by their sizes, reach the trailer ``;``;
* **BMP**: the file holds the size its header gives, when the header gives one.

Each walk follows lengths and never searches for a marker's bytes, which may
occur inside data (an Exif thumbnail ends with its own ``EOI``).  Bytes after
the format's end are not looked at.  Anything else (HEIF and AVIF, whose boxes
may end exactly where a cut fell, JPEG 2000, a BMP with no size, a file too
odd to walk, or no image at all) is *unknown*: the caller must find the
object's end some other way.  Nothing here imports Pillow, and a walk reads
the file in pieces of at most 1 MiB.
"""

from __future__ import annotations

import re
import struct
from typing import IO

__all__ = ["reaches_end"]

_BLOCK = 1 << 20
_MAX_IFDS = 10_000
_MAX_VALUES = 4_000_000
# Entropy-coded data escapes 0xFF as FF 00, and restart markers FF D0..D7 stay
# inside a scan; any other marker (fill bytes FF FF aside) ends the scan.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


class _Window:
    """Random reads of a file through one cached piece, so a walk of many
    small records costs a few large reads."""

    def __init__(self, fp: IO[bytes], size: int) -> None:
        self._fp = fp
        self.size = size
        self._start = 0
        self._data = b""

    def read(self, pos: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``pos`` (fewer only at the end of the file)."""
        if pos < 0 or pos >= self.size:
            return b""
        end = min(pos + n, self.size)
        if not (self._start <= pos and end <= self._start + len(self._data)):
            self._fp.seek(pos)
            self._data = self._fp.read(max(n, _BLOCK))
            self._start = pos
        return self._data[pos - self._start:end - self._start]

    def byte(self, pos: int) -> int | None:
        data = self.read(pos, 1)
        return data[0] if data else None


def reaches_end(fp: IO[bytes], size: int) -> bool | None:
    """``True`` when the image in ``fp`` (``size`` bytes long) reaches its
    format's own end, ``False`` when it stops before it (cut short), ``None``
    when its format gives no end this module can check (see the module's
    docstring).  ``fp`` is read from anywhere; its position is left anywhere.
    """
    window = _Window(fp, size)
    head = window.read(0, 16)
    try:
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png(window)
        if head.startswith(b"\xff\xd8"):
            return _jpeg(window)
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _tiff(window)
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            return size >= 8 + struct.unpack("<I", head[4:8])[0]
        if head[:6] in (b"GIF87a", b"GIF89a"):
            return _gif(window)
        if head.startswith(b"BM") and len(head) >= 6:
            promised = struct.unpack("<I", head[2:6])[0]
            return size >= promised if promised >= 26 else None
    except struct.error:  # a record cut inside its own fields
        return False
    return None


def _png(w: _Window) -> bool:
    pos = 8
    while True:
        header = w.read(pos, 8)
        if len(header) < 8:
            return False
        length, kind = struct.unpack(">I4s", header)
        end = pos + 8 + length + 4  # length, type, data, CRC
        if end > w.size:
            return False
        if kind == b"IEND":
            return True
        pos = end


def _jpeg(w: _Window) -> bool | None:
    pos = 2
    pictures_end: int | None = None
    while True:
        marker = w.read(pos, 2)
        if len(marker) < 2:
            return False
        if marker[0] != 0xFF:
            return None  # not where a marker must be: damaged, not cut
        kind = marker[1]
        if kind == 0xFF:  # a fill byte before a marker
            pos += 1
            continue
        if kind == 0xD9:  # EOI
            return pictures_end is None or w.size >= pictures_end
        if 0xD0 <= kind <= 0xD7 or kind == 0x01:
            pos += 2
            continue
        raw = w.read(pos + 2, 2)
        if len(raw) < 2:
            return False
        end = pos + 2 + struct.unpack(">H", raw)[0]
        if end > w.size:
            return False
        if kind == 0xE2 and w.read(pos + 4, 4) == b"MPF\x00":
            pictures_end = _mpf_end(w.read(pos + 8, end - pos - 8), pos + 8)
            if pictures_end is None:
                return None
        pos = end
        if kind == 0xDA:  # a scan: its entropy-coded data runs to the next marker
            found = _next_marker(w, pos)
            if found is None:
                return False
            pos = found


def _next_marker(w: _Window, pos: int) -> int | None:
    while pos < w.size:
        block = w.read(pos, _BLOCK)
        match = _SCAN_END.search(block)
        if match:
            return pos + match.start()
        if len(block) < 2:
            return None
        pos += len(block) - 1  # a last 0xFF is looked at again with what follows it
    return None


def _mpf_end(index: bytes, base: int) -> int | None:
    """Where the last picture an MPF index lists ends (offsets count from
    ``base``, where its TIFF-like header starts), or ``None`` if unreadable."""
    order = {b"II": "<", b"MM": ">"}.get(index[:2])
    if order is None or len(index) < 8:
        return None
    ifd = struct.unpack(order + "I", index[4:8])[0]
    if ifd + 2 > len(index):
        return None
    (count,) = struct.unpack(order + "H", index[ifd:ifd + 2])
    for i in range(count):
        at = ifd + 2 + 12 * i
        if at + 12 > len(index):
            return None
        tag, _type, n, value = struct.unpack(order + "HHII", index[at:at + 12])
        if tag != 0xB002:  # MPEntry: 16 bytes per picture
            continue
        if value + n > len(index) or n % 16:
            return None
        end = 0
        for j in range(n // 16):
            _attr, length, offset = struct.unpack(order + "III",
                                                  index[value + 16 * j:value + 16 * j + 12])
            end = max(end, (base + offset if offset else 0) + length)
        return end
    return None


_TIFF_TYPES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
               13: 4, 16: 8, 17: 8, 18: 8}
_INT_CODES = {3: "H", 4: "I", 13: "I", 16: "Q", 18: "Q"}
_DATA_TAGS = ((273, 279), (324, 325), (513, 514))  # strips, tiles, JPEG interchange
_IFD_TAGS = (330, 34665, 34853, 40965)  # SubIFDs, Exif, GPS, Interoperability


def _tiff(w: _Window) -> bool | None:
    head = w.read(0, 16)
    order = "<" if head[:2] == b"II" else ">"
    big = struct.unpack(order + "H", head[2:4])[0] == 43
    if big:
        count_code, count_size, entry_size, field, first = \
            "Q", 8, 20, 8, struct.unpack(order + "Q", head[8:16])[0]
    else:
        count_code, count_size, entry_size, field, first = \
            "H", 2, 12, 4, struct.unpack(order + "I", head[4:8])[0]
    next_code = "Q" if big else "I"
    pending, seen, data_checked = [first], set(), False
    while pending:
        ifd = pending.pop()
        if ifd == 0 or ifd in seen:
            continue
        seen.add(ifd)
        if len(seen) > _MAX_IFDS:
            return None
        raw = w.read(ifd, count_size)
        if len(raw) < count_size:
            return False
        (count,) = struct.unpack(order + count_code, raw)
        table = w.read(ifd + count_size, count * entry_size + field)
        if len(table) < count * entry_size + field:
            return False
        values: dict[int, list[int]] = {}
        for i in range(count):
            entry = table[i * entry_size:(i + 1) * entry_size]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            n = struct.unpack(order + ("Q" if big else "I"), entry[4:4 + field])[0]
            nbytes = n * _TIFF_TYPES.get(kind, 1)
            inline = entry[4 + field:]
            if nbytes > field:
                offset = struct.unpack(order + next_code, inline)[0]
                if offset + nbytes > w.size:
                    return False
            wanted = any(tag in pair for pair in _DATA_TAGS) or tag in _IFD_TAGS
            if not wanted or kind not in _INT_CODES:
                continue
            if n > _MAX_VALUES:
                return None
            data = inline[:nbytes] if nbytes <= field else w.read(offset, nbytes)
            values[tag] = list(struct.unpack(order + _INT_CODES[kind] * n, data))
        for offsets_tag, counts_tag in _DATA_TAGS:
            offsets, counts = values.get(offsets_tag), values.get(counts_tag)
            if offsets is None or counts is None:
                continue
            for start, length in zip(offsets, counts):
                if start + length > w.size:
                    return False
            data_checked = True
        for tag in _IFD_TAGS:
            pending.extend(values.get(tag, ()))
        (after,) = struct.unpack(order + next_code, table[count * entry_size:])
        pending.append(after)
    return True if data_checked else None


def _gif(w: _Window) -> bool | None:
    screen = w.read(6, 7)
    if len(screen) < 7:
        return False
    pos = 13 + (3 << ((screen[4] & 7) + 1) if screen[4] & 0x80 else 0)
    while True:
        kind = w.byte(pos)
        if kind is None:
            return False
        if kind == 0x3B:  # the trailer
            return True
        if kind == 0x21:  # an extension: label, then sub-blocks
            pos += 2
        elif kind == 0x2C:  # an image: descriptor, local colour table, LZW size, sub-blocks
            packed = w.byte(pos + 9)
            if packed is None:
                return False
            pos += 10 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0) + 1
        else:
            return None  # not a block GIF knows: damaged, not cut
        while True:
            length = w.byte(pos)
            if length is None:
                return False
            pos += 1 + length
            if length == 0:
                break
