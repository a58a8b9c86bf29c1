"""Real-browser test support: a Jupyter server, Chromium, notebooks, pixels.

Every browser test file uses these instead of its own copy:

* :func:`require_chromium` skips when there is no Chromium (fails under ``CI``);
* :func:`jupyter_server` starts JupyterLab or Notebook 7 on 127.0.0.1 in a
  temporary root, with its own config, data and IPython directories, and
  :func:`voila_server` serves one notebook as a Voila dashboard the same way;
* :func:`launch_browser` (or :func:`launch_chromium` and :func:`new_page`),
  :func:`open_notebook`, :func:`run_all`,
  :func:`wait_for_output` drive the page;
* :func:`canvas_pixel` reads a canvas back, :func:`screenshot` saves pictures
  to ``<repo>/test-artifacts/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nbformat
import pytest

CHROMIUM = Path(os.environ.get("TOPAZ_NB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"


FRONT_END_NOISE = ("Cannot read properties of undefined (reading 'schema')",
                   "Command 'filebrowser:open-path' not registered.")
"""Page errors of the front ends themselves, raised while a page loads, before any
cell has run: Notebook 7.6 raises the first on every page load (its keyboard
shortcuts plugin), an empty notebook's too, and the second now and then (its
router opens the notebook before the file browser is there)."""


def own_errors(errors: list[str]) -> list[str]:
    """The page errors that are not :data:`FRONT_END_NOISE`."""
    return [e for e in errors if not e.startswith(FRONT_END_NOISE)]


def require_chromium() -> None:
    """Skip (or fail under ``CI``) when Chromium or Playwright is missing."""
    problem = None
    if not CHROMIUM.exists():
        problem = f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set TOPAZ_NB_CHROMIUM)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "Playwright is not installed (pip install playwright)"
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"browser tests must run in CI: {problem}")
    pytest.skip(problem)


@dataclass(frozen=True)
class JupyterServer:
    """A running server: where it lives and how to reach it."""

    url: str
    token: str
    root: Path
    app: str

    def page_url(self, name: str, ui: str | None = None, workspace: str | None = None) -> str:
        """The address that opens notebook ``name`` in JupyterLab or Notebook 7.

        ``ui`` defaults to the server's own app; a JupyterLab server with the
        ``notebook`` package installed also serves the Notebook 7 front end.
        ``workspace`` names a JupyterLab workspace of its own, which does not
        bring back the notebooks earlier pages opened.
        """
        lab = (ui or self.app) == "lab"
        path = "tree" if not lab else f"lab/workspaces/{workspace}/tree" if workspace else "lab/tree"
        return f"{self.url}/{path}/{name}?token={self.token}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Jupyter server exited early:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"Jupyter server did not listen within {timeout} s:\n"
                       f"{log.read_text(errors='replace')}")


@contextlib.contextmanager
def jupyter_server(root_dir: Path, app: Literal["lab", "notebook"] = "lab",
                   timeout: float = 60,
                   lab_settings: dict[str, dict[str, Any]] | None = None,
                   ) -> Iterator[JupyterServer]:
    """Run ``jupyter lab`` (or ``jupyter notebook``) serving ``root_dir`` until the block ends.

    The server never reads the user's home: config, data, IPython and user
    settings directories are fresh temporary ones, and the token is random.
    ``lab_settings`` maps plugin ids (``"@jupyterlab/notebook-extension:tracker"``)
    to user settings for the front end.
    """
    port = _free_port()
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="topaz-nb-jupyter-") as tmp:
        home = Path(tmp)
        env = _isolated_env(home)
        for plugin_id, values in (lab_settings or {}).items():
            package, _, plugin = plugin_id.rpartition(":")
            target = home / "lab-settings" / package / f"{plugin}.jupyterlab-settings"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values))
        log = home / "server.log"
        cmd = [sys.executable, "-m", "jupyter", app, "--no-browser", f"--port={port}",
               "--ip=127.0.0.1", f"--ServerApp.token={token}", "--ServerApp.password=",
               "--allow-root", f"--ServerApp.root_dir={root_dir}",
               # Expose the application object so tests can run commands.
               "--LabApp.expose_app_in_browser=True",
               "--JupyterNotebookApp.expose_app_in_browser=True",
               "--LabApp.news_url=",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        with _serving(cmd, env, Path(root_dir), log, port, timeout):
            yield JupyterServer(f"http://127.0.0.1:{port}", token, Path(root_dir), app)


@contextlib.contextmanager
def _serving(cmd: list[str], env: dict[str, str], cwd: Path, log: Path, port: int,
             timeout: float) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server command, logging to ``log``, until the block ends; wait for its port."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        _wait_for_port(port, proc, log, timeout)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _isolated_env(home: Path) -> dict[str, str]:
    """Environment for a server that reads nothing from the user's home.

    Config, data, IPython, runtime and lab-settings directories are fresh ones
    under ``home``; the data directory holds a kernel spec for the interpreter
    running the tests, so notebooks run in this environment.
    """
    env = dict(os.environ)
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                     ("IPYTHONDIR", "ipython"), ("JUPYTER_RUNTIME_DIR", "runtime")):
        (home / sub).mkdir()
        env[var] = str(home / sub)
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env["JUPYTERLAB_SETTINGS_DIR"] = str(home / "lab-settings")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(home / "lab-workspaces")
    spec = home / "data" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}))
    return env


@contextlib.contextmanager
def voila_server(notebook: Path, timeout: float = 60) -> Iterator[str]:
    """Serve ``notebook`` as a Voila dashboard until the block ends; yields its URL."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="topaz-nb-voila-") as tmp:
        home = Path(tmp)
        env = _isolated_env(home)
        log = home / "voila.log"
        cmd = [sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}",
               "--Voila.ip=127.0.0.1", "--VoilaConfiguration.show_tracebacks=True"]
        with _serving(cmd, env, notebook.parent, log, port, timeout):
            yield f"http://127.0.0.1:{port}/"


