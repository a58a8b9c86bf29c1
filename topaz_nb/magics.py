"""The ``%topaz`` line magic.

``%topaz ID`` fetches one process and returns a :class:`~topaz_nb.comparison.Comparison`
(IPython shows it once, as the result of the cell).  ``%topaz ID1 ID2 …`` returns a
:class:`~topaz_nb.gallery.Gallery`; ``%topaz`` alone shows the panel.  ``login`` and
``demo`` switch where requests go.  Every failure is a one-line ``UsageError``
saying what to do next: no traceback, no key, no presigned query string.
"""

from __future__ import annotations

import html
import re
import threading
import time
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ._ids import check_process_id
from ._session import Session, set_default_session
from .comparison import Comparison
from .errors import TopazError
from .links import SIDES, expiry_text, redact_url
from .settings import Topaz

from ._modes import MODES
_LIST_PUNCTUATION = re.compile(r"[\[\]\(\),'\"]")


@magics_class
class TopazMagics(Magics):
    """Holds the session (API target, cache) and the settings of one shell."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.settings = Topaz(parent=shell)
        if shell is not None and self.settings not in shell.configurables:
            shell.configurables.append(self.settings)
        self.session = Session(self.settings)
        set_default_session(self.session)

    @magic_arguments()
    @argument("ids", nargs="*", metavar="ID",
              help="Process IDs (UUIDs); 'login' to enter a key, 'demo' to use the local sandbox. "
                   "A list variable works too: %%topaz $ids.")
    @argument("--wait", nargs="?", const=-1.0, default=None, type=float, metavar="SECONDS",
              help="If the output is not ready, wait for it (default: Topaz.wait_timeout seconds).")
    @argument("--mode", choices=MODES, help="Initial comparison mode.")
    @argument("--meta", action="store_true", help="Metadata only: links and HEAD, no image download.")
    @argument("--links", action="store_true", help="Show the presigned links' expiry (redacted).")
    @argument("--show-urls", action="store_true",
              help="With --links, show full presigned URLs (they grant access for an hour).")
    @argument("--save", metavar="DIR", help="Also save both original files into DIR.")
    @argument("--no-cache", action="store_true", help="Download again even if cached.")
    @argument("--preview-size", type=int, metavar="N",
              help="Long side of the previews sent to the browser (default Topaz.preview_size).")
    @line_magic
    def topaz(self, line: str = "") -> Any:
        """Compare a Topaz Image API process's input and output.

        Examples::

            %topaz demo                      # local sandbox with demo jobs, no key needed
            %topaz 1b2c3d4e-...              # compare one process
            %topaz 1b2c3d4e-... --wait 120   # wait for it to finish first
            %topaz $ids                      # gallery of several processes
            %topaz                           # the panel
        """
        if "[" in line or "(" in line:
            line = _LIST_PUNCTUATION.sub(" ", line)
        try:
            args = parse_argstring(self.topaz, line)
        except SystemExit:  # argparse on --help or bad options
            return None
        try:
            return self._run(args)
        except TopazError as exc:
            raise UsageError(str(exc)) from None

    # -- dispatch -----------------------------------------------------------
    def _run(self, args: Any) -> Any:
        ids: list[str] = args.ids
        if not ids:
            from .panel import TopazPanel

            return TopazPanel(self.session)
        if ids[0] in ("login", "demo"):
            if len(ids) > 1:
                raise UsageError(f"%topaz {ids[0]} takes no process ID.")
            return self._login() if ids[0] == "login" else self._demo()
        pids = [check_process_id(p) for p in ids]  # all checked before any request
        if args.links:
            return self._links(pids, show_urls=args.show_urls)
        if len(pids) > 1:
            return self._gallery(pids, args)
        return self._one(pids[0], args)

    def _login(self) -> None:
        import getpass

        key = getpass.getpass("Topaz API key (kept in memory for this session only): ")
        self.session.login(key)
        print(f"Using {self.session.describe()}.")

    def _demo(self) -> DemoJobs:
        sandbox = self.session.use_demo()
        client = self.session.client()
        rows = []
        for pid in sandbox.demo_ids:
            try:
                st = client.status(pid)
                rows.append((pid, st.filename or "", st.status, st.model or ""))
            except TopazError as exc:
                rows.append((pid, "", str(exc), ""))
        return DemoJobs([r[0] for r in rows], rows=rows, where=self.session.describe())

    def _links(self, pids: list[str], *, show_urls: bool) -> None:
        client = self.session.client()
        for pid in pids:
            for side in SIDES:
                link = client.link(pid, side)
                url = link.download_url if show_urls else redact_url(link.download_url)
                print(f"{pid} {side:<6} expires {expiry_text(link.expiry)}  {url}")

    def _gallery(self, pids: list[str], args: Any) -> Any:
        from .gallery import Gallery

        bar = _Bars({"processes": None}, label="Fetching")
        done = [0]
        lock = threading.Lock()

        def on_done(_: str) -> None:
            with lock:
                done[0] += 1
                bar("processes", done[0], len(pids))

        try:
            return Gallery.fetch(pids, client=self.session.client(),
                                 transfer=self.session.transfer(use_cache=not args.no_cache),
                                 max_workers=self.settings.max_workers,
                                 preview_size=self._preview_size(args),
                                 mode=args.mode or self.settings.mode, on_done=on_done)
        finally:
            bar.close()

    def _one(self, pid: str, args: Any) -> Comparison:
        client = self.session.client()
        transfer = self.session.transfer(use_cache=not args.no_cache)
        bars = _Bars({side: None for side in SIDES}, label="Downloading") if not args.meta else None

        def fetch() -> Comparison:
            return Comparison.fetch(pid, client=client, transfer=transfer, download=not args.meta,
                                    require_output=False, on_progress=bars,
                                    preview_size=self._preview_size(args),
                                    mode=args.mode or self.settings.mode)

        try:
            result = fetch()
            if not result.ready and result.not_ready is not None and args.wait is not None:
                timeout = self.settings.wait_timeout if args.wait < 0 else args.wait
                self._wait(pid, timeout)
                result = fetch()
            result.prepare()
        finally:
            if bars is not None:
                bars.close()
        if args.save:
            if not result.downloaded:
                raise UsageError("--save needs the images: drop --meta to download them.")
            for side, path in result.save(args.save).items():
                print(f"saved {side}: {path}")
        return result

    def _wait(self, pid: str, timeout: float) -> None:
        bar = _Bars({"processing": 100}, label="Waiting")

        def on_progress(status: Any) -> None:
            bar("processing", int(status.progress or 0), 100, note=status.status)

        try:
            self.session.client().wait(pid, timeout=timeout, on_progress=on_progress)
        finally:
            bar.close()

    def _preview_size(self, args: Any) -> int:
        size = args.preview_size or self.settings.preview_size
        if not 64 <= size <= 8192:
            raise UsageError(f"--preview-size must be between 64 and 8192, not {size}.")
        return size


class DemoJobs(list):
    """The sandbox's demo process IDs; a list that displays as a small table."""

    def __init__(self, ids: list[str], *, rows: list[tuple[str, str, str, str]], where: str) -> None:
        super().__init__(ids)
        self.rows = rows
        self.where = where

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(f"Demo jobs on {self.where}:\n")
        p.text("\n".join(f"  {pid}  {status:<10} {name:<24} {model}" for pid, name, status, model in self.rows))

    def _repr_html_(self) -> str:
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in (pid, name, status, model)) + "</tr>"
            for pid, name, status, model in self.rows)
        return (f"<p>Demo jobs on {html.escape(self.where)}:</p><table><tr><th>process_id</th>"
                f"<th>file</th><th>status</th><th>model</th></tr>{body}</table>")


