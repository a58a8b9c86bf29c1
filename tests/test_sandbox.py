"""The sandbox over real sockets: API answers checked against the official spec,
presigned storage, faults, demo data and the command line."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests
import urllib3
from conftest import wait_until
from PIL import Image

from topaz_nb.sandbox import STORAGE_PROFILES, Link, RecordedRequest, Sandbox
from topaz_nb.sandbox._demo import DEMO_JOBS
from topaz_nb.sandbox._http import header
from topaz_nb.sandbox._link import _Shaper

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "tests" / "data" / "topaz-image-api.yaml"  # the official spec, vendored
PROD = "https://api.topazlabs.com/image/v1"
DATA = REPO / "topaz_nb" / "sandbox" / "data"
SEVEN_DAYS = 7 * 24 * 3600


# -- helpers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi() -> Any:
    from openapi_core import OpenAPI

    return OpenAPI.from_file_path(str(SPEC))


@pytest.fixture
def conforms(openapi: Any, sandbox: Sandbox) -> Callable[[requests.Response], None]:
    """Validate a sandbox request and its response against the production spec."""
    from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

    def check(response: requests.Response) -> None:
        prepared = response.request.copy()
        assert prepared.url is not None and prepared.url.startswith(sandbox.base_url)
        prepared.url = PROD + prepared.url[len(sandbox.base_url):]
        request = RequestsOpenAPIRequest(prepared)
        if response.status_code not in (400, 401, 403):
            openapi.validate_request(request)
        openapi.validate_response(request, RequestsOpenAPIResponse(response))

    return check


def api_get(sb: Sandbox, path: str, key: str | None = "", **kw: Any) -> requests.Response:
    headers = {} if key is None else {"X-API-Key": key or sb.api_key}
    return requests.get(sb.base_url + path, headers=headers, timeout=10, **kw)


def link(sb: Sandbox, pid: str, side: str = "output") -> dict[str, Any]:
    path = f"/download/{pid}" if side == "output" else f"/download/input/{pid}"
    response = api_get(sb, path)
    assert response.status_code == 200, response.text
    return response.json()


def error_of(response: requests.Response) -> dict[str, Any]:
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == response.status_code
    return body


def s3_code(response: requests.Response) -> str:
    assert response.headers["Content-Type"] == "application/xml"
    text = response.text
    return text[text.index("<Code>") + 6:text.index("</Code>")]


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


# -- lifecycle and identity --------------------------------------------------


def test_urls_key_and_repr(sandbox: Sandbox) -> None:
    assert sandbox.base_url.startswith("http://127.0.0.1:")
    assert sandbox.base_url.endswith("/image/v1")
    assert sandbox.storage_url.startswith("http://127.0.0.1:")
    assert urlsplit(sandbox.base_url).port != urlsplit(sandbox.storage_url).port
    assert sandbox.api_key.startswith("sbx_") and len(sandbox.api_key) > 20
    assert sandbox.api_key not in repr(sandbox) and sandbox.api_key not in str(sandbox)
    assert Sandbox().api_key != Sandbox().api_key
    assert Sandbox("mine").api_key == "mine"


def test_stop_closes_ports_even_with_idle_keepalive_connections() -> None:
    sb = Sandbox(demo=False).start()
    servers = list(sb._servers)
    session = requests.Session()
    assert session.get(sb.base_url + "/status", headers={"X-API-Key": sb.api_key},
                       timeout=5).status_code == 200
    handlers = [t for server in servers for t in server._conn_threads]
    assert handlers and any(t.is_alive() for t in handlers)  # the idle keep-alive one
    sb.stop()
    # stop() woke the handler blocked on the idle connection and joined it.
    assert not any(t.is_alive() for t in handlers)
    with pytest.raises(requests.ConnectionError):
        requests.get(sb.base_url + "/status", timeout=2)
    session.close()


def test_startup_with_demo_reuses_encoded_demo_files() -> None:
    from topaz_nb.sandbox._demo import demo_bytes

    with Sandbox() as sb:
        assert len(sb.demo_ids) == len(DEMO_JOBS)
    before = demo_bytes.cache_info()
    with Sandbox() as again:
        assert again.demo_ids == sb.demo_ids
    after = demo_bytes.cache_info()
    # A second sandbox encodes nothing: every demo file comes from the cache.
    assert after.misses == before.misses
    assert after.hits - before.hits == len(DEMO_JOBS)


# -- API: every status code, checked against the spec -----------------------


def test_status_of_every_demo_job_conforms(sandbox: Sandbox, conforms: Callable) -> None:
    for pid in sandbox.demo_ids:
        response = api_get(sandbox, f"/status/{pid}")
        assert response.status_code == 200
        conforms(response)
        body = response.json()
        assert body["process_id"] == pid
        assert all(isinstance(body[k], int) for k in
                   ("eta", "creation_time", "modification_time", "progress", "credits"))


def test_all_statuses_plain_and_paginated_conform(sandbox: Sandbox, conforms: Callable) -> None:
    plain = api_get(sandbox, "/status")
    conforms(plain)
    assert {s["process_id"] for s in plain.json()} == set(sandbox.demo_ids)

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"paginated": "true", "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = api_get(sandbox, "/status", params=params)
        assert page.status_code == 200
        conforms(page)
        body = page.json()
        assert len(body["data"]) <= 2
        seen += [s["process_id"] for s in body["data"]]
        if not body["pagination"]["has_next_page"]:
            assert "next_cursor" not in body["pagination"]
            break
        cursor = body["pagination"]["next_cursor"]
    assert sorted(seen) == sorted(sandbox.demo_ids) and len(seen) == len(set(seen))


@pytest.mark.parametrize("params", [{"paginated": "true", "limit": "0"},
                                    {"paginated": "true", "limit": "101"},
                                    {"paginated": "true", "cursor": "not-a-cursor"},
                                    {"paginated": "maybe"}])
def test_all_statuses_bad_query_is_400(sandbox: Sandbox, params: dict[str, str]) -> None:
    response = api_get(sandbox, "/status", params=params)
    assert response.status_code == 400
    assert "Invalid query parameter" in error_of(response)["message"]


def test_download_links_conform_and_point_at_storage(sandbox: Sandbox,
                                                     conforms: Callable) -> None:
    pid = sandbox.demo_ids[0]
    for path in (f"/download/{pid}", f"/download/input/{pid}"):
        before = time.time()
        response = api_get(sandbox, path)
        after = time.time()
        assert response.status_code == 200
        conforms(response)
        body = response.json()
        assert int(before + 3600) <= body["expiry"] <= int(after + 3600)
        for key in ("download_url", "head_url"):
            assert body[key].startswith(sandbox.storage_url + "/")
            query = parse_qs(urlsplit(body[key]).query)
            assert len(query["X-Amz-Signature"][0]) == 64
            assert query["X-Amz-Expires"] == ["3600"]
        assert body["download_url"] != body["head_url"]
        assert ("input." in body["download_url"]) == ("/input/" in path)


def test_link_ttl_applies_to_links_issued_afterwards(sandbox: Sandbox) -> None:
    sandbox.link_ttl = 120
    before = time.time()
    body = link(sandbox, sandbox.demo_ids[0])
    assert int(before + 120) <= body["expiry"] <= int(time.time() + 120)


def test_spec_check_rejects_a_nonconforming_answer(sandbox: Sandbox,
                                                   conforms: Callable) -> None:
    from openapi_core.validation.response.exceptions import InvalidData

    response = api_get(sandbox, f"/status/{sandbox.demo_ids[0]}")
    conforms(response)
    response._content = response.content.replace(b'"credits"', b'"credit"')
    with pytest.raises(InvalidData):
        conforms(response)


def test_key_header_name_is_case_insensitive(sandbox: Sandbox) -> None:
    response = requests.get(sandbox.base_url + "/status", timeout=5,
                            headers={"x-api-key": sandbox.api_key})
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/status/{pid}", "/download/{pid}", "/download/input/{pid}",
                                  "/status"])
def test_missing_or_wrong_key_is_401(sandbox: Sandbox, conforms: Callable, openapi: Any,
                                     path: str) -> None:
    # The spec's example for an invalid or expired key is exactly this body.
    example = openapi.spec / "components" / "responses" / "Unauthorized" / "content" \
        / "application/json" / "examples" / "unauthorizedExample"
    assert "invalid or expired" in (example / "summary").read_str()
    expected = {"code": 401, "message": (example / "value" / "message").read_str()}
    path = path.format(pid=sandbox.demo_ids[0])
    for key in (None, "sbx_wrong"):
        refused = api_get(sandbox, path, key=key)
        assert refused.status_code == 401 and error_of(refused) == expected
        conforms(refused)


@pytest.mark.parametrize("path", ["/status/{pid}", "/download/{pid}", "/download/input/{pid}"])
def test_bad_uuid_400_and_unknown_404(sandbox: Sandbox, conforms: Callable, path: str) -> None:
    bad = api_get(sandbox, path.format(pid="not-a-uuid"))
    assert bad.status_code == 400
    assert error_of(bad)["message"] == "Invalid process ID. Please ensure it is a valid UUID."
    conforms(bad)
    unknown = api_get(sandbox, path.format(pid=uuid.uuid4()))
    assert unknown.status_code == 404
    assert error_of(unknown)["message"] == "An image with the given process ID was not found."
    conforms(unknown)


def test_jobs_past_seven_days_are_gone_everywhere(sandbox: Sandbox, make_image: Callable,
                                                  conforms: Callable) -> None:
    old = sandbox.add_job(make_image(), make_image((128, 96)), age=SEVEN_DAYS + 60)
    recent = sandbox.add_job(make_image(), make_image((128, 96)), age=SEVEN_DAYS - 60)
    for path in (f"/status/{old}", f"/download/{old}", f"/download/input/{old}"):
        response = api_get(sandbox, path)
        assert response.status_code == 404
        conforms(response)
    listed = {s["process_id"] for s in api_get(sandbox, "/status").json()}
    assert recent in listed and old not in listed
    assert api_get(sandbox, f"/download/{recent}").status_code == 200


@pytest.mark.parametrize("status,progress,expected", [
    ("Processing", 42, "(status: Processing, 42%)"),
    ("Pending", None, "(status: Pending, 0%)"),
    ("Failed", None, "(status: Failed)"),
    ("Cancelled", None, "(status: Cancelled)"),
])
def test_output_not_completed_is_409_but_input_downloads(
        sandbox: Sandbox, make_image: Callable, conforms: Callable,
        status: str, progress: int | None, expected: str) -> None:
    pid = sandbox.add_job(make_image(), status=status, progress=progress)
    response = api_get(sandbox, f"/download/{pid}")
    assert response.status_code == 409
    assert expected in error_of(response)["message"]
    conforms(response)
    state = api_get(sandbox, f"/status/{pid}")
    conforms(state)
    assert state.json()["status"] == status
    assert api_get(sandbox, f"/download/input/{pid}").status_code == 200


@pytest.mark.parametrize("status", ["Failed", "Cancelled"])
def test_ended_job_reports_its_reason(sandbox: Sandbox, make_image: Callable,
                                      conforms: Callable, status: str) -> None:
    pid = sandbox.add_job(make_image(), status=status, message="Model could not load")
    state = api_get(sandbox, f"/status/{pid}")
    conforms(state)
    assert state.json()["message"] == "Model could not load"
    # A reason belongs to an ended job only; one without a reason sends no field.
    plain = api_get(sandbox, f"/status/{sandbox.add_job(make_image(), status=status)}")
    assert "message" not in plain.json()
    failed_demo = [p for p in sandbox.demo_ids if sandbox.job(p).status == "Failed"]
    assert len(failed_demo) >= 2
    assert all(api_get(sandbox, f"/status/{pid}").json()["message"] for pid in failed_demo)


def test_unknown_path_and_wrong_method(sandbox: Sandbox) -> None:
    for path in ("/nope", "/download", "/status/a/b"):
        response = api_get(sandbox, path)
        assert response.status_code == 404 and error_of(response)["code"] == 404
    outside = requests.get(sandbox.base_url.replace("/image/v1", "/other"), timeout=5)
    assert outside.status_code == 404 and error_of(outside)
    posted = requests.post(f"{sandbox.base_url}/status/{sandbox.demo_ids[0]}", data=b"{}",
                           headers={"X-API-Key": sandbox.api_key}, timeout=5)
    assert posted.status_code == 405 and posted.headers["Allow"] == "GET"


def test_ready_in_moves_from_processing_to_completed(sandbox: Sandbox,
                                                     make_image: Callable) -> None:
    pid = sandbox.add_job(make_image(), make_image((256, 192)), ready_in=3600)
    job = sandbox.job(pid)
    assert job.ready_at is not None
    first = api_get(sandbox, f"/status/{pid}").json()
    assert first["status"] == "Processing" and 0 <= first["progress"] < 50
    assert first["eta"] == int(job.ready_at)
    assert api_get(sandbox, f"/download/{pid}").status_code == 409
    # Progress follows the job's clock: ask it at chosen moments, no sleeping.
    span = job.ready_at - job.started
    states = [job.snapshot(job.started + f * span) for f in (0.0, 0.25, 0.5, 0.99, 1.0)]
    assert [s[0] for s in states] == ["Processing"] * 4 + ["Completed"]
    progress = [s[1] for s in states]
    assert progress == sorted(progress) and progress[0] == 0 and progress[-2] <= 99
    assert progress[-1] == 100
    # Move the finish into the past: the API reports it finished at once.
    job.ready_at = time.time() - 1
    done = api_get(sandbox, f"/status/{pid}").json()
    assert done["status"] == "Completed" and done["progress"] == 100
    assert (done["output_width"], done["output_height"]) == (256, 192)
    assert api_get(sandbox, f"/download/{pid}").status_code == 200


# -- add_job -----------------------------------------------------------------


def test_add_job_encodings_paths_and_bytes(sandbox: Sandbox, make_image: Callable,
                                           tmp_path: Path) -> None:
    src = tmp_path / "holiday.png"
    make_image((40, 30)).save(src)
    pid = sandbox.add_job(src, make_image((160, 120)), output_format="tiff",
                          model="Low Resolution V2", credits=3, crop_to_fill=True)
    status = api_get(sandbox, f"/status/{pid}").json()
    assert status["filename"] == "holiday.png"
    assert (status["input_format"], status["output_format"]) == ("png", "tiff")
    assert (status["input_width"], status["input_height"]) == (40, 30)
    assert (status["model"], status["credits"], status["crop_to_fill"]) == \
        ("Low Resolution V2", 3, True)
    assert requests.get(link(sandbox, pid)["download_url"], timeout=5) \
        .headers["Content-Type"] == "image/tiff"

    webp = sandbox.add_job(make_image(), make_image(), input_format="webp",
                           output_format="jpeg", filename="x.webp")
    assert requests.get(link(sandbox, webp, "input")["download_url"], timeout=5) \
        .headers["Content-Type"] == "image/webp"
    assert requests.get(link(sandbox, webp)["download_url"], timeout=5) \
        .headers["Content-Type"] == "image/jpeg"

    corrupt = b"\x89PNG\r\n\x1a\n" + b"garbage" * 10
    broken = sandbox.add_job(make_image(), corrupt)
    got = requests.get(link(sandbox, broken)["download_url"], timeout=5)
    assert got.content == corrupt and got.headers["Content-Type"] == "application/octet-stream"
    assert sandbox.job(broken).output is not None and sandbox.job(broken).output.width == 0


def test_add_job_ids_records_and_bad_arguments(sandbox: Sandbox, make_image: Callable) -> None:
    wanted = "D7B3B3B3-7B3B-4B3B-8B3B-3B3B3B3B3B3B"
    pid = sandbox.add_job(make_image(), make_image(), process_id=wanted)
    assert pid == wanted.lower() and sandbox.job(pid).process_id == pid
    assert uuid.UUID(sandbox.add_job(make_image(), make_image())).version == 4
    with pytest.raises(KeyError):
        sandbox.job(str(uuid.uuid4()))
    with pytest.raises(ValueError, match="status must be one of"):
        sandbox.add_job(make_image(), make_image(), status="Done")
    with pytest.raises(ValueError, match="needs an output"):
        sandbox.add_job(make_image())
    with pytest.raises(TypeError, match="PIL image, a file path or bytes"):
        sandbox.add_job(12345, make_image())  # type: ignore[arg-type]


# -- storage -----------------------------------------------------------------


def test_storage_get_and_head_with_realistic_headers(sandbox: Sandbox,
                                                     make_image: Callable) -> None:
    output = encoded(make_image((300, 200)), "PNG")
    pid = sandbox.add_job(make_image(), output)
    body = link(sandbox, pid)
    got = requests.get(body["download_url"], timeout=5)
    assert got.status_code == 200 and got.content == output
    assert got.headers["Content-Type"] == "image/png"
    assert got.headers["Content-Length"] == str(len(output))
    assert got.headers["ETag"] == f'"{hashlib.md5(output).hexdigest()}"'
    assert parsedate_to_datetime(got.headers["Last-Modified"]).tzinfo is not None
    assert got.headers["Accept-Ranges"] == "bytes"
    head = requests.head(body["head_url"], timeout=5)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(output))
    assert head.headers["ETag"] == got.headers["ETag"]


def test_storage_ranges_206_and_416(sandbox: Sandbox, make_image: Callable) -> None:
    data = os.urandom(10_000)
    pid = sandbox.add_job(make_image(), data)
    url = link(sandbox, pid)["download_url"]

    def ranged(spec: str, **headers: str) -> requests.Response:
        return requests.get(url, headers={"Range": spec, **headers}, timeout=5)

    tail = ranged("bytes=9000-")
    assert tail.status_code == 206 and tail.content == data[9000:]
    assert tail.headers["Content-Range"] == "bytes 9000-9999/10000"
    assert tail.headers["Content-Length"] == "1000"
    middle = ranged("bytes=10-19")
    assert middle.status_code == 206 and middle.content == data[10:20]
    suffix = ranged("bytes=-5")
    assert suffix.status_code == 206 and suffix.content == data[-5:]
    clipped = ranged("bytes=9990-20000")
    assert clipped.status_code == 206 and clipped.content == data[9990:]
    for bad in ("bytes=10000-", "bytes=20-10"):
        refused = ranged(bad)
        assert refused.status_code == 416 and refused.headers["Content-Range"] == "bytes */10000"
        assert s3_code(refused) == "InvalidRange"
    stale = ranged("bytes=9000-", **{"If-Range": '"not-the-etag"'})
    assert stale.status_code == 200 and stale.content == data
    fresh = ranged("bytes=9000-", **{"If-Range": tail.headers["ETag"]})
    assert fresh.status_code == 206


# -- storage profiles ----------------------------------------------------------


def test_storage_profiles_are_listed_and_checked() -> None:
    assert STORAGE_PROFILES == ("s3", "bare")
    assert Sandbox().storage_profile == "s3"
    with pytest.raises(ValueError, match="storage_profile"):
        Sandbox(storage_profile="gcs")


def test_bare_storage_sends_none_of_what_the_api_does_not_promise(
        make_image: Callable) -> None:
    import socket

    output = os.urandom(20_000)  # stored as it is
    with Sandbox(storage_profile="bare", demo=False) as sb:
        pid = sb.add_job(make_image(), output)
        body = link(sb, pid)
        assert urlsplit(body["download_url"]).path.endswith("/" + pid)
        assert urlsplit(body["head_url"]).path.endswith("/" + pid)
        head = requests.head(body["head_url"], timeout=5)
        got = requests.get(body["download_url"], timeout=5)
        for r in (head, got):
            assert r.status_code == 200
            assert r.headers["Content-Type"] == "application/octet-stream"
            for absent in ("ETag", "Last-Modified", "Content-Length"):
                assert absent not in r.headers
        assert got.headers["Transfer-Encoding"] == "chunked" and got.content == output
        tail = requests.get(body["download_url"], headers={"Range": "bytes=100-"}, timeout=5)
        assert tail.status_code == 206 and tail.content == output[100:]
        assert tail.headers["Content-Range"] == f"bytes 100-{len(output) - 1}/{len(output)}"
        # A chunked body cut short lacks its last chunk: a reader can tell.
        sb.inject("truncate", server="storage", after_bytes=1000)
        host, port = urlsplit(body["download_url"]).netloc.split(":")
        target = body["download_url"].split(f"{host}:{port}", 1)[1]
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            raw = b""
            while chunk := conn.recv(65536):
                raw += chunk
        assert b"Transfer-Encoding: chunked" in raw and not raw.endswith(b"0\r\n\r\n")
        # The other profile's URL shape is not served.
        s3_path = f"/topaz-sandbox-images/{pid}/output.png"
        assert requests.get(sb.storage_url + s3_path, timeout=5).status_code in (403, 404)


def test_s3_storage_urls_end_in_the_file_name(sandbox: Sandbox, make_image: Callable) -> None:
    pid = sandbox.add_job(make_image(), make_image((64, 64)))
    assert sandbox.storage_profile == "s3"
    assert urlsplit(link(sandbox, pid)["download_url"]).path.endswith(f"/{pid}/output.png")


def test_storage_refuses_expired_tampered_and_wrong_method(sandbox: Sandbox,
                                                           make_image: Callable) -> None:
    pid = sandbox.add_job(make_image(), make_image((80, 60)))
    other = sandbox.add_job(make_image(), make_image((80, 60)))
    body = link(sandbox, pid)
    get_url, head_url = body["download_url"], body["head_url"]

    wrong_method = requests.get(head_url, timeout=5)
    assert wrong_method.status_code == 403 and s3_code(wrong_method) == "SignatureDoesNotMatch"
    assert requests.head(get_url, timeout=5).status_code == 403

    signature = parse_qs(urlsplit(get_url).query)["X-Amz-Signature"][0]
    forged = with_query(get_url, **{"X-Amz-Signature": "0" * 64 if signature[0] != "0"
                                    else "1" * 64})
    assert s3_code(requests.get(forged, timeout=5)) == "SignatureDoesNotMatch"
    longer = with_query(get_url, **{"X-Amz-Expires": "999999"})
    assert s3_code(requests.get(longer, timeout=5)) == "SignatureDoesNotMatch"
    moved = get_url.replace(pid, other)
    assert s3_code(requests.get(moved, timeout=5)) == "SignatureDoesNotMatch"
    unsigned = requests.get(get_url.split("?")[0], headers={"X-API-Key": sandbox.api_key},
                            timeout=5)
    assert unsigned.status_code == 403 and s3_code(unsigned) == "AccessDenied"

    sandbox.link_ttl = 0
    expired = requests.get(link(sandbox, pid)["download_url"], timeout=5)
    assert expired.status_code == 403 and s3_code(expired) == "AccessDenied"
    assert "<Message>Request has expired</Message>" in expired.text
    assert requests.get(get_url, timeout=5).status_code == 200


def test_storage_never_sees_the_api_key(sandbox: Sandbox) -> None:
    sandbox.clear_requests()
    body = link(sandbox, sandbox.demo_ids[0])
    requests.head(body["head_url"], timeout=5)
    requests.get(body["download_url"], timeout=5)
    log = sandbox.requests
    assert [r.server for r in log] == ["api", "storage", "storage"]
    assert log[0].headers["X-API-Key"] == sandbox.api_key
    for item in log[1:]:
        assert all(name.lower() != "x-api-key" for name in item.headers)
        assert sandbox.api_key not in item.query


def test_large_object_streams_in_chunks(sandbox: Sandbox, make_image: Callable) -> None:
    data = os.urandom(12 * 1024 * 1024)
    pid = sandbox.add_job(make_image(), data)
    with requests.get(link(sandbox, pid)["download_url"], stream=True, timeout=10) as got:
        digest = hashlib.md5()
        for chunk in got.iter_content(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.md5(data).hexdigest()


# -- request log -------------------------------------------------------------


def test_request_log_records_every_request_in_order(sandbox: Sandbox) -> None:
    sandbox.clear_requests()
    pid = sandbox.demo_ids[0]
    api_get(sandbox, f"/status/{pid}")
    api_get(sandbox, "/status", params={"paginated": "true", "limit": "3"})
    log = sandbox.requests
    assert [(r.method, r.path, r.query) for r in log] == [
        ("GET", f"/image/v1/status/{pid}", ""),
        ("GET", "/image/v1/status", "paginated=true&limit=3"),
    ]
    assert isinstance(log[0], RecordedRequest) and log[0].server == "api"
    assert log is not sandbox.requests
    sandbox.clear_requests()
    assert sandbox.requests == []


def test_request_log_is_complete_under_concurrency(sandbox: Sandbox) -> None:
    sandbox.clear_requests()
    errors: list[Exception] = []

    def worker() -> None:
        try:
            with requests.Session() as session:
                for _ in range(5):
                    session.get(sandbox.base_url + "/status",
                                headers={"X-API-Key": sandbox.api_key}, timeout=10)
        except (requests.RequestException, OSError) as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(sandbox.requests) == 40


# -- faults ------------------------------------------------------------------


def test_fault_latency(sandbox: Sandbox) -> None:
    sandbox.inject("latency", seconds=0.2)
    assert api_get(sandbox, "/status").status_code == 200
    api_get(sandbox, "/status")
    held = [(r.delay, r.fault) for r in sandbox.requests]
    assert held == [(0.2, None), (0.0, None)]  # the first one only, then used up


def test_fault_status_on_api_and_storage(sandbox: Sandbox, conforms: Callable) -> None:
    sandbox.inject("status", code=429, retry_after=3)
    limited = api_get(sandbox, "/status")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    assert error_of(limited)["message"] == "Too Many Requests"
    conforms(limited)
    sandbox.inject("status", code=500, message="boom")
    assert error_of(api_get(sandbox, "/status"))["message"] == "boom"
    assert api_get(sandbox, "/status").status_code == 200

    url = link(sandbox, sandbox.demo_ids[0])["download_url"]
    sandbox.inject("status", server="storage", code=503)
    slow_down = requests.get(url, timeout=5)
    assert slow_down.status_code == 503 and s3_code(slow_down) == "SlowDown"
    assert requests.get(url, timeout=5).status_code == 200


def test_fault_truncate_sends_real_length_then_closes(sandbox: Sandbox) -> None:
    url = link(sandbox, sandbox.demo_ids[0])["download_url"]
    size = int(requests.head(link(sandbox, sandbox.demo_ids[0])["head_url"], timeout=5)
               .headers["Content-Length"])
    sandbox.inject("truncate", server="storage", after_bytes=1000)
    with requests.get(url, stream=True, timeout=5) as got:
        assert got.headers["Content-Length"] == str(size)
        received = bytearray()
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for chunk in got.iter_content(100):
                received += chunk
    assert len(received) == 1000
    assert len(requests.get(url, timeout=5).content) == size


def test_fault_drop_closes_without_answer(sandbox: Sandbox) -> None:
    sandbox.inject("drop")
    with pytest.raises(requests.ConnectionError):
        api_get(sandbox, "/status")
    assert api_get(sandbox, "/status").status_code == 200


def test_fault_expire_on_storage(sandbox: Sandbox) -> None:
    url = link(sandbox, sandbox.demo_ids[0])["download_url"]
    sandbox.inject("expire", server="storage")
    refused = requests.get(url, timeout=5)
    assert refused.status_code == 403 and "Request has expired" in refused.text
    assert requests.get(url, timeout=5).status_code == 200


def test_fault_redirect_answers_with_any_location(sandbox: Sandbox) -> None:
    url = link(sandbox, sandbox.demo_ids[0])["download_url"]
    sandbox.inject("redirect", server="storage", location="http://[bad")
    # urllib3, not requests: requests parses the Location even when not following it.
    moved = urllib3.PoolManager().request("GET", url, redirect=False, timeout=5)
    assert moved.status == 302 and moved.headers["Location"] == "http://[bad"
    sandbox.inject("redirect", server="storage", location="/elsewhere", code=307)
    assert requests.get(url, timeout=5, allow_redirects=False).status_code == 307
    assert requests.get(url, timeout=5).status_code == 200
    with pytest.raises(TypeError, match="location"):
        sandbox.inject("redirect", server="storage")


def test_fault_omit_headers_streams_to_close(sandbox: Sandbox) -> None:
    body = link(sandbox, sandbox.demo_ids[1])
    full = requests.get(body["download_url"], timeout=5)
    sandbox.inject("omit_headers", server="storage", times=2,
                   headers=["ETag", "Last-Modified", "Content-Length"])
    bare = requests.get(body["download_url"], timeout=5)
    assert bare.status_code == 200 and bare.content == full.content
    for name in ("ETag", "Last-Modified", "Content-Length"):
        assert name not in bare.headers
    assert bare.headers["Connection"] == "close"
    head = requests.head(body["head_url"], timeout=5)
    assert "ETag" not in head.headers and head.headers["Content-Type"] == "image/jpeg"
    assert "ETag" in requests.head(body["head_url"], timeout=5).headers


@pytest.mark.parametrize("profile", STORAGE_PROFILES)
def test_fault_cut_by_close_sends_no_length_and_closes_early(profile: str) -> None:
    with Sandbox(storage_profile=profile) as sb:
        body = link(sb, sb.demo_ids[1])
        full = requests.get(body["download_url"], timeout=5).content
        sb.inject("cut_by_close", server="storage", after_bytes=1000, times=2)
        head = requests.head(body["head_url"], timeout=5)
        assert head.status_code == 200 and "Content-Length" not in head.headers
        with requests.get(body["download_url"], stream=True, timeout=5) as cut:
            for name in ("Content-Length", "Transfer-Encoding"):
                assert name not in cut.headers
            assert cut.headers["Connection"] == "close"
            received = cut.raw.read()  # ends cleanly: nothing says it was cut
        assert received == full[:1000]
        assert [r.fault for r in sb.requests if r.server == "storage"][-2:] == \
            ["cut_by_close", "cut_by_close"]
        assert requests.get(body["download_url"], timeout=5).content == full


@pytest.mark.parametrize(("dialect", "error", "status"), [
    ("s3", "AccessDenied", 403), ("s3", "ExpiredToken", 400),
    ("s3", "SignatureDoesNotMatch", 403), ("s3", "NoSuchKey", 403),
    ("gcs", "AccessDenied", 403), ("gcs", "ExpiredToken", 400),
    ("gcs", "SignatureDoesNotMatch", 403), ("gcs", "NoSuchKey", 404),
])
def test_fault_storage_error_sends_the_document_of_its_code(
        sandbox: Sandbox, dialect: str, error: str, status: int) -> None:
    url = link(sandbox, sandbox.demo_ids[0])["download_url"]
    sandbox.inject("storage_error", server="storage", error=error, code=status,
                   dialect=dialect)
    refused = requests.get(url, timeout=5)
    assert refused.status_code == status and s3_code(refused) == error
    assert "<Message>" in refused.text
    assert ("<Details>" in refused.text) == (dialect == "gcs" and error in
                                             ("AccessDenied", "ExpiredToken"))
    assert ("<RequestId>" in refused.text) == (dialect == "s3")
    assert requests.get(url, timeout=5).status_code == 200


def test_fault_storage_error_without_xml_and_its_arguments(sandbox: Sandbox) -> None:
    url = link(sandbox, sandbox.demo_ids[0])["download_url"]
    sandbox.inject("storage_error", server="storage", dialect="none")
    refused = requests.get(url, timeout=5)
    assert refused.status_code == 403 and refused.headers["Content-Type"] == "text/html"
    assert "<Code>" not in refused.text
    sandbox.inject("storage_error", server="storage", error="AccessDenied",
                   message="Request has expired")
    assert "<Message>Request has expired</Message>" in requests.get(url, timeout=5).text
    with pytest.raises(TypeError, match="error="):
        sandbox.inject("storage_error", server="storage")
    with pytest.raises(ValueError, match="dialect"):
        sandbox.inject("storage_error", server="storage", error="AccessDenied", dialect="azure")
    with pytest.raises(ValueError, match="server"):
        sandbox.inject("storage_error", error="AccessDenied")


def test_fault_matching_times_path_server_and_order(sandbox: Sandbox) -> None:
    pid = sandbox.demo_ids[0]
    sandbox.inject("status", code=502, times=2, path="/download/")
    sandbox.inject("status", code=504, times=None)
    assert api_get(sandbox, f"/download/{pid}").status_code == 502
    assert api_get(sandbox, f"/status/{pid}").status_code == 504
    assert api_get(sandbox, f"/download/{pid}").status_code == 502
    assert api_get(sandbox, f"/download/{pid}").status_code == 504
    assert api_get(sandbox, f"/status/{pid}").status_code == 504
    sandbox.clear_faults()
    sandbox.inject("drop", server="storage", times=None)
    assert api_get(sandbox, f"/download/{pid}").status_code == 200
    sandbox.clear_faults()

    sandbox.inject("latency", seconds=0.1)
    sandbox.inject("latency", seconds=0.2)
    sandbox.inject("status", code=500)
    sandbox.clear_requests()
    assert api_get(sandbox, "/status").status_code == 500
    (slowed,) = sandbox.requests
    assert slowed.delay == pytest.approx(0.3) and slowed.fault == "status"


def _pages(sb: Sandbox, count: int, limit: int = 10) -> list[dict[str, Any]]:
    """The first ``count`` pages of the list, each asked for with the cursor the last gave."""
    bodies: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(count):
        params = {"paginated": "true", "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        response = api_get(sb, "/status", params=params)
        assert response.status_code == 200, response.text
        bodies.append(response.json())
        if not bodies[-1]["pagination"]["has_next_page"]:
            break
        cursor = bodies[-1]["pagination"]["next_cursor"]
    return bodies


def test_fault_listing_bends_the_list_of_processes_only(sandbox: Sandbox,
                                                        conforms: Callable) -> None:
    every = len(sandbox.demo_ids)
    sandbox.inject("listing", mode="endless", times=None)
    endless = _pages(sandbox, 6)
    assert len(endless) == 6 and all(b["pagination"]["has_next_page"] for b in endless)
    assert len({b["pagination"]["next_cursor"] for b in endless}) == 6  # never one sent before
    assert sum(len(b["data"]) for b in endless) == every  # then empty pages, for ever
    # One process's status is not a list: the fault leaves it alone.
    assert api_get(sandbox, f"/status/{sandbox.demo_ids[0]}").status_code == 200
    sandbox.clear_faults()

    sandbox.inject("listing", mode="stuck_cursor", times=None)
    stuck = _pages(sandbox, 3)
    cursors = [b["pagination"]["next_cursor"] for b in stuck]
    assert cursors[0] == cursors[1] == cursors[2] and all(b["data"] for b in stuck)
    sandbox.clear_faults()

    sandbox.inject("listing", mode="overlap", times=None)
    overlap = _pages(sandbox, 3)
    for before, after in itertools.pairwise(overlap):
        assert after["data"][0] == before["data"][-1]
    sandbox.clear_faults()

    sandbox.inject("listing", mode="bad_entry")  # the next page only
    first = api_get(sandbox, "/status", params={"paginated": "true", "limit": "5"})
    ids = [s["process_id"] for s in first.json()["data"]]
    assert len(ids) == 6 and ids[1] == "job-0042"
    assert [r.fault for r in sandbox.requests][-1] == "listing"
    clean = api_get(sandbox, "/status", params={"paginated": "true", "limit": "5"})
    conforms(clean)
    assert "job-0042" not in clean.text
    with pytest.raises(ValueError, match="listing mode must be one of endless"):
        sandbox.inject("listing", mode="forever")
    with pytest.raises(ValueError, match="server"):
        sandbox.inject("listing", server="storage", mode="endless")


def test_fault_arguments_are_checked(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        sandbox.inject("explode")
    with pytest.raises(TypeError, match="needs code="):
        sandbox.inject("status")
    with pytest.raises(TypeError, match="takes no"):
        sandbox.inject("drop", seconds=1)
    with pytest.raises(ValueError, match="server"):
        sandbox.inject("expire")
    with pytest.raises(ValueError, match="server"):
        sandbox.inject("drop", server="db")
    with pytest.raises(ValueError, match="times"):
        sandbox.inject("drop", times=0)
    assert api_get(sandbox, "/status").status_code == 200


# -- demo data ---------------------------------------------------------------


def test_demo_ids_are_stable_and_completed_first() -> None:
    with Sandbox() as one, Sandbox() as two:
        assert one.demo_ids == two.demo_ids
        states = [one.job(pid).snapshot(time.time())[0] for pid in one.demo_ids]
    # The first five are the classic set (three Completed, one Processing, one
    # Failed); the variants after them are Completed but for one Failed.
    assert states[:5] == ["Completed"] * 3 + ["Processing", "Failed"]
    assert sorted(set(states[5:])) == ["Completed", "Failed"]
    with Sandbox(demo=False) as empty:
        assert empty.demo_ids == []
        assert api_get(empty, "/status").json() == []


def test_demo_outputs_are_larger_and_decode(sandbox: Sandbox) -> None:
    formats = set()
    for pid in sandbox.demo_ids:
        job = sandbox.job(pid)
        got_in = requests.get(link(sandbox, pid, "input")["download_url"], timeout=5)
        source = Image.open(io.BytesIO(got_in.content))
        source.load()
        if job.snapshot(time.time())[0] != "Completed":
            continue
        got_out = requests.get(link(sandbox, pid)["download_url"], timeout=5)
        enhanced = Image.open(io.BytesIO(got_out.content))
        enhanced.load()
        formats.add(enhanced.format)
        assert enhanced.width >= 2 * source.width and enhanced.height >= 2 * source.height
        assert len(got_in.content) < len(got_out.content)
    assert {"PNG", "JPEG"} <= formats
    letterboxed = [job for job in map(sandbox.job, sandbox.demo_ids) if job.output is not None
                   and abs(job.input.width / job.input.height
                           - job.output.width / job.output.height) > 0.1]
    assert len(letterboxed) == 1 and not letterboxed[0].crop_to_fill
    assert letterboxed[0].output is not None
    canvas = Image.open(io.BytesIO(letterboxed[0].output.data)).convert("L")
    assert canvas.getpixel((canvas.width // 2, 0)) < 8  # a black bar above the photo
    assert canvas.getpixel((canvas.width // 2, canvas.height // 2)) > 8


def test_demo_processing_job_finishes_thirty_seconds_in(sandbox: Sandbox) -> None:
    processing = [sandbox.job(p) for p in sandbox.demo_ids if sandbox.job(p).ready_at]
    assert len(processing) == 1
    job = processing[0]
    assert job.ready_at - job.created == pytest.approx(30.0)  # type: ignore[operator]


def test_demo_batch_has_two_dozen_processes_of_several_models(sandbox: Sandbox) -> None:
    jobs = [sandbox.job(p) for p in sandbox.demo_ids]
    assert len(jobs) >= 24 and jobs[0].status == "Completed"
    assert len({job.model for job in jobs}) >= 6
    failed = [job for job in jobs if job.status == "Failed"]
    assert len(failed) >= 2 and all(job.message for job in failed)
    # Variants of the bundled photos, not copies: the encoded files all differ.
    inputs = {job.input.etag for job in jobs}
    assert len(inputs) == len(jobs) - 1  # coffee and its failed Redefine share an input
    scales = {round(job.output.width / job.input.width) for job in jobs if job.output}
    assert scales == {2, 4}


def test_demo_files_are_small_and_licensed() -> None:
    photos = [p for p in DATA.iterdir() if p.suffix in (".jpg", ".png")]
    assert 3 <= len(photos) <= 5
    assert sum(p.stat().st_size for p in photos) <= 5 * 1024 * 1024
    licences = (DATA / "LICENSES.md").read_text(encoding="utf-8")
    for photo in photos:
        assert f"`{photo.name}`" in licences
    used = {demo.photo for demo in DEMO_JOBS}
    assert used <= {p.name for p in photos}


# -- command line ------------------------------------------------------------


def test_module_runs_prints_and_serves(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "topaz_nb.sandbox", "--port", "0", "--api-key", "sbx_cli_key"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        for _ in range(200):  # the banner is a few dozen lines; stop at its end or EOF
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if "Ctrl-C" in line:
                break
        text = "\n".join(lines)
        assert "export TOPAZ_API_KEY=sbx_cli_key" in text, text
        url = next(line.split("=", 1)[1] for line in lines if "export TOPAZ_API_URL=" in line)
        for demo in DEMO_JOBS:
            assert demo.process_id in text and demo.name in text
        answer = requests.get(url + "/status", headers={"X-API-Key": "sbx_cli_key"}, timeout=5)
        assert answer.status_code == 200 and len(answer.json()) == len(DEMO_JOBS)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_the_shootout_is_one_source_through_three_models(sandbox):
    from topaz_nb.sandbox._demo import SHOOTOUT_SOURCE_ID

    ids = sandbox.add_shootout()
    jobs = [sandbox.job(pid) for pid in ids]
    assert len(set(ids)) == 3 and len({j.model for j in jobs}) == 3
    assert {j.input.data for j in jobs} == {jobs[0].input.data}
    assert len({j.output.data for j in jobs}) == 3
    assert all(j.output.width == 4 * j.input.width for j in jobs)
    assert all(j.status_json(time.time())["source_id"] == SHOOTOUT_SOURCE_ID for j in jobs)
    assert ids[0] not in sandbox.demo_ids


# -- faults for ranged downloads -----------------------------------------------


def test_fault_range_matches_only_that_range(sandbox: Sandbox) -> None:
    url = link(sandbox, sandbox.demo_ids[0])["download_url"]
    sandbox.inject("status", server="storage", code=503, range="bytes=10-19")
    assert requests.get(url, headers={"Range": "bytes=0-9"}, timeout=5).status_code == 206
    assert requests.get(url, headers={"Range": "bytes=10-19"}, timeout=5).status_code == 503
    assert requests.get(url, headers={"Range": "bytes=10-19"}, timeout=5).status_code == 206


def test_fault_ignore_range_and_change_etag(sandbox: Sandbox) -> None:
    url = link(sandbox, sandbox.demo_ids[0])["download_url"]
    whole = requests.get(url, timeout=5)
    sandbox.inject("ignore_range", server="storage")
    ignored = requests.get(url, headers={"Range": "bytes=0-9"}, timeout=5)
    assert ignored.status_code == 200 and ignored.content == whole.content
    sandbox.inject("change_etag", server="storage", etag='"other"')
    changed = requests.get(url, headers={"Range": "bytes=0-9"}, timeout=5)
    assert changed.status_code == 206 and changed.headers["ETag"] == '"other"'
    assert changed.content == whole.content[:10]
    assert requests.get(url, timeout=5).headers["ETag"] == whole.headers["ETag"]


def test_fault_gather_holds_bodies_until_all_are_under_way(sandbox: Sandbox) -> None:
    url = link(sandbox, sandbox.demo_ids[0])["download_url"]
    sandbox.inject("gather", server="storage", count=2, times=2, timeout=30)
    first: dict[str, bytes] = {}
    got_headers = threading.Event()

    def one() -> None:
        with requests.get(url, headers={"Range": "bytes=0-9"}, stream=True, timeout=30) as r:
            got_headers.set()
            first["body"] = r.raw.read(10)

    worker = threading.Thread(target=one)
    worker.start()
    got_headers.wait(30)
    assert got_headers.is_set() and "body" not in first  # headers came, the body waits
    second = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=30)
    worker.join(30)
    assert second.status_code == 206 and len(first["body"]) == 10
    # Alone, a gather never completes: its answer is dropped, visibly.
    sandbox.inject("gather", server="storage", count=2, times=1, timeout=0.2)
    with pytest.raises(requests.RequestException):
        requests.get(url, timeout=30).content  # noqa: B018 - reading is the point


def test_fault_hang_holds_the_answer_until_cleared(sandbox: Sandbox) -> None:
    url = link(sandbox, sandbox.demo_ids[0])["download_url"]
    sandbox.inject("hang", server="storage", after_bytes=5, times=None)
    box: dict[str, object] = {}

    def one() -> None:
        try:
            with requests.get(url, stream=True, timeout=30) as r:
                box["first"] = r.raw.read(5)
                box["rest"] = r.raw.read()
        except Exception as exc:  # noqa: BLE001 - the cut shows as an error
            box["error"] = exc

    worker = threading.Thread(target=one)
    worker.start()
    wait_until(lambda: "first" in box, "the first bytes of the held answer")
    assert "rest" not in box and "error" not in box
    sandbox.clear_faults()  # releases it: the answer ends there, cut
    worker.join(30)
    assert box["first"] and len(box["first"]) == 5  # type: ignore[arg-type]
    assert "error" in box or box.get("rest") == b""
    assert requests.get(url, timeout=5).status_code == 200


# -- shaped link ---------------------------------------------------------------


class FakeTime:
    """A clock that moves only when the shaper sleeps, and the sleeps it asked for."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


