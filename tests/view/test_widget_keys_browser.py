"""Keys pressed in a comparison stay in it, in a real Notebook 7 and JupyterLab.

Notebook 7 runs the notebook's shortcuts from a keydown listener on the
document in the capture phase, JupyterLab from one in the bubble phase (see
``static/keys.js``).  Each test focuses the view by a click and presses keys
the view uses (m, 1, 0) and plain letters it does not (a, j): the view acts,
and the notebook keeps its cells and their types.  Keys the view does not take
(Shift+Enter) still reach the notebook.  One server for the module serves both
front ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from browser_support import (
    ARTIFACTS,
    current_panel,
    jupyter_server,
    launch_chromium,
    new_page,
    open_notebook,
    own_errors,
    require_chromium,
    run_all,
    run_code,
    screenshot,
    write_notebook,
)

pytestmark = pytest.mark.browser

SETUP = """
import numpy as np
from topaz_nb.widget import CompareView

A = np.zeros((96, 128, 3), np.uint8)
A[:] = (220, 40, 30)
B = np.zeros((192, 256, 3), np.uint8)
B[:] = (30, 60, 200)
view = CompareView(A, B, height=320)
view
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    require_chromium()
    root = tmp_path_factory.mktemp("keys")
    for ui in ("notebook", "lab"):
        write_notebook(root / f"keys-{ui}.ipynb", [SETUP, "print('after')"])
    settings = {"@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
                "@jupyterlab/apputils-extension:notification": {"fetchNews": "false"}}
    with jupyter_server(root, app="lab", lab_settings=settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def chromium(server: Any) -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    page = new_page(chromium, (1200, 900))
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    yield page
    page.context.close()
    if errors:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "widget-keys-browser-errors.log").write_text("\n".join(errors) + "\n")


def cell_types(page: Any) -> list[str]:
    """The notebook's cells, as their types, from the notebook's own model."""
    return list(page.evaluate("""() => window.jupyterapp.shell.currentWidget.content.model
        .sharedModel.cells.map((c) => c.cell_type)"""))


def active_cell(page: Any) -> int:
    return int(page.evaluate("() => window.jupyterapp.shell.currentWidget.content.activeCellIndex"))


def focus_inside(page: Any, root: str) -> bool:
    """Whether the page's focus is inside the element ``root`` selects."""
    return bool(page.evaluate(
        "(sel) => !!document.querySelector(sel) && "
        "document.querySelector(sel).contains(document.activeElement)", root))


def wait_mode(page: Any, root: str, mode: str) -> None:
    """Wait until the view shows ``mode``; fail saying what the notebook became."""
    try:
        page.wait_for_function("([sel, mode]) => document.querySelector(sel)?.dataset.mode === mode",
                               arg=[root, mode], timeout=10_000)
    except Exception as exc:  # Playwright's TimeoutError
        raise AssertionError(f"the view is not in {mode} mode; cells: {cell_types(page)}") from exc


def wait_zoom_text(page: Any, root: str, text: str) -> None:
    """Wait until the view's zoom read-out starts with ``text`` ("fit", "100%")."""
    try:
        page.wait_for_function(
            "([sel, text]) => !!document.querySelector(sel + ' .tnb-zoom')"
            "?.textContent.startsWith(text)", arg=[root, text], timeout=10_000)
    except Exception as exc:
        raise AssertionError(f"the view's zoom is not {text!r}; cells: {cell_types(page)}") from exc


@pytest.mark.parametrize("ui", ["notebook", "lab"])
def test_keys_in_the_comparison_stay_in_it(server: Any, page: Any, ui: str) -> None:
    open_notebook(page, server, f"keys-{ui}.ipynb", ui=ui)
    run_all(page)
    root = f"{current_panel(page)} .tnb-compare"
    page.wait_for_selector(f"{root} canvas.tnb-canvas", timeout=60_000)
    page.wait_for_function("(sel) => /%/.test(document.querySelector(sel + ' .tnb-zoom').textContent)",
                           arg=root, timeout=30_000)
    before = cell_types(page)
    assert before == ["code", "code"]
    page.locator(f"{root} canvas.tnb-canvas").click()
    assert focus_inside(page, root)
    assert active_cell(page) == 0

    page.keyboard.press("m")  # the view's next mode; in Notebook 7 also "to Markdown"
    wait_mode(page, root, "side-by-side")
    page.keyboard.press("a")  # the notebook's "insert a cell above"
    page.keyboard.press("j")  # the notebook's "select the next cell"
    page.keyboard.press("1")  # 100 %; the notebook's "heading 1" on a Markdown cell
    wait_zoom_text(page, root, "100%")
    page.keyboard.press("0")
    wait_zoom_text(page, root, "fit")

    assert cell_types(page) == before
    assert active_cell(page) == 0
    assert focus_inside(page, root)
    assert page.locator(root).count() == 1  # the output was not cleared
    screenshot(page.locator(f"{current_panel(page)} .jp-Notebook"), f"widget-keys-{ui}.png")

    # The kernel saw the mode the keys chose.
    assert run_code(page, "print(view.mode)") == "side-by-side"

    # Keys the view does not take go on to the notebook: Shift+Enter runs the
    # view's cell and selects the next one.
    page.locator(f"{root} canvas.tnb-canvas").first.click()
    assert active_cell(page) == 0
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.content.activeCellIndex === 1",
        timeout=10_000)
    assert cell_types(page) == before + ["code"]  # and the one run_code added
    assert own_errors(page.errors) == []  # type: ignore[attr-defined]

