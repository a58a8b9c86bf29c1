"""Many processes at once: thumbnails, key numbers, and a click to compare.

``%topaz ID1 ID2 …`` and ``%topaz recent`` return a :class:`Gallery`.  Its
cards are fetched in the background through :func:`topaz_nb._tasks.workers`
(a bounded pool, so a batch of five hundred neither runs one at a time nor
opens five hundred connections), and each card fills in as soon as its
process is fetched: the first thumbnails appear while the rest are still
downloading, and the kernel stays free meanwhile.  A process that fails to
fetch becomes a card saying why instead of aborting the batch; Ctrl-C (while
waiting for the batch), :meth:`Gallery.cancel` or the ``cancel`` event given
stops the whole batch at once (see :mod:`topaz_nb._tasks`), while a failure in
one process stops only its own downloads.

Memory stays bounded by the batch's *thumbnails*: a card keeps two small WebP
thumbnails and a row of numbers, never the decoded images.  The full
comparison is opened again from the disk cache when a card is opened
(:meth:`Gallery.open`), and only the open one is kept.  So does the disk: a
card's comparison pins its downloads against the cache's bound only until its
thumbnails are made, then closes; the comparison shown below the grid stays
pinned until another replaces it.
"""

from __future__ import annotations

import html
import logging
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import as_completed
from typing import TYPE_CHECKING, Any

from .._ids import check_process_id
from .._tasks import POLL_SECONDS, child_event, workers
from .._text import ago, byte_size, html_table, say
from ..comparison import Comparison
from ..errors import Cancelled, TopazError
from ..links import SIDES
from .cards import Card, thumb_uri
from .review import Review

if TYPE_CHECKING:
    from ..api.client import Status, TopazClient
    from ..storage import Transfer

__all__ = ["Card", "Gallery"]

_log = logging.getLogger("topaz_nb.gallery")

_THUMB = 160
_FIDELITY_KEYS = ("psnr", "ssim")


