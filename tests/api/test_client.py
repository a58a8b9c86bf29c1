"""TopazClient against the local sandbox, over real sockets."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
from conftest import FakeTime
from PIL import Image

from topaz_nb import _text, errors
from topaz_nb.api import client as client_module
from topaz_nb.api.client import DEFAULT_BASE_URL, Status, TopazClient
from topaz_nb.links import Link
from topaz_nb.sandbox import Sandbox

SECRET = "sbx_SECRET_tokenvalue"


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox() as box:
        yield box


@pytest.fixture
def images() -> tuple[Image.Image, Image.Image]:
    return Image.new("RGB", (8, 6), (200, 30, 30)), Image.new("RGB", (16, 12), (30, 200, 30))




def make_client(sb: Sandbox, **kw: object) -> TopazClient:
    opts: dict[str, object] = {"backoff_factor": 0.0, "timeout": 5.0, "max_retry_time": 10.0}
    opts.update(kw)
    return TopazClient(sb.api_key, sb.base_url, **opts)  # type: ignore[arg-type]


def api_requests(sb: Sandbox, path_part: str = "") -> list:
    return [r for r in sb.requests if r.server == "api" and path_part in r.path]


def completed(sb: Sandbox, images: tuple[Image.Image, Image.Image], **kw: object) -> str:
    return sb.add_job(images[0], images[1], status="Completed", **kw)  # type: ignore[arg-type]


def assert_one_line_and_clean(exc: BaseException, *secrets: str) -> None:
    text = f"{exc} {exc!r}"
    assert "\n" not in str(exc)
    for secret in (SECRET, *secrets):
        assert secret not in text


# --------------------------------------------------------------- construction


def test_key_and_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOPAZ_API_KEY", SECRET)
    monkeypatch.setenv("TOPAZ_API_URL", "http://127.0.0.1:9/image/v1/")
    client = TopazClient()
    assert client.base_url == "http://127.0.0.1:9/image/v1"
    assert repr(client) == "TopazClient(base_url='http://127.0.0.1:9/image/v1', key='set')"
    assert SECRET not in str(client)
    monkeypatch.delenv("TOPAZ_API_URL")
    assert TopazClient().base_url == DEFAULT_BASE_URL == "https://api.topazlabs.com/image/v1"


def test_missing_key_is_one_line_with_next_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOPAZ_API_KEY", raising=False)
    with pytest.raises(errors.MissingApiKey) as info:
        TopazClient()
    assert "TOPAZ_API_KEY" in str(info.value) and "api_key=" in str(info.value)
    assert "\n" not in str(info.value) and "%topaz" not in str(info.value)
    assert str(info.value) == _text.no_key("python") and not info.value.detail
    with pytest.raises(errors.MissingApiKey) as blank:
        TopazClient(api_key="   ")
    assert "empty" in str(blank.value) and "%topaz" not in str(blank.value)


# -------------------------------------------------------------------- success


def test_status_is_typed(sb: Sandbox, images: tuple[Image.Image, Image.Image]) -> None:
    pid = completed(sb, images, model="Standard V2", category="Enhance", crop_to_fill=True)
    with make_client(sb) as client:
        st = client.status(pid.upper())  # IDs are canonicalised before use
    assert isinstance(st, Status)
    assert st.process_id == pid and st.status == "Completed" and st.done and st.terminal
    assert st.progress == 100
    assert (st.input_width, st.input_height) == (8, 6)
    assert (st.output_width, st.output_height) == (16, 12)
    assert st.model == "Standard V2" and st.category == "Enhance" and st.crop_to_fill is True
    assert st.creation_time is not None and st.creation_time.tzinfo is not None
    assert st.raw["process_id"] == pid
    assert "raw" not in repr(st)


def test_links_for_both_sides(sb: Sandbox, images: tuple[Image.Image, Image.Image]) -> None:
    pid = completed(sb, images)
    with make_client(sb) as client:
        out, inp = client.output_link(pid), client.input_link(pid)
    assert isinstance(out, Link) and out.side == "output" and inp.side == "input"
    assert out.process_id == inp.process_id == pid
    assert out.expiry.tzinfo is not None and 3000 < out.seconds_left <= 3600 + 5
    assert out.download_url != inp.download_url
    for link in (out, inp):
        resp = requests.get(link.download_url, timeout=5)
        assert resp.status_code == 200 and len(resp.content) > 0
    prefix = urlsplit(sb.base_url).path
    assert [r.path for r in api_requests(sb)] == [f"{prefix}/download/{pid}",
                                                  f"{prefix}/download/input/{pid}"]


def test_statuses_follows_pages(sb: Sandbox, images: tuple[Image.Image, Image.Image]) -> None:
    made = {completed(sb, images) for _ in range(3)}
    with make_client(sb) as client:
        ids = {s.process_id for s in client.statuses()}
    assert made <= ids
    listed = api_requests(sb, "/status")
    assert listed and all("paginated" in r.query for r in listed)


# ------------------------------------------------------------ ID validation


@pytest.mark.parametrize("bad", ["", "not-a-uuid", "../status", "d7b3b3b3-7b3b-4b3b-8b3b", None, 42])
def test_bad_id_sends_no_request(sb: Sandbox, bad: object) -> None:
    client = make_client(sb)
    for call in (client.status, client.output_link, client.input_link, client.wait,
                 lambda p: client.link(p, "output", refresh=True)):
        with pytest.raises(errors.InvalidProcessId) as info:
            call(bad)  # type: ignore[arg-type]
        assert "\n" not in str(info.value)
    with pytest.raises(errors.TopazError, match="side must be"):
        client.link(str(uuid.uuid4()), "both")  # type: ignore[arg-type]
    assert sb.requests == []


# ------------------------------------------------------------ error mapping


def test_400_is_bad_request_and_not_retried(sb: Sandbox,
                                            images: tuple[Image.Image, Image.Image]) -> None:
    pid = completed(sb, images)
    sb.clear_requests()
    sb.inject("status", code=400, message="Invalid process ID.")
    with pytest.raises(errors.BadRequest) as info:
        make_client(sb, retries=3).status(pid)
    assert info.value.status_code == 400
    assert info.value.server_message == "Invalid process ID."
    assert_one_line_and_clean(info.value)
    assert len(api_requests(sb)) == 1


def test_401_is_authentication_error(sb: Sandbox, images: tuple[Image.Image, Image.Image]) -> None:
    pid = completed(sb, images)
    # The sandbox itself answers 401 to a request without a key.
    raw = requests.get(f"{sb.base_url}/status/{pid}", timeout=5)
    assert raw.status_code == 401
    sb.inject("status", code=401, message="Unauthorized")
    with pytest.raises(errors.AuthenticationError) as info:
        make_client(sb).status(pid)
    assert info.value.status_code == 401
    assert "TOPAZ_API_KEY" in str(info.value)
    assert_one_line_and_clean(info.value)


def test_wrong_key_is_401_without_showing_it(sb: Sandbox,
                                             images: tuple[Image.Image, Image.Image]) -> None:
    pid = completed(sb, images)
    sb.clear_requests()
    client = TopazClient(SECRET, sb.base_url, backoff_factor=0.0)
    with pytest.raises(errors.AuthenticationError) as info:
        client.output_link(pid)
    assert info.value.status_code == 401 and info.value.server_message == "Unauthorized"
    assert "TOPAZ_API_KEY" in str(info.value)
    assert_one_line_and_clean(info.value)
    assert len(api_requests(sb)) == 1
    assert _headers(api_requests(sb)[0])["x-api-key"] == SECRET


def test_404_unknown_not_retried(sb: Sandbox) -> None:
    pid = str(uuid.uuid4())
    with pytest.raises(errors.NotFound) as info:
        make_client(sb, retries=4).input_link(pid)
    assert info.value.status_code == 404
    assert pid in str(info.value) and "7-day" in str(info.value)
    assert info.value.process_id == pid
    assert str(info.value) == _text.say(info.value, "python")
    assert_one_line_and_clean(info.value)
    assert len(api_requests(sb)) == 1


def test_404_past_retention(sb: Sandbox, images: tuple[Image.Image, Image.Image]) -> None:
    old = completed(sb, images, age=8 * 24 * 3600)
    fresh = completed(sb, images, age=6 * 24 * 3600)
    client = make_client(sb)
    assert client.status(fresh).done
    for call in (client.status, client.output_link, client.input_link):
        with pytest.raises(errors.NotFound):
            call(old)


def test_409_not_ready_carries_status(sb: Sandbox,
                                      images: tuple[Image.Image, Image.Image]) -> None:
    pid = sb.add_job(images[0], images[1], status="Processing", progress=42)
    client = make_client(sb)
    with pytest.raises(errors.NotReady) as info:
        client.output_link(pid)
    exc = info.value
    assert exc.status_code == 409
    assert exc.status == "Processing" and exc.progress == 42
    assert isinstance(exc.eta, dt.datetime)
    assert 0 < (exc.eta - dt.datetime.now(dt.timezone.utc)).total_seconds() <= 3600
    assert exc.process_id == pid and not exc.failed and exc.reason is None
    text = str(exc)
    assert text == _text.say(exc, "python")
    assert pid in text and "Processing, 42%" in text and "ETA" in text
    assert "TopazClient.wait" in text and "%topaz" not in text
    assert_one_line_and_clean(exc)
    # The input of a running process can be fetched already.
    assert client.input_link(pid).side == "input"


def test_409_when_status_is_unavailable_too(sb: Sandbox,
                                            images: tuple[Image.Image, Image.Image]) -> None:
    pid = sb.add_job(images[0], images[1], status="Pending")
    sb.inject("status", code=500, path="/status/", times=None)
    with pytest.raises(errors.NotReady) as info:
        make_client(sb, retries=0).output_link(pid)
    assert info.value.status is None and info.value.progress is None and info.value.eta is None
    assert pid in str(info.value) and "TopazClient.wait" in str(info.value)


@pytest.mark.parametrize("final,verb", [("Failed", "failed"), ("Cancelled", "was cancelled")])
def test_409_for_an_ended_process_says_why_and_not_to_wait(
        sb: Sandbox, images: tuple[Image.Image, Image.Image], final: str, verb: str) -> None:
    reason = f"GPU ran out of memory; see {sb.storage_url}/log?X-Amz-Signature=abc123"
    pid = sb.add_job(images[0], status=final, message=reason)
    with pytest.raises(errors.NotReady) as info:
        make_client(sb).output_link(pid)
    exc = info.value
    assert exc.status == final and exc.failed and exc.process_id == pid
    assert exc.reason is not None and exc.reason.startswith("GPU ran out of memory")
    assert "abc123" not in exc.reason  # the reason is scrubbed like any server text
    text = str(exc)
    assert text == _text.say(exc, "python")
    assert f"{pid} {verb}" in text and "GPU ran out of memory" in text
    assert "wait" not in text.lower() and "%topaz" not in text
    assert_one_line_and_clean(exc, "abc123")
    # Without a reason in the status, it still says the output will never come.
    plain = sb.add_job(images[0], status=final)
    with pytest.raises(errors.NotReady) as bare:
        make_client(sb).output_link(plain)
    assert bare.value.failed and bare.value.reason is None
    assert "no output" in str(bare.value) and "wait" not in str(bare.value).lower()


def test_status_reason_and_describe(sb: Sandbox, images: tuple[Image.Image, Image.Image]) -> None:
    failed = sb.add_job(images[0], status="Failed", message="  bad\n input  ")
    running = sb.add_job(images[0], images[1], status="Processing", progress=42)
    client = make_client(sb)
    st = client.status(failed)
    assert st.reason == "bad input" and st.describe() == "Failed, 0%"
    assert client.status(running).reason is None
    assert client.status(running).describe().startswith("Processing, 42%, ETA ")
    for field_name in ("message", "error", "reason"):
        assert Status.from_json({"status": "Failed", field_name: "why"}).reason == "why"
    assert Status.from_json({"status": "Failed", "message": 42}).reason is None


def test_429_retried_honouring_retry_after(sb: Sandbox, images: tuple[Image.Image, Image.Image],
                                           waits: FakeTime) -> None:
    pid = completed(sb, images)
    sb.clear_requests()
    sb.inject("status", code=429, retry_after=1, times=1)
    st = make_client(sb).status(pid)
    assert st.done
    assert waits.waits == [1.0]  # what the server asked for, not the backoff
    assert len(api_requests(sb)) == 2


def test_long_retry_after_is_capped_and_budgeted(sb: Sandbox,
                                                 images: tuple[Image.Image, Image.Image],
                                                 waits: FakeTime) -> None:
    pid = completed(sb, images)
    sb.clear_requests()
    sb.inject("status", code=503, retry_after=86400, times=None)
    with pytest.raises(errors.ServerError) as info:
        make_client(sb, retries=10, max_retry_time=120.0).status(pid)
    assert info.value.status_code == 503
    # Each wait is cut to the default cap of 60 s; the 120 s budget allows two.
    assert waits.waits == [60.0, 60.0]
    assert len(api_requests(sb)) == 3
    waits.waits.clear()
    sb.clear_requests()
    with pytest.raises(errors.ServerError):
        make_client(sb, retries=3, max_retry_time=600.0, max_retry_after=5.0).status(pid)
    assert waits.waits == [5.0, 5.0, 5.0] and len(api_requests(sb)) == 4


def test_5xx_keeps_its_longer_backoff(sb: Sandbox, images: tuple[Image.Image, Image.Image],
                                      waits: FakeTime) -> None:
    pid = completed(sb, images)
    sb.clear_requests()
    sb.inject("status", code=502, times=None)
    with pytest.raises(errors.ServerError):
        TopazClient(sb.api_key, sb.base_url).status(pid)  # the defaults: 6 retries
    assert len(api_requests(sb)) == 7
    assert sum(waits.waits) > 5.0  # exponential backoff, unlike an unreachable host
    assert all(w <= 30.0 for w in waits.waits) and sum(waits.waits) <= 60.0


def test_429_persistent_is_rate_limited(sb: Sandbox,
                                        images: tuple[Image.Image, Image.Image]) -> None:
    pid = completed(sb, images)
    sb.clear_requests()
    sb.inject("status", code=429, times=None, message="Too many requests")
    with pytest.raises(errors.RateLimited) as info:
        make_client(sb, retries=2).status(pid)
    assert info.value.status_code == 429 and info.value.server_message == "Too many requests"
    assert len(api_requests(sb)) == 3


@pytest.mark.parametrize("code", [500, 502, 503, 504])
def test_5xx_retried_then_success(sb: Sandbox, images: tuple[Image.Image, Image.Image],
                                  code: int) -> None:
    pid = completed(sb, images)
    sb.clear_requests()
    sb.inject("status", code=code, times=2)
    link = make_client(sb, retries=3).output_link(pid)
    assert link.process_id == pid
    assert len(api_requests(sb)) == 3


def test_5xx_persistent_is_server_error_after_n_attempts(
        sb: Sandbox, images: tuple[Image.Image, Image.Image]) -> None:
    pid = completed(sb, images)
    sb.clear_requests()
    sb.inject("status", code=503, times=None, message="Service down")
    with pytest.raises(errors.ServerError) as info:
        make_client(sb, retries=2).status(pid)
    assert info.value.status_code == 503 and info.value.server_message == "Service down"
    assert_one_line_and_clean(info.value)
    assert len(api_requests(sb)) == 3


def test_other_4xx_is_api_error_not_retried(sb: Sandbox,
                                            images: tuple[Image.Image, Image.Image]) -> None:
    pid = completed(sb, images)
    sb.clear_requests()
    sb.inject("status", code=418, message="teapot")
    with pytest.raises(errors.ApiError) as info:
        make_client(sb).status(pid)
    assert type(info.value) is errors.ApiError
    assert info.value.status_code == 418 and "teapot" in str(info.value)
    assert len(api_requests(sb)) == 1


def test_retry_time_is_bounded(sb: Sandbox, images: tuple[Image.Image, Image.Image],
                               waits: FakeTime) -> None:
    pid = completed(sb, images)
    sb.clear_requests()
    sb.inject("status", code=503, retry_after=30, times=None)
    with pytest.raises(errors.ServerError):
        make_client(sb, retries=5, max_retry_time=1.0).status(pid)
    assert waits.waits == [1.0]  # cut to the budget; no attempt after it
    assert len(api_requests(sb)) == 2


def test_dropped_connection_retried(sb: Sandbox, images: tuple[Image.Image, Image.Image]) -> None:
    pid = completed(sb, images)
    sb.clear_requests()
    sb.inject("drop", times=1)
    assert make_client(sb).status(pid).done
    assert len(api_requests(sb)) == 2


def test_truncated_answer_asked_again(sb: Sandbox,
                                      images: tuple[Image.Image, Image.Image]) -> None:
    pid = completed(sb, images)
    sb.clear_requests()
    sb.inject("truncate", after_bytes=10, times=1)
    assert make_client(sb).output_link(pid).process_id == pid
    assert len(api_requests(sb)) == 2
    sb.inject("truncate", after_bytes=10, times=None)
    with pytest.raises(errors.ServerError) as info:
        make_client(sb).input_link(pid)
    assert "cut short" in str(info.value)
    assert_one_line_and_clean(info.value)


@pytest.mark.parametrize("host,why", [("127.0.0.1:{port}", "refused"),
                                      ("topaz-nb-test.invalid", "does not resolve")])
def test_unreachable_host_is_reported_within_seconds(host: str, why: str,
                                                     waits: FakeTime) -> None:
    host = host.format(port=_free_port())
    client = TopazClient(SECRET, f"http://{host}/image/v1")  # the default retry settings
    with pytest.raises(errors.ServerError) as info:
        client.status(str(uuid.uuid4()))
    # A few quick retries, not minutes of backoff: offline is said at once.
    assert sum(waits.waits) <= 5.0 and len(waits.waits) <= 2
    text = str(info.value)
    assert text.startswith(f"Could not reach the Topaz API at {host}: ") and why in text
    assert "check the network" in text and "TOPAZ_API_URL" in text
    assert info.value.status_code is None
    assert_one_line_and_clean(info.value)


def test_reachable_host_that_never_answers_gets_the_long_budget(waits: FakeTime) -> None:
    """A refused connection is quick to report; a reset after connecting is not
    "unreachable", so it keeps the normal retry count."""
    seen = threading.Semaphore(0)
    with (_raw_server(lambda conn: (seen.release(), conn.close())) as url,
          pytest.raises(errors.ServerError) as info):
        TopazClient(SECRET, url, retries=4, backoff_factor=0.5).status(str(uuid.uuid4()))
    count = 0
    while seen.acquire(blocking=False):
        count += 1
    assert count == 5
    assert "Could not reach" in str(info.value)


@pytest.mark.parametrize("body,ctype", [
    (b'{"code": 418, "message": "I am a teapot for KEY"}', "application/json"),
    (b"<html>teapot KEY</html>", "text/html"),
    (b"", "text/plain"),
])
def test_key_in_reason_phrase_or_body_is_never_shown(body: bytes, ctype: str) -> None:
    """A hostile or broken server echoes the key in its status line and body."""
    payload = body.replace(b"KEY", SECRET.encode())
    answer = (f"HTTP/1.1 418 I'm {SECRET}, see http://x.test/a?X-Amz-Signature=s3cr3t\r\n"
              f"Content-Type: {ctype}\r\nContent-Length: {len(payload)}\r\n"
              "Connection: close\r\n\r\n").encode() + payload

    def respond(conn: socket.socket) -> None:
        _read_head(conn)
        conn.sendall(answer)
        conn.close()

    with _raw_server(respond) as url, pytest.raises(errors.ApiError) as info:
        TopazClient(SECRET, url, retries=0).status(str(uuid.uuid4()))
    exc = info.value
    assert exc.status_code == 418
    shown = f"{exc} {exc!r} {exc.args} {exc.server_message}"
    assert SECRET not in shown and "s3cr3t" not in shown
    assert "418" in str(exc)
    assert_one_line_and_clean(exc, "s3cr3t")


def test_non_json_error_body() -> None:
    with _tiny_server(lambda h: _answer(h, 502, b"<html>Bad gateway</html>", "text/html")) \
            as url:
        client = TopazClient(SECRET, url, retries=0)
        with pytest.raises(errors.ServerError) as info:
            client.status(str(uuid.uuid4()))
    assert info.value.status_code == 502 and info.value.server_message is None
    assert "502" in str(info.value) and "html" not in str(info.value)


# ---------------------------------------------------------------- link cache


def test_link_reused_until_margin(sb: Sandbox, images: tuple[Image.Image, Image.Image]) -> None:
    pid = completed(sb, images)
    client = make_client(sb, link_margin=300.0)
    sb.clear_requests()
    first = client.output_link(pid)
    assert client.output_link(pid) is first
    assert client.link(pid, "output") is first
    assert len(api_requests(sb)) == 1
    fresh = client.link(pid, "output", refresh=True)
    assert len(api_requests(sb)) == 2 and fresh is not first
    assert client.output_link(pid) is fresh  # the refreshed link replaces the cached one
    assert len(api_requests(sb)) == 2


def test_link_inside_margin_is_fetched_again(sb: Sandbox,
                                             images: tuple[Image.Image, Image.Image]) -> None:
    pid = completed(sb, images)
    sb.link_ttl = 5.0
    client = make_client(sb, link_margin=300.0)
    sb.clear_requests()
    client.input_link(pid)
    client.input_link(pid)
    source = client.link_source(pid, "input")
    assert source(False).side == "input"
    assert len(api_requests(sb)) == 3


def test_link_source_refreshes(sb: Sandbox, images: tuple[Image.Image, Image.Image]) -> None:
    pid = completed(sb, images)
    client = make_client(sb)
    source = client.link_source(pid, "output")
    sb.clear_requests()
    a = source(False)
    assert source(False) is a
    b = source(True)
    assert b is not a and b.side == "output"
    assert len(api_requests(sb)) == 2


def test_two_threads_fetch_both_sides() -> None:
    """Both requests are in flight at once: the server answers neither until
    it holds both, so a client that serialised them would fail here."""
    pid = str(uuid.uuid4())
    both_in = threading.Barrier(2)

    def respond(handler: http.server.BaseHTTPRequestHandler) -> None:
        try:
            both_in.wait(timeout=10)
        except threading.BrokenBarrierError:
            _answer(handler, 500, b'{"code": 500, "message": "alone"}', "application/json")
            return
        expiry = int(time.time()) + 3600
        body = (f'{{"download_url": "http://s.test{handler.path}", '
                f'"head_url": "http://s.test{handler.path}", "expiry": {expiry}}}')
        _answer(handler, 200, body.encode(), "application/json")

    got: dict[str, Link] = {}
    failed: list[BaseException] = []
    with _tiny_server(respond) as url:
        client = TopazClient(SECRET, url, retries=0)

        def fetch(side: str) -> None:
            try:
                got[side] = client.link(pid, side)  # type: ignore[arg-type]
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                failed.append(exc)

        threads = [threading.Thread(target=fetch, args=(s,)) for s in ("input", "output")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert failed == []
    assert got["input"].side == "input" and got["output"].side == "output"
    assert got["input"].download_url.endswith(f"/download/input/{pid}")


# ---------------------------------------------------------------------- wait


def test_wait_until_completed(sb: Sandbox, images: tuple[Image.Image, Image.Image],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(client_module, "_pause", pauses.append)
    pid = sb.add_job(images[0], images[1], status="Processing", ready_in=3600)
    seen: list[Status] = []

    def progress(st: Status) -> None:
        seen.append(st)
        if len(seen) == 2:  # the job finishes between the second and third poll
            sb.job(pid).ready_at = time.time() - 1

    st = make_client(sb).wait(pid, timeout=600, on_progress=progress)
    assert st.done and st.process_id == pid
    assert [s.status for s in seen] == ["Processing", "Processing", "Completed"]
    assert seen[-1] is st
    assert len(api_requests(sb, "/status/")) == 3  # one request per poll, no more
    # An ETA an hour away paces the polls at the slowest rate, not the fastest.
    assert pauses == [10.0, 10.0]


@pytest.mark.parametrize("final", ["Failed", "Cancelled"])
def test_wait_on_failed(sb: Sandbox, images: tuple[Image.Image, Image.Image], final: str) -> None:
    pid = sb.add_job(images[0], images[1], status=final, message="Input is too small")
    with pytest.raises(errors.ProcessFailed) as info:
        make_client(sb).wait(pid, timeout=5)
    exc = info.value
    assert exc.status == final and exc.process_id == pid and exc.reason == "Input is too small"
    assert str(exc) == _text.say(exc, "python")
    assert pid in str(exc) and "Input is too small" in str(exc)
    assert "\n" not in str(exc) and "%topaz" not in str(exc)


def test_wait_timeout(sb: Sandbox, images: tuple[Image.Image, Image.Image]) -> None:
    pid = sb.add_job(images[0], images[1], status="Processing", ready_in=3600)
    with pytest.raises(errors.WaitTimeout) as info:
        make_client(sb).wait(pid, timeout=0.0)
    assert len(api_requests(sb, "/status/")) == 1  # a zero timeout polls exactly once
    text = str(info.value)
    assert pid in text and "Processing" in text and "larger timeout" in text
    assert "\n" not in text and "%topaz" not in text


# ------------------------------------------------------------------- secrets


def test_key_only_in_header_and_only_to_api(sb: Sandbox,
                                            images: tuple[Image.Image, Image.Image]) -> None:
    pid = completed(sb, images)
    sb.clear_requests()
    client = make_client(sb)
    client.status(pid)
    client.output_link(pid)
    client.input_link(pid)
    client.statuses()
    api = api_requests(sb)
    assert len(api) == 4
    for r in api:
        headers = _headers(r)
        assert headers.get("x-api-key") == sb.api_key
        assert sb.api_key not in r.path and sb.api_key not in str(r.query)
        assert "authorization" not in headers
    assert [r for r in sb.requests if r.server == "storage"] == []


def test_redirect_is_not_followed_with_the_key(sb: Sandbox) -> None:
    target = f"{sb.storage_url}/elsewhere"
    with _tiny_server(lambda h: _answer(h, 302, b"", "text/plain", Location=target)) as url:
        client = TopazClient(SECRET, url, retries=0)
        with pytest.raises(errors.ApiError) as info:
            client.status(str(uuid.uuid4()))
    assert info.value.status_code == 302
    assert urlsplit(sb.storage_url).netloc in str(info.value)
    assert_one_line_and_clean(info.value)
    assert [r for r in sb.requests if r.server == "storage"] == []


def test_secrets_never_shown(sb: Sandbox, images: tuple[Image.Image, Image.Image],
                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    pid = completed(sb, images)
    client = make_client(sb)
    link = client.output_link(pid)
    signature = urlsplit(link.download_url).query
    head_signature = urlsplit(link.head_url).query
    assert signature and head_signature
    st = client.status(pid)
    failures: list[BaseException] = []
    wrong = TopazClient(SECRET, sb.base_url, backoff_factor=0.0)
    for call in (lambda: wrong.status(pid), lambda: client.status(str(uuid.uuid4()))):
        try:
            call()
        except errors.TopazError as exc:
            failures.append(exc)
    sb.inject("status", code=500, message=f"boom {link.download_url} for key {sb.api_key}")
    try:
        make_client(sb, retries=0).status(pid)
    except errors.ServerError as exc:
        failures.append(exc)
        assert exc.server_message is not None and "boom" in exc.server_message
    assert len(failures) == 3
    shown = [repr(link), str(link), repr(st), str(st), repr(client), str(client),
             repr(wrong), *(f"{e} {e!r} {e.args}" for e in failures),
             *(r.getMessage() for r in caplog.records)]
    for text in shown:
        for secret in (SECRET, sb.api_key, signature, head_signature):
            assert secret not in text, text
    assert any(r.name == "topaz_nb.client" for r in caplog.records)


# ------------------------------------------------------------------- helpers


def _headers(request: object) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}  # type: ignore[attr-defined]


def _free_port() -> int:
    """A port nobody listens on: bound, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


