"""TopazPanel: a small ipywidgets app to look up, compare and save processes.

The panel is a ``VBox``, so it displays on its own in a notebook and works as
a Voila dashboard.  A fetch runs in a background thread, which keeps the field,
the buttons and the progress bars live while images download; every widget
change it makes is an ordinary trait assignment, which ipykernel sends to the
front end from any thread.

Secrets stay out of the widgets: the API key lives in the session's client and
presigned URLs in the comparison, so neither is ever a synced trait (saved
widget state would otherwise carry them into the notebook file).  Text that
comes from an error or a server is HTML-escaped before it is shown.

The ID field validates as the user types (``continuous_update=True``).  Enter
is taken from the front end's ``{"event": "submit"}`` message through
``on_msg``, which is what ipywidgets' own deprecated ``Text.on_submit``
listened to, so typing feedback and Enter-to-fetch work together.
"""

from __future__ import annotations

import html
import logging
import re
import threading
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from ._ids import check_process_id
from ._progress import Progress, WidgetBars
from ._session import Session, default_session
from ._tasks import cancellable
from ._text import (
    byte_size,
    file_problem,
    interrupted,
    joined,
    no_output_yet,
    process_line,
    progress_state,
    say,
    stopped_waiting,
)
from .errors import Cancelled, MissingApiKey, NotSaved, ProcessFailed, TopazError
from .links import SIDES, Side, scrub_urls

if TYPE_CHECKING:
    from .api.client import Listing
    from .comparison import Comparison

__all__ = ["TopazPanel"]

_log = logging.getLogger(__name__)

_MAX_RECENT = 10
_HEX = re.compile(r"[0-9a-fA-F-]*")


