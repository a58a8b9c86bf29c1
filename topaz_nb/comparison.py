"""One process's input and output: fetched, loaded, described.

:class:`Comparison` is what ``%topaz ID`` returns and what the panel shows.  It
asks the client for both presigned links, has the transfer layer HEAD and
download both objects *concurrently*, and opens them with the imaging layer.
Everything it prints or puts in a widget is redacted: links appear through
``redact_url`` only, and it never sees the API key (the client keeps it).
"""

from __future__ import annotations

import datetime as _dt
import html
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._ids import check_process_id
from .errors import NotReady, TopazError
from .links import SIDES, Link, Side, expiry_text, redact_url, utc_text

if TYPE_CHECKING:
    from PIL import Image

    from .client import Status, TopazClient
    from .imaging import SourceImage
    from .transfer import ObjectInfo, Transfer
    from .widget import CompareView

ProgressFn = Callable[[Side, int, "int | None"], None]
"""Called as ``(side, bytes_done, bytes_total_or_None)`` while downloading."""


@dataclass
class _SideData:
    link: Link | None = None
    object: ObjectInfo | None = None
    file: Path | None = None
    from_cache: bool = False
    image: SourceImage | None = None


class Comparison:
    """A Topaz process's input and output, with metadata.

    Attributes most users want: ``input`` and ``output`` (full-resolution PIL
    images, decoded on first access), ``info`` (a plain dict of the metadata),
    ``view`` (the :class:`~topaz_nb.widget.CompareView`).  ``output`` is
    ``None`` when the process has not finished; ``not_ready`` then says why.
    """

    def __init__(self, process_id: str, *, sides: dict[Side, _SideData],
                 status: Status | None = None, not_ready: NotReady | None = None,
                 preview_size: int = 2048, mode: str = "swipe") -> None:
        self.process_id = process_id
        self._sides = sides
        self.status = status
        self.not_ready = not_ready
        self.preview_size = preview_size
        self.mode = mode
        self._view: CompareView | None = None

    # -- fetching ---------------------------------------------------------
    @classmethod
    def fetch(cls, process_id: str, *, client: TopazClient, transfer: Transfer,
              download: bool = True, require_output: bool = True,
              on_progress: ProgressFn | None = None, preview_size: int = 2048,
              mode: str = "swipe") -> Comparison:
        """Fetch both sides of ``process_id`` concurrently and open them.

        ``download=False`` stops after the links and HEADs (metadata only).
        With ``require_output=False`` an unfinished output is not an error: the
        result holds the input alone and ``not_ready``.
        """
        pid = check_process_id(process_id)
        sides: dict[Side, _SideData] = {side: _SideData() for side in SIDES}

        def one_side(side: Side) -> None:
            data = sides[side]
            source = client.link_source(pid, side)
            data.link = source(False)
            data.object = transfer.head(source)
            if not download:
                return
            progress = (lambda done, total: on_progress(side, done, total)) if on_progress else None
            fetched = transfer.download(source, pid, side, info=data.object, on_progress=progress)
            data.file, data.from_cache = fetched.path, fetched.from_cache
            from .imaging import load_image

            data.image = load_image(data.file, label=f"{side} of {pid}",
                                    pyramid_path=_pyramid_path(data.file))

        def get_status() -> Status | None:
            try:
                return client.status(pid)
            except TopazError:
                return None

        not_ready: NotReady | None = None
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="topaz-fetch") as pool:
            status_future = pool.submit(get_status)
            futures = {side: pool.submit(one_side, side) for side in SIDES}
            for side in SIDES:
                try:
                    futures[side].result()
                except NotReady as exc:
                    if require_output:
                        raise
                    not_ready = exc
                    sides[side] = _SideData()
            status = status_future.result()
        return cls(pid, sides=sides, status=status, not_ready=not_ready,
                   preview_size=preview_size, mode=mode)

    # -- images -----------------------------------------------------------
    @property
    def downloaded(self) -> bool:
        """False for a metadata-only fetch (links and HEADs, no images)."""
        return any(d.image is not None for d in self._sides.values())

    @property
    def ready(self) -> bool:
        """True when the output is there to compare."""
        return self._sides["output"].image is not None

    def source(self, side: Side) -> SourceImage | None:
        """The lazily decoded image of one side (``None`` when not downloaded)."""
        return self._sides[side].image

    @property
    def input(self) -> Image.Image | None:
        """The input at full resolution, oriented and in sRGB."""
        image = self._sides["input"].image
        return image.full() if image is not None else None

    @property
    def output(self) -> Image.Image | None:
        """The output at full resolution, or ``None`` while it is not ready."""
        image = self._sides["output"].image
        return image.full() if image is not None else None

    def files(self) -> dict[Side, Path]:
        """The downloaded files, by side."""
        return {side: d.file for side, d in self._sides.items() if d.file is not None}

    def links(self) -> dict[Side, Link]:
        """The presigned links, by side (print them and they show redacted)."""
        return {side: d.link for side, d in self._sides.items() if d.link is not None}

    @property
    def view(self) -> CompareView:
        """The comparison widget (made on first access, then reused)."""
        if self._view is None:
            from .widget import CompareView

            inp, out = self._sides["input"].image, self._sides["output"].image
            if inp is None or out is None:
                raise TopazError(
                    f"Process {self.process_id} has no {'output' if inp else 'input'} image to "
                    "compare yet: fetch it again with --wait once it has finished."
                )
            crop = self.status.crop_to_fill if self.status is not None else None
            self._view = CompareView(inp, out, mode=self.mode, preview_size=self.preview_size,
                                     crop_to_fill=crop)
        return self._view

    def prepare(self) -> Comparison:
        """Decode what the first view shows now, so a damaged file fails here.

        Displaying happens later, inside IPython's formatters, where an error
        becomes a traceback; doing the work up front turns it into the one-line
        error of the call that fetched.  Returns ``self``.
        """
        if self.ready:
            self.view  # noqa: B018 -- builds both previews
        elif self._sides["input"].image is not None:
            self._sides["input"].image.preview(self._alone_size)
        return self

    @property
    def _alone_size(self) -> int:
        """Preview size of an input shown without its output (no zoom, no tiles)."""
        return min(self.preview_size, 1024)

    def save(self, directory: str | Path) -> dict[Side, Path]:
        """Copy both original files into ``directory`` as ``<pid>-<side>.<ext>``."""
        import shutil

        target = Path(directory).expanduser()
        target.mkdir(parents=True, exist_ok=True)
        saved: dict[Side, Path] = {}
        for side, path in self.files().items():
            dest = target / f"{self.process_id}-{side}{path.suffix}"
            tmp = dest.with_name(dest.name + ".part")
            shutil.copyfile(path, tmp)
            tmp.replace(dest)
            saved[side] = dest
        return saved

    # -- metadata ---------------------------------------------------------
    @property
    def info(self) -> dict[str, Any]:
        """Everything known about the process, as plain data (no secrets)."""
        out: dict[str, Any] = {"process_id": self.process_id}
        for side, data in self._sides.items():
            entry: dict[str, Any] = {}
            if data.image is not None:
                entry.update(data.image.info.as_dict())
            if data.object is not None:
                entry.update(
                    file_size=data.object.size, content_type=data.object.content_type,
                    etag=data.object.etag, last_modified=data.object.last_modified,
                    url=data.object.url,
                )
            if data.link is not None:
                entry.update(link_expiry=data.link.expiry, url=redact_url(data.link.download_url))
            if data.file is not None:
                entry.update(file=str(data.file), from_cache=data.from_cache)
            out[side] = entry
        inp, outp = self._sides["input"].image, self._sides["output"].image
        if inp is not None and outp is not None:
            from .imaging import scale_factor

            out["scale"] = scale_factor(inp.info, outp.info)
        if self.status is not None:
            s = self.status
            out["status"] = {
                "status": s.status, "progress": s.progress, "eta": s.eta, "model": s.model,
                "model_type": s.model_type, "category": s.category, "credits": s.credits,
                "crop_to_fill": s.crop_to_fill, "filename": s.filename,
            }
        return out

    def rows(self) -> list[tuple[str, str, str]]:
        """The metadata table: (field, input, output), formatted for people."""
        info = self.info
        inp, outp = info.get("input", {}), info.get("output", {})
        rows: list[tuple[str, str, str]] = []

        def add(label: str, key: str, fmt: Callable[[Any], str] = str) -> None:
            a, b = inp.get(key), outp.get(key)
            if a is None and b is None:
                return
            rows.append((label, "" if a is None else fmt(a), "" if b is None else fmt(b)))

        if "width" in inp or "width" in outp:
            rows.append(("Dimensions", _dims(inp), _dims(outp)))
        add("Megapixels", "megapixels", lambda v: f"{v:.2f} MP")
        if "scale" in info:
            rows.append(("Scale", "1×", f"{info['scale']:.2f}×"))
        add("Format", "format")
        add("Mode", "mode")
        add("Bit depth", "bit_depth", lambda v: f"{v}-bit")
        add("ICC profile", "icc_profile")
        add("File size", "file_size", _bytes)
        add("Content type", "content_type")
        add("ETag", "etag")
        add("Last modified", "last_modified", _when)
        add("Link expires", "link_expiry", _expiry)
        status = info.get("status")
        if status:
            for label, key in (("Status", "status"), ("Model", "model"), ("Category", "category"),
                               ("Credits", "credits")):
                if status.get(key) is not None:
                    rows.append((label, "", str(status[key])))
        return rows

    def status_line(self) -> str:
        """One line on where the process stands, with how to wait for it."""
        if self.ready:
            return f"Process {self.process_id}: output ready."
        nr = self.not_ready
        state = (nr.status if nr and nr.status else None) or (self.status.status if self.status else "not ready")
        progress = nr.progress if nr and nr.progress is not None else (
            self.status.progress if self.status else None)
        eta = nr.eta if nr and nr.eta is not None else (self.status.eta if self.status else None)
        parts = [f"Output of {self.process_id} is not ready: {state}"]
        if progress is not None:
            parts.append(f"{progress}%")
        if isinstance(eta, _dt.datetime):
            secs = max(0, round((eta - _dt.datetime.now(_dt.timezone.utc)).total_seconds()))
            parts.append(f"ETA {secs} s")
        return ", ".join(parts) + f". Run %topaz {self.process_id} --wait to wait for it."

    def metadata_html(self) -> str:
        """The metadata table as escaped HTML (values come from a server)."""
        cell = 'style="text-align:left;padding:1px 8px"'
        head = f"<tr><th></th><th {cell}>Input</th><th {cell}>Output</th></tr>"
        body = "".join(
            f"<tr><th {cell}>{html.escape(k)}</th><td {cell}>{html.escape(a)}</td>"
            f"<td {cell}>{html.escape(b)}</td></tr>"
            for k, a, b in self.rows()
        )
        return (f'<table class="topaz-meta" style="font-size:12px;border-collapse:collapse">'
                f'<caption style="text-align:left;font-family:monospace">'
                f"{html.escape(self.process_id)}</caption>{head}{body}</table>")

    def widget(self) -> Any:
        """The view beside its metadata table, as one ipywidgets box."""
        import ipywidgets as w

        table = w.HTML(self.metadata_html(), layout=w.Layout(flex="0 1 auto", margin="0 0 0 12px"))
        if not self.downloaded:
            return w.VBox([table])
        if self.ready:
            main: Any = self.view
            # The view grows to fill the row; the table keeps its natural width beside
            # it and wraps below only when the notebook is too narrow for both.
            main.layout.flex = "1 1 520px"
            main.layout.min_width = "320px"
        else:
            main = w.VBox([w.HTML(f"<b>{html.escape(self.status_line())}</b>"),
                           _image_widget(self._sides["input"].image, self._alone_size)])
        return w.Box([main, table], layout=w.Layout(display="flex", flex_flow="row wrap",
                                                     align_items="flex-start", width="100%"))

    def __repr__(self) -> str:
        state = "ready" if self.ready else "output not ready"
        return f"<Comparison {self.process_id} ({state})>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = dict(self.widget()._repr_mimebundle_(include=include, exclude=exclude) or {})
        bundle["text/plain"] = self._text_summary()
        return bundle

    def _text_summary(self) -> str:
        lines = [repr(self)]
        if not self.ready:
            lines.append(self.status_line())
        rows = self.rows()
        width = max((len(r[0]) for r in rows), default=0)
        lines += [f"  {k:<{width}}  {a:<22} {b}" for k, a, b in rows]
        return "\n".join(lines)


def _pyramid_path(file: Path) -> Path | None:
    """Where a downloaded file's tile pyramid lives: hidden beside it, like its
    stored previews; none for files outside the download cache."""
    from ._cache import PreviewStore

    if not PreviewStore.applies_to(file):
        return None
    return file.with_name(f".{file.name}.pyramid.tif")


def _image_widget(image: SourceImage | None, size: int) -> Any:
    import ipywidgets as w

    if image is None:
        return w.HTML("<i>no input image</i>")
    return w.Image(value=image.preview_bytes(size, format="webp"), format="webp",
                   layout=w.Layout(max_width="100%"))


def _dims(entry: dict[str, Any]) -> str:
    return f"{entry['width']}×{entry['height']}" if "width" in entry else ""


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _when(value: Any) -> str:
    return utc_text(value) if isinstance(value, _dt.datetime) else str(value)


def _expiry(value: Any) -> str:
    return expiry_text(value) if isinstance(value, _dt.datetime) else str(value)
