"""Wording and formatting: the one place that decides how things read.

Numbers (byte sizes, durations, ETAs), the sentences a user meets most (not
ready, failed, no key, not found) and the small HTML tables of the notebook
front ends are written here once.  Errors raised below the entry points carry
*data* (a process ID, a status, an ETA, the server's reason); what the user
should do next depends on where the message appears, so the entry points ask
:func:`say` for the sentence in their own words:

* ``"python"``: a library call (``TopazClient``, ``Comparison.fetch``);
* ``"magic"``: ``%topaz`` in a notebook;
* ``"cli"``: the ``topaz-nb`` command, which never suggests a magic;
* ``"panel"``: the ``TopazPanel`` status line, which has buttons instead.

Byte sizes use decimal units (kB = 1000 B, MB = 10^6 B), as file browsers and
the Topaz web app do, everywhere.
"""

from __future__ import annotations

import datetime as _dt
import html
from collections.abc import Iterable, Sequence
from typing import Literal

from .errors import (
    ApiError,
    AuthenticationError,
    MissingApiKey,
    NotFound,
    NotReady,
    ProcessFailed,
    TopazError,
)

Place = Literal["python", "magic", "cli", "panel"]


# -- numbers -------------------------------------------------------------------

def byte_size(n: float | None) -> str:
    """``950 B``, ``3.0 kB``, ``2.8 MB``, ``1.20 GB``: decimal units, three digits."""
    if n is None:
        return ""
    size = float(n)
    if size < 1000:
        return f"{size:.0f} B"
    for unit in ("kB", "MB", "GB", "TB"):
        size /= 1000
        if size < 1000 or unit == "TB":
            return f"{size:.2f} {unit}" if unit in ("GB", "TB") else f"{size:.1f} {unit}"
    return f"{n} B"  # pragma: no cover -- the loop always returns


def duration(seconds: float) -> str:
    """``12 s``, ``3 min``, ``1.5 h``: how long, as people say it."""
    if seconds < 90:
        return f"{max(0, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def ago(when: _dt.datetime | None, *, now: _dt.datetime | None = None) -> str:
    """``12 s ago``, ``3 min ago``, ``1.5 h ago``; ``""`` when the time is unknown."""
    if when is None:
        return ""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return f"{duration(max(0.0, (now - when).total_seconds()))} ago"


def process_line(filename: str | None, model: str | None, status: str | None,
                 created: _dt.datetime | None) -> str:
    """``astronaut.jpg · Standard V2 · Completed · 3.0 h ago``: one process in a list."""
    return " · ".join(x for x in (filename or "(no file name)", model, status, ago(created)) if x)


def eta(when: _dt.datetime | None, *, now: _dt.datetime | None = None) -> str:
    """``ETA 12 s``, ``ETA passed``, or ``""`` when the server gave none."""
    if when is None:
        return ""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    left = (when - now).total_seconds()
    return f"ETA {duration(left)}" if left > 0 else "ETA passed"


def progress_state(status: str | None, progress: int | None = None,
                   when: _dt.datetime | None = None) -> str:
    """``Processing, 42%, ETA 12 s``: where an unfinished process stands."""
    parts = [status or "not finished"]
    if progress is not None:
        parts.append(f"{progress}%")
    if status not in ("Completed", "Failed", "Cancelled"):
        text = eta(when)
        if text:
            parts.append(text)
    return ", ".join(parts)


def psnr_text(value: float) -> str:
    """PSNR in dB, one decimal; identical images have no finite PSNR."""
    return "identical" if value == float("inf") or value > 99 else f"{value:.1f} dB"


def ssim_text(value: float) -> str:
    """SSIM (0–1) with three decimals."""
    return f"{value:.3f}"


