"""Ranged downloads: the plan, the record of done ranges, the in-order hash,
and parallel Range requests through ``Transfer`` over real sockets.

Concurrency and order are shown with the sandbox's request log and its
``gather`` / ``hang`` faults (an answer held until N parts are under way, or
until released), never with timings.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from conftest import wait_until
from PIL import Image

from topaz_nb.errors import Cancelled
from topaz_nb.links import Link
from topaz_nb.sandbox import Sandbox
from topaz_nb.storage import Transfer
from topaz_nb.storage.cache import read_json
from topaz_nb.storage.ranges import Done, InOrderHasher, plan, worth_splitting

MIB = 1 << 20


# ----------------------------------------------------------------- units


def test_plan_splits_the_missing_bytes_in_file_order() -> None:
    assert plan([(0, 10)], 4) == [(0, 4), (4, 8), (8, 10)]
    assert plan([(2, 5), (9, 17)], 4) == [(2, 5), (9, 13), (13, 17)]
    assert plan([], 4) == []
    assert plan([(0, 100)], 1 << 30, 4) == [(0, 100)]  # never below MIN_PART_SIZE
    with pytest.raises(ValueError):
        plan([(0, 1)], 0)


def test_plan_keeps_every_connection_busy() -> None:
    # 16 MiB on 4 connections: 4 parts of 4 MiB, not 2 of 8 leaving 2 idle.
    assert plan([(0, 16 * MIB)], 8 * MIB, 4) == [(i * 4 * MIB, (i + 1) * 4 * MIB)
                                                for i in range(4)]
    # 48 MiB: 8 even parts (two full rounds), never 6 of 8 MiB (one round half idle).
    parts = plan([(0, 48 * MIB)], 8 * MIB, 4)
    assert len(parts) == 8 and {b - a for a, b in parts} == {6 * MIB}
    assert parts[0][0] == 0 and parts[-1][1] == 48 * MIB


def test_only_large_objects_of_known_size_are_split() -> None:
    assert worth_splitting(16 * MIB, 8 * MIB, 4)
    assert not worth_splitting(16 * MIB - 1, 8 * MIB, 4)
    assert not worth_splitting(None, 8 * MIB, 4)  # size unknown: one stream
    assert not worth_splitting(1 << 30, 8 * MIB, 1)  # one connection: one stream


def test_done_merges_ranges_and_tells_what_is_missing() -> None:
    done = Done(100)
    done.add(50, 60)
    done.add(0, 10)
    assert done.prefix == 10 and done.missing() == [(10, 50), (60, 100)]
    done.add(10, 50)
    assert done.prefix == 60 and done.record() == [[0, 60]] and done.total == 60
    done.add(60, 100)
    assert done.complete and done.missing() == []
    with pytest.raises(ValueError):
        done.add(90, 101)


def test_a_record_that_does_not_fit_the_object_is_not_trusted() -> None:
    assert Done.from_record(100, [[0, 10], [20, 30]]).record() == [[0, 10], [20, 30]]  # type: ignore[union-attr]
    for bad in ([[0, 101]], [[5, 5]], [[0, "9"]], [[0, True]], "0-10", [[0, 1, 2]]):
        assert Done.from_record(100, bad) is None


def test_the_hasher_follows_the_gapless_prefix_only(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 5)
    path = tmp_path / "f"
    path.write_bytes(data)
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        hasher = InOrderHasher(fd, digest)
        assert hasher.advance(1000, budget=100) == 100  # a poll is never held long
        assert hasher.advance(MIB + 7) == MIB + 7
        assert hasher.advance(len(data)) == len(data)
    finally:
        os.close(fd)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------- over sockets


def _png(size: tuple[int, int], seed: int) -> bytes:
    raw = hashlib.shake_256(seed.to_bytes(4, "big")).digest(size[0] * size[1] * 3)
    buf = io.BytesIO()
    Image.frombytes("RGB", size, raw).save(buf, "PNG", compress_level=0)
    return buf.getvalue()


@pytest.fixture(scope="module")
def big_png() -> bytes:
    data = _png((1100, 1000), 7)  # ~3.3 MB: four parts of about 0.8 MiB
    assert len(data) == SIZE_OF_BIG_PNG
    return data


SIZE_OF_BIG_PNG = 3_302_168  # checked by the fixture


def _ranges(size: int) -> list[str]:
    return [f"bytes={a}-{b - 1}" for a, b in plan([(0, size)], MIB, 4)]


PARTS = _ranges(SIZE_OF_BIG_PNG)
STARTS = [a for a, _ in plan([(0, SIZE_OF_BIG_PNG)], MIB, 4)]
ENDS = [b for _, b in plan([(0, SIZE_OF_BIG_PNG)], MIB, 4)]


def parts_of(data: bytes) -> list[str]:
    assert len(data) == SIZE_OF_BIG_PNG
    return PARTS


class Source:
    """Links from the sandbox's Download API, counting refreshes."""

    def __init__(self, sb: Sandbox, pid: str) -> None:
        self.sb, self.pid = sb, pid
        self.calls: list[bool] = []

    def __call__(self, refresh: bool) -> Link:
        self.calls.append(refresh)
        r = requests.get(f"{self.sb.base_url}/download/{self.pid}",
                         headers={"X-API-Key": self.sb.api_key}, timeout=10)
        r.raise_for_status()
        body = r.json()
        return Link(self.pid, "output", body["download_url"], body["head_url"],
                    expiry=datetime.fromtimestamp(body["expiry"], timezone.utc))


