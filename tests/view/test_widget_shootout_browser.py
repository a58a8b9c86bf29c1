"""CompareView's shoot-out in a real Chromium and JupyterLab 4: the grid, the
pair chosen by ``left``/``right``, the fidelity overlay (and its label where no
score can be computed) and the input filter.

One server for the module.  The images (output pixels are on a 512×384 grid):

* pane 0, the input: 128×96 ``RED`` with a 1-px black/white checkerboard in
  its bottom-left 32×32 (grid ``x < 128, y ≥ 256``);
* pane 1, "Model X": 512×384 solid ``BLUE``;
* pane 2, "Model Y": the input enlarged 4× exactly, with an invented
  ``YELLOW`` patch at grid ``PATCH``.

Assertions read the canvas back, so they see what the user sees.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from browser_support import (
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

from topaz_nb.imaging.fidelity import magma
from topaz_nb.view.composite import grid_shape

pytestmark = pytest.mark.browser

RED = (220, 40, 30)
BLUE = (30, 60, 200)
YELLOW = (230, 200, 40)
GRID = (512, 384)
PATCH = (256, 128, 384, 256)  # x0, y0, x1, y1 on the grid
ROOT = ".jp-NotebookPanel:not(.lm-mod-hidden) .tnb-compare"
CANVAS = f"{ROOT} canvas.tnb-canvas"

SETUP = f"""
import numpy as np
from topaz_nb.widget import CompareView

A = np.zeros((96, 128, 3), np.uint8)
A[:] = {RED}
yy, xx = np.mgrid[64:96, 0:32]
A[64:96, 0:32] = (((xx + yy) % 2) * 255).astype(np.uint8)[..., None]
X = np.zeros((384, 512, 3), np.uint8)
X[:] = {BLUE}
Y = A.repeat(4, axis=0).repeat(4, axis=1)
x0, y0, x1, y1 = {PATCH}
Y[y0:y1, x0:x1] = {YELLOW}
view = CompareView(A, X, Y, labels=["Input", "Model X", "Model Y"])
view
"""

PHOTO = """
from topaz_nb.sandbox._demo import SHOOTOUT_MODELS, shootout_bytes
from topaz_nb.widget import CompareView

source, outputs = shootout_bytes()
view = CompareView(source, *[outputs[m.name] for m in SHOOTOUT_MODELS], mode="grid",
                   labels=["Input"] + [m.model for m in SHOOTOUT_MODELS], height=460)
view
"""

UNCOVERED = """
uncovered = CompareView(np.full((2, 1000, 3), 200, np.uint8), np.full((1000, 2, 3), 60, np.uint8),
                        labels=["Input", "Model Z"], crop_to_fill=True, mode="fidelity")