def one_line(text: str, limit: int = 300) -> str:
    """Whitespace folded to single spaces, cut at ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the sentences users meet most --------------------------------------------

def no_key(place: Place) -> str:
    """No API key anywhere: how to give one, in the words of ``place``."""
    if place == "magic":
        return ("No Topaz API key: run %topaz login (it asks for the key and keeps it out of "
                "the notebook), or set TOPAZ_API_KEY before starting Jupyter; without a key, "
                "%topaz demo uses the local sandbox.")
    if place == "cli":
        return ("no Topaz API key: set one with `export TOPAZ_API_KEY=<your key>` "
                "(from your Topaz account), or try the local sandbox with `topaz-nb --demo …`")
    if place == "panel":
        return ("No Topaz API key: set TOPAZ_API_KEY before starting Jupyter, or use the "
                "demo sandbox.")
    return MissingApiKey.HINT


def key_in_notebook(cells: Sequence[int], *, in_source: bool, printed: bool) -> str:
    """The API key was set in a way that a saved notebook keeps: one line, no key.

    ``cells`` are the execution counts (``[3]``) of the cells that gave it
    away: ``in_source`` when the key's text is in a cell, ``printed`` when a
    cell set or showed it with ``%env``, which prints it into the output.
    """
    many = len(cells) > 1
    where = f"cell{'s' * many} " + (", ".join(f"[{n}]" for n in cells) or "?")
    parts = [p for p, yes in (("source", in_source), ("output", printed)) if yes]
    steps = []
    if in_source:
        steps.append(f"remove the key from {'them' if many else 'it'}")
    if printed:
        steps.append("clear the output" if in_source else
                     f"clear {'their' if many else 'its'} output")
    return (f"Your Topaz API key is in the {' and '.join(parts) or 'text'} of {where}, and so "
            f"in the saved notebook: {' and '.join(steps) or 'remove it'}, then use "
            "%topaz login, or set TOPAZ_API_KEY before starting Jupyter.")


def demo_folder_lines(folder: object, *, copied: Sequence[str], kept: Sequence[str],
                      own: bool) -> list[str]:
    """What ``topaz-nb demo`` says about its working folder, for its banner."""
    what = ("your notebook's folder" if own and not copied and not kept
            else "the demo notebooks are copies; what they write stays here")
    lines = [f"  folder:       {folder}  ({what})"]
    if copied:
        lines.append(f"  copied:       {', '.join(copied)}")
    if kept:
        lines.append(f"  kept:         {', '.join(kept)} (your copies, changed since copied; "
                     "delete one to get it fresh)")
    return lines


def not_ready(process_id: str, status: str | None, progress: int | None,
              when: _dt.datetime | None, place: Place) -> str:
    """The output exists but is not finished yet, and how to wait for it here."""
    state = progress_state(status, progress, when)
    head = f"Output of {process_id} is not ready ({state})"
    if place == "magic":
        return f"{head}. Run %topaz {process_id} --wait to wait for it."
    if place == "cli":
        return f"the output of {process_id} is not ready ({state}); add --wait to wait for it"
    if place == "panel":
        return f"{head}. Tick “wait until ready” and fetch again."
    return f"{head}. TopazClient.wait({process_id!r}) waits for it."


def failed(process_id: str, status: str | None, reason: str | None, place: Place) -> str:
    """The process ended without an output: say so, with the server's reason."""
    verb = "was cancelled" if status == "Cancelled" else "failed"
    because = f": {one_line(reason, 200)}" if reason else ""
    if place == "cli":
        return (f"process {process_id} {verb}{because}; it has no output, "
                "start it again with other settings or another input")
    return (f"Process {process_id} {verb}{because}. It has no output: start it again "
            "with other settings or another input.")


    reason = getattr(status, "reason", None)
    if isinstance(reason, str) and reason.strip():
        return reason.strip()
    raw = getattr(status, "raw", None) or {}
    for key in ("message", "error", "reason"):
        value = raw.get(key) if isinstance(raw, dict) else None
        if isinstance(value, dict):
            value = value.get("message")
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def wrong_key(status_code: int | None, server_message: str | None, place: Place) -> str:
    """The API refused the key that was sent."""
    said = " ".join(str(x) for x in (status_code, server_message) if x) or "refused"
    if place == "magic":
        return (f"The Topaz API refused the key ({one_line(said, 120)}): run %topaz login, "
                "or set TOPAZ_API_KEY before starting Jupyter; %topaz demo needs no key.")
    if place == "cli":
        return (f"the Topaz API refused the key ({one_line(said, 120)}); check TOPAZ_API_KEY, "
                "or try the local sandbox with `topaz-nb --demo …`")
    if place == "panel":
        return (f"The Topaz API refused the key ({one_line(said, 120)}): check TOPAZ_API_KEY "
                "(set before starting Jupyter), or use the demo sandbox.")
    return (f"The Topaz API refused the key ({one_line(said, 120)}): pass another api_key=..., "
            "or set TOPAZ_API_KEY.")


def cache_unusable(cache_dir: str, exc: OSError, place: Place) -> str:
    """The download cache cannot be written (read-only, full, or not a directory)."""
    why = exc.strerror or type(exc).__name__
    head = f"the download cache {cache_dir} cannot be written ({why})"
    if place == "magic":
        return (f"{head[0].upper()}{head[1:]}. Point it at a writable directory: "
                "%config Topaz.cache_dir = '<directory>', or set TOPAZ_NB_CACHE.")
    if place == "cli":
        return f"{head}; give a writable one with --cache-dir DIR or TOPAZ_NB_CACHE"
    if place == "panel":
        return (f"{head[0].upper()}{head[1:]}. Set TOPAZ_NB_CACHE, or "
                "%config Topaz.cache_dir, to a writable directory.")
    return f"{head[0].upper()}{head[1:]}. Pass Topaz(cache_dir=...) a writable directory."