@pytest.fixture
def s3() -> Iterator[Sandbox]:
    with Sandbox(storage_profile="s3") as sandbox:
        yield sandbox


def gets(sb: Sandbox) -> list:
    return [r for r in sb.requests if r.server == "storage" and r.method == "GET"]


def ranges_of(sb: Sandbox) -> list[str | None]:
    return [r.headers.get("Range") for r in gets(sb)]


def sidecar_sha(cache: Path) -> str:
    [sidecar] = [p for p in cache.rglob(".output-*.json") if not p.name.endswith(".part.json")]
    meta = read_json(sidecar)
    assert meta is not None
    return str(meta["sha256"])


def ranged(tmp_path: Path, **kw: object) -> Transfer:
    return Transfer(tmp_path / "cache", part_size=MIB, **kw)  # type: ignore[arg-type]


def test_parts_are_in_flight_at_once_and_the_file_is_byte_identical(
        s3: Sandbox, big_png: bytes, tmp_path: Path) -> None:
    pid = s3.add_job(big_png, big_png, status="Completed")
    source = Source(s3, pid)
    seen: list[tuple[int, int | None]] = []
    # retries=0: a gather that never completes drops its answers, which fails the download.
    with ranged(tmp_path, retries=0) as t:
        info = t.head(source)
        # Every part's body is held until all four answers are under way.
        s3.inject("gather", server="storage", count=4, times=4, timeout=30)
        fetched = t.download(source, pid, "output", info=info,
                             on_progress=lambda d, n: seen.append((d, n)))
    assert fetched.path.read_bytes() == big_png
    assert sorted(ranges_of(s3)) == sorted(parts_of(big_png))
    assert [r.fault for r in gets(s3)] == ["gather"] * 4
    assert sidecar_sha(tmp_path / "cache") == hashlib.sha256(big_png).hexdigest()
    assert seen[-1] == (len(big_png), len(big_png))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert not list((tmp_path / "cache").rglob("*.part*"))


def test_one_connection_or_a_small_object_is_one_stream(
        s3: Sandbox, big_png: bytes, tmp_path: Path) -> None:
    pid = s3.add_job(big_png, big_png, status="Completed")
    with ranged(tmp_path, connections=1) as t:
        assert t.fetch(Source(s3, pid), pid, "output").path.read_bytes() == big_png
    assert ranges_of(s3) == [None]
    s3.clear_requests()
    with Transfer(tmp_path / "other") as t:  # default parts of 8 MiB: 3.3 MB is small
        assert t.fetch(Source(s3, pid), pid, "output").path.read_bytes() == big_png
    assert ranges_of(s3) == [None]


def test_bare_storage_with_no_length_is_one_stream(big_png: bytes, tmp_path: Path) -> None:
    with Sandbox(storage_profile="bare") as bare:
        pid = bare.add_job(big_png, big_png, status="Completed")
        with ranged(tmp_path) as t:
            assert t.fetch(Source(bare, pid), pid, "output").path.read_bytes() == big_png
        assert ranges_of(bare) == [None]


