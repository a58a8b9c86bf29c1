"""Gallery: several processes through a bounded pool, over real sockets."""

from __future__ import annotations

import threading

import pytest

from topaz_nb.api.client import TopazClient
from topaz_nb.batch.gallery import Gallery
from topaz_nb.errors import InvalidProcessId
from topaz_nb.storage import Transfer
from topaz_nb.view.widget import CompareView

MISSING = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def parts(sandbox, tmp_path):
    with TopazClient(api_key=sandbox.api_key, base_url=sandbox.base_url) as client, \
            Transfer(tmp_path / "cache") as transfer:
        yield client, transfer


def test_fetches_all_keeps_order_and_reports_failures_per_process(sandbox, parts):
    client, transfer = parts
    ids = sandbox.demo_ids + [MISSING]
    gallery = Gallery.fetch(ids, client=client, transfer=transfer, max_workers=2)

    assert gallery.process_ids == ids and len(gallery) == len(ids)
    assert sum(c.error is None for c in gallery.cards) == len(sandbox.demo_ids)
    failed = [c.process_id for c in gallery.cards if c.failed]
    assert failed, "the demo data has a failed process"
    # A failed process is counted with those that could not be fetched.
    assert list(gallery.errors) == failed + [MISSING]
    assert "not found" in gallery.errors[MISSING].lower()
    assert all("failed" in gallery.errors[pid] and "wait" not in gallery.errors[pid]
               for pid in failed)
    assert f"{len(failed) + 1} failed" in repr(gallery)
    rows = {r["process_id"]: r for r in gallery.summary()}
    first = rows[sandbox.demo_ids[0]]
    assert first["status"] == "Completed" and first["scale"] == pytest.approx(4.0)
    assert first["output_size"] == "512×512" and first["output_format"] == "PNG"
    assert rows[MISSING]["status"] == "error"
    assert {r["status"] for r in rows.values()} >= {"Completed", "Processing", "Failed"}


def test_pool_is_bounded(sandbox, parts, make_image):
    client, transfer = parts
    ids = [sandbox.add_job(make_image(), make_image((128, 96))) for _ in range(6)]
    sandbox.inject("latency", server="storage", seconds=0.2, times=None)
    running, peak, lock = [0], [0], threading.Lock()

    def on_done(_pid: str) -> None:
        with lock:
            running[0] -= 1

    original = client.link_source

    def counting_source(pid, side):
        if side == "input":
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
        return original(pid, side)

    client.link_source = counting_source  # observe how many processes are in flight
    Gallery.fetch(ids, client=client, transfer=transfer, max_workers=2, on_done=on_done)
    assert peak[0] == 2


def test_the_first_card_has_the_link_to_itself_before_the_others_start(
        sandbox, parts, make_image):
    client, transfer = parts
    ids = [sandbox.add_job(make_image(), make_image((128, 96))) for _ in range(5)]
    sandbox.clear_requests()
    Gallery.fetch(ids, client=client, transfer=transfer, max_workers=4)
    storage = [r.path for r in sandbox.requests if r.server == "storage"]
    first = [i for i, path in enumerate(storage) if ids[0] in path]
    others = [i for i, path in enumerate(storage) if ids[0] not in path]
    # Both of the first process's objects (HEAD and GET) before any other's.
    assert len(first) == 4 and others
    assert max(first) < min(others)
    # Then the rest share the pool as before.
    assert {p.split("/")[2] for p in storage} == set(ids)


def test_a_gallery_started_for_one_process_fetches_it_first(sandbox, parts, make_image):
    client, transfer = parts
    ids = [sandbox.add_job(make_image(), make_image((128, 96))) for _ in range(4)]
    sandbox.clear_requests()
    Gallery(ids, client=client, transfer=transfer).start(first=ids[2]).wait()
    storage = [r.path for r in sandbox.requests if r.server == "storage"]
    assert all(ids[2] in path for path in storage[:4])
    assert {p.split("/")[2] for p in storage[4:]} == {ids[0], ids[1], ids[3]}


