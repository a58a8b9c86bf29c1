"""CompareView in a real Chromium, in a real JupyterLab 4 and Notebook 7.

One server for the module; the notebook is written here.  Assertions read the
canvas back, so they see what the user sees.  The images:

* input (A): 512×384 solid ``RED``; it lies on the output grid at 2×;
* output (B): 1024×768 solid ``BLUE`` with a 1-px black/white checkerboard in
  ``CHECKER`` (output pixels).  With ``preview_size=256`` the preview blurs the
  checkerboard to grey, so exact black and white at 100 % can only come from
  full-resolution tiles.
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
    launch_browser,
    open_notebook,
    require_chromium,
    run_all,
    run_code,
    screenshot,
    wait_for_pixel,
    write_notebook,
)

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

PHOTO = """
from PIL import Image
from topaz_nb.widget import CompareView

photo = Image.open({path!r}).convert("RGB")
small = photo.resize((photo.width // 4, photo.height // 4), Image.Resampling.BILINEAR)
CompareView(small, photo, height=560, position=0.5)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    require_chromium()
    root = tmp_path_factory.mktemp("notebooks")
    write_notebook(root / "NB.ipynb", [SETUP])
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
def browser(server: Any) -> Iterator[Any]:
    with launch_browser() as page:
        errors: list[str] = []
        console: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
        page.errors = errors  # type: ignore[attr-defined]
        yield page
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


def test_space_toggles_between_the_images(lab: Any) -> None:
    g = _reset(lab)
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

    # The wheel zooms about the pointer: the output pixel under it stays put.
    g = _reset(lab)
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
    diff = tuple(min(255, abs(a - b) * 4) for a, b in zip(RED, BLUE))
    wait_for_pixel(lab, CANVAS, *probe, diff, tol=6)
    assert diff[1] == 80  # the amplification shows in green: |60 − 40| × 4
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


def test_photo_screenshot(server: Any, browser: Any) -> None:
    if not (server.root / "photo.ipynb").exists():
        pytest.skip("no sandbox demo photos in topaz_nb/sandbox/data/")
    open_notebook(browser, server, "photo.ipynb", ui="lab")
    hide_left_area(browser)
    run_all(browser)
    root = f"{current_panel(browser)} .tnb-compare"
    canvas = f"{root} canvas"
    browser.wait_for_selector(canvas, timeout=60_000)
    g = _geometry(browser, root)
    # Both halves hold photo pixels, not the stage background.
    left = wait_for_pixel(browser, canvas, g["w"] * 0.45, g["h"] * 0.5, (128, 128, 128), tol=127)
    right = canvas_pixel(browser, canvas, g["w"] * 0.55, g["h"] * 0.5)
    assert left[3] == 255 and right[3] == 255
    path = screenshot(browser.locator(root).first, "widget-swipe.png")
    assert path.stat().st_size > 10_000


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

    from topaz_nb.widget import CompareView

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
        browser.keyboard.press(" ")
        wait_for_pixel(browser, PAGE_CANVAS, x0 + 110 * z, y0 + 80 * z, RED)
    finally:
        browser.unroute("**/*")
