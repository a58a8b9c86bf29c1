"""Fixtures shared by every test file: a running sandbox and small images."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from topaz_nb.net import retry as _retry
from topaz_nb.sandbox import Sandbox


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A fresh sandbox (API + storage servers, demo jobs) for one test."""
    with Sandbox() as sb:
        yield sb


@pytest.fixture
def make_image() -> Callable[..., Image.Image]:
    """``make_image((w, h), color="red", mode="RGB")``: a small solid image with a marker.

    A contrasting square in the top-left corner makes orientation and
    alignment mistakes visible in assertions.
    """

    def make(size: tuple[int, int] = (64, 48), color: object = (200, 60, 40),
             mode: str = "RGB") -> Image.Image:
        image = Image.new(mode, size, color)  # type: ignore[arg-type]
        marker = (max(1, size[0] // 8), max(1, size[1] // 8))
        image.paste(Image.new(mode, marker, "white"), (0, 0))
        return image

    return make


class FakeTime:
    """Retry timing for tests: each wait asked for is recorded, and the clock
    moves by exactly that much, so budgets are checked without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    """Every retry wait of the package, recorded instead of slept."""
    fake = FakeTime()
    monkeypatch.setattr(_retry, "_sleep", fake.sleep)
    monkeypatch.setattr(_retry, "_clock", fake.clock)
    return fake


@contextlib.contextmanager
def logged(text: str, logger: str = "topaz_nb.transfer") -> Iterator[threading.Event]:
    """An event set once ``logger`` logs a line containing ``text``: how a test
    knows another thread has reached a wait it announces (a lock held
    elsewhere, an eviction under way) without sleeping on it."""
    seen = threading.Event()

    class _Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                seen.set()

    log = logging.getLogger(logger)
    handler, level = _Seen(), log.level
    log.addHandler(handler)
    if not log.isEnabledFor(logging.DEBUG):
        log.setLevel(logging.DEBUG)
    try:
        yield seen
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def wait_until(predicate: Callable[[], object], what: str, limit: float = 60.0) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` if it never does.

    For waiting on another process or server (a request arriving, a line
    printed).  ``limit`` only bounds a broken run: no assertion is made about
    how long the wait took.
    """
    import time

    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def interrupted_child(sandbox: Sandbox, argv: list[str], tmp_path: Path) -> tuple[int, str, str]:
    """Run ``argv`` against ``sandbox``; Ctrl-C it once it reaches storage.

    The child gets its own cache and IPython directory.  Returns its exit
    code, stdout and stderr; a child still running a minute after the signal
    fails the test (a bound for a broken run, not a timing check).
    """
    import os
    import signal
    import subprocess

    env = dict(os.environ, TOPAZ_API_URL=sandbox.base_url, TOPAZ_API_KEY=sandbox.api_key,
               TOPAZ_NB_CACHE=str(tmp_path / "cache"), IPYTHONDIR=str(tmp_path / "ipython"))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        wait_until(lambda: any(r.server == "storage" for r in sandbox.requests),
                   "the fetch to reach storage")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, out, err
