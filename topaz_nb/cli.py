"""The ``topaz-nb`` command: a sandbox, a demo, and a process's links, files and page.

``topaz-nb sandbox`` runs the local Topaz-compatible server; ``topaz-nb demo``
runs it next to JupyterLab with the quickstart notebook open, on copies of the
demo notebooks in a working folder of its own, so a checkout stays exactly as
cloned however the demo is used (``--check`` proves the whole chain works
without starting Jupyter); ``links``, ``fetch``
and ``compare`` work on one process of the real API, or of an in-process
sandbox with ``--demo``.

Every failure a user can cause ends as one line, ``topaz-nb: error: …``, and
exit code 2: never a traceback, never the API key.  Presigned URLs are printed
redacted unless ``links --show-urls`` asks for them.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import _progress
from ._ids import check_process_id
from ._text import byte_size, cache_over_bound, demo_folder_lines, file_problem, interrupted, say
from ._version import __version__
from .errors import NotReady, NotSaved, TopazError, WaitTimeout
from .links import SIDES, expiry_text, redact_url
from .view.modes import DEFAULT_MODE, MODES

if TYPE_CHECKING:
    from ._session import Session
    from .comparison import Comparison

__all__ = ["main"]

_PROG = "topaz-nb"
_FIRST = "first"
_QUICKSTART = "01-quickstart.ipynb"


class _Failure(TopazError):
    """A command-line mistake that is not about the API (bad path, missing notebook)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``topaz-nb`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed by argparse
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.run(args) or 0)
    except TopazError as exc:
        _error(say(exc, "cli"))
        return 2
    except OSError as exc:  # the cache directory: read-only, full, or not a directory
        _error(file_problem(exc, "cli", cache_dir=_cache_dir(args)))
        return 2
    except KeyboardInterrupt:
        # Fetches in flight were cancelled on the way out (see _tasks.workers).
        print(file=sys.stderr)
        _error(interrupted("cli"))
        return 130


# -- parser ------------------------------------------------------------------

_ID_HELP = ("the process ID (a UUID) the API returned for the job; with --demo, "
            f"{_FIRST!r} means the sandbox's first demo process")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Review Topaz Labs Image API results: download a process's input and "
                    "output, compare them, or run a local sandbox.",
        epilog="The API key comes from TOPAZ_API_KEY. Try it without one: "
               "topaz-nb --demo fetch first -o out")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--api-url", metavar="URL",
                        help="API base URL (default: $TOPAZ_API_URL or the production API)")
    parser.add_argument("--demo", action="store_true",
                        help="use an in-process sandbox with demo processes: no key, no "
                             f"network; the ID {_FIRST!r} means its first demo process")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="download cache (default: $TOPAZ_NB_CACHE or the user cache dir)")
    parser.add_argument("--cache-max-bytes", metavar="BYTES", type=_byte_count,
                        help="bound on the download cache's disk use, e.g. 20e9 "
                             "(default: 20 GB)")
    parser.set_defaults(command=None)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("sandbox", help="run a local Topaz-compatible API server until Ctrl-C")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=_port, default=8765, help="API port (default: %(default)s)")
    p.add_argument("--storage-port", type=_port, default=0,
                   help="storage port (default: any free port)")
    p.add_argument("--api-key", metavar="K", help="key the sandbox accepts (default: random)")
    p.add_argument("--no-demo", action="store_true", help="start without demo processes")
    p.set_defaults(command="sandbox", run=_cmd_sandbox)

    p = sub.add_parser("demo", help="run a sandbox and JupyterLab with the quickstart notebook")
    p.add_argument("--port", type=_port, default=8888,
                   help="JupyterLab port (default: %(default)s)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--dir", metavar="DIR", type=Path,
                   help="working folder: the demo notebooks are copied there, and what they "
                        "write (review CSV, saved images) stays there "
                        "(default: the user data dir's topaz-nb/demo)")
    p.add_argument("--notebook", metavar="PATH", type=Path,
                   help=f"notebook to open (default: the copy of {_QUICKSTART}); one of the "
                        "demo notebooks opens its copy, any other opens where it is")
    p.add_argument("--check", action="store_true",
                   help="only check that a demo process downloads and opens, then exit")
    p.add_argument("jupyter_args", nargs=argparse.REMAINDER,
                   help="after --: more options for jupyter lab (e.g. -- --ServerApp.ip=0.0.0.0)")
    p.set_defaults(command="demo", run=_cmd_demo)

    p = sub.add_parser("links", help="show the presigned links of a process and when they expire")
    p.add_argument("process_id", metavar="ID", help=_ID_HELP)
    p.add_argument("--show-urls", action="store_true",
                   help="print the full URLs, signature included (they grant access for an hour)")
    p.set_defaults(command="links", run=_cmd_links)

    p = sub.add_parser("fetch", help="download a process's input and output into a directory")
    p.add_argument("process_id", metavar="ID", help=_ID_HELP)
    p.add_argument("-o", "--output", metavar="DIR", type=Path, required=True,
                   help="directory for <ID>-input.<ext> and <ID>-output.<ext>")
    p.add_argument("--no-cache", action="store_true", help="download again even when cached")
    p.add_argument("--wait", action="store_true", help="wait for the process to finish first")
    p.set_defaults(command="fetch", run=_cmd_fetch)

    p = sub.add_parser("compare", help="write a self-contained HTML page comparing both sides")
    p.add_argument("process_id", metavar="ID", help=_ID_HELP)
    p.add_argument("-o", "--output", metavar="PAGE", type=Path, required=True,
                   help="HTML file to write")
    p.add_argument("--mode", default=None, type=_mode, choices=MODES,
                   help=f"initial mode: {', '.join(MODES)} (default: {DEFAULT_MODE})")
    p.add_argument("--wait", action="store_true", help="wait for the process to finish first")
    p.set_defaults(command="compare", run=_cmd_compare)

    p = sub.add_parser("cache", help="show or clear the download cache")
    p.add_argument("action", choices=("info", "clear"),
                   help="info: what the cache holds and its bound; clear: delete it "
                        "(or one process's files)")
    p.add_argument("process_id", metavar="ID", nargs="?",
                   help="with clear: only this process's files")
    p.set_defaults(command="cache", run=_cmd_cache)
    return parser


def _mode(text: str) -> str:
    return text.strip().lower()


def _byte_count(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes (e.g. 20e9)")
    return int(value)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535)")
    return value


# -- commands ------------------------------------------------------------------

def _cmd_sandbox(args: argparse.Namespace) -> int:
    from .sandbox import serve

    serve(host=args.host, port=args.port, storage_port=args.storage_port,
          api_key=args.api_key, demo=not args.no_demo)
    return 0


def _cmd_links(args: argparse.Namespace) -> int:
    with _session(args) as session:
        pid = _resolve_id(args.process_id, session)
        client = session.client()
        try:
            links = {side: client.link(pid, side) for side in SIDES}
        except NotReady as exc:
            raise TopazError(say(exc, "cli")) from None
        print(f"Links of {pid}:")
        for side, link in links.items():
            url = link.download_url if args.show_urls else redact_url(link.download_url)
            print(f"  {side:<7} expires {expiry_text(link.expiry)}  {url}")
        if not args.show_urls:
            print("URLs are shown without their signature; --show-urls prints them whole.")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    with _session(args) as session:
        comparison = _fetch(args, session, use_cache=not args.no_cache)
        failure: NotSaved | None = None
        try:
            saved = comparison.save(args.output)
        except NotSaved as exc:  # the others were saved: list them, then what was not
            saved, failure = exc.saved, exc
        _print_table(comparison.rows(), comparison.process_id)
        for side, path in saved.items():
            print(f"{side:<7} {path}")
        if failure is not None:
            raise failure
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    """``cache info`` / ``cache clear [ID]``: no key and no network needed."""
    from .settings import Topaz
    from .storage import Transfer
    from .storage import budget as _budget

    settings = Topaz()
    if args.cache_dir:
        settings.cache_dir = args.cache_dir
    if args.cache_max_bytes is not None:
        settings.cache_max_bytes = args.cache_max_bytes
    with Transfer(settings.cache_dir) as transfer:
        if args.action == "clear":
            pid = check_process_id(args.process_id) if args.process_id else None
            removed = transfer.clear_cache(pid)
            what = f"process {pid}" if pid else "the cache"
            print(f"deleted {removed} downloaded file{'s' * (removed != 1)} of {what} "
                  f"in {transfer.cache_dir}, with their previews and tile pyramids")
            return 0
        if args.process_id:
            raise _Failure("cache info takes no process ID")
        use = _budget.usage(transfer.cache_dir, settings.cache_max_bytes)
    print(f"cache      {use.directory}")
    print(f"processes  {use.processes} ({use.downloads} downloaded files)")
    print(f"downloads  {byte_size(use.download_bytes) or '0 B'}")
    print(f"derived    {byte_size(use.derived_bytes) or '0 B'} (previews and tile pyramids)")
    print(f"total      {byte_size(use.total_bytes) or '0 B'} of at most "
          f"{byte_size(settings.cache_max_bytes)} (Topaz.cache_max_bytes)")
    if use.over_bound:
        print(f"           {cache_over_bound(use.in_use, use.in_use_bytes)}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    page = args.output
    if page.is_dir():
        raise _Failure(f"{str(page)!r} is a directory: give the HTML file to write, "
                       "e.g. -o page.html")
    with _session(args) as session:
        comparison = _fetch(args, session, mode=args.mode)
        try:
            page.parent.mkdir(parents=True, exist_ok=True)
            comparison.view.save_html(page, heading=comparison.process_id,
                                      rows=comparison.rows())
        except OSError as exc:
            raise _Failure(f"could not write {str(page)!r}: "
                           f"{exc.strerror or type(exc).__name__}") from None
        print(f"Wrote {page} ({byte_size(page.stat().st_size)}): "
              f"{comparison.process_id}, open it in any browser")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.check:
        return _demo_check(args)
    plan = _DemoPlan.make(args.dir, args.notebook)
    extra = [a for a in args.jupyter_args if a != "--"]
    if args.port:
        _check_port_free(args.port)
    copied, kept = plan.copy_notebooks()
    from .sandbox import Sandbox

    with Sandbox() as sb:
        env = dict(os.environ, TOPAZ_API_URL=sb.base_url, TOPAZ_API_KEY=sb.api_key,
                   TOPAZ_PROCESS_IDS=" ".join(sb.demo_ids), TOPAZ_NB_DEMO="1")
        page = plan.notebook.relative_to(plan.folder).as_posix()
        # No port retries: a Jupyter that moved to the next port would not be
        # where this command says it is.
        command = [sys.executable, "-m", "jupyter", "lab", page,
                   f"--ServerApp.root_dir={plan.folder}", f"--ServerApp.port={args.port}",
                   "--ServerApp.port_retries=0"]
        if args.no_browser:
            command.append("--no-browser")
        if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in extra:
            command.append("--allow-root")  # containers and CI machines often run as root
        command += extra
        print("\n".join([
            "topaz-nb demo",
            f"  sandbox API:  {sb.base_url}  (local, demo data only)",
            "  demo processes:",
            *(f"    {pid}" for pid in sb.demo_ids),
            *demo_folder_lines(plan.folder, copied=copied, kept=kept, own=plan.own),
            f"  notebook:     {plan.notebook}",
            "Starting JupyterLab… (Ctrl-C stops both)",
        ]), flush=True)
        try:
            # Its own session: Ctrl-C reaches this process only, so Jupyter does
            # not stop to ask "Shutdown this Jupyter server?" and is ended below.
            # Started in the working folder, so nothing it or a kernel writes by
            # a relative path lands in the directory the command was run from.
            proc = subprocess.Popen(command, env=env, start_new_session=True, cwd=plan.folder)
        except OSError as exc:
            raise _Failure(f"could not start JupyterLab: {exc.strerror or exc}") from None
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
        previous_int = signal.getsignal(signal.SIGINT) if in_main else None
        try:
            url = _lab_url(proc, env, page)
            if url is None:
                raise _Failure(f"JupyterLab stopped before serving (exit code {proc.poll()}); "
                               "its messages are above")
            print(f"  JupyterLab:   {url}", flush=True)
            return proc.wait()
        except KeyboardInterrupt:
            if in_main:  # a second Ctrl-C while Jupyter stops kills it at once
                def hurry(_signum: int, _frame: object) -> None:
                    proc.kill()

                signal.signal(signal.SIGINT, hurry)
                signal.signal(signal.SIGTERM, hurry)
            print("Stopping JupyterLab and the sandbox… (Ctrl-C again to stop at once)",
                  file=sys.stderr, flush=True)
            return 0
        finally:
            _stop_child(proc)
            if in_main:
                signal.signal(signal.SIGTERM, previous)
                signal.signal(signal.SIGINT, previous_int)


class _DemoPlan:
    """Where the demo runs: its working folder, the notebook to open, and the
    demo notebooks to copy there.

    JupyterLab saves a notebook back where it opened it, and a kernel writes
    review CSVs and saved images into the notebook's folder; so the demo never
    opens the notebooks it ships with, only copies of them in ``folder`` (by
    default a per-user data folder, or ``--dir``).  A notebook of the user's
    own (``--notebook`` not one of the demo notebooks) opens where it is.
    """

    def __init__(self, folder: Path, notebook: Path, sources: list[Path], *,
                 own: bool) -> None:
        self.folder = folder
        self.notebook = notebook
        self.sources = sources
        self.own = own

    @classmethod
    def make(cls, given_dir: Path | None, given_notebook: Path | None) -> _DemoPlan:
        """Check ``--dir`` and ``--notebook`` without writing anything."""
        source_dir = _demo_sources(required=given_notebook is None)
        sources = sorted(source_dir.glob("*.ipynb")) if source_dir is not None else []
        wanted: Path | None = None
        if given_notebook is not None:
            wanted = given_notebook.expanduser().resolve()
            if not wanted.is_file():
                raise _Failure(f"no notebook at {str(given_notebook)!r}: give the path of an "
                               ".ipynb file")
        shipped = wanted is not None and source_dir is not None and wanted in sources
        if wanted is not None and not shipped and given_dir is None:
            return cls(wanted.parent, wanted, [], own=True)
        folder = (given_dir.expanduser() if given_dir is not None else _default_demo_dir())
        folder = folder.resolve()
        if source_dir is not None and _within(folder, source_dir):
            raise _Failure(f"the working folder {str(folder)!r} is where the demo notebooks "
                           "ship: the demo would change them; give --dir a folder outside it")
        if folder.exists() and not folder.is_dir():
            raise _Failure(f"{str(folder)!r} is a file, not a folder: give --dir a folder")
        if wanted is None or shipped:
            name = wanted.name if wanted is not None else _QUICKSTART
            return cls(folder, folder / name, sources, own=False)
        if not _within(wanted, folder):
            raise _Failure(f"{str(given_notebook)!r} is outside --dir {str(given_dir)!r}: "
                           "JupyterLab opens only notebooks inside its folder")
        return cls(folder, wanted, sources, own=True)

    def copy_notebooks(self) -> tuple[list[str], list[str]]:
        """Copy each demo notebook that is missing; keep every copy already there.

        Returns the names copied and the names kept because they differ from
        the shipped notebook (the user ran or edited them, or they came from
        another version): those are never overwritten.
        """
        copied: list[str] = []
        kept: list[str] = []
        if not self.sources:
            return copied, kept
        self.folder.mkdir(parents=True, exist_ok=True)
        for source in self.sources:
            target = self.folder / source.name
            data = source.read_bytes()
            try:
                with target.open("xb") as fh:  # never replaces a file that is there
                    fh.write(data)
            except FileExistsError:
                if target.read_bytes() != data:
                    kept.append(source.name)
                continue
            copied.append(source.name)
        return copied, kept


def _default_demo_dir() -> Path:
    import platformdirs

    return platformdirs.user_data_path("topaz-nb") / "demo"


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_port_free(port: int) -> None:
    """Fail before starting anything when JupyterLab's port is taken."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise _Failure(f"port {port} is taken ({exc.strerror or exc}); choose another "
                           "with --port N, or --port 0 for any free port") from None


def _lab_url(proc: subprocess.Popen[bytes], env: dict[str, str], notebook: str,
             timeout: float = 180.0) -> str | None:
    """The address JupyterLab really serves, opening ``notebook``, once it is up.

    A Jupyter server writes ``jpserver-<pid>.json`` (its URL, port and token)
    into the runtime directory when it starts listening; that file, not the
    port asked for, says where it is.  ``None`` if the server exits first.
    """
    import json
    from urllib.parse import quote

    from jupyter_core.paths import jupyter_runtime_dir

    saved = os.environ.get("JUPYTER_RUNTIME_DIR")
    try:
        if "JUPYTER_RUNTIME_DIR" in env:
            os.environ["JUPYTER_RUNTIME_DIR"] = env["JUPYTER_RUNTIME_DIR"]
        info_file = Path(jupyter_runtime_dir()) / f"jpserver-{proc.pid}.json"
    finally:
        if saved is None:
            os.environ.pop("JUPYTER_RUNTIME_DIR", None)
        else:
            os.environ["JUPYTER_RUNTIME_DIR"] = saved
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        try:
            info = json.loads(info_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            time.sleep(0.2)
            continue
        base = str(info.get("url") or f"http://127.0.0.1:{info.get('port')}/")
        token = info.get("token")
        return (base.rstrip("/") + "/lab/tree/" + quote(notebook)
                + (f"?token={token}" if token else ""))
    return None


def _demo_check(args: argparse.Namespace) -> int:
    """Everything the demo notebook needs, end to end, without Jupyter."""
    from ._session import Session
    from .settings import Topaz

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="topaz-nb-check-") as tmp:
        session = Session(Topaz(cache_dir=args.cache_dir or tmp))
        try:
            sandbox = session.use_demo()
            pid = sandbox.demo_ids[0]
            client = session.client()
            links = {side: client.link(pid, side) for side in SIDES}
            from .comparison import Comparison

            with _progress.in_terminal(SIDES, sys.stderr) as progress:
                comparison = Comparison.fetch(
                    pid, client=client, transfer=session.transfer(),
                    on_progress=progress if progress.shown else None)
            images = {side: getattr(comparison, side) for side in SIDES}
            _print_table(comparison.rows(), pid)
            for side in SIDES:
                image = images[side]
                if image is None:
                    raise _Failure(f"the {side} of demo process {pid} did not open")
                print(f"{side:<7} link {redact_url(links[side].download_url)} "
                      f"(expires {expiry_text(links[side].expiry)}), "
                      f"image {image.width}×{image.height} {image.mode}")
        finally:
            session.close()
    print(f"check passed: demo process {pid} fetched and opened in "
          f"{time.monotonic() - started:.1f} s")
    return 0


# -- shared parts --------------------------------------------------------------

class _session:
    """The command's :class:`Session`, closed (and its sandbox stopped) afterwards."""

    def __init__(self, args: argparse.Namespace) -> None:
        from ._session import Session
        from .settings import Topaz

        settings = Topaz()
        if args.api_url:
            settings.base_url = args.api_url
        if args.cache_dir:
            settings.cache_dir = args.cache_dir
        if args.cache_max_bytes is not None:
            settings.cache_max_bytes = args.cache_max_bytes
        self.session = Session(settings)
        if args.demo:
            self.session.use_demo()

    def __enter__(self) -> Session:
        return self.session

    def __exit__(self, *exc: object) -> None:
        self.session.close()


def _resolve_id(text: str, session: Session) -> str:
    if text.strip().lower() == _FIRST:
        if session.sandbox is None or not session.sandbox.demo_ids:
            raise _Failure(f"{_FIRST!r} stands for the first demo process and needs --demo, "
                           "e.g. topaz-nb --demo fetch first -o out")
        return session.sandbox.demo_ids[0]
    return check_process_id(text)


def _fetch(args: argparse.Namespace, session: Session, *, use_cache: bool = True,
           mode: str | None = None) -> Comparison:
    from .comparison import Comparison

    pid = _resolve_id(args.process_id, session)
    client = session.client()
    if args.wait:
        _wait(pid, session)
    try:
        with _progress.in_terminal(SIDES, sys.stderr) as progress:
            return Comparison.fetch(pid, client=client,
                                    transfer=session.transfer(use_cache=use_cache),
                                    on_progress=progress if progress.shown else None,
                                    preview_size=session.settings.preview_size,
                                    mode=mode or session.settings.mode)
    except NotReady as exc:
        raise TopazError(say(exc, "cli")) from None


def _wait(pid: str, session: Session) -> None:
    """Wait for the process, its state on one rewritten line when on a terminal."""
    timeout = session.settings.wait_timeout
    with _progress.in_terminal(["processing"], sys.stderr, unit="percent") as progress:
        try:
            _progress.wait_for(session.client(), pid, timeout=timeout, progress=progress,
                               place="cli")
        except WaitTimeout:
            raise TopazError(f"process {pid} did not finish within {timeout:.0f} s; "
                             "run the command again later") from None





def _cache_dir(args: argparse.Namespace) -> str | None:
    if getattr(args, "cache_dir", None):
        return str(args.cache_dir)
    try:
        from .settings import Topaz

        return Topaz().cache_dir
    except Exception:  # noqa: BLE001 -- only used to phrase an error
        return None


def _print_table(rows: list[tuple[str, str, str]], title: str) -> None:
    print(f"Process {title}")
    header = ("", "Input", "Output")
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    for row in table:
        print("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def _demo_sources(*, required: bool = True) -> Path | None:
    """The folder of the demo notebooks: ``./notebooks`` of a checkout, else the
    one next to the ``topaz_nb`` package (an editable install)."""
    import topaz_nb

    candidates = [Path.cwd() / "notebooks",
                  Path(topaz_nb.__file__).resolve().parents[1] / "notebooks"]
    for folder in candidates:
        if (folder / _QUICKSTART).is_file():
            return folder.resolve()
    if not required:
        return None
    raise _Failure(f"the demo notebook {_QUICKSTART} was not found in ./notebooks or next to "
                   "the topaz_nb package; run from a topaz-nb checkout, or pass --notebook PATH")


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    """Jupyter shuts its kernels down cleanly on SIGTERM; kill it only if it hangs,
    or at once when the user interrupts again while it is stopping."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(15)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        proc.kill()
        proc.wait()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _error(message: str) -> None:
    """``topaz-nb: error: …``, once per line of ``message`` (several files not saved)."""
    for text in message.splitlines() or [""]:
        line = " ".join(text.split())
        print(f"{_PROG}: error: {line}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
