"""TopazPanel as a Voila dashboard and in JupyterLab, driven in a real Chromium.

The panel notebooks run without an API key (they start their own sandbox).  The
Voila test types into the panel like a user: a bad ID keeps Fetch disabled, a
demo ID and Enter fetch and draw the comparison.  The JupyterLab test sets
widths from 600 to 1280 px and checks that typing, fetching and changing modes
never wrap a row or move the comparison, that the History list shows its whole
entry, and that a failed process's small input keeps its natural size.
"""

from __future__ import annotations

import shutil

import pytest
from browser_support import (
    REPO,
    launch_browser,
    own_errors,
    require_chromium,
    screenshot,
    voila_server,
)

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


# ---- JupyterLab: rows that never wrap or move ---------------------------------------

PANEL_CELLS = [
    "%load_ext topaz_nb\nids = %topaz demo",
    "panel = %topaz\npanel",
    # Two fetches: the History list then holds both, the last one (a longer file
    # name, "coffee-cup.jpg", that the list used to cut) chosen.
    f"panel.fetch(ids[0])\npanel.fetch({DEMO_JOBS[9].process_id!r})\nprint('fetched')",
    # A failed process: its input alone, under the line saying why.
    f"%topaz {DEMO_JOBS[4].process_id}",
]
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden) .topaz-panel"

# Every visible row of the panel and the comparison's toolbar: are its parts on one
# row (their boxes overlap vertically), where is the canvas (from the panel's top)?
LAYOUT = """(sel) => {
    const panel = document.querySelector(sel);
    const shown = (e) => e.getClientRects().length > 0
        && getComputedStyle(e).visibility !== 'hidden';
    const oneRow = (items) => {
        const boxes = items.filter(shown).map((e) => e.getBoundingClientRect())
            .filter((r) => r.width > 0 && r.height > 0);
        if (!boxes.length) return true;
        return Math.max(...boxes.map((r) => r.top)) < Math.min(...boxes.map((r) => r.bottom));
    };
    const rows = [...panel.children].filter((c) => c.classList.contains('widget-hbox') && shown(c));
    const bar = panel.querySelector('.tnb-bar');
    const canvas = panel.querySelector('canvas.tnb-canvas');
    const top = panel.getBoundingClientRect().top;
    return {
        rows: rows.map((r) => oneRow([...r.children])),
        rowHeights: rows.map((r) => Math.round(r.getBoundingClientRect().height)),
        toolbar: oneRow([...bar.querySelectorAll('button, select, input')]),
        toolbarFits: bar.scrollWidth <= bar.clientWidth + 1,
        fold: panel.querySelector('.tnb-compare').dataset.fold,
        canvasTop: Math.round((canvas.getBoundingClientRect().top - top) * 10) / 10,
        width: Math.round(panel.getBoundingClientRect().width),
    };
}"""

# The History list's chosen entry: its text, whether the closed list shows all of it,
# and the tooltip that holds it whole.
HISTORY = """(sel) => {
    const panel = document.querySelector(sel);
    const row = [...panel.children].find((r) => r.querySelector('.widget-label')
        && r.querySelector('.widget-label').textContent === 'History');
    const select = row.querySelector('.widget-dropdown select');
    const text = select.options[select.selectedIndex].textContent.replace(/\u00a0/g, ' ');
    const style = getComputedStyle(select);
    const ctx = document.createElement('canvas').getContext('2d');
    ctx.font = style.font;
    const room = select.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    return {text, whole: ctx.measureText(text).width <= room, title: select.title,
            textWidth: Math.round(ctx.measureText(text).width), room: Math.round(room)};
}"""


