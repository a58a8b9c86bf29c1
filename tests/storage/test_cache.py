"""Tests of topaz_nb.storage.cache: the layout of the download cache, its
records, its locks and its housekeeping, on a real directory with real locks."""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import platformdirs
import pytest

from topaz_nb.errors import Cancelled
from topaz_nb.storage import Transfer
from topaz_nb.storage.cache import (
    CacheEntry,
    cache_key,
    clear,
    default_cache_dir,
    discard,
    hold,
    pin,
    pinned,
    read_json,
    sweep_stale_parts,
    sweep_stale_parts_in,
    unpinned,
    write_json,
)

PID = "0b7f6c1e-2a8d-4c65-9e43-0123456789ab"
OTHER = "5d3c2b1a-0f9e-4d8c-b7a6-9876543210fe"
DAY = 24 * 3600


def _age(path: Path, seconds: float) -> None:
    when = time.time() - seconds
    os.utime(path, (when, when))


def _entry(root: Path, key: str = "size-5", side: str = "output") -> CacheEntry:
    entry = CacheEntry.at(root, PID, side, key)
    entry.directory.mkdir(parents=True, exist_ok=True)
    return entry


def _download(entry: CacheEntry, data: bytes = b"bytes", ext: str = "png", *,
              etag: str | None = "e1") -> Path:
    """A complete download as the downloader leaves it: the file and its sidecar."""
    entry.part.write_bytes(data)
    return entry.commit(ext, etag=etag, validator="v", sha256="s")


# ----------------------------------------------------------------- where files go


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TOPAZ_NB_CACHE", raising=False)
    assert default_cache_dir() == platformdirs.user_cache_path("topaz-nb")
    monkeypatch.setenv("TOPAZ_NB_CACHE", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    with Transfer() as t:
        assert t.cache_dir == tmp_path / "here"
    with Transfer(tmp_path / "explicit") as t:
        assert t.cache_dir == tmp_path / "explicit"


def test_an_entry_names_every_file_of_one_object(tmp_path: Path) -> None:
    entry = CacheEntry.at(tmp_path, PID, "input", "etag-0123")
    assert entry == CacheEntry(tmp_path / PID, "input-etag-0123")
    names = [p.name for p in (entry.sidecar, entry.part, entry.part_meta, entry.lock,
                              entry.file_with("jpg"), entry.derived("p64.raw"))]
    assert names == [".input-etag-0123.json", "input-etag-0123.part",
                     ".input-etag-0123.part.json", ".input-etag-0123.lock",
                     "input-etag-0123.jpg", ".input-etag-0123.d.p64.raw"]
    assert all(p.parent == tmp_path / PID for p in (entry.sidecar, entry.derived("x")))


@pytest.mark.parametrize("name", ["", ".hidden", "../up", "a/b", "x" * 200])
def test_derived_names_cannot_leave_the_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="derived file name"):
        _entry(tmp_path).derived(name)


def test_only_downloads_of_a_cache_have_an_entry(tmp_path: Path) -> None:
    folder = tmp_path / PID
    assert CacheEntry.of(folder / "output-size-5.png") == CacheEntry(folder, "output-size-5")
    assert CacheEntry.of(str(folder / "input-any.jpg")) == CacheEntry(folder, "input-any")
    for path in (folder / "output-size-5.part",           # a download in progress
                 folder / ".output-size-5.d.p64.raw",     # a derived file
                 folder / "output-size-5.PNG",            # not an extension we write
                 folder / "middle-size-5.png",            # not a side
                 folder / "output-size-5",                # no extension
                 tmp_path / "notes" / "output-size-5.png"):  # a user's own folder
        assert CacheEntry.of(path) is None, path.name


def test_the_key_comes_from_the_strongest_validator() -> None:
    when = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    keys = [cache_key("abc", when, 10), cache_key(None, when, 10), cache_key(None, None, 10),
            cache_key(None, None, None)]
    assert len(set(keys)) == 4
    assert keys[0].startswith("etag-") and keys[1].startswith("lm-")
    assert keys[2:] == ["size-10", "any"]
    assert cache_key("abc", None, None) == keys[0]  # the ETag alone decides
    # The same instant in another zone is the same object; another size is not.
    assert cache_key(None, when.astimezone(timezone(timedelta(hours=2))), 10) == keys[1]
    assert cache_key(None, when, 11) != keys[1]
    for key in keys:
        assert CacheEntry.of(Path(PID) / f"output-{key}.png") is not None  # a safe name