def simulate(link: Link, connections: int, size: int, piece: int = 250_000) -> list[float]:
    """Each connection sends ``size`` bytes in pieces at once, in virtual time:
    the total wait the shaper asked of each (its finish time, as all start at 0)."""
    import heapq

    sim = FakeTime()
    shaper = _Shaper(dataclasses.replace(link, clock=sim.clock))
    pacers = [shaper.connection() for _ in range(connections)]
    left = [size] * connections
    waited = [0.0] * connections
    due = [(0.0, i) for i in range(connections)]
    while due:
        sim.now, i = heapq.heappop(due)
        if left[i] == 0:
            continue
        n = min(piece, left[i])
        left[i] -= n
        wait = pacers[i].wait_for(n)
        waited[i] += wait
        heapq.heappush(due, (sim.now + wait, i))
    return waited


def test_link_paces_a_body_by_its_rate_after_the_latency(make_image: Callable) -> None:
    fake = FakeTime()
    data = os.urandom(1_000_000)
    with Sandbox(demo=False, link=Link(per_connection=0.5e6, latency=0.02,
                                       clock=fake.clock, sleep=fake.sleep)) as sb:
        pid = sb.add_job(make_image(), data)
        links = link(sb, pid)
        url = links["download_url"]
        assert fake.sleeps == []  # the API host is not shaped
        got = requests.get(url, timeout=10)
        assert got.content == data
        assert fake.sleeps[0] == 0.02  # before the first byte
        assert sum(fake.sleeps[1:]) == pytest.approx(2.0)  # 1 MB at 0.5 MB/s
        before = len(fake.sleeps)
        head = requests.head(links["head_url"], timeout=10)
        assert head.status_code == 200
        assert fake.sleeps[before:] == [0.02]  # a HEAD waits for the latency, paces no body


