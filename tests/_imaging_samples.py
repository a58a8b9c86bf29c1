"""Small image files that Pillow cannot write itself, built byte by byte for
the imaging tests: an RGB ICC profile with swapped primaries, a 48-bit TIFF,
a 48-bit PNG and a PNG header claiming a huge size."""

from __future__ import annotations

import struct
import zlib


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def _desc(text: str) -> bytes:
    ascii_ = text.encode("ascii") + b"\0"
    body = b"desc\0\0\0\0" + struct.pack(">I", len(ascii_)) + ascii_
    body += struct.pack(">II", 0, 0)  # no Unicode description
    body += struct.pack(">HB", 0, 0) + b"\0" * 67  # no ScriptCode description
    return body


def _gamma(g: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(g * 256)) + b"\0\0"


def swapped_rgb_profile(description: str = "Swapped primaries test RGB") -> bytes:
    """A valid ICC v2 RGB display profile whose red and green primaries are
    sRGB's green and red: converting to sRGB visibly swaps those channels."""
    srgb_red, srgb_green, srgb_blue = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971),
                                       (0.1431, 0.0606, 0.7141))
    tags = [
        (b"desc", _desc(description)),
        (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", _xyz(*srgb_green)),
        (b"gXYZ", _xyz(*srgb_red)),
        (b"bXYZ", _xyz(*srgb_blue)),
        (b"rTRC", _gamma(2.2)),
        (b"gTRC", _gamma(2.2)),
        (b"bTRC", _gamma(2.2)),
        (b"cprt", b"text\0\0\0\0" + b"none\0\0\0\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body + b"\0" * (-len(body) % 4)
    size = offset + len(data)
    header = struct.pack(">I", size) + b"\0\0\0\0" + struct.pack(">I", 0x02100000)
    header += b"mntrRGB XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 4
    header += b"\0" * 4 + b"\0" * 8 + b"\0" * 8 + struct.pack(">I", 0)
    header += _s15(0.9642) + _s15(1.0) + _s15(0.8249) + b"\0" * 4
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + data


def tiff_rgb48(width: int, height: int, pixels: list[tuple[int, int, int]]) -> bytes:
    """An uncompressed little-endian 16-bit-per-channel RGB TIFF."""
    pix = b"".join(struct.pack("<3H", *p) for p in pixels)
    entries = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 3, "bps"), (259, 3, 1, 1),
               (262, 3, 1, 2), (273, 4, 1, "data"), (277, 3, 1, 3), (278, 3, 1, height),
               (279, 4, 1, len(pix))]
    ifd_size = 2 + 12 * len(entries) + 4
    bps_at = 8 + ifd_size
    data_at = bps_at + 6
    out = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        if value == "bps":
            value = bps_at
        elif value == "data":
            value = data_at
        if kind == 3 and count == 1:
            out += struct.pack("<HHIHH", tag, kind, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, kind, count, value)
    return out + struct.pack("<I", 0) + struct.pack("<3H", 16, 16, 16) + pix


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_rgb48(width: int, height: int, pixels: list[tuple[int, int, int]]) -> bytes:
    """A 16-bit-per-channel RGB PNG."""
    rows = b"".join(b"\0" + b"".join(struct.pack(">3H", *pixels[y * width + x])
                                     for x in range(width)) for y in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width``×``height`` 8-bit RGB but holds one empty row."""
    return (b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"\0")) + _chunk(b"IEND", b""))
