"""Transfer: presigned HEAD/GET, disk cache, resume, refresh — over real sockets.

Every test talks to a real :class:`~topaz_nb.sandbox.Sandbox` (or, where the
sandbox is too well behaved, a small local ``http.server``).  Links come from
the sandbox's API with a plain ``requests.get``, so these tests need no client.
"""

from __future__ import annotations

import email.utils
import hashlib
import io
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from PIL import Image

from topaz_nb._text import say
from topaz_nb.errors import Cancelled, InvalidProcessId, LinkExpired, TransferError
from topaz_nb.links import Link, Side, redact_url
from topaz_nb.sandbox import STORAGE_PROFILES, Sandbox
from topaz_nb.storage import Fetched, Transfer
from topaz_nb.storage.cache import read_json

MIB = 1 << 20


# ----------------------------------------------------------------- fixtures


def _png(size: tuple[int, int], seed: int) -> bytes:
    """A PNG of noise: it does not compress, so its size is predictable."""
    raw = hashlib.shake_256(seed.to_bytes(4, "big")).digest(size[0] * size[1] * 3)
    buf = io.BytesIO()
    Image.frombytes("RGB", size, raw).save(buf, "PNG", compress_level=0)
    return buf.getvalue()


@pytest.fixture(scope="module")
def big_png() -> bytes:
    data = _png((1100, 1000), 1)  # ~3.3 MB: several 1 MiB chunks
    assert len(data) > 3 * MIB
    return data