class _raw_server:
    """A raw TCP server on 127.0.0.1: ``respond(conn)`` handles each connection,
    for answers no well-behaved HTTP server would send."""

    def __init__(self, respond) -> None:  # type: ignore[no-untyped-def]
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._respond = respond
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                try:
                    self._respond(conn)
                except OSError:
                    pass

    def __enter__(self) -> str:
        self._thread.start()
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/image/v1"

    def __exit__(self, *exc: object) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
        except OSError:
            pass
        self._sock.close()
        self._thread.join(5)


def _answer(handler: http.server.BaseHTTPRequestHandler, code: int, body: bytes,
            ctype: str, **headers: str) -> None:
    handler.send_response(code)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


class _tiny_server:
    """A one-purpose HTTP server on 127.0.0.1 for answers the sandbox does not give."""

    def __init__(self, respond) -> None:  # type: ignore[no-untyped-def]
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                respond(self)

            def log_message(self, *args: object) -> None:
                return None

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/image/v1"

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# ------------------------------------------------------------ recent processes


def _queries(sb: Sandbox) -> list[dict[str, str]]:
    from urllib.parse import parse_qs

    return [{k: v[0] for k, v in parse_qs(r.query).items()}
            for r in api_requests(sb) if r.path.endswith("/status")]


def test_recent_follows_cursors_until_it_has_enough(sb: Sandbox,
                                                    images: tuple[Image.Image, Image.Image]) -> None:
    made = [completed(sb, images, age=10.0 + i) for i in range(230)]  # newest first: made[0]
    with make_client(sb) as client:
        sb.clear_requests()
        every = client.recent()
        pages = _queries(sb)
        assert len(pages) == 3  # 254 processes, 100 a page
        assert [q.get("cursor") is None for q in pages] == [True, False, False]
        assert all(q["paginated"] == "true" and q["limit"] == "100" for q in pages)
        assert [st.process_id for st in every if st.process_id in set(made)] == made
        assert len(every) == 230 + len(sb.demo_ids)
        assert every[0].process_id == sb.demo_ids[3]  # the demo's job still processing
        times = [st.creation_time for st in every]
        assert times == sorted(times, reverse=True)

        sb.clear_requests()
        five = client.recent(limit=5)
        assert [st.process_id for st in five] == [sb.demo_ids[3]] + made[:4]
        assert [q["limit"] for q in _queries(sb)] == ["5"]  # one small page, no more
        sb.clear_requests()
        assert [st.process_id for st in client.recent(limit=150)][1:] == made[:149]
        assert len(_queries(sb)) == 2