@contextlib.contextmanager
def launch_chromium() -> Iterator[Any]:
    """A Playwright Chromium browser, closed afterwards; open pages with :func:`new_page`.

    Playwright's sync API runs one instance per thread, so a test module that
    needs several pages shares one of these.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Any, viewport: tuple[int, int] = (1280, 900)) -> Any:
    """A page (device pixel ratio 1) in a fresh context of ``browser``."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                  device_scale_factor=1)
    return context.new_page()


@contextlib.contextmanager
def launch_browser(viewport: tuple[int, int] = (1280, 900)) -> Iterator[Any]:
    """A Playwright Chromium page (device pixel ratio 1) that is closed afterwards."""
    with launch_chromium() as browser:
        yield new_page(browser, viewport)


def write_notebook(path: Path, cells: list[str]) -> Path:
    """Write a notebook of code cells (with a python3 kernel spec)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nbformat.write(nb, str(path))
    return path


def open_notebook(page: Any, server: JupyterServer, name: str, ui: str | None = None,
                  timeout: float = 60, workspace: str | None = None) -> None:
    """Open notebook ``name`` (in ``ui``: "lab" or "notebook", in JupyterLab's
    ``workspace``) and wait for an idle kernel."""
    page.goto(server.page_url(name, ui, workspace))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout * 1000)
    # A restored workspace may bring back earlier notebooks: make this one current.
    page.wait_for_function("() => !!(window.jupyterapp && window.jupyterapp.shell.currentWidget)",
                           timeout=timeout * 1000)
    page.evaluate("""async (name) => {
        const app = window.jupyterapp;
        const current = app.shell.currentWidget;
        if (!current.context || current.context.path !== name) {
            await app.commands.execute('docmanager:open', { path: name });
        }
    }""", name)
    page.wait_for_function(
        """(name) => {
            const w = window.jupyterapp.shell.currentWidget;
            return !!w && !!w.context && w.context.path === name;
        }""", arg=name, timeout=timeout * 1000)
    wait_kernel_idle(page, timeout)


def wait_kernel_idle(page: Any, timeout: float = 60) -> None:
    """Wait until the current notebook's kernel has started and is idle."""
    page.wait_for_function(
        """() => {
            const app = window.jupyterapp;
            const panel = app && app.shell.currentWidget;
            const kernel = panel && panel.sessionContext && panel.sessionContext.session
                && panel.sessionContext.session.kernel;
            return !!kernel && kernel.status === 'idle';
        }""", timeout=timeout * 1000)


def current_panel(page: Any) -> str:
    """A CSS selector for the notebook panel on screen (other tabs may hold widgets too)."""
    widget_id = page.evaluate("() => window.jupyterapp.shell.currentWidget.id")
    return f"[id='{widget_id}']"


def hide_left_area(page: Any) -> None:
    """Collapse JupyterLab's left sidebar, so a notebook gets the page's width."""
    page.evaluate("""async () => {
        const shell = window.jupyterapp.shell;
        if (shell.leftCollapsed === false) {
            await window.jupyterapp.commands.execute('application:toggle-left-area');
        }
    }""")