def file_problem(exc: OSError, place: Place, *, cache_dir: str | None = None) -> str:
    """One line for a file-system error that reached an entry point."""
    name = str(exc.filename or "")
    if cache_dir and name and _inside(name, cache_dir):
        return cache_unusable(cache_dir, exc, place)
    why = exc.strerror or type(exc).__name__
    text = f"could not use {name or 'a file'} ({why}); check the path and the free disk space"
    return text if place == "cli" else text[0].upper() + text[1:] + "."


def cannot_save(target: object, exc: OSError) -> str:
    """Saving into a directory failed: the same words in every place."""
    why = exc.strerror or type(exc).__name__
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        why = "a file is in the way"
    return (f"Could not save into {str(target)!r} ({why}); "
            "choose a directory you can write to.")




def _inside(path: str, directory: str) -> bool:
    import os

    try:
        common = os.path.commonpath([os.path.abspath(path), os.path.abspath(directory)])
    except ValueError:
        return False
    return common == os.path.abspath(directory)


def address_setting(place: Place) -> str:
    """Where the API address is set, in the words of ``place``."""
    return {"python": "base_url= or TOPAZ_API_URL",
            "magic": "%config Topaz.base_url or TOPAZ_API_URL",
            "cli": "--api-url or TOPAZ_API_URL",
            "panel": "TOPAZ_API_URL"}[place]


def wrong_address(problem: str, place: Place, *, network: bool = False) -> str:
    """``problem`` (the API answered oddly, or not at all) and where to fix the address."""
    if network:
        return (f"{problem}; check the network connection and the address "
                f"({address_setting(place)}), then try again")
    return f"{problem}; check the API address ({address_setting(place)})"


def interrupted(place: Place) -> str:
    """Ctrl-C or the Cancel button stopped a fetch; what arrived is kept for resume."""
    if place == "cli":
        return ("interrupted: run the command again to go on (a download resumes where it "
                "stopped)")
    if place == "panel":
        return "Cancelled: the downloads stopped; fetch again to resume them."
    if place == "magic":
        return ("Interrupted: run the cell again to go on (a download resumes where it "
                "stopped).")
    return "Interrupted: fetch again to go on (a download resumes where it stopped)."


def not_found(process_id: str, place: Place) -> str:
    """Unknown process, or past the 7-day retention."""
    head = (f"Process {process_id} was not found: the ID is unknown to this API key, "
            "or the process is older than the 7-day retention")
    if place == "cli":
        return head[0].lower() + head[1:] + "; check the ID"
    if place == "python":
        return f"{head}; TopazClient.statuses() lists the current ones."
    return f"{head}; check the ID."


def say(exc: TopazError, place: Place) -> str:
    """The one line to show for ``exc`` at ``place``.

    Errors that carry data are phrased here for the place; every other error
    already reads the same everywhere, so its own text is used.
    """
    if isinstance(exc, MissingApiKey) and not exc.detail:
        return no_key(place)
    if isinstance(exc, AuthenticationError) and place != "python":
        return wrong_key(exc.status_code, exc.server_message, place)
    if isinstance(exc, ProcessFailed) and exc.process_id:
        return failed(exc.process_id, exc.status, exc.reason, place)
    if isinstance(exc, NotReady) and exc.process_id:
        if exc.status in ("Failed", "Cancelled"):
            return failed(exc.process_id, exc.status, exc.reason, place)
        return not_ready(exc.process_id, exc.status, exc.progress, exc.eta, place)
    if isinstance(exc, NotFound) and exc.process_id:
        return not_found(exc.process_id, place)
    if exc.address_problem:
        return wrong_address(exc.address_problem, place, network=exc.status_code is None
                             if isinstance(exc, ApiError) else False)
    return one_line(str(exc))


# -- small HTML tables ---------------------------------------------------------

_CELL = 'style="text-align:left;padding:1px 8px;vertical-align:top"'


def html_table(rows: Iterable[Sequence[object]], *, header: Sequence[str] | None = None,
               caption: str | None = None, row_headers: bool = False,
               css_class: str = "topaz-table") -> str:
    """An HTML table with every cell escaped (values come from servers and files).

    ``row_headers`` makes each row's first cell a ``<th>``, as in a
    field/value table.  ``None`` cells are shown empty.
    """
    def cell(value: object, tag: str) -> str:
        text = "" if value is None else str(value)
        return f"<{tag} {_CELL}>{html.escape(text)}</{tag}>"

    parts = [(f'<table class="{html.escape(css_class)}" '
              'style="font-size:12px;border-collapse:collapse">')]
    if caption:
        parts.append('<caption style="text-align:left;font-family:monospace">'
                     f"{html.escape(caption)}</caption>")
    if header is not None:
        parts.append("<tr>" + "".join(cell(h, "th") for h in header) + "</tr>")
    for row in rows:
        cells = [cell(v, "th" if row_headers and i == 0 else "td") for i, v in enumerate(row)]
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    return "".join(parts)
