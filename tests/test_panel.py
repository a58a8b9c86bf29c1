"""TopazPanel against a real in-process sandbox, over real sockets."""

from __future__ import annotations

import html
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ipywidgets as w
import pytest
from PIL import Image

from topaz_nb._session import Session
from topaz_nb.panel import TopazPanel
from topaz_nb.settings import Topaz

_QUERY_URL = re.compile(r"https?://[^\s\"'<>]*\?(?!…)[^\s\"'<>]+")


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    monkeypatch.delenv("TOPAZ_API_KEY", raising=False)
    monkeypatch.delenv("TOPAZ_API_URL", raising=False)
    s = Session(Topaz(cache_dir=str(tmp_path / "cache")))
    s.use_demo()
    yield s
    s.close()


@pytest.fixture
def panel(session: Session) -> Iterator[TopazPanel]:
    p = TopazPanel(session)
    yield p
    p.join(30)


def _all_widgets(root: w.Widget) -> list[w.Widget]:
    """Every widget reachable from ``root`` through its traits (children, layout, style…)."""
    seen: dict[int, w.Widget] = {}
    stack: list[Any] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
            continue
        if not isinstance(item, w.Widget) or id(item) in seen:
            continue
        seen[id(item)] = item
        for name in item.keys:
            stack.append(getattr(item, name, None))
    return list(seen.values())


def _state_text(root: w.Widget) -> str:
    parts = []
    for widget in _all_widgets(root):
        state = widget.get_state()
        for value in state.values():
            if isinstance(value, (bytes, bytearray, memoryview)):
                parts.append(bytes(value).decode("latin-1"))
            else:
                parts.append(repr(value))
    return "\n".join(parts)


def _bar(panel: TopazPanel, side: str) -> w.IntProgress:
    return panel._bars[side]  # type: ignore[index]


def test_typing_validates_and_gates_the_fetch_button(panel: TopazPanel) -> None:
    field, button, hint = panel._id_field, panel._fetch_button, panel._id_hint
    field.value = "6f1c2a4e-93b5"
    assert button.disabled
    assert "not a UUID yet" in hint.value
    field.value = "not an id at all!"
    assert button.disabled
    assert "not a UUID" in hint.value
    assert panel.process_id is None
    good = str(uuid.uuid4()).upper()
    field.value = f"  {good}\t"
    assert not button.disabled
    assert "not a UUID" not in hint.value
    assert panel.process_id == good.lower()
    field.value = ""
    assert button.disabled and hint.value == ""


def test_fetch_shows_comparison_progress_recent_and_saves(
        panel: TopazPanel, session: Session, tmp_path: Path) -> None:
    sb = session.sandbox
    assert sb is not None
    pid = sb.demo_ids[0]
    comparison = panel.fetch(pid)
    assert comparison is not None and comparison.ready
    assert panel.comparison is comparison
    assert panel.process_id == pid
    assert panel._result.children and isinstance(panel._result.children[0], w.Box)
    assert comparison.view in _all_widgets(panel._result)
    for side in ("input", "output"):
        assert _bar(panel, side).value == 100
        assert _bar(panel, side).bar_style == "success"
    assert "output ready" in panel._status.value
    assert panel._recent.options[0][1] == pid and panel._recent.value == pid
    assert not panel._save_button.disabled and not panel.busy

    saved = panel.save(str(tmp_path / "out"))
    assert set(saved) == {"input", "output"}
    for side, path in saved.items():
        assert path.parent == tmp_path / "out" and path.name.startswith(f"{pid}-{side}")
        with Image.open(path) as image:
            assert image.size == (comparison.source(side).info.width,  # type: ignore[union-attr]
                                  comparison.source(side).info.height)  # type: ignore[union-attr]
    assert str(saved["output"]) in panel._status.value.replace("&#x27;", "'")
    # Said beside the button too, in the same row (the status line is far above it).
    note = panel._save_note.value.replace("&#x27;", "'")
    assert note.startswith("Saved input → ") and str(saved["output"]) in note
    save_row = panel.children[-1]
    assert isinstance(save_row, w.HBox)
    assert list(save_row.children) == [panel._save_dir, panel._save_button, panel._save_note]

    # A second fetch of the same process comes from the cache and says so;
    # the note about the earlier files is gone.
    panel.fetch(pid)
    assert panel._save_note.value == ""
    assert _bar(panel, "output").value == 100
    assert "from cache" in panel._bar_notes["output"].value