def test_bad_id_anywhere_sends_nothing(sandbox, parts):
    client, transfer = parts
    sandbox.clear_requests()
    with pytest.raises(InvalidProcessId):
        Gallery.fetch([sandbox.demo_ids[0], "nope"], client=client, transfer=transfer)
    assert sandbox.requests == []


def test_compare_button_opens_the_comparison(sandbox, parts):
    client, transfer = parts
    gallery = Gallery.fetch(sandbox.demo_ids[:2] + [sandbox.demo_ids[3]], client=client,
                            transfer=transfer)
    box = gallery.widget()
    counter, grid, detail = box.children
    assert len(grid.children) == 3 and detail.children == ()
    assert "3 processes" in counter.value
    buttons = [c.children[-1] for c in grid.children]
    assert [b.disabled for b in buttons] == [False, False, True]  # the third is still processing
    sandbox.clear_requests()
    buttons[1].click()
    (shown,) = detail.children
    views = [w for w in shown.children if isinstance(w, CompareView)]
    assert len(views) == 1 and views[0] is gallery.opened.view
    assert gallery.opened.process_id == sandbox.demo_ids[1]
    # Opened again from the disk cache: links and HEADs, no image downloaded.
    assert not [r for r in sandbox.requests if r.server == "storage" and r.method == "GET"]
    bundle = gallery._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and "<table " in bundle["text/html"]


def test_a_damaged_file_fails_its_card_only(sandbox, parts, make_image):
    client, transfer = parts
    page = sandbox.add_job(b"<html><body>503 Slow Down</body></html>", make_image((128, 96)))
    gallery = Gallery.fetch([sandbox.demo_ids[0], page], client=client, transfer=transfer)
    assert [c.error is None for c in gallery.cards] == [True, False]
    assert "HTML" in gallery.errors[page]
    assert gallery.summary()[1]["status"] == "error"


def _texts(widget):
    import ipywidgets as w

    out, stack = [], [widget]
    while stack:
        item = stack.pop()
        if isinstance(item, w.HTML):
            out.append(item.value)
        stack.extend(getattr(item, "children", ()))
    return out


def test_cards_label_thumbnails_and_say_why_a_process_failed(sandbox, parts, make_image):
    client, transfer = parts
    pid = sandbox.add_job(make_image(), status="Failed")
    job = sandbox.job(pid)
    plain = job.status_json
    job.status_json = lambda now: {**plain(now), "message": "Model unavailable"}
    gallery = Gallery.fetch([sandbox.demo_ids[0], pid], client=client, transfer=transfer)
    cards = gallery.widget().children[1].children
    good, bad = (" ".join(_texts(card)) for card in cards)
    assert "<small>Input</small>" in good and "<small>Output</small>" in good
    assert "failed: Model unavailable" in bad
    assert gallery.errors[pid].endswith("It has no output: start it again with other settings "
                                        "or another input.")
    page = gallery._repr_mimebundle_()["text/html"]
    assert 'class="topaz-gallery"' in page and "Model unavailable" in page
    assert " kB" in page or " MB" in page  # output bytes as a decimal size


def test_cards_fill_in_one_by_one_while_the_rest_are_fetching(sandbox, parts, make_image):
    client, transfer = parts
    ids = [sandbox.add_job(make_image(), make_image((128, 96)), filename=f"shot-{i}.jpg")
           for i in range(3)]
    statuses = {st.process_id: st for st in client.recent()}
    gallery = Gallery(ids, client=client, transfer=transfer, max_workers=1,
                      statuses=[statuses[p] for p in ids])
    box = gallery.widget()
    bodies = [card.children[0] for card in box.children[1].children]
    # Before any fetch, each card already names its file from the status list.
    assert all(f"shot-{i}.jpg" in body.value for i, body in enumerate(bodies))
    first_shown, release = threading.Event(), threading.Event()

    def hold_after_first(card):
        if card.process_id == ids[0]:
            first_shown.set()
            release.wait(10)

    gallery.on_card(hold_after_first)
    assert gallery.start() is gallery  # returns at once: the kernel stays free
    assert first_shown.wait(10)
    try:
        assert not gallery.finished
        assert bodies[0].value.count("<img ") == 2
        assert "fetching…" in bodies[2].value and "<img " not in bodies[2].value
        assert "Fetched 1 of 3" in box.children[0].value
    finally:
        release.set()
    gallery.wait()
    assert all(body.value.count("<img ") == 2 for body in bodies)
    assert box.children[0].value == "3 processes"