# ----------------------------------------------------------------- records


def test_records_are_written_whole_and_read_only_when_whole(tmp_path: Path) -> None:
    path = tmp_path / ".r.json"
    assert read_json(path) is None
    write_json(path, {"v": 1, "file": "x.png"})
    assert read_json(path) == {"v": 1, "file": "x.png"}
    assert [p.name for p in tmp_path.iterdir()] == [".r.json"]  # no temporary left
    for text in ("[1, 2]", "{not json", ""):
        path.write_text(text)
        assert read_json(path) is None


def test_a_committed_file_is_vouched_for_until_it_changes(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    path = _download(entry, b"12345")
    assert path == entry.file_with("png") and path.read_bytes() == b"12345"
    assert not entry.part.exists() and not entry.part_meta.exists()
    meta = read_json(entry.sidecar)
    assert meta is not None and meta["file"] == path.name and meta["size"] == 5
    assert entry.file == path
    assert entry.verified_file(5, "e1") == path
    assert entry.verified_file(None, None) == path  # storage stated nothing: the record decides
    assert entry.verified_file(6, "e1") is None     # storage now states another size
    assert entry.verified_file(5, "e2") is None     # or another ETag
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched behind our back
    assert entry.verified_file(5, "e1") is None
    assert path.exists()  # without heal nothing is deleted


def test_healing_discards_a_file_that_no_longer_checks_out(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    path = _download(entry)
    derived = entry.derived("p64.raw")
    derived.write_bytes(b"preview")
    path.write_bytes(b"other bytes")
    assert entry.verified_file(None, None, heal=True) is None
    assert not path.exists() and not entry.sidecar.exists() and not derived.exists()


def test_the_sidecar_names_only_a_file_of_its_own_entry(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    _download(entry)
    for name in ("../escape.png", "input-size-5.png", f"sub/{entry.stem}.png", 7):
        write_json(entry.sidecar, {**(read_json(entry.sidecar) or {}), "file": name})
        assert entry.file is None and entry.verified_file(None, None) is None


def test_a_new_download_replaces_the_old_file_and_what_was_derived_from_it(
        tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    old = _download(entry, b"old", "bin")
    derived = entry.derived("p64.raw")
    derived.write_bytes(b"from the old bytes")
    new = _download(entry, b"new", "png", etag="e2")
    assert not old.exists() and not derived.exists()
    assert new.read_bytes() == b"new" and entry.verified_file(3, "e2") == new
    assert sorted(p.name for p in entry.directory.iterdir()) == [entry.sidecar.name, new.name]


# ----------------------------------------------------------------- housekeeping


def test_stale_parts_are_swept_only_from_process_folders(tmp_path: Path) -> None:
    mine = _entry(tmp_path)
    other = CacheEntry.at(tmp_path, OTHER, "input", "any")
    other.directory.mkdir()
    notes = tmp_path / "notes"
    notes.mkdir()
    stale = [mine.part, other.part]
    records = [mine.part_meta, other.part_meta]
    foreign = notes / "output-any.part"
    for path in (*stale, *records, foreign):
        path.write_bytes(b"x")
        _age(path, 2 * DAY)
    fresh = CacheEntry.at(tmp_path, PID, "input", "any").part
    fresh.write_bytes(b"x")  # as if a download were writing it now
    sweep_stale_parts_in(other.directory)
    assert not other.part.exists() and not other.part_meta.exists()
    assert mine.part.exists()  # another folder: untouched
    sweep_stale_parts(tmp_path)
    assert not any(p.exists() for p in (*stale, *records))
    assert fresh.exists() and foreign.exists()


def test_clear_deletes_process_folders_only_and_counts_downloads(tmp_path: Path) -> None:
    one, two = _entry(tmp_path), CacheEntry.at(tmp_path, OTHER, "input", "any")
    two.directory.mkdir()
    _download(one)
    _download(CacheEntry.at(tmp_path, PID, "input", "any"))
    _download(two)
    one.derived("p64.raw").write_bytes(b"p")
    one.lock.write_bytes(b"")
    CacheEntry.at(tmp_path, PID, "output", "other").part.write_bytes(b"partial")
    mine = tmp_path / "notes" / "keep.txt"
    mine.parent.mkdir()
    mine.write_text("mine")
    assert clear(tmp_path, PID) == 2  # two downloads; sidecars, locks, parts not counted
    assert not one.directory.exists() and two.directory.exists()
    assert clear(tmp_path) == 1
    assert clear(tmp_path) == 0 and clear(tmp_path / "nowhere") == 0
    assert mine.read_text() == "mine"


# ----------------------------------------------------------------- locks


def test_holding_an_entry_excludes_other_threads_and_a_cancel_ends_the_wait(
        tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with hold(entry):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        cancel = threading.Event()
        cancel.set()
        with pytest.raises(Cancelled, match="waiting for another one") as caught, \
                hold(entry, cancel, "the output of x"):
            pytest.fail("held twice")
        assert str(caught.value).startswith("Cancelled: the download of the output of x")
        # Another entry is not held.
        with hold(CacheEntry.at(tmp_path, PID, "input", "any"), cancel):
            pass
    finally:
        release.set()
        thread.join(10)
    with hold(entry, cancel):  # released with its holder
        pass


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs flock")
def test_discard_waits_for_the_download_another_process_holds(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import fcntl

    entry = _entry(tmp_path)
    path = _download(entry)
    entry.derived("p64.raw").write_bytes(b"p")
    holder = os.open(entry.lock, os.O_RDWR | os.O_CREAT)  # flock is per open file
    fcntl.flock(holder, fcntl.LOCK_EX)
    from conftest import logged

    caplog.set_level(logging.INFO, logger="topaz_nb.transfer")
    with logged("waiting for another process") as waiting:
        worker = threading.Thread(target=discard, args=(entry, path))
        worker.start()
        assert waiting.wait(10)
        assert path.exists() and entry.sidecar.exists()  # nothing deleted under the holder
        os.close(holder)
        worker.join(10)
    assert not worker.is_alive()
    assert not path.exists() and not entry.sidecar.exists() and entry.derived_files() == []
    assert any(f"discarded {path.name}" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------- pins


def _free(entry: CacheEntry) -> bool:
    with unpinned(entry) as free:
        return free


def test_a_pin_keeps_an_entry_from_eviction_in_every_thread_until_released(
        tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    assert not pinned(entry) and _free(entry)
    first = pin(entry)  # before there is any download: a pin may come first
    assert first.held and pinned(entry)
    results: list[bool] = []
    other = threading.Thread(target=lambda: results.append(_free(entry)))
    other.start()
    other.join(10)
    assert results == [False]  # another thread sees it pinned
    second = pin(entry)  # pins are shared: many users at once
    first.release()
    assert pinned(entry) and not _free(entry)
    second.release()
    second.release()  # once is enough
    assert not pinned(entry) and _free(entry)
    assert entry.pin_file.exists()  # the file stays, for the next holder
    pin(entry)  # dropped at once: released with its last reference
    assert _free(entry)
    # Other entries are free meanwhile.
    with pin(entry):
        assert _free(_entry(tmp_path, side="input"))


def test_a_pin_waits_for_an_eviction_under_way_and_a_cancel_ends_the_wait(
        tmp_path: Path) -> None:
    from conftest import logged

    entry = _entry(tmp_path)
    got = threading.Event()
    pins = []
    with logged("waiting for the cache's bound") as waiting:
        with unpinned(entry) as free:
            assert free
            worker = threading.Thread(target=lambda: (pins.append(pin(entry)), got.set()))
            worker.start()
            assert waiting.wait(10)
            assert not got.is_set()  # no pin while the eviction holds the entry
            cancel = threading.Event()
            cancel.set()
            with pytest.raises(Cancelled, match="waiting for the cache to make room"):
                pin(entry, cancel, "the output of x")
        worker.join(10)
    assert got.is_set() and pins[0].held and pinned(entry)
    pins[0].release()


_PIN_AND_WAIT = """
import sys
from pathlib import Path
from topaz_nb.storage.cache import CacheEntry, pin
held = pin(CacheEntry(Path(sys.argv[1]), sys.argv[2]))
print("pinned", flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs flock")
def test_a_pin_holds_across_processes_and_goes_with_a_killed_one(tmp_path: Path) -> None:
    import subprocess
    import sys

    entry = _entry(tmp_path)
    with subprocess.Popen([sys.executable, "-c", _PIN_AND_WAIT, str(entry.directory),
                           entry.stem], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as child:
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "pinned"
            assert pinned(entry) and not _free(entry)
        finally:
            child.kill()  # SIGKILL: no clean-up of its own
            child.wait(30)
    assert not pinned(entry) and _free(entry)
