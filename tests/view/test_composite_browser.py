"""The offline page of ``save_html`` in a real Chromium, with hostile model names.

A label is whatever a model or a file was called, so it can hold markup.  The
page embeds its state as JSON inside a ``<script>`` element; a name such as
``<!--<script>`` used to make that element swallow the page's module script,
leaving a blank page.  Each test opens the saved file with every network
request refused (the page must work offline) and checks what a reader sees:
the canvas drawn with both images, the names as text, no script error and no
script of the name's run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser_support import launch_chromium, new_page, require_chromium, wait_for_pixel

from topaz_nb.view.widget import CompareView

pytestmark = pytest.mark.browser

RED = (220, 40, 30)
BLUE = (30, 60, 200)
CANVAS = ".tnb-compare canvas.tnb-canvas"
HOSTILE = ["<!--<script>", "</script><script>alert(1)</script>", "line\u2028sep\u2029arator",
           "a & b > c <!-- -->"]


def _solid(size: tuple[int, int], color: tuple[int, int, int]) -> np.ndarray:
    image = np.zeros((size[1], size[0], 3), np.uint8)
    image[:] = color
    return image


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    require_chromium()
    with launch_chromium() as chromium:
        yield chromium


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A page that refuses the network and records script errors and dialogs."""
    page = new_page(chromium)
    page.set_default_timeout(15_000)
    page.errors = []  # type: ignore[attr-defined]
    page.dialogs = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.route("**/*", lambda route: route.abort()
               if not route.request.url.startswith(("file:", "blob:", "data:"))
               else route.continue_())
    yield page
    page.context.close()


def _fitted(page: Any, grid: tuple[int, int]) -> tuple[float, float, float]:
    """The canvas's scale and the fitted output grid's offset (CSS px)."""
    box = page.locator(CANVAS).first.bounding_box()
    assert box is not None
    z = min(box["width"] / grid[0], box["height"] / grid[1])
    return z, (box["width"] - grid[0] * z) / 2, (box["height"] - grid[1] * z) / 2


def _label_texts(page: Any) -> list[str]:
    return page.evaluate("() => Array.from(document.querySelectorAll('.tnb-compare .tnb-label'))"
                         ".filter((n) => !n.hidden && n.textContent).map((n) => n.textContent)")


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_name_is_shown_as_text_on_a_working_page(page: Any, tmp_path: Path,
                                                          name: str) -> None:
    view = CompareView(_solid((64, 48), RED), _solid((128, 96), BLUE), labels=["Input", name])
    page.goto(view.save_html(tmp_path / "page.html").as_uri())
    page.wait_for_selector(CANVAS)
    z, x0, y0 = _fitted(page, (128, 96))
    wait_for_pixel(page, CANVAS, x0 + 20 * z, y0 + 80 * z, RED)  # swipe: A on the left
    wait_for_pixel(page, CANVAS, x0 + 110 * z, y0 + 80 * z, BLUE)  # and B on the right
    assert name in _label_texts(page)
    assert page.title() == f"Input vs {name}"
    assert page.errors == [] and page.dialogs == []


def test_a_shootout_of_hostile_model_names_shows_every_pane(page: Any, tmp_path: Path) -> None:
    names = HOSTILE[:3]
    view = CompareView(_solid((64, 48), RED), _solid((128, 96), BLUE),
                       _solid((128, 96), (40, 180, 60)), _solid((128, 96), (230, 200, 40)),
                       labels=["Input", *names], mode="grid")
    page.goto(view.save_html(tmp_path / "shootout.html").as_uri())
    page.wait_for_selector(CANVAS)
    page.wait_for_function("() => document.querySelectorAll("
                           "'.tnb-compare .tnb-grid-labels .tnb-label').length === 4")
    grid_labels = page.evaluate(
        "() => Array.from(document.querySelectorAll('.tnb-compare .tnb-grid-labels .tnb-label'))"
        ".map((n) => n.textContent)")
    # Each pane's label is its name as text (the pair compared is marked "· A" / "· B").
    assert [text.split("  ·  ")[0] for text in grid_labels] == ["Input", *names]
    # Every pane is drawn: each of the four colours is somewhere on the canvas.
    seen = page.evaluate("""(sel) => {
        const c = document.querySelector(sel);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const colours = new Set();
        for (let i = 0; i < d.length; i += 4 * 97) colours.add(`${d[i]},${d[i + 1]},${d[i + 2]}`);
        return Array.from(colours);
    }""", CANVAS)
    for colour in (RED, BLUE, (40, 180, 60), (230, 200, 40)):
        assert any(all(abs(int(a) - b) <= 12 for a, b in zip(s.split(","), colour))
                   for s in seen), (colour, seen[:20])
    assert page.errors == [] and page.dialogs == []