class Gallery:
    """The processes of a batch, in the order given, fetched in the background.

    Made by :meth:`fetch` (which waits for every card) or by the magic, which
    :meth:`start`\\ s it and returns at once.  ``process_ids`` is the display
    order and ``len(gallery)`` its size; ``gallery[i]`` or
    ``gallery.open(pid)`` opens one comparison (from the disk cache).
    ``statuses`` (from :meth:`TopazClient.recent`) lets cards show the
    filename, model and status before their thumbnails arrive.  Setting
    ``cancel`` stops every download of the batch within a second.
    """

    def __init__(self, process_ids: Iterable[str], *, client: TopazClient, transfer: Transfer,
                 statuses: Iterable[Status] = (), max_workers: int = 4,
                 preview_size: int = 2048, mode: str = "swipe",
                 on_done: Callable[[str], None] | None = None,
                 cancel: threading.Event | None = None) -> None:
        ids = list(dict.fromkeys(check_process_id(p) for p in process_ids))
        known = {st.process_id: st for st in statuses}
        self.cards: list[Card] = [Card(pid, status=known.get(pid)) for pid in ids]
        self._client, self._transfer = client, transfer
        self._max_workers = max_workers
        self.preview_size, self.mode = preview_size, mode
        self._on_done = on_done
        self._cancel = child_event(cancel)  # the batch's: set by cancel() or by ``cancel``
        self._lock = threading.RLock()
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None
        self._first = 0  # the card fetched alone before the others (start(first=...))
        self._widget: Any = None
        self._card_widgets: dict[str, Any] = {}
        self._counter: Any = None
        self._detail: Any = None
        self._listeners: list[Callable[[Card], None]] = []
        self.opened: Comparison | None = None
        self._shown: Comparison | None = None  # below the grid
        if not ids:
            self._finished.set()

    # -- fetching -------------------------------------------------------------
    @classmethod
    def fetch(cls, process_ids: Iterable[str], *, client: TopazClient, transfer: Transfer,
              **kw: Any) -> Gallery:
        """Fetch every process, ``max_workers`` at a time, and return when all are done;
        all IDs are checked before any request."""
        return cls(process_ids, client=client, transfer=transfer, **kw).start().wait()

    def start(self, first: str | None = None) -> Gallery:
        """Start fetching in a background thread (once); returns ``self`` at once.

        The card of ``first`` (by default the first card) is fetched alone
        before the others, with the whole link: a review starts the gallery
        with the process it shows."""
        with self._lock:
            if first is not None and self._thread is None:
                self._first = self.cards.index(self.card(first))
            if self._thread is None and not self._finished.is_set():
                self._thread = threading.Thread(target=self._run, name="topaz-gallery",
                                                daemon=True)
                self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> Gallery:
        """Block until every card is fetched (at once when fetching never started);
        Ctrl-C cancels the fetching."""
        if self._thread is None:
            return self
        try:
            self._finished.wait(timeout)
        except KeyboardInterrupt:
            self.cancel()
            raise
        return self

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def cancel(self) -> None:
        """Stop fetching: transfers end within a second and keep their partial files."""
        self._cancel.set()

    def on_card(self, callback: Callable[[Card], None]) -> None:
        """Call ``callback(card)`` (from a worker thread) each time a card is fetched."""
        self._listeners.append(callback)

    def _run(self) -> None:
        try:
            with workers(self._max_workers, "topaz-gallery", self._cancel) as pool:
                # The first card is what the eye is on: its downloads get the
                # whole link (each large object in parallel ranges) before the
                # others start, so it appears a download's time after the
                # start, not a batch's share of the link later.
                first_in = threading.Event()
                ahead = self.cards[self._first:self._first + 1]
                futures = [pool.submit(self._fetch_card, card, first_in) for card in ahead]
                while futures and not first_in.wait(POLL_SECONDS):
                    if self._cancel.is_set() or futures[0].done():
                        break
                futures += [pool.submit(self._fetch_card, card)
                            for i, card in enumerate(self.cards) if i != self._first]
                for future in as_completed(futures):
                    future.result()
        except Exception:  # noqa: BLE001 -- a bug must not leave the gallery waiting forever
            _log.exception("fetching the gallery failed")
        finally:
            self._finished.set()

    def _fetch_card(self, card: Card, downloaded: threading.Event | None = None) -> None:
        """Fetch one card; ``downloaded`` is set once its files are in (or it failed)."""
        try:
            if self._cancel.is_set():
                raise Cancelled("The gallery was cancelled before this process was fetched.")
            try:
                result = Comparison.fetch(card.process_id, client=self._client,
                                          transfer=self._transfer, require_output=False,
                                          preview_size=self.preview_size, mode=self.mode,
                                          cancel=child_event(self._cancel))
            finally:
                if downloaded is not None:
                    downloaded.set()
            try:
                thumbs: dict[str, bytes | None] = {}
                for side in SIDES:  # thumbnails now: a damaged file fails here
                    image = result.source(side)
                    thumbs[side] = image.preview_bytes(_THUMB, format="webp") \
                        if image is not None else None
                row = _row(result)
            finally:
                result.close()  # keep the thumbnails, not the pixels nor the files
            with self._lock:
                card.thumbs, card.row = thumbs, row
                card.status = result.status or card.status
                card.ready, card.failed, card.reason = result.ready, result.failed, result.reason
                card.line = result.status_line("python") if result.failed else ""
        except TopazError as exc:
            with self._lock:
                card.error = exc
                card.line = say(exc, "python")
                card.row = {"process_id": card.process_id, "status": "error",
                            "error": card.line}
        finally:
            with self._lock:
                card.done = True
                self._refresh(card)
            for listener in list(self._listeners):
                try:
                    listener(card)
                except Exception:  # noqa: BLE001 -- a display callback must not stop the batch
                    _log.exception("gallery listener failed")
            if self._on_done is not None:
                self._on_done(card.process_id)

    # -- access -----------------------------------------------------------------
    @property
    def process_ids(self) -> list[str]:
        """The process IDs in display order."""
        return [card.process_id for card in self.cards]

    def card(self, process_id: str) -> Card:
        pid = check_process_id(process_id)
        for card in self.cards:
            if card.process_id == pid:
                return card
        raise KeyError(f"process {pid} is not in this gallery")

    def open(self, which: int | str) -> Comparison:
        """One process's comparison, fetched again (from the disk cache when it is
        there); the gallery keeps only the last one opened."""
        pid = self.cards[which].process_id if isinstance(which, int) else \
            self.card(which).process_id
        comparison = self.load(pid)
        self.opened = comparison
        return comparison

    def load(self, process_id: str) -> Comparison:
        """One process's comparison fetched as the gallery fetches it (same client,
        cache, preview size and mode), ready to show; the gallery keeps nothing
        of it.  A Failed process loads too, with its input alone."""
        return Comparison.fetch(process_id, client=self._client, transfer=self._transfer,
                                require_output=False, preview_size=self.preview_size,
                                mode=self.mode).prepare()

    def status(self, process_id: str) -> Status:
        """The process's status, asked of the API now (a card not fetched yet has none)."""
        return self._client.status(process_id)

    def __getitem__(self, index: int) -> Comparison:
        return self.open(index)

    def __len__(self) -> int:
        return len(self.cards)

    @property
    def errors(self) -> dict[str, str]:
        """Process ID → one-line reason, for those that could not be fetched or failed.

        A Failed or Cancelled process fetches fine (its input is there) but will
        never have an output, so it counts here, with the server's reason.
        """
        with self._lock:
            return {c.process_id: c.line for c in self.cards
                    if c.done and (c.error is not None or c.failed)}

    def sorted_by(self, key: str) -> Gallery:
        """The same processes ordered by ``"psnr"`` or ``"ssim"``, least faithful
        first, as a new gallery; processes without an output, or whose scores
        could not be computed (``None`` in :meth:`summary`), keep their order at
        the end.  Waits for the fetching; each score is computed once and kept
        beside the download (:attr:`Comparison.fidelity`), and both show in
        :meth:`summary`."""
        if key not in _FIDELITY_KEYS:
            raise ValueError(f"sort key must be one of {', '.join(_FIDELITY_KEYS)}; got {key!r}")
        self.start().wait()  # scores need the cards, even of a gallery never shown
        scored = []
        for i, card in enumerate(self.cards):
            if card.ready and card.error is None:
                with self.load(card.process_id) as comparison:
                    result = comparison.fidelity
                psnr, ssim = result.psnr, result.ssim
                with self._lock:
                    card.row.update(
                        psnr=round(psnr, 2) if psnr is not None and psnr < 1e9 else None,
                        ssim=round(ssim, 4) if ssim is not None else None)
                value = psnr if key == "psnr" else ssim
                if value is not None:
                    scored.append((value, i))
        first = [i for _, i in sorted(scored)]
        order = first + [i for i in range(len(self.cards)) if i not in set(first)]
        ordered = Gallery([self.cards[i].process_id for i in order], client=self._client,
                          transfer=self._transfer, max_workers=self._max_workers,
                          preview_size=self.preview_size, mode=self.mode)
        ordered.cards = [self.cards[i] for i in order]
        ordered._finished.set()
        return ordered

    def summary(self) -> list[dict[str, Any]]:
        """One row of key numbers per process (feed it to ``pandas.DataFrame``)."""
        with self._lock:
            return [dict(c.row) if c.done else
                    {"process_id": c.process_id, "status": "fetching",
                     "filename": c.filename, "model": c.model} for c in self.cards]

    # -- display ------------------------------------------------------------
    def widget(self) -> Any:
        """A grid of cards that fill in as they are fetched; a card's Compare button
        opens its comparison below the grid."""
        import ipywidgets as w

        with self._lock:
            if self._widget is not None:
                return self._widget
            self._counter = w.HTML(self._count_text())
            self._detail = w.VBox(layout=w.Layout(width="100%"))
            cards = [self._card_widget(card) for card in self.cards]
            grid = w.GridBox(cards, layout=w.Layout(
                grid_template_columns=f"repeat(auto-fill, minmax({2 * _THUMB + 24}px, 1fr))",
                grid_gap="8px", width="100%"))
            self._widget = w.VBox([self._counter, grid, self._detail])
            return self._widget

    def _count_text(self) -> str:
        done = sum(c.done for c in self.cards)
        if done == len(self.cards):
            failed = len(self.errors)
            return html.escape(f"{len(self.cards)} processes" +
                               (f", {failed} failed" if failed else ""))
        return html.escape(f"Fetched {done} of {len(self.cards)} processes…")

    def _card_widget(self, card: Card) -> Any:
        import ipywidgets as w

        body = w.HTML(_card_html(card))
        button = w.Button(description="Compare", disabled=not card.ready,
                          layout=w.Layout(width="auto"))
        button.on_click(lambda _b, pid=card.process_id: self._show(pid))
        box = w.VBox([body, button], layout=w.Layout(
            border="1px solid #ddd", padding="6px", align_items="flex-start"))
        self._card_widgets[card.process_id] = (body, button)
        return box

    def _refresh(self, card: Card) -> None:
        """Show a card's new state, if the grid is on screen (called with the lock held)."""
        parts = self._card_widgets.get(card.process_id)
        if parts is None:
            return
        body, button = parts
        body.value = _card_html(card)
        button.disabled = not card.ready
        button.tooltip = card.line or card.state
        if self._counter is not None:
            self._counter.value = self._count_text()

    def _show(self, pid: str) -> None:
        assert self._detail is not None
        self._detail.children = []
        # The previous comparison goes before the next is loaded: off the page,
        # its files are no longer pinned.
        self.opened = None
        shown, self._shown = self._shown, None
        if shown is not None:
            shown.close()
        try:
            self._shown = self.open(pid)
            self._detail.children = [self._shown.widget()]
        except TopazError as exc:
            self._detail.children = [w_error(say(exc, "panel"))]

    def _html_table(self) -> str:
        rows = self.summary()
        cols = ["process_id", "filename", "status", "input_size", "output_size", "scale",
                "output_format", "output_bytes", "model", "error"]
        cols = [c for c in cols if any(r.get(c) not in (None, "") for r in rows)]

        def shown(row: dict[str, Any], col: str) -> Any:
            value = row.get(col)
            return byte_size(value) if col == "output_bytes" and value is not None else value

        return html_table(([shown(r, c) for c in cols] for r in rows), header=cols,
                          css_class="topaz-gallery")

    def __repr__(self) -> str:
        if not self.finished:
            done = sum(c.done for c in self.cards)
            return f"<Gallery of {len(self.cards)} processes, {done} fetched so far>"
        return f"<Gallery of {len(self.cards)} processes, {len(self.errors)} failed>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = dict(self.widget()._repr_mimebundle_(include=include, exclude=exclude) or {})
        bundle["text/html"] = self._html_table()
        bundle["text/plain"] = "\n".join(
            [repr(self)] + [f"  {r['process_id']}  {r.get('status')}  "
                            f"{r.get('output_size') or r.get('error', '')}"
                            for r in self.summary()])
        return bundle

    def review(self, path: str | os.PathLike[str] = "topaz-review.csv", *,
               order: str | None = None) -> Review:
        """Step through this batch one comparison at a time, recording decisions
        in the CSV file ``path``; see :class:`~topaz_nb.batch.review.Review`."""
        return Review(self, path=path, order=order)


