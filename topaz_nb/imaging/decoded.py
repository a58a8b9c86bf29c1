"""A byte-bounded LRU of decoded full-resolution images.

A 512 MP output takes 2 GB once decoded, so decoded images are shared by every
view of a process and kept by bytes, not by count.  Decoding takes seconds;
when two threads (a tile request and a preview, say) ask for the same image at
once, only one decodes and the other waits for its result.

This cache lives in memory only; what is kept on disk beside downloads is
:mod:`topaz_nb.imaging.previews`.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future

from PIL import Image

#: Bytes per pixel as Pillow stores them: "RGB" and every multi-band 8-bit mode
#: take 4 bytes a pixel in memory, not 3.
_ONE_BYTE = frozenset({"1", "L", "P"})
_TWO_BYTES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def image_nbytes(im: Image.Image) -> int:
    """Memory held by ``im``'s pixels."""
    per_pixel = 1 if im.mode in _ONE_BYTE else 2 if im.mode in _TWO_BYTES else 4
    return im.width * im.height * per_pixel


def default_budget() -> int:
    """A quarter of the machine's memory, at most 2 GiB."""
    ceiling = 2 << 30
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return ceiling
    return max(256 << 20, min(ceiling, ram // 4))


class DecodedCache:
    """LRU of decoded full-resolution images, bounded in bytes, thread-safe.

    The most recently loaded image is always kept, even when it alone exceeds
    ``max_bytes``: dropping it would mean decoding it again for every tile.
    Everything older is evicted, least recently used first, until the total
    fits.
    """

    def __init__(self, max_bytes: int = 2 << 30) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Image.Image, int]] = OrderedDict()
        self._loading: dict[Hashable, Future[Image.Image]] = {}
        self._lock = threading.Lock()
        self._nbytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached images."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: Hashable) -> Image.Image | None:
        """The cached image for ``key`` (marked as recently used), or ``None``."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def get_or_load(self, key: Hashable, loader: Callable[[], Image.Image]) -> Image.Image:
        """The image for ``key``, calling ``loader`` only if no thread has it or
        is loading it.  A loader's exception reaches every waiting caller and
        nothing is cached."""
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                return item[0]
            pending = self._loading.get(key)
            owner = pending is None
            if pending is None:
                pending = self._loading[key] = Future()
        if not owner:
            return pending.result()
        try:
            image = loader()
        except BaseException as exc:
            with self._lock:
                del self._loading[key]
            pending.set_exception(exc)
            raise
        with self._lock:
            del self._loading[key]
            self._store(key, image)
        pending.set_result(image)
        return image

    def discard(self, key: Hashable) -> None:
        """Forget ``key``'s image, if cached."""
        with self._lock:
            item = self._items.pop(key, None)
            if item is not None:
                self._nbytes -= item[1]

    def clear(self) -> None:
        """Forget every image."""
        with self._lock:
            self._items.clear()
            self._nbytes = 0

    def _store(self, key: Hashable, image: Image.Image) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._nbytes -= old[1]
        size = image_nbytes(image)
        self._items[key] = (image, size)
        self._nbytes += size
        while self._nbytes > self.max_bytes and len(self._items) > 1:
            _, (_, freed) = self._items.popitem(last=False)
            self._nbytes -= freed

    def __repr__(self) -> str:
        return (f"DecodedCache({len(self)} images, {self._nbytes / 2**20:.0f} MiB"
                f" of {self.max_bytes / 2**20:.0f} MiB)")
