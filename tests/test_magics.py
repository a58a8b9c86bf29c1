"""%topaz on a real IPython shell, against the sandbox over real sockets."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from topaz_nb.batch.gallery import Gallery
from topaz_nb.comparison import Comparison
from topaz_nb.sandbox import STORAGE_PROFILES, Sandbox

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(params=STORAGE_PROFILES)
def sandbox(request):
    """Every magic test runs against S3-like storage and against storage that
    promises nothing (no ETag, no length, octet-stream, URLs ending in the ID)."""
    with Sandbox(storage_profile=request.param) as box:
        yield box


@pytest.fixture
def shell(tmp_path, monkeypatch, sandbox):
    """A fresh shell with the extension loaded, pointed at the sandbox by environment."""
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("TOPAZ_API_URL", sandbox.base_url)
    monkeypatch.setenv("TOPAZ_API_KEY", sandbox.api_key)
    monkeypatch.setenv("TOPAZ_NB_CACHE", str(tmp_path / "cache"))
    InteractiveShell.clear_instance()
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "topaz_nb")
    yield sh
    magics = sh.magics_manager.registry.get("TopazMagics")
    if magics is not None:
        magics.session.close()
    InteractiveShell.clear_instance()


def _magics(shell):
    return shell.magics_manager.registry["TopazMagics"]


def _cell(shell, source):
    """Run a cell; return (result object, captured outputs)."""
    with capture_output() as cap:
        res = shell.run_cell(source)
    return res, cap


def _storage_gets(sandbox):
    return [r for r in sandbox.requests if r.server == "storage" and r.method == "GET"]


def test_help_lists_the_options(shell):
    doc = shell.find_line_magic("topaz").__doc__
    for option in ("--wait", "--mode", "--meta", "--links", "--show-urls", "--save",
                   "--no-cache", "--preview-size"):
        assert option in doc
    res, _ = _cell(shell, "%topaz?")
    assert res.success


def test_one_id_returns_a_comparison_shown_once(shell, sandbox):
    pid = sandbox.demo_ids[0]
    with capture_output() as cap:
        result = shell.run_line_magic("topaz", pid)
    assert isinstance(result, Comparison) and result.ready
    # Only the progress bars were displayed while fetching; the comparison itself is
    # the return value, which IPython shows once as the cell's result.
    for output in cap.outputs:
        assert result.process_id not in output.data.get("text/plain", "")
    res, cap = _cell(shell, f"%topaz {pid}")
    assert isinstance(res.result, Comparison)


def test_variables_expand(shell, sandbox):
    shell.user_ns["pid"] = sandbox.demo_ids[1]
    for source in ("r1 = %topaz $pid", "r2 = %topaz {pid}"):
        res, _ = _cell(shell, source)
        assert res.success, res.error_in_exec
    assert shell.user_ns["r1"].process_id == shell.user_ns["r2"].process_id == sandbox.demo_ids[1]


def test_list_of_ids_gives_a_gallery(shell, sandbox):
    shell.user_ns["ids"] = sandbox.demo_ids
    res, _ = _cell(shell, "g = %topaz $ids")
    assert res.success, res.error_in_exec
    gallery = shell.user_ns["g"]
    assert isinstance(gallery, Gallery) and len(gallery) == len(sandbox.demo_ids)
    assert gallery.process_ids == sandbox.demo_ids
    gallery.wait()  # the magic returns at once; the cards fill in meanwhile
    statuses = {row["process_id"]: row["status"] for row in gallery.summary()}
    assert statuses[sandbox.demo_ids[0]] == "Completed"
    assert "Failed" in statuses.values()
    assert WIDGET_VIEW in gallery._repr_mimebundle_()


def test_recent_lists_newest_first_with_filters(shell, sandbox, make_image):
    old = sandbox.add_job(make_image(), make_image((96, 72)), age=5 * 24 * 3600.0)
    gallery = shell.run_line_magic("topaz", "recent")
    expected = [st.process_id for st in _magics(shell).session.client().recent()]
    assert gallery.process_ids == expected and old == expected[-1]
    assert gallery.process_ids[:3] == [sandbox.demo_ids[i] for i in (3, 4, 2)]
    assert len(shell.run_line_magic("topaz", "recent --limit 3")) == 3
    failed = shell.run_line_magic("topaz", "recent --status failed")
    assert len(failed) == 2 and all(c.status.status == "Failed" for c in failed.cards)
    assert old not in shell.run_line_magic("topaz", "recent --since 2d").process_ids
    # Cards know their file, model and status before their thumbnails arrive.
    card = failed.cards[0]
    assert card.filename and card.model and card.status.reason
    for gallery in (failed,):
        gallery.wait()


@pytest.mark.parametrize("line, words", [
    ("recent --since 2x", "--since: '2x' is not a duration"),
    ("recent --since 9d", "--since: since reaches back"),
    ("recent --status Done", "--status: 'Done' is not a process status: use one of Pending"),
    ("recent --limit 0", "--limit must be at least 1"),
    (f"{'0' * 8}-0000-4000-8000-000000000000 --since 2h", "--since goes with recent"),
    ("recent --file x.csv", "--file goes with review"),
    ("review", "needs process IDs, or recent"),
])
def test_recent_and_review_options_fail_in_one_line(shell, sandbox, line, words):
    sandbox.clear_requests()
    with pytest.raises(UsageError) as err:
        shell.run_line_magic("topaz", line)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert not [r for r in sandbox.requests if r.path.endswith("/status")]


def test_review_recent_writes_to_the_file_given(shell, sandbox, tmp_path):
    path = tmp_path / "picks.csv"
    review = shell.run_line_magic("topaz", f"review recent --status Completed --file {path}")
    from topaz_nb.batch.review import Review

    assert isinstance(review, Review) and review.path == path
    assert review.current == review.ids[0] and len(review.ids) >= 18
    review.decide(None, "accept")
    again = shell.run_line_magic("topaz", f"review {' '.join(review.ids[:3])} --file {path}")
    assert again.current == review.ids[1] and again.decisions == {review.ids[0]: "accept"}
    for r in (review, again):
        r.close()
        r.gallery.cancel()
        r.gallery.wait()


def test_not_ready_without_wait_shows_input_and_one_status_line(shell, sandbox, make_image):
    pid = sandbox.add_job(make_image(), make_image((128, 96)), status="Processing", progress=30)
    result = shell.run_line_magic("topaz", pid)
    assert not result.ready and result.input is not None
    line = result.status_line()
    assert "Processing" in line and "30%" in line and "--wait" in line
    assert line.count("\n") == 0


@pytest.mark.parametrize(("in_size", "out_size", "crop", "row"), [
    ((640, 480), (700, 500), False, "PSNR vs input"),
    ((1920, 1080), (3840, 2400), True, "PSNR vs input"),
    ((1000, 2), (2, 1000), True, "Fidelity vs input"),
])
def test_an_output_of_another_aspect_displays_its_view_and_table(
        shell, sandbox, make_image, capsys, in_size, out_size, crop, row):
    """Displaying ``r = %topaz ID`` once printed a traceback and no widget."""
    pid = sandbox.add_job(make_image(in_size), make_image(out_size), crop_to_fill=crop)
    res, _ = _cell(shell, f"r = %topaz {pid}")
    assert res.success, res.error_in_exec
    capsys.readouterr()
    data, _metadata = shell.display_formatter.format(shell.user_ns["r"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert WIDGET_VIEW in data
    lines = [line for line in data["text/plain"].splitlines() if "vs input" in line]
    assert lines and lines[0].split()[:3] == row.split()
    if row.startswith("Fidelity"):
        assert len(lines) == 1 and "not computed: " in lines[0]


def test_wait_polls_until_ready(shell, sandbox, make_image):
    pid = sandbox.add_job(make_image(), make_image((128, 96)), ready_in=1.5)
    result = shell.run_line_magic("topaz", f"{pid} --wait 30")
    assert result.ready and result.output.size == (128, 96)


def test_wait_on_failed_process_is_a_usage_error(shell, sandbox):
    failed = sandbox.demo_ids[-1]
    with pytest.raises(UsageError, match="(?i)failed") as exc:
        shell.run_line_magic("topaz", f"{failed} --wait 5")
    assert "--wait" not in str(exc.value)


def test_mode_preview_size_and_config(shell, sandbox):
    result = shell.run_line_magic("topaz", f"{sandbox.demo_ids[0]} --mode difference --preview-size 128")
    assert result.view.mode == "difference" and result.preview_size == 128

    shell.run_cell("%config Topaz.preview_size = 1024")
    assert _magics(shell).settings.preview_size == 1024
    again = shell.run_line_magic("topaz", sandbox.demo_ids[0])
    assert again.preview_size == 1024
    with pytest.raises(UsageError, match="between 64 and 8192"):
        shell.run_line_magic("topaz", f"{sandbox.demo_ids[0]} --preview-size 10")


def test_meta_downloads_no_image(shell, sandbox):
    sandbox.clear_requests()
    result = shell.run_line_magic("topaz", f"{sandbox.demo_ids[0]} --meta")
    assert not result.downloaded and _storage_gets(sandbox) == []
    labels = {r[0] for r in result.rows()}
    assert "Link expires" in labels
    # Only what storage's HEAD said is shown: bare storage announces no size.
    assert ("File size" in labels) == (sandbox.storage_profile == "s3")


def test_links_are_redacted_unless_asked_and_not_clickable(shell, sandbox):
    pid = sandbox.demo_ids[0]
    table = shell.run_line_magic("topaz", f"{pid} --links")
    lines = repr(table).splitlines()
    assert len(lines) == 2 and all(ln.startswith(pid) and "expires" in ln for ln in lines)
    page = table._repr_html_()
    # A notebook shows the HTML table, where a URL is text in a cell: nothing
    # turns the redacted address (a 403 without its signature) into a link.
    assert "?…" in page and "Signature" not in page and "<a " not in page
    assert "Signature" not in repr(table)
    full = shell.run_line_magic("topaz", f"{pid} --links --show-urls")
    assert "Signature" in repr(full) or "signature" in repr(full)


def test_not_ready_assigned_still_says_one_line_on_stderr(shell, sandbox, make_image):
    pid = sandbox.add_job(make_image(), make_image((128, 96)), status="Processing", progress=30)
    res, cap = _cell(shell, f"r = %topaz {pid}")
    assert res.success and shell.user_ns["r"].output is None
    lines = [ln for ln in cap.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and pid in lines[0] and "not ready" in lines[0]
    assert "--wait" in lines[0] and "30%" in lines[0]



def test_failed_process_says_failed_with_the_reason_never_wait(shell, sandbox, make_image):
    pid = sandbox.add_job(make_image(), status="Failed",
                          message="Input image is too small for this model")
    res, cap = _cell(shell, f"r = %topaz {pid}")
    assert res.success
    line = cap.stderr.strip()
    assert "\n" not in line and "failed: Input image is too small" in line
    assert "not ready" not in line and "--wait" not in line and "ETA" not in line
    result = shell.user_ns["r"]
    assert result.failed and result.status_line() == line
    assert "(failed)" in repr(result)
    with pytest.raises(UsageError) as waited:
        shell.run_line_magic("topaz", f"{pid} --wait 5")
    assert "too small" in str(waited.value) and "--wait" not in str(waited.value)


def test_cancelled_process_without_reason(shell, sandbox, make_image):
    pid = sandbox.add_job(make_image(), status="Cancelled")
    result = shell.run_line_magic("topaz", pid)
    assert result.status_line() == (f"Process {pid} was cancelled. It has no output: start it "
                                    "again with other settings or another input.")


def test_no_key_points_to_demo_not_api_key(shell, monkeypatch):
    monkeypatch.delenv("TOPAZ_API_KEY")
    with pytest.raises(UsageError) as missing:
        shell.run_line_magic("topaz", "00000000-0000-4000-8000-000000000000")
    text = str(missing.value)
    assert "%topaz demo" in text and "%topaz login" in text and "api_key=" not in text


def test_not_found_wording_fits_the_notebook(shell):
    with pytest.raises(UsageError) as missing:
        shell.run_line_magic("topaz", "00000000-0000-4000-8000-000000000000")
    text = str(missing.value)
    assert "not found" in text and "check the ID" in text
    assert "TopazClient" not in text and "\n" not in text


def test_unwritable_cache_is_one_line_with_the_setting_to_change(shell, sandbox, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    shell.run_cell(f"%config Topaz.cache_dir = {str(blocker / 'cache')!r}")
    with pytest.raises(UsageError) as bad:
        shell.run_line_magic("topaz", sandbox.demo_ids[0])
    text = str(bad.value)
    assert "\n" not in text and "cache" in text and "%config Topaz.cache_dir" in text
    _, cap = _cell(shell, f"%topaz {sandbox.demo_ids[1]}")
    assert "Traceback" not in cap.stdout + cap.stderr


def test_save_onto_a_file_is_one_line(shell, sandbox, tmp_path):
    target = tmp_path / "taken"
    target.write_text("a file")
    with pytest.raises(UsageError) as bad:
        shell.run_line_magic("topaz", f"{sandbox.demo_ids[0]} --save {target}")
    text = str(bad.value)
    assert "\n" not in text and "Could not save into" in text and "choose a directory" in text
    with pytest.raises(UsageError, match="Could not save into"):
        shell.run_line_magic("topaz", f"{sandbox.demo_ids[0]} --save /proc/topaz-nb-test")


def test_save_never_follows_a_link_planted_at_a_predictable_name(shell, sandbox, tmp_path):
    pid = sandbox.demo_ids[0]
    files = shell.run_line_magic("topaz", pid).files()
    out = tmp_path / "saved"
    out.mkdir()
    # The output's temporary name the copy used to write through, and the input's final name.
    planted = [f"{pid}-output{files['output'].suffix}.part", f"{pid}-input{files['input'].suffix}"]
    victims = [tmp_path / "victim0", tmp_path / "victim1"]
    for name, victim in zip(planted, victims):
        victim.write_bytes(b"must stay as it is")
        (out / name).symlink_to(victim)
    shell.run_line_magic("topaz", f"{pid} --save {out}")
    assert [v.read_bytes() for v in victims] == [b"must stay as it is"] * 2
    for side, source in files.items():
        saved = out / f"{pid}-{side}{source.suffix}"
        assert not saved.is_symlink() and saved.read_bytes() == source.read_bytes()


def test_save_reports_a_side_it_cannot_write_in_one_line_and_saves_the_other(
        shell, sandbox, tmp_path, capsys):
    pid = sandbox.demo_ids[0]
    files = shell.run_line_magic("topaz", pid).files()
    out = tmp_path / "saved"
    blocked = out / f"{pid}-output{files['output'].suffix}"
    (blocked / "inside").mkdir(parents=True)  # a directory where the output goes
    capsys.readouterr()
    with pytest.raises(UsageError) as bad:
        shell.run_line_magic("topaz", f"{pid} --save {out}")
    assert str(bad.value) == (
        f"Could not save the output as {str(blocked)!r} (a directory is in the way): move it "
        "aside or give --save another directory, then run the cell again.")
    saved = out / f"{pid}-input{files['input'].suffix}"
    assert capsys.readouterr().out.splitlines() == [f"saved input: {saved}"]
    assert saved.read_bytes() == files["input"].read_bytes()


def test_bogus_mode_setting_is_one_line(shell, caplog):
    with caplog.at_level("ERROR"):
        _, cap = _cell(shell, '%config Topaz.mode = "bogus"')
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert "Topaz.mode cannot be 'bogus'" in messages[0] and "side-by-side" in messages[0]
    assert "Traceback" not in cap.stdout + cap.stderr
    assert _magics(shell).settings.mode == "swipe"
    shell.run_cell('%config Topaz.mode = "Blend"')
    assert _magics(shell).settings.mode == "blend"


def test_save_and_no_cache(shell, sandbox, tmp_path, capsys):
    pid = sandbox.demo_ids[0]
    result = shell.run_line_magic("topaz", f"{pid} --save {tmp_path / 'saved'}")
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == sorted(
        f"{pid}-{side}{path.suffix}" for side, path in result.files().items())
    assert "saved output" in capsys.readouterr().out

    sandbox.clear_requests()
    shell.run_line_magic("topaz", pid)
    assert _storage_gets(sandbox) == []
    shell.run_line_magic("topaz", f"{pid} --no-cache")
    assert len(_storage_gets(sandbox)) == 2


def test_no_id_shows_the_panel(shell):
    from topaz_nb.panel import TopazPanel

    panel = shell.run_line_magic("topaz", "")
    assert isinstance(panel, TopazPanel)


def test_demo_switches_to_a_sandbox_and_lists_jobs(shell, monkeypatch):
    monkeypatch.delenv("TOPAZ_API_KEY")
    with pytest.raises(UsageError, match="TOPAZ_API_KEY"):
        shell.run_line_magic("topaz", "00000000-0000-4000-8000-000000000000")
    jobs = shell.run_line_magic("topaz", "demo")
    assert len(jobs) >= 3 and all(len(j) == 36 for j in jobs)
    assert "Completed" in jobs._repr_html_() and "sandbox" in repr(jobs._repr_html_())
    result = shell.run_line_magic("topaz", jobs[0])
    assert result.ready


def test_login_keeps_the_key_in_memory_only(shell, sandbox, monkeypatch):
    import getpass

    monkeypatch.delenv("TOPAZ_API_KEY")
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": sandbox.api_key)
    shell.run_line_magic("topaz", "login")
    assert "TOPAZ_API_KEY" not in os.environ
    assert shell.run_line_magic("topaz", sandbox.demo_ids[0]).ready


def _stored(shell, source):
    """Run a cell as a notebook front end does: kept in the history (``In``)."""
    with capture_output() as cap:
        res = shell.run_cell(source, store_history=True)
    return res, cap


def _said(cap):
    return [line for line in cap.stderr.splitlines() if line.strip()]


def test_a_key_set_with_env_in_a_cell_is_warned_once_in_one_line_without_the_key(
        shell, sandbox, monkeypatch):
    key, pid = sandbox.api_key, sandbox.demo_ids[0]
    # Set before the shell started, and only named in a cell: nothing to say.
    _stored(shell, 'import os\nos.environ.get("TOPAZ_API_KEY") is not None')
    res, cap = _stored(shell, f"%topaz {pid} --meta")
    assert res.success and _said(cap) == []

    monkeypatch.delenv("TOPAZ_API_KEY")
    cell = shell.execution_count
    _, cap = _stored(shell, f"%env TOPAZ_API_KEY={key}")
    assert key in cap.stdout  # what IPython prints, and a saved notebook keeps
    res, cap = _stored(shell, f"%topaz {pid} --meta")
    assert res.success
    (line,) = _said(cap)
    assert key not in cap.stdout + cap.stderr
    assert f"source and output of cell [{cell}]" in line
    assert "clear the output" in line and "%topaz login" in line
    _, cap = _stored(shell, f"%topaz {pid} --meta")
    assert _said(cap) == []  # once
    cell = shell.execution_count
    _stored(shell, f"%env TOPAZ_API_KEY={key}-2")  # another key: warned again (the panel too)
    _, cap = _stored(shell, "%topaz")
    (line,) = _said(cap)
    assert "source and output of cells " in line and f"[{cell}]" in line
    assert key not in cap.stdout + cap.stderr


@pytest.mark.parametrize("how, where", [
    ('import os\nos.environ["TOPAZ_API_KEY"] = "{key}"', "source of"),
    ("from pathlib import Path\nk = Path({file!r}).read_text().strip()\n%env TOPAZ_API_KEY=$k",
     "output of"),
])
def test_a_key_given_away_by_a_cell_in_other_ways_is_warned(shell, sandbox, monkeypatch,
                                                            tmp_path, how, where):
    monkeypatch.delenv("TOPAZ_API_KEY")
    key_file = tmp_path / "key.txt"
    key_file.write_text(sandbox.api_key)
    cell = shell.execution_count
    _stored(shell, how.format(key=sandbox.api_key, file=str(key_file)))
    _, cap = _stored(shell, f"%topaz {sandbox.demo_ids[0]} --meta")
    (line,) = _said(cap)
    assert f"in the {where} cell [{cell}]" in line and sandbox.api_key not in line


def test_login_never_warns_and_takes_no_key_as_argument(shell, sandbox, monkeypatch):
    import getpass

    monkeypatch.delenv("TOPAZ_API_KEY")
    with pytest.raises(UsageError) as typed:
        shell.run_line_magic("topaz", f"login {sandbox.api_key}")
    assert "asks for the key" in str(typed.value) and sandbox.api_key not in str(typed.value)
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": sandbox.api_key)
    _stored(shell, "%topaz login")
    _, cap = _stored(shell, f"%topaz {sandbox.demo_ids[0]} --meta")
    assert _said(cap) == []


def _kernel_run(client, code, *, reply=None):
    """Execute ``code`` in a real kernel; every message it sent, and its input requests.

    ``reply`` answers an input request (``getpass``) through the stdin
    channel, the way JupyterLab's password box does.
    """
    messages, requests = [], []

    def on_input(msg):
        requests.append(msg)
        client.input(reply)

    answer = client.execute_interactive(code, timeout=120, allow_stdin=reply is not None,
                                        output_hook=messages.append, stdin_hook=on_input)
    return answer, messages, requests


@pytest.fixture
def kernel(tmp_path):
    """A real IPython kernel (as JupyterLab starts it) with the extension loaded,
    pointed at a sandbox whose key is nowhere in its environment."""
    from jupyter_client.manager import start_new_kernel

    with Sandbox(api_key="sbx_LOGIN_KEY_never_shown_42") as box:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOPAZ_")}
        env.update(TOPAZ_API_URL=box.base_url, TOPAZ_NB_CACHE=str(tmp_path / "cache"),
                   IPYTHONDIR=str(tmp_path / "ipython"))
        manager, client = start_new_kernel(kernel_name="python3", env=env, cwd=str(tmp_path))
        try:
            answer, _, _ = _kernel_run(client, "%load_ext topaz_nb")
            assert answer["content"]["status"] == "ok"
            yield box, client
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=False)


def test_login_in_a_real_kernel_keeps_the_key_out_of_outputs_and_history(kernel, tmp_path):
    box, client = kernel
    key = box.api_key
    answer, messages, asked = _kernel_run(client, "%topaz login", reply=key)
    assert answer["content"]["status"] == "ok"
    (request,) = asked
    assert request["content"]["password"] is True  # the front end masks what is typed
    answer, more, _ = _kernel_run(client, f"%topaz {box.demo_ids[0]} --meta")
    assert answer["content"]["status"] == "ok"
    assert any(r.headers.get("X-API-Key") == key for r in box.requests if r.server == "api")
    _, env_check, _ = _kernel_run(client, "import os; print('TOPAZ_API_KEY' in os.environ)")
    assert any(m["content"].get("text", "").strip() == "False" for m in env_check)
    history = client.history(raw=True, output=True, hist_access_type="tail", n=100,
                             reply=True, timeout=30)["content"]["history"]
    assert any("%topaz login" in entry[2][0] for entry in history)
    shown = json.dumps([m["content"] for m in messages + more + env_check]) + json.dumps(history)
    assert key not in shown and "env: TOPAZ_API_KEY" not in shown


def test_login_where_the_front_end_cannot_ask_is_one_line(kernel):
    _, client = kernel
    _, messages, _ = _kernel_run(client, "%topaz login")  # no stdin, as nbclient runs
    said = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
    assert [m for m in messages if m["msg_type"] == "error"] == []  # no traceback
    assert said.startswith("UsageError: ") and said.count("\n") == 1
    assert "cannot ask for input" in said and "TOPAZ_API_KEY" in said


def test_errors_are_one_line_usage_errors(shell, sandbox, monkeypatch):
    sandbox.clear_requests()
    with pytest.raises(UsageError) as bad:
        shell.run_line_magic("topaz", "12345")
    assert "not a process ID" in str(bad.value) and sandbox.requests == []

    with pytest.raises(UsageError, match="not found|7-day") as missing:
        shell.run_line_magic("topaz", "00000000-0000-4000-8000-000000000000")
    assert "\n" not in str(missing.value)

    monkeypatch.setenv("TOPAZ_API_KEY", "sbx_WRONG_key_value_123")
    with pytest.raises(UsageError) as wrong:
        shell.run_line_magic("topaz", sandbox.demo_ids[0])
    assert "sbx_WRONG_key_value_123" not in str(wrong.value)
    assert "TOPAZ_API_KEY" in str(wrong.value) or "key" in str(wrong.value).lower()


def test_error_cell_shows_no_traceback(shell, capsys):
    shell.run_cell("%topaz nonsense-id")
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "UsageError" in text and "not a process ID" in text
    assert "Traceback" not in text


def test_loads_through_shell_app_extensions(tmp_path):
    env = dict(os.environ, IPYTHONDIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "IPython", "--no-banner", "--colors=NoColor",
         "--InteractiveShellApp.extensions=['topaz_nb']",
         "-c", "print('topaz' in get_ipython().magics_manager.magics['line'])"],
        capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("True")


def test_corrupt_or_non_image_objects_are_one_line_errors(shell, sandbox, make_image):
    import io

    page = sandbox.add_job(b"<!DOCTYPE html><html><body>Access denied</body></html>",
                           make_image((128, 96)))
    with pytest.raises(UsageError, match="HTML") as html_error:
        shell.run_line_magic("topaz", page)
    assert "\n" not in str(html_error.value) and "input" in str(html_error.value)

    buf = io.BytesIO()
    make_image((256, 192)).save(buf, "PNG")
    truncated = sandbox.add_job(make_image(), buf.getvalue()[: len(buf.getvalue()) // 2])
    # The header is intact, so it opens; the pixels are not: a one-line error, no crash.
    with pytest.raises(UsageError, match="truncated|corrupt") as cut:
        shell.run_line_magic("topaz", truncated)
    assert "output" in str(cut.value) and "\n" not in str(cut.value)


def test_storage_redirect_to_a_malformed_url_is_one_line(shell, sandbox):
    sandbox.inject("redirect", server="storage", location="http://[bad", times=None)
    with pytest.raises(UsageError) as bad:
        shell.run_line_magic("topaz", f"{sandbox.demo_ids[0]} --no-cache")
    text = str(bad.value)
    assert "\n" not in text and ("input" in text or "output" in text)
    assert "X-Amz-Signature" not in text


# Storage refusals as S3 or GCS word them: the fault's arguments, then what the
# line must say (the reason, and the next step in this place's words).
_REFUSALS = {
    "AccessDenied": ({"error": "AccessDenied"},
                     ["denied access", "deleted images", "--links"]),
    "Request has expired": ({"error": "AccessDenied", "message": "Request has expired"},
                            ["as expired", "Request has expired", "Run it again in a minute"]),
    "ExpiredToken": ({"error": "ExpiredToken", "code": 400, "dialect": "gcs"},
                     ["as expired", "ExpiredToken", "Run it again in a minute"]),
    "SignatureDoesNotMatch": ({"error": "SignatureDoesNotMatch"},
                              ["SignatureDoesNotMatch", "changed on its way", "no proxy"]),
    "NoSuchKey": ({"error": "NoSuchKey"}, ["is gone from storage", "7 days", "--links"]),
    "no XML": ({"dialect": "none"}, ["no reason given", "Run it again", "--links"]),
}


@pytest.mark.parametrize("said", _REFUSALS)
def test_storage_refusals_are_worded_for_what_they_are(shell, sandbox, said):
    fault, words = _REFUSALS[said]
    pid = sandbox.demo_ids[0]
    sandbox.inject("storage_error", server="storage", times=None, **fault)
    with pytest.raises(UsageError) as refused:
        shell.run_line_magic("topaz", f"{pid} --no-cache")
    text = str(refused.value)
    assert "\n" not in text and len(text) <= 300 and text.endswith(".")
    for word in words:
        assert word in text, text
    if "--links" in words:
        assert f"%topaz {pid} --links" in text
    assert "clock" not in text and "TopazClient" not in text and "topaz-nb" not in text
    assert "X-Amz-Signature" not in text


_INTERRUPTIBLE_CELL = """
import sys
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "topaz_nb")
result = shell.run_cell("r = %topaz " + sys.argv[1])
print("cell ended with", type(result.error_in_exec).__name__, flush=True)
"""


def test_ctrl_c_stops_a_fetch_at_once_with_one_line(sandbox, make_image, tmp_path):
    """A kernel interrupt while storage holds the download: the cell ends, one line, no wait."""
    from conftest import interrupted_child

    pid = sandbox.add_job(make_image((64, 48)), make_image((256, 192)))
    sandbox.inject("latency", server="storage", seconds=600, path=pid)  # never answers in time
    code, out, err = interrupted_child(sandbox, [sys.executable, "-c", _INTERRUPTIBLE_CELL, pid],
                                       tmp_path)
    assert "cell ended with UsageError" in out
    assert "Interrupted: run the cell again" in err and "Traceback" not in err
    assert code == 0


def test_grid_shows_several_processes_as_one_shootout(shell, sandbox):
    from topaz_nb.batch.shootout import Shootout

    ids = sandbox.add_shootout()
    shell.user_ns["ids"] = ids
    res, cap = _cell(shell, "%topaz $ids --grid")
    assert res.success, res.error_in_exec
    assert isinstance(res.result, Shootout)
    assert res.result.view.mode == "grid" and len(res.result.view.panes) == 4
    assert "Not the same input" not in cap.stderr


def test_grid_with_too_many_processes_is_one_line(shell, sandbox):
    ids = sandbox.add_shootout() * 3
    with pytest.raises(UsageError, match=r"^--grid compares at most 8 processes; got 9\.$"):
        _magics(shell).topaz(" ".join(ids) + " --grid")


# -- listings that misbehave, and the words on the way ----------------------------

def _lines(text):
    return [ln for ln in text.splitlines() if ln.strip()]


def _failed_demo(sandbox):
    return [p for p in sandbox.demo_ids if sandbox.job(p).status == "Failed"]


def test_recent_from_an_endless_listing_stops_and_says_why_in_one_line(shell, sandbox):
    sandbox.inject("listing", mode="endless", times=None)
    sandbox.clear_requests()
    res, cap = _cell(shell, "failed = %topaz recent --status Failed")
    assert res.success
    failed = shell.user_ns["failed"]
    assert sorted(failed.process_ids) == sorted(_failed_demo(sandbox))
    lists = [r for r in sandbox.requests if r.path.endswith("/status")]
    assert len(lists) == 100  # the page bound, not for ever
    [line] = _lines(cap.stderr)
    assert "cut after 100 pages" in line and "kept announcing more" in line
    assert "--since" in line and "since=" not in line
    failed.cancel()
    failed.wait()


def test_recent_stops_at_a_cursor_handed_back(shell, sandbox):
    sandbox.inject("listing", mode="stuck_cursor", times=None)
    sandbox.clear_requests()
    res, cap = _cell(shell, "failed = %topaz recent --status Failed")
    assert res.success and len([r for r in sandbox.requests if r.path.endswith("/status")]) == 2
    [line] = _lines(cap.stderr)
    assert "stopped after 2 pages" in line and "cursor it had sent before" in line
    shell.user_ns["failed"].wait()


def test_recent_skips_an_entry_that_is_not_a_process_and_lists_the_rest(shell, sandbox):
    sandbox.inject("listing", mode="bad_entry")
    res, cap = _cell(shell, "every = %topaz recent")
    assert res.success, res.error_in_exec
    every = shell.user_ns["every"]
    assert sorted(every.process_ids) == sorted(sandbox.demo_ids)
    [line] = _lines(cap.stderr)
    assert line == "1 entry in the API's list was left out: it has no process ID that is a UUID."
    every.cancel()
    every.wait()


def test_recent_limit_counts_each_process_once(shell, sandbox, make_image):
    for i in range(8):
        sandbox.add_job(make_image(), make_image((96, 72)), age=60.0 + i)
    sandbox.inject("listing", mode="overlap", times=None)  # pages repeat the last one's end
    sandbox.clear_requests()
    some = shell.run_line_magic("topaz", "recent --limit 6 --status Completed")
    assert len([r for r in sandbox.requests if r.path.endswith("/status")]) >= 2
    assert len(some) == 6 == len(set(some.process_ids))
    some.cancel()
    some.wait()


def test_a_failed_process_is_explained_once_without_doubled_stops(shell, sandbox):
    pid = _failed_demo(sandbox)[0]
    reason = sandbox.job(pid).message
    assert reason.endswith(".")  # the server's reason is a sentence with its full stop
    said = reason.rstrip(".")
    # Shown as the cell's result: its display says it; nothing is printed besides.
    res, cap = _cell(shell, f"%topaz {pid}")
    assert res.success and isinstance(res.result, Comparison)
    assert said not in cap.stderr and cap.stdout.count(said) == 1  # Out[…]: the display
    bundle = res.result._repr_mimebundle_()
    assert bundle["text/plain"].count(said) == 1
    line = res.result.status_line("magic")
    assert f"{said}. It has no output" in line and ".." not in line
    # Assigned, or not the cell's last line: nothing displays it, so stderr says it, once.
    for source in (f"r = %topaz {pid}", f"%topaz {pid}\nx = 1"):
        res, cap = _cell(shell, source)
        assert res.success and _lines(cap.stderr) == [line], source
        assert said not in cap.stdout
    errors = shell.run_line_magic("topaz", "recent --status Failed")
    errors.wait()
    assert all(".." not in text for text in errors.errors.values())
    assert any(said in text for text in errors.errors.values())
