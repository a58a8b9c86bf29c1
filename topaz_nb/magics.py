"""The ``%topaz`` line magic.

``%topaz ID`` fetches one process and returns a :class:`~topaz_nb.comparison.Comparison`
(IPython shows it once, as the result of the cell).  ``%topaz ID1 ID2 …`` and
``%topaz recent`` return a :class:`~topaz_nb.batch.gallery.Gallery` whose cards fill in
as they arrive; ``%topaz review …`` a :class:`~topaz_nb.batch.review.Review`;
``%topaz`` alone shows the panel.  ``login`` and ``demo`` switch where
requests go.  Every failure is a one-line ``UsageError``
saying what to do next: no traceback, no key, no presigned query string.

A notebook is saved with its cells' sources and outputs, so a key typed into a
cell (``%env TOPAZ_API_KEY=…`` even prints it back) ends up in the file.
``%topaz login`` asks for the key with a password prompt instead; and the
first time a key from the environment is used, the magic looks through this
session's cells for one that gave the key away and says so, once, in one line.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import threading
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from . import _progress
from ._ids import check_process_id
from ._session import Session, set_default_session
from ._text import file_problem, html_table, interrupted, key_in_notebook, say
from .comparison import Comparison
from .errors import NotSaved, TopazError
from .links import SIDES, Link, expiry_text, redact_url
from .settings import Topaz
from .view.modes import MODES

_LIST_PUNCTUATION = re.compile(r"[\[\]\(\),'\"]")
_RECENT_LIMIT = 100
"""How many processes ``%topaz recent`` lists without ``--limit``."""
_REVIEW_FILE = "topaz-review.csv"
_SETS_KEY = re.compile(r"^\s*%*(?:set_)?env\b[\s=]*TOPAZ_API_KEY\b", re.MULTILINE)
"""A cell line that sets (and IPython then prints) or shows the key with ``%env``."""
_SHORTEST_KEY = 8
"""Keys shorter than this are not looked for as text: they would match by chance."""


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
        self._key_seen: bytes | None = None  # digest of the key the cells were checked for
        self._cells_checked = 0  # how many of this session's cells were looked at
        self._key_warned = False

    @magic_arguments()
    @argument("ids", nargs="*", metavar="ID",
              help="Process IDs (UUIDs); 'login' to enter a key, 'demo' to use the local sandbox; "
                   "'recent' for the account's latest processes; 'review ID…' or "
                   "'review recent' to review a batch. A list variable works too: %%topaz $ids.")
    @argument("--limit", type=int, metavar="N",
              help=f"With recent: at most N processes (default {_RECENT_LIMIT}).")
    @argument("--status", metavar="STATUS",
              help="With recent: only processes in this status (Completed, Failed, Processing…).")
    @argument("--since", metavar="AGE",
              help="With recent: only processes created within AGE (30m, 2h, 3d; at most 7d).")
    @argument("--file", metavar="PATH",
              help="With review: the CSV file of decisions (default topaz-review.csv).")
    @argument("--wait", nargs="?", const=-1.0, default=None, type=float, metavar="SECONDS",
              help="If the output is not ready, wait for it (default: Topaz.wait_timeout seconds).")
    @argument("--mode", choices=MODES, help="Initial comparison mode.")
    @argument("--grid", action="store_true",
              help="Several IDs: one shoot-out view of their outputs of one input.")
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
            %topaz recent --since 2h         # gallery of the latest processes
            %topaz review recent --status Completed --file picks.csv
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
        except KeyboardInterrupt:
            # The fetch's workers are already cancelled (see _tasks.workers).
            raise UsageError(interrupted("magic")) from None
        except TopazError as exc:
            raise UsageError(say(exc, "magic")) from None
        except OSError as exc:  # the cache directory: read-only, full, or not a directory
            text = file_problem(exc, "magic", cache_dir=self.settings.cache_dir)
            raise UsageError(text) from None

    # -- dispatch -----------------------------------------------------------
    def _run(self, args: Any) -> Any:
        ids: list[str] = args.ids
        if ids[:1] not in (["login"], ["demo"]):
            self._check_key_exposure()
        if not ids:
            from .panel import TopazPanel

            return TopazPanel(self.session)
        self._check_options(args)
        if ids[0] in ("recent", "review"):
            return self._batch(args)
        if ids[0] in ("login", "demo"):
            if ids[0] == "login" and len(ids) > 1:
                raise UsageError("%topaz login takes no argument: it asks for the key, so "
                                 "that the key is not saved with the notebook.")
            if len(ids) > 1:
                raise UsageError(f"%topaz {ids[0]} takes no process ID.")
            return self._login() if ids[0] == "login" else self._demo()
        pids = [check_process_id(p) for p in ids]  # all checked before any request
        if args.links:
            return self._links(pids, show_urls=args.show_urls)
        if args.grid:
            return self._shootout(pids, args)
        if len(pids) > 1:
            return self._gallery(pids, args)
        return self._one(pids[0], args)

    def _check_options(self, args: Any) -> None:
        words = args.ids[:2]
        recent = "recent" in words
        for name in ("limit", "status", "since"):
            if getattr(args, name) is not None and not recent:
                raise UsageError(f"--{name} goes with recent: %topaz recent --{name} …")
        if args.file is not None and args.ids[0] != "review":
            raise UsageError("--file goes with review: %topaz review … --file PATH")

    def _batch(self, args: Any) -> Any:
        """``recent [filters]``, ``review ID…`` or ``review recent [filters]``."""
        from .api.client import parse_since, parse_status
        from .batch.gallery import Gallery
        from .errors import InvalidFilter

        words = args.ids[1:] if args.ids[0] == "review" else args.ids
        client = self.session.client()
        statuses: list[Any] = []
        if words[:1] == ["recent"]:
            if len(words) > 1:
                raise UsageError("%topaz recent takes no process ID: filter with --limit, "
                                 "--status or --since.")
            if args.limit is not None and args.limit < 1:
                raise UsageError(f"--limit must be at least 1, not {args.limit}.")
            for flag, value, check in (("--status", args.status, parse_status),
                                       ("--since", args.since, parse_since)):
                try:
                    if value is not None:
                        check(value)
                except InvalidFilter as exc:
                    raise UsageError(f"{flag}: {exc}.") from None
            statuses = client.recent(limit=args.limit or _RECENT_LIMIT, status=args.status,
                                     since=args.since)
            for note in statuses.notes("magic"):  # cut short, entries left out
                print(note, file=sys.stderr)
            pids = [st.process_id for st in statuses]
            if not pids:
                print(f"No processes on {self.session.describe()} match: the API keeps "
                      "them for 7 days.", file=sys.stderr)
        elif words:
            pids = [check_process_id(p) for p in words]
        else:
            raise UsageError("%topaz review needs process IDs, or recent: "
                             "%topaz review recent --since 2h")
        gallery = Gallery(pids, client=client,
                          transfer=self.session.transfer(use_cache=not args.no_cache),
                          statuses=statuses, max_workers=self.settings.max_workers,
                          preview_size=self._preview_size(args),
                          mode=args.mode or self.settings.mode).start()
        if args.ids[0] != "review":
            return gallery
        from .batch.review import Review

        return Review(gallery, path=args.file or _REVIEW_FILE)

    def _login(self) -> None:
        """Ask for the key with a password prompt: it is not echoed, and it is
        neither in the cell's source nor in its output, nor in the history."""
        import getpass

        from IPython.core.error import StdinNotImplementedError

        try:
            key = getpass.getpass("Topaz API key (kept in memory for this session only): ")
        except StdinNotImplementedError:
            raise UsageError("This front end cannot ask for input: set TOPAZ_API_KEY before "
                             "starting Jupyter instead.") from None
        self.session.login(key)
        print(f"Using {self.session.describe()}.")

    def _check_key_exposure(self) -> None:
        """Say once, in one line, if the key in use came from a cell of this session.

        Only a key from the environment can have: ``%topaz login`` never puts
        one in a cell.  The cells looked at are this session's raw inputs
        (what ``In`` holds, and what a saved notebook keeps); one gave the key
        away if its source holds the key's text, or if it runs ``%env
        TOPAZ_API_KEY…``, which prints the value even when it came from a
        variable.  Cells are checked as they come, until a warning is given.
        """
        if self.session.sandbox is not None or self.session.logged_in or self.shell is None:
            return
        key = os.environ.get("TOPAZ_API_KEY", "").strip()
        if not key:
            return
        digest = hashlib.sha256(key.encode()).digest()
        if digest != self._key_seen:  # a new key: look at every cell again, and warn again
            self._key_seen, self._cells_checked, self._key_warned = digest, 0, False
        if self._key_warned:
            return
        history = getattr(self.shell.history_manager, "input_hist_raw", None) or []
        cells: list[int] = []
        in_source = printed = False
        for number in range(max(1, self._cells_checked), len(history)):
            source = history[number]
            typed = len(key) >= _SHORTEST_KEY and key in source
            by_env = bool(_SETS_KEY.search(source))
            if typed or by_env:
                cells.append(number)
                in_source, printed = in_source or typed, printed or by_env
        self._cells_checked = len(history)
        if cells:
            self._key_warned = True
            print(key_in_notebook(cells, in_source=in_source, printed=printed), file=sys.stderr)

    def _demo(self) -> DemoJobs:
        sandbox = self.session.use_demo()
        client = self.session.client()
        rows = []
        for pid in sandbox.demo_ids:
            try:
                st = client.status(pid)
                rows.append((pid, st.filename or "", st.status, st.model or ""))
            except TopazError as exc:
                rows.append((pid, "", say(exc, "magic"), ""))
        return DemoJobs([r[0] for r in rows], rows=rows, where=self.session.describe())

    def _links(self, pids: list[str], *, show_urls: bool) -> LinkTable:
        client = self.session.client()
        return LinkTable([client.link(pid, side) for pid in pids for side in SIDES],
                         show_urls=show_urls)

    def _gallery(self, pids: list[str], args: Any) -> Any:
        """The gallery, returned at once: its cards fill in as they are fetched."""
        from .batch.gallery import Gallery

        return Gallery(pids, client=self.session.client(),
                       transfer=self.session.transfer(use_cache=not args.no_cache),
                       max_workers=self.settings.max_workers,
                       preview_size=self._preview_size(args),
                       mode=args.mode or self.settings.mode).start()

    def _shootout(self, pids: list[str], args: Any) -> Any:
        from .batch.shootout import Shootout
        from .view.modes import MAX_OUTPUTS

        if len(pids) > MAX_OUTPUTS:
            raise UsageError(f"--grid compares at most {MAX_OUTPUTS} processes; got {len(pids)}.")
        done = [0]
        lock = threading.Lock()
        with _progress.in_notebook(["processes"], label="Fetching", unit="count") as bar:

            def on_done(_: str) -> None:
                with lock:
                    done[0] += 1
                    bar("processes", done[0], len(pids))

            shootout = Shootout.fetch(pids, client=self.session.client(),
                                      transfer=self.session.transfer(use_cache=not args.no_cache),
                                      max_workers=self.settings.max_workers,
                                      preview_size=self._preview_size(args),
                                      mode=args.mode or "grid", on_done=on_done)
        shootout.view  # noqa: B018 -- the previews now, so a damaged file fails here
        note = shootout.mismatch
        if note:
            print(note, file=sys.stderr)
        return shootout

    def _one(self, pid: str, args: Any) -> Comparison:
        client = self.session.client()
        transfer = self.session.transfer(use_cache=not args.no_cache)
        names = [] if args.meta else list(SIDES)
        with _progress.in_notebook(names, label="Downloading") as bars:

            def fetch() -> Comparison:
                return Comparison.fetch(pid, client=client, transfer=transfer,
                                        download=not args.meta, require_output=False,
                                        on_progress=bars if bars.shown else None,
                                        preview_size=self._preview_size(args),
                                        mode=args.mode or self.settings.mode)

            result = fetch()
            if not result.ready and result.not_ready is not None and args.wait is not None:
                if result.failed:  # it will never have an output: waiting cannot help
                    raise UsageError(result.status_line("magic"))
                timeout = self.settings.wait_timeout if args.wait < 0 else args.wait
                self._wait(pid, timeout)
                result = fetch()
            result.prepare()
        if not result.ready and result.not_ready is not None:
            self._say_once(result, result.status_line("magic"))
        if args.save:
            if not result.downloaded:
                raise UsageError("--save needs the images: drop --meta to download them.")
            failure: NotSaved | None = None
            try:
                saved = result.save(args.save)
            except NotSaved as exc:  # the others were saved: say so, then what was not
                saved, failure = exc.saved, exc
            for side, path in saved.items():
                print(f"saved {side}: {path}")
            if failure is not None:
                raise failure
        return result

    def _say_once(self, result: Comparison, line: str) -> None:
        """Say ``line`` (why there is no output) once in the cell's output.

        When the cell displays ``result``, its display says the line above the
        input; when it does not (``r = %topaz ID``, or the magic is not the
        cell's last line), the line is printed on stderr as the cell ends.
        IPython's displayhook records the value it displayed in the running
        cell's result, which the ``post_run_cell`` event hands over.
        """
        shell = self.shell
        cell = getattr(getattr(shell, "displayhook", None), "exec_result", None)
        if shell is None or cell is None:  # not run from a cell: nothing will display it
            print(line, file=sys.stderr)
            return

        def after(info: Any) -> None:
            if info is not cell:
                return
            shell.events.unregister("post_run_cell", after)
            if info.result is not result:
                print(line, file=sys.stderr)

        shell.events.register("post_run_cell", after)

    def _wait(self, pid: str, timeout: float) -> None:
        with _progress.in_notebook(["processing"], label="Waiting", unit="percent") as bar:
            _progress.wait_for(self.session.client(), pid, timeout=timeout, progress=bar,
                               place="magic")

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
        return html_table(self.rows, header=("process_id", "file", "status", "model"),
                          caption=f"Demo jobs on {self.where}:")


class LinkTable(list):
    """Presigned links and their expiry; what ``%topaz ID --links`` shows.

    The HTML form puts the URLs in a table rather than in printed text, so a
    notebook does not turn the redacted ``…?…`` addresses (which would only
    answer 403 without their signature) into clickable links.
    """

    def __init__(self, links: list[Link], *, show_urls: bool) -> None:
        super().__init__(links)
        self.show_urls = show_urls

    def rows(self) -> list[tuple[str, str, str, str]]:
        return [(link.process_id, link.side, expiry_text(link.expiry),
                 link.download_url if self.show_urls else redact_url(link.download_url))
                for link in self]

    def __repr__(self) -> str:
        return "\n".join(f"{pid} {side:<6} expires {when}  {url}"
                         for pid, side, when, url in self.rows())

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        return html_table(self.rows(), header=("process_id", "side", "expires", "URL"),
                          css_class="topaz-links")
