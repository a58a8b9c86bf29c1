"""What a batch knows of one process (:class:`Card`), shared by the gallery
that fills the cards and the review that shows them: no images, only
thumbnails and numbers, so a batch of hundreds stays small in memory; and how
a batch lets go of a comparison it no longer shows (:func:`close_when_done`)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concurrent.futures import Future

    from ..api.client import Status
    from ..comparison import Comparison
    from ..errors import TopazError

__all__ = ["Card", "close_when_done", "thumb_uri"]


@dataclass
class Card:
    """What a gallery keeps of one process: no images, only thumbnails and numbers.

    ``thumbs`` maps ``"input"``/``"output"`` to WebP bytes (``None`` for a
    side that is not there).  ``done`` turns true once the process has been
    fetched (or failed to); ``error`` is then the error that stopped it.
    """

    process_id: str
    status: Status | None = None
    thumbs: dict[str, bytes | None] = field(default_factory=dict)
    row: dict[str, Any] = field(default_factory=dict)
    error: TopazError | None = None
    done: bool = False
    ready: bool = False
    failed: bool = False
    reason: str | None = None
    line: str = ""

    @property
    def filename(self) -> str | None:
        return self.status.filename if self.status is not None else None

    @property
    def model(self) -> str | None:
        return self.status.model if self.status is not None else None

    @property
    def state(self) -> str:
        """``Completed``, ``Failed``…, ``error`` or ``fetching``."""
        if self.error is not None:
            return "error"
        if self.status is not None:
            return self.status.status
        return "fetching" if not self.done else ("Completed" if self.ready else "not ready")


def thumb_uri(data: bytes | None) -> str | None:
    """A thumbnail as a ``data:`` URI for HTML (``None`` stays ``None``)."""
    return "data:image/webp;base64," + base64.b64encode(data).decode() if data else None


def close_when_done(future: Future[Comparison]) -> None:
    """Close the comparison a fetch gives, now or when it comes, so that its
    downloads are no longer pinned against the cache's eviction."""
    def close(done: Future[Comparison]) -> None:
        if not done.cancelled() and done.exception() is None:
            done.result().close()

    if not future.cancel():
        future.add_done_callback(close)
