"""Turn any decoded image into what a browser shows faithfully: 8-bit sRGB.

Browsers assume untagged pixels are sRGB, and the comparison view draws both
sides from pixels that were converted here, so an Adobe RGB or CMYK upload and
its sRGB output compare by colour, not by raw numbers.  The rules:

* 16-bit (``I;16*``, and ``I``, taken as 16-bit data) is scaled to 8 bits by
  ``round(v * 255 / 65535)``, never clipped.  48-bit RGB files arrive from
  Pillow already reduced to their high byte, within one level of that.
* ``F`` (float) is taken as 0–1 when its maximum is at most 1, else as 0–255.
* An embedded ICC profile that is not an sRGB one is converted to sRGB with
  LittleCMS (relative colorimetric intent, what browsers use for images); the
  transform is built once per profile.  CMYK without a profile uses Pillow's
  plain conversion.
* Transparency is kept: anything with alpha (``LA``, ``PA``, ``RGBA``, ``P`` or
  ``L``/``RGB`` with a transparent colour) becomes ``RGBA``, the rest ``RGB``.
"""

from __future__ import annotations

import functools
import io

from PIL import Image, ImageCms

_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_MANAGED = frozenset({"RGB", "RGBA", "CMYK", "L"})
_INTENT = ImageCms.Intent.RELATIVE_COLORIMETRIC

#: 16-bit value → nearest 8-bit value (65535 → 255, 32768 → 128).
_LUT16 = [(v * 255 + 32767) // 65535 for v in range(65536)]


def display_mode(im: Image.Image) -> str:
    """``"RGBA"`` when ``im`` carries transparency, else ``"RGB"``."""
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        return "RGBA"
    return "RGB"


def to_display(im: Image.Image, *, in_place: bool = False) -> Image.Image:
    """Return ``im`` as 8-bit ``RGB``/``RGBA`` sRGB pixels.

    ``in_place=True`` lets a colour transform overwrite ``im`` itself (the
    caller owns it and will not use the original pixels again), which saves a
    full-size copy.  ``im`` is returned unchanged when it is already fit.
    """
    target = display_mode(im)
    icc = im.info.get("icc_profile") or None
    info = im.info
    if im.mode in _SIXTEEN_BIT:
        im = _scale_16(im)
        in_place = True
    elif im.mode == "F":
        im = _scale_float(im)
        in_place = True
    if icc is not None and not is_srgb(icc) and im.mode in _MANAGED:
        out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
        transform = _transform(icc, im.mode, out_mode)
        if transform is not None:
            if in_place and im.mode == out_mode:
                ImageCms.applyTransform(im, transform, inPlace=True)
            else:
                converted = ImageCms.applyTransform(im, transform)
                assert converted is not None  # only inPlace=True returns None
                im = converted
            in_place = True
    if im.mode != target:
        if "transparency" in info and "transparency" not in im.info:
            im.info["transparency"] = info["transparency"]
        im = im.convert(target)
    return im


def is_srgb(icc: bytes) -> bool:
    """Whether an embedded profile is an sRGB one, which needs no conversion."""
    return "srgb" in (profile_description(icc) or "").lower()


@functools.lru_cache(maxsize=32)
def profile_description(icc: bytes) -> str | None:
    """The profile's own name (e.g. ``"Adobe RGB (1998)"``); ``None`` if unreadable."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        text = ImageCms.getProfileDescription(profile)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None
    return text.strip() or None


@functools.lru_cache(maxsize=1)
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@functools.lru_cache(maxsize=16)
def _transform(icc: bytes, in_mode: str, out_mode: str) -> ImageCms.ImageCmsTransform | None:
    """A cached transform to sRGB, or ``None`` when the profile cannot apply
    (unreadable, or made for another colour space than the pixels)."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.buildTransform(source, _srgb(), in_mode, out_mode,
                                       renderingIntent=_INTENT)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def _scale_16(im: Image.Image) -> Image.Image:
    wide = im if im.mode == "I" else im.convert("I")
    out = wide.point(_LUT16, "L")
    out.info = dict(im.info)
    return out


def _scale_float(im: Image.Image) -> Image.Image:
    _, high = im.getextrema()
    factor = 255.0 if float(high) <= 1.0 else 1.0  # type: ignore[arg-type]
    out = im.point(lambda v: v * factor + 0.5).convert("L")
    out.info = dict(im.info)
    return out