def run_all(page: Any) -> None:
    """Run every cell, as Run → Run All Cells would."""
    page.evaluate("""async () => {
        const app = window.jupyterapp;
        if (!app) throw new Error('the page does not expose its Jupyter application');
        await app.commands.execute('notebook:run-all-cells');
    }""")


def run_cell(page: Any, index: int) -> None:
    """Select cell ``index`` (0-based) and run it with Shift+Enter."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    page.keyboard.press("Escape")
    cell.locator(".jp-InputPrompt").click()
    page.keyboard.press("Shift+Enter")


def append_and_run(page: Any, source: str) -> None:
    """Add a code cell at the end with ``source`` and run it."""
    page.evaluate("""async (source) => {
        const app = window.jupyterapp;
        const panel = app.shell.currentWidget;
        const notebook = panel.content;
        notebook.activeCellIndex = notebook.widgets.length - 1;
        await app.commands.execute('notebook:insert-cell-below');
        notebook.activeCell.model.sharedModel.setSource(source);
        await app.commands.execute('notebook:run-cell');
    }""", source)


def run_code(page: Any, source: str, timeout: float = 30) -> str:
    """Run ``source`` in a new cell at the end of the notebook; return its output text.

    The cell prints a unique marker last, so the wait ends exactly when this
    cell (not an earlier one) has finished.
    """
    marker = f"done-{secrets.token_hex(4)}"
    append_and_run(page, f"{source}\nprint({marker!r})")
    index = page.locator(".jp-Notebook .jp-Cell").count() - 1
    text = wait_for_output(page, index, marker, timeout)
    return text.replace(marker, "").strip()


def cell_text(page: Any, index: int) -> str:
    """The text of cell ``index``'s outputs."""
    return str(page.locator(".jp-Notebook .jp-Cell").nth(index)
               .locator(".jp-OutputArea").inner_text())


def wait_for_output(page: Any, index: int, pattern: str, timeout: float = 30) -> str:
    """Wait until cell ``index``'s output matches the regular expression ``pattern``."""
    page.wait_for_function(
        """([index, pattern]) => {
            const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[index];
            const out = cell && cell.querySelector('.jp-OutputArea');
            return out && new RegExp(pattern).test(out.innerText);
        }""", arg=[index, pattern], timeout=timeout * 1000)
    return cell_text(page, index)


def canvas_pixel(page: Any, selector: str, x: float, y: float) -> tuple[int, int, int, int]:
    """RGBA of the canvas matching ``selector`` at CSS position ``(x, y)`` inside it."""
    return tuple(page.evaluate(
        """([selector, x, y]) => {
            const c = document.querySelector(selector);
            if (!c) throw new Error('no canvas matches ' + selector);
            const r = c.getBoundingClientRect();
            const px = Math.floor(x * c.width / r.width);
            const py = Math.floor(y * c.height / r.height);
            return Array.from(c.getContext('2d').getImageData(px, py, 1, 1).data);
        }""", [selector, x, y]))


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 12) -> bool:
    """Whether the RGB parts of two colours differ by at most ``tol`` per channel."""
    return all(abs(int(a) - int(e)) <= tol for a, e in zip(actual[:3], expected[:3]))


def wait_for_pixel(page: Any, selector: str, x: float, y: float, expected: tuple[int, ...],
                   tol: int = 12, timeout: float = 15) -> tuple[int, int, int, int]:
    """Wait until the canvas pixel is within ``tol`` of ``expected`` per channel; return it."""
    try:
        page.wait_for_function(
            """([selector, x, y, expected, tol]) => {
                const c = document.querySelector(selector);
                if (!c || !c.width) return false;
                const r = c.getBoundingClientRect();
                const px = Math.floor(x * c.width / r.width);
                const py = Math.floor(y * c.height / r.height);
                const d = c.getContext('2d').getImageData(px, py, 1, 1).data;
                return [0, 1, 2].every((i) => Math.abs(d[i] - expected[i]) <= tol);
            }""", arg=[selector, x, y, list(expected), tol], timeout=timeout * 1000)
    except Exception as exc:  # Playwright's TimeoutError: say what was seen instead
        seen = canvas_pixel(page, selector, x, y)
        raise AssertionError(f"pixel at ({x}, {y}) is {seen}, expected about {expected}") from exc
    return canvas_pixel(page, selector, x, y)


def screenshot(target: Any, name: str) -> Path:
    """Save a screenshot of a page or locator as ``test-artifacts/<name>``."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    target.screenshot(path=str(path))
    return path
