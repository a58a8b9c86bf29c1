"""Progress of downloads and waits, throttled, shown where the user is looking.

One :class:`Progress` tracks a few named parts (``input``/``output``, or
``processes``) and forwards updates to a *view*: ipywidgets bars in a
notebook, one rewritten line on a terminal, the panel's own bars, or nothing.
Callers report every chunk from worker threads; the throttle here keeps a
fast local download from flooding the front end (every comm message is a
round trip to the browser) or the terminal, while the first and the final
update of each part always get through.

tqdm was considered: it is not a dependency today, and the panel needs bars
placed inside its own layout, which tqdm's notebook bars are not made for.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, Any, Protocol

from ._text import Place, byte_size

if TYPE_CHECKING:
    from typing_extensions import Self

    from .api.client import TopazClient

INTERVAL = 0.1
"""Seconds between two updates of one part (the final one always passes)."""


class View(Protocol):
    """Where progress is drawn; called with the lock of its :class:`Progress` held."""

    def update(self, name: str, done: int, total: int | None, note: str) -> None: ...

    def close(self) -> None: ...


class Progress:
    """Throttled progress of named parts; call it as ``progress(name, done, total)``.

    ``clock`` is injectable so the throttle can be tested without sleeping.
    """

    def __init__(self, view: View | None, *, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._view = view
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    @property
    def shown(self) -> bool:
        """False when there is nowhere to draw (a script, a pipe)."""
        return self._view is not None

    def __call__(self, name: str, done: int, total: int | None = None, note: str = "") -> None:
        if self._view is None:
            return
        final = total is not None and done >= total
        with self._lock:
            now = self._clock()
            last = self._last.get(name)
            if not final and last is not None and now - last < self._interval:
                return
            self._last[name] = now
            self._view.update(name, done, total, note)

    def side(self, name: str) -> Callable[[int, int | None], None]:
        """``progress.side("input")``: a two-argument callback for one part."""
        return lambda done, total: self(name, done, total)

    def close(self) -> None:
        with self._lock:
            if self._view is not None:
                self._view.close()
                self._view = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def amount(done: int, total: int | None, unit: str) -> str:
    """``1.2 MB of 3.4 MB``, ``3/10`` or ``42%``: the text beside a bar."""
    if unit == "percent":
        return f"{done}%"
    if unit == "bytes":
        return f"{byte_size(done)} of {byte_size(total)}" if total else byte_size(done)
    return f"{done}/{total}" if total else str(done)


class WidgetBars:
    """ipywidgets bars, one per part, with a note beside each.

    ``unit`` says how the note reads: ``"bytes"`` (byte sizes), ``"count"``
    (``n/total``) or ``"percent"``.

    Given existing ``bars`` and ``notes`` (the panel's), it draws into them and
    leaves them in place on close; otherwise it makes and displays its own and
    removes them on close, so a finished cell keeps no empty bars.
    """

    def __init__(self, names: Iterable[str], *, label: str = "", unit: str = "bytes",
                 bars: dict[str, Any] | None = None, notes: dict[str, Any] | None = None) -> None:
        import ipywidgets as w

        self._unit = unit
        self._owned = bars is None
        if bars is None:
            bars = {name: w.FloatProgress(value=0.0, min=0.0, max=1.0,
                                          description=f"{label} {name}".strip(),
                                          style={"description_width": "initial"})
                    for name in names}
            notes = {name: w.Label() for name in bars}
            self._box: Any = w.VBox([w.HBox([bars[n], notes[n]]) for n in bars])
            from IPython.display import display

            display(self._box)
        self._bars = bars
        self._notes = notes or {}

    def update(self, name: str, done: int, total: int | None, note: str) -> None:
        bar = self._bars.get(name)
        if bar is None:
            return
        top = bar.max - bar.min
        if total:
            value = bar.min + top * min(1.0, done / total)
            bar.value = int(value) if isinstance(bar.value, int) else value
        else:
            bar.bar_style = "info"
        label = self._notes.get(name)
        if label is not None:
            text = amount(done, total, self._unit)
            label.value = f"{text} ({note})" if note else text

    def close(self) -> None:
        if self._owned:
            for child in self._box.children:
                for widget in child.children:
                    widget.close()
                child.close()
            self._box.close()


class TextLine:
    """All parts on one line of ``stream``, rewritten in place (terminals only)."""

    def __init__(self, names: Iterable[str], stream: IO[str], *, unit: str = "bytes") -> None:
        self._order = list(names)
        self._stream = stream
        self._unit = unit
        self._state: dict[str, str] = {}
        self._drawn = False

    def update(self, name: str, done: int, total: int | None, note: str) -> None:
        text = amount(done, total, self._unit)
        self._state[name] = f"{text} {note}".strip()
        line = "  ".join(f"{n} {self._state[n]}" for n in self._order if n in self._state)
        print(f"\r{line:<72}", end="", file=self._stream, flush=True)
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            print(file=self._stream, flush=True)


def in_notebook(names: Iterable[str], *, label: str, unit: str = "bytes") -> Progress:
    """Bars in a notebook (a kernel with a front end); nothing in a terminal IPython."""
    try:
        from IPython import get_ipython

        if getattr(get_ipython(), "kernel", None) is None:
            return Progress(None)  # a terminal cannot draw widgets: no bars rather than reprs
        return Progress(WidgetBars(names, label=label, unit=unit))
    except ImportError:  # no IPython or ipywidgets: progress is optional
        return Progress(None)


def in_terminal(names: Iterable[str], stream: IO[str] | None = None, *,
                unit: str = "bytes") -> Progress:
    """One rewritten line on a terminal; nothing when ``stream`` is a pipe or a file."""
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    if not (callable(isatty) and isatty()):
        return Progress(None)
    return Progress(TextLine(names, stream, unit=unit))


def wait_for(client: TopazClient, process_id: str, *, timeout: float | None,
             progress: Progress, place: Place) -> None:
    """Wait until the process is done, its percentage on ``progress``.

    A process that ends Failed or Cancelled becomes a :class:`TopazError` in
    the words of ``place``, with the server's reason when it gave one.
    """
    from ._text import say
    from .errors import ProcessFailed, TopazError

    try:
        client.wait(process_id, timeout=timeout, on_progress=lambda st: progress(
            "processing", int(st.progress or 0), 100, note=st.status))
    except ProcessFailed as exc:
        raise TopazError(say(exc, place)) from None
