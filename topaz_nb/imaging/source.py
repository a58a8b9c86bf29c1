"""Open the two images of a comparison safely and make them fit for display.

Inputs are whatever users uploaded (CMYK JPEGs, EXIF-rotated phone photos,
16-bit, palette and grayscale PNGs, embedded ICC profiles); outputs are large,
up to :data:`MAX_SIDE` px a side and :data:`MAX_PIXELS` px in all.  So:

* :func:`load_image` reads the header only.  It trusts the bytes, not the file
  name: an HTML or XML error page saved as ``.jpg`` is refused as such, and an
  image larger than the API can produce is refused (:class:`ImageTooLarge`)
  before a byte of pixels is decoded.  Every failure, at load or at the first
  decode (truncated files), is a one-line :class:`ImageError` naming the image.
* :meth:`SourceImage.preview` is cheap: JPEGs are decoded at reduced size
  (``draft``), other formats are box-reduced by an integer factor (no
  aliasing) and only the last, small step is resampled with LANCZOS.  The result is kept in
  memory, and for files of the download cache also on disk beside the file
  (:class:`~topaz_nb.imaging.previews.PreviewStore`) together with its encodings, so
  viewing a process again, even from a new kernel, decodes nothing.
* :meth:`SourceImage.full` decodes once into a shared byte-bounded
  :class:`DecodedCache`.  Deep-zoom tiles (:class:`TileSource`) of a large
  download are read from its tiled pyramid on disk (:mod:`topaz_nb.imaging.pyramid`;
  for a PNG the preview's one decode writes it), and of other images cut
  from the decoded image, which a small image's preview keeps in the cache.
* Display pixels are always 8-bit sRGB ``RGB`` or ``RGBA``, EXIF-oriented.

Coordinates: every view works in the output's pixel grid; :func:`align`
places the input on it.
"""

from __future__ import annotations

import io
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, Union

from PIL import Image, ImageFile

from .._sniff import UnrecognisedImage, describe_non_image, open_header
from .._tasks import shared_pool
from ..errors import ImageError, ImageTooLarge, TopazError
from . import arriving as _arriving
from . import pyramid as _pyramid
from .align import Placement, align
from .color import display_mode, profile_description, to_display
from .decoded import DecodedCache, default_budget
from .previews import Derived, PreviewStore
from .tiles import TileSource

__all__ = [
    "MAX_PIXELS", "MAX_SIDE", "DecodedCache", "ImageInfo", "Placement", "SourceImage",
    "TileSource", "align", "decode_while_arriving", "encode", "load_image", "scale_factor",
]

#: The largest output the Topaz API produces, in pixels.
MAX_PIXELS = 512_000_000
#: The longest side the Topaz API produces, in pixels.
MAX_SIDE = 32000

_FIRST_USE = threading.Lock()
_DEFAULT_CACHE: DecodedCache | None = None


def _first_use() -> DecodedCache:
    """Set up what the imaging layer needs, once, when it is first used.

    Importing the package changes nothing in the process; the first image
    opened does this:

    * Pillow's decompression-bomb ceiling (89 MP by default: a warning above
      it, an error above twice it) would refuse legitimate Topaz outputs of up
      to 512 MP wherever Pillow checks it (cropping or copying a large part of
      a big image, multi-image formats).  It is raised, deliberately and only
      here, to the API's own maximum, which makes Pillow's error threshold
      2 × MAX_PIXELS.  Files are refused well before that: :func:`load_image`
      checks the header against MAX_SIDE/MAX_PIXELS itself and reads headers
      without Pillow's check, so its warning or error never reaches a user.
    * The decoded images shared by every view in this process get their
      cache: a quarter of the RAM, at most 2 GiB.

    Returns that shared cache.
    """
    global _DEFAULT_CACHE
    with _FIRST_USE:
        if _DEFAULT_CACHE is None:
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            _DEFAULT_CACHE = DecodedCache(default_budget())
        return _DEFAULT_CACHE

