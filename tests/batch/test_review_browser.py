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
    current_panel,
    hide_left_area,
    jupyter_server,
    launch_chromium,
    new_page,
    open_notebook,
    own_errors,
    require_chromium,
    run_all,
    run_code,
    screenshot,
    voila_server,
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


SETTINGS = {"@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
            "@jupyterlab/apputils-extension:notification": {"fetchNews": "false"}}


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[Any]:
    """One server for the module; it serves JupyterLab and Notebook 7 alike."""
    require_chromium()
    write_notebook(root / "review.ipynb", [SETUP])
    with jupyter_server(root, app="lab", lab_settings=SETTINGS) as server:
        yield server


@pytest.fixture(scope="module")
def chromium(server: Any) -> Iterator[Any]:
    with launch_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def page(server: Any, chromium: Any) -> Iterator[Any]:
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


# -- keys stay in the review; focus and mode carry over (Notebook 7 and JupyterLab) ----

@pytest.fixture
def fresh(server: Any, chromium: Any, root: Path) -> Iterator[Any]:
    """Opens a review of its own (notebook ``name``.ipynb, file ``name``.csv) in a new page."""
    pages: list[Any] = []

    def open_review(name: str, ui: str) -> tuple[Any, str]:
        write_notebook(root / f"{name}.ipynb", [SETUP.replace("review.csv", f"{name}.csv")])
        page = new_page(chromium, (1300, 1100))
        pages.append(page)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.errors = errors  # type: ignore[attr-defined]
        open_notebook(page, server, f"{name}.ipynb", ui=ui, workspace=name)
        if ui == "lab":
            hide_left_area(page)
        run_all(page)
        box = f"{current_panel(page)} .topaz-review"
        page.wait_for_selector(f"{box} .topaz-review-strip .topaz-review-cell", timeout=90_000)
        page.wait_for_selector(f"{box} .tnb-compare canvas.tnb-canvas", timeout=60_000)
        page.wait_for_function(
            "(sel) => /%/.test(document.querySelector(sel + ' .tnb-zoom').textContent)",
            arg=f"{box} .tnb-compare", timeout=30_000)
        return page, box

    yield open_review
    for page in pages:
        page.context.close()


def _cell_types(page: Any) -> list[str]:
    """The notebook's cells, as their types, from the notebook's own model."""
    return list(page.evaluate("""() => window.jupyterapp.shell.currentWidget.content.model
        .sharedModel.cells.map((c) => c.cell_type)"""))


def _wait(page: Any, predicate: str, arg: Any, what: str, timeout: float = 15) -> None:
    """Wait for ``predicate(arg)`` in the page; fail saying ``what`` and the notebook's cells."""
    try:
        page.wait_for_function(predicate, arg=arg, timeout=timeout * 1000)
    except Exception as exc:  # Playwright's TimeoutError
        raise AssertionError(f"{what} did not happen; cells: {_cell_types(page)}") from exc


_CURRENT = """([box, i]) => !!document.querySelectorAll(box + ' .topaz-review-cell')[i]
    ?.classList.contains('topaz-review-current')"""
_MODE = "([box, mode]) => document.querySelector(box + ' .tnb-compare')?.dataset.mode === mode"
_ZOOM = """([box, text]) => !!document.querySelector(box + ' .tnb-compare .tnb-zoom')
    ?.textContent.startsWith(text)"""
# A view of the comparison other than the one marked before the step, with the focus.
_NEW_VIEW_FOCUSED = """(box) => {
    const view = document.querySelector(box + ' .tnb-compare');
    return !!view && !view.dataset.seen && view.contains(document.activeElement);
}"""


def _mark_view(page: Any, box: str) -> None:
    page.evaluate("(box) => { document.querySelector(box + ' .tnb-compare').dataset.seen = '1'; }",
                  box)


