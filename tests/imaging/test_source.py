"""Tests of topaz_nb.imaging: opening files safely, orientation, colour,
size limits, previews, metadata and encoding.  Every file is generated here."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from _imaging_samples import png_header_only, png_rgb48, swapped_rgb_profile, tiff_rgb48
from PIL import Image, ImageCms, ImageOps, JpegImagePlugin

from topaz_nb.errors import ImageError, ImageTooLarge
from topaz_nb.imaging import source as imaging
from topaz_nb.imaging.source import (
    MAX_PIXELS,
    MAX_SIDE,
    DecodedCache,
    ImageInfo,
    SourceImage,
    TileSource,
    align,
    encode,
    load_image,
    scale_factor,
)


def _save(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def _load(data, **kw) -> SourceImage:
    return load_image(data, cache=DecodedCache(), **kw)


# -- opening and refusing -----------------------------------------------------

def test_bomb_ceiling_is_the_api_maximum_from_the_first_image_on() -> None:
    """Importing changes nothing in the process; the first image opened raises
    Pillow's ceiling to the API's maximum and makes the shared decoded cache."""
    import subprocess
    import sys

    script = (
        "import io, threading\n"
        "from PIL import Image\n"
        "default = Image.MAX_IMAGE_PIXELS\n"
        "import topaz_nb, topaz_nb.imaging.source as im, topaz_nb.view.widget, topaz_nb.comparison\n"
        "assert Image.MAX_IMAGE_PIXELS == default, 'changed at import'\n"
        "assert im._DEFAULT_CACHE is None, 'cache made at import'\n"
        "assert [t.name for t in threading.enumerate()] == ['MainThread'], 'threads at import'\n"
        "buf = io.BytesIO(); Image.new('RGB', (4, 3)).save(buf, 'PNG')\n"
        "im.load_image(buf.getvalue()).preview(2)\n"
        "print(Image.MAX_IMAGE_PIXELS, im._DEFAULT_CACHE is not None)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(MAX_PIXELS), "True"]
    assert MAX_PIXELS == 512_000_000 and MAX_SIDE == 32000


def test_html_error_page_is_refused_by_content(tmp_path) -> None:
    path = tmp_path / "output.jpg"
    path.write_bytes(b"<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head></html>")
    with pytest.raises(ImageError) as info:
        load_image(path, label="output of 1b2c")
    assert str(info.value).startswith(
        "output of 1b2c is not an image: it looks like an HTML page "
        "(an error page from the storage?)")


def test_xml_error_and_garbage_are_refused() -> None:
    with pytest.raises(ImageError, match="input of 9f is not an image: it looks like an XML"):
        _load(b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>',
              label="input of 9f")
    with pytest.raises(ImageError, match="x is not an image: its format is not recognised"):
        _load(b"\x00\x13garbage" * 50, label="x")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_an_image_error_naming_the_label(fmt: str) -> None:
    noisy = Image.effect_noise((300, 200), 80).convert("RGB")
    data = _save(noisy, fmt)
    src = _load(data[: len(data) // 2], label="output of 77aa")
    with pytest.raises(ImageError, match=r"^output of 77aa is truncated or corrupt") as info:
        src.full()
    assert not isinstance(info.value, OSError)
    with pytest.raises(ImageError, match="output of 77aa"):
        src.preview()


def test_damaged_header_is_refused_at_load() -> None:
    data = _save(Image.new("RGB", (30, 20)), "PNG")
    with pytest.raises(ImageError, match=r"^out is a damaged PNG file"):
        _load(data[:20], label="out")


def test_huge_header_is_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLarge) as info:
        _load(png_header_only(100_000, 100_000), label="output of 5e")
    message = str(info.value)
    assert "output of 5e is 100000×100000 px" in message
    assert "32000 px a side" in message and "512 MP" in message


@pytest.mark.parametrize(("size", "ok"), [((32000, 16000), True), ((32001, 10), False),
                                          ((30000, 17067), False), ((10, 32000), True)])
def test_size_limits_at_the_edges(size, ok) -> None:
    data = png_header_only(*size)  # the header alone decides: nothing is decoded
    if ok:
        assert _load(data).size == size
    else:
        with pytest.raises(ImageTooLarge):
            _load(data)


def test_missing_file_and_wrong_type(tmp_path) -> None:
    with pytest.raises(ImageError, match="input: cannot read"):
        load_image(tmp_path / "nope.png", label="input")
    with pytest.raises(TypeError):
        load_image(12345)  # type: ignore[arg-type]


def test_memory_error_becomes_a_one_line_error(monkeypatch) -> None:
    src = _load(_save(Image.new("RGB", (8, 8)), "PNG"), label="output of 3c")

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(imaging, "to_display", no_memory)
    with pytest.raises(ImageTooLarge, match="output of 3c is too large to decode"):
        src.full()


# -- modes and formats --------------------------------------------------------

def _p_image(transparent: bool) -> Image.Image:
    im = Image.new("P", (4, 4))
    im.putpalette([10, 20, 30, 200, 100, 50])
    im.putpixel((1, 1), 1)
    if transparent:
        im.info["transparency"] = 0
    return im


CASES = [
    # (name, bytes, mode, bit_depth, has_alpha, display mode, pixel (1,1) after decode)
    ("jpeg-rgb", lambda: _save(Image.new("RGB", (16, 16), (200, 40, 40)), "JPEG", quality=95),
     "RGB", 8, False, "RGB", (200, 40, 40)),
    ("jpeg-l", lambda: _save(Image.new("L", (16, 16), 90), "JPEG", quality=95),
     "L", 8, False, "RGB", (90, 90, 90)),
    ("jpeg-cmyk", lambda: _save(Image.new("CMYK", (16, 16), (0, 255, 0, 0)), "JPEG", quality=95),
     "CMYK", 8, False, "RGB", (255, 0, 255)),
    ("png-l", lambda: _save(Image.new("L", (4, 4), 33), "PNG"), "L", 8, False, "RGB", (33,) * 3),
    # Pillow writes a two-colour palette with 1 bit per pixel.
    ("png-p", lambda: _save(_p_image(False), "PNG"), "P", 1, False, "RGB", (200, 100, 50)),
    ("png-p-trns", lambda: _save(_p_image(True), "PNG"), "P", 1, True, "RGBA",
     (200, 100, 50, 255)),
    ("png-la", lambda: _save(Image.new("LA", (4, 4), (60, 120)), "PNG"), "LA", 8, True, "RGBA",
     (60, 60, 60, 120)),
    ("png-rgba", lambda: _save(Image.new("RGBA", (4, 4), (1, 2, 3, 4)), "PNG"), "RGBA", 8, True,
     "RGBA", (1, 2, 3, 4)),
    ("png-1", lambda: _save(Image.new("1", (4, 4), 1), "PNG"), "1", 1, False, "RGB", (255,) * 3),
    ("png-i16", lambda: _save(Image.new("I;16", (4, 4), 32768), "PNG"), "I;16", 16, False, "RGB",
     (128,) * 3),
    ("png-rgb48", lambda: png_rgb48(2, 2, [(65535, 32768, 0)] * 4), "RGB", 16, False, "RGB",
     (255, 128, 0)),
    ("tiff-rgb48", lambda: tiff_rgb48(2, 2, [(65535, 32768, 0)] * 4), "RGB", 16, False, "RGB",
     (255, 128, 0)),
    ("webp", lambda: _save(Image.new("RGB", (8, 8), (10, 200, 10)), "WEBP", lossless=True),
     "RGB", 8, False, "RGB", (10, 200, 10)),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_modes_and_formats(case) -> None:
    name, make, mode, depth, alpha, display, pixel = case
    data = make()
    src = _load(data, label=name)
    info = src.info
    assert (info.mode, info.bit_depth, info.has_alpha) == (mode, depth, alpha)
    assert info.format == name.split("-")[0].upper()
    assert info.file_size == len(data)
    full = src.full()
    assert full.mode == display and full.size == src.size
    got = full.getpixel((1, 1))
    assert len(got) == len(pixel)
    assert all(abs(a - b) <= 2 for a, b in zip(got, pixel)), got  # JPEG rounding
    assert src.preview().getpixel((1, 1)) == got


def test_sixteen_bit_values_are_scaled() -> None:
    im = Image.new("I;16", (3, 1))
    for x, v in enumerate([65535, 32768, 0]):
        im.putpixel((x, 0), v)
    full = _load(_save(im, "PNG")).full()
    assert [full.getpixel((x, 0)) for x in range(3)] == [(255,) * 3, (128,) * 3, (0,) * 3]


def test_embedded_profile_is_converted_to_srgb() -> None:
    icc = swapped_rgb_profile()
    raw = Image.new("RGB", (8, 8), (200, 30, 30))
    src = _load(_save(raw, "PNG", icc_profile=icc))
    assert src.info.icc_profile == "Swapped primaries test RGB"
    expected = ImageCms.profileToProfile(
        raw, ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"),
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC).getpixel((0, 0))
    assert src.full().getpixel((3, 3)) == expected != (200, 30, 30)
    assert src.preview(4).getpixel((1, 1)) == expected


def test_sources_path_bytes_pil_and_arrays(tmp_path) -> None:
    im = Image.new("RGB", (6, 4), (5, 6, 7))
    path = tmp_path / "x.png"
    im.save(path)
    for source in (path, str(path), path.read_bytes(), bytearray(path.read_bytes()), im):
        assert _load(source).full().getpixel((5, 3)) == (5, 6, 7)
    assert _load(im).info.file_size is None
    gray16 = np.full((4, 6), 65535, np.uint16)
    assert _load(gray16).full().getpixel((0, 0)) == (255, 255, 255)
    rgb16 = np.zeros((4, 6, 3), np.uint16)
    rgb16[..., 1] = 32768
    assert _load(rgb16).full().getpixel((0, 0)) == (0, 128, 0)
    rgbf = np.full((4, 6, 3), 0.5, np.float32)
    assert _load(rgbf).full().getpixel((0, 0)) == (128, 128, 128)
    with pytest.raises(ImageError, match="arr: cannot show an array"):
        _load(np.zeros((2, 2, 7), np.uint8), label="arr")


# -- orientation --------------------------------------------------------------

# Where the file's top-left pixel ends up after each EXIF orientation, for a
# W×H file (display is H×W for 5-8).
CORNERS = {1: "tl", 2: "tr", 3: "br", 4: "bl", 5: "tl", 6: "tr", 7: "br", 8: "bl"}


def _oriented_file(orientation: int, fmt: str = "PNG") -> tuple[bytes, Image.Image]:
    im = Image.new("RGB", (6, 4), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 2, 2))  # the file's top-left corner is red
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(im, fmt, exif=exif.tobytes()), im


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientations(orientation: int) -> None:
    data, _ = _oriented_file(orientation)
    src = _load(data)
    swapped = orientation >= 5
    assert src.size == ((4, 6) if swapped else (6, 4))
    assert src.info.orientation == orientation
    full = src.full()
    w, h = full.size
    corner = {"tl": (0, 0), "tr": (w - 1, 0), "br": (w - 1, h - 1), "bl": (0, h - 1)}
    assert full.getpixel(corner[CORNERS[orientation]]) == (255, 0, 0)
    assert full.tobytes() == ImageOps.exif_transpose(Image.open(io.BytesIO(data))).tobytes()
    assert src.preview().tobytes() == full.tobytes()
    if orientation != 1:
        assert src.info.exif["orientation"].startswith(str(orientation))


def test_jpeg_orientation_and_draft_preview() -> None:
    data, _ = _oriented_file(6, "JPEG")
    src = _load(data)
    assert src.size == (4, 6)
    assert src.full().getpixel((3, 0))[0] > 200  # red ends top-right


# -- previews -----------------------------------------------------------------

def _big_jpeg() -> bytes:
    im = Image.linear_gradient("L").resize((2400, 1600)).convert("RGB")
    return _save(im, "JPEG", quality=90)


def test_jpeg_preview_uses_draft_not_full_decode(monkeypatch) -> None:
    decoded: list[tuple[int, int]] = []
    original = JpegImagePlugin.JpegImageFile.load

    def spy(self):
        decoded.append(self.size)
        return original(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)
    src = _load(_big_jpeg())
    preview = src.preview(300)
    assert (preview.size, preview.mode) == ((300, 200), "RGB")
    assert decoded and max(decoded) <= (600, 400), decoded  # DCT scaling, not 2400×1600
    assert src.preview(300) is preview  # cached
    decoded.clear()
    assert src.full().size == (2400, 1600)
    assert decoded == [(2400, 1600)]


def test_png_preview_reduces_then_resamples(monkeypatch) -> None:
    calls: list[int] = []
    original = Image.Image.reduce

    def spy(self, factor, box=None):
        calls.append(factor)
        return original(self, factor, box)

    monkeypatch.setattr(Image.Image, "reduce", spy)
    im = Image.linear_gradient("L").resize((1000, 500)).convert("RGB")
    src = _load(_save(im, "PNG"))
    preview = src.preview(100)
    assert preview.size == (100, 50)
    assert calls and calls[0] == 5  # 1000 → 200 by reduce(5), then LANCZOS to 100
    assert abs(preview.getpixel((50, 25))[0] - im.getpixel((500, 250))[0]) <= 3


def test_preview_of_small_image_is_full_size_and_from_cache() -> None:
    src = _load(_save(Image.new("RGBA", (40, 30), (9, 9, 9, 9)), "PNG"))
    full = src.full()
    preview = src.preview()
    assert preview.size == (40, 30) and preview.mode == "RGBA"
    assert preview.tobytes() == full.tobytes()
    with pytest.raises(ValueError):
        src.preview(0)


def test_full_is_decoded_once_for_concurrent_callers(monkeypatch) -> None:
    src = _load(_big_jpeg())
    results: list[Image.Image] = []
    threads = [threading.Thread(target=lambda: results.append(src.full())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is results[0] for r in results)


def test_close_releases_and_refuses() -> None:
    cache = DecodedCache()
    src = load_image(_save(Image.new("RGB", (8, 8)), "PNG"), cache=cache, label="in")
    src.full()
    assert len(cache) == 1
    src.close()
    assert len(cache) == 0
    with pytest.raises(ImageError, match="in was closed"):
        src.preview()


# -- metadata -----------------------------------------------------------------

def test_metadata_summary() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS R5"
    exif[0x0132] = "2024:05:01 10:00:00"
    exif[0x0131] = "Topaz Photo AI"
    data = _save(Image.new("RGB", (40, 30)), "JPEG", exif=exif.tobytes(), dpi=(300, 300),
                 icc_profile=swapped_rgb_profile("Adobe-ish"))
    info = _load(data).info
    assert info.exif == {"camera": "Canon EOS R5", "dpi": "300×300",
                         "datetime": "2024:05:01 10:00:00", "software": "Topaz Photo AI"}
    table = info.as_dict()
    assert table["megapixels"] == 0.0 and table["icc_profile"] == "Adobe-ish"
    assert table["width"] == 40 and table["format"] == "JPEG"
    assert ImageInfo(4000, 2000, "RGB", 8, "PNG", None).megapixels == 8.0


def test_scale_factor_follows_alignment() -> None:
    a = ImageInfo(1000, 500, "RGB", 8, "JPEG", None)
    b = ImageInfo(4000, 2000, "RGB", 8, "PNG", None)
    assert scale_factor(a, b) == 4.0
    assert scale_factor((100, 100), (400, 200)) == 2.0  # letterboxed: fits the height
    assert scale_factor((100, 100), (400, 200), crop_to_fill=True) == 4.0


# -- encoding -----------------------------------------------------------------

def test_encode_formats_round_trip() -> None:
    im = Image.new("RGBA", (32, 32), (200, 10, 10, 255))
    im.paste((0, 0, 0, 0), (0, 0, 16, 16))
    lossless = Image.open(io.BytesIO(encode(im, lossless=True)))
    assert lossless.format == "WEBP" and lossless.convert("RGBA").tobytes() == im.tobytes()
    png = Image.open(io.BytesIO(encode(im, format="png")))
    assert png.format == "PNG" and png.convert("RGBA").tobytes() == im.tobytes()
    jpeg = Image.open(io.BytesIO(encode(im, format="jpeg", quality=95)))
    assert jpeg.format == "JPEG" and jpeg.mode == "RGB"
    corner = jpeg.crop((0, 0, 16, 16)).getextrema()
    assert all(150 < lo and hi > 240 for lo, hi in corner)  # grey/white checkerboard
    lossy = Image.open(io.BytesIO(encode(im.convert("RGB"), quality=50)))
    assert lossy.format == "WEBP"
    with pytest.raises(ValueError):
        encode(im, format="gif")
    with pytest.raises(ValueError):
        encode(im, quality=0)


# -- the pieces together ------------------------------------------------------

def test_tiles_of_loaded_files_align() -> None:
    small = Image.new("RGB", (20, 10), (0, 0, 0))
    small.paste((255, 255, 255), (10, 0, 20, 10))
    big = small.resize((80, 40), Image.Resampling.NEAREST)
    tiles = TileSource(_load(_save(small, "PNG")), _load(_save(big, "PNG")))
    assert tiles.placement == align((20, 10), (80, 40)) and tiles.output_size == (80, 40)
    left_in = tiles.region("input", 0, 0, 40, 40)
    left_out = tiles.region("output", 0, 0, 40, 40)
    assert left_in.tobytes() == left_out.tobytes()
    assert tiles.region("input", 39, 0, 2, 1).getpixel((0, 0))[:3] == (0, 0, 0)
    assert tiles.region("input", 39, 0, 2, 1).getpixel((1, 0))[:3] == (255, 255, 255)


def test_jpeg_preview_may_land_slightly_under_its_size_to_decode_less(tmp_path) -> None:
    path = tmp_path / "big.jpg"
    Image.new("RGB", (2048, 1536), (90, 120, 200)).save(path, quality=90)
    image = load_image(path, label="output")
    # 1100 asked: half-scale decoding gives 1024 (7 % under) instead of a full decode.
    small = image.preview(1100)
    assert small.size == (1024, 768)
    assert small.getpixel((500, 400)) == pytest.approx((90, 120, 200), abs=3)
    # Far from a power-of-two step, the preview has exactly the size asked.
    assert load_image(path, label="output").preview(1500).size == (1500, 1125)


def test_preview_a_little_under_two_times_smaller_is_a_box_reduce(monkeypatch) -> None:
    # 4000 → 2048 asked: a box reduce by 2 (2000 px) instead of LANCZOS over every pixel.
    im = Image.new("RGB", (400, 300), (10, 20, 30))
    resized: list[object] = []
    original = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize",
                        lambda self, *a, **k: resized.append(a) or original(self, *a, **k))
    preview = load_image(im, label="output").preview(205)
    assert preview.size == (200, 150) and resized == []
    # Not when it would land more than 10 % under the size asked.
    assert load_image(im, label="output").preview(260).size == (260, 195)


def test_reducing_an_image_with_alpha_in_strips_gives_the_same_pixels() -> None:
    from topaz_nb.imaging import source as imaging

    rng = np.random.default_rng(3)
    im = Image.fromarray(rng.integers(0, 256, (2003, 2101, 4), np.uint8), "RGBA")
    strips = imaging._reduce(im, 3)
    assert strips.size == im.reduce(3).size
    assert strips.tobytes() == im.reduce(3).tobytes()
