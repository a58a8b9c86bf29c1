"""The in-memory cache of decoded images (``topaz_nb.imaging.decoded``): bounded in
bytes, one decode shared by threads that ask at once.

Threads are ordered with events and semaphores, never with sleeps.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest
from PIL import Image

from topaz_nb.imaging import decoded as _decoded
from topaz_nb.imaging.decoded import DecodedCache, default_budget, image_nbytes


def _rgb(side: int) -> Image.Image:
    return Image.new("RGB", (side, side))  # side² × 4 bytes in Pillow's memory


@pytest.fixture
def waiting(monkeypatch: pytest.MonkeyPatch) -> threading.Semaphore:
    """Released once by every thread that starts waiting for another's load."""
    entered = threading.Semaphore(0)

    class Observed(Future):  # type: ignore[type-arg]
        def result(self, timeout: float | None = None) -> object:
            entered.release()
            return super().result(timeout)

    monkeypatch.setattr(_decoded, "Future", Observed)
    return entered



def test_image_nbytes_counts_pillow_storage() -> None:
    assert image_nbytes(Image.new("RGB", (10, 10))) == 400
    assert image_nbytes(Image.new("L", (10, 10))) == 100
    assert image_nbytes(Image.new("I;16", (10, 10))) == 200


def test_evicts_least_recently_used_by_bytes() -> None:
    cache = DecodedCache(max_bytes=3 * 400)
    for key in "abc":
        cache.get_or_load(key, lambda: _rgb(10))
    assert len(cache) == 3 and cache.nbytes == 1200
    cache.get_or_load("a", lambda: pytest.fail("a is cached"))  # a is now most recent
    cache.get_or_load("d", lambda: _rgb(10))
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in "abcd" if k in cache}
    assert cache.nbytes == 1200
    cache.get_or_load("big", lambda: _rgb(20))  # 1600 bytes: evicts all the rest
    assert len(cache) == 1 and "big" in cache and cache.nbytes == 1600


def test_single_decode_when_threads_ask_at_once(waiting: threading.Semaphore) -> None:
    cache = DecodedCache()
    calls: list[int] = []
    loading, release = threading.Event(), threading.Event()

    def loader() -> Image.Image:
        calls.append(1)
        loading.set()
        assert release.wait(10)
        return _rgb(4)

    results: list[Image.Image] = []
    owner = threading.Thread(target=lambda: results.append(cache.get_or_load("k", loader)))
    owner.start()
    assert loading.wait(10)
    others = [threading.Thread(target=lambda: results.append(cache.get_or_load("k", loader)))
              for _ in range(5)]
    for t in others:
        t.start()
    for _ in others:  # every other thread is now waiting on the owner's load
        assert waiting.acquire(timeout=10)
    release.set()
    for t in [owner, *others]:
        t.join(10)
    assert len(calls) == 1
    assert len(results) == 6 and all(r is results[0] for r in results)


def test_failed_load_reaches_waiters_and_is_not_cached(waiting: threading.Semaphore) -> None:
    cache = DecodedCache()
    loading, gate = threading.Event(), threading.Event()

    def failing() -> Image.Image:
        loading.set()
        assert gate.wait(10)
        raise OSError("broken")

    errors: list[BaseException] = []

    def run(loader: object) -> None:
        try:
            cache.get_or_load("k", loader)  # type: ignore[arg-type]
        except OSError as exc:
            errors.append(exc)

    owner = threading.Thread(target=run, args=(failing,))
    owner.start()
    assert loading.wait(10)
    other = threading.Thread(target=run, args=(lambda: pytest.fail("second loader ran"),))
    other.start()
    assert waiting.acquire(timeout=10)  # the second thread waits on the first's load
    gate.set()
    owner.join(10)
    other.join(10)
    assert [str(e) for e in errors] == ["broken", "broken"]
    assert len(cache) == 0
    assert cache.get_or_load("k", lambda: _rgb(2)).size == (2, 2)


def test_get_discard_clear() -> None:
    cache = DecodedCache(max_bytes=10_000)
    img = cache.get_or_load(("x", 1), lambda: _rgb(5))
    assert cache.get(("x", 1)) is img and cache.get("nope") is None
    cache.discard(("x", 1))
    assert len(cache) == 0 and cache.nbytes == 0
    cache.get_or_load("y", lambda: _rgb(5))
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_default_budget_is_bounded() -> None:
    assert 256 << 20 <= default_budget() <= 2 << 30


# ---- PreviewStore ------------------------------------------------------------