@pytest.mark.parametrize("ui", ["notebook", "lab"])
def test_keys_in_the_review_stay_in_it(fresh: Any, root: Path, ui: str) -> None:
    page, box = fresh(f"review-keys-{ui}", ui)
    ids = run_code(page, "print(' '.join(review.ids[:2]))").split()
    before = _cell_types(page)
    # The strip has the focus when the review appears: letters the review does not
    # use (m, 1) do nothing there, in the notebook neither.
    page.locator(f"{box} .topaz-review-strip").focus()
    page.keyboard.press("m")
    page.keyboard.press("1")
    assert _cell_types(page) == before
    assert page.locator(f"{box} .tnb-compare").get_attribute("data-mode") == "swipe"

    # In the comparison: m changes its mode, a accepts, j steps on, 1 and 0 zoom the next.
    page.locator(f"{box} .tnb-compare canvas.tnb-canvas").click()
    page.keyboard.press("m")
    _wait(page, _MODE, [box, "side-by-side"], "m: side by side")
    page.keyboard.press("a")
    _wait(page, "(box) => document.querySelector(box + ' .topaz-review-cell')"
                ".dataset.decision === 'accept'", box, "a: accept")
    _mark_view(page, box)
    page.keyboard.press("j")
    _wait(page, _CURRENT, [box, 1], "j: the second process")
    _wait(page, _NEW_VIEW_FOCUSED, box, "the second process's view")
    page.keyboard.press("1")
    _wait(page, _ZOOM, [box, "100%"], "1: 100 %")
    page.keyboard.press("0")
    _wait(page, _ZOOM, [box, "fit"], "0: fit")

    assert _cell_types(page) == before
    assert page.locator(f"{box} .tnb-compare").count() == 1
    rows = _rows(root / f"review-keys-{ui}.csv")
    assert list(rows) == [ids[0]] and rows[ids[0]]["decision"] == "accept"
    page.locator(box).scroll_into_view_if_needed()
    screenshot(page.locator(box), f"review-keys-{ui}.png")
    assert own_errors(page.errors) == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("ui", ["notebook", "lab"])
def test_stepping_keeps_the_focus_and_the_mode(fresh: Any, ui: str) -> None:
    page, box = fresh(f"review-focus-{ui}", ui)
    page.locator(f"{box} .tnb-compare canvas.tnb-canvas").click()
    page.keyboard.press("m")
    _wait(page, _MODE, [box, "side-by-side"], "m: side by side")
    page.keyboard.press("m")
    _wait(page, _MODE, [box, "blend"], "m: blend")
    _mark_view(page, box)
    page.keyboard.press("j")
    _wait(page, _CURRENT, [box, 1], "j: the second process")
    _wait(page, _NEW_VIEW_FOCUSED, box, "the focus in the second process's view")
    assert page.locator(f"{box} .tnb-compare").get_attribute("data-mode") == "blend"
    # No click needed: the next keys reach the new view, and k goes back in the same mode.
    _mark_view(page, box)
    page.keyboard.press("k")
    _wait(page, _CURRENT, [box, 0], "k: the first process")
    _wait(page, _NEW_VIEW_FOCUSED, box, "the focus back in the first process's view")
    assert page.locator(f"{box} .tnb-compare").get_attribute("data-mode") == "blend"
    page.keyboard.press("m")
    _wait(page, _MODE, [box, "difference"], "m on the view shown again: difference")
    page.locator(box).scroll_into_view_if_needed()
    screenshot(page.locator(box), f"review-focus-{ui}.png")
    _mark_view(page, box)
    page.keyboard.press("j")
    _wait(page, _CURRENT, [box, 1], "j: the second process again")
    _wait(page, _NEW_VIEW_FOCUSED, box, "the focus in the second process's view again")
    _wait(page, _MODE, [box, "difference"], "the mode chosen last, on the second process")
    assert run_code(page, "print(review.comparison().view.mode)") == "difference"
    assert own_errors(page.errors) == []  # type: ignore[attr-defined]


