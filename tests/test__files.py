"""Tests of topaz_nb._files: copies that never follow a planted link, names that fit."""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

import pytest

from topaz_nb import _files
from topaz_nb._files import copy_into, fit_name, name_max


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "cache" / "output-abc.png"
    path.parent.mkdir()
    path.write_bytes(b"\x89PNG the real output " * 1000)
    return path


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_bytes(b"must stay as it is")
    return path


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_copy_has_the_bytes_and_the_usual_permissions(source: Path, out: Path) -> None:
    old = os.umask(0o022)
    try:
        saved = copy_into(source, out, "photo", ".png", replace=False)
    finally:
        os.umask(old)
    assert saved == out / "photo.png"
    assert saved.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(saved.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert _hidden(out) == []


@pytest.mark.parametrize("replace", [True, False])
def test_a_link_planted_at_the_temporary_name_is_not_followed(
        source: Path, out: Path, victim: Path, monkeypatch: pytest.MonkeyPatch,
        replace: bool) -> None:
    # Whoever guesses the next temporary name and plants a link there gains nothing:
    # the creation is exclusive, so another name is drawn.
    tokens = iter(["guessed", "fresh"])
    monkeypatch.setattr(_files, "_token", lambda: next(tokens))
    (out / ".topaz-nb-guessed.part").symlink_to(victim)
    saved = copy_into(source, out, "photo", ".png", replace=replace)
    assert victim.read_bytes() == b"must stay as it is"
    assert saved.read_bytes() == source.read_bytes() and not saved.is_symlink()
    assert (out / ".topaz-nb-guessed.part").is_symlink()
    assert _hidden(out) == [".topaz-nb-guessed.part"]


def test_replacing_replaces_a_link_at_the_final_name_itself(
        source: Path, out: Path, victim: Path) -> None:
    (out / "photo.png").symlink_to(victim)
    saved = copy_into(source, out, "photo", ".png", replace=True)
    assert victim.read_bytes() == b"must stay as it is"
    assert not saved.is_symlink() and saved.read_bytes() == source.read_bytes()


def test_without_replacing_anything_at_the_name_takes_the_next_number(
        source: Path, out: Path, victim: Path, tmp_path: Path) -> None:
    (out / "photo.png").symlink_to(victim)
    (out / "photo-2.png").symlink_to(tmp_path / "nowhere")  # dangling
    (out / "photo-3.png").mkdir()
    (out / "photo-4.png").write_bytes(b"an earlier one")
    saved = copy_into(source, out, "photo", ".png", replace=False)
    assert saved == out / "photo-5.png" and saved.read_bytes() == source.read_bytes()
    assert victim.read_bytes() == b"must stay as it is"
    assert not (tmp_path / "nowhere").exists()
    assert (out / "photo-4.png").read_bytes() == b"an earlier one"


def test_copies_at_the_same_time_never_take_the_same_name(source: Path, out: Path) -> None:
    barrier = threading.Barrier(8, timeout=30)
    results: list[Path] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        path = copy_into(source, out, "photo", ".png", replace=False)
        with lock:
            results.append(path)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(p.name for p in results) == sorted(
        ["photo.png"] + [f"photo-{n}.png" for n in range(2, 9)])
    assert all(p.read_bytes() == source.read_bytes() for p in results)


def test_where_there_are_no_hard_links_the_name_is_reserved_exclusively(
        source: Path, out: Path, victim: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # FAT and some network shares refuse hard links; the copy still never overwrites.
    def no_links(*_args: object, **_kw: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    (out / "photo.png").symlink_to(victim)
    saved = copy_into(source, out, "photo", ".png", replace=False)
    assert saved == out / "photo-2.png" and saved.read_bytes() == source.read_bytes()
    assert victim.read_bytes() == b"must stay as it is"
    assert _hidden(out) == []


def test_a_directory_at_the_final_name_fails_and_leaves_no_temporary_file(
        source: Path, out: Path) -> None:
    (out / "photo.png").mkdir()
    (out / "photo.png" / "inside").write_text("x")
    with pytest.raises(OSError):
        copy_into(source, out, "photo", ".png", replace=True)
    assert _hidden(out) == []
    assert (out / "photo.png" / "inside").read_text() == "x"


def test_a_path_is_not_a_name(source: Path, out: Path) -> None:
    for stem in ("../up", "a/b", "..", ""):
        with pytest.raises(ValueError, match="not a file name"):
            copy_into(source, out, stem, "", replace=False)
    assert list(out.iterdir()) == []


def test_a_long_non_ascii_name_is_cut_in_bytes_keeping_the_extension(
        source: Path, out: Path) -> None:
    limit = name_max(out)
    for ch in ("é", "日", "🙂"):  # 2, 3 and 4 bytes in UTF-8
        stem = ch * 200
        saved = copy_into(source, out, stem, ".png", replace=False)
        raw = os.fsencode(saved.name)
        assert len(raw) <= limit and saved.name.endswith(".png")
        assert stem.startswith(saved.name[:-4]) and len(saved.name) > 4
        assert len(raw) > limit - len(ch.encode())  # no more cut than needed
        raw.decode("utf-8")  # whole characters only
        assert saved.read_bytes() == source.read_bytes()
    taken = copy_into(source, out, "é" * 200, ".png", replace=False)
    assert taken.name.endswith("-2.png") and len(os.fsencode(taken.name)) <= limit


def test_fit_name() -> None:
    assert fit_name("photo", ".png") == "photo.png"
    assert fit_name("é" * 200, ".png", 255) == "é" * 125 + ".png"  # 250 + 4 bytes
    assert fit_name("ab" + "é" * 10, ".png", 9) == "abé.png"  # never half of "é"
    assert fit_name("words and space", ".png", 14) == "words and.png"  # no space before the dot
    assert fit_name("x", "." + "y" * 300, 10) == "x.yyyyyyyy"


def test_name_max_is_asked_of_the_directory(tmp_path: Path) -> None:
    assert name_max(tmp_path) == os.pathconf(tmp_path, "PC_NAME_MAX")
    assert name_max(tmp_path / "missing") == _files.NAME_MAX
