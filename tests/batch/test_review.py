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


def test_keys_from_the_front_end_decide_and_step(batch, tmp_path):
    path = tmp_path / "r.csv"
    review = batch.review(path=str(path))
    review.widget()
    ids = batch.process_ids
    strip = review._strip
    review._note.value = "crisp"
    strip._handle_custom_msg({"event": "key", "key": "a"}, [])
    strip._handle_custom_msg({"event": "key", "key": "j"}, [])
    assert review.current == ids[1]
    strip._handle_custom_msg({"event": "key", "key": "r"}, [])
    strip._handle_custom_msg({"event": "key", "key": "k"}, [])
    strip._handle_custom_msg({"event": "go", "index": 3}, [])
    strip._handle_custom_msg({"event": "key", "key": "f"}, [])
    assert review.decisions == {ids[0]: "accept", ids[1]: "reject", ids[3]: "flag"}
    assert review.note(ids[0]) == "crisp" and review.note(ids[1]) == ""
    # Editing the note of a decided process rewrites its row.
    review._note.value = "check the sky"
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