def test_a_cut_part_is_resumed_from_where_it_stopped(
        s3: Sandbox, big_png: bytes, tmp_path: Path) -> None:
    pid = s3.add_job(big_png, big_png, status="Completed")
    s3.inject("truncate", server="storage", after_bytes=300_000, range=PARTS[1])
    with ranged(tmp_path) as t:
        fetched = t.fetch(Source(s3, pid), pid, "output")
    assert fetched.path.read_bytes() == big_png
    sent = ranges_of(s3)
    rest = f"bytes={STARTS[1] + 300_000}-{ENDS[1] - 1}"
    assert rest in sent  # only the rest of that part
    assert sorted(r for r in sent if r is not None) == sorted([*parts_of(big_png), rest])
    assert sidecar_sha(tmp_path / "cache") == hashlib.sha256(big_png).hexdigest()


def test_a_part_answered_200_falls_back_to_one_stream(
        s3: Sandbox, big_png: bytes, tmp_path: Path) -> None:
    pid = s3.add_job(big_png, big_png, status="Completed")
    s3.inject("ignore_range", server="storage", range=PARTS[1])
    with ranged(tmp_path) as t:
        fetched = t.fetch(Source(s3, pid), pid, "output")
    assert fetched.path.read_bytes() == big_png
    log = gets(s3)
    at = [r.fault for r in log].index("ignore_range")
    last = log[-1].headers.get("Range")
    assert last is None or re.fullmatch(r"bytes=\d+-", last)  # one stream to the end
    assert log[-1] is not log[at]
    assert sidecar_sha(tmp_path / "cache") == hashlib.sha256(big_png).hexdigest()


def test_storage_that_ignores_ranges_gets_one_stream(
        s3: Sandbox, big_png: bytes, tmp_path: Path) -> None:
    pid = s3.add_job(big_png, big_png, status="Completed")
    s3.inject("ignore_range", server="storage", times=None)
    with ranged(tmp_path) as t:
        fetched = t.fetch(Source(s3, pid), pid, "output")
    assert fetched.path.read_bytes() == big_png
    # The first part's 200 stops the plan: no other part is asked for.
    assert ranges_of(s3) == [PARTS[0], None]


def test_a_part_of_another_etag_restarts_the_whole_object(
        s3: Sandbox, big_png: bytes, tmp_path: Path) -> None:
    pid = s3.add_job(big_png, big_png, status="Completed")
    s3.inject("change_etag", server="storage", range=PARTS[2])
    with ranged(tmp_path) as t:
        fetched = t.fetch(Source(s3, pid), pid, "output")
    assert fetched.path.read_bytes() == big_png
    log = gets(s3)
    at = [r.fault for r in log].index("change_etag")
    after = [r.headers.get("Range") for r in log[at + 1:]]
    # Never spliced: the first part is asked for again, and every part after it.
    assert PARTS[0] in after
    assert set(parts_of(big_png)) <= set(after)
    assert sidecar_sha(tmp_path / "cache") == hashlib.sha256(big_png).hexdigest()


def test_cancel_stops_every_part_and_the_next_fetch_asks_only_for_the_rest(
        s3: Sandbox, big_png: bytes, tmp_path: Path) -> None:
    pid = s3.add_job(big_png, big_png, status="Completed")
    source = Source(s3, pid)
    cancel = threading.Event()
    arrived = threading.Event()
    box: dict[str, BaseException] = {}
    with ranged(tmp_path, chunk_size=65536) as t:
        info = t.head(source)
        s3.clear_requests()
        # Every part sends 100 000 bytes, then holds its answer open until released.
        s3.inject("hang", server="storage", times=None, after_bytes=100_000, timeout=60)

        def on_progress(done: int, total: int | None) -> None:
            if done >= 3 * 65536:
                arrived.set()

        def run() -> None:
            try:
                t.download(source, pid, "output", info=info, cancel=cancel,
                           on_progress=on_progress)
            except BaseException as exc:  # noqa: BLE001 - inspected below
                box["error"] = exc

        worker = threading.Thread(target=run)
        worker.start()
        wait_until(lambda: len(gets(s3)) == 4 and arrived.is_set(),
                   "all four parts under way, bytes arriving")
        cancel.set()
        worker.join(30)  # a bound for a broken run only
        assert not worker.is_alive()
        assert isinstance(box.get("error"), Cancelled)
        # The answers are still held: the parts stopped because of the event.
        assert s3._faults._faults and not s3._faults._faults[0].released.is_set()
        [meta_path] = (tmp_path / "cache").rglob("*.part.json")
        meta = read_json(meta_path)
        assert meta is not None
        record = Done.from_record(len(big_png), meta["ranges"])
        assert record is not None and record.total >= 3 * 65536
        for a, b in record.record():  # what each part wrote, from its start
            assert a in STARTS and b - a <= 100_000
        s3.clear_faults()
        s3.clear_requests()
        fetched = t.download(source, pid, "output", info=info)
    assert fetched.path.read_bytes() == big_png
    # Exactly the missing ranges, nothing of what the first run wrote.
    assert sorted(ranges_of(s3)) == sorted(
        f"bytes={a}-{b - 1}" for a, b in plan(record.missing(), MIB, 4))
    assert sidecar_sha(tmp_path / "cache") == hashlib.sha256(big_png).hexdigest()


