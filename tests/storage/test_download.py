"""Tests of topaz_nb.storage.download: the HTTP side on its own, a
``Downloader`` writing into a cache entry, over real sockets (the sandbox, or
a small local server for headers the sandbox never sends).  The whole
download path, through ``Transfer``, is tested in test_transfer.py."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from PIL import Image

from topaz_nb.errors import TransferError
from topaz_nb.links import Link
from topaz_nb.sandbox import Sandbox
from topaz_nb.storage.cache import CacheEntry, cache_key, hold, read_json, write_json
from topaz_nb.storage.download import (
    DEFAULT_MAX_BYTES,
    DEFAULT_STALL_TIMEOUT,
    Downloader,
    ObjectInfo,
    make_session,
)
from topaz_nb.storage.refresh import LinkHolder

PID = "0b7f6c1e-2a8d-4c65-9e43-0123456789ab"


def _noise_png(size: tuple[int, int]) -> bytes:
    """A PNG of noise: it does not compress, so its size is predictable."""
    raw = hashlib.shake_256(b"download").digest(size[0] * size[1] * 3)
    buf = io.BytesIO()
    Image.frombytes("RGB", size, raw).save(buf, "PNG", compress_level=0)
    return buf.getvalue()


def _link(sb: Sandbox, pid: str) -> Link:
    """The output's presigned link, from the sandbox's Download API."""
    r = requests.get(f"{sb.base_url}/download/{pid}", headers={"X-API-Key": sb.api_key},
                     timeout=10)
    r.raise_for_status()
    body = r.json()
    return Link(pid, "output", body["download_url"], body["head_url"],
                expiry=datetime.fromtimestamp(body["expiry"], timezone.utc))


def _downloader(session: requests.Session | None = None, *, retries: int = 2) -> Downloader:
    return Downloader(session or make_session(retries), chunk_size=1 << 20, timeout=10.0,
                      retries=retries, max_bytes=DEFAULT_MAX_BYTES,
                      stall_timeout=DEFAULT_STALL_TIMEOUT)


@pytest.fixture
def heads() -> Iterator[tuple[str, dict[str, str]]]:
    """A local server answering every HEAD with the headers in the dict it yields."""
    headers: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self.send_response(200)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/bucket/{PID}", headers
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_object_info_repr_has_no_headers() -> None:
    info = ObjectInfo(1, "image/png", "e", None, {"X-Secret": "v"}, "http://h/p?…")
    assert "X-Secret" not in repr(info)
    assert hash(info) == hash(ObjectInfo(1, "image/png", "e", None, {}, "http://h/p?…"))


@pytest.mark.parametrize(("sent", "expected"), [
    ({"ETag": 'W/"v1"', "Content-Length": "42", "Content-Type": "image/png",
      "Last-Modified": "Wed, 01 May 2024 12:00:00 GMT"},
     (42, "image/png", "W/v1", datetime(2024, 5, 1, 12, tzinfo=timezone.utc))),
    ({"ETag": '""', "Content-Length": "0", "Last-Modified": "yesterday"},
     (0, None, None, None)),
    ({"ETag": ' "abc" ', "Last-Modified": "Wed, 01 May 2024 12:00:00 +0200"},
     (None, None, "abc", datetime(2024, 5, 1, 10, tzinfo=timezone.utc))),
])
def test_head_reads_whatever_validators_storage_sent(
        heads: tuple[str, dict[str, str]], sent: dict[str, str],
        expected: tuple[object, ...]) -> None:
    url, headers = heads
    headers.update(sent)
    link = Link(PID, "output", url + "?sig=g", url + "?sig=h",
                expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    downloader = _downloader()
    try:
        info = downloader.head(LinkHolder(lambda refresh: link, PID), None)
    finally:
        downloader.close()
    assert (info.size, info.content_type, info.etag, info.last_modified) == expected
    assert info.url == url + "?…"  # redacted
    assert info.headers["etag"].strip() == sent["ETag"].strip()  # all headers kept


def test_no_credential_reaches_storage_even_after_a_redirect(
        sandbox: Sandbox, make_image: Callable[..., Image.Image], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))  # requests would add Basic auth from it
    pid = sandbox.add_job(make_image(), make_image((80, 60)))
    link = _link(sandbox, pid)
    session = make_session(0)
    session.headers.update({"Authorization": "Bearer leaked", "X-API-Key": sandbox.api_key})
    session.cookies.set("session", "leaked")
    sandbox.clear_requests()
    sandbox.inject("redirect", server="storage", location=link.head_url)
    downloader = _downloader(session)
    try:
        info = downloader.head(LinkHolder(lambda refresh: link, pid), None)
    finally:
        downloader.close()
    stored = sandbox.job(pid).output
    assert stored is not None and info.size == len(stored.data)
    reqs = [r for r in sandbox.requests if r.server == "storage"]
    assert [(r.method, r.fault) for r in reqs] == [("HEAD", "redirect"), ("HEAD", None)]
    for r in reqs:
        sent = {name.lower() for name in r.headers}
        assert not sent & {"authorization", "x-api-key", "cookie"}, r.headers


@pytest.mark.parametrize("record", ["this object", "another object"])
def test_a_part_is_continued_only_when_recorded_as_the_start_of_this_object(
        sandbox: Sandbox, make_image: Callable[..., Image.Image], tmp_path: Path,
        record: str) -> None:
    data = _noise_png((400, 300))
    assert len(data) > 300_000
    pid = sandbox.add_job(make_image(), data)
    link = _link(sandbox, pid)
    holder = LinkHolder(lambda refresh: link, pid, "output")
    downloader = _downloader(retries=0)
    try:
        info = downloader.head(holder, None)
        entry = CacheEntry.at(tmp_path, pid, "output",
                              cache_key(info.etag, info.last_modified, info.size))
        sandbox.inject("truncate", server="storage", after_bytes=200_000)
        with hold(entry), pytest.raises(TransferError, match="stopped at"):
            downloader.stream_to(entry, holder, info, None, None)
        kept = entry.part.stat().st_size
        assert 0 < kept <= 200_000 and entry.file is None  # kept, and never the cached file
        if record == "another object":
            meta = read_json(entry.part_meta)
            assert meta is not None and meta["etag"] == info.etag
            write_json(entry.part_meta, {**meta, "etag": "0" * 32})
        sandbox.clear_requests()
        with hold(entry):
            path, received = downloader.stream_to(entry, holder, info, None, None)
    finally:
        downloader.close()
    assert path.read_bytes() == data and path.suffix == ".png"
    assert entry.verified_file(info.size, info.etag) == path
    assert not entry.part.exists() and not entry.part_meta.exists()
    [get] = [r for r in sandbox.requests if r.server == "storage" and r.method == "GET"]
    if record == "this object":
        assert get.headers["Range"] == f"bytes={kept}-" and received == len(data) - kept
    else:
        assert "Range" not in get.headers and received == len(data)
