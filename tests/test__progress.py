"""The one progress helper: throttle, views, and where it draws nothing."""

from __future__ import annotations

import io
import threading
from typing import Any

import ipywidgets as w
import pytest

from topaz_nb import _progress
from topaz_nb._progress import Progress, TextLine, WidgetBars, amount


class _Record:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int | None, str]] = []
        self.closed = False

    def update(self, name: str, done: int, total: int | None, note: str) -> None:
        self.calls.append((name, done, total, note))

    def close(self) -> None:
        self.closed = True


def test_throttle_lets_first_and_final_through_per_part() -> None:
    now = [0.0]
    view = _Record()
    progress = Progress(view, interval=0.1, clock=lambda: now[0])
    for done in range(1, 101):
        progress("input", done, 100)
    assert [c[1] for c in view.calls] == [1, 100]
    progress("output", 5, None)  # another part has its own clock
    now[0] += 0.1
    progress("output", 6, None)
    progress("output", 7, None)
    assert [c[1] for c in view.calls if c[0] == "output"] == [5, 6]


def test_no_view_draws_nothing_and_close_is_idempotent() -> None:
    progress = Progress(None)
    assert not progress.shown
    progress("input", 1, 2)
    view = _Record()
    with Progress(view) as shown:
        shown.side("input")(3, 3)
    assert view.closed and view.calls == [("input", 3, 3, "")]
    shown.close()


def test_calls_from_many_threads_reach_the_view_one_at_a_time() -> None:
    inside = threading.Lock()

    class Strict(_Record):
        def update(self, *args: Any) -> None:
            assert inside.acquire(blocking=False), "two updates at once"
            try:
                super().update(*args)
            finally:
                inside.release()

    view = Strict()
    progress = Progress(view, interval=0.0)
    barrier = threading.Barrier(4)

    def work(name: str) -> None:
        barrier.wait()
        for done in range(200):
            progress(name, done, None)

    threads = [threading.Thread(target=work, args=(f"p{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(view.calls) == 800


def test_amounts_use_decimal_byte_sizes() -> None:
    assert amount(1_500_000, 3_000_000, "bytes") == "1.5 MB of 3.0 MB"
    assert amount(950, None, "bytes") == "950 B"
    assert amount(3, 10, "count") == "3/10"
    assert amount(42, 100, "percent") == "42%"


def test_widget_bars_into_given_bars_int_and_float() -> None:
    bars = {"input": w.IntProgress(max=100), "output": w.FloatProgress(max=1.0)}
    notes = {"input": w.Label(), "output": w.Label()}
    view = WidgetBars(bars, bars=bars, notes=notes)
    view.update("input", 250, 1000, "")
    view.update("output", 1, 4, "")
    assert bars["input"].value == 25 and bars["output"].value == pytest.approx(0.25)
    assert notes["input"].value == "250 B of 1.0 kB"
    view.close()  # not ours: left in place, still usable
    view.update("input", 1000, 1000, "")
    assert bars["input"].value == 100


def test_terminal_line_only_on_a_tty() -> None:
    pipe = io.StringIO()
    assert not _progress.in_terminal(["input"], pipe).shown

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    with _progress.in_terminal(["input", "output"], tty) as progress:
        progress("input", 1_000_000, 2_000_000)
        progress("output", 10, None)
    text = tty.getvalue()
    assert "\rinput 1.0 MB of 2.0 MB" in text and "output 10 B" in text and text.endswith("\n")


def test_text_line_writes_nothing_when_never_updated() -> None:
    stream = io.StringIO()
    TextLine(["input"], stream).close()
    assert stream.getvalue() == ""


def test_notebook_bars_only_with_a_kernel() -> None:
    # A terminal IPython (or plain Python) has no kernel to draw widgets for.
    assert not _progress.in_notebook(["input"], label="Downloading").shown
