"""Jobs and the stored objects behind them.

A job's status is computed from the clock at each request rather than stored,
so a job added with ``ready_in`` moves from ``Processing`` to ``Completed`` on
its own, and a job's age keeps growing toward the 7-day retention limit the way
it does in production.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Union

from PIL import Image

RETENTION_SECONDS = 7 * 24 * 3600
STATUSES = ("Pending", "Processing", "Completed", "Failed", "Cancelled")

ImageSource = Union["Image.Image", str, "os.PathLike[str]", bytes]

# Pillow format name -> (API format name, file extension, Content-Type)
_FORMATS = {
    "JPEG": ("jpeg", "jpg", "image/jpeg"),
    "PNG": ("png", "png", "image/png"),
    "TIFF": ("tiff", "tif", "image/tiff"),
    "WEBP": ("webp", "webp", "image/webp"),
}
_ENCODE_AS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG", "tiff": "TIFF", "tif": "TIFF",
              "webp": "WEBP"}


@dataclass(frozen=True)
class StoredObject:
    """One immutable object in the sandbox's storage: the bytes are held once.

    ``width``/``height`` are 0 and ``content_type`` is
    ``application/octet-stream`` when the bytes are not a readable image (tests
    use that to serve corrupt files on purpose).
    """

    data: bytes = field(repr=False)
    format: str
    extension: str
    content_type: str
    width: int
    height: int
    etag: str
    last_modified: str

    @property
    def size(self) -> int:
        return len(self.data)


def _encode(image: Image.Image, fmt: str) -> bytes:
    pil_format = _ENCODE_AS.get(fmt.lower())
    if pil_format is None:
        raise ValueError(f"cannot encode as {fmt!r}: use one of jpeg, png, tiff, webp")
    if pil_format == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    options: dict[str, Any] = {"quality": 92} if pil_format in ("JPEG", "WEBP") else {}
    image.save(buf, pil_format, **options)
    return buf.getvalue()


def make_object(source: ImageSource, default_format: str, fmt: str | None,
                modified: float) -> StoredObject:
    """Turn what ``add_job`` was given into stored bytes plus their metadata."""
    if isinstance(source, Image.Image):
        data = _encode(source, fmt or default_format)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fh:
            data = fh.read()
    else:
        raise TypeError(f"an image must be a PIL image, a file path or bytes, "
                        f"not {type(source).__name__}")
    width = height = 0
    api_format, ext, ctype = ((fmt or default_format).lower(), "bin", "application/octet-stream")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            if probe.format in _FORMATS:
                api_format, ext, ctype = _FORMATS[probe.format]
    except Exception:  # noqa: BLE001, S110 - corrupt bytes are stored as they are, on purpose
        pass
    return StoredObject(
        data=data, format=api_format, extension=ext, content_type=ctype,
        width=width, height=height, etag='"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"',
        last_modified=formatdate(modified, usegmt=True),
    )


def source_name(source: ImageSource) -> str | None:
    """The base name of the file an image came from, when there is one."""
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
    elif isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or ""
    else:
        return None
    return str(name).replace("\\", "/").rsplit("/", 1)[-1] or None


@dataclass
class Job:
    """One process as the sandbox keeps it (returned by ``Sandbox.job``).

    ``created``, ``started`` (when it was added) and ``ready_at`` are Unix
    times.  ``status``/``progress`` are the values given to ``add_job``; what
    the API reports at a given moment is :meth:`snapshot`.  ``input`` and
    ``output`` are :class:`StoredObject` (bytes plus metadata); ``name`` is
    set for demo jobs; ``source_id``, when set, is the source the status
    reports (jobs of one source share it).  ``message`` is the reason a Failed or Cancelled job
    reports in its status (a ``message`` field the spec does not define but a
    client should show when a server sends it).
    """

    process_id: str
    input: StoredObject
    output: StoredObject | None
    status: str
    created: float
    started: float
    ready_at: float | None
    progress: int | None
    model: str
    category: str
    model_type: str
    crop_to_fill: bool
    filename: str
    credits: int
    output_format: str = "png"
    name: str | None = None
    message: str | None = None
    source_id: str | None = None

    def expired(self, now: float) -> bool:
        return now - self.created > RETENTION_SECONDS

    def snapshot(self, now: float) -> tuple[str, int, int]:
        """``(status, progress, eta)`` as the API reports them at ``now``."""
        if self.ready_at is not None:
            if now >= self.ready_at:
                return "Completed", 100, int(self.ready_at)
            span = max(self.ready_at - self.started, 1e-9)
            pct = int(99 * max(0.0, now - self.started) / span)
            return "Processing", min(99, pct), int(self.ready_at)
        default = {"Completed": 100, "Processing": 50}.get(self.status, 0)
        progress = default if self.progress is None else self.progress
        eta = int(self.created) if self.status != "Processing" else int(now) + 30
        return self.status, progress, eta

    def status_json(self, now: float) -> dict[str, Any]:
        status, progress, eta = self.snapshot(now)
        out = self.output
        modified = self.created
        if self.ready_at is not None and status == "Completed":
            modified = self.ready_at
        elif status == "Completed" and out is not None:
            modified = self.created + 5
        extra = {"message": self.message} if self.message and status in ("Failed",
                                                                          "Cancelled") else {}
        return {
            **extra,
            "process_id": self.process_id,
            "source_id": self.source_id or str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                          "source/" + self.process_id)),
            "filename": self.filename,
            "input_format": self.input.format,
            "input_height": self.input.height,
            "input_width": self.input.width,
            "output_format": out.format if out else self.output_format,
            "output_height": out.height if out else 0,
            "output_width": out.width if out else 0,
            "category": self.category,
            "model_type": self.model_type,
            "model": self.model,
            "crop_to_fill": self.crop_to_fill,
            "status": status,
            "progress": progress,
            "eta": eta,
            "creation_time": int(self.created),
            "modification_time": int(modified),
            "credits": self.credits,
        }


class JobStore:
    """Thread-safe map of process ID to :class:`Job`, in insertion order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}

    def put(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.process_id] = job

    def get(self, process_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(process_id)

    def live(self, now: float) -> list[Job]:
        """Jobs within retention, newest first (ties keep insertion order)."""
        with self._lock:
            jobs = [j for j in self._jobs.values() if not j.expired(now)]
        return sorted(jobs, key=lambda j: -j.created)


def now() -> float:
    return time.time()
