"""Comparison: both sides of a process, fetched concurrently over real sockets."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PIL import Image

from topaz_nb.api.client import TopazClient
from topaz_nb.comparison import Comparison
from topaz_nb.errors import (
    ImageTooLarge,
    InvalidProcessId,
    NotFound,
    NotReady,
    NotSaved,
    TopazError,
)
from topaz_nb.storage import Transfer


@pytest.fixture
def client(sandbox):
    with TopazClient(api_key=sandbox.api_key, base_url=sandbox.base_url) as c:
        yield c


@pytest.fixture
def transfer(tmp_path):
    with Transfer(tmp_path / "cache") as t:
        yield t


def _storage(sandbox, method):
    return [r for r in sandbox.requests if r.server == "storage" and r.method == method]


def test_fetches_and_opens_both_sides(sandbox, client, transfer, make_image):
    pid = sandbox.add_job(make_image((40, 30), "red"), make_image((160, 120), "blue"),
                          model="Standard V2", category="Enhance")
    result = Comparison.fetch(pid, client=client, transfer=transfer)

    assert result.ready and result.downloaded
    assert result.input.size == (40, 30) and result.output.size == (160, 120)
    assert result.output.getpixel((100, 100))[:3] == (0, 0, 255)
    assert result.input.getpixel((30, 20))[:3] == pytest.approx((254, 0, 0), abs=3)
    files = result.files()
    assert set(files) == {"input", "output"} and all(p.is_file() for p in files.values())
    info = result.info
    assert info["scale"] == pytest.approx(4.0)
    assert info["output"]["content_type"] == "image/png"
    assert info["status"]["model"] == "Standard V2"
    rows = {r[0]: r for r in result.rows()}
    assert rows["Dimensions"][1:] == ("40×30", "160×120")
    assert rows["Scale"][2] == "4.00×"
    assert rows["Model"][2] == "Standard V2"
    assert "Link expires" in rows and "ETag" in rows


def test_both_sides_download_at_the_same_time(sandbox, client, transfer, make_image):
    pid = sandbox.add_job(make_image((400, 300)), make_image((1600, 1200)))
    # Each side's first progress report waits for the other side's: a sequential
    # fetch would never get both threads to the barrier and would break it.
    barrier = threading.Barrier(2, timeout=10)
    seen: set[str] = set()

    def on_progress(side, done, total):
        if side not in seen:
            seen.add(side)
            barrier.wait()

    result = Comparison.fetch(pid, client=client, transfer=transfer, on_progress=on_progress)
    assert result.ready and seen == {"input", "output"}


def test_second_fetch_costs_one_head_per_side_and_no_get(sandbox, client, transfer):
    pid = sandbox.demo_ids[0]
    Comparison.fetch(pid, client=client, transfer=transfer)
    sandbox.clear_requests()
    again = Comparison.fetch(pid, client=client, transfer=transfer)

    assert again.ready
    assert len(_storage(sandbox, "GET")) == 0
    assert len(_storage(sandbox, "HEAD")) == 2
    link_calls = [r for r in sandbox.requests if r.server == "api" and "/download" in r.path]
    assert len(link_calls) <= 2


def test_unfinished_output_is_an_error_unless_allowed(sandbox, client, transfer, make_image):
    pid = sandbox.add_job(make_image(), make_image((128, 96)), status="Processing", progress=40)
    with pytest.raises(NotReady):
        Comparison.fetch(pid, client=client, transfer=transfer)

    partial = Comparison.fetch(pid, client=client, transfer=transfer, require_output=False)
    assert not partial.ready and partial.output is None
    assert partial.input.size == make_image().size
    line = partial.status_line()
    assert "Processing" in line and "40%" in line and f"%topaz {pid} --wait" in line
    with pytest.raises(TopazError, match="--wait"):
        partial.view  # noqa: B018


def test_metadata_only_downloads_nothing(sandbox, client, transfer):
    sandbox.clear_requests()
    meta = Comparison.fetch(sandbox.demo_ids[0], client=client, transfer=transfer, download=False)
    assert not meta.downloaded and meta.files() == {}
    assert _storage(sandbox, "GET") == [] and len(_storage(sandbox, "HEAD")) == 2
    rows = {r[0] for r in meta.rows()}
    assert {"File size", "Content type", "ETag", "Link expires"} <= rows


def test_bad_id_sends_nothing_and_unknown_id_is_not_found(sandbox, client, transfer):
    sandbox.clear_requests()
    with pytest.raises(InvalidProcessId):
        Comparison.fetch("not-a-uuid", client=client, transfer=transfer)
    assert sandbox.requests == []
    with pytest.raises(NotFound):
        Comparison.fetch("00000000-0000-4000-8000-000000000000", client=client, transfer=transfer)


def test_server_text_is_escaped_and_no_secret_is_shown(sandbox, client, transfer, make_image):
    pid = sandbox.add_job(make_image(), make_image((128, 96)), model="<img src=x onerror=alert(1)>")
    result = Comparison.fetch(pid, client=client, transfer=transfer)
    page = result.metadata_html()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page

    shown = " ".join([repr(result), result._text_summary(), page, str(result.info),
                      str(result.links())])
    assert sandbox.api_key not in shown
    for link in result.links().values():
        query = link.download_url.split("?", 1)[1]
        assert query not in shown


def test_save_copies_both_originals(sandbox, client, transfer, tmp_path):
    result = Comparison.fetch(sandbox.demo_ids[0], client=client, transfer=transfer)
    saved = result.save(tmp_path / "out")
    assert sorted(saved) == ["input", "output"]
    for side, path in saved.items():
        assert path.name.startswith(result.process_id) and side in path.name
        assert path.read_bytes() == result.files()[side].read_bytes()
        with Image.open(path) as im:
            im.verify()
    assert not list(Path(tmp_path / "out").glob("*.part"))


def test_view_and_display_bundle(sandbox, client, transfer):
    result = Comparison.fetch(sandbox.demo_ids[0], client=client, transfer=transfer, mode="toggle",
                              preview_size=256)
    view = result.view
    assert view is result.view and view.mode == "toggle"
    bundle = result._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert result.process_id in bundle["text/plain"]


# -- presentation ----------------------------------------------------------------

def test_file_sizes_are_decimal_like_everywhere_else(sandbox, client, transfer, make_image):
    from topaz_nb._text import byte_size

    pid = sandbox.add_job(make_image((400, 300)), make_image((800, 600)), input_format="png")
    result = Comparison.fetch(pid, client=client, transfer=transfer)
    sizes = {r[0]: r[1:] for r in result.rows()}["File size"]
    expected = tuple(byte_size(result.info[side]["file_size"]) for side in ("input", "output"))
    assert sizes == expected and all(s.endswith((" B", " kB", " MB")) for s in sizes)
    assert "KB" not in result._text_summary()



def test_failed_process_status_line_says_why(sandbox, client, transfer, make_image):
    pid = sandbox.add_job(make_image(), status="Failed", message="Unsupported colour space")
    result = Comparison.fetch(pid, client=client, transfer=transfer, require_output=False)
    assert result.failed and result.reason == "Unsupported colour space"
    for place in ("magic", "cli", "panel", "python"):
        line = result.status_line(place)
        assert "failed: Unsupported colour space" in line
        assert "wait" not in line.lower() and "not ready" not in line and "ETA" not in line
    assert "(failed)" in repr(result)


def test_metadata_table_is_the_shared_table_and_wraps_below_the_view(sandbox, client, transfer):
    result = Comparison.fetch(sandbox.demo_ids[0], client=client, transfer=transfer)
    page = result.metadata_html()
    assert page.startswith('<table class="topaz-meta"') and "<th " in page
    assert f">{result.process_id}</caption>" in page
    box = result.widget()
    view, table = box.children
    assert box.layout.flex_flow == "row wrap"
    # The table keeps its width (never squeezed and cut off) and wraps below instead.
    assert table.layout.flex == "0 0 auto" and table.layout.max_width == "100%"
    assert view.layout.flex.startswith("1 1")


def test_save_onto_a_file_is_a_one_line_error(sandbox, client, transfer, tmp_path):
    result = Comparison.fetch(sandbox.demo_ids[0], client=client, transfer=transfer)
    taken = tmp_path / "taken"
    taken.write_text("x")
    with pytest.raises(TopazError) as bad:
        result.save(taken)
    assert "Could not save into" in str(bad.value) and "\n" not in str(bad.value)
    with pytest.raises(TopazError, match="Could not save into"):
        result.save("/proc/topaz-nb-test")


def test_save_never_follows_a_link_planted_at_a_predictable_name(sandbox, client, transfer,
                                                                  tmp_path):
    result = Comparison.fetch(sandbox.demo_ids[0], client=client, transfer=transfer)
    files = result.files()
    out = tmp_path / "out"
    out.mkdir()
    pid = result.process_id
    # The output's temporary name the copy used to write through, and the input's final name.
    planted = [f"{pid}-output{files['output'].suffix}.part", f"{pid}-input{files['input'].suffix}"]
    victims = [tmp_path / "victim0", tmp_path / "victim1"]
    for name, victim in zip(planted, victims):
        victim.write_bytes(b"must stay as it is")
        (out / name).symlink_to(victim)
    saved = result.save(out)
    assert [v.read_bytes() for v in victims] == [b"must stay as it is"] * 2
    for side, path in saved.items():
        assert path == out / f"{pid}-{side}{files[side].suffix}"
        assert not path.is_symlink() and path.read_bytes() == files[side].read_bytes()
    assert sorted(p.name for p in out.iterdir()) == sorted([planted[0], *(p.name for p in
                                                                         saved.values())])


def test_save_reports_a_side_it_cannot_write_in_one_line_and_saves_the_other(
        sandbox, client, transfer, tmp_path):
    result = Comparison.fetch(sandbox.demo_ids[0], client=client, transfer=transfer)
    files = result.files()
    out = tmp_path / "out"
    blocked = out / f"{result.process_id}-input{files['input'].suffix}"
    (blocked / "inside").mkdir(parents=True)  # a directory where the input goes
    with pytest.raises(NotSaved) as caught:
        result.save(out)
    err = caught.value
    assert list(err.saved) == ["output"]
    assert err.saved["output"].read_bytes() == files["output"].read_bytes()
    lines = str(err).splitlines()
    assert lines == [(f"Could not save the input as {str(blocked)!r} (a directory is in the way): "
                      "move it aside or save into another directory."),
                     "The other file was saved: the error's .saved lists it."]
    assert (blocked / "inside").is_dir()
    assert sorted(p.name for p in out.iterdir()) == sorted([blocked.name,
                                                           err.saved["output"].name])


# -- a cache that heals itself ------------------------------------------------


def _overwrite_keeping_stamp(path: Path, data: bytes) -> None:
    """Replace a file's bytes as a disk fault would: same size, same mtime."""
    import os

    stat = path.stat()
    assert len(data) == stat.st_size
    path.write_bytes(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _noise_png(make_image):
    import hashlib
    import io

    size = (300, 200)
    raw = hashlib.shake_256(b"noise").digest(size[0] * size[1] * 3)
    buf = io.BytesIO()
    Image.frombytes("RGB", size, raw).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def test_cached_error_page_is_discarded_and_downloaded_once_more(sandbox, client, transfer,
                                                                  make_image):
    pid = sandbox.add_job(make_image((40, 30)), make_image((160, 120), "blue"))
    first = Comparison.fetch(pid, client=client, transfer=transfer)
    path = first.files()["output"]
    good = path.read_bytes()
    page = b"<html><body>Access Denied</body></html>"
    _overwrite_keeping_stamp(path, (page + b" " * len(good))[:len(good)])
    sandbox.clear_requests()

    again = Comparison.fetch(pid, client=client, transfer=transfer).prepare()

    assert again.output.getpixel((100, 100))[:3] == (0, 0, 255)
    assert again.files()["output"].read_bytes() == good
    gets = _storage(sandbox, "GET")
    assert len(gets) == 1 and "/output" in gets[0].path  # exactly one new GET


def test_flipped_bytes_found_at_decode_heal_in_prepare(sandbox, client, transfer, make_image):
    png = _noise_png(make_image)
    pid = sandbox.add_job(make_image((30, 20)), png)
    first = Comparison.fetch(pid, client=client, transfer=transfer)
    path = first.files()["output"]
    damaged = bytearray(png)
    for i in range(len(png) // 2, len(png) // 2 + 64):
        damaged[i] ^= 0xFF  # pixel data: the header still reads
    _overwrite_keeping_stamp(path, bytes(damaged))
    sandbox.clear_requests()

    again = Comparison.fetch(pid, client=client, transfer=transfer)
    assert again.source("output").info.width == 300  # the header opens: nothing seen yet
    assert _storage(sandbox, "GET") == []
    again.prepare()

    assert again.files()["output"].read_bytes() == png
    assert again.output.size == (300, 200)
    assert len(_storage(sandbox, "GET")) == 1


def test_cached_file_failing_its_sidecar_is_downloaded_again(sandbox, client, transfer,
                                                            make_image):
    pid = sandbox.add_job(make_image((40, 30)), make_image((160, 120), "blue"))
    first = Comparison.fetch(pid, client=client, transfer=transfer)
    first.files()["output"].write_bytes(b"<!doctype html><title>Error</title>")
    sandbox.clear_requests()
    again = Comparison.fetch(pid, client=client, transfer=transfer).prepare()
    assert again.output.size == (160, 120)
    assert len(_storage(sandbox, "GET")) == 1


def test_damage_that_a_new_download_does_not_cure_is_reported(sandbox, client, transfer,
                                                              make_image):
    from topaz_nb.errors import ImageError

    page = b"<html><body>not an image</body></html>"
    pid = sandbox.add_job(make_image((40, 30)), page)
    with pytest.raises(ImageError, match="HTML"):  # a fresh download is not retried
        Comparison.fetch(pid, client=client, transfer=transfer)
    sandbox.clear_requests()
    with pytest.raises(ImageError, match="HTML"):  # from the cache: one more try, then reported
        Comparison.fetch(pid, client=client, transfer=transfer)
    assert len(_storage(sandbox, "GET")) == 1


def test_cancel_reaches_the_transfers(sandbox, client, transfer, make_image):
    from topaz_nb.errors import Cancelled

    pid = sandbox.add_job(make_image((40, 30)), make_image((160, 120)))
    cancel = threading.Event()
    cancel.set()
    sandbox.clear_requests()
    with pytest.raises(Cancelled):
        Comparison.fetch(pid, client=client, transfer=transfer, cancel=cancel)
    assert [r for r in sandbox.requests if r.server == "storage"] == []


def test_a_large_output_gets_its_pyramid_as_a_derived_file_of_the_download(
        sandbox, client, transfer, make_image, monkeypatch):
    from topaz_nb.imaging import pyramid as _pyramid

    if not _pyramid.available():
        pytest.skip("pyvips is not installed")
    monkeypatch.setattr(_pyramid, "MIN_PIXELS", 10_000)
    pid = sandbox.add_job(make_image((60, 40), "red"), make_image((600, 400), "blue"))
    result = Comparison.fetch(pid, client=client, transfer=transfer)
    result.view  # noqa: B018 -- a PNG's preview decode writes the pyramid
    output = result.files()["output"]
    pyramid = transfer.derived_path(output, "pyramid.tif")
    assert pyramid is not None and pyramid.is_file()
    assert result.source("output").has_pyramid
    # It goes with its download.
    transfer.discard(output)
    assert not pyramid.exists()


def test_fidelity_is_computed_once_and_kept_beside_the_download(sandbox, client, transfer,
                                                               make_image, monkeypatch):
    from topaz_nb.imaging import fidelity as _fidelity
    from topaz_nb.storage import CacheEntry

    inp = make_image((40, 30), "red")
    pid = sandbox.add_job(inp, inp.resize((160, 120), Image.Resampling.NEAREST))
    first = Comparison.fetch(pid, client=client, transfer=transfer)
    result = first.fidelity
    assert result.psnr > 25 and result.input_size == (40, 30)  # the sandbox stores JPEG
    assert first.fidelity is result
    entry = CacheEntry.of(first.files()["output"])
    assert entry.derived("fidelity.json").exists() and entry.derived("fidelity.png").exists()
    assert any(r[0] == "PSNR vs input" for r in first.rows())

    def never(*args, **kwargs):
        raise AssertionError("computed again")

    monkeypatch.setattr(_fidelity, "fidelity", never)
    again = Comparison.fetch(pid, client=client, transfer=transfer).fidelity
    assert again.ssim == pytest.approx(result.ssim) and again.heatmap.size == (40, 30)


# -- the cache's bound never takes the files of a view on screen -------------


def _noisy_jpeg(size: tuple[int, int], seed: int) -> bytes:
    """A JPEG that does not compress away, so a process has a size worth bounding;
    a JPEG's preview is decoded from its file apart, so its tiles read the file."""
    import io

    import numpy as np

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _processes(sandbox, count: int) -> tuple[list[str], int]:
    """``count`` processes alike in size, and a bound of 2.5 of them."""
    sides = [(_noisy_jpeg((80, 60), k), _noisy_jpeg((320, 240), 100 + k)) for k in range(count)]
    ids = [sandbox.add_job(inp, out) for inp, out in sides]
    return ids, int(2.5 * max(len(inp) + len(out) for inp, out in sides))


def _tiles_at_100_percent(view) -> list[dict]:
    """Ask the view for its 100 % tiles as the front end does; its answers."""
    sent: list[dict] = []
    view.send = lambda content, buffers=None: sent.append(content)
    view._on_tile_request(view, {"type": "tiles", "view": "v1", "gen": 1, "level": 1,
                                 "tiles": [[0, 0]]}, [])
    return sent


def test_a_view_on_screen_keeps_its_downloads_while_other_processes_are_fetched(
        sandbox, client, tmp_path):
    import gc

    from topaz_nb.batch.gallery import Gallery

    ids, bound = _processes(sandbox, 5)
    with Transfer(tmp_path / "cache", cache_max_bytes=bound) as transfer:
        shown = Comparison.fetch(ids[0], client=client, transfer=transfer)
        view = shown.view
        files = list(shown.files().values())
        del shown  # only the view on screen holds the comparison now
        gc.collect()
        Gallery.fetch(ids[1:], client=client, transfer=transfer, max_workers=2)
        assert all(path.is_file() for path in files)
        answers = _tiles_at_100_percent(view)
        assert [a["type"] for a in answers] == ["tile"], answers
        # Closed, the view lets go: a check of the bound may take its files now.
        view.close()
        transfer.cache_max_bytes = 0
        transfer.keep_within_budget()
        assert not any(path.exists() for path in files)


_OTHER_KERNEL = r"""
import os, sys
from topaz_nb.api.client import TopazClient
from topaz_nb.batch.gallery import Gallery
from topaz_nb.storage import Transfer

cache, bound, *ids = sys.argv[1:]
with TopazClient(api_key=os.environ["TOPAZ_API_KEY"],
                 base_url=os.environ["TOPAZ_API_URL"]) as client, \
        Transfer(cache, cache_max_bytes=int(bound)) as transfer:
    if ids:
        gallery = Gallery.fetch(ids, client=client, transfer=transfer, max_workers=2)
        assert not gallery.errors, gallery.errors
    transfer.keep_within_budget()
print("done")
"""


def _other_kernel(sandbox, cache: Path, bound: int, ids: list[str]) -> None:
    """Another process sharing the cache fetches ``ids`` (none: checks the bound only)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, TOPAZ_API_URL=sandbox.base_url, TOPAZ_API_KEY=sandbox.api_key)
    done = subprocess.run([sys.executable, "-c", _OTHER_KERNEL, str(cache), str(bound), *ids],
                          check=False, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr


def test_a_comparison_open_here_keeps_its_downloads_while_another_kernel_fetches(
        sandbox, client, tmp_path):
    ids, bound = _processes(sandbox, 5)
    cache = tmp_path / "cache"
    with Transfer(cache, cache_max_bytes=bound) as transfer:
        shown = Comparison.fetch(ids[0], client=client, transfer=transfer)
        view = shown.view
        files = list(shown.files().values())
        _other_kernel(sandbox, cache, bound, ids[1:])
        assert all(path.is_file() for path in files)
        answers = _tiles_at_100_percent(view)
        assert [a["type"] for a in answers] == ["tile"], answers
        # Closed here, the files are free for the other kernel's bound too.
        shown.close()
        _other_kernel(sandbox, cache, 0, [])
        assert not any(path.exists() for path in files)


def test_closing_lets_go_of_the_downloads_and_takes_the_view_with_it(
        sandbox, client, transfer, make_image):
    from topaz_nb.storage import budget

    pid = sandbox.add_job(make_image((40, 30), "red"), make_image((160, 120), "blue"))
    with Comparison.fetch(pid, client=client, transfer=transfer) as result:
        view = result.view
        assert budget.usage(transfer.cache_dir).in_use == 2
    assert result.closed and view.comm is None  # off the page
    assert budget.usage(transfer.cache_dir).in_use == 0
    with pytest.raises(TopazError, match="was closed.*fetch it again"):
        result.view  # noqa: B018
    again = Comparison.fetch(pid, client=client, transfer=transfer)
    again.view.close()  # closing its view closes the comparison
    assert again.closed and budget.usage(transfer.cache_dir).in_use == 0
    again.close()  # once is enough


def test_a_failed_fetch_pins_nothing(sandbox, client, transfer, make_image):
    from topaz_nb.storage import budget

    pid = sandbox.add_job(make_image((40, 30)), b"<html>not an image</html>")
    with pytest.raises(TopazError, match="not an image"):
        Comparison.fetch(pid, client=client, transfer=transfer)
    cached = budget.usage(transfer.cache_dir)
    assert cached.downloads == 2 and cached.in_use == 0  # downloaded, and free to go


def _fidelity_rows(result):
    return [r for r in result.rows() if r[0].startswith(("PSNR", "SSIM", "Fidelity"))]


def test_an_output_of_another_aspect_shows_its_view_and_scores(sandbox, client, transfer,
                                                              make_image):
    # 640×480 letterboxed into 700×500 once raised "box offset can't be negative".
    pid = sandbox.add_job(make_image((640, 480)), make_image((700, 500)))
    result = Comparison.fetch(pid, client=client, transfer=transfer)
    rows = _fidelity_rows(result)
    assert [r[0] for r in rows] == ["PSNR vs input", "SSIM vs input"]
    assert rows[0][2].endswith(" dB") or rows[0][2] == "identical"
    bundle = result._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "PSNR vs input" in bundle["text/plain"]


def test_an_output_covering_no_input_pixel_says_so_in_one_row_and_still_shows(
        sandbox, client, transfer, make_image):
    pid = sandbox.add_job(make_image((1000, 2)), make_image((2, 1000)), crop_to_fill=True)
    result = Comparison.fetch(pid, client=client, transfer=transfer)
    reason = ("not computed: the 2×1000 output (cropped to fill) covers no whole pixel of "
              "the 1000×2 input")
    assert _fidelity_rows(result) == [("Fidelity vs input", "", reason)]
    assert result.fidelity.psnr is None and result.fidelity.reason == reason
    bundle = result._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert reason in bundle["text/plain"] and reason in result.metadata_html()
    view = result.view
    view.mode = "fidelity"
    assert view.fidelity_map["reason"] == reason and view.fidelity_map["psnr"] is None
    assert view.to_image(width=200).width == 200
    # Kept beside the download like any other result, and read back the same.
    again = Comparison.fetch(pid, client=client, transfer=transfer).fidelity
    assert (again.psnr, again.ssim, again.reason) == (None, None, reason)


def test_an_image_that_cannot_be_decoded_for_fidelity_is_one_row_and_tried_again(
        sandbox, client, transfer, make_image, monkeypatch):
    from topaz_nb.imaging import fidelity as _fidelity

    inp = make_image((40, 30))
    pid = sandbox.add_job(inp, inp.resize((160, 120)))
    result = Comparison.fetch(pid, client=client, transfer=transfer)
    real = _fidelity.cached_fidelity

    def too_large(*args, **kwargs):
        raise ImageTooLarge("output is too large to decode in the memory left; close other "
                            "views or images and try again")

    monkeypatch.setattr(_fidelity, "cached_fidelity", too_large)
    line = ("not computed: output is too large to decode in the memory left; close other "
            "views or images and try again")
    assert _fidelity_rows(result) == [("Fidelity vs input", "", line)]
    assert "application/vnd.jupyter.widget-view+json" in result._repr_mimebundle_()
    monkeypatch.setattr(_fidelity, "cached_fidelity", real)
    assert [r[0] for r in _fidelity_rows(result)] == ["PSNR vs input", "SSIM vs input"]


def test_a_large_png_is_decoded_into_its_pyramid_while_it_downloads(
        sandbox, client, tmp_path, make_image, monkeypatch):
    import io

    import numpy as np
    from conftest import wait_until

    from topaz_nb.imaging import pyramid as _pyramid

    if not _pyramid.available():
        pytest.skip("pyvips is not installed")
    monkeypatch.setattr(_pyramid, "MIN_PIXELS", 10_000)
    pixels = np.random.default_rng(3).integers(0, 256, (900, 1200, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG", compress_level=0)  # ~3.2 MB: four ranged parts
    pid = sandbox.add_job(make_image((300, 225)), out.getvalue())
    mib = 1 << 20
    size = len(out.getvalue())
    last = f"bytes={3 * (-(-size // 4))}-{size - 1}"
    # The last part is held until the decode of the others shows in the cache.
    sandbox.inject("hang", server="storage", times=1, after_bytes=0, range=last, timeout=60)
    hang = sandbox._faults._faults[-1]
    builds, streamed = _pyramid.builds, _pyramid.streamed_builds
    box: dict[str, Comparison] = {}
    with Transfer(tmp_path / "cache", part_size=mib) as transfer:
        thread = threading.Thread(target=lambda: box.update(
            result=Comparison.fetch(pid, client=client, transfer=transfer)))
        thread.start()
        try:
            wait_until(lambda: any(p.stat().st_size > 0 for p in
                                   (tmp_path / "cache").rglob(".output-*.d.pyramid.tif.*.part")),
                       what="tiles of the pyramid written before the last part arrived")
            assert "result" not in box
        finally:
            hang.released.set()
        thread.join(30)
        result = box["result"].prepare()
        try:
            assert (_pyramid.builds, _pyramid.streamed_builds) == (builds + 1, streamed + 1)
            pyr = result.source("output").pyramid()
            assert pyr is not None
            assert pyr.region(0, (0, 0, 1200, 900)).tobytes() == pixels.tobytes()
            assert result.view.output_preview  # the first view, from that one decode
        finally:
            result.close()


def test_a_cancelled_download_leaves_no_pyramid_of_its_arriving_bytes(
        sandbox, client, tmp_path, make_image, monkeypatch):
    import io

    import numpy as np
    from conftest import wait_until

    from topaz_nb.errors import Cancelled
    from topaz_nb.imaging import pyramid as _pyramid

    if not _pyramid.available():
        pytest.skip("pyvips is not installed")
    monkeypatch.setattr(_pyramid, "MIN_PIXELS", 10_000)
    pixels = np.random.default_rng(4).integers(0, 256, (900, 1200, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG", compress_level=0)
    pid = sandbox.add_job(make_image((300, 225)), out.getvalue())
    size = len(out.getvalue())
    last = f"bytes={3 * (-(-size // 4))}-{size - 1}"
    sandbox.inject("hang", server="storage", times=None, after_bytes=0, range=last, timeout=60)
    cancel = threading.Event()
    box: dict[str, BaseException] = {}
    cache = tmp_path / "cache"

    def run() -> None:
        try:
            Comparison.fetch(pid, client=client, transfer=transfer, cancel=cancel)
        except BaseException as exc:  # noqa: BLE001 -- inspected below
            box["error"] = exc

    with Transfer(cache, part_size=1 << 20) as transfer:
        thread = threading.Thread(target=run)
        thread.start()
        wait_until(lambda: list(cache.rglob(".output-*.d.pyramid.tif.*.part")),
                   what="the decode of the arriving bytes to start")
        cancel.set()
        thread.join(30)
        assert isinstance(box.get("error"), Cancelled)
        wait_until(lambda: not list(cache.rglob("*pyramid.tif*")),
                   what="the half-made pyramid to be deleted")
        assert list(cache.rglob("*.part"))  # the download itself is kept for resume


def test_a_smaller_png_is_decoded_into_memory_while_it_downloads(
        sandbox, client, transfer, make_image):
    import io

    import numpy as np

    from topaz_nb.imaging import arriving as _arriving
    from topaz_nb.imaging import pyramid as _pyramid

    if not _pyramid.available():
        pytest.skip("pyvips is not installed")
    pixels = np.random.default_rng(5).integers(0, 256, (400, 600, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    pid = sandbox.add_job(make_image((150, 100)), out.getvalue())
    before = _arriving.builds
    result = Comparison.fetch(pid, client=client, transfer=transfer).prepare()
    try:
        assert _arriving.builds == before + 1  # the output; the JPEG-like input is drafted
        assert result.output.tobytes() == pixels.tobytes()
    finally:
        result.close()
    # From the cache there is nothing arriving: the file is decoded as before.
    again = Comparison.fetch(pid, client=client, transfer=transfer).prepare()
    try:
        assert _arriving.builds == before + 1
        assert again.output.tobytes() == pixels.tobytes()
    finally:
        again.close()
