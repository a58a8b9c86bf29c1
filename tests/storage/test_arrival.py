"""A download's bytes handed on in order as they land (``storage.arrival``).

Units with threads and events, then over real sockets through ``Transfer``:
what a reader gets is the object's bytes in order, before the last part is in
(shown by holding that part with the sandbox's ``hang`` fault), and a restart
or a failure of the download is never read as the object.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_ranges import PARTS, SIZE_OF_BIG_PNG, STARTS, Source, _png, ranged

from topaz_nb.errors import TransferError
from topaz_nb.sandbox import Sandbox
from topaz_nb.storage import Arrival

# ----------------------------------------------------------------- units


def _arrival(tmp_path: Path, data: bytes) -> Arrival:
    part = tmp_path / "x.part"
    part.write_bytes(data)
    return Arrival(part, len(data), lambda name: tmp_path / f".x.d.{name}")


def test_a_reader_waits_for_bytes_and_gets_them_in_order(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    arrival = _arrival(tmp_path, data)
    got: list[bytes] = []
    waiting = threading.Event()

    def read_all() -> None:
        with arrival.reader() as reader:
            while True:
                waiting.set()
                chunk = reader.read(1000)
                if not chunk:
                    break
                got.append(chunk)

    thread = threading.Thread(target=read_all)
    thread.start()
    waiting.wait(10)
    assert got == []  # nothing published yet: the reader waits
    arrival.grow(1500)
    arrival.grow(1200)  # a prefix never shrinks
    arrival.grow(len(data))
    arrival.finish(tmp_path / "x.png")
    thread.join(10)
    assert b"".join(got) == data
    assert max(len(c) for c in got) <= 1000
    assert arrival.final() == tmp_path / "x.png"


def test_a_restart_or_a_failure_is_never_read_as_the_object(tmp_path: Path) -> None:
    arrival = _arrival(tmp_path, b"a" * 100)
    arrival.grow(50)
    first = arrival.reader()
    assert first.read(100) == b"a" * 50
    arrival.restart()
    assert first.read(100) == b"" and first.lost == "the download restarted"
    second = arrival.reader()  # a reader of the new attempt reads it
    arrival.grow(100)
    assert second.read(10) == b"a" * 10
    arrival.finish(None)
    assert second.read(10) == b"" and second.lost == "the download failed"
    assert arrival.final() is None
    first.close()
    second.close()


def test_a_download_that_ends_short_or_a_file_shorter_than_said_is_lost(
        tmp_path: Path) -> None:
    arrival = _arrival(tmp_path, b"b" * 10)
    arrival.size = 20  # published as 20 bytes; the file holds 10
    arrival.grow(20)
    with arrival.reader() as reader:
        assert reader.read(100) == b"b" * 10
        assert reader.read(100) == b"" and reader.lost is not None
    other = _arrival(tmp_path, b"c" * 10)
    other.grow(5)
    with other.reader() as reader:
        assert reader.read(100) == b"c" * 5
        other.finish(tmp_path / "c.png")  # over with only 5 of 10 published
        assert reader.read(100) == b"" and reader.lost == "the download ended short"


def test_a_stopped_reader_stops_waiting(tmp_path: Path) -> None:
    arrival = _arrival(tmp_path, b"d" * 10)
    stop = threading.Event()
    result: list[bytes] = []
    with arrival.reader(stop) as reader:
        thread = threading.Thread(target=lambda: result.append(reader.read(5)))
        thread.start()
        stop.set()
        thread.join(10)
        assert result == [b""] and reader.lost == "stopped"
    assert arrival.final(stop) is None  # nor does waiting for the end hold it


def test_derived_names_handed_out_are_kept_by_the_commit(tmp_path: Path) -> None:
    arrival = _arrival(tmp_path, b"")
    assert arrival.derived("pyramid.tif") == tmp_path / ".x.d.pyramid.tif"
    assert arrival.claimed == (".x.d.pyramid.tif",)


# ----------------------------------------------------------------- over sockets


@pytest.fixture(scope="module")
def big_png() -> bytes:
    data = _png((1100, 1000), 7)  # four ranged parts of about 0.8 MiB, as in test_ranges
    assert len(data) == SIZE_OF_BIG_PNG
    return data


@pytest.fixture
def s3() -> Iterator[Sandbox]:
    with Sandbox(storage_profile="s3") as sandbox:
        yield sandbox


class _Follower:
    """Reads an arrival on a thread of its own, as a decoder would."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.lost: list[str | None] = []
        self.position = 0
        self.moved = threading.Condition()
        self.thread: threading.Thread | None = None

    def __call__(self, arrival: Arrival) -> None:
        reader = arrival.reader()

        def run() -> None:
            with reader:
                while chunk := reader.read(64 << 10):
                    with self.moved:
                        self.chunks.append(chunk)
                        self.position = reader.position
                        self.moved.notify_all()
                with self.moved:
                    self.lost.append(reader.lost)
                    self.moved.notify_all()

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def wait_for(self, position: int) -> bool:
        with self.moved:
            return self.moved.wait_for(lambda: self.position >= position or self.lost, 30)

    def join(self) -> bytes:
        assert self.thread is not None
        self.thread.join(30)
        return b"".join(self.chunks)


