"""Tests of topaz_nb._format_end: whether a file reaches its format's own end.

Every format is written by Pillow, then cut at every byte: a cut file must
never pass for a whole one, whatever bytes happen to sit at the cut.
"""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from topaz_nb._format_end import reaches_end


def _image() -> Image.Image:
    return Image.effect_noise((40, 30), 60).convert("RGB")


def _encoded(fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    _image().save(buf, fmt, **options)
    return buf.getvalue()


def _ends(data: bytes) -> bool | None:
    return reaches_end(io.BytesIO(data), len(data))


SAMPLES = {
    "png": lambda: _encoded("PNG"),
    "jpeg": lambda: _encoded("JPEG"),
    "progressive jpeg": lambda: _encoded("JPEG", progressive=True),
    "jpeg with restart markers": lambda: _encoded("JPEG", restart_marker_blocks=1),
    "tiff": lambda: _encoded("TIFF"),
    "deflated tiff": lambda: _encoded("TIFF", compression="tiff_deflate"),
    "bigtiff": lambda: _encoded("TIFF", big_tiff=True),
    "webp": lambda: _encoded("WEBP"),
    "gif": lambda: _encoded("GIF"),
    "animated gif": lambda: _encoded("GIF", save_all=True,
                                     append_images=[_image().rotate(90)]),
    "mpo": lambda: _encoded("MPO", save_all=True, append_images=[_image().rotate(90)]),
    "bmp": lambda: _encoded("BMP"),
}


@pytest.mark.parametrize("name", SAMPLES)
def test_a_whole_file_reaches_its_end_and_no_cut_of_it_does(name: str) -> None:
    data = SAMPLES[name]()
    assert _ends(data) is True
    # Once the signature is there a cut is short; before it, the format is unknown.
    assert {_ends(data[:cut]) for cut in range(16, len(data))} == {False}, name
    assert {_ends(data[:cut]) for cut in range(16)} <= {False, None}


def test_a_multipage_tiff_cut_in_a_later_page_is_short() -> None:
    data = _encoded("TIFF", save_all=True, append_images=[_image().rotate(90)])
    assert _ends(data) is True
    # Pillow pads the file after the last page's data: that padding is no part of it.
    last_data = len(data) - 4
    assert {_ends(data[:cut]) for cut in range(16, last_data, 7)} == {False}


def test_an_end_marker_inside_data_does_not_end_a_jpeg() -> None:
    """An Exif thumbnail is a whole JPEG, EOI included, inside an APP1 segment."""
    thumbnail = _encoded("JPEG")
    main = _encoded("JPEG", quality=95)
    payload = b"Exif\x00\x00" + thumbnail
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    data = main[:2] + app1 + main[2:]
    assert _ends(data) is True
    after_thumbnail = 2 + 4 + 6 + len(thumbnail)
    assert data[after_thumbnail - 2:after_thumbnail] == b"\xff\xd9"
    assert _ends(data[:after_thumbnail]) is False


def test_a_multi_picture_jpeg_cut_after_its_first_picture_is_short() -> None:
    data = SAMPLES["mpo"]()
    # The second picture's SOI follows the first one's EOI directly.
    second_start = data.index(b"\xff\xd8", 2)
    while data[second_start - 2:second_start] != b"\xff\xd9":
        second_start = data.index(b"\xff\xd8", second_start + 2)
    assert _ends(data[:second_start]) is False


def test_bytes_after_the_end_are_not_looked_at() -> None:
    data = _encoded("PNG")
    assert _ends(data + b"trailing bytes") is True


@pytest.mark.parametrize("data", [
    b"",
    b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>",
    b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00mif1heic" + bytes(64),  # HEIF: boxes only
    bytearray(_encoded("BMP"))[:2] + bytes(4) + _encoded("BMP")[6:],  # a BMP with no size
], ids=["empty", "xml", "heif", "bmp without size"])
def test_formats_without_a_checkable_end_are_unknown(data: bytes) -> None:
    assert _ends(bytes(data)) is None


def test_a_damaged_file_is_not_taken_for_a_whole_one() -> None:
    data = bytearray(_encoded("JPEG"))
    data[len(data) // 2:] = b"\x00" * (len(data) - len(data) // 2)  # no marker ever again
    assert _ends(bytes(data)) is False
