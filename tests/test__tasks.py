"""Worker pools that Ctrl-C can leave at once, and the cancel events they share."""

from __future__ import annotations

import threading

import pytest

from topaz_nb._tasks import cancellable, child_event, workers
from topaz_nb.errors import Cancelled


def test_leaving_the_block_by_an_error_sets_cancel_and_does_not_wait():
    cancel = threading.Event()
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def blocker() -> None:
        started.set()
        release.wait(30)
        finished.set()

    with pytest.raises(KeyboardInterrupt), workers(2, "test-pool", cancel) as pool:
        pool.submit(blocker)
        started.wait(30)
        raise KeyboardInterrupt
    # The block was left while its task still ran: nothing waited for it.
    assert cancel.is_set() and not finished.is_set()
    release.set()
    assert finished.wait(30)


def test_a_normal_exit_waits_for_the_tasks_and_cancels_nothing():
    cancel = threading.Event()
    done = []
    with workers(2, "test-pool", cancel) as pool:
        for i in range(4):
            pool.submit(done.append, i)
    assert sorted(done) == [0, 1, 2, 3] and not cancel.is_set()


def test_tasks_not_started_are_dropped_on_an_error():
    cancel = threading.Event()
    gate, ran = threading.Event(), []
    with pytest.raises(RuntimeError), workers(1, "test-pool", cancel) as pool:
        pool.submit(gate.wait, 30)
        later = pool.submit(ran.append, "late")
        raise RuntimeError("one side failed")
    gate.set()
    assert later.cancelled() and ran == []


def test_child_event_follows_its_parent_but_not_the_other_way():
    parent = threading.Event()
    one, two = child_event(parent), child_event(parent)
    one.set()
    assert one.is_set() and not parent.is_set() and not two.is_set()
    assert not two.wait(0.01)
    waiter_saw = []
    waiting = threading.Thread(target=lambda: waiter_saw.append(two.wait(30)))
    waiting.start()
    parent.set()
    waiting.join(30)
    assert waiter_saw == [True] and two.is_set()
    assert type(child_event(None)) is threading.Event


def test_cancellable_returns_at_once_and_closes_the_late_answer():
    cancel, release, closed = threading.Event(), threading.Event(), threading.Event()

    class Answer:
        def close(self) -> None:
            closed.set()

    def slow() -> Answer:
        cancel.set()  # cancelled while the request is still under way
        release.wait(30)
        return Answer()

    with pytest.raises(Cancelled, match="stopped"):
        cancellable(slow, cancel, "Cancelled: stopped")
    release.set()
    assert closed.wait(30)  # the answer that came too late is not leaked


def test_cancellable_passes_results_and_errors_through():
    cancel = threading.Event()
    assert cancellable(lambda: 42, cancel, "x") == 42
    assert cancellable(lambda: 7, None, "x") == 7
    with pytest.raises(ZeroDivisionError):
        cancellable(lambda: 1 / 0, cancel, "x")
    cancel.set()
    with pytest.raises(Cancelled):
        cancellable(lambda: 1, cancel, "Cancelled: before it started")
