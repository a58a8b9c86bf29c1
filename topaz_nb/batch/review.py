"""Review a batch: one comparison at a time, by keyboard, with decisions in a CSV.

``review = gallery.review(path="topaz-review.csv")`` (or ``%topaz review …``)
shows the current process in the full :class:`~topaz_nb.view.widget.CompareView`
with a strip of the whole batch underneath, whose thumbnails carry the
decisions made so far.  Keys, anywhere in the review (the comparison passes on
the keys it does not use):

====  ============================================================
j/k   next / previous process
a     accept          r  reject         f  flag
n     write a note; Enter keeps it, and so does leaving the field
      (Escape, or a click elsewhere), decided or not
====  ============================================================

Every decision, and every note kept with Enter (decided or not), is written
at once to the CSV file through :class:`~topaz_nb.batch.decisions.ReviewFile`:
under a lock, merged into the file as it is on disk at that moment, and
atomically, so two reviews of one file (a re-run cell, a second kernel) keep
each other's decisions and the file is whole even if the kernel dies
mid-write.  Its header is :data:`HEADER`, one row per process; a later
decision replaces the earlier one; every other row (other batches, other
tools, blank lines) is kept byte for byte, and a file saved by a spreadsheet
keeps its shape.  Cells that a spreadsheet would run as formulas are written
with a leading ``'``.  Opening a review on the same file resumes at the first
undecided process.

Stepping keeps the comparison's mode (the one chosen last, by key, click or
from Python) and, when the comparison had the focus, gives it to the next one.

While one process is on screen, the next is fetched in the background, so
stepping forward is instant; only the previous, current and next comparisons
are kept in memory, and on disk: those three pin their downloads against the
cache's bound, and a comparison the review lets go of is closed.

Front end/kernel protocol of the strip (:class:`ReviewStrip`, ``static/review.js``,
which draws the note field too): the ``items`` trait lists ``{id, name,
decision, note}`` per process and ``current`` is the index on screen.
Thumbnails are not traits (every change of a trait sends it whole): the front
end sends ``{"event": "ready"}`` when it renders and gets ``{"thumbs": {index:
data_uri}}`` with all there are, then one such message per card as the
gallery fetches it.  Keys, clicks and kept notes come back as ``{"event":
"key", "key": "a", "index": 2}``, ``{"event": "go", "index": 3}`` and
``{"event": "note", "index": 2, "note": "…"}``.  Each names the process it was
meant for, and all travel over the strip's one channel in the order they were
made, so a note typed on one process can never land on the next (as it could
with a separate text widget, whose value syncs on its own schedule).  Keys and
clicks also carry ``"mode"``: the comparison's mode on screen, which the next
process opens in (as it does with a mode chosen from Python or synced from the
view).
"""

from __future__ import annotations

import datetime as _dt
import html
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anywidget
import traitlets as t

from .._text import cannot_save, not_recorded, say
from ..errors import TopazError
from ..view.modes import MODES
from .cards import Card, close_when_done, thumb_uri
from .decisions import DECISIONS, HEADER, Entry, ReviewFile

if TYPE_CHECKING:
    from ..api.client import Status
    from ..comparison import Comparison


class Batch(Protocol):
    """What a review needs of the batch it steps through: a
    :class:`~topaz_nb.batch.gallery.Gallery`, which fills its cards in the
    background and loads one comparison at a time."""

    @property
    def process_ids(self) -> list[str]: ...

    def card(self, process_id: str) -> Card: ...

    def on_card(self, callback: Callable[[Card], None]) -> None: ...

    def start(self, first: str | None = None) -> Any: ...

    def sorted_by(self, key: str) -> Batch: ...

    def load(self, process_id: str) -> Comparison: ...

    def status(self, process_id: str) -> Status: ...

__all__ = ["DECISIONS", "HEADER", "ORDERS", "Review", "ReviewStrip"]

_log = logging.getLogger("topaz_nb.review")

_KEYS = {"a": "accept", "r": "reject", "f": "flag"}
_MARKS = {"accept": "✓", "reject": "✗", "flag": "⚑"}
_EXTENSIONS = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png", "tiff": ".tif", "webp": ".webp"}


