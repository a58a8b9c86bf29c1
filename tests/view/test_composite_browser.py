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