class _Bars:
    """Progress bars that show while work runs and disappear when it ends.

    Called from worker threads; updates are throttled so a fast local download
    does not flood the front end with messages.
    """

    def __init__(self, names: dict[str, int | None], *, label: str) -> None:
        self._lock = threading.Lock()
        self._last = 0.0
        self._box: Any = None
        self._bars: dict[str, Any] = {}
        try:
            import ipywidgets as w
            from IPython import get_ipython
            from IPython.display import display

            if getattr(get_ipython(), "kernel", None) is None:
                return  # a terminal cannot draw widgets: no bars rather than their reprs
            for name in names:
                self._bars[name] = w.FloatProgress(
                    value=0.0, min=0.0, max=1.0, description=f"{label} {name}",
                    style={"description_width": "initial"}, layout=w.Layout(width="420px"))
            self._box = w.VBox(list(self._bars.values()))
            display(self._box)
        except Exception:  # no display available (plain script): progress is optional
            self._box = None

    def __call__(self, name: str, done: int, total: int | None, note: str = "") -> None:
        bar = self._bars.get(name)
        if bar is None:
            return
        now = time.monotonic()
        final = total is not None and done >= total
        with self._lock:
            if not final and now - self._last < 0.1:
                return
            self._last = now
        bar.value = min(1.0, done / total) if total else 0.5
        if note:
            bar.description = f"{bar.description.split(' (')[0]} ({note})"

    def close(self) -> None:
        if self._box is not None:
            for bar in self._bars.values():
                bar.close()
            self._box.close()
            self._box = None