def _gallery_order(gallery: Batch) -> list[str]:
    return gallery.process_ids


def _fidelity_order(gallery: Batch) -> list[str]:
    """Least faithful first (lowest PSNR against the input), so the outputs most
    likely to have changed the picture are looked at while attention is fresh.

    Waits for the gallery; each score is computed once and kept beside its
    download.  Processes without an output come last, in the gallery's order.
    """
    return gallery.sorted_by("psnr").process_ids


ORDERS: dict[str, Callable[[Batch], list[str]]] = {
    "gallery": _gallery_order,
    "fidelity": _fidelity_order,
}
"""The orders a review can step through the batch in, by name."""


class ReviewStrip(anywidget.AnyWidget):
    """The batch as a strip of thumbnails with decision marks; it also takes the keys.

    Traits: ``items`` (``[{id, name, decision}]``, in review order),
    ``current`` (the index on screen).  See the module docstring for the
    messages.
    """

    # keys.js (shared with the comparison) says which keys stay out of the notebook.
    _esm = "\n".join((files("topaz_nb.view") / "static" / name).read_text(encoding="utf-8")
                     for name in ("keys.js", "review.js"))
    _css = (files("topaz_nb.view") / "static" / "review.css").read_text(encoding="utf-8")
    items = t.List(t.Dict()).tag(sync=True)
    current = t.Int(0).tag(sync=True)