_CHILD = textwrap.dedent("""
    import os, sys
    from datetime import datetime, timezone
    import requests
    from topaz_nb.links import Link
    from topaz_nb.storage import Transfer

    base, key, pid, cache = sys.argv[1:5]
    chunk = int(sys.argv[5]) if len(sys.argv) > 5 else 1 << 20

    def source(refresh):
        body = requests.get(f"{base}/download/{pid}", headers={"X-API-Key": key},
                            timeout=10).json()
        return Link(pid, "output", body["download_url"], body["head_url"],
                    expiry=datetime.fromtimestamp(body["expiry"], timezone.utc))

    with Transfer(cache, part_size=1 << 20, connections=4, stall_timeout=None,
                  chunk_size=chunk) as t:
        t.fetch(source, pid, "output")
    print("finished")
""")


def test_after_kill_9_the_next_process_fetches_only_the_missing_ranges(
        s3: Sandbox, big_png: bytes, tmp_path: Path) -> None:
    pid = s3.add_job(big_png, big_png, status="Completed")
    cache = tmp_path / "cache"
    # The third part never finishes in the first process; the others do.
    s3.inject("hang", server="storage", times=None, after_bytes=0, range=PARTS[2],
              timeout=120)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, s3.base_url, s3.api_key, pid,
                              str(cache)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def three_parts_recorded() -> bool:
            metas = [read_json(p) for p in cache.rglob("*.part.json")]
            return any(m is not None and m.get("ranges") == [[0, STARTS[2]],
                                                             [ENDS[2], len(big_png)]]
                       for m in metas)

        wait_until(three_parts_recorded, "three parts recorded by the first process")
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    s3.clear_faults()
    s3.clear_requests()
    with Transfer(cache, part_size=MIB) as t:
        fetched = t.fetch(Source(s3, pid), pid, "output")
    assert fetched.path.read_bytes() == big_png
    # Exactly the missing part, now spread over the connections, and nothing else.
    sent = ranges_of(s3)
    assert sorted(sent) == sorted(f"bytes={a}-{b - 1}"  # type: ignore[type-var]
                                  for a, b in plan([(STARTS[2], ENDS[2])], MIB, 4))
    covered = sorted((int(r.split("=")[1].split("-")[0]), int(r.split("-")[1]) + 1)
                     for r in sent if r)
    assert covered[0][0] == STARTS[2] and covered[-1][1] == ENDS[2]
    assert all(b == c for (_, b), (c, _) in itertools.pairwise(covered))
    assert sidecar_sha(cache) == hashlib.sha256(big_png).hexdigest()


def test_a_refused_link_is_refreshed_once_for_the_whole_object(
        s3: Sandbox, big_png: bytes, tmp_path: Path) -> None:
    pid = s3.add_job(big_png, big_png, status="Completed")
    source = Source(s3, pid)
    s3.inject("expire", server="storage", range=PARTS[0])
    with ranged(tmp_path) as t:
        fetched = t.fetch(source, pid, "output")
    assert fetched.path.read_bytes() == big_png
    assert source.calls == [False, True]
    assert sorted(r for r in ranges_of(s3)) == sorted([PARTS[0], *parts_of(big_png)])


