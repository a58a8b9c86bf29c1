"""The one retry policy, on the storage path and on its own, over real sockets.

Waits are recorded instead of slept (``FakeTime``) and the budget's clock
moves only by what was asked for, so nothing here depends on how busy the
machine is.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import FakeTime
from PIL import Image

from topaz_nb import errors
from topaz_nb.api.client import TopazClient
from topaz_nb.net import retry as _retry
from topaz_nb.sandbox import Sandbox
from topaz_nb.storage import Transfer


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(demo=False) as box:
        yield box


def _job(sb: Sandbox) -> tuple[str, TopazClient]:
    pid = sb.add_job(Image.new("RGB", (8, 6), "red"), Image.new("RGB", (16, 12), "blue"))
    return pid, TopazClient(sb.api_key, sb.base_url, backoff_factor=0.0)


def _storage(sb: Sandbox) -> list:
    return [r for r in sb.requests if r.server == "storage"]


# -- storage path ------------------------------------------------------------


def test_storage_retry_after_is_capped_and_budgeted(sb: Sandbox, tmp_path: Path,
                                                    waits: FakeTime) -> None:
    pid, client = _job(sb)
    sb.inject("status", server="storage", code=503, retry_after=86400, times=None)
    with Transfer(tmp_path) as transfer, pytest.raises(errors.TransferError) as info:
        transfer.download(client.link_source(pid, "output"), pid, "output")
    assert "503" in str(info.value)
    # One HEAD: a wait of the default 60 s cap uses the whole 60 s budget, then
    # one last attempt, and no more.
    assert waits.waits == [_retry.DEFAULT_MAX_RETRY_AFTER]
    assert [r.method for r in _storage(sb)] == ["HEAD", "HEAD"]


def test_storage_session_options(sb: Sandbox, waits: FakeTime) -> None:
    pid, client = _job(sb)
    url = client.output_link(pid).download_url
    sb.inject("status", server="storage", code=429, retry_after=86400, times=None)
    session = Transfer._make_session(3, max_retry_after=2.5, max_retry_time=600.0)
    with session:
        assert session.get(url, timeout=5).status_code == 429
    assert waits.waits == [2.5, 2.5, 2.5]  # capped, and the retry count ends it
    assert len(_storage(sb)) == 4


def test_storage_retry_then_success(sb: Sandbox, tmp_path: Path, waits: FakeTime) -> None:
    pid, client = _job(sb)
    sb.inject("status", server="storage", code=503, retry_after=1, times=2)
    with Transfer(tmp_path) as transfer:
        got = transfer.download(client.link_source(pid, "output"), pid, "output")
    assert got.path.read_bytes() == sb.job(pid).output.data  # type: ignore[union-attr]
    assert waits.waits == [1.0, 1.0]


# -- the policy itself ---------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_budget_is_small_and_separate(waits: FakeTime) -> None:
    """A refused connection is retried twice, quickly, whatever ``retries`` says."""
    policy = _retry.make_retry(10, methods=("GET",), backoff_factor=2.0, max_time=600.0)
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(max_retries=policy))
    with session, pytest.raises(requests.ConnectionError):
        session.get(f"http://127.0.0.1:{_closed_port()}/", timeout=5)
    assert len(waits.waits) <= _retry.UNREACHABLE_RETRIES
    assert sum(waits.waits) <= _retry.UNREACHABLE_TIME <= 5.0
    assert all(w <= _retry.UNREACHABLE_WAIT for w in waits.waits)


def test_budget_belongs_to_one_request(sb: Sandbox, waits: FakeTime) -> None:
    """The mounted policy never carries a deadline: each request gets its own."""
    policy = _retry.make_retry(5, methods=("GET",), backoff_factor=0.0, max_time=10.0)
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(max_retries=policy)
    session.mount("http://", adapter)
    url = sb.base_url + "/status"
    with session:
        for _ in range(2):
            sb.inject("status", code=503, retry_after=7, times=None)
            assert session.get(url, headers={"X-API-Key": sb.api_key},
                               timeout=5).status_code == 503
            sb.clear_faults()
    # Per request: a 7 s wait, then 3 s left, then the budget is spent.
    assert waits.waits == [7.0, 3.0, 7.0, 3.0]
    assert adapter.max_retries is policy and policy.deadline is None


def test_bad_retry_after_falls_back_to_backoff(waits: FakeTime) -> None:
    answered = threading.Event()

    def serve(sock: socket.socket) -> None:
        for _ in range(2):
            conn, _ = sock.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 503 Busy\r\nRetry-After: soon-ish\r\n"
                             b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        answered.set()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        thread = threading.Thread(target=serve, args=(sock,), daemon=True)
        thread.start()
        policy = _retry.make_retry(1, methods=("GET",), backoff_factor=0.5)
        session = requests.Session()
        session.mount("http://", requests.adapters.HTTPAdapter(max_retries=policy))
        with session:
            got = session.get(f"http://127.0.0.1:{sock.getsockname()[1]}/", timeout=5)
        assert got.status_code == 503
        assert answered.wait(10)
        thread.join(5)
    assert waits.waits == []  # the first retry's backoff is zero; nothing waited a day


def test_setting_default_is_the_policy_default() -> None:
    from topaz_nb.settings import Topaz

    assert Topaz().max_retry_after == _retry.DEFAULT_MAX_RETRY_AFTER