def test_recent_filters_by_status_and_age(sb: Sandbox,
                                          images: tuple[Image.Image, Image.Image]) -> None:
    old = [completed(sb, images, age=3 * 86400.0 + i) for i in range(150)]
    failed = sb.add_job(images[0], status="Failed", age=600.0, message="No model")
    with make_client(sb) as client:
        sb.clear_requests()
        hour = client.recent(since="1h")
        assert failed in [st.process_id for st in hour]
        assert not set(old) & {st.process_id for st in hour}
        assert len(_queries(sb)) == 1  # the first page already reached past an hour ago
        day = {st.process_id for st in client.recent(since=dt.timedelta(days=4))}
        assert set(old) <= day
        only = client.recent(status="failed", since="2d")
        assert {st.process_id for st in only} == {failed} | {
            p for p in sb.demo_ids if sb.job(p).status == "Failed"}
        assert all(st.status == "Failed" and st.reason for st in only)
        assert [st.process_id for st in client.recent(status="Failed", limit=1)] == [failed]


@pytest.mark.parametrize("kw, words", [
    ({"since": "2 hours"}, "is not a duration"),
    ({"since": "8d"}, "past the 7 days"),
    ({"since": -5}, "back in time"),
    ({"since": dt.datetime(2026, 1, 1)}, "timezone-aware"),
    ({"status": "done"}, "Pending, Processing, Completed, Failed, Cancelled"),
    ({"limit": 0}, "at least 1"),
])
def test_recent_refuses_bad_filters_before_asking(sb: Sandbox, kw: dict, words: str) -> None:
    with make_client(sb) as client:
        sb.clear_requests()
        with pytest.raises(errors.InvalidFilter, match=words) as err:
            client.recent(**kw)
    assert "\n" not in str(err.value) and isinstance(err.value, ValueError)
    assert api_requests(sb) == []


