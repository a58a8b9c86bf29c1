"""One process's input and output: fetched, loaded, described.

:class:`Comparison` is what ``%topaz ID`` returns and what the panel shows.  It
asks the client for both presigned links, has the transfer layer HEAD and
download both objects *concurrently*, and opens them with the imaging layer.
Everything it prints or puts in a widget is redacted: links appear through
``redact_url`` only, and it never sees the API key (the client keeps it).

From the moment it asks for them until it is closed, a comparison *pins* its
downloads (:meth:`topaz_nb.storage.Transfer.pin`): the cache's bound evicts
other files first, and goes over its bound rather than take these, whichever
thread or kernel checks it.  :meth:`Comparison.close` lets go, as does
closing its view (a view on screen keeps the comparison, and so its files, for
as long as it is not closed), or dropping the comparison.
"""

from __future__ import annotations

import datetime as _dt
import functools
import html
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._ids import check_process_id
from ._tasks import cancellable, child_event, workers
from ._text import Place, byte_size
from .errors import ImageError, ImageTooLarge, NotReady, NotSaved, TopazError
from .links import SIDES, Link, Side, expiry_text, redact_url, utc_text

if TYPE_CHECKING:
    from concurrent.futures import Future

    from PIL import Image

    from .api.client import Status, TopazClient
    from .imaging.fidelity import Fidelity
    from .imaging.source import SourceImage
    from .storage import Arrival, Fetched, ObjectInfo, Pin, Transfer
    from .view.widget import CompareView

_log = logging.getLogger("topaz_nb.comparison")

ProgressFn = Callable[[Side, int, "int | None"], None]
"""Called as ``(side, bytes_done, bytes_total_or_None)`` while downloading."""


@dataclass
class _SideData:
    link: Link | None = None
    object: ObjectInfo | None = None
    file: Path | None = None
    from_cache: bool = False
    image: SourceImage | None = None
    fetched: Fetched | None = None
    # Discards the cached file and downloads it once more (set for downloads only).
    heal: Callable[[], None] | None = None
    # Keeps the download from the cache's eviction until the comparison is closed.
    pin: Pin | None = None

    def release(self) -> None:
        if self.pin is not None:
            self.pin.release()


