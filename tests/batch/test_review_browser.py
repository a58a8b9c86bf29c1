"""The review in a real JupyterLab and Chromium: keys decide and step, the CSV
records it, and a review opened again resumes at the first undecided process.

The notebook starts the demo sandbox in its kernel and reviews the Completed
demo processes into ``review.csv`` beside it.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import (
    ARTIFACTS,
    hide_left_area,
    jupyter_server,
    launch_chromium,
    new_page,
    open_notebook,
    require_chromium,
    run_all,
    run_code,
    screenshot,
    write_notebook,
)

pytestmark = pytest.mark.browser

SHOWN = ".jp-NotebookPanel:not(.lm-mod-hidden)"
REVIEW = f"{SHOWN} .topaz-review"
SETUP = """
%load_ext topaz_nb
ids = %topaz demo
review = %topaz review recent --status Completed --file review.csv
review
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("review")


@pytest.fixture(scope="module")
def page(root: Path) -> Iterator[Any]:
    require_chromium()
    write_notebook(root / "review.ipynb", [SETUP])
    settings = {"@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
                "@jupyterlab/apputils-extension:notification": {"fetchNews": "false"}}
    with jupyter_server(root, app="lab", lab_settings=settings) as server, \
            launch_chromium() as chromium:
        page = new_page(chromium, (1300, 1100))
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.errors = errors  # type: ignore[attr-defined]
        open_notebook(page, server, "review.ipynb", ui="lab")
        hide_left_area(page)
        run_all(page)
        page.wait_for_selector(f"{REVIEW} .topaz-review-strip .topaz-review-cell",
                               timeout=90_000)
        page.wait_for_selector(f"{REVIEW} .tnb-compare canvas.tnb-canvas", timeout=60_000)
        yield page
        page.context.close()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "review-browser-errors.log").write_text("\n".join(errors) + "\n")


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["process_id"]: row for row in csv.DictReader(fh)}


def _current(page: Any, strip: int = 0) -> int:
    return page.evaluate(
        """([sel, n]) => {
            const strip = document.querySelectorAll(sel)[n];
            return [...strip.querySelectorAll('.topaz-review-cell')]
                .findIndex(c => c.classList.contains('topaz-review-current'));
        }""", [f"{REVIEW} .topaz-review-strip", strip])


def test_a_then_j_accepts_and_moves_on(page: Any, root: Path) -> None:
    ids = run_code(page, "print(' '.join(review.ids[:3]))").split()
    cells = page.locator(f"{SHOWN} .jp-Cell").count()
    page.locator(f"{REVIEW} .topaz-review-strip").first.click()
    assert _current(page) == 0
    page.keyboard.press("a")
    page.wait_for_function(
        """(sel) => document.querySelector(sel).dataset.decision === 'accept'""",
        arg=f"{REVIEW} .topaz-review-cell", timeout=15_000)
    page.keyboard.press("j")
    page.wait_for_function(
        """(sel) => document.querySelectorAll(sel)[1].classList.contains('topaz-review-current')""",
        arg=f"{REVIEW} .topaz-review-cell", timeout=30_000)
    rows = _rows(root / "review.csv")
    assert list(rows) == [ids[0]] and rows[ids[0]]["decision"] == "accept"
    assert rows[ids[0]]["filename"] and rows[ids[0]]["model"]
    # Keys pressed in the comparison reach the review too: f flags the second.
    page.locator(f"{REVIEW} .tnb-compare canvas.tnb-canvas").first.click()
    page.keyboard.press("f")
    page.wait_for_function(
        """(sel) => document.querySelectorAll(sel)[1].dataset.decision === 'flag'""",
        arg=f"{REVIEW} .topaz-review-cell", timeout=15_000)
    assert _rows(root / "review.csv")[ids[1]]["decision"] == "flag"
    # n writes a note; Enter keeps it with the decision, and typing decides nothing.
    page.keyboard.press("n")
    page.keyboard.type("a faint halo")
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    run_code(page, "print(review.note(review.current))")
    assert _rows(root / "review.csv")[ids[1]]["note"] == "a faint halo"
    assert _rows(root / "review.csv")[ids[1]]["decision"] == "flag"
    # The notebook's own shortcuts (a: insert a cell, j/k: select) did not run; only
    # the cell run_code added is new.
    assert page.locator(f"{SHOWN} .jp-Cell").count() == cells + 1
    page.locator(REVIEW).first.scroll_into_view_if_needed()
    screenshot(page.locator(REVIEW).first, "review-after-keys.png")
    assert page.errors == []  # type: ignore[attr-defined]