def test_cards_keep_thumbnails_not_images(sandbox, parts, make_image):
    import gc

    from topaz_nb.imaging.source import SourceImage

    client, transfer = parts
    ids = [sandbox.add_job(make_image((320, 240)), make_image((640, 480))) for _ in range(4)]
    gallery = Gallery.fetch(ids, client=client, transfer=transfer)
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, SourceImage) and not o._closed
             and any(pid in o.label for pid in ids)]
    assert alive == []
    assert all(set(c.thumbs) == {"input", "output"} and all(c.thumbs.values())
               for c in gallery.cards)
    assert all(len(data) < 20_000 for c in gallery.cards for data in c.thumbs.values())
    assert gallery.open(ids[2]).output.size == (640, 480)  # the full image, from the cache


def test_rate_limited_listing_and_fetching_waits_as_told(sandbox, parts, waits):
    client, transfer = parts
    sandbox.inject("status", code=429, retry_after=3, times=2, path="/status")
    recent = client.recent(limit=5)
    gallery = Gallery.fetch([st.process_id for st in recent], client=client,
                            transfer=transfer, statuses=recent)
    assert waits.waits[:2] == [3, 3]
    assert len(gallery) == 5 and not [c for c in gallery.cards if c.error is not None]
    answered = [r for r in sandbox.requests if r.server == "api" and r.path.endswith("/status")]
    assert len(answered) == 3  # two refused, then the page


def test_cancel_stops_the_batch(sandbox, parts, make_image):
    client, transfer = parts
    ids = [sandbox.add_job(make_image(), make_image((128, 96))) for _ in range(6)]
    gallery = Gallery(ids, client=client, transfer=transfer, max_workers=1)
    first = threading.Event()
    gallery.on_card(lambda card: first.set())
    gallery.start()
    assert first.wait(10)
    gallery.cancel()
    gallery.wait(10)
    assert gallery.finished
    cancelled = [c for c in gallery.cards if c.error is not None]
    assert cancelled and all("cancel" in c.line.lower() for c in cancelled)


def test_cancel_stops_every_process_of_the_batch(sandbox, parts, make_image):
    """One event stops the whole batch, while a failure in one process stops only its own."""
    import threading

    from conftest import wait_until

    from topaz_nb.errors import Cancelled

    client, transfer = parts
    held = [sandbox.add_job(make_image((64, 48)), make_image((128, 96))) for _ in range(3)]
    for pid in held:
        sandbox.inject("latency", server="storage", seconds=600, path=pid)
    cancel = threading.Event()

    def press_cancel() -> None:
        wait_until(lambda: len({r.path for r in sandbox.requests if r.server == "storage"}) >= 2,
                   "the batch to reach storage")
        cancel.set()

    presser = threading.Thread(target=press_cancel)
    presser.start()
    gallery = Gallery.fetch(held, client=client, transfer=transfer, max_workers=2, cancel=cancel)
    presser.join()
    assert [type(card.error) for card in gallery.cards] == [Cancelled] * 3


def test_sorted_by_fidelity_puts_the_least_faithful_first(sandbox, parts, make_image):
    client, transfer = parts
    ids = sandbox.add_shootout()
    pending = sandbox.add_job(make_image(), make_image((128, 96)), status="Processing")
    gallery = Gallery.fetch([*ids, pending], client=client, transfer=transfer)
    by_psnr = gallery.sorted_by("psnr")
    assert by_psnr.process_ids[0] == ids[2] and by_psnr.process_ids[-1] == pending
    psnrs = [row["psnr"] for row in by_psnr.summary()[:3]]
    assert psnrs == sorted(psnrs)  # the invented patch first
    assert gallery.process_ids == [*ids, pending]  # a new gallery
    assert "ssim" in by_psnr.summary()[0]
    with pytest.raises(ValueError, match="psnr, ssim"):
        gallery.sorted_by("size")


