"""The quickstart notebook, run in a real JupyterLab by a real Chromium.

Opens and saves the notebook first (which must leave its file unchanged),
then runs every cell with no API key (the notebook starts its own sandbox),
checks that the first comparison drew both images, and saves the README
screenshot to ``test-artifacts/readme-screenshot.png``.  With
``TOPAZ_NB_DOCS_SCREENSHOT=1`` in the environment it also replaces
``docs/screenshot.png`` (the README's picture) with it, so that picture is
always one of these runs of the current widget on the sandbox's first demo
process.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from browser_support import (
    REPO,
    current_panel,
    hide_left_area,
    jupyter_server,
    launch_browser,
    open_notebook,
    require_chromium,
    run_all,
    screenshot,
    wait_kernel_idle,
)

pytestmark = pytest.mark.browser


def test_quickstart_runs_in_jupyterlab_and_draws_the_comparison(tmp_path, monkeypatch):
    require_chromium()
    for var in ("TOPAZ_API_KEY", "TOPAZ_API_URL", "TOPAZ_PROCESS_IDS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TOPAZ_NB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "root"
    shutil.copytree(REPO / "notebooks", root)
    name = "01-quickstart.ipynb"

    settings = {"@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
                "@jupyterlab/apputils-extension:notification": {"fetchNews": "false"}}
    with jupyter_server(root, lab_settings=settings) as server, \
            launch_browser((1800, 1000)) as page:
        open_notebook(page, server, name)
        # Saving with a live kernel writes its language_info: the committed file has it already.
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        page.wait_for_function(
            "() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=30_000)
        assert (root / name).read_bytes() == (REPO / "notebooks" / name).read_bytes()
        hide_left_area(page)
        run_all(page)
        panel = current_panel(page)
        # Every cell ran: the last code cell has its execution count.
        page.wait_for_function(
            """(sel) => {
                const prompts = [...document.querySelectorAll(sel + ' .jp-CodeCell .jp-InputPrompt')];
                return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
            }""", arg=panel, timeout=180_000)
        wait_kernel_idle(page, 120)
        errors = page.locator(f"{panel} .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
        assert tracebacks == []

        first = page.locator(f"{panel} .tnb-compare canvas.tnb-canvas").first
        first.wait_for(state="visible", timeout=60_000)
        first.scroll_into_view_if_needed()
        # Both halves of the swipe drew pixels of a photo: neither side is blank.
        samples = page.evaluate(
            """(canvas) => {
                const ctx = canvas.getContext('2d');
                const w = canvas.width, h = canvas.height;
                const at = (fx, fy) => Array.from(ctx.getImageData(Math.floor(w * fx), Math.floor(h * fy), 1, 1).data);
                return {left: at(0.35, 0.5), right: at(0.65, 0.5), bg: at(0.005, 0.5), w, h};
            }""", first.element_handle())
        assert samples["w"] > 100 and samples["h"] > 100
        for side in ("left", "right"):
            assert samples[side][3] == 255, f"{side} half is not drawn: {samples}"
            assert samples[side] != samples["bg"], f"{side} half shows the background: {samples}"

        # Wide enough for the whole toolbar beside the table: every mode's button shows.
        modes = page.evaluate(
            """(canvas) => [...canvas.closest('.tnb-compare').querySelectorAll('button[data-mode]')]
                .filter((b) => b.getClientRects().length).map((b) => b.dataset.mode)""",
            first.element_handle())
        assert modes == ["swipe", "side-by-side", "blend", "difference", "toggle", "grid",
                         "fidelity"]
        shot = first.locator("xpath=ancestor::div[contains(@class, 'jp-OutputArea-child')][1]")
        page.mouse.move(0, 0)  # no hover on a button in the picture
        path = screenshot(shot, "readme-screenshot.png")
        assert path.stat().st_size > 10_000
        if os.environ.get("TOPAZ_NB_DOCS_SCREENSHOT") == "1":
            shutil.copyfile(path, REPO / "docs" / "screenshot.png")
        screenshot(page, "quickstart-page.png")
    assert Path(path).is_file()