def test_link_shares_its_cap_between_connections() -> None:
    shared = Link(shared=0.5e6)
    alone = simulate(shared, 1, 1_000_000)
    assert alone == [pytest.approx(2.0)]
    together = simulate(shared, 2, 1_000_000)
    assert max(together) == pytest.approx(4.0)  # 2 MB through 0.5 MB/s
    assert all(w >= 1.75 * alone[0] for w in together)  # about twice the sleep each
    # Capped per connection only, two connections each get the full rate.
    per_connection = Link(per_connection=0.5e6)
    assert simulate(per_connection, 2, 1_000_000) == [pytest.approx(2.0)] * 2


def test_link_parallel_streams_get_the_shared_rate_and_no_more() -> None:
    cloud = Link(per_connection=25e6, shared=100e6)
    one = simulate(cloud, 1, 100_000_000, piece=256 * 1024)
    assert one == [pytest.approx(4.0)]  # one stream: 25 MB/s
    four = simulate(cloud, 4, 25_000_000, piece=256 * 1024)
    assert max(four) == pytest.approx(1.0, rel=0.02)  # 4 × 25 MB in 1 s: 100 MB/s
    eight = simulate(cloud, 8, 12_500_000, piece=256 * 1024)
    assert max(eight) == pytest.approx(1.0, rel=0.02)  # more streams: still 100 MB/s


