"""Previews of downloaded files, kept on disk beside them with their encodings.

Making the first view of a large output means decoding all of it (a PNG
cannot be decoded at reduced size); opening the same process again, even from
a new kernel, should cost a file read instead.

Where the files go is not decided here: whoever owns the files' layout (the
download cache, through ``Transfer.derived_path``) hands a :data:`Derived`
function to :func:`~topaz_nb.imaging.load_image`, so discarding a download
or clearing the cache removes its previews too.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

from PIL import Image

Derived = Callable[[str], "Path | None"]
"""Where the file derived from an image under a given name (``p2048.raw``,
``pyramid.tif``, ``fidelity.json``) lives, or ``None`` for an image whose
derived files are not kept."""


class PreviewStore:
    """One preview size of one downloaded file: its raw pixels and encodings.

    A preview is stored as raw pixels (derived name ``p<max side>.raw``) and
    each encoding of it sent to a browser as ``p<max side>.<format tag>``.
    Each entry records the source's size and modification time and is ignored
    once they change, so a file replaced in place never shows a stale preview.

    Only images whose owner hands out derived paths get entries (for the
    download cache's files; writing beside a user's own files would be a
    surprise).  Entries are written atomically; a directory that cannot be
    written to just means no entry.
    """

    _VERSION = 1

    def __init__(self, source: Path, max_side: int, derived: Derived) -> None:
        self.source = source
        self.max_side = max_side
        self._derived = derived

    def _target(self, suffix: str) -> Path | None:
        return self._derived(f"p{self.max_side}.{suffix}")

    def _stamp(self) -> dict[str, int] | None:
        try:
            st = self.source.stat()
        except OSError:
            return None
        return {"v": self._VERSION, "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def _read(self, suffix: str) -> tuple[dict[str, object], bytes] | None:
        target = self._target(suffix)
        stamp = self._stamp()
        if target is None or stamp is None:
            return None
        try:
            data = target.read_bytes()
            head, _, body = data.partition(b"\n")
            meta = json.loads(head)
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in stamp.items()):
            return None
        return meta, body

    def _write(self, suffix: str, meta: dict[str, object], body: bytes) -> None:
        target = self._target(suffix)
        stamp = self._stamp()
        if target is None or stamp is None:
            return
        tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(tmp, "wb") as out:
                out.write(json.dumps({**meta, **stamp}).encode() + b"\n")
                out.write(body)
            os.replace(tmp, target)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def load_image(self) -> Image.Image | None:
        """The stored preview pixels, or ``None``."""
        found = self._read("raw")
        if found is None:
            return None
        meta, body = found
        try:
            return Image.frombytes(str(meta["mode"]), (int(meta["w"]), int(meta["h"])),  # type: ignore[call-overload]
                                   body)
        except (KeyError, TypeError, ValueError):
            return None

    def save_image(self, image: Image.Image) -> None:
        self._write("raw", {"mode": image.mode, "w": image.width, "h": image.height},
                    image.tobytes())

    def load_encoded(self, tag: str) -> bytes | None:
        """A stored encoding of the preview (``tag`` names format and options)."""
        found = self._read(tag)
        return None if found is None else found[1]

    def save_encoded(self, tag: str, data: bytes) -> None:
        self._write(tag, {}, data)
