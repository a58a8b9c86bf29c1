"""Ranged downloads: the plan of parts, the record of what is done, the in-order hash.

One HTTP stream from object storage is capped well below what the link can
carry (S3 serves one connection at roughly 25–90 MB/s), so a large object is
fetched as several ``Range`` requests in flight on one presigned URL, each
written at its offset into the ``.part``.  This module holds what that needs
that is not HTTP (:mod:`~topaz_nb.storage.download` does the requests):

* :func:`plan` splits the missing bytes into parts of about ``part_size``;
* :class:`Done` is the record of the byte ranges already written, kept in the
  ``.part.json`` under ``"ranges"`` so a download killed mid-way (even by
  SIGKILL) is continued by fetching exactly the missing ranges;
* :class:`InOrderHasher` feeds the MD5 and SHA-256 the bytes of the file in
  order, as far as the contiguous prefix reaches, so the checksums still
  cover the whole file and cost little once the last byte is in.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

__all__ = ["MIN_PART_SIZE", "PART_SIZE", "Done", "InOrderHasher", "plan", "worth_splitting"]

PART_SIZE = 8 << 20
"""Bytes per Range request: large enough that a request's round trip is a
small share of its transfer, small enough that 4 connections are all busy on
a 16 MB image and a kill loses little."""
MIN_PART_SIZE = 64 << 10
_HASH_BLOCK = 1 << 20


def worth_splitting(size: int | None, part_size: int, connections: int) -> bool:
    """Whether an object of ``size`` bytes is fetched in parts: only when its
    size is known and it makes at least two parts (``2 × part_size``, 16 MB by
    default), more than one connection is allowed, and the platform can write
    at an offset (``os.pwrite``: not on Windows, which gets one stream)."""
    return (connections > 1 and size is not None and size >= 2 * part_size
            and hasattr(os, "pwrite") and hasattr(os, "pread"))


def plan(missing: Iterable[tuple[int, int]], part_size: int,
         connections: int = 1) -> list[tuple[int, int]]:
    """The half-open ``(start, end)`` parts that cover ``missing``, in file
    order (so the in-order prefix grows first).

    Parts are of even size, at most ``part_size``, and as many as a multiple
    of ``connections``, so no connection idles while one part is left: 16 MB
    on 4 connections is 4 parts of 4 MB, not 2 of 8.  No part is made smaller
    than :data:`MIN_PART_SIZE` for that (unless ``part_size`` is).
    """
    if part_size <= 0 or connections <= 0:
        raise ValueError(f"part_size and connections must be positive, got {part_size}, "
                         f"{connections}")
    missing = [(a, b) for a, b in missing if b > a]
    left = sum(b - a for a, b in missing)
    count = -(-left // part_size)
    count = -(-count // connections) * connections
    piece = max(min(MIN_PART_SIZE, part_size), -(-left // count)) if count else part_size
    parts: list[tuple[int, int]] = []
    for start, end in missing:
        while start < end:
            stop = min(end, start + piece)
            parts.append((start, stop))
            start = stop
    return parts


class Done:
    """The byte ranges of an object already written to its ``.part``: sorted,
    disjoint, merged, half-open ``[start, end)``; not thread-safe by itself."""

    def __init__(self, size: int, ranges: Iterable[Sequence[int]] = ()) -> None:
        self.size = size
        self._ranges: list[tuple[int, int]] = []
        for item in ranges:
            self.add(int(item[0]), int(item[1]))

    @classmethod
    def from_record(cls, size: int, record: Any) -> Done | None:
        """The ranges a ``.part.json`` lists, or ``None`` when they are not a
        well-formed list within ``size`` (then nothing of the ``.part`` is trusted)."""
        if not isinstance(record, list):
            return None
        done = cls(size)
        for item in record:
            if not (isinstance(item, list) and len(item) == 2
                    and all(isinstance(n, int) and not isinstance(n, bool) for n in item)
                    and 0 <= item[0] < item[1] <= size):
                return None
            done.add(item[0], item[1])
        return done

    def record(self) -> list[list[int]]:
        """The ranges as JSON (``[[start, end], ...]``)."""
        return [[start, end] for start, end in self._ranges]

    def add(self, start: int, end: int) -> None:
        """Mark ``[start, end)`` as written."""
        if not 0 <= start <= end <= self.size:
            raise ValueError(f"range {start}-{end} is not within 0-{self.size}")
        if start == end:
            return
        merged: list[tuple[int, int]] = []
        for a, b in self._ranges:
            if b < start or a > end:
                merged.append((a, b))
            else:
                start, end = min(a, start), max(b, end)
        merged.append((start, end))
        merged.sort()
        self._ranges = merged

    def missing(self) -> list[tuple[int, int]]:
        """The ranges not yet written, in order."""
        gaps: list[tuple[int, int]] = []
        at = 0
        for a, b in self._ranges:
            if a > at:
                gaps.append((at, a))
            at = b
        if at < self.size:
            gaps.append((at, self.size))
        return gaps

    @property
    def prefix(self) -> int:
        """How many bytes from the start are written without a gap."""
        return self._ranges[0][1] if self._ranges and self._ranges[0][0] == 0 else 0

    @property
    def total(self) -> int:
        """Bytes written in all."""
        return sum(b - a for a, b in self._ranges)

    @property
    def complete(self) -> bool:
        return self.prefix == self.size


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


class InOrderHasher:
    """Hashes a file's bytes in order as far as they are written without a gap.

    Parts finish out of order; MD5 and SHA-256 need the bytes in order.  So
    after each part the caller asks :meth:`advance` to read the newly
    contiguous bytes back from the file (from the page cache, where they were
    just written) and feed them on: by the last byte, nearly everything is
    hashed already.
    """

    def __init__(self, fd: int, digest: _Digest) -> None:
        self._fd = fd
        self._digest = digest
        self.hashed = 0

    def advance(self, upto: int, budget: int | None = None) -> int:
        """Hash from :attr:`hashed` to ``upto`` (at most ``budget`` bytes now,
        so a caller polling for a cancel is never held long); returns the new
        :attr:`hashed`."""
        stop = upto if budget is None else min(upto, self.hashed + budget)
        while self.hashed < stop:
            block = os.pread(self._fd, min(_HASH_BLOCK, stop - self.hashed), self.hashed)
            if not block:
                raise OSError(f"the .part ended at {self.hashed} bytes, before {stop}")
            self._digest.update(block)
            self.hashed += len(block)
        return self.hashed