def test_recent_from_a_server_that_ignores_pagination() -> None:
    now = time.time()
    seen: list[str] = []
    rows = [{"process_id": f"{i:08d}-0000-4000-8000-000000000000", "status": status,
             "filename": f"{i}.jpg", "creation_time": int(now - age)}
            for i, (status, age) in enumerate([("Completed", 7200), ("Failed", 60),
                                               ("Completed", 30), ("Completed", 90000)])]

    def respond(handler: http.server.BaseHTTPRequestHandler) -> None:
        seen.append(handler.path)
        _answer(handler, 200, json.dumps(rows).encode(), "application/json")

    with _tiny_server(respond) as url, TopazClient("k", url, backoff_factor=0.0) as client:
        newest = client.recent()
        assert [st.filename for st in newest] == ["2.jpg", "1.jpg", "0.jpg", "3.jpg"]
        assert [st.filename for st in client.recent(limit=2)] == ["2.jpg", "1.jpg"]
        assert [st.filename for st in client.recent(since="3h", status="completed")] == \
            ["2.jpg", "0.jpg"]
        assert len(client.statuses()) == 4
    assert len(seen) == 4 and all("paginated=true" in p for p in seen)  # one request each


# ------------------------------------------------------- listings that misbehave


def _failed_demo_ids(sb: Sandbox) -> set[str]:
    return {p for p in sb.demo_ids if sb.job(p).status == "Failed"}


