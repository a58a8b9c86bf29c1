"""What a batch knows of one process (:class:`Card`), shared by the gallery
that fills the cards and the review that shows them: no images, only
thumbnails and numbers, so a batch of hundreds stays small in memory."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..api.client import Status
    from ..errors import TopazError

__all__ = ["Card", "thumb_uri"]


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