def test_the_reader_gets_the_bytes_before_the_last_part_is_in(
        s3: Sandbox, big_png: bytes, tmp_path: Path) -> None:
    pid = s3.add_job(big_png, big_png, status="Completed")
    source = Source(s3, pid)
    follower = _Follower()
    # The last part is held, with none of its bytes sent, until released.
    s3.inject("hang", server="storage", times=1, after_bytes=0, range=PARTS[-1], timeout=60)
    hang = s3._faults._faults[-1]
    box: dict[str, object] = {}
    with ranged(tmp_path) as t:
        thread = threading.Thread(
            target=lambda: box.update(fetched=t.fetch(source, pid, "output",
                                                      on_arrival=follower)))
        thread.start()
        try:
            assert follower.wait_for(STARTS[-1])  # every byte before the held part
            assert "fetched" not in box and not hang.released.is_set()
        finally:
            hang.released.set()
        thread.join(30)
    assert follower.join() == big_png
    assert follower.lost == [None]
    fetched = box["fetched"]
    assert fetched.path.read_bytes() == big_png  # type: ignore[attr-defined]


def test_one_stream_hands_on_its_bytes_too(s3: Sandbox, big_png: bytes, tmp_path: Path) -> None:
    pid = s3.add_job(big_png, big_png, status="Completed")
    follower = _Follower()
    with ranged(tmp_path, connections=1) as t:
        t.fetch(Source(s3, pid), pid, "output", on_arrival=follower)
    assert follower.join() == big_png and follower.lost == [None]


def test_a_part_of_another_object_voids_what_the_reader_had(
        s3: Sandbox, big_png: bytes, tmp_path: Path) -> None:
    pid = s3.add_job(big_png, big_png, status="Completed")
    followers: list[_Follower] = []

    def follow(arrival: Arrival) -> None:
        followers.append(_Follower())
        followers[-1](arrival)

    s3.inject("change_etag", server="storage", range=PARTS[2])
    with ranged(tmp_path) as t:
        fetched = t.fetch(Source(s3, pid), pid, "output", on_arrival=follow)
    assert fetched.path.read_bytes() == big_png
    assert "change_etag" in [r.fault for r in s3.requests]
    [follower] = followers
    data = follower.join()
    # Whenever the restart came, the reader either read the object whole, in
    # order (the restart came before anything was published), or was told
    # that what it had is void: never a splice read as the object.
    assert (follower.lost, data) == ([None], big_png) \
        or follower.lost == ["the download restarted"]


def test_a_failed_download_is_lost_to_the_reader(
        s3: Sandbox, big_png: bytes, tmp_path: Path) -> None:
    pid = s3.add_job(big_png, big_png, status="Completed")
    follower = _Follower()
    finals: list[Path | None] = []
    waiters: list[threading.Thread] = []

    def follow(arrival: Arrival) -> None:
        follower(arrival)
        waiters.append(threading.Thread(target=lambda: finals.append(arrival.final())))
        waiters[-1].start()

    s3.inject("truncate", server="storage", times=None, after_bytes=100_000)
    with ranged(tmp_path, retries=1) as t, pytest.raises(TransferError):
        t.fetch(Source(s3, pid), pid, "output", on_arrival=follow)
    data = follower.join()
    assert follower.lost == ["the download failed"]
    assert big_png.startswith(data) and len(data) < len(big_png)
    waiters[0].join(30)
    assert finals == [None]


def test_a_reader_whose_download_restarted_after_its_last_read_is_not_intact(
        tmp_path: Path) -> None:
    arrival = _arrival(tmp_path, b"e" * 10)
    arrival.grow(10)
    with arrival.reader() as reader:
        assert reader.read(10) == b"e" * 10 and reader.intact
        # The download then restarted (another ETag) and ended well: what was
        # read is of the abandoned attempt, so it is not the file.
        arrival.restart()
        arrival.grow(10)
        arrival.finish(tmp_path / "x.png")
        assert arrival.final() == tmp_path / "x.png"
        assert not reader.intact