def test_an_endless_listing_stops_at_the_page_bound_and_says_why(sb: Sandbox) -> None:
    # Every page announces another, with a cursor never sent before.
    sb.inject("listing", mode="endless", times=None)
    with make_client(sb) as client:
        sb.clear_requests()
        failed = client.recent(status="Failed")
    assert {st.process_id for st in failed} == _failed_demo_ids(sb)
    assert len(failed) == len(_failed_demo_ids(sb))  # each once, though pages wrapped round
    pages = _queries(sb)
    assert len(pages) == client_module._LIST_PAGES == failed.pages
    assert len({q.get("cursor") for q in pages}) == len(pages)  # a fresh cursor each time
    assert failed.cut == "pages" and failed.skipped == 0
    notes = failed.notes()
    assert len(notes) == 1 and "\n" not in notes[0]
    assert "cut after 100 pages" in notes[0] and "kept announcing more" in notes[0]
    assert "since=" in notes[0] and "--since" in failed.notes("magic")[0]


def test_an_endless_listing_stops_at_the_time_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTime()
    monkeypatch.setattr(client_module, "_clock", fake.clock)
    row = {"process_id": str(uuid.uuid4()), "status": "Completed",
           "creation_time": int(time.time())}
    seen: list[str] = []

    def respond(handler: http.server.BaseHTTPRequestHandler) -> None:
        seen.append(handler.path)
        fake.sleep(25.0)  # every page takes 25 s of the fake clock
        body = {"data": [row], "pagination": {"has_next_page": True,
                                              "next_cursor": f"c{len(seen)}"}}
        _answer(handler, 200, json.dumps(body).encode(), "application/json")

    with _tiny_server(respond) as url, TopazClient("k", url, backoff_factor=0.0) as client:
        found = client.recent(status="Failed")
    # 25, 50 and then 75 s: past the 60 s bound, so no fourth page is asked for.
    assert len(seen) == 3 and found.pages == 3 and found.cut == "time"
    assert found == [] and found.seconds == 75.0
    [note] = found.notes("magic")
    assert "cut after 75 s (3 pages)" in note and "--since" in note