def test_button_click_fetches_in_background(
        panel: TopazPanel, session: Session, make_image: Any) -> None:
    sb = session.sandbox
    assert sb is not None
    pid = sb.add_job(make_image((300, 200)), make_image((600, 400)))
    sb.inject("latency", server="storage", seconds=0.5, path="output")
    updates: list[int] = []
    _bar(panel, "output").observe(lambda ch: updates.append(ch["new"]), names="value")

    fetching = threading.Event()
    panel._status.observe(lambda ch: "Fetching" in ch["new"] and fetching.set(), names="value")

    panel.process_id = pid
    panel._fetch_button.click()
    assert panel.busy and panel._fetch_button.disabled
    assert fetching.wait(10), panel._status.value
    panel._fetch_button.click()  # ignored while busy
    result = panel.join(60)
    assert result is not None and result.ready and result.process_id == pid
    assert updates and updates[-1] == 100
    assert not panel._fetch_button.disabled and not panel.busy


def test_progress_goes_through_the_shared_throttle(panel: TopazPanel) -> None:
    from topaz_nb._progress import Progress

    panel._reset_bars()
    assert isinstance(panel._progress, Progress)
    panel._progress._clock = lambda: 5.0  # the same instant: only first and final pass
    updates: list[int] = []
    _bar(panel, "input").observe(lambda ch: updates.append(ch["new"]), names="value")
    total = 10_000_000
    for done in range(10_000, total + 1, 10_000):
        panel._progress("input", done, total)
    assert updates == [0, 100] or updates == [100]  # 10 kB of 10 MB rounds down to 0 %
    assert _bar(panel, "input").value == 100
    assert panel._bar_notes["input"].value == "10.0 MB of 10.0 MB"
    panel._progress("output", 2_000_000, None)
    assert _bar(panel, "output").bar_style == "info"
    assert panel._bar_notes["output"].value == "2.0 MB"


def test_valid_id_mark_is_a_word_not_a_check_mark(panel: TopazPanel) -> None:
    panel._id_field.value = str(uuid.uuid4())
    assert "valid ID" in panel._id_hint.value and "✓" not in panel._id_hint.value
    assert not panel._fetch_button.disabled


def test_buttons_and_field_are_not_cut_off(panel: TopazPanel) -> None:
    for button in (panel._fetch_button, panel._demo_button, panel._save_button):
        assert button.layout.width == "auto" and button.layout.min_width
    assert len(panel._id_field.placeholder) <= 24



def test_failed_process_says_why_in_panel_words(
        panel: TopazPanel, session: Session, make_image: Any) -> None:
    sb = session.sandbox
    assert sb is not None
    pid = sb.add_job(make_image((80, 60)), status="Failed", message="Out of credits")
    comparison = panel.fetch(pid)
    assert comparison is not None and comparison.failed
    status = panel._status.value
    assert f"{pid} failed: Out of credits" in status
    assert "not ready" not in status and "wait" not in status and "%topaz" not in status
    panel._wait_box.value = True
    assert panel.fetch(pid) is None
    assert "failed: Out of credits" in panel._status.value


def test_panel_wording_for_not_ready_and_not_found(
        panel: TopazPanel, session: Session, make_image: Any) -> None:
    sb = session.sandbox
    assert sb is not None
    panel.fetch(sb.add_job(make_image((80, 60)), status="Processing", progress=10))
    assert "wait until ready" in panel._status.value and "%topaz" not in panel._status.value
    panel.fetch(str(uuid.uuid4()))
    status = panel._status.value
    assert "check the ID" in status and "TopazClient" not in status and "%topaz" not in status


