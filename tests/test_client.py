"""TopazClient against the local sandbox, over real sockets."""

from __future__ import annotations

import datetime as dt
import http.server
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image

from topaz_nb import errors
from topaz_nb.client import DEFAULT_BASE_URL, Status, TopazClient
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
    assert "\n" not in str(info.value)
    with pytest.raises(errors.MissingApiKey):
        TopazClient(api_key="   ")


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


def test_wrong_key_is_403_without_showing_it(sb: Sandbox,
                                             images: tuple[Image.Image, Image.Image]) -> None:
    pid = completed(sb, images)
    sb.clear_requests()
    client = TopazClient(SECRET, sb.base_url, backoff_factor=0.0)
    with pytest.raises(errors.AuthenticationError) as info:
        client.output_link(pid)
    assert info.value.status_code == 403
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
    text = str(exc)
    assert pid in text and "Processing, 42%" in text and "ETA" in text and "--wait" in text
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
    assert pid in str(info.value) and "--wait" in str(info.value)


def test_409_for_a_failed_process_says_no_output(sb: Sandbox,
                                                 images: tuple[Image.Image, Image.Image]) -> None:
    pid = sb.add_job(images[0], images[1], status="Failed")
    with pytest.raises(errors.NotReady) as info:
        make_client(sb).output_link(pid)
    assert info.value.status == "Failed"
    assert "Failed" in str(info.value) and "--wait" not in str(info.value)


def test_429_retried_honouring_retry_after(sb: Sandbox,
                                           images: tuple[Image.Image, Image.Image]) -> None:
    pid = completed(sb, images)
    sb.clear_requests()
    sb.inject("status", code=429, retry_after=1, times=1)
    started = time.monotonic()
    st = make_client(sb).status(pid)
    elapsed = time.monotonic() - started
    assert st.done
    assert elapsed >= 0.99
    assert len(api_requests(sb)) == 2


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


def test_retry_time_is_bounded(sb: Sandbox, images: tuple[Image.Image, Image.Image]) -> None:
    pid = completed(sb, images)
    sb.inject("status", code=503, retry_after=30, times=None)
    started = time.monotonic()
    with pytest.raises(errors.ServerError):
        make_client(sb, retries=5, max_retry_time=1.0).status(pid)
    assert time.monotonic() - started < 5


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


def test_unreachable_host_is_one_line() -> None:
    port = _free_port()
    client = TopazClient(SECRET, f"http://127.0.0.1:{port}/image/v1", retries=1,
                         backoff_factor=0.0, max_retry_time=2.0, timeout=2.0)
    with pytest.raises(errors.ServerError) as info:
        client.status(str(uuid.uuid4()))
    assert f"127.0.0.1:{port}" in str(info.value)
    assert info.value.status_code is None
    assert_one_line_and_clean(info.value)


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


def test_two_threads_fetch_both_sides(sb: Sandbox,
                                      images: tuple[Image.Image, Image.Image]) -> None:
    pid = completed(sb, images)
    sb.inject("latency", seconds=0.5, times=2)
    client = make_client(sb)
    got: dict[str, Link] = {}

    def fetch(side: str) -> None:
        got[side] = client.link(pid, side)  # type: ignore[arg-type]

    threads = [threading.Thread(target=fetch, args=(s,)) for s in ("input", "output")]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert time.monotonic() - started < 0.95  # the two requests overlapped
    assert got["input"].side == "input" and got["output"].side == "output"


# ---------------------------------------------------------------------- wait


def test_wait_until_completed(sb: Sandbox, images: tuple[Image.Image, Image.Image]) -> None:
    pid = sb.add_job(images[0], images[1], status="Processing", ready_in=2)
    seen: list[Status] = []
    started = time.monotonic()
    st = make_client(sb).wait(pid, timeout=20, on_progress=seen.append)
    elapsed = time.monotonic() - started
    assert st.done and st.process_id == pid
    assert seen[-1] is st and len(seen) >= 2
    assert seen[0].status in ("Pending", "Processing")
    assert elapsed < 8
    assert len(api_requests(sb, "/status/")) <= 12  # paced by the ETA, not hammering


@pytest.mark.parametrize("final", ["Failed", "Cancelled"])
def test_wait_on_failed(sb: Sandbox, images: tuple[Image.Image, Image.Image], final: str) -> None:
    pid = sb.add_job(images[0], images[1], status=final)
    with pytest.raises(errors.ProcessFailed) as info:
        make_client(sb).wait(pid, timeout=5)
    assert info.value.status == final and pid in str(info.value)
    assert "\n" not in str(info.value)


def test_wait_timeout(sb: Sandbox, images: tuple[Image.Image, Image.Image]) -> None:
    pid = sb.add_job(images[0], images[1], status="Processing", ready_in=120)
    started = time.monotonic()
    with pytest.raises(errors.WaitTimeout) as info:
        make_client(sb).wait(pid, timeout=1.0)
    assert 0.9 <= time.monotonic() - started < 4
    assert pid in str(info.value) and "\n" not in str(info.value)


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
            def do_GET(self) -> None:  # noqa: N802
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