_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ORIENT_NAMES = {
    1: "normal", 2: "mirrored", 3: "rotated 180°", 4: "flipped vertically",
    5: "mirrored, rotated 90° CCW", 6: "rotated 90° CW", 7: "mirrored, rotated 90° CW",
    8: "rotated 90° CCW",
}
# Modes Image.reduce() takes; others are converted for display before reducing.
_REDUCIBLE = frozenset({"L", "LA", "RGB", "RGBA", "CMYK", "I", "F"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_HEAD = 1024
_DRAFT_SLACK = 0.9
"""A JPEG preview may come out up to 10 % under its size when that halves its scale."""

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, Image.Image, Any]


@dataclass(frozen=True)
class ImageInfo:
    """What an image file is, read from its header.

    ``width``/``height`` are the display size (after EXIF orientation);
    ``mode`` and ``bit_depth`` describe the file's own pixels (a 48-bit TIFF is
    ``"RGB"``, 16).  ``exif`` is a short summary (camera, lens, DPI, date,
    software, orientation) of what is present.
    """

    width: int
    height: int
    mode: str
    bit_depth: int
    format: str | None
    icc_profile: str | None
    exif: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    has_alpha: bool = False
    file_size: int | None = None
    orientation: int = 1

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    def as_dict(self) -> dict[str, object]:
        """Plain values for a metadata table."""
        data: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["exif"] = dict(self.exif)
        data["megapixels"] = round(self.megapixels, 2)
        return data


def scale_factor(input_info: ImageInfo | tuple[int, int], output_info: ImageInfo | tuple[int, int],
                 *, crop_to_fill: bool | None = None) -> float:
    """How many output pixels one input pixel became (e.g. 4.0 for a 4× upscale).

    Taken from :func:`align`, so it is the magnification the comparison view
    shows: for the same aspect ratio it is output width over input width; for
    a letterboxed output the smaller of the width and height ratios, for a
    cropped one (``crop_to_fill``) the larger.
    """
    return align(_size_of(input_info), _size_of(output_info), crop_to_fill=crop_to_fill).scale


def _size_of(value: ImageInfo | tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, ImageInfo):
        return value.size
    return (int(value[0]), int(value[1]))


class SourceImage:
    """One image (file, bytes, PIL image or array), opened lazily: header read
    and checked at construction, pixels decoded on demand.

    ``label`` names the image in every error (e.g. ``"output of 1b2c…"``).
    Images given as PIL images are used as they are, not copied; do not
    modify them afterwards.
    """

    def __init__(self, opener: Callable[[], Any], *, label: str, cache: DecodedCache,
                 pil: Image.Image | None = None, file_size: int | None = None,
                 path: Path | None = None, derived: Derived | None = None,
                 pyramid_path: Path | None = None,
                 on_pyramid: Callable[[Path], None] | None = None,
                 arrived: Future[Any] | None = None) -> None:
        self.label = label
        self._arrived = arrived if path is not None else None
        self._derived = derived if path is not None else None
        self._file_path = path
        if pyramid_path is None and self._derived is not None:
            pyramid_path = self._derived("pyramid.tif")
        self._pyramid_path = pyramid_path if path is not None else None
        self._on_pyramid = on_pyramid
        self._pyramid_future: Future[_pyramid.Pyramid] | None = None
        self._opener = opener
        self._pil = pil
        self._cache = cache
        self._key = object()
        self._preview: tuple[int, Image.Image] | None = None
        self._encoded: dict[tuple[int, str], bytes] = {}
        self._made: set[int] = set()
        self._lock = threading.Lock()
        self._lock_pyr = threading.Lock()
        self._closed = False
        if pil is not None:
            self.info = _guarded(label, lambda: _read_info(pil, label, file_size))
        else:
            self.info = _guarded(label, lambda: self._inspect(file_size))

    @property
    def size(self) -> tuple[int, int]:
        """Display size (after EXIF orientation)."""
        return (self.info.width, self.info.height)

    def derived_path(self, name: str) -> Path | None:
        """Where the file derived from this image under ``name`` is kept, as the
        owner of the file's layout said (``derived=`` of :func:`load_image`),
        or ``None`` when nothing derived from it is kept on disk."""
        return self._derived(name) if self._derived is not None else None

    def _store(self, max_side: int) -> PreviewStore | None:
        if self._file_path is None or self._derived is None:
            return None
        return PreviewStore(self._file_path, max_side, self._derived)

    def preview(self, max_side: int = 2048) -> Image.Image:
        """A display-ready image whose long side is at most ``max_side`` px.

        Reuses the decoded full image when the cache has it; otherwise a JPEG
        is decoded at a reduced scale and others are reduced by an integer
        factor before the final LANCZOS resample.  The last preview is kept;
        treat it as read-only.
        """
        if max_side < 1:
            raise ValueError("max_side must be at least 1")
        with self._lock:
            self._check_open()
            if self._preview is not None and self._preview[0] == max_side:
                return self._preview[1]
            store = self._store(max_side)
            if store is not None:
                _stored_by_now(store.source)
            image = store.load_image() if store is not None else None
            if image is None:
                image = _guarded(self.label, lambda: self._make_preview(max_side))
                self._made.add(max_side)
                if store is not None:
                    _store_later(store.source, store.save_image, image)
            self._preview = (max_side, image)
            return image

    def preview_bytes(self, max_side: int = 2048, *, format: str = "webp", quality: int = 85,
                      lossless: bool = False) -> bytes:
        """The preview encoded for transport (see :func:`encode`), made once.

        For files of the download cache the encoding is also kept on disk
        beside the file, so a second view of a process, even from a new
        kernel, neither decodes nor encodes anything.
        """
        image = self.preview(max_side)
        tag = f"{format.lower()}-q{quality}{'-lossless' if lossless else ''}"
        key = (max_side, tag)
        data = self._encoded.get(key)
        if data is not None:
            return data
        # A preview this object has just made has no stored encoding worth
        # waiting for: its own entries are still being written.
        fresh = max_side in self._made
        store = self._store(max_side)
        if store is not None and not fresh:
            _stored_by_now(store.source)
        data = store.load_encoded(tag) if store is not None and not fresh else None
        if data is None:
            data = encode(image, format=format, quality=quality, lossless=lossless)
            if store is not None:
                _store_later(store.source, store.save_encoded, tag, data)
        self._encoded[key] = data
        return data

    @property
    def has_pyramid(self) -> bool:
        """Whether tiles of this image come from a pyramid on disk (see
        :mod:`topaz_nb.imaging.pyramid`): a large file of the download cache whose
        pixels are display pixels as they are.  Others are decoded whole."""
        return self._pyramid_path is not None and _gets_pyramid(self.info)

    def pyramid(self) -> _pyramid.Pyramid | None:
        """This image's pyramid, opened from disk or built now (one streaming
        decode, once: concurrent callers wait for the same build); ``None``
        when the image does not get one (:attr:`has_pyramid`)."""
        if not self.has_pyramid:
            return None
        self._check_open()
        with self._lock_pyr:
            future = self._pyramid_future
            owner = future is None
            if owner:
                future = self._pyramid_future = Future()
        assert future is not None
        if not owner:
            return future.result()
        assert self._file_path is not None and self._pyramid_path is not None
        try:
            pyr = None
            if self._arrived is not None and isinstance(self._arrived.result(), _pyramid.Pyramid):
                # Decoded while the download arrived (decode_while_arriving).
                pyr = _pyramid.open_pyramid(self._pyramid_path, self._file_path)
                if pyr is not None and self._on_pyramid is not None:
                    self._on_pyramid(self._pyramid_path)
            if pyr is None:
                pyr = _pyramid.open_pyramid(self._pyramid_path, self._file_path)
            if pyr is None:
                pyr = _guarded(self.label, self._build_pyramid)
        except BaseException as exc:
            with self._lock_pyr:
                self._pyramid_future = None  # a later call may try again
            future.set_exception(exc)
            raise
        future.set_result(pyr)
        return pyr

    def _build_pyramid(self) -> _pyramid.Pyramid:
        assert self._file_path is not None and self._pyramid_path is not None
        try:
            built = _pyramid.build(self._file_path, self._pyramid_path)
        except Exception as exc:
            problem = _write_problem(exc)
            if problem is None:
                raise  # the source itself: reported as truncated or corrupt
            raise ImageError(
                f"{self.label}: cannot write its tile pyramid in "
                f"{self._pyramid_path.parent} ({problem}); free disk space or lower "
                "Topaz.cache_max_bytes") from None
        if self._on_pyramid is not None:
            self._on_pyramid(self._pyramid_path)
        return built

    def pyramid_ready(self) -> bool:
        """Whether :meth:`pyramid` would return without building."""
        future = self._pyramid_future
        return future is not None and future.done() and future.exception() is None

    def prepare_tiles(self) -> None:
        """Make full-resolution tiles cheap: open or build the pyramid, or for
        images without one decode the full image into the cache.  Meant for a
        background thread once the first view is shown."""
        if self.has_pyramid:
            self.pyramid()
        else:
            self.full()

    def full(self, *, cache: DecodedCache | None = None) -> Image.Image:
        """The full-resolution display-ready image, decoded once and kept in
        ``cache`` (by default the cache this image was loaded with).  Treat it
        as read-only: it is shared."""
        self._check_open()
        return (cache if cache is not None else self._cache).get_or_load(
            self._key, lambda: _guarded(self.label, self._decode_full))

    def close(self) -> None:
        """Drop the decoded pixels and the preview; the image cannot be used after."""
        self._closed = True
        self._preview = None
        self._pyramid_future = None
        self._cache.discard(self._key)
        self._pil = None

    def __enter__(self) -> SourceImage:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        i = self.info
        return f"<SourceImage {self.label!r} {i.width}×{i.height} {i.format or ''} {i.mode}>"

    # -- decoding ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ImageError(f"{self.label} was closed; load it again to view it")

    @contextmanager
    def _file(self) -> Iterator[IO[bytes]]:
        fp = self._opener()
        try:
            yield fp
        finally:
            fp.close()

    @contextmanager
    def _header(self) -> Iterator[tuple[Image.Image, bool]]:
        """The image in its file's orientation, not yet decoded; the flag says
        whether it belongs to this object (so it may be changed in place)."""
        if self._pil is not None:
            yield self._pil, False
            return
        with self._file() as fp:
            # Not im.close(): that would also discard the pixels, which may be
            # handed on as they are; closing the file is enough.
            yield _open(fp, self.label), True

    def _inspect(self, file_size: int | None) -> ImageInfo:
        with self._file() as fp:
            what = describe_non_image(fp.read(_HEAD))
            if what is not None:
                raise ImageError(f"{self.label} is not an image: {what}")
            fp.seek(0)
            im = _open(fp, self.label)
            try:
                return _read_info(im, self.label, file_size)
            finally:
                im.close()

    def _decode_full(self) -> Image.Image:
        arrived, self._arrived = self._arrived, None
        if arrived is not None:
            decoded = arrived.result()  # decoded while the download arrived, if it was
            if isinstance(decoded, Image.Image) and decoded.size == (self.info.width,
                                                                     self.info.height):
                return to_display(decoded, in_place=True)
        with self._header() as (im, owned):
            im.load()
            display = to_display(im, in_place=owned)
        return _orient(display, self.info.orientation)

    def _make_preview(self, max_side: int) -> Image.Image:
        target = _fit((self.info.width, self.info.height), max_side)
        cached = self._cache.get(self._key)
        if cached is not None:
            return _resample(cached, target)
        if self.has_pyramid and self.info.format != "JPEG":
            # A PNG has to be decoded whole for its preview anyway: that one
            # decode writes the pyramid, and the preview is read from a level.
            pyr = self.pyramid()
            assert pyr is not None
            level = _pyramid.thumbnail(pyr, max(target), slack=_DRAFT_SLACK)
            if level.width <= target[0] and level.height <= target[1]:
                return level  # a level just under the size: taken as it is
            return _resample(level, target)
        if self.info.format != "JPEG" and self.info.width * self.info.height < _pyramid.MIN_PIXELS:
            # A small image is decoded whole for its preview anyway; keeping
            # that decode in the cache means tiles never decode it again.
            return _resample(self.full(), target)
        swap = self.info.orientation in (5, 6, 7, 8)
        file_target = (target[1], target[0]) if swap else target
        with self._header() as (im, owned):
            if owned and im.format == "JPEG" and file_target != im.size:
                # Let the decoder's power-of-two scaling land a little under the
                # target rather than just over it: a 2000 px preview for 2048
                # asked costs a quarter of the decoding of a 4000 px one.
                im.draft(im.mode, (max(1, int(file_target[0] * _DRAFT_SLACK)),
                                   max(1, int(file_target[1] * _DRAFT_SLACK))))
            im.load()
            work, owned_work = im, owned
            if work.mode not in _REDUCIBLE:
                work, owned_work = to_display(work, in_place=owned), True
            factor = _reduce_factor(work.size, file_target)
            if factor >= 2:
                work, owned_work = _reduce(work, factor), True
            display = to_display(work, in_place=owned_work)
            del work
        oriented = _orient(display, self.info.orientation)
        if oriented.width < target[0] or oriented.height < target[1]:
            return oriented  # drafted just under the target: never scale a preview up
        return _resample(oriented, target)


def load_image(source: Source, *, label: str = "image",
               cache: DecodedCache | None = None,
               derived: Derived | None = None,
               pyramid_path: str | os.PathLike[str] | None = None,
               on_pyramid: Callable[[Path], None] | None = None,
               arrived: Future[Any] | None = None) -> SourceImage:
    """Open ``source`` (a path, bytes, a PIL image or a numpy-style array) lazily.

    The header is read and checked now; pixels are decoded by
    :meth:`SourceImage.preview` / :meth:`SourceImage.full`.  Raises
    :class:`ImageError` (not an image, damaged) or :class:`ImageTooLarge`.

    ``derived`` (for a path ``source`` only) says where files derived from it
    are kept: previews and their encodings, the tiled pyramid of a large image
    (``pyramid.tif``, see :mod:`topaz_nb.imaging.pyramid`) and fidelity.
    Whoever owns the files' layout hands it over (the download cache does);
    without it nothing is written beside the file.  ``pyramid_path`` overrides
    the pyramid's place; with neither, tiles are cut from the fully decoded
    image.  ``on_pyramid(path)`` is called after a pyramid
    was written (the download cache checks its size bound then).
    ``arrived`` is what :func:`decode_while_arriving` made of the file while
    it was downloaded (its pyramid, or its pixels), used instead of decoding
    the file again.
    """
    shared = _first_use()
    cache = cache if cache is not None else shared
    if isinstance(source, Image.Image):
        return SourceImage(_no_file, label=label, cache=cache, pil=source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return SourceImage(lambda: io.BytesIO(data), label=label, cache=cache,
                           file_size=len(data))
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            file_size = os.path.getsize(path)
        except OSError as exc:
            raise ImageError(f"{label}: cannot read {path!r} ({exc.strerror or exc}); "
                             "check the path") from None
        return SourceImage(lambda: open(path, "rb"), label=label, cache=cache,
                           file_size=file_size, path=Path(path), derived=derived,
                           pyramid_path=Path(pyramid_path) if pyramid_path is not None else None,
                           on_pyramid=on_pyramid, arrived=arrived)
    if hasattr(source, "__array_interface__"):
        return SourceImage(_no_file, label=label, cache=cache,
                           pil=_from_array(source, label))
    raise TypeError(f"cannot load {type(source).__name__} as an image: give a path, bytes, "
                    "a PIL image or an array")


def _gets_pyramid(i: ImageInfo) -> bool:
    """Whether an image with this header gets a tile pyramid (see
    :func:`topaz_nb.imaging.pyramid.eligible`)."""
    return _pyramid.eligible(
        width=i.width, height=i.height, mode=i.mode, bit_depth=i.bit_depth,
        format=i.format, icc_srgb_or_none=i.icc_profile is None
        or "srgb" in i.icc_profile.lower(), orientation=i.orientation)


def _display_as_is(i: ImageInfo) -> bool:
    """Whether the file's pixels are display pixels as they are (8-bit gray or
    RGB, with or without alpha, sRGB or no profile, no rotation)."""
    return (i.mode in ("L", "LA", "RGB", "RGBA") and i.bit_depth == 8
            and (i.icc_profile is None or "srgb" in i.icc_profile.lower())
            and i.orientation == 1)


def decode_while_arriving(read: Callable[[int], bytes], *, size: int, pyramid_path: Path,
                          final: Callable[[], Path | None], done: Callable[[], None],
                          label: str = "image") -> Future[Any]:
    """Start decoding a download while its bytes arrive; hand the future to
    :func:`load_image` (``arrived=``) once the download is over.

    ``read(n)`` hands on the download's bytes in order as they come (``b""``
    at the end or when the download was lost), ``final()`` waits for the
    checked file (``None`` when the download failed).  From its first bytes,
    an image whose first view needs a full decode (not a JPEG, whose preview
    is drafted) is decoded: a large one into its tile pyramid at
    ``pyramid_path`` (see :func:`topaz_nb.imaging.pyramid.eligible`), a
    smaller 8-bit PNG with nothing Pillow would treat differently (no
    transparency colour, no profile but sRGB) into memory.  What was made is
    used only if the download became the checked file; otherwise the image
    is decoded from that file as before.  ``done()`` is called when no more is
    read.
    """
    def choose(head: bytes) -> _arriving.Kind | None:
        try:
            info = load_image(head, label=label).info
        except ImageError:
            return None  # a header past the first bytes, or no image: the file decides later
        if info.format == "JPEG":
            return None
        if _gets_pyramid(info):
            return "pyramid"
        if (info.format == "PNG" and info.width * info.height < _pyramid.MIN_PIXELS
                and _display_as_is(info)
                and not (info.has_alpha and info.mode in ("L", "RGB"))):  # a tRNS colour
            return "memory"
        return None

    return _arriving.start(read, size=size, choose=choose, pyramid_path=pyramid_path,
                           final=final, done=done, label=label)


def encode(img: Image.Image, *, format: str = "webp", quality: int = 85,
           lossless: bool = False) -> bytes:
    """Encode ``img`` for the browser.

    ``"webp"`` (lossy at ``quality``, or ``lossless``) keeps alpha; ``"jpeg"``
    has none, so transparent parts are composited over a neutral grey
    checkerboard (the same the comparison view draws); ``"png"`` is lossless
    and compressed for speed rather than size.
    """
    fmt = format.lower()
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be 1–100, got {quality}")
    out = io.BytesIO()
    if fmt == "webp":
        im = img if img.mode in ("RGB", "RGBA") else img.convert(display_mode(img))
        # method 1 encodes about 3× faster than the default 4 at nearly the same size.
        im.save(out, "WEBP", quality=100 if lossless else quality, lossless=lossless, method=1)
    elif fmt in ("jpeg", "jpg"):
        if display_mode(img) == "RGBA":
            im = _over_checkerboard(img.convert("RGBA") if img.mode != "RGBA" else img)
        else:
            im = img if img.mode in ("RGB", "L") else img.convert("RGB")
        im.save(out, "JPEG", quality=quality)
    elif fmt == "png":
        im = img if img.mode in ("RGB", "RGBA", "L", "LA", "P") else img.convert(display_mode(img))
        # zlib's RLE strategy (3): about 30 % faster than level 1 on photographic
        # pixels and no larger, and still catches the runs of flat or magnified areas.
        im.save(out, "PNG", compress_level=1, compress_type=3)
    else:
        raise ValueError(f"format must be 'webp', 'jpeg' or 'png', not {fmt!r}")
    return out.getvalue()


# -- private -------------------------------------------------------------------

_STORE_LOCK = threading.Lock()
_STORE_PENDING: dict[Path, list[Future[None]]] = {}


def _store_later(source: Path, write: Callable[..., None], *args: Any) -> None:
    """Write a preview store entry of ``source`` on a background thread.

    The entries serve the *next* view; writing the raw preview (9 MB for
    2000×1500) took ~30 ms of each side's first view.  The executor's thread
    is joined at interpreter exit, so entries are not lost when a script ends.
    """
    with _STORE_LOCK:
        future = shared_pool("topaz-store", 1).submit(write, *args)
        _STORE_PENDING.setdefault(source, []).append(future)
    future.add_done_callback(lambda done: _forget_pending(source, done))


def _forget_pending(source: Path, done: Future[None]) -> None:
    with _STORE_LOCK:
        pending = _STORE_PENDING.get(source, [])
        if done in pending:
            pending.remove(done)
        if not pending:
            _STORE_PENDING.pop(source, None)


def _stored_by_now(source: Path) -> None:
    """Wait for this file's entries still being written, so that a second view
    in the same process reads them instead of decoding again."""
    with _STORE_LOCK:
        pending = list(_STORE_PENDING.get(source, ()))
    for future in pending:
        future.exception()  # waits; a failed write just means no entry


_WRITE_WORDS = ("write failed", "no space", "unable to open", "permission denied",
                "read-only", "disk quota")


def _write_problem(exc: BaseException) -> str | None:
    """Why writing a pyramid failed, when the failure is the disk's (full,
    read-only, no permission) rather than the source's; else ``None``."""
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
        return exc.strerror or str(exc)
    text = str(exc).lower()
    return next((word for word in _WRITE_WORDS if word in text), None)


def _no_file() -> IO[bytes]:
    raise AssertionError("an in-memory image has no file")


def _guarded(label: str, work: Callable[[], Any]) -> Any:
    """Run ``work`` so that any failure reaching the user is one ImageError line."""
    try:
        return work()
    except TopazError:
        raise
    except MemoryError:
        raise ImageTooLarge(f"{label} is too large to decode in the memory left; close "
                            "other views or images and try again") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"{label} is larger than {MAX_PIXELS} px ({exc}); it was "
                            "not opened") from None
    except FileNotFoundError as exc:
        raise ImageError(f"{label}: the file {exc.filename!r} has disappeared; "
                         "download it again") from None
    except Exception as exc:  # noqa: BLE001 -- Pillow's decoders raise many kinds on bad data
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImageError(f"{label} is truncated or corrupt ({reason}); "
                         "download it again") from None


def _open(fp: IO[bytes], label: str) -> ImageFile.ImageFile:
    try:
        im = open_header(fp)
    except UnrecognisedImage as exc:
        if exc.damaged:
            raise ImageError(f"{label} is a damaged {exc.damaged} file ({exc.reason}); "
                             "download it again") from None
        raise ImageError(f"{label} is not an image: its format is not recognised; check "
                         "that the right file was downloaded") from None
    try:
        _check_size(im.size, label)
    except ImageTooLarge:
        im.close()
        raise
    return im


def _check_size(size: tuple[int, int], label: str) -> None:
    width, height = size
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise ImageTooLarge(
            f"{label} is {width}×{height} px ({width * height / 1e6:,.1f} MP), larger than "
            f"the Topaz API can produce ({MAX_SIDE} px a side, {MAX_PIXELS / 1e6:.0f} MP); "
            "it was not opened")


def _read_info(im: Image.Image, label: str, file_size: int | None) -> ImageInfo:
    _check_size(im.size, label)
    width, height = im.size
    exif = _exif(im)
    orientation = exif.get(0x0112, 1)
    if orientation not in _ORIENT_NAMES:
        orientation = 1
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    icc = im.info.get("icc_profile")
    return ImageInfo(
        width=width, height=height, mode=im.mode, bit_depth=_bit_depth(im),
        format=im.format, icc_profile=(profile_description(icc) or "unreadable profile")
        if icc else None,
        exif=MappingProxyType(_exif_summary(im, exif, orientation)),
        has_alpha=im.mode in _ALPHA_MODES or "transparency" in im.info,
        file_size=file_size, orientation=orientation)


def _exif(im: Image.Image) -> Image.Exif:
    """EXIF from the header only (PNG's getexif() would decode the pixels)."""
    if im.format == "PNG":
        exif = Image.Exif()
        raw = im.info.get("exif")
        if raw:
            exif.load(raw)
        return exif
    return im.getexif()


def _exif_summary(im: Image.Image, exif: Image.Exif, orientation: int) -> dict[str, str]:
    def text(value: object) -> str:
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        return str(value).replace("\x00", "").strip()

    summary: dict[str, str] = {}
    try:
        details = exif.get_ifd(0x8769)
    except Exception:  # noqa: BLE001 -- a damaged sub-IFD must not stop the image opening
        details = {}
    make, model = text(exif.get(0x010F, "")), text(exif.get(0x0110, ""))
    camera = model if model.lower().startswith(make.lower()) else f"{make} {model}".strip()
    if camera:
        summary["camera"] = camera
    lens = text(details.get(0xA434, ""))
    if lens:
        summary["lens"] = lens
    dpi = im.info.get("dpi")
    if not dpi and 0x011A in exif and exif.get(0x0128, 2) == 2:
        dpi = (exif.get(0x011A), exif.get(0x011B, exif.get(0x011A)))
    try:
        # Pillow reports 1 dpi for TIFFs without a resolution: not worth showing.
        if dpi and float(dpi[0]) > 1:
            summary["dpi"] = f"{float(dpi[0]):g}×{float(dpi[1]):g}"
    except (TypeError, ValueError, ZeroDivisionError, IndexError):
        pass
    taken = text(details.get(0x9003, "") or exif.get(0x0132, ""))
    if taken:
        summary["datetime"] = taken
    software = text(exif.get(0x0131, ""))
    if software:
        summary["software"] = software
    if 0x0112 in exif:
        summary["orientation"] = f"{orientation} ({_ORIENT_NAMES[orientation]})"
    return summary


def _bit_depth(im: Image.Image) -> int:
    """Bits per channel of the file's own pixels."""
    if im.mode == "1":
        return 1
    if im.mode.startswith("I;16"):
        return 16
    tag = getattr(im, "tag_v2", None)
    if tag is not None and 258 in tag:
        bits = tag[258]
        return int(max(bits) if isinstance(bits, tuple) else bits)
    if im.mode in ("I", "F"):
        return 32
    for tile in getattr(im, "tile", None) or ():
        args = tile.args
        rawmode = args if isinstance(args, str) else (args[0] if args else "")
        if isinstance(rawmode, str):
            for bits in (16, 4, 2):
                if rawmode.endswith(f";{bits}") or f";{bits}B" in rawmode or f";{bits}L" in rawmode:
                    return bits
            if im.mode == "P" and rawmode == "P;1":
                return 1
        break
    return 8


def _orient(im: Image.Image, orientation: int) -> Image.Image:
    method = _ORIENT.get(orientation)
    return im if method is None else im.transpose(method)


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    width, height = size
    long_side = max(width, height)
    if long_side <= max_side:
        return size
    s = max_side / long_side
    return (max(1, round(width * s)), max(1, round(height * s)))


def _reduce_factor(size: tuple[int, int], target: tuple[int, int]) -> int:
    """How much to box-reduce before the final LANCZOS step.

    From 4× down, reduce to about twice the target so that LANCZOS still does
    a 2× step and keeps the detail; below 4× reduce by the whole integer part
    (a box filter does not alias), because a LANCZOS of 2–4× over a full
    48 MP image costs more than decoding it.
    """
    ratio = min(size[0] / target[0], size[1] / target[1])
    return max(1, int(ratio / 2) if ratio >= 4 else int(ratio))


_BOX_ONLY_MAX = 3
"""Largest factor of a box-only preview (see :func:`_box_only_factor`)."""


def _box_only_factor(size: tuple[int, int], target: tuple[int, int]) -> int:
    """An integer factor that reduces ``size`` to between 90 % of ``target`` and
    ``target``, or 0.

    Measured on a 4000×3000 photo: LANCZOS to 2048 px took 196 ms, a box
    reduce by 2 (to 2000 px) 16 ms; a preview a few percent smaller than asked
    (as JPEG drafting already allows) is worth 12× less work.  Only small
    factors: beyond 3× the final LANCZOS step keeps more detail.
    """
    ratio = min(size[0] / target[0], size[1] / target[1])
    factor = math.ceil(ratio - 1e-9)
    if not 2 <= factor <= _BOX_ONLY_MAX:
        return 0
    if size[0] / factor < target[0] * _DRAFT_SLACK or size[1] / factor < target[1] * _DRAFT_SLACK:
        return 0
    return factor


def _resample(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    if im.size == size:
        return im
    box = _box_only_factor(im.size, size)
    if box and im.mode in _REDUCIBLE:
        return _reduce(im, box)
    factor = _reduce_factor(im.size, size)
    if factor >= 2 and im.mode in _REDUCIBLE:
        im = _reduce(im, factor)
    return im.resize(size, Image.Resampling.LANCZOS)


_STRIP_PIXELS = 4_000_000
"""Pixels per strip when reducing an image with alpha (see :func:`_reduce`)."""


def _reduce(im: Image.Image, factor: int) -> Image.Image:
    """``im.reduce(factor)`` without a full-size copy for images with alpha.

    Pillow reduces ``RGBA``/``LA`` through a premultiplied copy of the whole
    image: a 22000² RGBA PNG (1.9 GB decoded) peaked at 3.8 GB.  Reducing
    horizontal strips whose height is a multiple of ``factor`` gives the same
    pixels (box cells never straddle a strip) with a copy of one strip.
    """
    if im.mode not in ("RGBA", "LA") or im.width * im.height <= _STRIP_PIXELS:
        return im.reduce(factor)
    rows = max(factor, (_STRIP_PIXELS // im.width) // factor * factor)
    out = Image.new(im.mode, (-(-im.width // factor), -(-im.height // factor)))
    for top in range(0, im.height, rows):
        strip = im.crop((0, top, im.width, min(im.height, top + rows)))
        out.paste(strip.reduce(factor), (0, top // factor))
        del strip
    return out


def _from_array(array: Any, label: str) -> Image.Image:
    """A PIL image of a numpy-style array; 16-bit and 0–1 float colour arrays,
    which Pillow cannot take as they are, are scaled to 8 bits first."""
    try:
        kind, ndim = array.dtype.kind, array.ndim
        if ndim == 3 and array.shape[2] in (3, 4):
            if kind == "f":
                array = (array.clip(0.0, 1.0) * 255.0 + 0.5).astype("uint8")
            elif array.dtype.itemsize > 1:
                array = ((array.astype("uint64").clip(0, 65535) * 255 + 32767) // 65535
                         ).astype("uint8")
        return Image.fromarray(array)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ImageError(f"{label}: cannot show an array of shape "
                         f"{getattr(array, 'shape', '?')} and type "
                         f"{getattr(array, 'dtype', '?')} ({exc}); give 2-D gray or "
                         "H×W×3/4 colour") from None


def _over_checkerboard(im: Image.Image, square: int = 8) -> Image.Image:
    cols, rows = -(-im.width // square), -(-im.height // square)
    cells = bytes(255 if (c + r) % 2 == 0 else 204 for r in range(rows) for c in range(cols))
    board = Image.frombytes("L", (cols, rows), cells)
    board = board.resize((cols * square, rows * square), Image.Resampling.NEAREST)
    board = board.crop((0, 0, im.width, im.height)).convert("RGB")
    board.paste(im, (0, 0), im)
    return board
