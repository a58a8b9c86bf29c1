"""TopazPanel as a Voila dashboard, driven in a real Chromium.

The panel notebook runs without an API key (it starts its own sandbox).  The
test types into the panel like a user: a bad ID keeps Fetch disabled, a demo
ID and Enter fetch and draw the comparison.
"""

from __future__ import annotations

import shutil

import pytest
from browser_support import REPO, launch_browser, require_chromium, screenshot, voila_server

from topaz_nb.sandbox._demo import DEMO_JOBS

pytestmark = pytest.mark.browser


def test_panel_works_in_voila(tmp_path, monkeypatch):
    require_chromium()
    pytest.importorskip("voila")
    for var in ("TOPAZ_API_KEY", "TOPAZ_API_URL", "TOPAZ_PROCESS_IDS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TOPAZ_NB_CACHE", str(tmp_path / "cache"))
    notebook = tmp_path / "02-panel.ipynb"
    shutil.copy(REPO / "notebooks" / "02-panel.ipynb", notebook)
    second = DEMO_JOBS[1].process_id

    with voila_server(notebook) as url, launch_browser((1300, 1100)) as page:
        page.goto(url, timeout=120_000)
        field = page.get_by_placeholder("process ID", exact=False).first
        field.wait_for(timeout=120_000)
        # The notebook itself fetched the first demo job through the panel.
        page.locator(".tnb-compare canvas.tnb-canvas").first.wait_for(timeout=60_000)

        fetch = page.get_by_role("button", name="Fetch").first
        field.fill("not-a-process-id")
        page.wait_for_function("(b) => b.disabled", arg=fetch.element_handle(), timeout=10_000)
        assert page.get_by_text("UUID", exact=False).count() >= 1

        field.fill(second)
        page.wait_for_function("(b) => !b.disabled", arg=fetch.element_handle(), timeout=10_000)
        field.press("Enter")
        page.get_by_text(second, exact=False).nth(0).wait_for(timeout=30_000)
        page.wait_for_function(
            """(pid) => [...document.querySelectorAll('caption')].some(c => c.textContent.includes(pid))""",
            arg=second, timeout=60_000)
        canvas = page.locator(".tnb-compare canvas.tnb-canvas").last
        canvas.wait_for(timeout=30_000)
        assert canvas.bounding_box()["width"] > 200
        screenshot(page, "panel-voila.png")

        # On a narrow page (820 px) nothing is cut off: the metadata table wraps
        # below the comparison, the buttons and the placeholder show whole.
        page.set_viewport_size({"width": 820, "height": 1100})
        page.wait_for_timeout(300)  # one layout pass after the resize
        layout = page.evaluate("""() => {
            const width = document.documentElement.clientWidth;
            const tables = [...document.querySelectorAll('table.topaz-meta')]
                .filter(t => t.offsetParent);
            const cut = tables.filter(t => {
                const r = t.getBoundingClientRect();
                let box = t.parentElement;
                while (box && getComputedStyle(box).overflowX === 'visible') box = box.parentElement;
                const limit = box ? box.getBoundingClientRect().right : width;
                return r.right > Math.min(limit, width) + 1;
            }).length;
            const buttons = [...document.querySelectorAll('button')]
                .filter(b => b.offsetParent && b.scrollWidth > b.clientWidth + 1)
                .map(b => b.textContent.trim());
            const input = [...document.querySelectorAll('input[placeholder]')]
                .find(i => i.placeholder.includes('process ID'));
            const ctx = document.createElement('canvas').getContext('2d');
            ctx.font = getComputedStyle(input).font;
            return {tables: tables.length, cut, buttons,
                    placeholderFits: ctx.measureText(input.placeholder).width <= input.clientWidth};
        }""")
        assert layout["tables"] >= 1 and layout["cut"] == 0, layout
        assert layout["buttons"] == [] and layout["placeholderFits"], layout
        field.fill(second)
        assert page.get_by_text("valid ID", exact=True).count() >= 1
        screenshot(page, "panel-voila-820.png")