def _noisy_jpeg(size: tuple[int, int], seed: int) -> bytes:
    """A JPEG that does not compress away, so a process has a size worth bounding."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def test_a_small_cache_bound_never_takes_the_files_of_a_card_being_fetched(
        sandbox, tmp_path, monkeypatch):
    """Eight workers, a bound of 2.5 processes: every card is made from its own
    downloads, none evicted by another worker's check of the bound."""
    from topaz_nb.batch import gallery as _gallery
    from topaz_nb.comparison import Comparison
    from topaz_nb.storage import budget

    sides = [(_noisy_jpeg((80, 60), k), _noisy_jpeg((320, 240), 100 + k)) for k in range(8)]
    ids = [sandbox.add_job(inp, out) for inp, out in sides]
    bound = int(2.5 * max(len(inp) + len(out) for inp, out in sides))
    # Every process after the first (which the gallery fetches alone, first) is
    # downloaded (and the bound checked after each) before any of their cards
    # makes its thumbnails: the order that lost cards.
    fetched = threading.Barrier(len(ids) - 1, timeout=60)

    class MeetingFirst(Comparison):
        @classmethod
        def fetch(cls, process_id, *args, **kwargs):  # type: ignore[override]
            result = Comparison.fetch(process_id, *args, **kwargs)
            if process_id != ids[0]:
                fetched.wait()
            return result

    monkeypatch.setattr(_gallery, "Comparison", MeetingFirst)
    with TopazClient(api_key=sandbox.api_key, base_url=sandbox.base_url) as client, \
            Transfer(tmp_path / "cache", cache_max_bytes=bound) as transfer:
        gallery = Gallery.fetch(ids, client=client, transfer=transfer, max_workers=len(ids))
        assert gallery.errors == {}
        assert all(card.ready and card.thumbs["input"] and card.thumbs["output"]
                   for card in gallery.cards)
        # The cards keep thumbnails only: their files are free to go now, once the
        # preview entries written in the background have landed.
        from conftest import wait_until

        from topaz_nb.imaging import source as _source

        wait_until(lambda: not _source._STORE_PENDING, "the preview entries to be written")
        transfer.keep_within_budget()
        assert budget.usage(transfer.cache_dir).total_bytes <= bound


def test_the_comparison_below_the_grid_is_closed_when_another_replaces_it(sandbox, parts):
    from topaz_nb.storage import budget

    client, transfer = parts
    ids = sandbox.demo_ids[:2]
    gallery = Gallery.fetch(ids, client=client, transfer=transfer)
    assert budget.usage(transfer.cache_dir).in_use == 0  # the cards let go
    _counter, grid, _detail = gallery.widget().children
    buttons = [c.children[-1] for c in grid.children]
    buttons[0].click()
    first = gallery.opened
    assert first is not None and budget.usage(transfer.cache_dir).in_use == 2
    buttons[1].click()
    assert first.closed and not gallery.opened.closed
    assert budget.usage(transfer.cache_dir).in_use == 2  # the second one's only


def test_sorted_by_fidelity_puts_outputs_without_scores_last(sandbox, parts, make_image):
    client, transfer = parts
    uncovered = sandbox.add_job(make_image((1000, 2)), make_image((2, 1000)), crop_to_fill=True)
    scored = sandbox.add_shootout()[:2]
    gallery = Gallery.fetch([uncovered, *scored], client=client, transfer=transfer)
    for key in ("psnr", "ssim"):
        ordered = gallery.sorted_by(key)
        assert ordered.process_ids[-1] == uncovered
        assert set(ordered.process_ids[:2]) == set(scored)
    rows = {row["process_id"]: row for row in gallery.sorted_by("psnr").summary()}
    assert (rows[uncovered]["psnr"], rows[uncovered]["ssim"]) == (None, None)
    assert all(isinstance(rows[pid]["ssim"], float) for pid in scored)