def _row(result: Comparison) -> dict[str, Any]:
    info = result.info
    inp, out = info.get("input", {}), info.get("output", {})
    status = info.get("status") or {}
    row: dict[str, Any] = {"process_id": result.process_id, "filename": status.get("filename")}
    if result.failed:
        row.update(error=result.reason or "")
    row.update(
        status=status.get("status") or ("Completed" if result.ready else "not ready"),
        model=status.get("model"),
        input_size=_size(inp), output_size=_size(out),
        scale=round(info["scale"], 3) if "scale" in info else None,
        output_format=out.get("format"),
        output_bytes=out.get("file_size"),
        output_megapixels=round(out["megapixels"], 2) if "megapixels" in out else None,
    )
    return row


def _size(entry: dict[str, Any]) -> str | None:
    return f"{entry['width']}×{entry['height']}" if "width" in entry else None


def _card_html(card: Card) -> str:
    """One card's title, labelled thumbnails and note, as escaped HTML."""
    name = card.filename or card.row.get("filename")
    title = (f"<b>{html.escape(name)}</b> " if name else "") + \
        f"<code>{html.escape(card.process_id[:8])}…</code>"
    thumbs = "".join(_thumb_html(card, side) for side in ("input", "output"))
    if card.error is not None:
        note = _error_span(say(card.error, "panel"))
    elif card.failed:
        verb = "cancelled" if card.state == "Cancelled" else "failed"
        note = _error_span(f"{verb}: {card.reason}" if card.reason else verb)
    else:
        row = card.row
        when = ago(card.status.creation_time) if card.status is not None else ""
        note = html.escape(" · ".join(str(x) for x in (
            card.state if card.state != "Completed" else None,
            row.get("output_size"),
            f"{row['scale']}×" if row.get("scale") else None,
            card.model, when) if x))
    return (f"<div class='topaz-card'>{title}<div style='display:flex;gap:4px'>{thumbs}</div>"
            f"<div>{note}</div></div>")


def _thumb_html(card: Card, side: str) -> str:
    """One side's thumbnail under its label, so input and output cannot be confused."""
    uri = thumb_uri(card.thumbs.get(side))
    label = f"<small>{side.capitalize()}</small>"
    if uri is not None:
        picture = f"<img src='{uri}' alt='{side}' style='width:{_THUMB}px;display:block'>"
    else:
        text = ("fetching…" if not card.done else "—" if card.error is not None
                else "no output" if card.failed else "not ready")
        picture = (f"<div style='width:{_THUMB}px;height:{_THUMB * 3 // 4}px;background:#eee;"
                   f"display:flex;align-items:center;justify-content:center'>{text}</div>")
    return f"<div>{label}{picture}</div>"


def _error_span(text: str) -> str:
    return f"<span style='color:var(--jp-error-color1, #b00)'>{html.escape(text)}</span>"


def w_error(text: str) -> Any:
    import ipywidgets as w

    return w.HTML(_error_span(text))