display(uncovered)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    require_chromium()
    root = tmp_path_factory.mktemp("notebooks")
    write_notebook(root / "shootout.ipynb", [SETUP])
    write_notebook(root / "photo.ipynb", [PHOTO])
    settings = {"@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
                "@jupyterlab/apputils-extension:notification": {"fetchNews": "false"}}
    with jupyter_server(root, app="lab", lab_settings=settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def lab(server: Any) -> Iterator[Any]:
    with launch_chromium() as chromium:
        page = new_page(chromium)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.errors = errors  # type: ignore[attr-defined]
        open_notebook(page, server, "shootout.ipynb", ui="lab")
        run_all(page)
        page.wait_for_selector(CANVAS, timeout=60_000)
        yield page
        page.context.close()


def _box(page: Any) -> dict[str, float]:
    page.locator(ROOT).first.scroll_into_view_if_needed()
    box = page.locator(CANVAS).first.bounding_box()
    assert box is not None
    return box


def _reset(page: Any, **traits: Any) -> dict[str, float]:
    settings = {"mode": "swipe", "position": 0.5, "zoom": 0.0, "left": 0, "right": 1,
                "opacity": 0.5, "input_filter": "smooth", "showing": "output", **traits}
    code = "with view.hold_sync():\n" + "".join(
        f"    view.{k} = {v!r}\n" for k, v in settings.items())
    run_code(page, code)
    page.wait_for_function(
        "([root, mode]) => document.querySelector(root).dataset.mode === mode",
        arg=[ROOT, settings["mode"]])
    return _box(page)


def _fitted(box: dict[str, float], pane: dict[str, float], gx: float, gy: float) -> tuple[float, float]:
    """Canvas CSS position of grid pixel (gx, gy) in a fitted pane {x, y, w, h}."""
    z = min(pane["w"] / GRID[0], pane["h"] / GRID[1])
    return (pane["x"] + (pane["w"] - GRID[0] * z) / 2 + gx * z,
            pane["y"] + (pane["h"] - GRID[1] * z) / 2 + gy * z)


def _grid_panes(box: dict[str, float], n: int = 3, gap: int = 4) -> list[dict[str, float]]:
    cols, rows = grid_shape(n, box["width"], box["height"], GRID[0] / GRID[1])
    w = (box["width"] - gap * (cols - 1)) // cols
    h = (box["height"] - gap * (rows - 1)) // rows
    return [{"x": (i % cols) * (w + gap), "y": (i // cols) * (h + gap), "w": w, "h": h}
            for i in range(n)]


def _whole(box: dict[str, float]) -> dict[str, float]:
    return {"x": 0, "y": 0, "w": box["width"], "h": box["height"]}


def _kernel_value(page: Any, expr: str, expected: str) -> str:
    deadline = time.monotonic() + 10
    while True:
        value = run_code(page, f"print(repr({expr}))")
        if value == expected or time.monotonic() > deadline:
            return value


def test_grid_shows_every_pane_labelled_and_a_click_picks_b(lab: Any) -> None:
    box = _reset(lab, mode="grid")
    panes = _grid_panes(box)
    centre = (GRID[0] / 2, GRID[1] / 2)
    for pane, colour in zip(panes, (RED, BLUE, YELLOW)):
        wait_for_pixel(lab, CANVAS, *_fitted(box, pane, *centre), colour)
    labels = lab.locator(f"{ROOT} .tnb-grid-labels .tnb-label").all_inner_texts()
    assert labels == ["Input · A", "Model X · B", "Model Y"]
    screenshot(lab.locator(ROOT).first, "shootout-grid-synthetic.png")
    x, y = _fitted(box, panes[2], *centre)
    lab.mouse.click(box["x"] + x, box["y"] + y)
    assert _kernel_value(lab, "view.right", "2") == "2"
    lab.wait_for_function(
        "(root) => document.querySelector(root + ' .tnb-picked').textContent.startsWith('Model Y')",
        arg=ROOT)
    assert not lab.errors


def test_left_and_right_choose_the_pair_from_python_and_by_keys(lab: Any) -> None:
    box = _reset(lab, position=0.8, right=2)
    whole = _whole(box)
    a_probe = _fitted(box, whole, 320, 192)   # left of the divider, inside the patch
    b_probe = _fitted(box, whole, 470, 192)   # right of the divider, outside it
    wait_for_pixel(lab, CANVAS, *a_probe, RED)       # A: the input
    wait_for_pixel(lab, CANVAS, *b_probe, RED)       # B: Model Y (the input's red there)
    lab.focus(ROOT)
    lab.keyboard.press("[")                           # B steps back to Model X
    wait_for_pixel(lab, CANVAS, *b_probe, BLUE)
    assert _kernel_value(lab, "(view.left, view.right)", "(0, 1)") == "(0, 1)"
    lab.focus(ROOT)
    lab.keyboard.press("Shift+BracketRight")          # A steps on to Model Y
    wait_for_pixel(lab, CANVAS, *a_probe, YELLOW)
    assert _kernel_value(lab, "(view.left, view.right)", "(2, 1)") == "(2, 1)"
    labels = lab.locator(f"{ROOT} .tnb-label:not(.tnb-grid-labels .tnb-label)").all_inner_texts()
    assert labels[:2] == ["Model Y", "Model X"]
    assert _kernel_value(lab, "view.labels", "('Model Y', 'Model X')") == "('Model Y', 'Model X')"


def test_fidelity_overlays_the_heat_map_and_a_click_zooms_to_the_region(lab: Any) -> None:
    box = _reset(lab, mode="fidelity", right=2, opacity=1.0)
    whole = _whole(box)
    hot = magma()[255]
    wait_for_pixel(lab, CANVAS, *_fitted(box, whole, 320, 192), hot, tol=20)  # over the patch
    wait_for_pixel(lab, CANVAS, *_fitted(box, whole, 470, 300), RED)          # unchanged: clear
    wait_for_pixel(lab, CANVAS, *_fitted(box, whole, 60, 320), (0, 0, 0), tol=255)
    label = lab.locator(f"{ROOT} .tnb-label").first.inner_text()
    assert label.startswith("Model Y") and "PSNR" in label and "SSIM" in label
    screenshot(lab.locator(ROOT).first, "shootout-fidelity-synthetic.png")
    # The 512×384 grid fitted to the stage is shown larger than 100 % (the stage is
    # 520 px high: about 135 %): a click on the region centres it and keeps that
    # zoom, where it used to zoom out to 100 %.
    fit = min(box["width"] / GRID[0], box["height"] / GRID[1])
    assert fit > 1.2, box
    shown = lab.locator(f"{ROOT} .tnb-zoom").first.inner_text()
    assert shown == f"fit {round(fit * 100)}%"
    x, y = _fitted(box, whole, 330, 200)
    lab.mouse.click(box["x"] + x, box["y"] + y)
    lab.wait_for_function(
        "(root) => !document.querySelector(root + ' .tnb-zoom').textContent.startsWith('fit')",
        arg=ROOT)
    assert lab.locator(f"{ROOT} .tnb-zoom").first.inner_text() == f"{round(fit * 100)}%"
    zoom = float(run_code(lab, "print(view.zoom)"))
    for _ in range(20):  # the zoom reaches the kernel a little after the click
        if zoom > 0:
            break
        time.sleep(0.2)
        zoom = float(run_code(lab, "print(view.zoom)"))
    assert zoom == pytest.approx(fit, abs=0.01)
    cx, cy = (float(v) for v in run_code(lab, "print(*view.center)").split())
    assert abs(cx - 320) <= 24 and abs(cy - 192) <= 24
    # Zoomed out below 100 % first, a click on the region goes to 100 %.
    run_code(lab, "view.zoom = 0.5\nview.center = (256.0, 192.0)")
    lab.wait_for_function(
        "(root) => document.querySelector(root + ' .tnb-zoom').textContent === '50%'", arg=ROOT)
    box = _box(lab)  # the cells run since have moved the page
    lab.mouse.click(box["x"] + box["width"] / 2 + (320 - 256) * 0.5, box["y"] + box["height"] / 2)
    assert _kernel_value(lab, "view.zoom", "1.0") == "1.0"
    assert not lab.errors


def _mid_fraction(page: Any, box: dict[str, float]) -> float:
    """How much of a row across the input's checkerboard is neither black nor white."""
    whole = _whole(box)
    (x0, y), (x1, _) = _fitted(box, whole, 8, 300), _fitted(box, whole, 120, 300)
    values = page.evaluate(
        """([selector, x0, x1, y]) => {
            const c = document.querySelector(selector);
            const r = c.getBoundingClientRect();
            const k = c.width / r.width;
            const row = c.getContext('2d').getImageData(Math.floor(x0 * k), Math.floor(y * k),
                                                        Math.floor((x1 - x0) * k), 1).data;
            const out = [];
            for (let i = 0; i < row.length; i += 4) out.push(row[i + 1]);
            return out;
        }""", [CANVAS, x0, x1, y])
    return sum(1 for v in values if 40 < v < 215) / len(values)


def test_the_input_filter_smooths_or_shows_the_real_pixels(lab: Any) -> None:
    box = _reset(lab, mode="toggle", showing="input")
    wait_for_pixel(lab, CANVAS, *_fitted(box, _whole(box), 300, 100), RED)
    lab.wait_for_function("(root) => document.querySelector(root).dataset.inputFilter === 'smooth'",
                          arg=ROOT)
    time.sleep(0.3)
    smooth = _mid_fraction(lab, box)
    assert smooth > 0.3, smooth
    lab.locator(f"{ROOT} button.tnb-filter").click()
    lab.wait_for_function("(root) => document.querySelector(root).dataset.inputFilter === 'nearest'",
                          arg=ROOT)
    time.sleep(0.3)
    blocks = _mid_fraction(lab, box)
    assert blocks < 0.05, blocks
    assert _kernel_value(lab, "view.input_filter", "'nearest'") == "'nearest'"
    assert lab.locator(f"{ROOT} button.tnb-filter").inner_text() == "Input: pixels"


def test_fidelity_that_cannot_be_computed_says_why_in_the_label(lab: Any) -> None:
    """A 2×1000 output cropped to fill a 1000×2 input covers no whole input pixel:
    a second view, below the first."""
    run_code(lab, UNCOVERED)
    second = "document.querySelectorAll(root)[1]"
    lab.wait_for_function(
        f"(root) => {second} && {second}.querySelector('.tnb-label').textContent"
        ".includes('not computed')", arg=ROOT, timeout=30_000)
    label = lab.locator(ROOT).nth(1).locator(".tnb-label").first.inner_text()
    assert " ".join(label.split()) == (
        "Model Z · fidelity not computed: the 2×1000 output (cropped to fill) covers no whole "
        "pixel of the 1000×2 input")
    assert not lab.errors


def test_photo_shootout_screenshots(lab: Any, server: Any) -> None:
    """The demo shoot-out as a reader sees it: the grid, then the fidelity map."""
    open_notebook(lab, server, "photo.ipynb", ui="lab")
    run_all(lab)
    lab.wait_for_selector(CANVAS, timeout=60_000)
    box = _box(lab)
    panes = _grid_panes(box, 4)
    wait_for_pixel(lab, CANVAS, panes[3]["x"] + 2, panes[3]["y"] + panes[3]["h"] / 2,
                   (0, 0, 0), tol=255)
    time.sleep(0.5)
    screenshot(lab.locator(ROOT).first, "shootout-grid.png")
    run_code(lab, "view.right = 3\nview.opacity = 0.8\nview.mode = 'fidelity'")
    lab.wait_for_function(
        "(root) => document.querySelector(root + ' .tnb-label').textContent.includes('PSNR')",
        arg=ROOT, timeout=30_000)
    time.sleep(0.5)
    shot = screenshot(lab.locator(ROOT).first, "shootout-fidelity.png")
    assert shot.exists()
    assert not lab.errors