def test_a_cursor_handed_back_again_stops_the_listing(sb: Sandbox) -> None:
    sb.inject("listing", mode="stuck_cursor", times=None)
    with make_client(sb) as client:
        sb.clear_requests()
        failed = client.recent(status="Failed")
    pages = _queries(sb)
    assert len(pages) == 2 and pages[1]["cursor"]  # the cursor came back: no third page
    assert failed.cut == "cursor" and {st.process_id for st in failed} == _failed_demo_ids(sb)
    [note] = failed.notes("panel")
    assert "stopped after 2 pages" in note and "sent before" in note and "--since" not in note


def test_entries_that_are_not_processes_are_skipped_and_counted(sb: Sandbox,
                                                               images: tuple[Image.Image,
                                                                             Image.Image]) -> None:
    made = {completed(sb, images, age=100.0 + i) for i in range(30)}
    sb.inject("listing", mode="bad_entry", times=None)  # one on every page
    with make_client(sb) as client:
        sb.clear_requests()
        every = client.recent()
        small = client.recent(limit=10)  # pages of 10 (and one bad entry each)
    assert made <= {st.process_id for st in every}
    assert len(every) == 30 + len(sb.demo_ids) and every.skipped == 1 and every.cut is None
    assert len(small) == 10 and small.skipped == 1
    [note] = every.notes("magic")
    assert note == "1 entry in the API's list was left out: it has no process ID that is a UUID."
    assert "check the ID" not in note and "job-0042" not in note


