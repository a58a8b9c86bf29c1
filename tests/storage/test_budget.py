"""Tests of topaz_nb.storage.budget: the download cache's disk use, bounded, least
recently used first, derived files before downloads.  Real downloads from the
sandbox into a real cache directory."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from topaz_nb.api.client import TopazClient
from topaz_nb.comparison import Comparison
from topaz_nb.storage import Transfer
from topaz_nb.storage import budget as _budget
from topaz_nb.storage.cache import CacheEntry


@pytest.fixture
def client(sandbox):
    with TopazClient(api_key=sandbox.api_key, base_url=sandbox.base_url) as c:
        yield c


def _fetch(sandbox, client, transfer, make_image, color: str, age: float) -> Comparison:
    pid = sandbox.add_job(make_image((40, 30), color), make_image((400, 300), color))
    result = Comparison.fetch(pid, client=client, transfer=transfer)
    result.source("output").preview_bytes(64, format="png")  # a derived file
    when = time.time() - age
    for path in result.files().values():
        marker = transfer.derived_path(path, "used")
        assert marker is not None and marker.exists()  # fetching marks the download used
        os.utime(marker, (when, when))
    return result


def _derived(transfer: Transfer, result: Comparison) -> list[Path]:
    """The derived files of a process's downloads, the use markers left out."""
    files: list[Path] = []
    for path in result.files().values():
        entry = CacheEntry.of(path)
        assert entry is not None
        # Not the use marker, nor a preview entry still being written (.part).
        files += [p for p in entry.derived_files()
                  if p != entry.derived("used") and not p.name.endswith(".part")]
    return files


def _settle(transfer: Transfer, *results: Comparison) -> None:
    """Wait for the background preview writes: the raw preview and its PNG."""
    from conftest import wait_until

    wait_until(lambda: all(len(_derived(transfer, r)) >= 2 for r in results),
               "the preview entries to be written")


def test_usage_counts_downloads_and_derived_files(sandbox, client, tmp_path, make_image):
    with Transfer(tmp_path / "cache") as transfer:
        result = _fetch(sandbox, client, transfer, make_image, "red", 0)
        _settle(transfer, result)
        use = _budget.usage(transfer.cache_dir)
    assert use.processes == 1 and use.downloads == 2
    assert use.download_bytes == sum(p.stat().st_size for p in result.files().values())
    assert use.derived_bytes > 0
    assert use.total_bytes >= use.download_bytes + use.derived_bytes


