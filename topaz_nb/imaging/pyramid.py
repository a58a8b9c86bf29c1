"""A tiled, multi-resolution copy of a large image on disk, for deep zoom.

Why: looking at 100 % is what a reviewer does most, and without this the first
full-resolution tile of a 48–201 MP PNG costs a whole decode (1.3–5.3 s, with
0.3–0.9 GB resident) because PNG cannot be read in part.  A pyramid is a
lossless tiled TIFF (512-px tiles, each level half the previous one, down to
one tile) written in one streaming pass by libvips, which reads the source
sequentially and never holds the whole image: any tile of any level is then a
read of a few stored tiles (2–4 ms; a whole tile pair cut, compressed and sent
takes ~25 ms), with small memory, also from a new kernel, since the file
stays beside the download.

Where it is written is not decided here: callers pass the path (the download
cache's layout owns it).  A pyramid's stamp (``<path>.json``, written after
the pyramid is renamed into place) records its source's size and
modification time, and the pyramid is rebuilt when they change or the stamp
is missing; it is written to a temporary name and renamed into place, so a
half-written file is never read.

The one decode can also run while the file is still arriving
(:func:`build_arriving`, driven by :mod:`~topaz_nb.imaging.arriving`): the
pyramid is put in place, stamped, only once the download has become the
checked file, and thrown away when it does not.

Which images get one (:func:`eligible`):

* large ones: at least :data:`MIN_PIXELS`.  Below that the decoded image is
  small enough to keep in the in-memory LRU (:class:`topaz_nb.imaging.decoded.DecodedCache`),
  where a tile costs ~1.5 ms and nothing touches the disk.  Measured with
  ``bench/pyramid_compression.py`` on the bench's photo-like PNGs: at 12 MP
  the Pillow decode took 0.20 s (86 MB peak) and the pyramid build 0.21 s
  (142 MB peak, 51 MB on disk), so a pyramid buys nothing; at 48 MP the decode
  holds 192 MB (230 MB peak) while the build takes the same 0.70 s with a
  lower peak (186 MB) and leaves nothing resident.  The threshold sits where
  the decoded image (4 B/px) passes 64 MB: 16 MP.
* whose file pixels are already display pixels: 8-bit gray or RGB, with or
  without alpha, no colour profile other than sRGB and no EXIF rotation.
  Others (16-bit, CMYK, palette, wide-gamut, rotated) go through Pillow's
  display conversion in :mod:`topaz_nb.imaging.color`, which libvips would not
  reproduce pixel for pixel; they keep the decoded-LRU path.

Compression: see :data:`COMPRESSION` and :data:`FLAT_COMPRESSION`.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = ["COMPRESSION", "FLAT_COMPRESSION", "MIN_PIXELS", "TILE", "LevelView", "Pyramid",
           "available", "build", "build_arriving", "eligible", "open_pyramid", "thumbnail"]

#: Images with fewer pixels stay in the decoded in-memory LRU (see the module doc).
MIN_PIXELS = 16_000_000
#: Tile side in the file, the same as the widget's tiles so one tile is read per tile.
TILE = 512
#: Tiles of photographic images are stored uncompressed.  Measured with
#: ``bench/pyramid_compression.py`` on the bench's photo-like outputs (build,
#: disk, tile p95): at 48 MP none 0.70 s / 202 MB / 3.6 ms, deflate+predictor
#: 2.54 s / 205 MB / 14 ms, LZW+predictor 3.94 s / 177 MB / 19 ms; at 201 MP
#: none 3.57 s / 806 MB, deflate 10.8 s / 816 MB.  Grain does not compress, so
#: compression only costs time; zstd is not built into pyvips-binary's libtiff.
COMPRESSION: dict[str, Any] = {"compression": "none"}
#: Tiles of images whose lossless file is small for its pixels (flat colour,
#: graphics, big transparent areas) are deflated: on a 22000² RGBA PNG of
#: 20 MB, none took 8.9 s and 2.6 GB, deflate+predictor 4.6 s and 57 MB.
FLAT_COMPRESSION: dict[str, Any] = {"compression": "deflate", "predictor": "horizontal",
                                    "level": 1}
#: Below this many file bytes a pixel a lossless source counts as flat (photos
#: as PNG take ~2 B/px, the flat RGBA PNG above 0.04).
FLAT_BYTES_PER_PIXEL = 0.5

_VERSION = 2  # 2: the stamp beside the pyramid, so a build may start before the source is final
_BANDS_TO_MODE = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
_ELIGIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA"})
_FORMATS = frozenset({"PNG", "TIFF", "JPEG", "WEBP"})

try:  # libvips is optional at import time: without it no pyramid is built
    import pyvips as _vips
except (ImportError, OSError):  # pragma: no cover - depends on the installation
    _vips = None


def available() -> bool:
    """Whether libvips (pyvips) can be used here."""
    return _vips is not None


def eligible(*, width: int, height: int, mode: str, bit_depth: int, format: str | None,
             icc_srgb_or_none: bool, orientation: int) -> bool:
    """Whether an image with these header facts gets a pyramid (see the module doc)."""
    return (available() and width * height >= MIN_PIXELS and mode in _ELIGIBLE_MODES
            and bit_depth == 8 and (format or "").upper() in _FORMATS
            and icc_srgb_or_none and orientation == 1)


@dataclass(frozen=True)
class _Level:
    image: Any  # pyvips.Image opened for random access
    size: tuple[int, int]


class Pyramid:
    """An opened pyramid: :meth:`region` reads pixels of any level.

    Thread-safe: libvips images are immutable and every read makes its own
    region.
    """

    def __init__(self, path: Path, levels: list[_Level]) -> None:
        self.path = path
        self._levels = levels

    @property
    def size(self) -> tuple[int, int]:
        """Full-resolution size."""
        return self._levels[0].size

    @property
    def level_sizes(self) -> list[tuple[int, int]]:
        """Each level's size, full resolution first."""
        return [lv.size for lv in self._levels]

    def level_for(self, zoom: float) -> int:
        """The smallest level that still has at least ``zoom`` of the full
        resolution's pixels, so a tile is never magnified from a reduced level."""
        width = self._levels[0].size[0]
        best = 0
        for index, level in enumerate(self._levels):
            if level.size[0] >= zoom * width - 1e-6:
                best = index
        return best

    def region(self, level: int, box: tuple[int, int, int, int]) -> Image.Image:
        """Pixels of ``box`` (left, top, right, bottom in that level's pixels) as
        an ``RGB`` or ``RGBA`` image."""
        lv = self._levels[level]
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        data = lv.image.crop(x0, y0, w, h).write_to_memory()
        mode = _BANDS_TO_MODE[lv.image.bands]
        im = Image.frombuffer(mode, (w, h), data, "raw", mode, 0, 1)
        if mode in ("L", "LA"):
            return im.convert("RGBA" if mode == "LA" else "RGB")
        return im

    def view(self, level: int) -> LevelView:
        """One level as the small image-like object :func:`topaz_nb.imaging.tiles.cut` takes."""
        return LevelView(self, level)