def test_a_listing_keeps_what_it_can_of_odd_entries() -> None:
    pid = str(uuid.uuid4())
    rows: list[object] = [{"process_id": pid.upper(), "status": "Completed"}, "junk", 7,
                          {"status": "Failed"}, {"process_id": None},
                          {"process_id": pid, "status": "Completed"}]

    def respond(handler: http.server.BaseHTTPRequestHandler) -> None:
        # More pages announced, with no cursor to ask for them.
        body = {"data": rows, "pagination": {"has_next_page": True}}
        _answer(handler, 200, json.dumps(body).encode(), "application/json")

    with _tiny_server(respond) as url, TopazClient("k", url, backoff_factor=0.0) as client:
        found = client.statuses()
    assert [st.process_id for st in found] == [pid]  # canonical, and once
    assert found.skipped == 4 and found.cut == "no_cursor" and found.pages == 1
    cut, skipped = found.notes()
    assert "sent no cursor" in cut and skipped.startswith("4 entries")


def test_a_process_on_two_pages_is_listed_and_counted_once(sb: Sandbox,
                                                           images: tuple[Image.Image,
                                                                         Image.Image]) -> None:
    for i in range(12):
        completed(sb, images, age=100.0 + i)
    with make_client(sb) as client:
        expected = [st.process_id for st in client.recent(limit=6, status="Completed")]
        sb.inject("listing", mode="overlap", times=None)  # each page repeats the last one's end
        sb.clear_requests()
        some = client.recent(limit=6, status="Completed")
        assert len(_queries(sb)) >= 2  # the unfinished processes leave the first page short
        every = client.statuses()
    assert [st.process_id for st in some] == expected and len(set(expected)) == 6
    listed = [st.process_id for st in every]
    assert len(listed) == len(set(listed)) == 12 + len(sb.demo_ids)