def test_link_idle_time_is_not_banked() -> None:
    sim = FakeTime()
    shaper = _Shaper(Link(per_connection=1e6, shared=1e6, clock=sim.clock))
    pacer = shaper.connection()
    assert pacer.wait_for(500_000) == pytest.approx(0.5)
    sim.now = 100.0  # a long idle spell gives no burst afterwards
    assert pacer.wait_for(1_000_000) == pytest.approx(1.0)


def test_link_keeps_its_schedule_through_small_overshoots() -> None:
    sim = FakeTime()
    pacer = _Shaper(Link(per_connection=1e6, clock=sim.clock)).connection()
    assert pacer.wait_for(500_000) == pytest.approx(0.5)
    sim.now = 0.503  # the sleep overshot by 3 ms: the next piece makes up for it
    assert pacer.wait_for(500_000) == pytest.approx(0.497)


@pytest.mark.parametrize("profile", STORAGE_PROFILES)
def test_link_delivers_identical_bodies_whole_and_in_parallel_ranges(
        profile: str, make_image: Callable) -> None:
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    data = os.urandom(3_000_001)
    with Sandbox(demo=False, storage_profile=profile,
                 link=Link(per_connection=100e6, shared=200e6, latency=0.001,
                           sleep=sleep)) as sb:
        pid = sb.add_job(make_image(), data)
        url = link(sb, pid)["download_url"]
        whole = requests.get(url, timeout=10)
        assert whole.status_code == 200 and whole.content == data
        assert waits, "the shaped link never paced the body"
        bounds = [(i * 750_001, min(len(data), (i + 1) * 750_001) - 1) for i in range(4)]
        parts: dict[int, bytes] = {}
        barrier = threading.Barrier(4)

        def fetch(start: int, end: int) -> None:
            barrier.wait(5)  # all four ranges in flight at once
            got = requests.get(url, headers={"Range": f"bytes={start}-{end}"}, timeout=10)
            assert got.status_code == 206
            parts[start] = got.content

        threads = [threading.Thread(target=fetch, args=b) for b in bounds]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert b"".join(parts[s] for s, _ in bounds) == data
        storage = [r for r in sb.requests if r.server == "storage"]
        assert sorted(header(r, "Range") or "" for r in storage)[1:] == sorted(
            f"bytes={s}-{e}" for s, e in bounds)


def test_link_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="per_connection must be a positive"):
        Link(per_connection=0)
    with pytest.raises(ValueError, match="shared must be a positive"):
        Link(shared=-5)
    with pytest.raises(ValueError, match="latency must be zero or more"):
        Link(latency=-0.1)
    assert "clock" not in repr(Link(shared=1e6))
