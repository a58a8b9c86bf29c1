"""Decoding a download while its bytes arrive.

The first view of a large PNG is its one full decode (into the tile pyramid,
whose level under the preview size is the preview), and a gallery card's
thumbnail of a smaller one is a full decode too.  Started after the last byte,
that decode adds its whole time to the download's; started on the bytes as
they land, it ends soon after the last one.

:func:`start` takes the download's bytes in order as they come (``read``,
from the storage layer's arrival, which imaging never imports) and decides
from the first :data:`HEAD_BYTES` what to do (``choose``): write the
pyramid (:func:`topaz_nb.imaging.pyramid.build_arriving`), decode into
memory, or nothing.  Either way libvips does the decoding, reading a pipe that
a feeder thread fills (see :class:`_Pipe`), and what it made counts only
once ``final()`` says the download became the checked file: the future's
result is the :class:`~topaz_nb.imaging.pyramid.Pyramid`, the decoded
``PIL.Image``, or ``None``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from . import pyramid as _pyramid

__all__ = ["HEAD_BYTES", "Kind", "start"]

#: Bytes of an arriving file read before deciding what to decode it into.
HEAD_BYTES = 256 << 10
_PIPE_BYTES = 1 << 20
_BANDS_TO_MODE = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}

Kind = Literal["pyramid", "memory"]
"""What an arriving image is decoded into: its tile pyramid on disk, or memory."""


class _Pipe:
    """The arriving bytes through a pipe that libvips reads itself.

    libvips asks a callback source for 4 KiB at a time: 25 000 calls into
    Python for a 100 MB PNG, each waiting for the interpreter lock, which the
    download's threads hold meanwhile (measured: a 48 MP PNG's pyramid took
    7.5 s through a callback beside two busy Python threads, 2.2 s through a
    pipe; Pillow's own decoder holds the lock too).  A pipe lets libvips read
    without the lock, while a feeder thread writes the bytes in pieces of
    1 MiB; the pipe's buffer is raised to 1 MiB where Linux allows.  The feeder
    closes the pipe at the end of the bytes or when they are lost (libvips
    sees the end either way), and stops when the reader is done.
    """

    def __init__(self, head: bytes, read: Callable[[int], bytes]) -> None:
        self.fd, self._w = os.pipe()
        with contextlib.suppress(OSError, ImportError):
            import fcntl
            fcntl.fcntl(self._w, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_BYTES)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._feed, args=(head, read), daemon=True,
                                        name="topaz-arriving-feed")
        self._thread.start()

    def _feed(self, head: bytes, read: Callable[[int], bytes]) -> None:
        try:
            piece = head
            while piece and not self._closed.is_set():
                view = memoryview(piece)
                while view:
                    view = view[os.write(self._w, view):]
                piece = read(_PIPE_BYTES)
        except OSError:  # the reader closed its end
            return
        finally:
            with contextlib.suppress(OSError):
                os.close(self._w)

    def __enter__(self) -> _Pipe:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        # Drain rather than close first: libvips may still hold a copy of the
        # read end, so a feeder blocked on a full pipe would never see EPIPE.
        self._closed.set()
        os.set_blocking(self.fd, False)
        while self._thread.is_alive():
            with contextlib.suppress(BlockingIOError):
                os.read(self.fd, _PIPE_BYTES)
            self._thread.join(0.05)
        with contextlib.suppress(OSError):
            os.close(self.fd)


builds = 0
"""How many images this process decoded into memory while they arrived; for tests."""
_LOCK = threading.Lock()


def start(read: Callable[[int], bytes], *, size: int, choose: Callable[[bytes], Kind | None],
          pyramid_path: Path, final: Callable[[], Path | None],
          done: Callable[[], None] = lambda: None,
          label: str = "image") -> Future[_pyramid.Pyramid | Image.Image | None]:
    """Decode an arriving file on a thread of its own (see the module doc).

    ``read(n)`` gives the next bytes in order, blocking until they come
    (``b""`` at the end or when the download was lost); ``choose(head)``
    says from the first bytes what to decode into, if anything; ``final()``
    waits for the download to end and returns the checked file, or ``None``.
    ``done()`` is called when no more is read.  Any failure gives ``None``:
    whoever uses the file then decodes it from the disk as before, and reports
    what is wrong with it.
    """
    future: Future[_pyramid.Pyramid | Image.Image | None] = Future()

    def run() -> None:
        global builds
        result: _pyramid.Pyramid | Image.Image | None = None
        try:
            if not _pyramid.available():
                return
            import pyvips

            head = bytearray()
            while len(head) < min(HEAD_BYTES, size):
                chunk = read(HEAD_BYTES - len(head))
                if not chunk:
                    return
                head += chunk
            kind = choose(bytes(head))
            if kind is None:
                return
            with _Pipe(bytes(head), read) as pipe:
                source = pyvips.Source.new_from_descriptor(pipe.fd)
                image = pyvips.Image.new_from_source(source, "", access="sequential",
                                                     fail=True)
                try:
                    if kind == "pyramid":
                        result = _pyramid.build_arriving(image, pyramid_path, file_size=size,
                                                         final=final)
                        return
                    decoded = _to_pil(image)
                finally:
                    del image, source  # libvips lets go of its copy of the descriptor
            checked = final()
            if checked is not None and checked.stat().st_size == size:
                result = decoded
                with _LOCK:
                    builds += 1
        except Exception:  # noqa: BLE001 -- the decode from the file reports the problem
            result = None
        finally:
            done()
            future.set_result(result)

    threading.Thread(target=run, name=f"topaz-arriving ({label})", daemon=True).start()
    return future


def _to_pil(image: Any) -> Image.Image:
    """A decoded 8-bit libvips image as the ``PIL.Image`` Pillow would have made."""
    if image.format != "uchar" or image.bands not in _BANDS_TO_MODE:
        raise ValueError(f"not an 8-bit image of 1–4 bands ({image.format}, {image.bands})")
    mode = _BANDS_TO_MODE[image.bands]
    data = image.write_to_memory()
    return Image.frombuffer(mode, (image.width, image.height), data, "raw", mode, 0, 1)