def test_unwritable_cache_is_one_line(session: Session, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    session.settings.cache_dir = str(blocker / "cache")
    panel = TopazPanel(session)
    sb = session.sandbox
    assert sb is not None
    assert panel.fetch(sb.demo_ids[0]) is None
    status = panel._status.value
    assert "download cache" in status and "TOPAZ_NB_CACHE" in status
    assert "Unexpected" not in status and "Traceback" not in status


def test_enter_in_the_field_fetches(panel: TopazPanel, session: Session) -> None:
    sb = session.sandbox
    assert sb is not None
    panel.process_id = sb.demo_ids[1]
    # What the front end sends when Enter is pressed in a Text.
    panel._id_field._handle_custom_msg({"event": "submit"}, [])
    result = panel.join(60)
    assert result is not None and result.process_id == sb.demo_ids[1]


def test_choosing_a_recent_id_fills_the_field(panel: TopazPanel, session: Session) -> None:
    sb = session.sandbox
    assert sb is not None
    first, second = sb.demo_ids[0], sb.demo_ids[1]
    panel.fetch(first)
    panel.fetch(second)
    assert [v for _, v in panel._recent.options][:2] == [second, first]
    panel._recent.value = first
    assert panel._id_field.value == first
    panel.fetch(first)
    values = [v for _, v in panel._recent.options]
    assert values[:2] == [first, second] and len(values) == len(set(values))


def test_recent_list_is_unique_and_capped_at_ten(panel: TopazPanel) -> None:
    ids = [str(uuid.uuid4()) for _ in range(12)]
    for pid in ids:
        panel._remember(pid)
    panel._remember(ids[5])
    values = [v for _, v in panel._recent.options]
    assert len(values) == 10 and values[0] == ids[5]
    assert len(set(values)) == 10
    assert ids[0] not in values and ids[11] in values


def test_unknown_id_shows_one_line_error(panel: TopazPanel, session: Session) -> None:
    sb = session.sandbox
    assert sb is not None
    panel.fetch(sb.demo_ids[0])
    missing = str(uuid.uuid4())
    assert panel.fetch(missing) is None
    status = panel._status.value
    assert "not found" in status and missing in status
    assert "Traceback" not in status and "\n" not in status
    assert panel.comparison is None and panel._result.children == ()
    assert panel._save_button.disabled


def test_bad_id_passed_to_fetch_is_reported_not_raised(panel: TopazPanel) -> None:
    assert panel.fetch("12345") is None
    assert "is not a process ID" in panel._status.value


def test_not_ready_job_shows_status_line_and_input(
        panel: TopazPanel, session: Session, make_image: Any) -> None:
    sb = session.sandbox
    assert sb is not None
    pid = sb.add_job(make_image((80, 60)), status="Processing", progress=40)
    comparison = panel.fetch(pid)
    assert comparison is not None and not comparison.ready
    status = panel._status.value
    assert f"Output of {pid} is not ready (Processing, 40%" in status
    assert "wait until ready" in status and "%topaz" not in status
    assert _bar(panel, "input").value == 100
    assert _bar(panel, "output").bar_style == "warning"
    images = [x for x in _all_widgets(panel._result) if isinstance(x, w.Image)]
    assert len(images) == 1 and images[0].value[:4] == b"RIFF"


def test_wait_checkbox_waits_for_the_output(
        panel: TopazPanel, session: Session, make_image: Any) -> None:
    sb = session.sandbox
    assert sb is not None
    pid = sb.add_job(make_image((40, 30)), make_image((80, 60)), ready_in=1.0)
    panel._wait_box.value = True
    said: list[str] = []
    panel._status.observe(lambda ch: said.append(ch["new"]), names="value")
    sb.clear_requests()
    comparison = panel.fetch(pid)
    assert comparison is not None and comparison.ready
    # It polled while the job was processing, and downloaded only afterwards.
    assert any(f"Waiting for {pid}: Processing" in text for text in said)
    paths = [(r.server, r.method) for r in sb.requests]
    first_get = paths.index(("storage", "GET"))
    assert paths[:first_get].count(("api", "GET")) >= 2


def test_save_button_saves_one_side_and_says_in_one_line_why_not_the_other(
        panel: TopazPanel, session: Session, tmp_path: Path) -> None:
    sb = session.sandbox
    assert sb is not None
    pid = sb.demo_ids[0]
    comparison = panel.fetch(pid)
    assert comparison is not None
    files = comparison.files()
    out = tmp_path / "out"
    blocked = out / f"{pid}-input{files['input'].suffix}"
    (blocked / "inside").mkdir(parents=True)  # a directory where the input goes
    panel._save_dir.value = str(out)
    panel._save_button.click()
    saved = out / f"{pid}-output{files['output'].suffix}"
    assert saved.read_bytes() == files["output"].read_bytes()
    status = panel._status.value.replace("&#x27;", "'")
    assert "\n" not in status and "error-color" in status
    assert status.endswith(
        f">Saved output → {saved}. Could not save the input as {str(blocked)!r} (a directory is "
        "in the way): move it aside or type another directory in Save to, then press Save "
        "images again.</span>")
    assert panel._save_note.value == panel._status.value  # and beside the button


def test_no_secret_in_any_widget_state(panel: TopazPanel, session: Session,
                                       make_image: Any, tmp_path: Path) -> None:
    sb = session.sandbox
    assert sb is not None
    panel.fetch(sb.demo_ids[0])
    panel.save(str(tmp_path / "saved"))
    panel.fetch(sb.add_job(make_image((50, 40)), status="Processing"))
    panel.fetch(str(uuid.uuid4()))
    panel.fetch(sb.demo_ids[0])
    text = _state_text(panel)
    assert sb.api_key not in text
    assert "X-Amz-Signature" not in text and "X-Amz-Credential" not in text
    assert not _QUERY_URL.search(text), _QUERY_URL.search(text)
    assert sb.demo_ids[0] in text  # the walk did reach the field and the result


def test_demo_button_appears_without_a_key_and_fills_recent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOPAZ_API_KEY", raising=False)
    session = Session(Topaz(cache_dir=str(tmp_path)))
    try:
        panel = TopazPanel(session)
        assert panel._demo_button.layout.display != "none"
        panel._demo_button.click()
        assert session.sandbox is not None
        ids = session.sandbox.demo_ids
        assert [v for _, v in panel._recent.options] == ids[:10]
        assert panel.process_id == ids[0]
        assert panel._demo_button.layout.display == "none"
        assert "sandbox" in panel._status.value
    finally:
        session.close()


def test_missing_key_is_one_line_with_the_next_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOPAZ_API_KEY", raising=False)
    session = Session(Topaz(cache_dir=str(tmp_path)))
    try:
        panel = TopazPanel(session)
        assert panel.fetch(str(uuid.uuid4())) is None
        assert "TOPAZ_API_KEY" in panel._status.value
        assert "demo sandbox" in panel._status.value
    finally:
        session.close()


def test_key_from_login_never_reaches_a_widget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               sandbox: Any) -> None:
    monkeypatch.delenv("TOPAZ_API_KEY", raising=False)
    session = Session(Topaz(cache_dir=str(tmp_path), base_url=sandbox.base_url))
    session.login(sandbox.api_key)
    try:
        panel = TopazPanel(session)
        assert panel._demo_button.layout.display == "none"
        assert panel.fetch(sandbox.demo_ids[2]) is not None
        assert sandbox.api_key not in _state_text(panel)
    finally:
        session.close()