class TopazPanel(w.VBox):
    """Fetch a process by ID, compare its input and output, save the files.

    ``session`` decides where requests go (the real API or a local sandbox);
    the default is the one shared with ``%topaz``.  For scripts and tests:
    :meth:`fetch` (synchronous by default), :attr:`comparison` (the last
    result), :attr:`process_id` (the field, checked), :meth:`save`,
    :meth:`use_demo`, :meth:`list_recent`, :meth:`cancel` and :meth:`join`.

    The History list holds the processes fetched here; the Recent section
    lists the account's latest processes (file, model, status, age) from the
    API, and choosing one fetches it.

    A running fetch stops within a second when the Cancel button is pressed,
    when :meth:`cancel` is called, or when Ctrl-C interrupts :meth:`join`;
    what arrived is kept, so fetching again resumes.
    """

    def __init__(self, session: Session | None = None) -> None:
        self._session = session if session is not None else default_session()
        self._comparison: Comparison | None = None
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._busy = False
        self._quiet = False  # set while the recent list is refilled from code
        self._recent_ids: list[str] = []
        self._labels: dict[str, str] = {}

        # Wide enough for a whole UUID and the placeholder, never wider than the page:
        # it gives way before the row would wrap.
        self._id_field = w.Text(
            placeholder="process ID (a UUID)", description="Process ID", continuous_update=True,
            layout=w.Layout(width="34em", max_width="100%", flex="0 1 auto", min_width="0"),
            style={"description_width": "initial"})
        # The hint has a row of its own, beside the checkbox, one line that ends in an
        # ellipsis (the whole text in its tooltip): typing never moves anything.
        self._id_hint = w.HTML(layout=w.Layout(margin="0 0 0 8px", flex="1 1 0",
                                               min_width="0", overflow="hidden"))
        # Fetch and Cancel take turns in one place, so a fetch moves nothing either.
        self._fetch_button = w.Button(description="Fetch", icon="download",
                                      button_style="primary", disabled=True,
                                      layout=w.Layout(width="auto", min_width="7em", flex="0 0 auto"),
                                      tooltip="Download the input and output (Enter in the field)")
        self._cancel_button = w.Button(description="Cancel", icon="stop",
                                       tooltip="Stop the fetch; fetching again resumes it",
                                       layout=w.Layout(display="none", width="auto",
                                                       min_width="7em", flex="0 0 auto"))
        self._wait_box = w.Checkbox(value=False, description="wait until ready", indent=False,
                                    layout=w.Layout(width="auto", flex="0 0 auto"))
        # Wide enough for a file name and a whole process ID; the name comes first,
        # so a narrow page cuts the ID, never the name, and the list's tooltip holds the
        # whole entry (ipywidgets puts a tooltip on the list itself only when it has no
        # description, so its name is a label of its own).
        self._recent = w.Dropdown(options=[], value=None,
                                  layout=w.Layout(width="40em", max_width="100%",
                                                  flex="0 1 auto", min_width="0"))
        self._demo_button = w.Button(description="Use demo sandbox", icon="flask",
                                     tooltip="Run a local Topaz-compatible server with demo "
                                             "processes; no API key needed",
                                     layout=w.Layout(display="none", width="auto",
                                                     min_width="13em"))
        self._account_button = w.Button(description="List recent", icon="list",
                                        tooltip="The account's latest processes (7 days)",
                                        layout=w.Layout(width="auto", min_width="9em"))
        self._account_list = w.Select(options=[], value=None, rows=6,
                                      layout=w.Layout(width="46em", max_width="100%",
                                                      display="none"))
        self._account_note = w.HTML(layout=w.Layout(margin="0 0 0 8px"))
        self._status = w.HTML()
        self._bars: dict[str, w.IntProgress] = {}  # keyed by side, as WidgetBars names them
        self._bar_notes: dict[str, w.Label] = {}
        for side in SIDES:
            self._bars[side] = w.IntProgress(value=0, min=0, max=100,
                                             description=side.capitalize())
            self._bar_notes[side] = w.Label()
        self._result = w.Box(layout=w.Layout(width="100%"))
        self._save_dir = w.Text(value="topaz-images", description="Save to",
                                layout=w.Layout(width="24em"))
        self._save_button = w.Button(description="Save images", icon="save", disabled=True,
                                     layout=w.Layout(width="auto", min_width="10em"),
                                     tooltip="Copy both original files into this directory")
        # What Save images did, said beside the button (the status line is far above
        # it once a comparison is shown).
        self._save_note = w.HTML(layout=w.Layout(margin="0 0 0 8px", min_width="0",
                                                 flex="1 1 20em"))
        self._progress = Progress(None)

        self._id_field.observe(self._on_id_change, names="value")
        self._id_field.on_msg(self._on_id_message)
        self._fetch_button.on_click(lambda _b: self.fetch(wait=False))
        self._cancel_button.on_click(lambda _b: self.cancel())
        self._recent.observe(self._on_recent_change, names="value")
        self._account_button.on_click(lambda _b: self._run_guarded(self.list_recent))
        self._account_list.observe(self._on_account_choice, names="value")
        self._demo_button.on_click(lambda _b: self._run_guarded(self.use_demo))
        self._save_button.on_click(lambda _b: self._run_guarded(self.save, self._say_saved))

        super().__init__(children=[
            w.HBox([self._id_field, self._fetch_button, self._cancel_button],
                   layout=w.Layout(align_items="center", flex_flow="row nowrap")),
            w.HBox([self._wait_box, self._id_hint],
                   layout=w.Layout(align_items="center", flex_flow="row nowrap")),
            w.HBox([w.Label("History", layout=w.Layout(width="auto", margin="0 8px 0 0",
                                                       flex="0 0 auto")),
                    self._recent, self._demo_button],
                   layout=w.Layout(align_items="center", flex_flow="row nowrap")),
            w.HBox([w.Label("Recent", layout=w.Layout(width="auto", margin="0 8px 0 0")),
                    self._account_button, self._account_note],
                   layout=w.Layout(align_items="center", flex_flow="row wrap")),
            self._account_list,
            self._status,
            w.HBox([self._bars["input"], self._bar_notes["input"]]),
            w.HBox([self._bars["output"], self._bar_notes["output"]]),
            self._result,
            w.HBox([self._save_dir, self._save_button, self._save_note],
                   layout=w.Layout(align_items="center", flex_flow="row wrap")),
        ])
        self.add_class("topaz-panel")
        self._offer_demo_if_no_key()
        self._set_status(f"Requests go to {self._session.describe()}.")

    # -- public -----------------------------------------------------------
    @property
    def comparison(self) -> Comparison | None:
        """The result of the last fetch (``None`` when it failed or is running)."""
        return self._comparison

    @property
    def process_id(self) -> str | None:
        """The ID in the field in canonical form, or ``None`` while it is not a UUID."""
        try:
            return check_process_id(self._id_field.value)
        except TopazError:
            return None

    @process_id.setter
    def process_id(self, value: str) -> None:
        self._id_field.value = value.strip()

    @property
    def busy(self) -> bool:
        """True while a fetch is running."""
        return self._busy

    def fetch(self, process_id: str | None = None, wait: bool = True) -> Comparison | None:
        """Fetch the ID in the field (or ``process_id``, which is put in the field).

        With ``wait=True`` this returns when done, with the comparison or
        ``None`` after an error (shown in the status line, never raised).  With
        ``wait=False`` it starts a background fetch and returns ``None`` at
        once; :meth:`join` waits for it.
        """
        if process_id is not None:
            self.process_id = process_id
        if wait:
            self.join()
        elif self._busy:
            return None
        try:
            pid = check_process_id(self._id_field.value)
        except TopazError as exc:
            self._set_status(str(exc), error=True)
            return None
        self._start(pid)
        if wait:
            return self.join()
        return None

    def join(self, timeout: float | None = None) -> Comparison | None:
        """Wait for a running fetch; the current comparison afterwards.

        Ctrl-C while waiting cancels the fetch (see :meth:`cancel`).
        """
        thread = self._thread
        if thread is not None:
            try:
                thread.join(timeout)
            except KeyboardInterrupt:
                self.cancel()
                raise
        return self._comparison

    def cancel(self) -> None:
        """Stop a running fetch within a second; what arrived is kept for resume."""
        self._cancel.set()

    def save(self, directory: str | None = None) -> dict[Side, Any]:
        """Copy the last fetch's files into ``directory`` (default: the Save-to field).

        What was saved is said beside the Save images button and in the
        status line.  When one side cannot be written, the other is saved all
        the same: both say what was saved and what was not, and
        :class:`~topaz_nb.errors.NotSaved` is raised (a click on the button
        shows the message and raises nothing).
        """
        self._save_note.value = ""
        if self._comparison is None:
            raise TopazError("Nothing to save yet: fetch a process first.")
        target = (directory if directory is not None else self._save_dir.value).strip()
        if not target:
            raise TopazError("No directory to save into: type one in the Save to field.")
        try:
            saved = self._comparison.save(target)  # a one-line TopazError when it cannot
        except NotSaved as exc:
            if directory is not None:
                self._save_dir.value = target
            listing = ", ".join(f"{side} → {path}" for side, path in exc.saved.items())
            self._say_saved(" ".join(([f"Saved {listing}."] if listing else [])
                                     + [say(exc, "panel")]), error=True)
            raise
        if directory is not None:
            self._save_dir.value = target
        listing = ", ".join(f"{side} → {path}" for side, path in saved.items())
        self._say_saved(f"Saved {listing}." if saved else "There were no files to save.")
        return saved

    def use_demo(self) -> list[str]:
        """Point the session at a local sandbox and list its demo processes."""
        self._set_status("Starting the local demo sandbox…")
        sandbox = self._session.use_demo()
        ids = list(sandbox.demo_ids)
        for pid in reversed(ids):
            self._remember(pid)
        if ids:
            self._id_field.value = ids[0]
        self._demo_button.layout.display = "none"
        self._set_status(f"Using the local demo sandbox at {sandbox.base_url}: "
                         f"{len(ids)} demo processes are in the History list.")
        return ids

    def list_recent(self, limit: int = 50, status: str | None = None,
                    since: str | None = None) -> Listing:
        """List the account's latest processes in the Recent section (newest first);
        choosing one there fetches it.  Returns their statuses; beside the count,
        one line says if the list was cut short or entries were left out."""
        self._account_note.value = "<small>listing…</small>"
        try:
            statuses = self._session.client().recent(limit=limit, status=status, since=since)
        finally:
            self._account_note.value = ""
        self._quiet = True
        try:
            self._account_list.options = [
                (process_line(st.filename, st.model, st.status, st.creation_time), st.process_id)
                for st in statuses]
            self._account_list.value = None
        finally:
            self._quiet = False
        self._account_list.layout.display = None if statuses else "none"
        count = f"{len(statuses)} processes" if statuses else "No processes in the last 7 days"
        self._account_note.value = html.escape(joined(count, *statuses.notes("panel")))
        return statuses

    # -- fetching -----------------------------------------------------------
    def _start(self, pid: str) -> None:
        self._busy = True
        self._cancel = threading.Event()
        self._fetch_button.disabled = True
        self._save_button.disabled = True
        self._save_note.value = ""  # it spoke of the files of the previous fetch
        self._fetch_button.layout.display = "none"
        self._cancel_button.layout.display = None
        self._thread = threading.Thread(target=self._work, args=(pid,),
                                        name=f"topaz-panel-{pid[:8]}", daemon=True)
        self._thread.start()

    def _work(self, pid: str) -> None:
        cancel = self._cancel
        previous, self._comparison = self._comparison, None
        self._result.children = ()
        if previous is not None:
            previous.close()  # off the panel: its files are no longer pinned
        try:
            self._reset_bars()
            session = self._session
            client = session.client()
            if self._wait_box.value:
                try:
                    self._wait(pid, cancel)
                except Cancelled:  # nothing was downloading yet: nothing to resume
                    self._set_status(stopped_waiting(pid, "panel"), error=True)
                    return
            self._set_status(f"Fetching {pid} from {session.describe()}…")
            from .comparison import Comparison

            comparison = Comparison.fetch(
                pid, client=client, transfer=session.transfer(), require_output=False,
                on_progress=self._progress, preview_size=session.settings.preview_size,
                mode=session.settings.mode, cancel=cancel)
            view = comparison.widget(line=False)  # the panel's status line says it
        except MissingApiKey as exc:
            self._set_status(say(exc, "panel"), error=True)
            self._demo_button.layout.display = None
        except Cancelled:
            self._set_status(interrupted("panel"), error=True)
        except TopazError as exc:
            self._set_status(say(exc, "panel"), error=True)
        except OSError as exc:  # the cache directory: read-only, full, or not a directory
            self._set_status(file_problem(exc, "panel", cache_dir=self._session.settings.cache_dir),
                             error=True)
        except Exception as exc:  # noqa: BLE001 -- a bug must not leave the panel stuck
            _log.exception("fetching %s failed", pid)
            self._set_status(f"Unexpected error while fetching {pid}: "
                             f"{type(exc).__name__}: {exc}", error=True)
        else:
            self._comparison = comparison
            self._finish_bars(comparison)
            self._result.children = (view,)
            self._labels[pid] = _label(pid, comparison)
            self._remember(pid)
            self._save_button.disabled = False
            self._set_status(comparison.status_line("panel"), error=comparison.failed)
        finally:
            self._busy = False
            self._cancel_button.layout.display = "none"
            self._fetch_button.layout.display = None
            self._fetch_button.disabled = self.process_id is None

    def _wait(self, pid: str, cancel: threading.Event) -> None:
        client = self._session.client()
        self._set_status(f"Waiting for {pid} to finish…")

        def show(st: Any) -> None:
            if cancel.is_set():  # ends the abandoned polling at its next answer
                raise Cancelled(f"Cancelled: waiting for {pid}")
            self._set_status(f"Waiting for {pid}: {progress_state(st.status, st.progress, st.eta)}")

        try:
            cancellable(lambda: client.wait(pid, timeout=self._session.settings.wait_timeout,
                                            on_progress=show),
                        cancel, f"Cancelled: waiting for {pid}")
        except ProcessFailed as exc:
            raise TopazError(say(exc, "panel")) from None

    def _reset_bars(self) -> None:
        for side in SIDES:
            self._bars[side].value = 0
            self._bars[side].bar_style = ""
            self._bar_notes[side].value = ""
        # A new throttle per fetch: each side's first report is shown at once.
        self._progress = Progress(WidgetBars(SIDES, bars=self._bars, notes=self._bar_notes))

    def _finish_bars(self, comparison: Comparison) -> None:
        files = comparison.files()
        for side in SIDES:
            bar, note = self._bars[side], self._bar_notes[side]
            path = files.get(side)
            if path is None:
                bar.value, bar.bar_style = 0, "warning"
                note.value = no_output_yet(comparison.failed)
                continue
            bar.value, bar.bar_style = 100, "success"
            size = byte_size(path.stat().st_size)
            cached = comparison.info.get(side, {}).get("from_cache")
            note.value = f"{size} (from cache)" if cached else size

    # -- reactions ------------------------------------------------------------
    def _on_id_change(self, change: dict[str, Any]) -> None:
        text = str(change["new"]).strip()
        valid = self.process_id is not None
        if not text:
            hint = ""
        elif valid:
            self._id_hint.value = _VALID_BADGE
            self._fetch_button.disabled = self._busy
            return
        elif _HEX.fullmatch(text) and len(text.replace("-", "")) < 32:
            hint = "not a UUID yet"
        else:
            hint = "not a UUID: 32 hex digits, as in the process_id the API returned"
        self._id_hint.value = _hint_html(hint) if hint else ""
        self._fetch_button.disabled = self._busy or not valid

    def _on_id_message(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("event") == "submit" \
                and self.process_id is not None:
            self.fetch(wait=False)

    def _on_recent_change(self, change: dict[str, Any]) -> None:
        if change["new"]:  # the whole entry, should the list be too narrow for it
            self._recent.tooltip = self._labels.get(change["new"], change["new"])
        if not self._quiet and change["new"]:
            self._id_field.value = change["new"]

    def _on_account_choice(self, change: dict[str, Any]) -> None:
        if not self._quiet and change["new"]:
            self.fetch(change["new"], wait=False)

    def _run_guarded(self, action: Any, tell: Any = None) -> None:
        """Run a button's action; a one-line error goes to the status line (and to
        ``tell(text, error=True)``, the button's own note, when given)."""
        try:
            action()
        except NotSaved:
            pass  # save() has said what was saved and what was not
        except TopazError as exc:
            (tell or self._set_status)(say(exc, "panel"), error=True)

    # -- small parts --------------------------------------------------------------
    def _remember(self, pid: str) -> None:
        self._recent_ids = [pid] + [p for p in self._recent_ids if p != pid]
        del self._recent_ids[_MAX_RECENT:]
        self._quiet = True
        try:
            self._recent.options = [(self._labels.get(p, p), p) for p in self._recent_ids]
            self._recent.value = pid
            self._recent.tooltip = self._labels.get(pid, pid)
        finally:
            self._quiet = False

    def _offer_demo_if_no_key(self) -> None:
        if self._session.sandbox is not None:
            return
        try:
            self._session.client()
        except MissingApiKey:
            self._demo_button.layout.display = None
        except TopazError:
            pass

    def _set_status(self, text: str, *, error: bool = False) -> None:
        self._status.value = _line_html(text, error)

    def _say_saved(self, text: str, *, error: bool = False) -> None:
        """What Save images did: beside the button, and in the status line."""
        self._save_note.value = _line_html(text, error)
        self._set_status(text, error=error)


def _line_html(text: str, error: bool) -> str:
    """One line of escaped text (URLs shortened), red for an error."""
    shown = html.escape(" ".join(scrub_urls(text).split()))
    return (f'<span style="color: var(--jp-error-color1, #c62828)">{shown}</span>'
            if error else shown)


def _hint_html(hint: str) -> str:
    """A hint on one line: cut with an ellipsis where the row is too short,
    the whole of it in the tooltip."""
    text = html.escape(hint)
    return (f'<small title="{text}" style="display:block;white-space:nowrap;overflow:hidden;'
            f'text-overflow:ellipsis">{text}</small>')


def _label(pid: str, comparison: Comparison) -> str:
    """A History entry: the file name first (a narrow list cuts the end), then the ID."""
    name = comparison.status.filename if comparison.status is not None else None
    return f"{name}  ·  {pid}" if name else pid


_VALID_BADGE = ('<span style="background:var(--jp-success-color1, #2e7d32);color:white;'
                'border-radius:8px;padding:1px 8px;font-size:11px">valid ID</span>')
"""A word in a green badge: a bare check mark beside the checkbox read as a second checkbox."""