@pytest.fixture(scope="module")
def small_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(params=STORAGE_PROFILES)
def sb(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """A sandbox under each storage profile: S3's headers, and none at all."""
    with Sandbox(storage_profile=request.param) as sandbox:
        yield sandbox


@pytest.fixture
def s3() -> Iterator[Sandbox]:
    """A sandbox whose storage sends S3's headers (ETag, Last-Modified, length)."""
    with Sandbox(storage_profile="s3") as sandbox:
        yield sandbox


@pytest.fixture
def job(sb: Sandbox, small_jpeg: bytes, big_png: bytes) -> str:
    return sb.add_job(small_jpeg, big_png, status="Completed")


@pytest.fixture
def transfer(tmp_path: Path) -> Iterator[Transfer]:
    with Transfer(tmp_path / "cache") as t:
        yield t


class Source:
    """A LinkSource built on the sandbox's Download API, counting refreshes."""

    def __init__(self, sb: Sandbox, pid: str, side: str = "output") -> None:
        self.sb, self.pid, self.side = sb, pid, side
        self.calls: list[bool] = []
        self.link: Link | None = None

    def fresh(self) -> Link:
        path = "download" if self.side == "output" else "download/input"
        r = requests.get(f"{self.sb.base_url}/{path}/{self.pid}",
                         headers={"X-API-Key": self.sb.api_key}, timeout=10)
        r.raise_for_status()
        body = r.json()
        side: Side = "input" if self.side == "input" else "output"
        return Link(self.pid, side, body["download_url"], body["head_url"],
                    expiry=datetime.fromtimestamp(body["expiry"], timezone.utc))

    def __call__(self, refresh: bool) -> Link:
        self.calls.append(refresh)
        if refresh or self.link is None:
            self.link = self.fresh()
        return self.link

    @property
    def refreshes(self) -> int:
        return self.calls.count(True)


def storage(sb: Sandbox, method: str | None = None) -> list:
    return [r for r in sb.requests if r.server == "storage"
            and (method is None or r.method == method)]


def files_in(root: Path) -> list[Path]:
    """Visible files: downloads and ``.part`` files, not sidecars, locks or previews."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")) \
        if root.exists() else []


def complete_files(root: Path) -> list[Path]:
    return [p for p in files_in(root) if not p.name.endswith(".part")]


def assert_one_line_without_secret(message: str, *secrets: str) -> None:
    assert "\n" not in message and message.strip() == message
    for secret in secrets:
        assert secret not in message


# ------------------------------------------------------------- HEAD / GET


def test_head_reports_object_info(s3: Sandbox, small_jpeg: bytes, big_png: bytes,
                                  transfer: Transfer) -> None:
    sb = s3
    job = sb.add_job(small_jpeg, big_png)
    src = Source(sb, job)
    info = transfer.head(src)
    assert info.size == len(big_png)
    assert info.content_type == "image/png"
    assert info.etag == hashlib.md5(big_png).hexdigest()  # quotes stripped
    head = storage(sb)[-1]
    assert head.method == "HEAD"
    assert src.link is not None and head.query == src.link.head_url.partition("?")[2]
    sent_lm = sb.job(job).output.last_modified
    assert info.last_modified == email.utils.parsedate_to_datetime(sent_lm)
    assert info.last_modified.tzinfo is not None
    assert info.headers["accept-ranges"] == "bytes"
    assert info.headers["x-amz-server-side-encryption"] == "AES256"
    assert info.url == redact_url(src.link.head_url) and "X-Amz" not in info.url
    assert storage(sb, "GET") == []


def test_bare_storage_tells_nothing(sb: Sandbox, job: str, big_png: bytes,
                                    transfer: Transfer) -> None:
    if sb.storage_profile != "bare":
        pytest.skip("the bare profile only")
    src = Source(sb, job)
    info = transfer.head(src)
    assert (info.size, info.etag, info.last_modified) == (None, None, None)
    assert info.content_type == "application/octet-stream"
    assert src.link is not None and src.link.download_url.partition("?")[0].endswith(job)
    fetched = transfer.download(src, job, "output", info=info)
    assert fetched.path.read_bytes() == big_png and fetched.path.suffix == ".png"
    get = storage(sb, "GET")[-1]
    assert get.path.endswith("/output/" + job)


def test_download_streams_with_progress_identity_and_big_chunks(
        sb: Sandbox, job: str, big_png: bytes, transfer: Transfer) -> None:
    assert transfer.chunk_size >= MIB
    progress: list[tuple[int, int | None]] = []
    fetched = transfer.fetch(Source(sb, job), job, "output",
                             on_progress=lambda done, total: progress.append((done, total)))
    assert isinstance(fetched, Fetched)
    assert fetched.path.read_bytes() == big_png
    assert fetched.path.parent.parent == transfer.cache_dir
    assert fetched.path.suffix == ".png"
    assert (fetched.process_id, fetched.side, fetched.from_cache) == (job, "output", False)
    assert fetched.bytes_downloaded == len(big_png)
    # One callback each time another chunk_size bytes arrived, monotone, ending at the total.
    assert len(big_png) // transfer.chunk_size <= len(progress) \
        <= math.ceil(len(big_png) / transfer.chunk_size)
    dones = [d for d, _ in progress]
    assert dones == sorted(dones) and dones[-1] == len(big_png)
    assert {t for _, t in progress} == {len(big_png) if sb.storage_profile == "s3" else None}
    reqs = storage(sb)
    assert [r.method for r in reqs] == ["HEAD", "GET"]
    assert all(r.headers.get("Accept-Encoding") == "identity" for r in reqs)
    assert "Range" not in reqs[1].headers


def test_chunk_size_is_honoured(sb: Sandbox, job: str, big_png: bytes, tmp_path: Path) -> None:
    progress: list[int] = []
    with Transfer(tmp_path, chunk_size=256 * 1024) as t:
        t.fetch(Source(sb, job), job, "output", on_progress=lambda d, _t: progress.append(d))
    assert len(big_png) // (256 * 1024) <= len(progress) <= math.ceil(len(big_png) / (256 * 1024))


def test_settings_changed_after_construction_apply_to_the_next_download(
        sb: Sandbox, job: str, big_png: bytes, transfer: Transfer) -> None:
    transfer.chunk_size, transfer.max_bytes, transfer.stall_timeout = 256 * 1024, 10**9, 5.0
    assert (transfer.chunk_size, transfer.max_bytes, transfer.stall_timeout) == \
        (256 * 1024, 10**9, 5.0)
    progress: list[int] = []
    transfer.fetch(Source(sb, job), job, "output", on_progress=lambda d, _t: progress.append(d))
    assert len(big_png) // (256 * 1024) <= len(progress) <= math.ceil(len(big_png) / (256 * 1024))


def test_second_fetch_is_one_head_per_side_and_no_get(sb: Sandbox, job: str, tmp_path: Path,
                                                      big_png: bytes, small_jpeg: bytes) -> None:
    with Transfer(tmp_path) as t:
        first = [t.fetch(Source(sb, job, side), job, side) for side in ("input", "output")]
    sb.clear_requests()
    with Transfer(tmp_path) as t:  # a new process: only the disk is shared
        again = [t.fetch(Source(sb, job, side), job, side) for side in ("input", "output")]
    assert [f.from_cache for f in again] == [True, True]
    assert [f.bytes_downloaded for f in again] == [0, 0]
    assert [f.path for f in again] == [f.path for f in first]
    assert again[0].path.read_bytes() == small_jpeg and again[1].path.read_bytes() == big_png
    assert again[0].path.suffix == ".jpg"
    assert sorted(r.method for r in storage(sb)) == ["HEAD", "HEAD"]


def test_download_with_known_info_on_cache_hit_sends_nothing(sb: Sandbox, job: str,
                                                             transfer: Transfer) -> None:
    fetched = transfer.fetch(Source(sb, job), job, "output")
    assert transfer.cached(job, "output", fetched.info) == fetched.path
    sb.clear_requests()
    again = transfer.download(Source(sb, job), job, "output", info=fetched.info)
    assert again.from_cache and again.path == fetched.path
    assert storage(sb) == []


def test_use_cache_false_downloads_again(sb: Sandbox, job: str, big_png: bytes,
                                         tmp_path: Path) -> None:
    with Transfer(tmp_path, use_cache=False) as t:
        first = t.fetch(Source(sb, job), job, "output")
        second = t.fetch(Source(sb, job), job, "output")
    assert not first.from_cache and not second.from_cache
    assert second.bytes_downloaded == len(big_png)
    assert len(storage(sb, "GET")) == 2
    # Written to its usual place, atomically: no leftovers beside it.
    assert second.path == first.path and second.path.read_bytes() == big_png
    assert files_in(tmp_path) == [second.path]


def test_cached_file_of_wrong_length_is_not_used(sb: Sandbox, job: str, big_png: bytes,
                                                  transfer: Transfer) -> None:
    fetched = transfer.fetch(Source(sb, job), job, "output")
    fetched.path.write_bytes(big_png[:1000])
    assert transfer.cached(job, "output", fetched.info) is None
    again = transfer.fetch(Source(sb, job), job, "output")
    assert not again.from_cache and again.path.read_bytes() == big_png


# ------------------------------------------------------- resume / atomicity


def test_truncated_body_resumes_with_range(sb: Sandbox, job: str, big_png: bytes,
                                           transfer: Transfer) -> None:
    src = Source(sb, job)
    info = transfer.head(src)
    sb.clear_requests()
    sb.inject("truncate", server="storage", after_bytes=1_500_000)
    progress: list[int] = []
    fetched = transfer.download(src, job, "output", info=info,
                                on_progress=lambda d, _t: progress.append(d))
    assert fetched.path.read_bytes() == big_png
    gets = storage(sb, "GET")
    assert len(gets) == 2
    assert "Range" not in gets[0].headers
    start = int(gets[1].headers["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 1_500_000
    if sb.storage_profile == "s3":
        assert gets[1].headers["If-Range"] == f'"{info.etag}"'
    assert fetched.bytes_downloaded == len(big_png)  # nothing fetched twice
    assert progress == sorted(progress) and progress[-1] == len(big_png)
    assert src.refreshes == 0


def test_truncation_that_never_recovers_leaves_no_file(sb: Sandbox, job: str, tmp_path: Path,
                                                       big_png: bytes) -> None:
    cache = tmp_path / "c"
    src = Source(sb, job)
    with Transfer(cache, retries=2) as t:
        info = t.head(src)
        sb.inject("truncate", server="storage", after_bytes=300_000, times=None)
        with pytest.raises(TransferError) as caught:
            t.download(src, job, "output", info=info)
        assert not isinstance(caught.value, LinkExpired)
        message = str(caught.value)
        assert_one_line_without_secret(message, src.link.download_url.partition("?")[2])
        assert f"of {len(big_png)} bytes" in message and "after 3 attempts" in message
        assert redact_url(src.link.download_url) in message
        assert len(storage(sb, "GET")) == 3  # first try + 2 resumes
        assert complete_files(cache) == []
        parts = [p for p in files_in(cache) if p.name.endswith(".part")]
        assert len(parts) == 1 and 0 < parts[0].stat().st_size < len(big_png)  # kept
        kept = parts[0].stat().st_size
        assert t.cached(job, "output", info) is None
        # After the failure nothing is served from the cache: the next fetch resumes.
        sb.clear_faults()
        sb.clear_requests()
        fetched = t.fetch(src, job, "output")
    assert not fetched.from_cache and fetched.path.read_bytes() == big_png
    gets = storage(sb, "GET")
    assert len(gets) == 1 and gets[0].headers["Range"] == f"bytes={kept}-"
    assert complete_files(cache) == [fetched.path] == files_in(cache)


def test_leftover_part_files_are_never_used(sb: Sandbox, job: str, big_png: bytes,
                                            tmp_path: Path) -> None:
    with Transfer(tmp_path / "a") as t:
        name = t.fetch(Source(sb, job), job, "output").path.name
    stem = name.rpartition(".")[0]
    cache = tmp_path / "b"
    folder = cache / job
    folder.mkdir(parents=True)
    # A kill mid-download leaves a .part with the right length but wrong bytes,
    # and with no record of which object it is the start of: it must not be resumed.
    unrecorded = folder / f"{stem}.part"
    unrecorded.write_bytes(b"\0" * 1000)
    stale = folder / f"{name}.0123456789abcdef.part"  # an old one, from any version
    stale.write_bytes(b"\0" * 10)
    old = time.time() - 2 * 24 * 3600
    os.utime(stale, (old, old))
    live = folder / f"{name}.fedcba9876543210.part"  # as if another process is writing it
    live.write_bytes(b"\0" * 10)
    sb.clear_requests()
    with Transfer(cache) as t:
        info = t.head(Source(sb, job))
        assert t.cached(job, "output", info) is None
        fetched = t.fetch(Source(sb, job), job, "output")
    assert not fetched.from_cache and fetched.path.read_bytes() == big_png
    gets = storage(sb, "GET")
    assert len(gets) == 1 and "Range" not in gets[0].headers
    assert not stale.exists()  # leftovers older than a day are swept by any fetch
    assert live.exists()  # a recent one may belong to a live download
    assert not unrecorded.exists()  # became the complete file


def test_stale_parts_are_swept_even_on_a_cache_hit(sb: Sandbox, job: str,
                                                   tmp_path: Path) -> None:
    with Transfer(tmp_path) as t:
        fetched = t.fetch(Source(sb, job), job, "output")
    other = tmp_path / "0b7f6c1e-2a8d-4c65-9e43-0123456789ab"
    other.mkdir()
    stale = [fetched.path.parent / "output-any.part", other / "input-size-5.part"]
    for path in stale:
        path.write_bytes(b"x")
        old = time.time() - 2 * 24 * 3600
        os.utime(path, (old, old))
    with Transfer(tmp_path) as t:
        assert t.fetch(Source(sb, job), job, "output").from_cache
    assert not any(p.exists() for p in stale)


def test_restart_from_zero_when_server_ignores_range(tmp_path: Path, big_png: bytes) -> None:
    seen: list[dict[str, str]] = []

    class NoRanges(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _headers(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(big_png)))
            self.send_header("ETag", '"abc"')
            self.end_headers()

        def do_HEAD(self) -> None:
            self._headers()

        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            self._headers()
            if len(seen) == 1:  # first answer: cut short
                self.wfile.write(big_png[:1_500_000])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(big_png)  # later answers: the whole object again, as 200

    server = ThreadingHTTPServer(("127.0.0.1", 0), NoRanges)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/obj.png?X-Amz-Signature=s3cr3t"
        pid = "0b7f6c1e-2a8d-4c65-9e43-0123456789ab"
        link = Link(pid, "output", base + "g", base + "h",
                    expiry=datetime.now(timezone.utc) + timedelta(hours=1))
        progress: list[int] = []
        with Transfer(tmp_path) as t:
            fetched = t.fetch(lambda refresh: link, pid, "output",
                              on_progress=lambda d, _t: progress.append(d))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert fetched.path.read_bytes() == big_png
    assert len(seen) == 2 and "Range" not in seen[0]
    start = int(seen[1]["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 1_500_000 and seen[1]["If-Range"] == '"abc"'
    assert fetched.bytes_downloaded == start + len(big_png)
    assert 0 in progress and progress[-1] == len(big_png)


# ------------------------------------------------------- missing headers


@pytest.mark.parametrize("omitted", [["ETag"], ["Last-Modified"], ["Content-Length"],
                                     ["ETag", "Last-Modified", "Content-Length"]])
def test_missing_storage_headers_still_download_and_cache(
        s3: Sandbox, small_jpeg: bytes, big_png: bytes, tmp_path: Path,
        omitted: list[str]) -> None:
    sb = s3
    job = sb.add_job(small_jpeg, big_png)
    sb.inject("omit_headers", server="storage", times=None, headers=omitted)
    progress: list[tuple[int, int | None]] = []
    with Transfer(tmp_path) as t:
        fetched = t.fetch(Source(sb, job), job, "output",
                          on_progress=lambda d, total: progress.append((d, total)))
    assert fetched.path.read_bytes() == big_png
    info = fetched.info
    assert (info.etag is None) == ("ETag" in omitted)
    assert (info.last_modified is None) == ("Last-Modified" in omitted)
    assert (info.size is None) == ("Content-Length" in omitted)
    expected_total = None if "Content-Length" in omitted else len(big_png)
    assert {total for _, total in progress} == {expected_total}
    sb.clear_requests()
    with Transfer(tmp_path) as t:
        again = t.fetch(Source(sb, job), job, "output")
    assert again.from_cache and again.path == fetched.path
    assert storage(sb, "GET") == []


def test_validators_decide_the_cache_file(s3: Sandbox, small_jpeg: bytes,
                                         tmp_path: Path) -> None:
    sb = s3
    pid = sb.add_job(small_jpeg, small_jpeg)
    t = Transfer(tmp_path)
    names = set()
    for omitted in ([], ["ETag"], ["ETag", "Last-Modified"],
                    ["ETag", "Last-Modified", "Content-Length"]):
        sb.clear_faults()
        if omitted:
            sb.inject("omit_headers", server="storage", times=None, headers=omitted)
        names.add(t.fetch(Source(sb, pid), pid, "output").path.name)
    t.close()
    assert len(names) == 4
    assert all(n.startswith("output-") and n.endswith(".jpg") for n in names)


# ------------------------------------------------ bodies with no length

# A body framed by nothing but the end of its connection looks complete however
# early the connection closed: the sandbox's ``cut_by_close`` fault sends no
# Content-Length and no chunks (a HEAD it answers has no length either) and
# closes after ``after_bytes``.  Only the format's own end can tell.


def _noise_jpeg(size: tuple[int, int]) -> bytes:
    raw = hashlib.shake_256(b"jpeg").digest(size[0] * size[1] * 3)
    buf = io.BytesIO()
    Image.frombytes("RGB", size, raw).save(buf, "JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module", params=["PNG", "JPEG"])
def photo(request: pytest.FixtureRequest, big_png: bytes) -> bytes:
    """A large image of each format whose end marker a cut body lacks."""
    data = big_png if request.param == "PNG" else _noise_jpeg((1100, 1000))
    assert len(data) > 1_000_000
    return data


def test_a_body_cut_by_close_is_resumed_by_the_same_fetch(
        sb: Sandbox, small_jpeg: bytes, photo: bytes, transfer: Transfer) -> None:
    job = sb.add_job(small_jpeg, photo)
    cut = len(photo) * 4 // 10
    sb.inject("cut_by_close", server="storage", after_bytes=cut, times=2)  # the HEAD and a GET
    fetched = transfer.fetch(Source(sb, job), job, "output")
    assert fetched.info.size is None  # nobody said how long it is
    assert fetched.path.read_bytes() == photo and not fetched.from_cache
    gets = storage(sb, "GET")
    assert [g.fault for g in gets] == ["cut_by_close", None]
    assert "Range" not in gets[0].headers and gets[1].headers["Range"] == f"bytes={cut}-"
    assert parts_in(transfer.cache_dir) == []


def test_a_body_cut_by_close_is_never_cached_and_the_next_fetch_completes_it(
        sb: Sandbox, small_jpeg: bytes, photo: bytes, tmp_path: Path) -> None:
    job = sb.add_job(small_jpeg, photo)
    cut = len(photo) * 4 // 10
    src = Source(sb, job)
    with Transfer(tmp_path, retries=0) as t:  # no second try: the fetch fails at the cut
        sb.inject("cut_by_close", server="storage", after_bytes=cut, times=None)
        with pytest.raises(TransferError) as caught:
            t.fetch(src, job, "output")
        message = str(caught.value)
        assert "ended before the end its image format marks" in message
        assert "run it again to resume" in message
        assert_one_line_without_secret(message, src.link.download_url.partition("?")[2])
        [part] = parts_in(tmp_path)
        assert part.read_bytes() == photo[:cut]  # kept for resume, never the cached file
        assert complete_files(tmp_path) == []
        meta = read_json(part.parent / f".{part.name}.json")
        assert meta is not None and meta["size_unknown"] is True and meta["total"] is None
        info = t.head(src)
        assert t.cached(job, "output", info) is None
        sb.clear_faults()
        sb.clear_requests()
        fetched = t.fetch(src, job, "output")
    assert fetched.path.read_bytes() == photo and not fetched.from_cache
    [get] = storage(sb, "GET")
    assert get.headers["Range"] == f"bytes={cut}-"  # resumed, not fetched again
    assert fetched.bytes_downloaded == len(photo) - cut
    assert complete_files(tmp_path) == [fetched.path] == files_in(tmp_path)
    with Transfer(tmp_path) as t:
        assert t.fetch(src, job, "output").from_cache


def test_a_whole_body_with_no_length_is_cached_at_once(
        sb: Sandbox, small_jpeg: bytes, photo: bytes, transfer: Transfer) -> None:
    job = sb.add_job(small_jpeg, photo)
    sb.inject("cut_by_close", server="storage", after_bytes=len(photo), times=2)
    fetched = transfer.fetch(Source(sb, job), job, "output")
    assert fetched.info.size is None and fetched.path.read_bytes() == photo
    assert [(r.method, r.fault) for r in storage(sb)] == \
        [("HEAD", "cut_by_close"), ("GET", "cut_by_close")]  # no request more
    assert transfer.fetch(Source(sb, job), job, "output").from_cache


def test_a_format_with_no_end_to_check_is_cached_once_storage_says_it_ends(
        sb: Sandbox, small_jpeg: bytes, transfer: Transfer) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 20, 30)).save(buf, "BMP")
    bmp = bytearray(buf.getvalue())
    bmp[2:6] = bytes(4)  # a BMP that does not say its size: no end to check
    job = sb.add_job(small_jpeg, bytes(bmp))
    sb.inject("cut_by_close", server="storage", after_bytes=len(bmp), times=2)
    fetched = transfer.fetch(Source(sb, job), job, "output")
    assert fetched.path.read_bytes() == bmp and fetched.path.suffix == ".bmp"
    gets = storage(sb, "GET")
    # The rest was asked for and storage answered that there is none (416).
    assert len(gets) == 2 and gets[1].headers["Range"] == f"bytes={len(bmp)}-"


def test_a_cut_body_of_a_format_with_no_end_to_check_is_resumed(
        sb: Sandbox, small_jpeg: bytes, transfer: Transfer) -> None:
    buf = io.BytesIO()
    Image.effect_noise((600, 500), 50).convert("RGB").save(buf, "BMP")
    bmp = bytearray(buf.getvalue())
    bmp[2:6] = bytes(4)
    job = sb.add_job(small_jpeg, bytes(bmp))
    sb.inject("cut_by_close", server="storage", after_bytes=len(bmp) // 3, times=2)
    fetched = transfer.fetch(Source(sb, job), job, "output")
    assert fetched.path.read_bytes() == bmp
    gets = storage(sb, "GET")
    # The rest was asked for; its 206 told the size (Content-Range), and it all came.
    assert [g.headers.get("Range") for g in gets] == [None, f"bytes={len(bmp) // 3}-"]


# ------------------------------------------------------- links and errors


def test_storage_403_refreshes_once_then_succeeds(sb: Sandbox, job: str, big_png: bytes,
                                                  transfer: Transfer) -> None:
    src = Source(sb, job)
    sb.inject("expire", server="storage")
    fetched = transfer.fetch(src, job, "output")
    assert fetched.path.read_bytes() == big_png
    assert src.refreshes == 1
    assert [r.method for r in storage(sb)] == ["HEAD", "HEAD", "GET"]


def test_403_during_get_refreshes_once(sb: Sandbox, job: str, big_png: bytes,
                                       transfer: Transfer) -> None:
    src = Source(sb, job)
    info = transfer.head(src)
    sb.inject("expire", server="storage")
    fetched = transfer.download(src, job, "output", info=info)
    assert fetched.path.read_bytes() == big_png
    assert src.refreshes == 1
    gets = storage(sb, "GET")
    assert len(gets) == 2 and gets[1].query == src.link.download_url.partition("?")[2]
    assert src.calls == [False, False, True]  # head, download, one refresh


def test_link_already_expired_is_refreshed_before_use(sb: Sandbox, job: str,
                                                      transfer: Transfer) -> None:
    src = Source(sb, job)
    good = src.fresh()
    src.link = Link(job, "output", good.download_url, good.head_url,
                    expiry=datetime.now(timezone.utc) - timedelta(seconds=1))
    assert src.link.expired
    fetched = transfer.fetch(src, job, "output")
    assert not fetched.from_cache
    assert src.calls == [False, True]  # exactly one refresh, before any storage request
    assert [r.method for r in storage(sb)] == ["HEAD", "GET"]


def test_persistent_403_raises_link_expired(sb: Sandbox, job: str, transfer: Transfer) -> None:
    src = Source(sb, job)
    sb.inject("expire", server="storage", times=None)
    with pytest.raises(LinkExpired) as caught:
        transfer.fetch(src, job, "output")
    assert src.refreshes == 1
    exc = caught.value
    message = str(exc)
    assert_one_line_without_secret(message, src.link.head_url.partition("?")[2])
    assert (exc.reason, exc.status_code, exc.storage_code) == ("expired", 403, "AccessDenied")
    assert "as expired (HTTP 403 AccessDenied: Request has expired" in message
    assert message.endswith("Run it again in a minute; if it fails again, the links reach "
                            "storage already expired: report it to Topaz.")
    assert "clock" not in message
    # Two HEADs (the link, then a fresh one), then one byte asked of the GET link,
    # since a HEAD's answer carries no reason.
    assert [(r.method, r.headers.get("Range")) for r in storage(sb)] == \
        [("HEAD", None), ("HEAD", None), ("GET", "bytes=0-0")]
    assert complete_files(transfer.cache_dir) == []


# What each refusal is, as S3 or Google Cloud Storage words it in its XML error:
# (fault arguments, the error class, its reason, words the message must hold).
REFUSALS = {
    "AccessDenied": ({"error": "AccessDenied"}, LinkExpired, "denied",
                     "denied access", "S3 says so of deleted images too"),
    "Request has expired": ({"error": "AccessDenied", "message": "Request has expired"},
                            LinkExpired, "expired", "as expired", "Run it again in a minute"),
    "ExpiredToken": ({"error": "ExpiredToken", "code": 400, "dialect": "gcs"}, LinkExpired,
                     "expired", "as expired", "Run it again in a minute"),
    "SignatureDoesNotMatch": ({"error": "SignatureDoesNotMatch"}, LinkExpired, "signature",
                              "SignatureDoesNotMatch", "The URL was changed on its way"),
    "NoSuchKey": ({"error": "NoSuchKey"}, TransferError, "gone", "is gone from storage",
                  "Images are kept 7 days"),
    "no XML": ({"dialect": "none"}, LinkExpired, "unexplained", "no reason given",
               "Run it again in a minute; if it persists, check the process exists"),
}


@pytest.mark.parametrize("said", REFUSALS)
@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_each_storage_refusal_is_worded_for_what_it_is(
        s3: Sandbox, small_jpeg: bytes, transfer: Transfer, said: str, method: str) -> None:
    fault, cls, reason, *words = REFUSALS[said]
    job = s3.add_job(small_jpeg, small_jpeg)
    src = Source(s3, job)
    info = transfer.head(src) if method == "GET" else None
    s3.clear_requests()
    s3.inject("storage_error", server="storage", times=None, **fault)
    with pytest.raises(TransferError) as caught:
        transfer.download(src, job, "output", info=info)
    exc = caught.value
    assert type(exc) is cls and exc.reason == reason
    assert exc.storage_code == fault.get("error")
    message = str(exc)
    assert_one_line_without_secret(message, src.link.download_url.partition("?")[2])
    for word in words:
        assert word in message, message
    assert f"TopazClient.status({job!r})" in message or reason in ("expired", "signature")
    assert "clock" not in message and message.endswith(".")
    log = [(r.method, r.headers.get("Range")) for r in storage(s3)]
    if reason == "gone" and method == "GET":
        assert log == [("GET", None)] and src.refreshes == 0  # a fresh link cannot help
    elif method == "GET":
        assert log == [("GET", None), ("GET", None)] and src.refreshes == 1
    elif fault.get("code") == 400:  # a 400 refuses only when the GET link says expired
        assert log == [("HEAD", None), ("GET", "bytes=0-0")] * 2 and src.refreshes == 1
    else:
        assert log == [("HEAD", None), ("HEAD", None), ("GET", "bytes=0-0")]
        assert src.refreshes == 1
    assert complete_files(transfer.cache_dir) == []


def test_a_refusal_the_fresh_link_does_not_repeat_is_no_error(
        s3: Sandbox, small_jpeg: bytes, transfer: Transfer) -> None:
    job = s3.add_job(small_jpeg, small_jpeg)
    src = Source(s3, job)
    s3.inject("storage_error", server="storage", error="SignatureDoesNotMatch")
    assert transfer.fetch(src, job, "output").path.read_bytes() == small_jpeg
    assert src.refreshes == 1 and [r.method for r in storage(s3)] == ["HEAD", "HEAD", "GET"]


def test_a_long_url_never_cuts_the_advice(hostile: Callable[..., Hostile],
                                          transfer: Transfer) -> None:
    document = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                b"<Message>Access Denied</Message></Error>")

    def refuse(h: BaseHTTPRequestHandler, n: int = 0) -> None:
        answer(h, 403, {"Content-Type": "application/xml",
                        "Content-Length": str(len(document))}, document)

    server = hostile(refuse, head=refuse)
    deep = "/".join(f"tenant-{i:04d}-images-production" for i in range(12))
    base = f"{server.link.download_url.partition('?')[0]}/{deep}/output.png"
    server.link = Link(PID, "output", base + "?X-Amz-Signature=s3cr3tg",
                       base + "?X-Amz-Signature=s3cr3th", expiry=server.link.expiry)
    assert len(redact_url(base)) > 400
    with pytest.raises(LinkExpired) as caught:
        transfer.fetch(server.source, PID, "output")
    exc = caught.value
    assert exc.url is not None and len(exc.url) > 400  # the data keeps it whole
    for place in ("python", "magic", "cli"):
        message = say(exc, place)
        assert len(message) <= 300, message
        assert "…" in message and deep not in message
        assert message.rstrip(".").endswith(
            {"python": f"TopazClient.status({PID!r})", "magic": f"%topaz {PID} --links",
             "cli": f"topaz-nb links {PID}"}[place])
        assert f"{STORAGE_HOST}:" in message  # the host stays


def test_real_expiry_at_storage_is_refreshed(sb: Sandbox, job: str, transfer: Transfer) -> None:
    sb.link_ttl = 1.0
    src = Source(sb, job)
    src(False)
    time.sleep(2.05)
    sb.link_ttl = 3600.0
    src.link = Link(job, "output", src.link.download_url, src.link.head_url,  # clock skew:
                    expiry=datetime.now(timezone.utc) + timedelta(hours=1))  # looks valid
    fetched = transfer.fetch(src, job, "output")
    assert not fetched.from_cache and src.refreshes == 1


def test_not_found_is_transfer_error_without_refresh(sb: Sandbox, job: str,
                                                     transfer: Transfer) -> None:
    src = Source(sb, job)
    sb.inject("status", server="storage", code=404, times=None)
    with pytest.raises(TransferError) as caught:
        transfer.fetch(src, job, "output")
    assert not isinstance(caught.value, LinkExpired)
    assert src.refreshes == 0
    assert "HTTP 404" in str(caught.value) and "7 days" in str(caught.value)
    assert_one_line_without_secret(str(caught.value), src.link.head_url.partition("?")[2])


def test_server_errors_are_retried_then_reported(sb: Sandbox, job: str, big_png: bytes,
                                                 tmp_path: Path) -> None:
    with Transfer(tmp_path, retries=2) as t:
        sb.inject("status", server="storage", code=503, retry_after=0)
        assert t.fetch(Source(sb, job), job, "output").path.read_bytes() == big_png
        assert [r.method for r in storage(sb)] == ["HEAD", "HEAD", "GET"]
        sb.clear_requests()
        sb.inject("status", server="storage", code=500, times=None)
        with pytest.raises(TransferError, match="HTTP 500"):
            t.fetch(Source(sb, job), job, "input")
        assert len(storage(sb)) == 3  # first try + 2 retries


def test_dropped_connection_is_retried(sb: Sandbox, job: str, big_png: bytes,
                                       transfer: Transfer) -> None:
    src = Source(sb, job)
    info = transfer.head(src)
    sb.inject("drop", server="storage")
    assert transfer.download(src, job, "output", info=info).path.read_bytes() == big_png
    assert len(storage(sb, "GET")) == 2


def test_connection_error_message_hides_signature(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nothing listens there
    url = f"http://127.0.0.1:{port}/bucket/x.png?X-Amz-Signature=deadbeef42"
    pid = "0b7f6c1e-2a8d-4c65-9e43-0123456789ab"
    link = Link(pid, "output", url, url, datetime.now(timezone.utc) + timedelta(hours=1))
    with Transfer(tmp_path, retries=0) as t, pytest.raises(TransferError) as caught:
        t.fetch(lambda refresh: link, pid, "output")
    exc = caught.value
    assert_one_line_without_secret(str(exc), "deadbeef42", "X-Amz-Signature")
    assert "127.0.0.1" in str(exc) and "check the connection" in str(exc)
    assert exc.__cause__ is None and exc.__suppress_context__


def test_no_secrets_reach_storage_or_output(sb: Sandbox, job: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))  # requests would add Basic auth from it
    caplog.set_level(logging.DEBUG, logger="topaz_nb.transfer")
    caplog.set_level(logging.DEBUG, logger="urllib3.connectionpool")  # logs request lines
    sources = [Source(sb, job, side) for side in ("input", "output")]
    with Transfer(tmp_path / "c") as t:
        sb.inject("expire", server="storage")
        results = [t.fetch(s, job, s.side) for s in sources]  # type: ignore[arg-type]
        shown = repr(t) + "".join(repr(r) + repr(r.info) for r in results)
    reqs = storage(sb)
    assert len(reqs) >= 4
    for r in reqs:
        lowered = {k.lower() for k in r.headers}
        assert "x-api-key" not in lowered and "authorization" not in lowered
        assert sb.api_key not in str(r.headers)
    queries = [s.link.download_url.partition("?")[2] for s in sources]
    queries += [s.link.head_url.partition("?")[2] for s in sources]
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "fresh one" in logged  # the refresh was logged...
    assert any("GET /" in rec.getMessage() for rec in caplog.records
               if rec.name == "urllib3.connectionpool")
    for q in queries:
        assert q and q not in shown and q not in logged  # ...without the signature
    assert sb.api_key not in shown + logged


# ------------------------------------------------------------ concurrency


def test_both_sides_from_two_threads(sb: Sandbox, job: str, big_png: bytes, small_jpeg: bytes,
                                     transfer: Transfer) -> None:
    results: dict[str, Fetched] = {}
    errors: list[BaseException] = []

    def run(side: Side) -> None:
        try:
            results[side] = transfer.fetch(Source(sb, job, side), job, side)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in ("input", "output")]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert errors == []
    assert results["input"].path.read_bytes() == small_jpeg
    assert results["output"].path.read_bytes() == big_png


@pytest.mark.parametrize("shared", [True, False])
def test_same_object_from_many_threads(sb: Sandbox, job: str, big_png: bytes, tmp_path: Path,
                                       shared: bool) -> None:
    transfers = [Transfer(tmp_path)] * 4 if shared else [Transfer(tmp_path) for _ in range(4)]
    results: list[Fetched] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run(t: Transfer) -> None:
        try:
            barrier.wait(10)
            results.append(t.fetch(Source(sb, job), job, "output"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in transfers]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    for t in set(transfers):
        t.close()
    assert errors == [] and len(results) == 4
    assert len({r.path for r in results}) == 1
    assert results[0].path.read_bytes() == big_png
    assert files_in(tmp_path) == [results[0].path]  # no .part left behind
    if shared:  # one Transfer downloads each object once
        assert len(storage(sb, "GET")) == 1
        assert sum(not r.from_cache for r in results) == 1


# --------------------------------------------------------- cache admin


def test_clear_cache(sb: Sandbox, job: str, small_jpeg: bytes, tmp_path: Path) -> None:
    other = sb.add_job(small_jpeg, small_jpeg)
    unrelated = tmp_path / "notes" / "keep.txt"
    unrelated.parent.mkdir(parents=True)
    unrelated.write_text("mine")
    with Transfer(tmp_path) as t:
        got = {(pid, side): t.fetch(Source(sb, pid, side), pid, side)  # type: ignore[arg-type]
               for pid in (job, other) for side in ("input", "output")}
        assert t.clear_cache(job) == 2
        assert t.cached(job, "output", got[job, "output"].info) is None
        assert t.cached(other, "output", got[other, "output"].info) is not None
        assert t.clear_cache() == 2
        assert t.clear_cache() == 0
    assert complete_files(tmp_path) == [unrelated]


def test_bad_arguments_fail_before_any_request(sb: Sandbox, job: str,
                                               transfer: Transfer) -> None:
    src = Source(sb, job)
    with pytest.raises(InvalidProcessId):
        transfer.fetch(src, "not-a-uuid", "output")
    with pytest.raises(ValueError, match="side"):
        transfer.fetch(src, job, "middle")  # type: ignore[arg-type]
    assert src.calls == [] and storage(sb) == []


# ------------------------------------------------- hostile storage servers

PID = "0b7f6c1e-2a8d-4c65-9e43-0123456789ab"
STORAGE_HOST = "127.0.0.2"  # not the sandbox's address: storage is its own host


class Hostile:
    """A storage server on its own loopback address whose answers a test scripts.

    ``get(handler, n)`` answers the ``n``-th GET (from 0) and ``head(handler)``
    every HEAD; ``requests`` logs ``(method, headers)`` in arrival order and
    ``release`` unblocks handlers told to wait on it.
    """

    def __init__(self, get: Callable[[BaseHTTPRequestHandler, int], None],
                 head: Callable[[BaseHTTPRequestHandler], None] | None = None) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                outer.requests.append(("HEAD", dict(self.headers)))
                if head is None:
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    head(self)

            def do_GET(self) -> None:
                n = len(outer.gets())
                outer.requests.append(("GET", dict(self.headers)))
                try:
                    get(self, n)
                except (ConnectionError, OSError):
                    self.close_connection = True

        self.server = ThreadingHTTPServer((STORAGE_HOST, 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        base = f"http://{STORAGE_HOST}:{self.server.server_address[1]}/bucket/{PID}"
        self.link = Link(PID, "output", base + "?X-Amz-Signature=s3cr3tg",
                         base + "?X-Amz-Signature=s3cr3th",
                         expiry=datetime.now(timezone.utc) + timedelta(hours=1))

    def source(self, refresh: bool) -> Link:
        return self.link

    def gets(self) -> list[dict[str, str]]:
        return [h for m, h in self.requests if m == "GET"]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def hostile() -> Iterator[Callable[..., Hostile]]:
    made: list[Hostile] = []

    def make(get: Callable[[BaseHTTPRequestHandler, int], None],
             head: Callable[[BaseHTTPRequestHandler], None] | None = None) -> Hostile:
        made.append(Hostile(get, head))
        return made[-1]

    yield make
    for server in made:
        server.close()


def answer(h: BaseHTTPRequestHandler, status: int, headers: dict[str, str],
           body: bytes = b"") -> None:
    h.send_response(status)
    for name, value in headers.items():
        h.send_header(name, value)
    h.end_headers()
    if body and h.command != "HEAD":
        h.wfile.write(body)
        h.wfile.flush()


def head_of(size: int | None, etag: str | None = None,
            ctype: str = "application/octet-stream") -> Callable[[BaseHTTPRequestHandler], None]:
    def head(h: BaseHTTPRequestHandler) -> None:
        headers = {"Content-Type": ctype}
        if size is not None:
            headers["Content-Length"] = str(size)
        else:
            headers["Transfer-Encoding"] = "chunked"
        if etag:
            headers["ETag"] = f'"{etag}"'
        answer(h, 200, headers)
    return head


def chunked(h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], data: bytes, *,
            end: bool = True, piece: int = 65536) -> None:
    """Send ``data`` chunked; without ``end`` the terminating chunk never comes."""
    h.send_response(status)
    for name, value in {**headers, "Transfer-Encoding": "chunked"}.items():
        h.send_header(name, value)
    h.end_headers()
    for start in range(0, len(data), piece):
        block = data[start:start + piece]
        h.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
    if end:
        h.wfile.write(b"0\r\n\r\n")
    h.wfile.flush()


def reset(h: BaseHTTPRequestHandler) -> None:
    """End the connection with a RST, which a reader sees as an error, not an end."""
    import socket
    import struct

    h.wfile.flush()
    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    h.connection.close()
    h.close_connection = True


def ranged(h: BaseHTTPRequestHandler, data: bytes, etag: str | None = None, *,
           framing: str = "length") -> None:
    """Answer a GET as a well-behaved server: 206 for a Range, else 200."""
    headers: dict[str, str] = {"Content-Type": "application/octet-stream"}
    if etag:
        headers["ETag"] = f'"{etag}"'
    rng = h.headers.get("Range")
    status, body = 200, data
    if rng:
        start = int(rng.removeprefix("bytes=").rstrip("-"))
        status, body = 206, data[start:]
        headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
    if framing == "chunked":
        chunked(h, status, headers, body)
    else:
        answer(h, status, {**headers, "Content-Length": str(len(body))}, body)


def parts_in(root: Path) -> list[Path]:
    return [p for p in files_in(root) if p.name.endswith(".part")]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_body_ending_in_error_without_length_is_never_cached(
        hostile: Callable[..., Hostile], big_png: bytes, tmp_path: Path, framing: str) -> None:
    cut = 1_000_000

    def get(h: BaseHTTPRequestHandler, n: int) -> None:
        if framing == "chunked":
            chunked(h, 200, {}, big_png[:cut], end=False)
        else:
            answer(h, 200, {"Connection": "close"}, big_png[:cut])
        reset(h)

    server = hostile(get, head_of(None))
    with Transfer(tmp_path, retries=1) as t:
        with pytest.raises(TransferError) as caught:
            t.fetch(server.source, PID, "output")
        assert_one_line_without_secret(str(caught.value), "s3cr3t")
        info = t.head(server.source)
        assert t.cached(PID, "output", info) is None
    assert complete_files(tmp_path) == []
    [part] = parts_in(tmp_path)
    assert 0 < part.stat().st_size <= cut  # kept, to be resumed


def test_body_without_length_is_resumed_then_cached(
        hostile: Callable[..., Hostile], big_png: bytes, tmp_path: Path) -> None:
    def get(h: BaseHTTPRequestHandler, n: int) -> None:
        if n == 0:
            chunked(h, 200, {}, big_png[:1_000_000], end=False)
            reset(h)
        else:
            ranged(h, big_png, framing="chunked")

    server = hostile(get, head_of(None))
    with Transfer(tmp_path) as t:
        fetched = t.fetch(server.source, PID, "output")
    assert fetched.path.read_bytes() == big_png and fetched.path.suffix == ".png"
    gets = server.gets()
    assert len(gets) == 2 and "Range" not in gets[0]
    assert 0 < int(gets[1]["Range"].removeprefix("bytes=").rstrip("-")) <= 1_000_000


def test_get_length_differing_from_head_is_an_error(
        hostile: Callable[..., Hostile], big_png: bytes, tmp_path: Path) -> None:
    short = big_png[:-100]
    server = hostile(lambda h, n: answer(h, 200, {"Content-Length": str(len(short))}, short),
                     head_of(len(big_png)))
    with Transfer(tmp_path) as t, pytest.raises(TransferError) as caught:
        t.fetch(server.source, PID, "output")
    message = str(caught.value)
    assert_one_line_without_secret(message, "s3cr3t")
    assert str(len(short)) in message and str(len(big_png)) in message
    assert files_in(tmp_path) == []


def test_body_longer_than_head_stops_at_the_head_size(
        hostile: Callable[..., Hostile], big_png: bytes, tmp_path: Path) -> None:
    announced = 500_000
    server = hostile(lambda h, n: chunked(h, 200, {}, big_png), head_of(announced))
    with Transfer(tmp_path) as t, pytest.raises(TransferError, match="more than the 500000"):
        t.fetch(server.source, PID, "output")
    assert files_in(tmp_path) == []


def test_endless_body_without_size_stops_at_the_ceiling(
        hostile: Callable[..., Hostile], tmp_path: Path) -> None:
    sent: list[int] = []

    def endless(h: BaseHTTPRequestHandler, n: int) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        block = b"\x89PNG" + b"\0" * 65532
        while len(sent) < 1000:  # 64 MB, far past the ceiling: a bound for old code
            h.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
            sent.append(len(block))
        h.wfile.write(b"0\r\n\r\n")

    server = hostile(endless, head_of(None))
    with Transfer(tmp_path, max_bytes=1_000_000) as t, pytest.raises(TransferError) as caught:
        t.fetch(server.source, PID, "output")
    message = str(caught.value)
    assert_one_line_without_secret(message, "s3cr3t")
    assert "1000000 bytes" in message and "Topaz.max_download_bytes" in message
    assert files_in(tmp_path) == []
    assert len(server.gets()) == 1


def test_default_ceiling_and_stall_timeout_are_settings() -> None:
    from topaz_nb._session import Session
    from topaz_nb.settings import Topaz

    settings = Topaz()
    assert settings.max_download_bytes == 4_000_000_000 == Transfer().max_bytes
    assert settings.stall_timeout == 30.0 == Transfer().stall_timeout
    settings.max_download_bytes, settings.stall_timeout = 123_456, 7.5
    session = Session(settings)
    try:
        t = session.transfer()
        assert (t.max_bytes, t.stall_timeout) == (123_456, 7.5)
    finally:
        session.close()


@pytest.mark.parametrize("mismatch", ["etag", "total"])
def test_resume_that_would_splice_two_objects_restarts_from_zero(
        hostile: Callable[..., Hostile], big_png: bytes, tmp_path: Path, mismatch: str) -> None:
    other = _png((1100, 1000), 2)
    if mismatch == "total":
        other += b"\0" * 10  # the same ETag, another size
    assert other != big_png

    def get(h: BaseHTTPRequestHandler, n: int) -> None:
        if n == 0:
            answer(h, 200, {"Content-Length": str(len(big_png)), "ETag": f'"{md5(big_png)}"'},
                   big_png[:1_500_000])
            reset(h)
        elif n == 1:  # ignores If-Range, as S3 does, and continues another object
            start = int(h.headers["Range"].removeprefix("bytes=").rstrip("-"))
            body = other[start:]
            etag = md5(other) if mismatch == "etag" else md5(big_png)
            answer(h, 206, {"Content-Length": str(len(body)), "ETag": f'"{etag}"',
                            "Content-Range": f"bytes {start}-{len(other) - 1}/{len(other)}"},
                   body)
        else:
            ranged(h, big_png, md5(big_png))

    server = hostile(get, head_of(len(big_png), md5(big_png)))
    progress: list[int] = []
    with Transfer(tmp_path) as t:
        fetched = t.fetch(server.source, PID, "output", on_progress=lambda d, _t: progress.append(d))
    assert fetched.path.read_bytes() == big_png
    gets = server.gets()
    assert len(gets) == 3
    assert "Range" not in gets[0] and "Range" in gets[1] and "Range" not in gets[2]
    assert 0 in progress and progress[-1] == len(big_png)


def test_content_not_matching_the_md5_etag_is_refused(
        hostile: Callable[..., Hostile], big_png: bytes, tmp_path: Path) -> None:
    flipped = bytearray(big_png)
    flipped[2_000_000] ^= 0xFF
    server = hostile(lambda h, n: answer(h, 200, {"Content-Length": str(len(flipped)),
                                                  "ETag": f'"{md5(big_png)}"'}, bytes(flipped)),
                     head_of(len(big_png), md5(big_png)))
    with Transfer(tmp_path) as t, pytest.raises(TransferError, match="MD5") as caught:
        t.fetch(server.source, PID, "output")
    assert_one_line_without_secret(str(caught.value), "s3cr3t")
    assert files_in(tmp_path) == []  # no file, and no .part to resume wrong bytes from


def test_multipart_etag_is_not_taken_for_an_md5(
        hostile: Callable[..., Hostile], big_png: bytes, tmp_path: Path) -> None:
    etag = md5(b"whatever") + "-3"
    server = hostile(lambda h, n: ranged(h, big_png, etag), head_of(len(big_png), etag))
    with Transfer(tmp_path) as t:
        assert t.fetch(server.source, PID, "output").path.read_bytes() == big_png


def test_sidecar_records_the_file_and_a_hit_checks_it(
        hostile: Callable[..., Hostile], big_png: bytes, tmp_path: Path) -> None:
    import json

    server = hostile(lambda h, n: ranged(h, big_png, md5(big_png)),
                     head_of(len(big_png), md5(big_png)))
    with Transfer(tmp_path) as t:
        fetched = t.fetch(server.source, PID, "output")
        entry = t.entry(PID, "output", fetched.info)
        assert entry.file == fetched.path
        meta = json.loads(entry.sidecar.read_text())
        stat = fetched.path.stat()
        assert meta["size"] == len(big_png) == stat.st_size
        assert meta["mtime_ns"] == stat.st_mtime_ns
        assert meta["sha256"] == hashlib.sha256(big_png).hexdigest()
        assert meta["etag"] == md5(big_png) and meta["file"] == fetched.path.name
        assert t.fetch(server.source, PID, "output").from_cache
        # Touched behind our back (same bytes, new mtime): not a hit, downloaded once more.
        os.utime(fetched.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        again = t.fetch(server.source, PID, "output")
    assert not again.from_cache and again.path.read_bytes() == big_png
    assert len(server.gets()) == 2


def test_extension_comes_from_the_bytes_not_the_content_type(
        hostile: Callable[..., Hostile], tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("P", (8, 8)).save(buf, "GIF")
    gif = buf.getvalue()
    server = hostile(lambda h, n: answer(h, 200, {"Content-Type": "text/html",
                                                  "Content-Length": str(len(gif))}, gif),
                     head_of(len(gif), ctype="text/html"))
    with Transfer(tmp_path) as t:
        fetched = t.fetch(server.source, PID, "output")
    assert fetched.path.suffix == ".gif" and fetched.path.read_bytes() == gif


def test_error_page_is_saved_as_bin(hostile: Callable[..., Hostile], tmp_path: Path) -> None:
    page = b"<!doctype html><html><body>Access denied</body></html>"
    server = hostile(lambda h, n: answer(h, 200, {"Content-Type": "image/png",
                                                  "Content-Length": str(len(page))}, page),
                     head_of(len(page), ctype="image/png"))
    with Transfer(tmp_path) as t:
        assert t.fetch(server.source, PID, "output").path.suffix == ".bin"


def trickle(data: bytes, *, first: int = 0, started: threading.Event | None = None,
            release: threading.Event | None = None, length: bool = True
            ) -> Callable[[BaseHTTPRequestHandler, int], None]:
    """A GET that sends ``first`` bytes at once, then one byte every 50 ms."""
    def get(h: BaseHTTPRequestHandler, n: int) -> None:
        headers = {"Content-Length": str(len(data))} if length else {"Connection": "close"}
        answer(h, 200, headers, data[:first])
        if started is not None:
            started.set()
        for i in range(first, len(data)):
            if release is not None and release.wait(0.05):
                return
            h.wfile.write(data[i:i + 1])
            h.wfile.flush()
    return get


@pytest.mark.parametrize("length", [True, False])
def test_trickling_body_is_abandoned_as_stalled(
        hostile: Callable[..., Hostile], big_png: bytes, tmp_path: Path, length: bool) -> None:
    server = hostile(trickle(big_png, first=100_000, release=threading.Event(), length=length),
                     head_of(len(big_png) if length else None))
    with Transfer(tmp_path, stall_timeout=0.5) as t, pytest.raises(TransferError) as caught:
        t.fetch(server.source, PID, "output")
    message = str(caught.value)
    assert_one_line_without_secret(message, "s3cr3t")
    assert "stalled" in message and "resume" in message
    assert complete_files(tmp_path) == []
    [part] = parts_in(tmp_path)
    assert part.stat().st_size >= 100_000  # kept for resume
    assert len(server.gets()) == 1


def test_cancel_from_another_thread_keeps_the_part(
        hostile: Callable[..., Hostile], big_png: bytes, tmp_path: Path) -> None:
    server = hostile(trickle(big_png, first=200_000, release=threading.Event()),
                     head_of(len(big_png)))
    reached, cancel = threading.Event(), threading.Event()
    setter = threading.Thread(target=lambda: reached.wait(10) and cancel.set())
    setter.start()

    def on_progress(done: int, total: int | None) -> None:
        if done >= 3 * 65536:
            reached.set()  # the trickle has begun: now cancel from the other thread

    with Transfer(tmp_path, chunk_size=65536) as t, pytest.raises(Cancelled) as caught:
        t.fetch(server.source, PID, "output", cancel=cancel, on_progress=on_progress)
    setter.join(5)
    message = str(caught.value)
    assert message.startswith("Cancelled:") and "run it again to resume" in message
    assert_one_line_without_secret(message, "s3cr3t")
    assert complete_files(tmp_path) == []
    [part] = parts_in(tmp_path)
    kept = part.stat().st_size
    assert kept >= 3 * 65536
    # Running it again resumes from the kept bytes.
    server2 = hostile(lambda h, n: ranged(h, big_png), head_of(len(big_png)))
    with Transfer(tmp_path) as t:
        fetched = t.fetch(server2.source, PID, "output")
    assert fetched.path.read_bytes() == big_png
    assert [g["Range"] for g in server2.gets()] == [f"bytes={kept}-"]


def test_cancel_while_waiting_for_the_head(hostile: Callable[..., Hostile],
                                           tmp_path: Path) -> None:
    arrived = threading.Event()
    server: Hostile

    def slow_head(h: BaseHTTPRequestHandler) -> None:
        arrived.set()
        server.release.wait(30)
        answer(h, 200, {"Content-Length": "10"})

    server = hostile(lambda h, n: None, slow_head)
    cancel = threading.Event()
    setter = threading.Thread(target=lambda: arrived.wait(10) and cancel.set())
    setter.start()
    with Transfer(tmp_path) as t, pytest.raises(Cancelled, match="HEAD"):
        t.head(server.source, cancel=cancel)
    setter.join(5)
    assert not server.release.is_set()  # the answer had not come: the wait was cut short


_CHILD = """
import sys
from datetime import datetime, timedelta, timezone
from topaz_nb.links import Link
from topaz_nb.transfer import Transfer

url, cache, pid = sys.argv[1:4]
link = Link(pid, "output", url, url, expiry=datetime.now(timezone.utc) + timedelta(hours=1))
with Transfer(cache, chunk_size=65536) as t:
    t.fetch(lambda refresh: link, pid, "output",
            on_progress=lambda done, total: print(done, flush=True))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs SIGKILL and flock")
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_download_killed_with_its_process_is_resumed_by_the_next(
        hostile: Callable[..., Hostile], big_png: bytes, tmp_path: Path, framing: str) -> None:
    import signal
    import subprocess
    import sys

    stall_at = 8 * 65536
    etag = md5(big_png) if framing == "length" else None  # the MD5 continues over the .part

    def get(h: BaseHTTPRequestHandler, n: int) -> None:
        if n == 0:  # the doomed process: N bytes, then nothing until the test ends
            headers = {"ETag": f'"{etag}"'} if etag else {}
            if framing == "chunked":
                chunked(h, 200, headers, big_png[:stall_at], end=False)
            else:
                answer(h, 200, {**headers, "Content-Length": str(len(big_png))},
                       big_png[:stall_at])
            server.release.wait(60)
            return
        ranged(h, big_png, etag, framing=framing)

    server = hostile(get, head_of(len(big_png) if framing == "length" else None, etag))
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, server.link.download_url, str(tmp_path), PID],
        stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert child.stdout is not None
        for line in child.stdout:  # progress lines: the bytes are on disk when printed
            if int(line) >= stall_at:
                break
        else:
            pytest.fail(f"the child ended early with {child.wait()}")
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        assert child.stdout is not None
        child.stdout.close()
    [part] = parts_in(tmp_path)
    assert part.stat().st_size == stall_at and complete_files(tmp_path) == []
    with Transfer(tmp_path) as t:  # the lock died with its holder
        fetched = t.fetch(server.source, PID, "output")
    assert fetched.path.read_bytes() == big_png
    assert fetched.bytes_downloaded == len(big_png) - stall_at
    gets = server.gets()
    assert len(gets) == 2 and gets[1]["Range"] == f"bytes={stall_at}-"
    assert parts_in(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs flock")
def test_a_second_process_waits_for_the_one_writing_the_part(
        hostile: Callable[..., Hostile], big_png: bytes, tmp_path: Path) -> None:
    import fcntl

    server = hostile(lambda h, n: ranged(h, big_png, md5(big_png)),
                     head_of(len(big_png), md5(big_png)))
    with Transfer(tmp_path) as t:
        info = t.head(server.source)
        entry = t.entry(PID, "output", info)
    entry.directory.mkdir(parents=True)
    # Another process holds the object's lock (flock is per open file, so an
    # open of our own stands for it).
    holder = os.open(entry.lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    from conftest import logged

    results: list[Fetched] = []
    with logged("waiting for another process") as waiting, Transfer(tmp_path) as t:
        worker = threading.Thread(
            target=lambda: results.append(t.download(server.source, PID, "output",
                                                     info=info)))
        worker.start()
        assert waiting.wait(10)
        assert server.gets() == [] and parts_in(tmp_path) == []  # nothing written meanwhile
        os.close(holder)
        worker.join(30)
    assert results and results[0].path.read_bytes() == big_png
    assert len(server.gets()) == 1


def test_cancel_while_waiting_for_another_process(
        hostile: Callable[..., Hostile], big_png: bytes, tmp_path: Path) -> None:
    fcntl = pytest.importorskip("fcntl")
    server = hostile(lambda h, n: ranged(h, big_png), head_of(len(big_png)))
    with Transfer(tmp_path) as t:
        info = t.head(server.source)
        entry = t.entry(PID, "output", info)
        entry.directory.mkdir(parents=True)
        holder = os.open(entry.lock, os.O_RDWR | os.O_CREAT)
        fcntl.flock(holder, fcntl.LOCK_EX)
        try:
            cancel = threading.Event()
            cancel.set()
            with pytest.raises(Cancelled, match="another process"):
                t.download(server.source, PID, "output", info=info, cancel=cancel)
        finally:
            os.close(holder)
    assert server.gets() == []


# ------------------------------------------------------------- pins


def test_a_download_is_pinned_while_it_runs_and_a_pin_taken_first_outlasts_it(
        s3: Sandbox, small_jpeg: bytes, big_png: bytes, tmp_path: Path) -> None:
    from topaz_nb.storage import budget
    from topaz_nb.storage.cache import pinned

    job = s3.add_job(small_jpeg, big_png, status="Completed")
    with Transfer(tmp_path / "cache", chunk_size=MIB) as t:
        source = Source(s3, job)
        info = t.head(source)
        entry = t.entry(job, "output", info)
        during: list[bool] = []
        fetched = t.download(source, job, "output", info=info,
                             on_progress=lambda done, total: during.append(pinned(entry)))
        assert during and all(during)  # every report came while it was pinned
        assert not pinned(entry)  # the download's own pin ends with it
        budget.enforce(t.cache_dir, 0)
        assert not fetched.path.exists()
        # A user's pin, taken before the download, keeps it after the download.
        with t.pin(job, "output", info) as held:
            again = t.download(source, job, "output", info=info)
            budget.enforce(t.cache_dir, 0)
            assert again.path.is_file() and held.held
        budget.enforce(t.cache_dir, 0)
        assert not again.path.exists()