def test_save_before_fetch_and_unwritable_dir_are_one_line(
        panel: TopazPanel, session: Session, tmp_path: Path) -> None:
    panel._save_button.disabled = False
    panel._save_button.click()
    assert "fetch a process first" in panel._status.value
    assert "fetch a process first" in panel._save_note.value and "error-color" in panel._save_note.value
    sb = session.sandbox
    assert sb is not None
    panel.fetch(sb.demo_ids[0])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    panel._save_dir.value = str(blocker / "sub")
    panel._save_button.click()
    assert "Could not save" in panel._status.value
    assert "Could not save" in panel._save_note.value


def test_no_deprecation_warning_when_built(session: Session) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        panel = TopazPanel(session)
        panel._id_field.value = str(uuid.uuid4())
    assert not panel._fetch_button.disabled


def test_not_ready_comparison_in_the_panel_speaks_of_the_checkbox(
        panel: TopazPanel, session: Session, make_image: Any) -> None:
    sb = session.sandbox
    assert sb is not None
    pid = sb.add_job(make_image((80, 60)), status="Processing", progress=20)
    comparison = panel.fetch(pid)
    assert comparison is not None
    # The status line says it; the result area below does not say it again.
    assert "wait until ready" in panel._status.value
    texts = [x.value for x in _all_widgets(panel._result) if isinstance(x, w.HTML)]
    assert not [t for t in texts if "not ready" in t]
    # Shown on its own (as the review does), the comparison says it in panel words.
    alone = [x.value for x in _all_widgets(comparison.widget("panel")) if isinstance(x, w.HTML)]
    heading = [t for t in alone if "not ready" in t]
    assert heading and "wait until ready" in heading[0] and "%topaz" not in heading[0]