def test_connections_are_a_setting_checked_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="connections"):
        Transfer(tmp_path, connections=0)
    with Transfer(tmp_path, connections=2) as t:
        assert t.connections == 2
        t.connections = 1
        assert t.connections == 1
        with pytest.raises(ValueError, match="part_size"):
            t.part_size = 10


def test_ctrl_c_stops_a_ranged_download_and_keeps_what_the_parts_wrote(
        s3: Sandbox, big_png: bytes, tmp_path: Path) -> None:
    pid = s3.add_job(big_png, big_png, status="Completed")
    cache = tmp_path / "cache"
    # Every part sends 100 000 bytes, then its answer is held open.
    s3.inject("hang", server="storage", times=None, after_bytes=100_000,
              timeout=120)
    hang = s3._faults._faults[-1]
    child = subprocess.Popen([sys.executable, "-c", _CHILD, s3.base_url, s3.api_key, pid,
                              str(cache)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        wait_until(lambda: len(gets(s3)) == 4, "all four parts under way in the child")
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)  # a bound for a broken run only
    finally:
        child.kill()
    assert child.returncode != 0 and "finished" not in out
    assert "KeyboardInterrupt" in err
    assert not hang.released.is_set()  # it stopped for the interrupt, not for the server
    [meta_path] = cache.rglob("*.part.json")
    meta = read_json(meta_path)
    assert meta is not None and "ranges" in meta
    assert not [p for p in cache.rglob("output-*") if not p.name.endswith(".part")]


def test_a_part_cut_by_kill_9_is_continued_from_its_recorded_progress(
        s3: Sandbox, big_png: bytes, tmp_path: Path) -> None:
    """A part records its progress every quarter part (here 256 KiB), so a kill
    mid-part loses less than that: the next process asks for the rest of it."""
    pid = s3.add_job(big_png, big_png, status="Completed")
    cache = tmp_path / "cache"
    s3.inject("hang", server="storage", times=None, after_bytes=600_000, range=PARTS[2],
              timeout=120)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, s3.base_url, s3.api_key, pid,
                              str(cache), str(65536)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: list[list[list[int]]] = []
    try:
        def recorded_mid_part() -> bool:
            for path in cache.rglob("*.part.json"):
                meta = read_json(path)
                ranges = meta.get("ranges") if meta else None
                if ranges and len(ranges) == 2 and ranges[1] == [ENDS[2], len(big_png)] \
                        and ranges[0][0] == 0 and ranges[0][1] >= STARTS[2] + 2 * 262_144:
                    seen.append(ranges)
                    return True
            return False

        wait_until(recorded_mid_part, "progress recorded inside the third part")
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        child.kill()
        child.communicate()
    s3.clear_faults()
    s3.clear_requests()
    [[[_, have], _]] = seen
    assert STARTS[2] < have <= STARTS[2] + 600_000
    meta = read_json(next(cache.rglob("*.part.json")))
    assert meta is not None
    have = meta["ranges"][0][1]  # the last record the child made before it died
    with Transfer(cache, part_size=MIB) as t:
        fetched = t.fetch(Source(s3, pid), pid, "output")
    assert fetched.path.read_bytes() == big_png
    assert sorted(ranges_of(s3)) == sorted(  # type: ignore[type-var]
        f"bytes={a}-{b - 1}" for a, b in plan([(have, ENDS[2])], MIB, 4))
    assert sidecar_sha(cache) == hashlib.sha256(big_png).hexdigest()


def test_a_ranged_download_over_a_shaped_link_is_byte_identical(
        big_png: bytes, tmp_path: Path) -> None:
    from topaz_nb.sandbox import Link as Shaped

    # As from object storage: each connection capped, the link shared, a first-byte wait.
    shaped = Shaped(per_connection=20e6, shared=40e6, latency=0.005)
    with Sandbox(storage_profile="s3", link=shaped) as sb:
        pid = sb.add_job(big_png, big_png, status="Completed")
        with ranged(tmp_path) as t:
            fetched = t.fetch(Source(sb, pid), pid, "output")
        assert fetched.path.read_bytes() == big_png
        assert sorted(r for r in ranges_of(sb) if r) == sorted(parts_of(big_png))
        assert sidecar_sha(tmp_path / "cache") == hashlib.sha256(big_png).hexdigest()