def test_least_recently_used_derived_files_go_first_then_downloads(
        sandbox, client, tmp_path, make_image):
    with Transfer(tmp_path / "cache") as transfer:
        old = _fetch(sandbox, client, transfer, make_image, "red", 300)
        new = _fetch(sandbox, client, transfer, make_image, "blue", 100)
        _settle(transfer, old, new)
        old.close()  # neither in use any more: the older goes first
        new.close()
        total = _budget.usage(transfer.cache_dir).total_bytes
        old_derived = sum(p.stat().st_size for p in _derived(transfer, old))
        assert old_derived > 0
        # Just over: the old process's derived files are enough.
        freed = _budget.enforce(transfer.cache_dir, total - old_derived // 2)
        assert freed >= old_derived // 2
        assert all(p.exists() for p in old.files().values())
        assert _derived(transfer, new) and not _derived(transfer, old)
        # Further over than every derived file: then the old downloads go, the
        # newer ones stay.
        new_derived = sum(p.stat().st_size for p in _derived(transfer, new))
        _budget.enforce(transfer.cache_dir, _budget.usage(transfer.cache_dir).total_bytes
                        - new_derived - 10)
        assert not _derived(transfer, new)
        assert not all(p.exists() for p in old.files().values())  # just enough went
        assert all(p.exists() for p in new.files().values())


def test_the_process_in_view_is_kept(sandbox, client, tmp_path, make_image):
    with Transfer(tmp_path / "cache") as transfer:
        only = _fetch(sandbox, client, transfer, make_image, "red", 100)
        only.close()  # not pinned: kept because it is named
        _budget.enforce(transfer.cache_dir, 0, keep=tuple(only.files().values()))
        assert all(p.exists() for p in only.files().values())
        _budget.enforce(transfer.cache_dir, 0)
        assert _budget.usage(transfer.cache_dir).downloads == 0


def test_fetch_keeps_the_cache_under_its_bound(sandbox, client, tmp_path, make_image):
    with Transfer(tmp_path / "cache", cache_max_bytes=1) as transfer:
        first = _fetch(sandbox, client, transfer, make_image, "red", 100)
        first.close()
        second = _fetch(sandbox, client, transfer, make_image, "blue", 0)
    # A bound smaller than one process keeps just the process being fetched.
    assert not any(p.exists() for p in first.files().values())
    assert all(p.exists() for p in second.files().values())


def test_cache_hits_check_the_bound_at_most_every_few_seconds(sandbox, client, tmp_path,
                                                               make_image, monkeypatch):
    calls: list[int] = []
    real = _budget.enforce
    monkeypatch.setattr(_budget, "enforce",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    with Transfer(tmp_path / "cache", cache_max_bytes=10**12) as transfer:
        result = _fetch(sandbox, client, transfer, make_image, "red", 0)
        assert len(calls) == 1  # downloaded: checked
        for _ in range(3):  # cache hits, in quick succession: checked once at most
            Comparison.fetch(result.process_id, client=client, transfer=transfer)
        assert len(calls) == 1


def test_a_pyramid_written_after_the_fetch_is_counted_against_the_bound(
        sandbox, client, tmp_path, make_image, monkeypatch):
    from topaz_nb.imaging import pyramid as _pyramid

    if not _pyramid.available():
        pytest.skip("pyvips is not installed")
    monkeypatch.setattr(_pyramid, "MIN_PIXELS", 10_000)
    with Transfer(tmp_path / "cache", cache_max_bytes=10**12) as transfer:
        old = _fetch(sandbox, client, transfer, make_image, "red", 100)
        current = _fetch(sandbox, client, transfer, make_image, "blue", 0)
        _settle(transfer, old, current)
        old.close()
        current.close()  # fetched again below
        pyramid = transfer.derived_path(current.files()["output"], "pyramid.tif")
        assert pyramid is not None
        pyramid.unlink(missing_ok=True)  # the preview's decode wrote one: write it anew
        # Room for everything but the pyramid about to be written.
        bound = transfer.cache_max_bytes = _budget.usage(transfer.cache_dir).total_bytes
        before = len(_derived(transfer, old))
        fresh = Comparison.fetch(current.process_id, client=client, transfer=transfer)
        fresh.source("output").prepare_tiles()  # writes the output's pyramid
        assert pyramid.exists()
        # The older process's derived files made room; the current process kept all.
        assert _budget.usage(transfer.cache_dir).total_bytes <= bound
        assert len(_derived(transfer, old)) < before
        assert all(p.exists() for p in fresh.files().values())


def test_a_pinned_download_stays_with_its_derived_files_and_the_cache_goes_over(
        sandbox, client, tmp_path, make_image):
    with Transfer(tmp_path / "cache") as transfer:
        shown = _fetch(sandbox, client, transfer, make_image, "red", 300)  # the oldest
        other = _fetch(sandbox, client, transfer, make_image, "blue", 0)
        _settle(transfer, shown, other)
        other.close()  # ``shown`` stays open: its downloads are pinned
        kept = [*shown.files().values(), *_derived(transfer, shown)]
        _budget.enforce(transfer.cache_dir, 0)
        assert all(p.exists() for p in kept)  # derived files too: a view reads them
        assert not any(p.exists() for p in other.files().values())
        use = _budget.usage(transfer.cache_dir, 0)
        assert use.over_bound and use.in_use == 2 and use.downloads == 2
        assert use.in_use_bytes >= sum(p.stat().st_size for p in kept)
        shown.close()
        assert _budget.usage(transfer.cache_dir, 0).in_use == 0
        _budget.enforce(transfer.cache_dir, 0)
        assert not any(p.exists() for p in kept)
        assert not _budget.usage(transfer.cache_dir, 0).over_bound


def test_usage_against_no_bound_is_never_over(tmp_path):
    use = _budget.usage(tmp_path / "nothing")
    assert use.total_bytes == 0 and use.max_bytes is None and not use.over_bound