def test_keys_focus_and_mode_in_voila(chromium: Any, tmp_path: Path) -> None:
    """Voila runs no notebook commands, but the same keys, focus and mode hold there."""
    pytest.importorskip("voila")
    notebook = write_notebook(tmp_path / "review-voila.ipynb",
                              [SETUP.replace("review.csv", "review-voila.csv")])
    with voila_server(notebook) as url:
        page = new_page(chromium, (1300, 1100))
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(url, timeout=120_000)
            box = ".topaz-review"
            page.wait_for_selector(f"{box} .topaz-review-strip .topaz-review-cell",
                                   timeout=120_000)
            page.wait_for_selector(f"{box} .tnb-compare canvas.tnb-canvas", timeout=60_000)
            page.locator(f"{box} .tnb-compare canvas.tnb-canvas").click()
            page.keyboard.press("m")
            page.wait_for_function(_MODE, arg=[box, "side-by-side"], timeout=15_000)
            page.keyboard.press("a")
            page.wait_for_function("(box) => document.querySelector(box + ' .topaz-review-cell')"
                                   ".dataset.decision === 'accept'", arg=box, timeout=15_000)
            _mark_view(page, box)
            page.keyboard.press("j")
            page.wait_for_function(_CURRENT, arg=[box, 1], timeout=30_000)
            page.wait_for_function(_NEW_VIEW_FOCUSED, arg=box, timeout=30_000)
            assert page.locator(f"{box} .tnb-compare").get_attribute("data-mode") == "side-by-side"
            page.keyboard.press("1")
            page.wait_for_function(_ZOOM, arg=[box, "100%"], timeout=15_000)
            page.keyboard.press("0")
            page.wait_for_function(_ZOOM, arg=[box, "fit"], timeout=15_000)
            rows = _rows(tmp_path / "review-voila.csv")
            assert [r["decision"] for r in rows.values()] == ["accept"]
            screenshot(page.locator(box), "review-keys-voila.png")
            assert errors == []
        finally:
            page.context.close()


def test_the_focus_waits_in_the_review_past_a_process_without_output(fresh: Any) -> None:
    """j onto a failed process (no comparison to focus) keeps the focus in the review,
    on the strip, and the next j gives it to the next comparison, in the mode chosen."""
    page, _ = fresh("review-failed", "notebook")
    run_code(page, "from topaz_nb.sandbox._demo import DEMO_JOBS\n"
                   "named = {j.name: j.process_id for j in DEMO_JOBS}\n"
                   "mixed = %topaz review {named['rocket-square']} {named['coffee-redefine']} "
                   "{named['coffee']} --file review-failed-mixed.csv\n"
                   "display(mixed)")
    last = f"{current_panel(page)} .jp-Cell:last-child .topaz-review"
    page.wait_for_selector(f"{last} .tnb-compare canvas.tnb-canvas", timeout=60_000)
    before = _cell_types(page)
    page.locator(f"{last} .tnb-compare canvas.tnb-canvas").click()
    page.keyboard.press("m")
    _wait(page, _MODE, [last, "side-by-side"], "m: side by side")
    page.keyboard.press("j")
    _wait(page, _CURRENT, [last, 1], "j: the failed process")
    _wait(page, "(box) => !document.querySelector(box + ' .tnb-compare') && document"
                ".querySelector(box + ' .topaz-review-strip') === document.activeElement",
          last, "the focus on the strip while no comparison is shown")
    page.keyboard.press("m")  # nothing to change here, and not the notebook's either
    page.keyboard.press("j")
    _wait(page, _CURRENT, [last, 2], "j: the third process")
    _wait(page, _NEW_VIEW_FOCUSED, last, "the focus in the third process's view")
    assert page.locator(f"{last} .tnb-compare").get_attribute("data-mode") == "side-by-side"
    assert _cell_types(page) == before
    page.locator(last).scroll_into_view_if_needed()
    screenshot(page.locator(last), "review-focus-past-failed.png")
    assert own_errors(page.errors) == []  # type: ignore[attr-defined]
