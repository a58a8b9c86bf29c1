"""The topaz-nb command, in-process against real sandboxes, plus real subprocess runs."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from topaz_nb.cli import main

_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOPAZ_API_KEY", raising=False)
    monkeypatch.delenv("TOPAZ_API_URL", raising=False)
    monkeypatch.setenv("TOPAZ_NB_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def keyed(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The sandbox fixture, with the environment pointing the command at it."""
    monkeypatch.setenv("TOPAZ_API_URL", sandbox.base_url)
    monkeypatch.setenv("TOPAZ_API_KEY", sandbox.api_key)
    return sandbox


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("topaz-nb: error: ")
    assert "Traceback" not in err
    return lines[0]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPAZ_")}
    env["TOPAZ_NB_CACHE"] = str(tmp_path / "sub-cache")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
    return env


def test_demo_fetch_first_downloads_both_sides_and_prints_the_table(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["--demo", "--cache-dir", str(tmp_path / "c"), "fetch", "first", "-o",
                 str(out)]) == 0
    captured = capsys.readouterr()
    files = sorted(out.iterdir())
    assert [f.name.split("-")[-1].split(".")[0] for f in files] == ["input", "output"]
    for f in files:
        with Image.open(f) as image:
            image.verify()
    assert re.search(r"Dimensions\s+\d+×\d+\s+\d+×\d+", captured.out)
    assert "Link expires" in captured.out
    assert str(files[0]) in captured.out
    assert "X-Amz-Signature" not in captured.out + captured.err
    assert captured.err == ""  # not a terminal: no progress text
    assert any((tmp_path / "c").rglob("*")), "the --cache-dir was not used"


