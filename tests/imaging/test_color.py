"""Tests of topaz_nb.imaging.color: any decoded image to 8-bit sRGB for display."""

from __future__ import annotations

import io

import pytest
from _imaging_samples import swapped_rgb_profile
from PIL import Image, ImageCms

from topaz_nb.imaging import color as _color
from topaz_nb.imaging.color import display_mode, is_srgb, profile_description, to_display


def _px(im: Image.Image, xy=(0, 0)):
    return im.getpixel(xy)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_sixteen_bit_is_scaled_not_clipped(mode: str) -> None:
    im = Image.new(mode, (4, 1))
    for x, v in enumerate([65535, 32768, 32767, 0]):
        im.putpixel((x, 0), v)
    out = to_display(im)
    assert out.mode == "RGB"
    assert [_px(out, (x, 0)) for x in range(4)] == [
        (255,) * 3, (128,) * 3, (127,) * 3, (0,) * 3]


def test_float_zero_to_one_is_scaled() -> None:
    im = Image.new("F", (2, 1))
    im.putpixel((0, 0), 1.0)
    im.putpixel((1, 0), 0.5)
    out = to_display(im)
    assert [_px(out, (x, 0)) for x in range(2)] == [(255,) * 3, (128,) * 3]


@pytest.mark.parametrize(("mode", "value", "expected_mode", "expected"), [
    ("1", 1, "RGB", (255, 255, 255)),
    ("L", 77, "RGB", (77, 77, 77)),
    ("LA", (77, 100), "RGBA", (77, 77, 77, 100)),
    ("RGBA", (1, 2, 3, 4), "RGBA", (1, 2, 3, 4)),
    ("CMYK", (0, 255, 0, 0), "RGB", (255, 0, 255)),
])
def test_modes(mode, value, expected_mode, expected) -> None:
    out = to_display(Image.new(mode, (2, 2), value))
    assert (out.mode, _px(out)) == (expected_mode, expected)


def test_palette_with_and_without_transparency() -> None:
    im = Image.new("P", (2, 1))
    im.putpalette([10, 20, 30, 200, 100, 50])
    im.putpixel((1, 0), 1)
    assert to_display(im).getpixel((1, 0)) == (200, 100, 50)
    im.info["transparency"] = 0
    out = to_display(im)
    assert out.mode == "RGBA"
    assert [_px(out, (x, 0)) for x in range(2)] == [(10, 20, 30, 0), (200, 100, 50, 255)]
    assert display_mode(Image.new("PA", (1, 1))) == "RGBA"


def test_non_srgb_profile_is_converted_like_imagecms() -> None:
    icc = swapped_rgb_profile()
    raw = Image.new("RGB", (2, 2), (200, 30, 30))
    raw.info["icc_profile"] = icc
    expected = ImageCms.profileToProfile(
        raw, ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"),
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    out = to_display(raw)
    assert _px(out) == _px(expected)
    assert _px(out) != (200, 30, 30)
    r, g, _ = _px(out)
    assert g > 150 > r, "red and green primaries are swapped by this profile"
    assert _px(raw) == (200, 30, 30), "the original is untouched unless in_place"


def test_in_place_transform_and_alpha_kept() -> None:
    im = Image.new("RGBA", (2, 2), (200, 30, 30, 90))
    im.info["icc_profile"] = swapped_rgb_profile()
    out = to_display(im, in_place=True)
    assert out is im
    assert _px(out)[3] == 90 and _px(out)[1] > 150


def test_srgb_profile_is_left_alone() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    im = Image.new("RGB", (2, 2), (200, 30, 30))
    im.info["icc_profile"] = srgb
    assert is_srgb(srgb)
    assert to_display(im) is im


def test_transforms_are_cached_per_profile() -> None:
    icc = swapped_rgb_profile("Cache probe")
    assert _color._transform(icc, "RGB", "RGB") is _color._transform(icc, "RGB", "RGB")
    assert profile_description(icc) == "Cache probe"


def test_unusable_profile_falls_back_to_plain_pixels() -> None:
    im = Image.new("L", (2, 2), 50)
    im.info["icc_profile"] = swapped_rgb_profile()  # an RGB profile on gray pixels
    assert _px(to_display(im)) == (50, 50, 50)
    im.info["icc_profile"] = b"not a profile"
    assert profile_description(b"not a profile") is None
    assert _px(to_display(im)) == (50, 50, 50)
