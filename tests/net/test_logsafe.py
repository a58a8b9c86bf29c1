"""No presigned signature in any log record, on any logger, at DEBUG."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from topaz_nb.api.client import TopazClient
from topaz_nb.net import retry as _retry
from topaz_nb.net.logsafe import LOGGERS, ScrubUrls, install_log_filter
from topaz_nb.sandbox import Sandbox
from topaz_nb.storage import Transfer

REPO = Path(__file__).resolve().parents[2]


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def root_records() -> Iterator[list[logging.LogRecord]]:
    """Every record that reaches the root logger, at DEBUG, from every logger."""
    root = logging.getLogger()
    handler = _Everything()
    old_level = root.level
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_retried_download_logs_no_signature(root_records: list[logging.LogRecord],
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_retry, "_sleep", lambda seconds: None)
    with Sandbox(demo=False) as sb:
        pid = sb.add_job(Image.new("RGB", (8, 6), "red"), Image.new("RGB", (16, 12), "blue"))
        client = TopazClient(sb.api_key, sb.base_url, backoff_factor=0.0)
        sb.inject("status", server="storage", code=503, times=1, path="output")
        sb.inject("status", code=503, times=1)  # and one retry on the API too
        with Transfer(tmp_path) as transfer:
            got = transfer.download(client.link_source(pid, "output"), pid, "output")
        assert got.path.is_file()
        assert len([r for r in sb.requests if r.server == "storage"]) == 3  # HEAD ×2, GET
    messages = [r.getMessage() for r in root_records]
    retried = [m for r, m in zip(root_records, messages) if r.name == "urllib3.util.retry"]
    assert any("Incremented Retry" in m for m in retried)  # the retry was logged...
    assert any(r.name == "urllib3.connectionpool" for r in root_records)
    for message in messages:  # ...and no line quotes a signature
        assert "X-Amz-Signature" not in message, message
        assert sb.api_key not in message, message


def test_filter_scrubs_and_keeps_records() -> None:
    record = logging.LogRecord("urllib3.util.retry", logging.DEBUG, __file__, 1,
                               "Incremented Retry for (url='%s'): %r",
                               ("/o.png?X-Amz-Signature=abc&X-Amz-Expires=3600", "R()"), None)
    assert ScrubUrls().filter(record) is True
    assert record.getMessage() == "Incremented Retry for (url='/o.png?…'): 'R()'"
    plain = logging.LogRecord("urllib3", logging.DEBUG, __file__, 1, "%s", ("no url",), None)
    assert ScrubUrls().filter(plain) and plain.args == ("no url",)


def test_install_is_idempotent_and_covers_the_urllib3_loggers() -> None:
    install_log_filter()
    install_log_filter()
    for name in ("urllib3", "urllib3.connectionpool", "urllib3.util.retry"):
        found = [f for f in logging.getLogger(name).filters if isinstance(f, ScrubUrls)]
        assert len(found) == 1, name


def test_importing_changes_no_logger() -> None:
    code = ("import logging, topaz_nb, topaz_nb.api.client, topaz_nb.storage.transfer, topaz_nb.net.logsafe\n"
            "names = ['urllib3', 'urllib3.connectionpool', 'urllib3.util.retry']\n"
            "print(sum(len(logging.getLogger(n).filters) for n in names))\n"
            "topaz_nb.api.client.TopazClient('k', 'http://127.0.0.1:9/image/v1')\n"
            "print(sum(len(logging.getLogger(n).filters) for n in names))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120, check=True).stdout.split()
    assert out == ["0", "3"]  # nothing at import; one filter each on first use