def test_recent_section_lists_the_account_and_opens_a_choice(panel: TopazPanel,
                                                               session: Session) -> None:
    sandbox = session.sandbox
    assert sandbox is not None
    assert panel._account_list.layout.display == "none"  # nothing listed yet
    statuses = panel.list_recent(limit=5)
    assert [st.process_id for st in statuses] == [sandbox.demo_ids[i] for i in (3, 4, 2, 1, 0)]
    labels = [label for label, _ in panel._account_list.options]
    assert labels[1].startswith("coffee-redefine.jpg · Redefine · Failed · ")
    assert labels[1].endswith(" ago") and panel._account_list.layout.display is None
    assert panel.comparison is None
    panel._account_list.value = sandbox.demo_ids[0]
    result = panel.join(30)
    assert result is not None and result.process_id == sandbox.demo_ids[0]
    assert panel._recent.value == sandbox.demo_ids[0]  # and it joins the History
    panel._account_button.click()
    assert len(panel._account_list.options) == len(sandbox.demo_ids)


def test_cancel_stops_a_running_fetch_and_says_so(session: Session, panel: TopazPanel,
                                                   make_image: Any) -> None:
    from conftest import wait_until

    sandbox = session.sandbox
    assert sandbox is not None
    pid = sandbox.add_job(make_image((64, 48)), make_image((128, 96)))
    sandbox.inject("latency", server="storage", seconds=600, path=pid)
    panel.fetch(pid, wait=False)
    wait_until(lambda: any(r.server == "storage" for r in sandbox.requests),
               "the fetch to reach storage")
    assert panel.busy and panel._cancel_button.layout.display is None  # offered while running
    panel.cancel()
    assert panel.join(60) is None
    assert not panel.busy and panel._cancel_button.layout.display == "none"
    assert "Cancelled: the downloads stopped" in panel._status.value


def test_the_comparison_a_new_fetch_replaces_lets_go_of_its_files(
        panel: TopazPanel, session: Session) -> None:
    from topaz_nb.storage import budget

    sb = session.sandbox
    assert sb is not None
    first = panel.fetch(sb.demo_ids[0])
    assert first is not None and budget.usage(session.transfer().cache_dir).in_use == 2
    second = panel.fetch(sb.demo_ids[1])
    assert second is not None and first.closed and not second.closed
    assert budget.usage(session.transfer().cache_dir).in_use == 2