def test_fetch_with_a_key_from_the_environment(
        keyed: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pid = keyed.demo_ids[1]
    assert main(["fetch", pid, "-o", str(tmp_path / "o"), "--no-cache"]) == 0
    captured = capsys.readouterr()
    assert pid in captured.out
    assert keyed.api_key not in captured.out + captured.err
    assert len(list((tmp_path / "o").iterdir())) == 2
    storage_gets = [r for r in keyed.requests if r.server == "storage" and r.method == "GET"]
    assert len(storage_gets) >= 2


def test_not_ready_says_to_wait_and_wait_works(
        keyed: Any, make_image: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pid = keyed.add_job(make_image((40, 30)), make_image((80, 60)), ready_in=1.5)
    assert main(["fetch", pid, "-o", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "not ready" in line and "--wait" in line and "%topaz" not in line
    assert "TopazClient" not in line
    assert main(["fetch", pid, "-o", str(tmp_path / "o"), "--wait"]) == 0
    assert len(list((tmp_path / "o").iterdir())) == 2



def test_failed_process_says_why_and_never_to_wait(
        keyed: Any, make_image: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pid = keyed.add_job(make_image(), status="Failed", message="Input image is too small")
    for extra in ([], ["--wait"]):
        assert main(["fetch", pid, "-o", str(tmp_path), *extra]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert f"process {pid} failed: Input image is too small; it has no output" in line
        assert "--wait" not in line and "not ready" not in line and "%topaz" not in line
    plain = keyed.add_job(make_image(), status="Cancelled")
    assert main(["links", plain]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"process {plain} was cancelled; it has no output" in line


def test_a_failed_reason_ending_in_a_full_stop_is_said_once_without_doubled_marks(
        keyed: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pid = next(p for p in keyed.demo_ids if keyed.job(p).status == "Failed")
    said = keyed.job(pid).message.rstrip(".")  # the server's reason ends with a full stop
    for command in (["fetch", pid, "-o", str(tmp_path)], ["fetch", pid, "-o", str(tmp_path),
                                                          "--wait"],
                    ["compare", pid, "-o", str(tmp_path / "page.html")], ["links", pid]):
        assert main(command) == 2
        captured = capsys.readouterr()
        line = _one_error_line(captured.err)
        assert line.count(said) == 1 and said not in captured.out, command
        assert f"{said}; it has no output" in line
        assert not any(mark in line for mark in (".;", "..", ";;", ".,")), line


def test_wrong_key_and_unknown_id_speak_of_the_command_line(
        keyed: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(uuid.uuid4())
    assert main(["links", missing]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "not found" in line and "check the ID" in line
    assert "TopazClient" not in line and "%topaz" not in line
    monkeypatch.setenv("TOPAZ_API_KEY", "sbx_WRONG_key")
    assert main(["links", keyed.demo_ids[0]]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "refused the key" in line and "TOPAZ_API_KEY" in line
    assert "%topaz" not in line and "api_key=" not in line and "sbx_WRONG_key" not in line


def test_output_onto_a_file_or_unwritable_dir_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "taken"
    taken.write_text("a file")
    for target in (taken, Path("/proc/topaz-nb-test")):
        assert main(["--demo", "--cache-dir", str(tmp_path / "c"), "fetch", "first",
                     "-o", str(target)]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert "Could not save into" in line and "choose a directory" in line


def _names(tmp_path: Path, pid: str, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """The names ``fetch -o`` gives the two sides of ``pid`` (their extensions are sniffed)."""
    first = tmp_path / "first"
    assert main(["fetch", pid, "-o", str(first)]) == 0
    capsys.readouterr()
    return {p.name.split("-")[-1].split(".")[0]: p.name for p in first.iterdir()}


def test_output_never_follows_a_link_planted_at_a_predictable_name(
        keyed: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pid = keyed.demo_ids[0]
    names = _names(tmp_path, pid, capsys)
    out = tmp_path / "out"
    out.mkdir()
    # The output's temporary name the copy used to write through, and the input's final name.
    planted = [names["output"] + ".part", names["input"]]
    victims = [tmp_path / "victim0", tmp_path / "victim1"]
    for name, victim in zip(planted, victims):
        victim.write_bytes(b"must stay as it is")
        (out / name).symlink_to(victim)
    assert main(["fetch", pid, "-o", str(out)]) == 0
    assert [v.read_bytes() for v in victims] == [b"must stay as it is"] * 2
    for name in names.values():
        assert not (out / name).is_symlink()
        assert (out / name).read_bytes() == (tmp_path / "first" / name).read_bytes()


def test_a_side_that_cannot_be_written_is_one_line_and_the_other_is_saved(
        keyed: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pid = keyed.demo_ids[0]
    names = _names(tmp_path, pid, capsys)
    out = tmp_path / "out"
    blocked = out / names["output"]
    (blocked / "inside").mkdir(parents=True)  # a directory where the output goes
    assert main(["fetch", pid, "-o", str(out)]) == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert line == (f"topaz-nb: error: could not save the output as {str(blocked)!r} (a "
                    "directory is in the way); move it aside or give -o another directory, "
                    "then run the command again")
    assert f"input   {out / names['input']}" in captured.out.splitlines()
    assert (out / names["input"]).read_bytes() == (tmp_path / "first" / names["input"]).read_bytes()


def test_unwritable_cache_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["--demo", "--cache-dir", str(blocker / "cache"), "fetch", "first",
                 "-o", str(tmp_path / "out")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "download cache" in line and "--cache-dir" in line and "%config" not in line


def test_storage_redirect_to_a_malformed_url_is_one_line(
        keyed: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keyed.inject("redirect", server="storage", location="http://[bad", times=None)
    assert main(["fetch", keyed.demo_ids[0], "-o", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "X-Amz-Signature" not in line


_REFUSALS = {
    "AccessDenied": ({"error": "AccessDenied"}, ["denied access", "deleted images", "links"]),
    "Request has expired": ({"error": "AccessDenied", "message": "Request has expired"},
                            ["as expired", "Request has expired", "run it again in a minute"]),
    "ExpiredToken": ({"error": "ExpiredToken", "code": 400, "dialect": "gcs"},
                     ["as expired", "ExpiredToken", "run it again in a minute"]),
    "SignatureDoesNotMatch": ({"error": "SignatureDoesNotMatch"},
                              ["SignatureDoesNotMatch", "changed on its way", "no proxy"]),
    "NoSuchKey": ({"error": "NoSuchKey"}, ["is gone from storage", "7 days", "links"]),
    "no XML": ({"dialect": "none"}, ["no reason given", "run it again", "links"]),
}


@pytest.mark.parametrize("said", _REFUSALS)
def test_storage_refusals_are_worded_for_the_command_line(
        keyed: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], said: str) -> None:
    fault, words = _REFUSALS[said]
    pid = keyed.demo_ids[0]
    keyed.inject("storage_error", server="storage", times=None, **fault)
    assert main(["fetch", pid, "-o", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys.readouterr().err).removeprefix("topaz-nb: error: ")
    assert len(line) <= 300 and line[0].islower() and not line.endswith(".")
    for word in words:
        assert word in line, line
    if "links" in words:
        assert f"topaz-nb links {pid}" in line
    assert "%topaz" not in line and "TopazClient" not in line and "clock" not in line
    assert "X-Amz-Signature" not in line


def test_sandbox_on_a_taken_port_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["sandbox", "--port", str(port)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"port {port}" in line and "--port" in line


def test_demo_on_a_taken_port_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notebook = tmp_path / "demo.ipynb"
    notebook.write_text("{}")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["demo", "--port", str(port), "--no-browser", "--notebook",
                     str(notebook)]) == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert f"port {port} is taken" in line and "--port" in line
    assert "JupyterLab:" not in captured.out


def test_links_are_redacted_unless_asked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--demo", "links", "first"]) == 0
    out = capsys.readouterr().out
    assert "X-Amz" not in out
    urls = re.findall(r"http://\S+", out)
    assert len(urls) == 2 and all(u.endswith("?…") for u in urls)
    assert re.search(r"input\s+expires \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in 5\d min\)", out)
    assert "--show-urls" in out

    assert main(["--demo", "links", "first", "--show-urls"]) == 0
    full = re.findall(r"http://\S+", capsys.readouterr().out)
    assert len(full) == 2 and all("X-Amz-Signature=" in u for u in full)
    assert [u.split("?")[0].rsplit("/", 1)[1] for u in full] == \
        [u.split("?")[0].rsplit("/", 1)[1] for u in urls]


def test_links_never_print_the_key(keyed: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["links", keyed.demo_ids[0]]) == 0
    captured = capsys.readouterr()
    assert keyed.api_key not in captured.out + captured.err
    assert keyed.demo_ids[0] in captured.out


def test_compare_writes_a_self_contained_page(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "pages" / "page.html"
    assert main(["--demo", "compare", "first", "-o", str(page), "--mode", "swipe"]) == 0
    assert "Wrote" in capsys.readouterr().out
    text = page.read_text(encoding="utf-8")
    assert text.lstrip().lower().startswith("<!doctype html")
    # Self-contained: no script, stylesheet or image fetched from anywhere.
    remote = r"""<(script|link|img)[^>]+(src|href)=["']?(https?:)?//"""
    assert not re.search(remote, text, re.IGNORECASE)
    for side in ("input", "output"):  # the previews travel inside the page
        assert re.search(rf'"{side}_preview":\s*"[A-Za-z0-9+/=]{{1000,}}"', text)
    assert "X-Amz" not in text and "127.0.0.1" not in text


def test_compare_onto_a_directory_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--demo", "compare", "first", "-o", str(tmp_path)]) == 2
    assert "is a directory" in _one_error_line(capsys.readouterr().err)


def test_bad_and_unknown_ids_exit_2_with_one_line(
        keyed: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["links", "not-a-uuid"]) == 2
    assert "is not a process ID" in _one_error_line(capsys.readouterr().err)
    missing = str(uuid.uuid4())
    assert main(["fetch", missing, "-o", str(tmp_path / "unused")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert missing in line and "not found" in line
    assert keyed.api_key not in line
    assert not (tmp_path / "unused").exists()


def test_missing_key_says_how_to_set_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["links", str(uuid.uuid4())]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "export TOPAZ_API_KEY=" in line and "--demo" in line
    assert "%topaz" not in line and "api_key=" not in line


def test_first_needs_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch", "first", "-o", "x"]) == 2
    assert "needs --demo" in _one_error_line(capsys.readouterr().err)


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "commands" in capsys.readouterr().err
    assert main(["fetch", str(uuid.uuid4())]) == 2  # -o is required
    assert "-o" in capsys.readouterr().err
    assert main(["sandbox", "--port", "70000"]) == 2
    assert main(["--help"]) == 0
    assert "fetch" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["links", "fetch", "compare"])
def test_the_positional_id_has_help_text(command: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    # argparse lists the positional with its help on the line after "positional arguments".
    section = out.split("positional arguments:", 1)[1]
    assert section.lstrip().startswith("ID the process ID (a UUID) the API returned"), out
    assert "'first' means the sandbox's first demo process" in section


def test_api_url_option_wins_over_the_environment(
        keyed: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TOPAZ_API_URL", "http://127.0.0.1:9/image/v1")
    assert main(["--api-url", keyed.base_url, "links", keyed.demo_ids[0]]) == 0
    assert keyed.demo_ids[0] in capsys.readouterr().out


def test_demo_check_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--check"]) == 0
    out = capsys.readouterr().out
    assert "check passed" in out
    assert re.search(r"input\s+link http://127\.0\.0\.1:\d+/\S+\?… .*image \d+×\d+", out)
    assert re.search(r"output\s+link .*image \d+×\d+", out)


def test_demo_without_a_notebook_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--notebook", str(tmp_path / "nope.ipynb")]) == 2
    assert "no notebook at" in _one_error_line(capsys.readouterr().err)


def test_entry_point_in_a_real_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "topaz_nb.cli", "--demo", "fetch", "first", "-o", str(out)],
        capture_output=True, text=True, env=_env(tmp_path), timeout=120, cwd=tmp_path,
        check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Dimensions" in proc.stdout
    assert len(list(out.iterdir())) == 2

    bad = subprocess.run([sys.executable, "-m", "topaz_nb.cli", "links", "nope"],
                         capture_output=True, text=True, env=_env(tmp_path), timeout=60,
                         check=False)
    assert bad.returncode == 2
    _one_error_line(bad.stderr)


def test_fetch_of_an_output_of_another_aspect_prints_its_table(
        sandbox: Any, make_image: Any, tmp_path: Path) -> None:
    """In a real process: letterboxed 640×480 → 700×500 and cropped 640×480 →
    1280×1000 once ended in a traceback and exit 1."""
    env = {**_env(tmp_path), "TOPAZ_API_URL": sandbox.base_url,
           "TOPAZ_API_KEY": sandbox.api_key}
    for out_size, crop in (((700, 500), False), ((1280, 1000), True)):
        pid = sandbox.add_job(make_image((640, 480)), make_image(out_size), crop_to_fill=crop)
        proc = subprocess.run(
            [sys.executable, "-m", "topaz_nb.cli", "fetch", pid, "-o", str(tmp_path / "o")],
            capture_output=True, text=True, env=env, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        assert re.search(r"PSNR vs input\s+(identical|\d+\.\d dB)", proc.stdout)
        assert re.search(r"SSIM vs input\s+\d\.\d{3}", proc.stdout)


def test_fetch_of_an_output_covering_no_input_pixel_says_so_in_one_row(
        keyed: Any, make_image: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pid = keyed.add_job(make_image((1000, 2)), make_image((2, 1000)), crop_to_fill=True)
    assert main(["fetch", pid, "-o", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    rows = [" ".join(line.split()) for line in captured.out.splitlines() if "vs input" in line]
    assert rows == [("Fidelity vs input not computed: the 2×1000 output (cropped to fill) "
                     "covers no whole pixel of the 1000×2 input")]
    assert "Traceback" not in captured.err and len(list((tmp_path / "o").iterdir())) == 2


_UNREAD: dict[int, bytearray] = {}


def _read_until(proc: subprocess.Popen[str], pattern: str, timeout: float) -> re.Match[str]:
    """The first line ``proc`` prints from now on that matches ``pattern``.

    Reads the pipe itself, waiting with ``select``, so a child that stays up
    without ever printing the line fails the test after ``timeout`` instead of
    blocking it (a blocked ``readline`` would also keep ``close`` waiting).
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    unread = _UNREAD.setdefault(proc.pid, bytearray())
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        while b"\n" in unread:
            end = unread.index(b"\n") + 1
            line = unread[:end].decode("utf-8", "replace")
            del unread[:end]
            seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        unread += chunk
    raise AssertionError(f"{pattern!r} not printed; got {''.join(seen)!r}")


def test_sandbox_subcommand_serves_until_interrupted(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "topaz_nb.cli", "sandbox", "--port", "0", "--api-key", "k-test"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path))
    try:
        base = _read_until(proc, r"API:\s+(http://\S+)", 60).group(1)
        pid = _read_until(proc, r"([0-9a-f-]{36})", 10).group(1)
        answer = requests.get(f"{base}/status/{pid}", headers={"X-API-Key": "k-test"}, timeout=10)
        assert answer.status_code == 200 and answer.json()["process_id"] == pid
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _stop_demo(proc: subprocess.Popen[str]) -> None:
    """After a failed check: Ctrl-C first, so the demo also stops its JupyterLab
    (a server of its own session, which a kill of the demo would leave running)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize("presses", [1, 2])
def test_demo_runs_jupyterlab_and_stops_it_on_ctrl_c(tmp_path: Path, presses: int) -> None:
    """Ctrl-C stops Jupyter and the sandbox; pressed again while Jupyter is
    stopping, it stops it at once, still with no error."""
    from conftest import wait_until

    notebook = tmp_path / "nb" / "demo.ipynb"
    notebook.parent.mkdir()
    notebook.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                    "nbformat_minor": 5}))
    env = _env(tmp_path)
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        env[name] = str(tmp_path / name.lower())
    port = _free_port()
    with (tmp_path / "err.log").open("w") as err_log:  # the child and Jupyter write here
        proc = subprocess.Popen(
            [sys.executable, "-m", "topaz_nb.cli", "demo", "--port", str(port), "--no-browser",
             "--notebook", str(notebook), "--", "--allow-root", "--ServerApp.token=t0k",
             "--ServerApp.password="],
            stdout=subprocess.PIPE, stderr=err_log, text=True, env=env)
    try:
        base = _read_until(proc, r"sandbox API:\s+(http://\S+)", 60).group(1)
        folder = _read_until(proc, r"folder:\s+(\S+)", 10).group(1)
        assert folder == str(notebook.parent)  # the user's own notebook opens where it is
        lab = _read_until(proc, r"JupyterLab:\s+(http://\S+)", 120).group(1)
        assert re.fullmatch(rf"http://[^/]+:{port}/lab/tree/demo\.ipynb\?token=t0k", lab)
        assert requests.get(lab, timeout=10).status_code == 200
        answer = requests.get(f"http://127.0.0.1:{port}/api/contents/demo.ipynb",
                              params={"token": "t0k"}, timeout=5)
        assert answer.status_code == 200
        assert answer.json()["type"] == "notebook"
        proc.send_signal(signal.SIGINT)
        if presses == 2:
            wait_until(lambda: "Stopping JupyterLab" in (tmp_path / "err.log").read_text(),
                       "the demo to start stopping")
            proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert "topaz-nb: error" not in (tmp_path / "err.log").read_text()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/api", timeout=2)
        with pytest.raises(requests.ConnectionError):
            requests.get(base, timeout=2)
    finally:
        _stop_demo(proc)


def test_compare_rejects_an_unknown_mode(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "p.html"
    assert main(["--demo", "compare", "first", "-o", str(page), "--mode", "wipe"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'wipe'" in err and "side-by-side" in err and "Traceback" not in err
    assert not page.exists()
    assert main(["--demo", "compare", "first", "-o", str(page), "--mode", "Blend"]) == 0
    assert '"mode": "blend"' in page.read_text(encoding="utf-8")


def test_demo_finds_the_notebooks_of_the_checkout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from topaz_nb.cli import _demo_sources

    monkeypatch.chdir(tmp_path)  # not from the CWD: from next to the package
    assert _demo_sources() == _ROOT / "notebooks"


def test_demo_copies_its_notebooks_into_its_folder_and_keeps_changed_copies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only missing copies are written; a copy that differs from the shipped
    notebook (run, edited) is kept as it is, and named."""
    from topaz_nb._text import demo_folder_lines
    from topaz_nb.cli import _DemoPlan

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    shipped = sorted((_ROOT / "notebooks").glob("*.ipynb"))
    before = {p: p.read_bytes() for p in shipped}
    plan = _DemoPlan.make(None, None)
    if sys.platform.startswith("linux"):
        assert plan.folder == tmp_path / "data" / "topaz-nb" / "demo"
    assert plan.notebook == plan.folder / "01-quickstart.ipynb"
    assert not plan.folder.exists()  # make() only checks; nothing is written yet
    copied, kept = plan.copy_notebooks()
    assert copied == [p.name for p in shipped] and kept == []
    for source in shipped:
        assert (plan.folder / source.name).read_bytes() == before[source]

    edited = plan.folder / "03-batch-review.ipynb"
    edited.write_text('{"edited": true}')
    (plan.folder / "02-panel.ipynb").unlink()
    copied, kept = _DemoPlan.make(None, None).copy_notebooks()
    assert (copied, kept) == (["02-panel.ipynb"], ["03-batch-review.ipynb"])
    assert edited.read_text() == '{"edited": true}'
    lines = demo_folder_lines(plan.folder, copied=copied, kept=kept, own=False)
    assert lines[0].split()[:2] == ["folder:", str(plan.folder)]
    assert any("kept:" in line and "03-batch-review.ipynb" in line and "delete" in line
               for line in lines)
    assert {p: p.read_bytes() for p in shipped} == before  # the checkout is untouched


def test_demo_opens_the_copy_of_a_shipped_notebook_given_by_path(tmp_path: Path) -> None:
    from topaz_nb.cli import _DemoPlan

    plan = _DemoPlan.make(tmp_path / "work", _ROOT / "notebooks" / "04-model-shootout.ipynb")
    assert plan.notebook == tmp_path / "work" / "04-model-shootout.ipynb" and not plan.own
    own = tmp_path / "mine" / "own.ipynb"
    own.parent.mkdir()
    own.write_text("{}")
    plan = _DemoPlan.make(None, own)
    assert (plan.folder, plan.notebook, plan.own, plan.sources) == (own.parent, own, True, [])


@pytest.mark.parametrize("where", ["notebooks", "notebooks/sub", "file"])
def test_demo_refuses_a_folder_that_would_change_the_checkout_or_is_a_file(
        where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "a-file" if where == "file" else _ROOT / where
    if where == "file":
        folder.write_text("not a folder")
    assert main(["demo", "--no-browser", "--dir", str(folder)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(folder) in line and "--dir" in line
    assert not (_ROOT / "notebooks" / "sub").exists()


def test_demo_own_notebook_must_be_inside_the_folder_given(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    own = tmp_path / "own.ipynb"
    own.write_text("{}")
    assert main(["demo", "--dir", str(tmp_path / "work"), "--notebook", str(own)]) == 2
    assert "outside --dir" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "work").exists()


def _run_notebook_in(path: Path, folder: Path) -> Any:
    """Execute ``path`` as tests/test_notebooks.py does (no key: the notebook's
    own sandbox, see ``_clean_env``), with ``folder`` as its working directory,
    and save it back in place, as JupyterLab's autosave would."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=180, kernel_name="python3", store_widget_state=False,
                            resources={"metadata": {"path": str(folder)}})
    client.execute()
    nbformat.write(nb, path)
    return nb


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_readme_commands_in_order_leave_a_fresh_clone_as_cloned(tmp_path: Path) -> None:
    """`topaz-nb demo` in a fresh clone, every demo notebook run (and saved)
    where it says, then stopped: `git status` of the clone shows nothing, so
    the README's test command that comes next finds the checkout as cloned."""
    import shutil

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(_ROOT), str(clone)], check=True, timeout=120)
    env = _env(tmp_path)
    env.pop("PYTHONPATH")  # the package under test, with the clone's files around it
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        env[name] = str(tmp_path / name.lower())
    port = _free_port()
    with (tmp_path / "err.log").open("w") as err_log:
        # -I: the clone's own topaz_nb/ is not imported in place of the package
        # under test (run from the clone, `-m` would put it first on sys.path).
        proc = subprocess.Popen(
            [sys.executable, "-I", "-m", "topaz_nb.cli", "demo", "--port", str(port),
             "--no-browser", "--", "--allow-root", "--ServerApp.token=t0k",
             "--ServerApp.password="],
            stdout=subprocess.PIPE, stderr=err_log, text=True, env=env, cwd=clone)
    try:
        folder = Path(_read_until(proc, r"folder:\s+(\S+)", 60).group(1))
        assert not folder.is_relative_to(clone)
        if sys.platform.startswith("linux"):
            assert folder == tmp_path / "data" / "topaz-nb" / "demo"
        lab = _read_until(proc, r"JupyterLab:\s+(http://\S+)", 120).group(1)
        assert re.fullmatch(rf"http://[^/]+:{port}/lab/tree/01-quickstart\.ipynb\?token=t0k",
                            lab)
        api = f"http://127.0.0.1:{port}/api/contents"
        listing = requests.get(api, params={"token": "t0k"}, timeout=10).json()
        names = sorted(p.name for p in (clone / "notebooks").glob("*.ipynb"))
        assert sorted(item["name"] for item in listing["content"]) == names  # Jupyter's root

        for name in names:
            nb = _run_notebook_in(folder / name, folder)
            assert any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
        # The runs were saved, outputs and all, in the working folder; the clone's
        # notebooks are checked below by git.
        assert all('"output_type"' in (folder / name).read_text(encoding="utf-8")
                   for name in names)
        # A save through JupyterLab (what its autosave does) lands in the working folder.
        model = requests.get(f"{api}/02-panel.ipynb", params={"token": "t0k"}, timeout=10).json()
        model["content"]["metadata"]["saved_by"] = "jupyterlab"
        answer = requests.put(f"{api}/02-panel.ipynb", params={"token": "t0k"}, timeout=10,
                              json={"type": "notebook", "format": "json",
                                    "content": model["content"]})
        assert answer.status_code == 200, answer.text
        assert "saved_by" in (folder / "02-panel.ipynb").read_text(encoding="utf-8")

        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert "topaz-nb: error" not in (tmp_path / "err.log").read_text()
    finally:
        _stop_demo(proc)
    status = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=clone,
                            capture_output=True, text=True, check=True, timeout=60)
    assert status.stdout == ""


def test_ctrl_c_stops_a_fetch_at_once_with_one_line(sandbox: Any, make_image: Any,
                                                    tmp_path: Path) -> None:
    from conftest import interrupted_child

    pid = sandbox.add_job(make_image((64, 48)), make_image((256, 192)))
    sandbox.inject("latency", server="storage", seconds=600, path=pid)  # never answers in time
    code, _out, err = interrupted_child(
        sandbox, [sys.executable, "-m", "topaz_nb.cli", "fetch", pid, "-o", str(tmp_path / "out")],
        tmp_path)
    assert code == 130
    assert err.strip().splitlines()[-1].startswith("topaz-nb: error: interrupted: ")
    assert "Traceback" not in err and "%topaz" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_an_unreachable_api_names_the_command_line_setting(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("TOPAZ_API_KEY", "some-key")
    code = main(["--api-url", f"http://127.0.0.1:{port}/v1", "--cache-dir", str(tmp_path),
                 "links", str(uuid.uuid4())])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("topaz-nb: error: Could not reach the Topaz API")
    assert "--api-url" in err and "base_url" not in err and "\n" not in err


def test_cache_info_and_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--demo", "fetch", "first", "-o", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    assert main(["cache", "info"]) == 0
    info = capsys.readouterr().out
    assert str(tmp_path / "cache") in info
    assert re.search(r"processes\s+1 \(2 downloaded files\)", info)
    assert "of at most 20.00 GB (Topaz.cache_max_bytes)" in info
    assert main(["cache", "clear"]) == 0
    assert "deleted 2 downloaded files of the cache" in capsys.readouterr().out
    assert main(["cache", "info"]) == 0
    assert re.search(r"processes\s+0 \(0 downloaded files\)", capsys.readouterr().out)
    assert main(["cache", "info", "not-a-process"]) == 2
    _one_error_line(capsys.readouterr().err)


def test_cache_info_says_when_files_in_use_keep_the_cache_over_its_bound(
        sandbox: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from topaz_nb.api.client import TopazClient
    from topaz_nb.comparison import Comparison
    from topaz_nb.storage import Transfer

    with TopazClient(api_key=sandbox.api_key, base_url=sandbox.base_url) as client, \
            Transfer(tmp_path / "cache") as transfer:
        shown = Comparison.fetch(sandbox.demo_ids[0], client=client, transfer=transfer)
        assert main(["--cache-max-bytes", "1000", "cache", "info"]) == 0
        info = capsys.readouterr().out
        assert "of at most 1.0 kB (Topaz.cache_max_bytes)" in info
        assert re.search(r"over its bound: 2 downloaded files in use \([\d.]+ [kM]B with "
                         r"their previews and tile pyramids\) stay while a view shows them", info), info
        shown.close()
    assert main(["--cache-max-bytes", "1e3", "cache", "info"]) == 0
    info = capsys.readouterr().out
    assert "over its bound: the next fetch trims it" in info and "in use" not in info
    assert main(["--cache-max-bytes", "1e12", "cache", "info"]) == 0
    assert "over its bound" not in capsys.readouterr().out
    assert main(["--cache-max-bytes", "lots", "cache", "info"]) == 2
    assert "'lots' is not a number of bytes (e.g. 20e9)" in capsys.readouterr().err