class Comparison:
    """A Topaz process's input and output, with metadata.

    Attributes most users want: ``input`` and ``output`` (full-resolution PIL
    images, decoded on first access), ``info`` (a plain dict of the metadata),
    ``view`` (the :class:`~topaz_nb.view.widget.CompareView`).  ``output`` is
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
        self._fidelity: Fidelity | None = None
        self._closed = False

    # -- fetching ---------------------------------------------------------
    @classmethod
    def fetch(cls, process_id: str, *, client: TopazClient, transfer: Transfer,
              download: bool = True, require_output: bool = True,
              on_progress: ProgressFn | None = None, preview_size: int = 2048,
              mode: str = "swipe", cancel: threading.Event | None = None) -> Comparison:
        """Fetch both sides of ``process_id`` concurrently and open them.

        ``download=False`` stops after the links and HEADs (metadata only).
        With ``require_output=False`` an unfinished output is not an error: the
        result holds the input alone and ``not_ready``.  Setting ``cancel``
        stops both downloads within a second with
        :class:`~topaz_nb.errors.Cancelled`, keeping what arrived for resume.
        Ctrl-C in the calling thread returns at once and sets ``cancel`` (see
        :mod:`topaz_nb._tasks`), as does an error on one side, so no download
        goes on behind a cell that has already stopped.

        A cached file that does not open is discarded and downloaded once
        more; only a second failure is reported.  Without that, a damaged
        file (an error page saved by an older version, a disk fault) would
        fail on every run until the cache was cleared by hand.

        Both downloads are pinned against the cache's eviction before they are
        looked for, until :meth:`close` (see the module's docstring).
        """
        pid = check_process_id(process_id)
        sides: dict[Side, _SideData] = {side: _SideData() for side in SIDES}
        stop = child_event(cancel)  # a failing side stops this process only

        def one_side(side: Side) -> None:
            data = sides[side]
            source = client.link_source(pid, side)
            data.link = cancellable(lambda: source(False), stop,
                                    f"Cancelled: asking for the {side} link of {pid}")
            data.object = transfer.head(source, cancel=stop)
            if not download:
                return
            data.pin = transfer.pin(pid, side, data.object, cancel=stop)
            if stop.is_set():  # the fetch has ended meanwhile: nobody else would let go
                data.release()
                return
            progress = (lambda done, total: on_progress(side, done, total)) if on_progress else None

            arrived: list[Future[Any]] = []

            def decode_arriving(arrival: Arrival) -> None:
                # A PNG's one decode (a large one's pyramid, and so its
                # preview) starts on the bytes as they land; used only once
                # they are the checked file.
                from .imaging.source import decode_while_arriving

                reader = arrival.reader(stop)

                def final() -> Path | None:
                    # The checked file, if every byte the decode read is of it.
                    path = arrival.final(stop)
                    return path if path is not None and reader.intact else None

                arrived.append(decode_while_arriving(
                    reader.read, size=arrival.size, pyramid_path=arrival.derived("pyramid.tif"),
                    final=final, done=reader.close, label=f"{side} of {pid}"))

            def get() -> None:
                arrived.clear()
                fetched = transfer.download(source, pid, side, info=data.object,
                                            on_progress=progress, cancel=stop,
                                            on_arrival=decode_arriving)
                data.fetched, data.file, data.from_cache = fetched, fetched.path, fetched.from_cache
                from .imaging.source import load_image

                # Previews, a large image's tile pyramid and fidelity go where the
                # cache layout says, so they are discarded with their download and
                # counted in the cache; once a pyramid is written (up to 4 B/px)
                # the cache's size bound is checked again.
                file = data.file
                data.image = load_image(
                    file, label=f"{side} of {pid}",
                    derived=functools.partial(transfer.derived_path, file),
                    arrived=arrived[-1] if arrived and not fetched.from_cache else None,
                    on_pyramid=lambda _path: _keep_within_budget(
                        transfer, [d.file for d in sides.values() if d.file is not None], True))

            def heal() -> None:
                assert data.fetched is not None
                _log.info("the cached %s of %s is damaged; downloading it again", side, pid)
                if data.image is not None:
                    data.image.close()
                    data.image = None
                transfer.discard(data.fetched)
                data.heal = None  # once: a second failure is reported
                get()

            data.heal = heal
            try:
                get()
            except ImageError as exc:
                if not _healable(data, exc):
                    raise
                heal()

        def get_status() -> Status | None:
            try:
                return cancellable(lambda: client.status(pid), stop,
                                   f"Cancelled: asking for the status of {pid}")
            except TopazError:
                return None

        not_ready: NotReady | None = None
        try:
            with workers(3, "topaz-fetch", stop) as pool:
                status_future = pool.submit(get_status)
                futures = {side: pool.submit(one_side, side) for side in SIDES}
                for side in SIDES:
                    try:
                        futures[side].result()
                    except NotReady as exc:
                        if require_output:
                            raise
                        not_ready = exc
                        sides[side].release()
                        sides[side] = _SideData()
                status = status_future.result()
        except BaseException:
            # ``stop`` is set by now: a side still running releases a pin it
            # takes after this itself (see one_side).
            for data in sides.values():
                data.release()
            raise
        in_use = [d.file for d in sides.values() if d.file is not None]
        if in_use:
            # Downloads must not fill the disk: this process's files are marked
            # used, the least recently used others (never a pinned one) go.
            _keep_within_budget(transfer, in_use, any(not d.from_cache for d in sides.values()
                                                      if d.file is not None))
        return cls(pid, sides=sides, status=status, not_ready=not_ready,
                   preview_size=preview_size, mode=mode)

    # -- lifetime -----------------------------------------------------------
    def close(self) -> None:
        """Let go of the downloads (the cache's bound may evict them from now
        on), the decoded images and the view, which leaves the page.  Closing
        the view closes its comparison too.  Later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        view, self._view = self._view, None
        try:
            if view is not None:
                view.close()
        finally:
            for data in self._sides.values():
                data.release()
                if data.image is not None:
                    data.image.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Comparison:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        """The comparison widget (made on first access, then reused).

        The view keeps this comparison's downloads pinned until it is closed.
        """
        if self._closed:
            from ._text import closed_comparison

            raise TopazError(closed_comparison(self.process_id))
        if self._view is None:
            from .view.widget import CompareView

            inp, out = self._sides["input"].image, self._sides["output"].image
            if inp is None or out is None:
                raise TopazError(
                    f"Process {self.process_id} has no {'output' if inp else 'input'} image to "
                    "compare yet: fetch it again with --wait once it has finished."
                )
            crop = self.status.crop_to_fill if self.status is not None else None
            view = CompareView(inp, out, preview_size=self.preview_size, crop_to_fill=crop)
            view.fidelity_source = lambda _pane: self.fidelity  # cached beside the download
            view.mode = self.mode
            view.on_close(self.close)  # the view on screen holds the files until then
            self._view = view
        return self._view

    @property
    def fidelity(self) -> Fidelity:
        """How faithfully the output keeps the input (:func:`topaz_nb.fidelity`).

        Computed once, then kept beside the downloaded output (the transfer
        layer's derived files), so a later kernel reads it instead.  Never
        raises once both images are there: where no score can be computed (an
        output covering no whole input pixel, an image that cannot be decoded
        whole) ``reason`` says why, for the table and the view to show; that
        outcome of an image error is not kept, so a later call tries again.
        """
        if self._fidelity is None:
            from ._text import fidelity_failed
            from .imaging.fidelity import Fidelity, cached_fidelity

            inp, out = self._sides["input"], self._sides["output"]
            if inp.image is None or out.image is None:
                raise TopazError(f"Process {self.process_id} has no output to score yet.")
            crop = self.status.crop_to_fill if self.status is not None else None
            try:
                self._fidelity = cached_fidelity(
                    inp.image, out.image, input_file=inp.file, output_file=out.file,
                    derived=out.image.derived_path, crop_to_fill=crop)
            except ImageError as exc:
                return Fidelity.not_computed(inp.image.size, out.image.size,
                                             fidelity_failed(exc), crop_to_fill=crop)
        return self._fidelity

    def prepare(self) -> Comparison:
        """Decode what the first view shows now, so a damaged file fails here.

        Displaying happens later, inside IPython's formatters, where an error
        becomes a traceback; doing the work up front turns it into the one-line
        error of the call that fetched.  A file from the cache that fails to
        decode is discarded and downloaded once more first (see :meth:`fetch`).
        Returns ``self``.
        """
        try:
            self._first_view()
        except ImageError as exc:
            damaged = [side for side in SIDES if self._fails_to_decode(side, exc)]
            if not damaged:
                raise
            for side in damaged:
                heal = self._sides[side].heal
                assert heal is not None
                heal()
            self._view = None
            self._first_view()
        return self

    def _first_view(self) -> None:
        if self.ready:
            self.view  # noqa: B018 -- builds both previews
        elif self._sides["input"].image is not None:
            self._sides["input"].image.preview(self._alone_size)

    def _fails_to_decode(self, side: Side, exc: ImageError) -> bool:
        """Whether ``side`` is a healable cached file that does not decode."""
        data = self._sides[side]
        if data.image is None or not _healable(data, exc):
            return False
        try:
            data.image.preview(self._alone_size)
        except ImageError as own:
            return not isinstance(own, ImageTooLarge)
        return False

    @property
    def _alone_size(self) -> int:
        """Preview size of an input shown without its output (no zoom, no tiles)."""
        return min(self.preview_size, 1024)

    def save(self, directory: str | Path) -> dict[Side, Path]:
        """Copy both original files into ``directory`` as ``<pid>-<side>.<ext>``.

        Saving the same process again replaces its files (a link planted at
        either name is replaced itself, never followed; see :mod:`topaz_nb._files`).
        A path that is a file, or a directory that cannot be made, is a
        one-line :class:`TopazError`.  A side that cannot be written (a
        directory at its name, say) does not stop the other: it is saved, then
        :class:`NotSaved` says what was not, one line per side, and holds the
        saved paths as ``saved``.  The magic, the panel and the command show
        either through ``_text.say``.
        """
        from ._files import copy_into
        from ._text import cannot_save, not_saved

        target = Path(directory).expanduser()
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TopazError(cannot_save(directory, exc)) from None
        saved: dict[Side, Path] = {}
        failures: list[tuple[str, str | None, Exception]] = []
        for side, path in self.files().items():
            stem = f"{self.process_id}-{side}"
            try:
                saved[side] = copy_into(path, target, stem, path.suffix, replace=True)
            except OSError as exc:
                failures.append((f"the {side}", str(target / f"{stem}{path.suffix}"), exc))
        if failures:
            raise NotSaved(not_saved(failures, "python", saved=len(saved)), saved=saved,
                           failures=failures)
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
            from .imaging.source import scale_factor

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
        add("File size", "file_size", byte_size)
        add("Content type", "content_type")
        add("ETag", "etag")
        add("Last modified", "last_modified", _when)
        add("Link expires", "link_expiry", _expiry)
        if self.ready and self._sides["input"].image is not None:
            rows.extend(fidelity_rows(self.fidelity))
        status = info.get("status")
        if status:
            for label, key in (("Status", "status"), ("Model", "model"), ("Category", "category"),
                               ("Credits", "credits")):
                if status.get(key) is not None:
                    rows.append((label, "", str(status[key])))
        return rows

    @property
    def failed(self) -> bool:
        """The process ended without an output (Failed or Cancelled): waiting will not help."""
        return self._state()[0] in ("Failed", "Cancelled") and not self.ready

    @property
    def reason(self) -> str | None:
        """The server's explanation of a failure, when it gave one."""
        nr = self.not_ready
        return (nr.reason if nr is not None and nr.reason else None) or (
            self.status.reason if self.status is not None else None)

    def _state(self) -> tuple[str | None, int | None, Any]:
        """(status, progress, eta), from the 409 when it carried them, else the status."""
        nr, st = self.not_ready, self.status

        def pick(name: str) -> Any:
            value = getattr(nr, name, None) if nr is not None else None
            return value if value is not None else getattr(st, name, None)

        return pick("status"), pick("progress"), pick("eta")

    def status_line(self, place: Place = "magic") -> str:
        """One line on where the process stands and what to do, in the words of ``place``."""
        from ._text import failed, not_ready

        if self.ready:
            return f"Process {self.process_id}: output ready."
        status, progress, eta = self._state()
        if self.failed:
            return failed(self.process_id, status, self.reason, place)
        return not_ready(self.process_id, status or "not ready", progress,
                         eta if isinstance(eta, _dt.datetime) else None, place)

    def metadata_html(self) -> str:
        """The metadata table as escaped HTML (values come from a server)."""
        from ._text import html_table

        return html_table(self.rows(), header=("", "Input", "Output"), caption=self.process_id,
                          row_headers=True, css_class="topaz-meta")

    def widget(self, place: Place = "magic", *, line: bool = True) -> Any:
        """The view beside its metadata table, as one ipywidgets box.

        ``place`` words the line shown above an input whose output is not
        there (the panel has a checkbox where the magic has ``--wait``);
        ``line=False`` leaves it out where it is already said (the panel's
        status line).
        """
        import ipywidgets as w

        # The table never shrinks below its natural width (it would be cut off);
        # when the row has no room for it beside the view, it wraps below.
        table = w.HTML(self.metadata_html(), layout=w.Layout(
            flex="0 0 auto", max_width="100%", overflow="auto", margin="0 0 0 12px"))
        if not self.downloaded:
            return w.VBox([table])
        if self.ready:
            main: Any = self.view
            # The view grows to fill the row; the table keeps its natural width beside
            # it and wraps below only when the notebook is too narrow for both.
            main.layout.flex = "1 1 520px"
            main.layout.min_width = "320px"
        else:
            alone = _image_widget(self._sides["input"].image, self._alone_size)
            main = w.VBox([w.HTML(f"<b>{html.escape(self.status_line(place))}</b>"), alone]
                          if line else [alone])
        return w.Box([main, table], layout=w.Layout(display="flex", flex_flow="row wrap",
                                                     align_items="flex-start", width="100%"))

    def __repr__(self) -> str:
        state = "ready" if self.ready else ("failed" if self.failed else "output not ready")
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


def _keep_within_budget(transfer: Transfer, in_use: list[Path], downloaded: bool) -> None:
    """Keep the cache under ``Topaz.cache_max_bytes``; a failure to evict is
    logged, never raised into a fetch or a view."""
    try:
        transfer.keep_within_budget(in_use, downloaded=downloaded)
    except OSError as exc:
        _log.warning("could not keep the cache within its bound: %s", exc)


def _healable(data: _SideData, exc: ImageError) -> bool:
    """A file read from the cache may be healed by downloading it again; a
    fresh download or an image refused for its size may not."""
    return (data.from_cache and data.heal is not None and data.fetched is not None
            and not isinstance(exc, ImageTooLarge))


def _image_widget(image: SourceImage | None, size: int) -> Any:
    import ipywidgets as w

    if image is None:
        return w.HTML("<i>no input image</i>")
    # At most its natural size: a column box would stretch it to the cell's width
    # (a 150×100 input blown up to 1000 px), so it keeps to its own width.
    return w.Image(value=image.preview_bytes(size, format="webp"), format="webp",
                   layout=w.Layout(max_width="100%", width="auto", height="auto",
                                   align_self="flex-start", object_fit="contain"))


def fidelity_rows(result: Fidelity) -> list[tuple[str, str, str]]:
    """PSNR and SSIM rows of the metadata table (the output's column), or one
    row saying why they were not computed."""
    from ._text import psnr_text, ssim_text

    if result.reason is not None:
        return [("Fidelity vs input", "", result.reason)]
    return [("PSNR vs input", "", psnr_text(result.psnr)), ("SSIM vs input", "", ssim_text(result.ssim))]


def _dims(entry: dict[str, Any]) -> str:
    return f"{entry['width']}×{entry['height']}" if "width" in entry else ""


def _when(value: Any) -> str:
    return utc_text(value) if isinstance(value, _dt.datetime) else str(value)


def _expiry(value: Any) -> str:
    return expiry_text(value) if isinstance(value, _dt.datetime) else str(value)