def test_reopening_resumes_at_the_first_undecided(page: Any, root: Path) -> None:
    decided = _rows(root / "review.csv")
    assert len(decided) == 2
    out = run_code(page, "again = %topaz review recent --status Completed --file review.csv\n"
                         "display(again)\nprint(again.position, again.current)")
    position, current = out.split()[-2:]
    assert position == "2" and current not in decided
    page.wait_for_function(
        """(sel) => document.querySelectorAll(sel).length >= 2""",
        arg=f"{REVIEW} .topaz-review-strip", timeout=60_000)
    page.wait_for_function(
        """(sel) => {
            const strips = document.querySelectorAll(sel);
            const cells = strips[strips.length - 1].querySelectorAll('.topaz-review-cell');
            return cells.length > 2 && cells[2].classList.contains('topaz-review-current')
                && cells[0].dataset.decision === 'accept' && cells[1].dataset.decision === 'flag';
        }""", arg=f"{REVIEW} .topaz-review-strip", timeout=30_000)
    last = page.locator(REVIEW).last
    last.scroll_into_view_if_needed()
    page.locator(f"{REVIEW} .topaz-review-strip img").last.wait_for(timeout=30_000)
    screenshot(last, "review-resumed.png")


def test_recent_gallery_cards_fill_in(page: Any) -> None:
    run_code(page, "g = %topaz recent --limit 6\ndisplay(g)")
    page.wait_for_function(
        """(sel) => {
            const cards = document.querySelectorAll(sel);
            return cards.length === 6 && [...cards].filter(c => c.querySelector('img')).length >= 4;
        }""", arg=f"{SHOWN} .topaz-card", timeout=60_000)
    texts = page.locator(f"{SHOWN} .topaz-card").all_inner_texts()
    assert any("Failed" in t or "failed:" in t for t in texts), texts
    assert all("Input" in t and "Output" in t for t in texts)
    grid = page.locator(f"{SHOWN} .topaz-card").first.locator("xpath=ancestor::*[contains(@class,'widget-gridbox')][1]")
    grid.scroll_into_view_if_needed()
    screenshot(grid, "recent-gallery.png")


def test_a_note_kept_on_an_undecided_process_survives_j_and_k(page: Any, root: Path) -> None:
    # A review of its own file, so the file of the tests above stays as they left it.
    strip = page.locator(f"{REVIEW} .topaz-review-strip").count()
    run_code(page, "notes = %topaz review recent --status Completed --file notes.csv\n"
                   "display(notes)")
    page.wait_for_function(
        """([sel, n]) => document.querySelectorAll(sel).length > n""",
        arg=[f"{REVIEW} .topaz-review-strip", strip], timeout=60_000)
    box = page.locator(REVIEW).last
    box.scroll_into_view_if_needed()
    box.locator(".topaz-review-cell").first.click()  # the strip takes the focus
    assert _current(page, strip) == 0
    page.keyboard.press("n")
    page.keyboard.type("soft corners")
    page.keyboard.press("Enter")  # kept, though the process has no decision
    page.keyboard.press("Escape")
    page.keyboard.press("j")
    page.wait_for_function(
        """([sel, n]) => document.querySelectorAll(sel)[n]
            .querySelectorAll('.topaz-review-cell')[1].classList.contains('topaz-review-current')""",
        arg=[f"{REVIEW} .topaz-review-strip", strip], timeout=30_000)
    note = box.locator(".topaz-review-note input")
    page.wait_for_function("(el) => el.value === ''", arg=note.element_handle(), timeout=15_000)
    page.keyboard.press("k")
    page.wait_for_function("(el) => el.value === 'soft corners'", arg=note.element_handle(),
                           timeout=30_000)
    assert _current(page, strip) == 0
    first = run_code(page, "print(notes.ids[0])").split()[-1]
    row = _rows(root / "notes.csv")[first]
    assert (row["decision"], row["note"]) == ("", "soft corners")
    # Deciding it afterwards keeps the note (run_code left the focus in its cell).
    box.locator(".topaz-review-cell").first.click()
    page.keyboard.press("a")
    page.wait_for_function(
        """([sel, n]) => document.querySelectorAll(sel)[n]
            .querySelector('.topaz-review-cell').dataset.decision === 'accept'""",
        arg=[f"{REVIEW} .topaz-review-strip", strip], timeout=15_000)
    row = _rows(root / "notes.csv")[first]
    assert (row["decision"], row["note"]) == ("accept", "soft corners")
    assert page.errors == []  # type: ignore[attr-defined]