class LevelView:
    """One pyramid level with the two things :func:`~topaz_nb.imaging.tiles.cut` uses:
    ``size`` and ``crop(box)``."""

    def __init__(self, pyramid: Pyramid, level: int) -> None:
        self._pyramid = pyramid
        self._level = level
        self.size = pyramid.level_sizes[level]
        self.width, self.height = self.size

    def crop(self, box: tuple[int, int, int, int]) -> Image.Image:
        return self._pyramid.region(self._level, box)


def _stamp(source: Path) -> dict[str, int]:
    st = source.stat()
    return {"v": _VERSION, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _write_stamp(path: Path, stamp: dict[str, int]) -> None:
    target = _stamp_path(path)
    temp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.part")
    temp.write_text(json.dumps(stamp), encoding="utf-8")
    os.replace(temp, target)


def open_pyramid(path: Path, source: Path) -> Pyramid | None:
    """The pyramid at ``path`` if it exists and was built from ``source`` as it
    is now; ``None`` otherwise (missing, stale, unstamped, unreadable)."""
    if _vips is None:
        return None
    try:
        meta = json.loads(_stamp_path(path).read_text(encoding="utf-8"))
        if meta != _stamp(source):
            return None
        first = _vips.Image.new_from_file(os.fspath(path), access="random")
        pages = first.get("n-pages") if "n-pages" in first.get_fields() else 1
        levels = [_Level(first, (first.width, first.height))]
        for page in range(1, pages):
            im = _vips.Image.new_from_file(os.fspath(path), page=page, access="random")
            levels.append(_Level(im, (im.width, im.height)))
    except (_vips.Error, OSError, ValueError, TypeError):
        return None
    return Pyramid(path, levels)


_BUILD_LOCK = threading.Lock()
builds = 0
"""How many pyramids this process has built (each one full decode); for tests."""
streamed_builds = 0
"""How many of them were decoded while their source was arriving; for tests."""


def build(source: Path, path: Path, *, compression: dict[str, Any] | None = None) -> Pyramid:
    """Decode ``source`` once, streaming, and write its pyramid to ``path``.

    Raises ``pyvips.Error`` (or ``OSError``) when the source cannot be decoded
    or the file cannot be written; nothing is left at ``path`` then.
    """
    if _vips is None:  # pragma: no cover - callers check available()
        raise RuntimeError("libvips (pyvips) is not installed")
    stamp = _stamp(source)
    image = _vips.Image.new_from_file(os.fspath(source), access="sequential", fail=True)
    part = _write_part(image, path, stamp["size"], compression)
    _put_in_place(part, path, stamp)
    opened = open_pyramid(path, source)
    if opened is None:
        raise OSError(f"the pyramid written to {path} cannot be read back")
    return opened


def _write_part(image: Any, path: Path, file_size: int,
                compression: dict[str, Any] | None) -> Path:
    """Write ``image``'s pyramid to a temporary name beside ``path``; its name."""
    if image.format != "uchar":
        raise ValueError(f"the source of {path.name} is not 8-bit ({image.format})")
    image = image.copy()  # a private header, stripped of what tiles do not need
    for field in ("icc-profile-data", "exif-data", "xmp-data", "iptc-data"):
        if field in image.get_fields():
            image.remove(field)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    if compression is None:
        flat = (image.get("vips-loader") if "vips-loader" in image.get_fields() else "") \
            in ("pngload", "pngload_source", "tiffload", "tiffload_source") \
            and file_size < FLAT_BYTES_PER_PIXEL * image.width * image.height
        compression = FLAT_COMPRESSION if flat else COMPRESSION
    try:
        image.tiffsave(os.fspath(part), tile=True, tile_width=TILE, tile_height=TILE,
                       pyramid=True, bigtiff=True, **compression)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise
    return part


def _put_in_place(part: Path, path: Path, stamp: dict[str, int]) -> None:
    """Rename a written pyramid into place, then stamp it (a crash between the
    two leaves an unstamped pyramid, which is rebuilt)."""
    global builds
    try:
        with contextlib.suppress(FileNotFoundError):
            _stamp_path(path).unlink()
        os.replace(part, path)
        _write_stamp(path, stamp)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise
    with _BUILD_LOCK:
        builds += 1


def build_arriving(image: Any, path: Path, *, file_size: int,
                   final: Callable[[], Path | None]) -> Pyramid | None:
    """Write the pyramid of ``image``, a sequential libvips image being decoded
    from a download's bytes as they arrive (:mod:`~topaz_nb.imaging.arriving`),
    and put it in place stamped with ``final()``, the checked file the
    download became; ``None`` (and nothing left at ``path``) when ``final()``
    says the download did not become one or became a file of another size.
    Raises ``pyvips.Error`` when the bytes do not decode."""
    global streamed_builds
    part: Path | None = _write_part(image, path, file_size, None)
    try:
        checked = final()
        if checked is None or checked.stat().st_size != file_size:
            return None
        assert part is not None
        _put_in_place(part, path, _stamp(checked))
        part = None
        with _BUILD_LOCK:
            streamed_builds += 1
        return open_pyramid(path, checked)
    finally:
        if part is not None:
            with contextlib.suppress(OSError):
                part.unlink()


def thumbnail(pyramid: Pyramid, max_side: int, *, slack: float = 1.0) -> Image.Image:
    """The smallest level whose long side is at least ``slack × max_side`` (or
    the full resolution), read whole; the caller resamples the last step, if any.

    With ``slack`` under 1 a level a little smaller than asked is taken as it
    is, as a drafted JPEG is: 8000 px asked at 2048 reads the 2000-px level
    (12 MB) instead of the 4000-px one (48 MB) and resamples nothing.
    """
    index = 0
    for i, (w, h) in enumerate(pyramid.level_sizes):
        if max(w, h) >= max_side * slack:
            index = i
    w, h = pyramid.level_sizes[index]
    return pyramid.region(index, (0, 0, w, h))
