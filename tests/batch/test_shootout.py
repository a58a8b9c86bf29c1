"""Shootout: several processes' outputs of one input, fetched from the sandbox."""

from __future__ import annotations

import pytest

from topaz_nb.api.client import TopazClient
from topaz_nb.batch.shootout import Shootout
from topaz_nb.errors import TopazError
from topaz_nb.sandbox._demo import SHOOTOUT_MODELS, shootout_patch
from topaz_nb.storage import Transfer


@pytest.fixture
def parts(sandbox, tmp_path):
    with TopazClient(api_key=sandbox.api_key, base_url=sandbox.base_url) as client, \
            Transfer(tmp_path / "cache") as transfer:
        yield client, transfer


def _shootout(ids, parts) -> Shootout:
    client, transfer = parts
    return Shootout.fetch(ids, client=client, transfer=transfer)


def test_the_demo_shootout_shows_the_input_once_and_every_output(sandbox, parts):
    ids = sandbox.add_shootout()
    assert sandbox.add_shootout() == ids  # the same jobs, not three more
    shootout = _shootout(ids, parts)
    assert shootout.mismatch is None  # one source_id
    view = shootout.view
    assert view.mode == "grid"
    assert view.panes == ["Input"] + [f"{m.model} · {pid[:8]}"
                                      for m, pid in zip(SHOOTOUT_MODELS, ids)]
    assert len(view.more_previews) == 2
    rows = shootout.rows()
    assert [r[1] for r in rows] == [m.model for m in SHOOTOUT_MODELS]
    html = shootout.metadata_html()
    assert "PSNR vs input" in html and "SSIM vs input" in html


def test_the_invented_patch_is_the_least_faithful_and_its_worst_region(sandbox, parts):
    ids = sandbox.add_shootout()
    shootout = _shootout(ids, parts)
    lanczos, _sharpen, invent = (c.fidelity for c in shootout.comparisons)
    assert invent.psnr <= lanczos.psnr - 3
    x, y, w, h = shootout_patch(invent.output_size)
    rx, ry, rw, rh = invent.regions[0]
    assert rx <= x + w // 2 <= rx + rw and ry <= y + h // 2 <= ry + rh
    # The view's fidelity map comes from the cached per-process results.
    shootout.view.right = 3
    shootout.view.mode = "fidelity"
    assert shootout.view.fidelity_map["pane"] == 3
    assert shootout.view.fidelity(3) is invent


def test_different_inputs_are_said_in_one_line_and_still_shown(sandbox, parts, make_image):
    a = sandbox.add_job(make_image((40, 30), "red"), make_image((160, 120), "red"))
    b = sandbox.add_job(make_image((40, 30), "blue"), make_image((80, 60), "blue"))
    shootout = _shootout([a, b], parts)
    note = shootout.mismatch
    assert note is not None and "\n" not in note and b[:8] in note
    assert shootout.view.pane_info[2]["rect"] == [0, 0, 160, 120]  # aligned to the first grid


def test_same_input_without_source_ids_is_found_by_size_and_content(sandbox, parts, make_image):
    ids = sandbox.add_shootout()
    shootout = _shootout(ids[:2], parts)
    for c in shootout.comparisons:
        c.status = None  # as from a server that reports no source_id
    assert shootout.mismatch is None


def test_an_unfinished_process_or_too_many_is_a_one_line_error(sandbox, parts, make_image):
    pending = sandbox.add_job(make_image(), make_image((128, 96)), status="Processing")
    with pytest.raises(TopazError):
        _shootout([sandbox.add_shootout()[0], pending], parts)
    ids = sandbox.add_shootout()
    comparisons = _shootout(ids, parts).comparisons
    with pytest.raises(TopazError, match="at most 8 outputs; got 9"):
        Shootout(comparisons * 3)


def test_a_shootout_pins_every_comparison_until_its_view_is_closed(sandbox, parts):
    from topaz_nb.storage import budget

    cache = parts[1].cache_dir
    shootout = _shootout(sandbox.add_shootout(), parts)
    view = shootout.view
    assert budget.usage(cache).in_use == 2 * len(shootout.comparisons)
    view.close()
    assert all(c.closed for c in shootout.comparisons)
    assert budget.usage(cache).in_use == 0


def test_a_shootout_that_fails_to_fetch_pins_nothing(sandbox, parts, make_image):
    from conftest import wait_until

    from topaz_nb.storage import budget

    ids = sandbox.add_shootout()
    pending = sandbox.add_job(make_image(), make_image((128, 96)), status="Processing")
    with pytest.raises(TopazError):
        _shootout([*ids, pending], parts)
    # The others may still be finishing (or stopping): each lets go when it does.
    wait_until(lambda: budget.usage(parts[1].cache_dir).in_use == 0,
               "the fetched comparisons to let go of their files")


def test_an_output_whose_fidelity_cannot_be_computed_says_why_in_its_row(sandbox, parts,
                                                                         make_image):
    source = make_image((1000, 2))
    fine = sandbox.add_job(source, make_image((4000, 8)))
    uncovered = sandbox.add_job(source, make_image((2, 1000)), crop_to_fill=True)
    shootout = _shootout([fine, uncovered], parts)
    (_, _, _, _, psnr, ssim), (_, _, size, _, reason, no_ssim) = shootout.rows()
    assert psnr.endswith(" dB") or psnr == "identical"
    assert float(ssim) > 0.5
    assert size == "2×1000" and no_ssim == "—"
    assert reason == ("not computed: the 2×1000 output (cropped to fill) covers no whole pixel "
                      "of the 1000×2 input")
    assert reason in shootout.metadata_html()
    shootout.view.right = 2
    shootout.view.mode = "fidelity"
    assert shootout.view.fidelity_map["reason"] == reason
    assert "application/vnd.jupyter.widget-view+json" in shootout._repr_mimebundle_()
