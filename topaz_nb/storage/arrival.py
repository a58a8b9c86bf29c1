"""The bytes of a download as they land, for work that starts before the last one.

Decoding a large PNG into its tile pyramid takes about as long as fetching it
over a fast link; done one after the other the first view waits for both.  So
while a download runs, the :class:`~topaz_nb.storage.download.Downloader`
publishes through an :class:`Arrival` how far the ``.part`` holds the object
without a gap (the in-order prefix, the same bytes the checksums have been fed),
and a reader (:meth:`Arrival.reader`) hands those bytes on in order as they come.

What a reader gets is never the download's verdict: the object may still fail
its size or MD5 check, or storage may answer a part with another object (the
download then restarts from zero).  A reader learns of a restart or a failure
at its next read, which returns ``b""`` (and :attr:`Reader.lost` says why, so
what was made from the bytes is thrown away), and :meth:`Arrival.final` says,
once the download is over, whether it became the cached file.  Whatever is
built from arriving bytes is used only once that answer is a path.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["Arrival", "Reader"]

_WAIT = 0.25  # seconds between looks at a reader's own stop event while it waits


class Arrival:
    """How far one download has got, shared between the downloader and readers.

    Writer side (the downloader, on its own threads): :meth:`grow`,
    :meth:`restart`, :meth:`finish`.  Reader side: :meth:`reader`,
    :meth:`final`.  Thread-safe.
    """

    def __init__(self, part: Path, size: int, derived: Callable[[str], Path]) -> None:
        self.part = part
        self.size = size
        self._derived = derived
        self._claimed: list[str] = []
        self._cond = threading.Condition()
        self._prefix = 0
        self._generation = 0
        self._over = False
        self._final: Path | None = None

    def derived(self, name: str) -> Path:
        """Where the file derived from this download under ``name`` goes (the
        cache layout's answer).  Files under that name (and its temporary
        names) survive the download's commit, which clears the derived files
        of an older download: they are made from this one."""
        path = self._derived(name)
        with self._cond:
            self._claimed.append(path.name)
        return path

    @property
    def claimed(self) -> tuple[str, ...]:
        """Names handed out by :meth:`derived`."""
        with self._cond:
            return tuple(self._claimed)

    @property
    def published(self) -> int:
        """Bytes from the start published so far."""
        with self._cond:
            return self._prefix

    # -- the downloader's side --------------------------------------------------
    def grow(self, prefix: int) -> None:
        """The ``.part`` now holds this object's first ``prefix`` bytes, written
        (visible to a ``pread`` of another descriptor)."""
        with self._cond:
            if prefix > self._prefix:
                self._prefix = min(prefix, self.size)
                self._cond.notify_all()

    def restart(self) -> None:
        """What was published is not this object after all: start again at zero."""
        with self._cond:
            self._prefix = 0
            self._generation += 1
            self._cond.notify_all()

    def finish(self, final: Path | None) -> None:
        """The download is over: the cached file it became, or ``None`` (failed,
        cancelled, or left to resume later)."""
        with self._cond:
            self._over = True
            self._final = final
            if final is None:
                self._generation += 1  # readers still reading must stop
            self._cond.notify_all()

    # -- the readers' side ------------------------------------------------------
    def reader(self, stop: threading.Event | None = None) -> Reader:
        """A reader of the object from byte 0, that waits for bytes still to come;
        ``stop`` ends its waiting (its next read returns ``b""``)."""
        return Reader(self, stop)

    def final(self, stop: threading.Event | None = None) -> Path | None:
        """Wait for the download to end: the cached file, or ``None`` when it did
        not become one (or ``stop`` was set first)."""
        with self._cond:
            while not self._over:
                if stop is not None and stop.is_set():
                    return None
                self._cond.wait(_WAIT)
            return self._final

    def _wait(self, at: int, generation: int, stop: threading.Event | None) -> int | str:
        """Bytes readable from ``at`` now (at least one), or why none will be."""
        with self._cond:
            while True:
                if self._generation != generation:
                    return "the download failed" if self._over else "the download restarted"
                if stop is not None and stop.is_set():
                    return "stopped"
                if at >= self.size:
                    return 0
                if self._prefix > at:
                    return self._prefix - at
                if self._over:
                    return "the download ended short"
                self._cond.wait(_WAIT)


class Reader:
    """Reads one :class:`Arrival` in order from byte 0; blocks for bytes to come.

    It holds its own descriptor of the ``.part``, which stays valid when the
    download renames it into place.  :meth:`read` returns ``b""`` at the end
    of the object and when it is lost (:attr:`lost` then says why).
    """

    def __init__(self, arrival: Arrival, stop: threading.Event | None) -> None:
        self._arrival = arrival
        self._stop = stop
        with arrival._cond:
            self._generation = arrival._generation
        self._fd: int | None = os.open(arrival.part, os.O_RDONLY)
        self.position = 0
        self.lost: str | None = None

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes from :attr:`position`, waiting until at least one
        has arrived; ``b""`` at the end or once lost."""
        if self._fd is None or self.lost is not None:
            return b""
        available = self._arrival._wait(self.position, self._generation, self._stop)
        if isinstance(available, str):
            self.lost = available
            return b""
        if available == 0:
            return b""
        data = os.pread(self._fd, min(size, available), self.position)
        if not data:  # the file is shorter than published: never guess
            self.lost = "the download's file is shorter than it said"
            return b""
        if not self.intact:  # restarted while reading: these bytes may be the new ones
            self.lost = "the download restarted"
            return b""
        self.position += len(data)
        return data

    @property
    def intact(self) -> bool:
        """Whether everything read so far is still this download's: no restart
        or failure since this reader began.  Asked once the download is over
        (:meth:`Arrival.final`), it says whether what was read is the file."""
        with self._arrival._cond:
            return self.lost is None and self._generation == self._arrival._generation

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Reader:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