def test_panel_rows_and_toolbar_never_wrap_or_move_in_jupyterlab(tmp_path, monkeypatch):
    from browser_support import (
        hide_left_area,
        jupyter_server,
        launch_chromium,
        new_page,
        open_notebook,
        run_all,
        wait_for_output,
        write_notebook,
    )

    require_chromium()
    for var in ("TOPAZ_API_KEY", "TOPAZ_API_URL", "TOPAZ_PROCESS_IDS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TOPAZ_NB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "nb"
    root.mkdir()
    write_notebook(root / "panel.ipynb", PANEL_CELLS)
    settings = {"@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
                "@jupyterlab/apputils-extension:notification": {"fetchNews": "false"}}
    cup = DEMO_JOBS[9]
    assert cup.name == "coffee-cup"
    with jupyter_server(root, lab_settings=settings) as server, launch_chromium() as chromium:
        page = new_page(chromium, (1280, 1000))
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        open_notebook(page, server, "panel.ipynb")
        hide_left_area(page)
        run_all(page)
        wait_for_output(page, 2, "fetched", timeout=120)
        page.locator(f"{PANEL} canvas.tnb-canvas").wait_for(timeout=60_000)
        field = page.locator(PANEL).get_by_placeholder("process ID", exact=False)
        hint = f"{PANEL} .widget-checkbox + .widget-html"
        report = {}
        for width in (600, 768, 968, 1280):
            page.set_viewport_size({"width": width, "height": 1000})
            page.locator(PANEL).scroll_into_view_if_needed()
            page.wait_for_timeout(400)  # one layout pass (and the toolbar's fold) after the resize
            start = page.evaluate(LAYOUT, PANEL)
            seen = [("start", start)]
            # Typing: each hint in turn, then none; nothing below the field moves.
            for text, says in (("6f1c2a4e", "not a UUID yet"),
                               ("not an id at all!", "32 hex digits"),
                               (cup.process_id, "valid ID"), ("", "")):
                field.fill(text)
                page.wait_for_function(
                    "([sel, says]) => says ? document.querySelector(sel).textContent.includes(says)"
                    " : document.querySelector(sel).textContent.trim() === ''",
                    arg=[hint, says], timeout=10_000)
                seen.append((f"typed {text!r}", page.evaluate(LAYOUT, PANEL)))
            long_hint = page.locator(hint).locator("small").first
            field.fill("not an id at all!")
            page.wait_for_function("(sel) => document.querySelector(sel).textContent.includes('hex')",
                                   arg=hint)
            assert "32 hex digits" in (long_hint.get_attribute("title") or "")
            # Every mode of the comparison, by its button or (folded) its drop-down.
            modes = page.evaluate(
                f"() => [...document.querySelectorAll('{PANEL} .tnb-mode-select option')]"
                ".map((o) => o.value)")
            assert len(modes) >= 5
            for mode in modes:
                button = page.locator(f"{PANEL} button[data-mode='{mode}']")
                if button.is_visible():
                    button.click()
                else:
                    page.locator(f"{PANEL} select.tnb-mode-select").select_option(mode)
                page.wait_for_function(
                    "([sel, mode]) => document.querySelector(sel + ' .tnb-compare')"
                    ".dataset.mode === mode", arg=[PANEL, mode])
                page.wait_for_timeout(100)
                seen.append((f"mode {mode}", page.evaluate(LAYOUT, PANEL)))
            screenshot(page.locator(PANEL), f"panel-lab-{width}.png")
            for what, layout in seen:
                assert all(layout["rows"]) and layout["toolbar"] and layout["toolbarFits"], \
                    (width, what, layout)
                assert layout["canvasTop"] == start["canvasTop"], (width, what, layout, start)
                assert layout["rowHeights"] == start["rowHeights"], (width, what, layout, start)
            history = page.evaluate(HISTORY, PANEL)
            assert history["text"] == f"{cup.name}.jpg  ·  {cup.process_id}", history
            assert history["title"] == history["text"], history
            report[width] = {"fold": start["fold"], "panel": start["width"], "history": history}
            # The whole History entry shows from 600 px up, not only in its tooltip.
            assert history["whole"], (width, history)
        print(report)

        # A failed process shows its input alone: at its natural size (150×100),
        # never stretched to the width of the line above it (the magic's) or of the cell.
        failed = DEMO_JOBS[4]
        assert failed.status == "Failed"
        field.fill(failed.process_id)
        field.press("Enter")
        cells = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell"
        for where in (f"{PANEL} img", f"{cells}:nth-child(4) .jp-OutputArea img"):
            image = page.locator(where).first
            image.wait_for(timeout=60_000)
            page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                                   arg=image.element_handle())
            size = page.evaluate("""(img) => {
                const r = img.getBoundingClientRect();
                const area = img.closest('.jp-OutputArea-output').getBoundingClientRect();
                return {w: r.width, h: r.height, nw: img.naturalWidth, nh: img.naturalHeight,
                        cell: area.width};
            }""", image.element_handle())
            assert (size["nw"], size["nh"]) == (150, 100), (where, size)
            assert (size["w"], size["h"]) == (150, 100), (where, size)
            assert size["cell"] > 1000, (where, size)
        assert "failed" in page.locator(cells).nth(3).locator(".jp-OutputArea").inner_text()
        screenshot(page.locator(cells).nth(3), "failed-process-input.png")
        assert own_errors(errors) == []