class Review:
    """Step through a gallery's processes and record a decision for each.

    ``path`` is the CSV file (created on the first decision or note; read
    first when it exists).  ``order`` is a name in :data:`ORDERS` (default:
    the gallery's order).  From Python: :meth:`decide`, :meth:`set_note`,
    :meth:`next`, :meth:`previous`, :meth:`go`, :attr:`current`,
    :attr:`decisions`, :meth:`save_accepted`; displaying the object shows the
    review.  Other reviews (in this kernel or another) may write the same
    file at the same time: :attr:`decisions` shows theirs too.
    """

    def __init__(self, gallery: Batch, path: str | os.PathLike[str] = "topaz-review.csv", *,
                 order: str | None = None) -> None:
        name = order or "gallery"
        if name not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
        self.gallery = gallery
        self.ids: list[str] = ORDERS[name](gallery)
        self.path = Path(path).expanduser()
        self._lock = threading.RLock()
        self._file = ReviewFile(self.path)
        self._entries: dict[str, Entry] = self._file.entries()
        self._index = next((i for i, pid in enumerate(self.ids)
                            if not self._decision(pid)), 0)
        self._loading: dict[str, Future[Comparison]] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="topaz-review")
        self._widget: Any = None
        self._strip: ReviewStrip | None = None
        self._header: Any = None
        self._stage: Any = None
        self._mode: str | None = None  # the mode the user chose last, for every process
        self._watched: Any = None  # the view on screen, whose mode is followed
        gallery.on_card(self._on_card)
        # The process on screen is fetched first, alone, before the batch.
        gallery.start(first=self.ids[self._index] if self.ids else None)
        if self.ids:
            self._want(self.ids[self._index])

    # -- the API --------------------------------------------------------------
    @property
    def current(self) -> str | None:
        """The process ID on screen (``None`` for an empty batch)."""
        return self.ids[self._index] if self.ids else None

    @property
    def position(self) -> int:
        """The index of :attr:`current` in :attr:`ids`."""
        return self._index

    @property
    def decisions(self) -> dict[str, str]:
        """Process ID → decision, for the processes of this batch decided so far
        (by this review or by any other writing the same file)."""
        with self._lock:
            self._refresh()
            return {pid: d for pid in self.ids if (d := self._decision(pid))}

    def note(self, process_id: str) -> str:
        """The note recorded for a process (``""`` when none), decided or not."""
        entry = self._entries.get(str(process_id).strip().lower())
        return entry.note if entry else ""

    def decide(self, process_id: str | None, decision: str, note: str | None = None) -> None:
        """Record ``decision`` (one of :data:`DECISIONS`) for a process and write the file.

        ``process_id=None`` means the current one.  A later decision replaces
        an earlier one.  ``note`` replaces the process's note; ``None`` keeps
        the one it has.  An unknown decision is a ``ValueError``.
        """
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
        self._record(process_id, "decision", decision=decision, note=note)

    def set_note(self, process_id: str | None, note: str) -> None:
        """Record ``note`` for a process, decided or not, and write the file
        (``process_id=None``: the current one).  A decision made later keeps it."""
        self._record(process_id, "note", note=note)

    def _record(self, process_id: str | None, what: str, **change: str | None) -> None:
        pid = self.current if process_id is None else str(process_id).strip().lower()
        if pid not in self.ids:
            raise ValueError(f"process {process_id} is not in this review")
        model, filename = self._names(pid)
        when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        with self._lock:
            try:
                self._entries = self._file.record(pid, model=model, filename=filename,
                                                  reviewed_at=when, **change)
            except OSError as exc:  # nothing recorded then
                raise TopazError(not_recorded(what, self.path, exc)) from None
            self._update_items()
            if pid == self.current:
                self._show_header()

    def _decision(self, pid: str) -> str:
        entry = self._entries.get(pid)
        return entry.decision if entry else ""

    def _refresh(self) -> None:
        """What the file says now: other writers may have changed it.  A file
        that cannot be read just now keeps what was last read (the next write
        says why)."""
        try:
            self._entries = self._file.entries()
        except TopazError as exc:
            _log.debug("keeping the decisions last read: %s", exc)

    def _names(self, pid: str) -> tuple[str, str]:
        """``(model, filename)`` of a process: from its card, or its status when the
        card is not fetched yet."""
        card = self.gallery.card(pid)
        status = card.status
        if status is None:
            loading = self._loading.get(pid)
            if loading is not None and loading.done() and loading.exception() is None:
                status = loading.result().status
        if status is None:
            try:
                status = self.gallery.status(pid)
            except TopazError:
                status = None
        if status is None:
            return "", ""
        return status.model or "", status.filename or ""

    def next(self) -> str | None:
        """Show the next process; returns its ID (stays on the last one)."""
        return self.go(min(self._index + 1, max(0, len(self.ids) - 1)))

    def previous(self) -> str | None:
        """Show the previous process; returns its ID (stays on the first one)."""
        return self.go(max(self._index - 1, 0))

    def go(self, index: int) -> str | None:
        """Show the process at ``index`` of :attr:`ids`."""
        if not self.ids:
            return None
        if not 0 <= index < len(self.ids):
            raise IndexError(f"index {index} is outside this review of {len(self.ids)}")
        with self._lock:
            self._index = index
            self._want(self.ids[index])
            if self._widget is not None:
                self._show()
        return self.current

    def comparison(self) -> Comparison | None:
        """The current process's comparison (waits for it if it is still loading)."""
        current = self.current
        if current is None:
            return None
        return self._want(current).result()

    def save_accepted(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Copy the accepted outputs (from the cache) into ``directory``.

        Files keep the process's original filename with the output's
        extension, made safe (no directories, no ``..``, no absolute paths:
        nothing lands outside ``directory``) and shortened to what the file
        system allows (in bytes, the extension kept); a name taken, in this
        call or by anything already there (a file, a directory, a link, which
        is never followed), gets ``-2``, ``-3``… before its extension.  A file
        that cannot be had or written does not stop the rest: every other one
        is saved, then :class:`~topaz_nb.errors.NotSaved` says, one line each,
        what was not, and holds the saved paths as ``saved``.
        """
        from .._files import copy_into, fit_name, name_max
        from .._text import not_saved, one_line
        from ..errors import Cancelled, NotSaved

        target = Path(directory).expanduser()
        accepted = [pid for pid, d in self.decisions.items() if d == "accept"]
        try:
            target.mkdir(parents=True, exist_ok=True)
            root = target.resolve()
        except OSError as exc:
            raise TopazError(cannot_save(directory, exc)) from None
        saved: list[Path] = []
        failures: list[tuple[str, str | None, Exception]] = []
        for pid in accepted:
            card = self.gallery.card(pid)
            where: str | None = None
            try:
                with self._fetch(pid) as comparison:  # pinned while it is copied
                    status = comparison.status or card.status
                    name = _safe_name(
                        (status.filename if status else None) or card.row.get("filename") or "",
                        pid)
                    source = comparison.files().get("output")
                    if source is None:
                        raise TopazError(f"Process {pid} was accepted but has no output to save.")
                    stem = name.rsplit(".", 1)[0] if "." in name else name
                    ext = source.suffix or _EXTENSIONS.get(
                        (status.output_format if status else "") or "", "")
                    where = str(root / fit_name(stem, ext, name_max(root)))
                    saved.append(copy_into(source, root, stem, ext, replace=False))
            except Cancelled:
                raise
            except (TopazError, OSError) as exc:
                known = _safe_name(card.filename or card.row.get("filename") or "", pid)
                what = (f"the output of {one_line(known, 80)} ({pid})" if known != pid
                        else f"the output of {pid}")
                failures.append((what, where, exc))
        if failures:
            raise NotSaved(not_saved(failures, "python", saved=len(saved)), saved=saved,
                           failures=failures)
        return saved

    def close(self) -> None:
        """Stop prefetching and let go of the comparisons (their views leave
        the page, their files are no longer pinned)."""
        with self._lock:
            loading, self._loading = self._loading, {}
        for future in loading.values():
            close_when_done(future)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- loading ---------------------------------------------------------------
    def _fetch(self, pid: str) -> Comparison:
        return self.gallery.load(pid)

    def _want(self, pid: str) -> Future[Comparison]:
        """The comparison of ``pid``, loading; the next one starts loading too.

        Only the neighbours of the current process stay in memory.
        """
        with self._lock:
            i = self.ids.index(pid)
            keep = set(self.ids[max(0, i - 1):i + 2])
            for old in [p for p in self._loading if p not in keep]:
                close_when_done(self._loading.pop(old))
            for p in self.ids[i:i + 2]:
                if p not in self._loading:
                    self._loading[p] = self._pool.submit(self._fetch, p)
            return self._loading[pid]

    # -- display ---------------------------------------------------------------
    def widget(self) -> Any:
        """The review: header, comparison, and the strip with the note field, in one box."""
        import ipywidgets as w

        with self._lock:
            if self._widget is not None:
                return self._widget
            self._header = w.HTML()
            self._stage = w.Box(layout=w.Layout(width="100%", min_height="200px"))
            self._strip = ReviewStrip(current=self._index)
            self._strip.on_msg(self._on_message)
            self._update_items()
            self._widget = w.VBox([self._header, self._stage, self._strip],
                                  layout=w.Layout(width="100%"))
            self._widget.add_class("topaz-review")
            if self.ids:
                self._show()
            else:
                self._header.value = "<b>Nothing to review: the batch is empty.</b>"
            return self._widget

    def _show(self) -> None:
        pid = self.current
        assert pid is not None and self._stage is not None
        self._show_header()
        if self._strip is not None:
            self._strip.current = self._index
        try:
            comparison = self._want(pid).result()
            # The view alone when there is an output (the header carries the numbers);
            # otherwise the input with the line saying why there is no output.
            shown: Any = comparison.view if comparison.ready else comparison.widget("panel")
            self._watch(shown if comparison.ready else None)
        except TopazError as exc:
            import ipywidgets as w

            self._watch(None)
            shown = w.HTML(f"<span style='color:var(--jp-error-color1, #b00)'>"
                           f"{html.escape(say(exc, 'panel'))}</span>")
        self._stage.children = [shown]

    def _watch(self, view: Any) -> None:
        """Follow the mode of ``view`` (the comparison about to be shown, or ``None``),
        after giving it the mode chosen last: the mode carries over from process to process."""
        if self._watched is not None:
            self._watched.unobserve(self._on_view_mode, names="mode")
        self._watched = view
        if view is not None:
            if self._mode is not None:
                view.mode = self._mode
            view.observe(self._on_view_mode, names="mode")

    def _on_view_mode(self, change: dict[str, Any]) -> None:
        self._mode = change["new"]

    def _show_header(self) -> None:
        if self._header is None or self.current is None:
            return
        card = self.gallery.card(self.current)
        decision = self._decision(self.current)
        row = card.row
        sizes = ""
        if row.get("output_size"):
            scale = f" ({row['scale']}×)" if row.get("scale") else ""
            sizes = f"{row.get('input_size')} → {row['output_size']}{scale}"
        parts = [f"{self._index + 1} of {len(self.ids)}",
                 card.filename or self.current, card.model or "",
                 card.state if card.state != "fetching" else "", sizes]
        line = " · ".join(html.escape(p) for p in parts if p)
        mark = (f" <span class='topaz-review-decision'>{_MARKS[decision]} "
                f"{decision}</span>") if decision else ""
        self._header.value = f"<b>{line}</b>{mark}"

    def _update_items(self) -> None:
        if self._strip is None:
            return
        items = []
        for pid in self.ids:
            card = self.gallery.card(pid)
            entry = self._entries.get(pid)
            items.append({"id": pid, "name": card.filename or pid[:8],
                          "decision": entry.decision if entry else "",
                          "note": entry.note if entry else ""})
        self._strip.items = items

    def _thumbs(self, pids: list[str]) -> dict[str, str]:
        out = {}
        for pid in pids:
            card = self.gallery.card(pid)
            uri = thumb_uri(card.thumbs.get("output") or card.thumbs.get("input"))
            if uri:
                out[str(self.ids.index(pid))] = uri
        return out

    def _on_card(self, card: Card) -> None:
        strip = self._strip
        if strip is None or card.process_id not in self.ids:
            return
        thumbs = self._thumbs([card.process_id])
        if thumbs:
            strip.send({"thumbs": thumbs})
        if card.process_id == self.current:
            self._show_header()

    def _on_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        event = content.get("event")
        # The mode the front end shows: it may be ahead of the view's synced trait.
        if content.get("mode") in MODES:
            self._mode = content["mode"]
        index = content.get("index")
        # The process a message is about, as the front end saw it when it was sent.
        pid = self.ids[index] if isinstance(index, int) and 0 <= index < len(self.ids) else None
        try:
            if event == "ready" and self._strip is not None:
                self._strip.send({"thumbs": self._thumbs(self.ids)})
            elif event == "go" and isinstance(index, int):
                self.go(index)
            elif event == "note" and pid is not None and isinstance(content.get("note"), str):
                # Kept with Enter, or by leaving the field: decided or not, it is
                # written now, for the process it was typed on.
                if content["note"] != self.note(pid):
                    self.set_note(pid, content["note"])
            elif event == "key":
                key = content.get("key")
                if key == "j":
                    self.next()
                elif key == "k":
                    self.previous()
                elif key in _KEYS:
                    self.decide(pid, _KEYS[key])
        except TopazError as exc:
            self._show_error(exc)

    def _show_error(self, exc: TopazError) -> None:
        """A failed write, in the header line, where the eye is."""
        if self._header is not None:
            self._header.value = (f"<span style='color:var(--jp-error-color1, #b00)'>"
                                  f"{html.escape(say(exc, 'panel'))}</span>")

    def __repr__(self) -> str:
        return (f"<Review of {len(self.ids)} processes, {len(self.decisions)} decided, "
                f"at {self.current} → {self.path}>")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = dict(self.widget()._repr_mimebundle_(include=include, exclude=exclude) or {})
        bundle["text/plain"] = repr(self)
        return bundle


# -- the file ------------------------------------------------------------------

def _safe_name(name: str, fallback: str) -> str:
    """A file name that stays in its directory: the last path part, printable,
    without leading dots; ``fallback`` when nothing is left."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable() and ch not in '<>:"|?*')
    base = base.strip().lstrip(".").strip()
    return base or fallback  # shortened to the file system's limit by _files.copy_into
