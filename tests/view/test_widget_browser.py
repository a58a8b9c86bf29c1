"""CompareView in a real Chromium, in a real JupyterLab 4 and Notebook 7.

One server for the module; the notebook is written here.  Assertions read the
canvas back, so they see what the user sees.  The images:

* input (A): 512×384 solid ``RED``; it lies on the output grid at 2×;
* output (B): 1024×768 solid ``BLUE`` with a 1-px black/white checkerboard in
  ``CHECKER`` (output pixels).  With ``preview_size=256`` the preview blurs the
  checkerboard to grey, so exact black and white at 100 % can only come from
  full-resolution tiles.

A long printed output follows the widget, so the page can scroll past it.
The pure view geometry (``static/geometry.js``) is tested in a blank page,
with no server.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import (
    ARTIFACTS,
    REPO,
    canvas_pixel,
    current_panel,
    hide_left_area,
    jupyter_server,
    launch_chromium,
    new_page,
    open_notebook,
    require_chromium,
    run_all,
    run_code,
    screenshot,
    wait_for_pixel,
    write_notebook,
)
from PIL import Image

from topaz_nb.view.modes import BLEND_DEFAULT, DIFF_GAIN, MAX_ZOOM, TILE_PX

pytestmark = pytest.mark.browser

RED = (220, 40, 30)
BLUE = (30, 60, 200)
CHECKER = (600, 100, 1000, 400)  # x0, y0, x1, y1 in output pixels
# The notebook shown now (JupyterLab keeps earlier ones open in hidden tabs).
ROOT = ".jp-NotebookPanel:not(.lm-mod-hidden) .tnb-compare"
CANVAS = f"{ROOT} canvas.tnb-canvas"
PAGE_CANVAS = ".tnb-compare canvas.tnb-canvas"  # in a page saved by save_html

SETUP = f"""
import numpy as np
from topaz_nb.widget import CompareView

A = np.zeros((384, 512, 3), np.uint8)
A[:] = {RED}
B = np.zeros((768, 1024, 3), np.uint8)
B[:] = {BLUE}
x0, y0, x1, y1 = {CHECKER}
yy, xx = np.mgrid[y0:y1, x0:x1]
B[y0:y1, x0:x1] = (((xx + yy) % 2) * 255).astype(np.uint8)[..., None]
view = CompareView(A, B, preview_size=256)
view
"""

FILLER = """print("\\n".join(f"line {i}" for i in range(150)))"""

PHOTO = """
from PIL import Image
from topaz_nb.widget import CompareView