def _stage_bottom(page: Any) -> float:
    return float(page.evaluate(
        "() => document.querySelector('.tnb-compare .tnb-stage').getBoundingClientRect().bottom"))


@pytest.mark.parametrize("name", HOSTILE)
def test_a_page_shows_a_hostile_heading_and_table_as_text_and_takes_the_window_height(
        page: Any, tmp_path: Path, name: str) -> None:
    view = CompareView(_solid((64, 48), RED), _solid((128, 96), BLUE), labels=["Input", name])
    rows = [("Model", "", name), (name, f"{name} in", f"{name} out"), ("Dimensions", "64×48", "128×96")]
    page.goto(view.save_html(tmp_path / "page.html", heading=name, rows=rows).as_uri())
    page.wait_for_selector(CANVAS)
    assert page.locator("h1.topaz-page-heading").inner_text() == name
    cells = page.evaluate("() => Array.from(document.querySelectorAll('table.topaz-meta tr'))"
                          ".map((tr) => Array.from(tr.children).map((c) => c.textContent))")
    assert cells == [["", "Input", "Output"], *[list(r) for r in rows]]
    assert page.title() == f"{name}: Input vs {name}"
    # The stage fills the window below the heading and the toolbar (16 px body margin),
    # and follows the window when it is resized; the table comes after it.
    page.wait_for_function("() => Math.abs(document.querySelector('.tnb-stage')"
                           ".getBoundingClientRect().bottom - (innerHeight - 16)) <= 1")
    assert _stage_bottom(page) == pytest.approx(900 - 16, abs=1)
    table_top = page.locator("table.topaz-meta").bounding_box()["y"]
    assert table_top > _stage_bottom(page)
    page.set_viewport_size({"width": 1000, "height": 700})
    page.wait_for_function("() => Math.abs(document.querySelector('.tnb-stage')"
                           ".getBoundingClientRect().bottom - (innerHeight - 16)) <= 1")
    z, x0, y0 = _fitted(page, (128, 96))
    wait_for_pixel(page, CANVAS, x0 + 20 * z, y0 + 80 * z, RED)
    wait_for_pixel(page, CANVAS, x0 + 110 * z, y0 + 80 * z, BLUE)
    assert page.errors == [] and page.dialogs == []


def test_the_command_line_page_shows_the_process_id_and_its_metadata(
        page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from topaz_nb.cli import main
    from topaz_nb.sandbox._demo import DEMO_JOBS

    for var in ("TOPAZ_API_KEY", "TOPAZ_API_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TOPAZ_NB_CACHE", str(tmp_path / "cache"))
    target = tmp_path / "page.html"
    assert main(["--demo", "compare", "first", "-o", str(target)]) == 0
    page.goto(target.as_uri())
    page.wait_for_selector(CANVAS)
    pid = DEMO_JOBS[0].process_id
    assert page.locator("h1.topaz-page-heading").inner_text() == pid
    table = page.locator("table.topaz-meta").inner_text()
    for field in ("Dimensions", "Format", "Model", "Standard V2", "PSNR vs input"):
        assert field in table, table
    page.wait_for_function("() => Math.abs(document.querySelector('.tnb-stage')"
                           ".getBoundingClientRect().bottom - (innerHeight - 16)) <= 1")
    assert page.locator(".tnb-stage").bounding_box()["height"] > 700  # was 520 in a 900-px window
    assert page.errors == [] and page.dialogs == []