# -- the words on the way, and listings that misbehave ------------------------------

def _shown_texts(panel: TopazPanel) -> list[str]:
    """Every text the panel shows (HTML stripped of its tags), in no special order."""
    texts = []
    for widget in _all_widgets(panel):
        if isinstance(widget, (w.HTML, w.Label)) and widget.value:
            texts.append(re.sub(r"<[^>]+>", "", widget.value))
    return texts


def test_a_failed_process_is_explained_once_without_doubled_stops(
        panel: TopazPanel, session: Session) -> None:
    sb = session.sandbox
    assert sb is not None
    pid = next(p for p in sb.demo_ids if sb.job(p).status == "Failed")
    said = sb.job(pid).message.rstrip(".")  # the server's reason ends with a full stop
    comparison = panel.fetch(pid)
    assert comparison is not None and comparison.failed
    texts = [t for t in _shown_texts(panel) if "<table" not in t and "Dimensions" not in t]
    assert sum(t.count(said) for t in texts) == 1, texts
    assert f"{said}. It has no output" in panel._status.value
    assert not any(mark in t for t in texts for mark in ("..", ".;"))
    assert not any("not ready" in t for t in texts)  # it never will be
    assert _bar(panel, "output").bar_style == "warning"


def test_an_unfinished_process_says_not_ready_once(panel: TopazPanel, session: Session,
                                                  make_image: Any) -> None:
    sb = session.sandbox
    assert sb is not None
    pid = sb.add_job(make_image((80, 60)), status="Processing", progress=20)
    panel.fetch(pid)
    texts = [t for t in _shown_texts(panel) if "Dimensions" not in t]
    assert sum(t.count("not ready") for t in texts) == 1, texts
    assert "wait until ready" in panel._status.value


def test_cancel_while_waiting_says_nothing_was_downloading(session: Session, panel: TopazPanel,
                                                           make_image: Any) -> None:
    from conftest import wait_until

    sb = session.sandbox
    assert sb is not None
    pid = sb.add_job(make_image((64, 48)), status="Processing", progress=10)
    panel._wait_box.value = True
    sb.clear_requests()
    panel.fetch(pid, wait=False)
    wait_until(lambda: f"Waiting for {pid}: Processing" in panel._status.value,
               "the panel to poll the process")
    panel.cancel()
    assert panel.join(60) is None and not panel.busy
    status = panel._status.value
    assert f"Stopped waiting for {pid}: nothing was downloaded" in status
    assert "downloads stopped" not in status and "resume" not in status
    assert [r for r in sb.requests if r.server == "storage"] == []


def test_recent_section_says_when_an_endless_listing_was_cut(panel: TopazPanel,
                                                             session: Session) -> None:
    sb = session.sandbox
    assert sb is not None
    sb.inject("listing", mode="endless", times=None)
    failed = panel.list_recent(status="Failed")
    assert failed.cut == "pages" and len(failed) == 2
    note = panel._account_note.value
    assert note.startswith("2 processes. The list of processes was cut after 100 pages")
    assert "--since" not in note and "since=" not in note and note.count(".") == 2


def test_recent_section_lists_the_rest_and_counts_an_entry_that_is_not_a_process(
        panel: TopazPanel, session: Session) -> None:
    sb = session.sandbox
    assert sb is not None
    sb.inject("listing", mode="bad_entry")
    listed = panel.list_recent(limit=50)
    assert [v for _, v in panel._account_list.options] == [st.process_id for st in listed]
    assert len(listed) == len(sb.demo_ids)
    assert panel._account_note.value == html.escape(
        f"{len(sb.demo_ids)} processes. 1 entry in the API's list was left out: it has no "
        "process ID that is a UUID.")
    assert "not a process ID" not in panel._status.value
