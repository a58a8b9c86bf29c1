"""Tests of topaz_nb._sniff: recognising non-images and reading headers only."""

from __future__ import annotations

import io

import pytest
from _imaging_samples import png_header_only
from PIL import Image

from topaz_nb._sniff import UnrecognisedImage, describe_non_image, open_header


@pytest.mark.parametrize(("head", "expected"), [
    (b"<!DOCTYPE html><html><body>Access denied</body></html>", "HTML page"),
    (b"\xef\xbb\xbf\n  <html lang='en'>", "HTML page"),
    (b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>', "XML document"),
    (b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml">', "HTML page"),
    (b'{"code": 403, "message": "denied"}', "JSON"),
    (b"", "empty"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
])
def test_text_bodies_are_named(head: bytes, expected: str) -> None:
    assert expected in (describe_non_image(head) or "")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "WEBP"])
def test_image_bodies_are_not_text(fmt: str) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (3, 2), (9, 8, 7)).save(buf, fmt)
    assert describe_non_image(buf.getvalue()[:1024]) is None


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "WEBP", "BMP", "GIF"])
def test_header_is_read_without_decoding(fmt: str) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (30, 20), (9, 8, 7)).save(buf, fmt)
    buf.seek(0)
    im = open_header(buf)
    assert (im.format, im.size) == (fmt, (30, 20))
    if fmt != "WEBP":  # WebP's decoder is driven without tiles
        assert im.tile, "pixels must still be undecoded"


def test_format_comes_from_bytes_not_name(tmp_path) -> None:
    path = tmp_path / "photo.jpg"
    Image.new("L", (4, 4)).save(path, "PNG")
    with open(path, "rb") as fp:
        assert open_header(fp).format == "PNG"


def test_huge_header_opens_without_pillow_bomb_check() -> None:
    # 10 GP is far over Pillow's error threshold; warnings are errors in tests,
    # so this also proves that no DecompressionBombWarning is raised.
    im = open_header(io.BytesIO(png_header_only(100_000, 100_000)))
    assert im.size == (100_000, 100_000)


def test_unknown_data_is_unrecognised() -> None:
    with pytest.raises(UnrecognisedImage) as info:
        open_header(io.BytesIO(b"\x00\x01garbage" * 20))
    assert info.value.damaged is None


def test_damaged_header_names_the_format() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (30, 20)).save(buf, "PNG")
    with pytest.raises(UnrecognisedImage) as info:
        open_header(io.BytesIO(buf.getvalue()[:20]))
    assert info.value.damaged == "PNG"