photo = Image.open({path!r}).convert("RGB")
small = photo.resize((photo.width // 4, photo.height // 4), Image.Resampling.BILINEAR)
view = CompareView(small, photo, height=560, position=0.5, input_filter="nearest")
view
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    require_chromium()
    root = tmp_path_factory.mktemp("notebooks")
    write_notebook(root / "NB.ipynb", [SETUP, FILLER])
    write_notebook(root / "NB7.ipynb", [SETUP])
    data = REPO / "topaz_nb" / "sandbox" / "data" / "astronaut.jpg"
    if data.exists():
        write_notebook(root / "photo.ipynb", [PHOTO.format(path=str(data))])
    # Every cell stays attached, so the widget stays measurable after new cells.
    settings = {"@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
                "@jupyterlab/apputils-extension:notification": {"fetchNews": "false"}}
    with jupyter_server(root, app="lab", lab_settings=settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One Chromium for the module: the notebook page and the blank geometry page."""
    require_chromium()
    with launch_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def browser(server: Any, chromium: Any) -> Iterator[Any]:
    page = new_page(chromium)
    errors: list[str] = []
    console: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    page.errors = errors  # type: ignore[attr-defined]
    yield page
    page.context.close()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "widget-browser-console.log").write_text(
        "\n".join(console + [f"pageerror: {e}" for e in errors]) + "\n")


@pytest.fixture(scope="module")
def lab(server: Any, browser: Any) -> Any:
    """JupyterLab with NB.ipynb run once: ``view`` lives in its kernel."""
    open_notebook(browser, server, "NB.ipynb", ui="lab")
    run_all(browser)
    browser.wait_for_selector(CANVAS, timeout=60_000)
    return browser


def _geometry(page: Any, root: str = ROOT) -> dict[str, float]:
    """The canvas's box on the page and the fitted image's box inside it (CSS px)."""
    page.locator(root).first.scroll_into_view_if_needed()
    box = page.locator(f"{root} canvas").first.bounding_box()
    assert box is not None
    w, h = box["width"], box["height"]
    z = min(w / 1024, h / 768)
    return {"left": box["x"], "top": box["y"], "w": w, "h": h, "z": z,
            "img_x": (w - 1024 * z) / 2, "img_y": (h - 768 * z) / 2}


def _at(g: dict[str, float], ox: float, oy: float) -> tuple[float, float]:
    """Canvas CSS position of output pixel (ox, oy) while fitted."""
    return g["img_x"] + ox * g["z"], g["img_y"] + oy * g["z"]


def _reset(page: Any, **traits: Any) -> dict[str, float]:
    settings = {"mode": "swipe", "orientation": "vertical", "position": 0.5, "zoom": 0.0,
                "showing": "output", **traits}
    code = "with view.hold_sync():\n" + "".join(
        f"    view.{k} = {v!r}\n" for k, v in settings.items())
    run_code(page, code)
    page.wait_for_function(
        "([root, mode]) => document.querySelector(root).dataset.mode === mode",
        arg=[ROOT, settings["mode"]])
    return _geometry(page)


def _kernel_value(page: Any, expr: str, expected: str | None = None) -> str:
    """``repr(expr)`` in the kernel, once it equals ``expected`` (or after 10 s).

    Updates from the page reach the kernel a little after the gesture (they
    are throttled), so this asks again until they have arrived.  Each attempt
    is an ordinary cell: an awaiting cell would make the kernel handle comm
    messages concurrently without the busy/idle status ipywidgets waits for.
    """
    deadline = time.monotonic() + 10
    while True:
        value = run_code(page, f"print(repr({expr}))")
        if expected is None or value == expected or time.monotonic() > deadline:
            return value


def test_swipe_shows_input_left_and_output_right(lab: Any) -> None:
    g = _reset(lab)
    left = _at(g, 200, 650)
    right = _at(g, 800, 650)
    wait_for_pixel(lab, CANVAS, *left, RED)
    wait_for_pixel(lab, CANVAS, *right, BLUE)
    labels = lab.locator(f"{ROOT} .tnb-label").all_inner_texts()
    assert labels[:2] == ["Input 512×384", "Output 1024×768 (2.0×)"]
    screenshot(lab.locator(ROOT).first, "widget-swipe-synthetic.png")
    assert not lab.errors


def test_dragging_the_divider_moves_the_split_and_syncs_position(lab: Any) -> None:
    g = _reset(lab)
    probe = (g["w"] * 0.35, _at(g, 0, 650)[1])
    wait_for_pixel(lab, CANVAS, *probe, RED)  # left of the divider: input
    y = g["top"] + g["h"] / 2
    lab.mouse.move(g["left"] + g["w"] / 2, y)
    lab.mouse.down()
    lab.mouse.move(g["left"] + g["w"] * 0.3, y, steps=8)
    lab.mouse.move(g["left"] + g["w"] * 0.25, y, steps=4)
    lab.mouse.up()
    wait_for_pixel(lab, CANVAS, *probe, BLUE)  # now right of it: output
    value = _kernel_value(lab, "round(view.position, 2)", "0.25")
    assert float(value) == pytest.approx(0.25, abs=0.01)


def test_space_in_toggle_mode_switches_the_images_and_syncs(lab: Any) -> None:
    g = _reset(lab, mode="toggle")
    probe = _at(g, 800, 650)
    wait_for_pixel(lab, CANVAS, *probe, BLUE)
    lab.focus(ROOT)
    lab.keyboard.press(" ")
    wait_for_pixel(lab, CANVAS, *probe, RED)
    lab.keyboard.press(" ")
    wait_for_pixel(lab, CANVAS, *probe, BLUE)
    lab.keyboard.press(" ")
    wait_for_pixel(lab, CANVAS, *probe, RED)
    expected = "('toggle', 'input')"
    assert _kernel_value(lab, "(view.mode, view.showing)", expected) == expected


def test_space_in_swipe_mode_shows_b_alone_then_a_and_keeps_the_mode(lab: Any) -> None:
    g = _reset(lab)
    left, right = _at(g, 200, 650), _at(g, 800, 650)
    wait_for_pixel(lab, CANVAS, *left, RED)
    wait_for_pixel(lab, CANVAS, *right, BLUE)
    lab.focus(ROOT)
    lab.keyboard.press(" ")  # B (the output) alone, on both sides of where the divider was
    wait_for_pixel(lab, CANVAS, *left, BLUE)
    wait_for_pixel(lab, CANVAS, *right, BLUE)
    assert lab.locator(f"{ROOT} .tnb-divider").first.is_hidden()
    lab.keyboard.press(" ")  # then A alone
    wait_for_pixel(lab, CANVAS, *left, RED)
    wait_for_pixel(lab, CANVAS, *right, RED)
    screenshot(lab.locator(ROOT).first, "widget-swipe-a-alone.png")
    lab.keyboard.press("Escape")  # back to the swipe itself
    wait_for_pixel(lab, CANVAS, *left, RED)
    wait_for_pixel(lab, CANVAS, *right, BLUE)
    assert lab.evaluate("(root) => document.querySelector(root).dataset.mode", ROOT) == "swipe"
    assert _kernel_value(lab, "view.mode") == "'swipe'"


def test_keys_wheel_and_drag_navigate_and_sync(lab: Any) -> None:
    g = _reset(lab)
    lab.focus(ROOT)
    focused = lab.evaluate("(root) => document.activeElement === document.querySelector(root)"
                           " || document.querySelector(root).contains(document.activeElement)",
                           ROOT)
    assert focused
    lab.keyboard.press("ArrowRight")
    lab.keyboard.press("ArrowRight")
    assert _kernel_value(lab, "round(view.position, 2)", "0.54") == "0.54"
    lab.focus(ROOT)  # running a cell to read the kernel moved the focus away
    lab.keyboard.press("Shift+ArrowLeft")
    assert _kernel_value(lab, "round(view.position, 2)", "0.44") == "0.44"
    lab.focus(ROOT)
    lab.keyboard.press("m")
    assert _kernel_value(lab, "view.mode", "'side-by-side'") == "'side-by-side'"
    lab.focus(ROOT)
    lab.keyboard.press("m")
    assert _kernel_value(lab, "view.mode", "'blend'") == "'blend'"

    # With focus, the wheel zooms about the pointer: the output pixel under it stays put.
    g = _reset(lab)
    lab.focus(ROOT)
    px, py = _at(g, 800, 650)
    lab.mouse.move(g["left"] + px, g["top"] + py)
    for _ in range(3):
        lab.mouse.wheel(0, -120)
    # Three notches of 120 px zoom by e^(3 · 120 · 0.0015) in all.
    expected = round(g["z"] * math.exp(3 * 120 * 0.0015), 2)
    assert _kernel_value(lab, "round(view.zoom, 2)", str(expected)) == str(expected)
    state = _kernel_value(lab, "(view.zoom, *view.center)")
    zoom, cx, cy = (float(v) for v in state.strip("()").split(","))
    under_x = cx + (px - g["w"] / 2) / zoom
    under_y = cy + (py - g["h"] / 2) / zoom
    assert under_x == pytest.approx(800, abs=6) and under_y == pytest.approx(650, abs=6)

    # Dragging away from the divider pans: the centre moves against the drag.
    # (Zoomed in near the right edge, so drag rightwards: there is room that way.)
    g = _geometry(lab)  # reading the kernel ran cells and scrolled: find the widget again
    start = (g["left"] + g["w"] * 0.6, g["top"] + g["h"] * 0.6)
    lab.mouse.move(*start)
    lab.mouse.down()
    lab.mouse.move(start[0] + 100, start[1], steps=10)
    lab.mouse.up()
    moved = _kernel_value(lab, "round(view.center[0])", str(round(cx - 100 / zoom)))
    assert float(moved) == pytest.approx(cx - 100 / zoom, abs=3)

    lab.focus(ROOT)
    lab.keyboard.press("0")
    assert _kernel_value(lab, "view.zoom", "0.0") == "0.0"


def test_view_is_driven_from_python(lab: Any) -> None:
    g = _reset(lab, mode="toggle", showing="output")
    centre = (g["w"] / 2, g["h"] / 2)
    run_code(lab, "view.zoom = 1.0\nview.center = (800.5, 250.5)")
    # At 100 % the pixel at the centre is a native checkerboard pixel, exactly black or white.
    seen = None
    for colour in ((0, 0, 0), (255, 255, 255)):
        try:
            seen = wait_for_pixel(lab, CANVAS, *centre, colour, tol=2, timeout=8)
            break
        except AssertionError:
            continue
    assert seen is not None, canvas_pixel(lab, CANVAS, *centre)
    run_code(lab, "view.center = (300, 650)")
    wait_for_pixel(lab, CANVAS, *centre, BLUE)
    run_code(lab, "view.showing = 'input'")
    wait_for_pixel(lab, CANVAS, *centre, RED)


def test_side_by_side_blend_difference_and_toggle(lab: Any) -> None:
    g = _reset(lab)
    lab.locator(f"{ROOT} button[data-mode='side-by-side']").click()
    w, h = g["w"], g["h"]
    pane = (w - 4) / 2
    z = min(pane / 1024, h / 768)
    top = (h - 768 * z) / 2
    wait_for_pixel(lab, CANVAS, pane / 2 - 100 * z, top + 650 * z, RED)
    wait_for_pixel(lab, CANVAS, w - pane / 2 - 100 * z, top + 650 * z, BLUE)
    assert _kernel_value(lab, "view.mode", "'side-by-side'") == "'side-by-side'"

    g = _reset(lab, mode="blend", position=0.5)
    probe = _at(g, 300, 650)
    mix = tuple(round((a + b) / 2) for a, b in zip(RED, BLUE))
    wait_for_pixel(lab, CANVAS, *probe, mix, tol=4)

    lab.focus(ROOT)
    lab.keyboard.press("m")  # blend → difference
    diff = tuple(min(255, abs(a - b) * DIFF_GAIN) for a, b in zip(RED, BLUE))
    wait_for_pixel(lab, CANVAS, *probe, diff, tol=1)
    assert diff[1] == 80  # the gain shows unclamped in green: |60 − 40| × 4
    label = lab.locator(f"{ROOT} .tnb-label").first.inner_text()
    assert label == f"|Output 1024×768 (2.0×) − Input 512×384| × {DIFF_GAIN}"
    screenshot(lab.locator(ROOT).first, "widget-difference.png")

    lab.keyboard.press("m")  # difference → toggle (showing the output)
    wait_for_pixel(lab, CANVAS, *probe, BLUE)
    wait_for_pixel(lab, CANVAS, *_at(g, 800, 650), BLUE)
    lab.locator(CANVAS).first.click(position={"x": probe[0], "y": probe[1]})
    wait_for_pixel(lab, CANVAS, *probe, RED)
    expected = "('toggle', 'input')"
    assert _kernel_value(lab, "(view.mode, view.showing)", expected) == expected


def test_one_to_one_zoom_draws_native_tiles(lab: Any) -> None:
    # Half size, centred in the checkerboard, the divider well to the left.
    g = _reset(lab, position=0.2, zoom=0.5, center=(800.0, 250.0))
    sample_x, sample_y = g["w"] / 2, g["h"] / 2
    lab.wait_for_function(
        "(root) => document.querySelector(root + ' .tnb-zoom').textContent === '50%'", arg=ROOT)
    # Not yet native: the checkerboard is averaged to grey.
    grey = wait_for_pixel(lab, CANVAS, sample_x, sample_y, (128, 128, 128), tol=40)
    assert 40 < grey[0] < 215
    lab.focus(ROOT)
    lab.keyboard.press("1")
    lab.wait_for_function(
        "(root) => document.querySelector(root + ' .tnb-zoom').textContent === '100%'",
        arg=ROOT)
    lab.wait_for_function(
        """([sel, x, y]) => {
            const c = document.querySelector(sel);
            const d = c.getContext('2d').getImageData(x, y, 8, 8).data;
            for (let i = 0; i < d.length; i += 4) {
                if (!(d[i] < 8 || d[i] > 247)) return false;
            }
            return true;
        }""", arg=[CANVAS, round(sample_x), round(sample_y)], timeout=20_000)
    block = lab.evaluate(
        """([sel, x, y]) => Array.from(document.querySelector(sel).getContext('2d')
                .getImageData(x, y, 6, 6).data)""", [CANVAS, round(sample_x), round(sample_y)])
    values = [block[i] for i in range(0, len(block), 4)]
    grid = [values[r * 6:(r + 1) * 6] for r in range(6)]
    # Exactly the full-resolution pattern: 0/255 alternating along rows and columns.
    for r in range(6):
        for c in range(6):
            assert grid[r][c] in (0, 255)
            if c:
                assert grid[r][c] != grid[r][c - 1]
            if r:
                assert grid[r][c] != grid[r - 1][c]
    assert _kernel_value(lab, "view.zoom", "1.0") == "1.0"
    screenshot(lab.locator(ROOT).first, "widget-100-percent.png")
    assert not lab.errors


# ---- wheel, focus, keys, help ---------------------------------------------------------

def _widget_top(page: Any) -> float:
    return float(page.evaluate("(root) => document.querySelector(root).getBoundingClientRect().top",
                               ROOT))


def _blur(page: Any) -> None:
    page.evaluate("() => document.activeElement && document.activeElement.blur()")


def test_wheel_scrolls_the_page_unless_focused_or_ctrl_held(lab: Any) -> None:
    g = _reset(lab)
    _blur(lab)
    assert not lab.evaluate(
        "(root) => document.querySelector(root).contains(document.activeElement)", ROOT)
    top = _widget_top(lab)
    lab.mouse.move(g["left"] + g["w"] * 0.8, g["top"] + g["h"] * 0.5)
    lab.mouse.wheel(0, 120)
    # The page scrolled (the widget moved up) and the view did not zoom.
    lab.wait_for_function("([root, top]) => document.querySelector(root)"
                          ".getBoundingClientRect().top < top - 20", arg=[ROOT, top])
    lab.wait_for_selector(f"{ROOT} .tnb-hint.tnb-shown", state="attached")
    assert lab.locator(f"{ROOT} .tnb-hint").first.inner_text() == "Ctrl + scroll to zoom"
    screenshot(lab.locator(ROOT).first, "widget-wheel-hint.png")
    assert lab.locator(f"{ROOT} .tnb-zoom").first.inner_text().startswith("fit")
    assert _kernel_value(lab, "view.zoom") == "0.0"
    # The hint fades by itself.
    lab.wait_for_selector(f"{ROOT} .tnb-hint.tnb-shown", state="detached", timeout=10_000)

    # After a click into the view, the wheel zooms and the page stays.
    g = _geometry(lab)
    lab.mouse.click(g["left"] + g["w"] * 0.8, g["top"] + g["h"] * 0.5)
    top = _widget_top(lab)
    lab.mouse.wheel(0, -120)
    lab.wait_for_function(
        "(root) => !document.querySelector(root + ' .tnb-zoom').textContent.startsWith('fit')",
        arg=ROOT)
    assert _widget_top(lab) == pytest.approx(top, abs=1)
    expected = round(g["z"] * math.exp(120 * 0.0015), 3)
    assert _kernel_value(lab, "round(view.zoom, 3)", str(expected)) == str(expected)

    # Ctrl + wheel (also what a trackpad pinch sends) zooms without focus.
    g = _reset(lab)
    _blur(lab)
    lab.mouse.move(g["left"] + g["w"] * 0.8, g["top"] + g["h"] * 0.5)
    top = _widget_top(lab)
    lab.keyboard.down("Control")
    lab.mouse.wheel(0, -120)
    lab.keyboard.up("Control")
    lab.wait_for_function(
        "(root) => !document.querySelector(root + ' .tnb-zoom').textContent.startsWith('fit')",
        arg=ROOT)
    assert _widget_top(lab) == pytest.approx(top, abs=1)  # the page did not scroll
    assert _kernel_value(lab, "round(view.zoom, 3)", str(expected)) == str(expected)
    assert not lab.errors


def test_blend_opens_at_half_opacity_whatever_the_divider(lab: Any) -> None:
    marker = "tnb-fresh-blend"
    run_code(lab, "fresh = CompareView(A, B, preview_size=256, mode='blend', position=0.1)\n"
                  f"fresh.add_class({marker!r})\n"
                  "display(fresh)\n"
                  "print(fresh.opacity)")
    root = f".jp-NotebookPanel:not(.lm-mod-hidden) .{marker} .tnb-compare"
    canvas = f"{root} canvas.tnb-canvas"
    lab.wait_for_selector(canvas, timeout=30_000)
    g = _geometry(lab, root)
    mix = tuple(round(a * (1 - BLEND_DEFAULT) + b * BLEND_DEFAULT) for a, b in zip(RED, BLUE))
    assert BLEND_DEFAULT == 0.5 and mix == (125, 50, 115)
    wait_for_pixel(lab, canvas, *_at(g, 300, 650), mix, tol=2)
    wait_for_pixel(lab, canvas, *_at(g, 900, 650), mix, tol=2)
    labels = [" ".join(t.split()) for t in lab.locator(f"{root} .tnb-label").all_inner_texts()]
    assert labels[:2] == ["Input 512×384 50%", "Output 1024×768 (2.0×) 50%"]
    screenshot(lab.locator(root).first, "widget-blend-default.png")
    run_code(lab, "fresh.close()")


def test_question_mark_shows_the_key_help(lab: Any) -> None:
    _reset(lab)
    help_box = lab.locator(f"{ROOT} .tnb-help").first
    assert help_box.is_hidden()
    lab.focus(ROOT)
    lab.keyboard.press("?")
    help_box.wait_for(state="visible")
    text = help_box.inner_text()
    assert "Ctrl + wheel" in text and "in toggle mode, switch images" in text
    screenshot(lab.locator(ROOT).first, "widget-help.png")
    lab.keyboard.press("?")
    help_box.wait_for(state="hidden")
    assert _kernel_value(lab, "view.mode") == "'swipe'"  # '?' is not a mode key


def test_tab_reaches_the_labelled_mode_buttons(lab: Any) -> None:
    _reset(lab)
    lab.focus(ROOT)
    lab.keyboard.press("Tab")
    focused = lab.evaluate("""() => {
        const a = document.activeElement;
        const group = a.closest('[role=group], [role=radiogroup]');
        return [a.dataset.mode, group && group.getAttribute('aria-label')];
    }""")
    assert focused == ["swipe", "Comparison mode"]
    lab.keyboard.press("Tab")
    lab.keyboard.press("Enter")  # on "Side by side"
    lab.wait_for_function("(root) => document.querySelector(root).dataset.mode === 'side-by-side'",
                          arg=ROOT)
    pressed = lab.locator(f"{ROOT} button[aria-pressed='true']").first.get_attribute("data-mode")
    assert pressed == "side-by-side"
    live = lab.locator(f"{ROOT} [aria-live='polite']").first
    assert live.locator(".tnb-zoom").count() == 1 and live.inner_text().startswith("fit")
    screenshot(lab.locator(ROOT).first, "widget-tab-focus.png")
    assert _kernel_value(lab, "view.mode", "'side-by-side'") == "'side-by-side'"


def test_changes_from_python_are_not_echoed(lab: Any) -> None:
    _reset(lab)
    # Record every state update the page sends from now on.
    run_code(lab, """
sent = []
def _spy(msg, _handle=view._handle_msg):
    data = msg["content"]["data"]
    if data.get("method") == "update":
        sent.append(sorted(data.get("state", {})))
    _handle(msg)
view.comm.on_msg(_spy)
""")
    run_code(lab, "view.zoom = 1.0")
    lab.wait_for_function(
        "(root) => document.querySelector(root + ' .tnb-zoom').textContent === '100%'", arg=ROOT)
    run_code(lab, "view.center = (700.0, 300.0)\nview.mode = 'blend'")
    lab.wait_for_function("(root) => document.querySelector(root).dataset.mode === 'blend'",
                          arg=ROOT)
    # A change made in the page sends that trait alone.
    lab.focus(ROOT)
    lab.keyboard.press("ArrowRight")  # blend: the opacity
    assert _kernel_value(lab, "round(view.opacity, 2)", "0.52") == "0.52"
    assert run_code(lab, "print(sent)") == "[['opacity']]"
    run_code(lab, "view.comm.on_msg(view._handle_msg)\nview.opacity = 0.5")


def test_narrow_page_keeps_the_widget_inside(lab: Any) -> None:
    lab.set_viewport_size({"width": 820, "height": 900})
    try:
        _reset(lab)
        lab.locator(ROOT).first.scroll_into_view_if_needed()
        lab.wait_for_function(
            """(root) => { const r = document.querySelector(root).getBoundingClientRect();
                const c = document.querySelector(root + ' canvas').getBoundingClientRect();
                return Math.abs(c.width - r.width) < 2; }""",
            arg=ROOT)
        report = lab.evaluate("""(rootSel) => {
            const root = document.querySelector(rootSel);
            const box = root.getBoundingClientRect();
            const host = root.parentElement.getBoundingClientRect();
            const outside = [...root.querySelectorAll('.tnb-bar > *, .tnb-btn, .tnb-label')]
                .filter((e) => !e.hidden && e.getClientRects().length)
                .filter((e) => { const r = e.getBoundingClientRect();
                                 return r.right > box.right + 1 || r.left < box.left - 1; })
                .map((e) => e.className + ':' + e.textContent);
            return {outside, rootW: box.width, hostW: host.width,
                    scroll: root.scrollWidth - root.clientWidth};
        }""", ROOT)
        assert report["outside"] == [], report
        assert report["scroll"] <= 0, report
        assert report["rootW"] <= report["hostW"] + 1, report
        assert report["rootW"] < 820
        screenshot(lab.locator(ROOT).first, "widget-narrow.png")
    finally:
        lab.set_viewport_size({"width": 1280, "height": 900})


TOOLBAR = """(root) => {
    const view = document.querySelector(root);
    const bar = view.querySelector('.tnb-bar');
    const shown = [...bar.querySelectorAll('button, select, input')].filter((e) =>
        e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden');
    const boxes = shown.map((e) => e.getBoundingClientRect());
    return {
        oneRow: Math.max(...boxes.map((r) => r.top)) < Math.min(...boxes.map((r) => r.bottom)),
        inside: boxes.every((r) => r.left >= bar.getBoundingClientRect().left - 1
                                   && r.right <= bar.getBoundingClientRect().right + 1),
        shown: shown.map((e) => e.dataset.mode || e.className),
        fold: view.dataset.fold,
        canvasTop: view.querySelector('canvas').getBoundingClientRect().top
                   - view.getBoundingClientRect().top,
        barHeight: bar.getBoundingClientRect().height,
    };
}"""


@pytest.mark.parametrize("width", [600, 768, 968, 1280])
def test_the_toolbar_is_one_row_in_every_mode_and_never_moves_the_canvas(
        lab: Any, width: int) -> None:
    hide_left_area(lab)
    lab.set_viewport_size({"width": width, "height": 900})
    try:
        _reset(lab)
        lab.wait_for_timeout(300)  # one layout pass (and the toolbar's fold) after the resize
        first = lab.evaluate(TOOLBAR, ROOT)
        seen = []
        for mode in ("swipe", "side-by-side", "blend", "difference", "toggle", "fidelity",
                     "swipe"):
            button = lab.locator(f"{ROOT} button[data-mode='{mode}']")
            if button.is_visible():
                button.click()
            else:
                lab.locator(f"{ROOT} select.tnb-mode-select").select_option(mode)
            lab.wait_for_function(
                "([root, mode]) => document.querySelector(root).dataset.mode === mode",
                arg=[ROOT, mode])
            seen.append((mode, lab.evaluate(TOOLBAR, ROOT)))
        screenshot(lab.locator(ROOT).first, f"widget-toolbar-{width}.png")
        for mode, layout in seen:
            assert layout["oneRow"] and layout["inside"], (width, mode, layout)
            assert layout["canvasTop"] == first["canvasTop"], (width, mode, layout, first)
            assert layout["barHeight"] == first["barHeight"], (width, mode, layout, first)
            assert layout["fold"] == first["fold"], (width, mode, layout, first)
        # Folded or not, every mode can be reached from the toolbar.
        if width >= 1280:
            assert first["fold"] == "0" and "fidelity" in first["shown"], first
        else:
            assert first["shown"].count("tnb-mode-select") == 1 or "fidelity" in first["shown"]
        if "tnb-mode-select" in first["shown"]:
            # The drop-down keeps its arrow keys: they pick the next mode, the divider stays.
            lab.locator(f"{ROOT} select.tnb-mode-select").focus()
            lab.keyboard.press("ArrowDown")
            lab.wait_for_function(
                "(root) => document.querySelector(root).dataset.mode === 'side-by-side'",
                arg=ROOT)
            assert _kernel_value(lab, "(view.mode, view.position)", "('side-by-side', 0.5)") \
                == "('side-by-side', 0.5)"
    finally:
        lab.set_viewport_size({"width": 1280, "height": 900})


def _near_source(img: Image.Image, sx: float, sy: float, seen: tuple[int, ...],
                 tol: int = 6) -> bool:
    """Whether ``seen`` is, within ``tol``, one of the pixels of ``img`` around ``(sx, sy)``.

    The canvas enlarges without smoothing (the input with ``input_filter="nearest"``),
    so a canvas pixel is exactly one source pixel; which neighbour it is depends on
    rounding at the edges.
    """
    x, y = math.floor(sx), math.floor(sy)
    for yy in range(max(0, y - 1), min(img.height, y + 2)):
        for xx in range(max(0, x - 1), min(img.width, x + 2)):
            if all(abs(int(a) - int(b)) <= tol for a, b in zip(img.getpixel((xx, yy)), seen)):
                return True
    return False


def test_photo_screenshot(server: Any, browser: Any) -> None:
    path = REPO / "topaz_nb" / "sandbox" / "data" / "astronaut.jpg"
    if not (server.root / "photo.ipynb").exists():
        pytest.skip("no sandbox demo photos in topaz_nb/sandbox/data/")
    open_notebook(browser, server, "photo.ipynb", ui="lab")
    hide_left_area(browser)
    run_all(browser)
    root = f"{current_panel(browser)} .tnb-compare"
    canvas = f"{root} canvas"
    browser.wait_for_selector(canvas, timeout=60_000)
    browser.locator(root).first.scroll_into_view_if_needed()
    # The notebook's own images: the output is the photo, the input a quarter of it.
    photo = Image.open(path).convert("RGB")
    small = photo.resize((photo.width // 4, photo.height // 4), Image.Resampling.BILINEAR)
    width, height = browser.evaluate(
        "(sel) => { const c = document.querySelector(sel); return [c.width, c.height]; }", canvas)
    z = min(width / photo.width, height / photo.height)
    assert z >= 1  # enlarged: drawn without smoothing, pixel for pixel
    ox = round(width / 2 - photo.width / 2 * z)
    oy = round(height / 2 - photo.height / 2 * z)
    browser.wait_for_function(  # both previews decoded and drawn
        """([sel, w, h]) => { const ctx = document.querySelector(sel).getContext('2d');
            return ctx.getImageData(Math.floor(w * 0.4), h >> 1, 1, 1).data[3] === 255
                && ctx.getImageData(Math.floor(w * 0.6), h >> 1, 1, 1).data[3] === 255; }""",
        arg=[canvas, width, height])
    # Left of the divider (input, enlarged 4× onto the grid), right of it (output).
    for fx, img, scale in ((0.40, small, 4), (0.45, small, 4), (0.55, photo, 1), (0.62, photo, 1)):
        for fy in (0.3, 0.5, 0.7):
            x, y = math.floor(width * fx), math.floor(height * fy)
            sx, sy = (x + 0.5 - ox) / z / scale, (y + 0.5 - oy) / z / scale
            seen = browser.evaluate(
                """([sel, x, y]) => Array.from(document.querySelector(sel).getContext('2d')
                        .getImageData(x, y, 1, 1).data)""", [canvas, x, y])
            assert seen[3] == 255
            assert _near_source(img, sx, sy, tuple(seen[:3])), (fx, fy, seen[:3], sx, sy)
    shot = screenshot(browser.locator(root).first, "widget-swipe.png")
    assert shot.stat().st_size > 10_000


def test_notebook7_renders_both_images(server: Any, browser: Any) -> None:
    open_notebook(browser, server, "NB7.ipynb", ui="notebook")
    assert re.search(r"/notebooks/NB7\.ipynb", browser.url)
    run_all(browser)
    root = f"{current_panel(browser)} .tnb-compare"
    canvas = f"{root} canvas"
    browser.wait_for_selector(canvas, timeout=60_000)
    g = _geometry(browser, root)
    wait_for_pixel(browser, canvas, *_at(g, 200, 650), RED)
    wait_for_pixel(browser, canvas, *_at(g, 800, 650), BLUE)
    screenshot(browser.locator(root).first, "widget-notebook7.png")


def test_saved_page_works_offline(tmp_path: Path, browser: Any) -> None:
    import numpy as np

    from topaz_nb.view.widget import CompareView

    a = np.zeros((48, 64, 3), np.uint8)
    a[:] = RED
    b = np.zeros((96, 128, 3), np.uint8)
    b[:] = BLUE
    path = CompareView(a, b).save_html(tmp_path / "page.html")
    browser.route("**/*", lambda route: route.abort()
                  if not route.request.url.startswith(("file:", "blob:", "data:"))
                  else route.continue_())
    try:
        browser.goto(path.as_uri())
        browser.wait_for_selector(PAGE_CANVAS)
        box = browser.locator(PAGE_CANVAS).first.bounding_box()
        assert box is not None
        w, h = box["width"], box["height"]
        z = min(w / 128, h / 96)
        x0, y0 = (w - 128 * z) / 2, (h - 96 * z) / 2
        wait_for_pixel(browser, PAGE_CANVAS, x0 + 20 * z, y0 + 80 * z, RED)
        wait_for_pixel(browser, PAGE_CANVAS, x0 + 110 * z, y0 + 80 * z, BLUE)
        browser.focus(".tnb-compare")
        browser.keyboard.press(" ")  # B alone, then A alone, without a kernel
        wait_for_pixel(browser, PAGE_CANVAS, x0 + 20 * z, y0 + 80 * z, BLUE)
        browser.keyboard.press(" ")
        wait_for_pixel(browser, PAGE_CANVAS, x0 + 110 * z, y0 + 80 * z, RED)
    finally:
        browser.unroute("**/*")


# ---- pure geometry, in a blank page ----------------------------------------------

@pytest.fixture(scope="module")
def blank(chromium: Any) -> Iterator[Any]:
    """A blank Chromium page with every front-end part but ``compare.js`` loaded as a script."""
    page = new_page(chromium)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_content("<!DOCTYPE html><title>geometry</title>")  # no server, no kernel
    static = REPO / "topaz_nb" / "view" / "static"
    for name in ("geometry.js", "tiles.js", "draw.js", "dom.js", "input.js"):
        page.add_script_tag(content=(static / name).read_text(encoding="utf-8"))
    assert errors == []
    yield page
    page.context.close()


def test_geometry_fit_centres_the_whole_output(blank: Any) -> None:
    tf = blank.evaluate(f"() => viewTransform({{x: 0, y: 0, w: 800, h: 500}},"
                        f" {{zoom: 0, center: [0, 0]}}, [1024, 768], {MAX_ZOOM})")
    z = 500 / 768
    assert tf["z"] == pytest.approx(z)
    assert tf["ox"] == round(400 - 512 * z) and tf["oy"] == 0
    # Fitting never enlarges beyond the maximum zoom.
    tiny = blank.evaluate(f"() => fitZoom({{x: 0, y: 0, w: 4000, h: 4000}}, [4, 4], {MAX_ZOOM})")
    assert tiny == MAX_ZOOM
    sbs = blank.evaluate("() => panesFor('side-by-side', 1004, 600, 4)")
    assert sbs == [{"x": 0, "y": 0, "w": 500, "h": 600}, {"x": 504, "y": 0, "w": 500, "h": 600}]


@pytest.mark.parametrize(("start", "point", "new_zoom"), [
    ({"zoom": 0, "center": [0, 0]}, (100, 80), 1.0),
    ({"zoom": 2.0, "center": [300, 200]}, (700, 20), 8.0),
    ({"zoom": 4.0, "center": [10, 700]}, (400, 250), 0.5),
])
def test_geometry_zoom_about_a_point_keeps_that_point_fixed(
        blank: Any, start: dict[str, Any], point: tuple[float, float], new_zoom: float) -> None:
    before, after, view = blank.evaluate(
        """([start, point, zoom, maxZoom]) => {
            const pane = {x: 0, y: 0, w: 800, h: 500}, out = [1024, 768];
            const under = toImage(viewTransform(pane, start, out, maxZoom), ...point);
            const view = zoomAbout(start, pane, out, ...point, zoom, maxZoom);
            const back = toScreen(viewTransform(pane, view, out, maxZoom), ...under);
            return [point, back, view];
        }""", [start, list(point), new_zoom, MAX_ZOOM])
    assert view["zoom"] == pytest.approx(new_zoom)
    # Within the one device pixel that rounding the origin may cost.
    assert after[0] == pytest.approx(before[0], abs=1)
    assert after[1] == pytest.approx(before[1], abs=1)


def test_geometry_zoom_is_clamped(blank: Any) -> None:
    zooms = blank.evaluate(
        f"""() => [1e6, 1e-6].map((z) => zoomAbout({{zoom: 0, center: [0, 0]}},
            {{x: 0, y: 0, w: 1024, h: 768}}, [1024, 768], 10, 10, z, {MAX_ZOOM}).zoom)""")
    assert zooms == [MAX_ZOOM, pytest.approx(1 / 8)]


def test_geometry_visible_tiles_nearest_the_middle_first(blank: Any) -> None:
    tiles = blank.evaluate(
        f"""() => visibleTiles([{{x: 0, y: 0, w: 1024, h: 512}}],
            {{zoom: 1, center: [1024, 512]}}, [4096, 2048], 1, {TILE_PX}, {MAX_ZOOM})""")
    # Output pixels 512..1536 × 256..768 are on screen: columns 1-2, rows 0-1.
    assert sorted((t["ix"], t["iy"]) for t in tiles) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert all(t["key"] == f"1/{t['ix']}/{t['iy']}" for t in tiles)
    assert [t["d"] for t in tiles] == sorted(t["d"] for t in tiles)
    # Fitted at a quarter: a level-¼ tile covers 2048 output px, so 2×1 tiles cover it all.
    level = blank.evaluate(f"() => tileLevel(fitZoom({{x: 0, y: 0, w: 1024, h: 512}},"
                           f" [4096, 2048], {MAX_ZOOM}))")
    assert level == 0.25
    fitted = blank.evaluate(
        f"""() => visibleTiles([{{x: 0, y: 0, w: 1024, h: 512}}], {{zoom: 0, center: [0, 0]}},
            [4096, 2048], 0.25, {TILE_PX}, {MAX_ZOOM}).map((t) => [t.ix, t.iy])""")
    assert sorted(fitted) == [[0, 0], [1, 0]]
    # Off the image: nothing to ask for.
    none = blank.evaluate(
        f"""() => visibleTiles([{{x: 0, y: 0, w: 100, h: 100}}], {{zoom: 1, center: [-500, -500]}},
            [4096, 2048], 1, {TILE_PX}, {MAX_ZOOM})""")
    assert none == []


def test_geometry_tile_level_is_a_power_of_two_up_to_native(blank: Any) -> None:
    levels = blank.evaluate("() => [0.1, 0.25, 0.3, 0.5, 0.9, 1, 3, 64].map(tileLevel)")
    assert levels == [0.125, 0.25, 0.5, 0.5, 1, 1, 1, 1]


@pytest.mark.parametrize(("current", "expected"), [
    (0.25, 1.0),   # a large image fitted small: up to 100 %
    (1.0, 1.0),    # already at 100 %
    (1.3, 1.3),    # a small image fitted at 130 %: stays at 130 %, never zooms out
    (5.0, 5.0),
    (1e6, MAX_ZOOM),
])
def test_geometry_a_region_click_never_zooms_out(blank: Any, current: float,
                                                 expected: float) -> None:
    view = blank.evaluate(f"(z) => regionView([40, 10, 20, 30], z, {MAX_ZOOM})", current)
    assert view["zoom"] == pytest.approx(expected)
    assert view["center"] == [50, 25]
