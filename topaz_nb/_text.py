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
import errno
import html
import re
from collections.abc import Iterable, Sequence
from typing import Literal

from .errors import (
    ApiError,
    AuthenticationError,
    MissingApiKey,
    NotFound,
    NotReady,
    NotSaved,
    ProcessFailed,
    TopazError,
    TransferError,
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


def psnr_text(value: float | None) -> str:
    """PSNR in dB, one decimal; identical images have no finite PSNR; ``—``
    when it was not computed."""
    if value is None:
        return "—"
    return "identical" if value == float("inf") or value > 99 else f"{value:.1f} dB"


def ssim_text(value: float | None) -> str:
    """SSIM (0–1) with three decimals; ``—`` when it was not computed."""
    return "—" if value is None else f"{value:.3f}"


def fidelity_no_overlap(input_size: tuple[int, int], output_size: tuple[int, int],
                        crop_to_fill: bool | None) -> str:
    """Why an output's fidelity has no scores: it covers no whole input pixel."""
    (iw, ih), (ow, oh) = input_size, output_size
    how = "cropped to fill" if crop_to_fill else "fitted"
    return (f"not computed: the {ow}×{oh} output ({how}) covers no whole pixel of "
            f"the {iw}×{ih} input")


def fidelity_failed(exc: TopazError) -> str:
    """Why an output's fidelity has no scores: an image could not be read for it."""
    return f"not computed: {say(exc, 'python')}"


_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"<>()]+", re.IGNORECASE)
_URL_PARTS = re.compile(r"([a-z][a-z0-9+.-]*://[^/?#]*)([^?#]*)(.*)", re.IGNORECASE | re.DOTALL)
_CLAUSE_END = re.compile(r"[.;:] ")


def one_line(text: str, limit: int = 300) -> str:
    """Whitespace folded to single spaces, in at most ``limit`` characters.

    A message says what went wrong and ends with what to do next, so a long
    one gives up the middle, never its end: first the URLs in it shrink to
    their host and last part (:func:`short_url`), then the words before its
    last clause are cut, with ``…``.  Only a last clause too long to keep is
    itself cut at a word.
    """
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    for match in sorted(_URL.finditer(text), key=lambda m: len(m.group(0)), reverse=True):
        url = match.group(0).rstrip(".,;:")
        shorter = short_url(url, len(url) - (len(text) - limit))
        text = text.replace(url, shorter, 1)
        if len(text) <= limit:
            return text
    ends = [m.end() for m in _CLAUSE_END.finditer(text)]
    advice = text[ends[-1]:] if ends else ""
    if advice and len(advice) <= limit * 2 // 3:
        head = _cut_at_word(text[:ends[-1]], limit - len(advice) - 2)
        return f"{head}… {advice}"
    return _cut_at_word(text, limit - 1) + "…"


def _cut_at_word(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text.rstrip()
    cut = text[:limit]
    return (cut.rpartition(" ")[0] or cut).rstrip(" ,;:")


def short_url(url: str, room: int = 80) -> str:
    """``url`` in at most ``room`` characters where it can be: the scheme and
    host always, then the last part of the path, the middle given as ``…``
    (``https://bucket.s3.amazonaws.com/…/output.png?…``); at the least the
    host and ``/…``, however little room there is."""
    if len(url) <= room:
        return url
    match = _URL_PARTS.match(url)
    if match is None:
        return url
    origin, path, rest = match.groups()
    tail = "?…" if rest else ""
    last = path.rstrip("/").rpartition("/")[2]
    shortest = f"{origin}/…{tail}"
    if len(shortest) >= len(url):
        return url
    candidate = f"{origin}/…/{last}{tail}"
    return candidate if len(candidate) <= room and len(candidate) < len(url) else shortest


_OWN_STOPS = ("!", "?", "…", "...")
_WEAK_MARKS = ".,;:"


def joined(*parts: str | None, sep: str = ". ", end: str = ".") -> str:
    """Sentences (or clauses) in one line, every boundary marked exactly once.

    ``sep`` goes between parts (``". "`` between sentences; ``"; "`` between
    the clauses of a command-line message) and ``end`` after the last.  Parts
    often end with a mark of their own (a server's reason is a sentence with
    its full stop), and a second mark must not follow it: a trailing ``.``,
    ``,``, ``;`` or ``:`` gives way to the separator's, while ``!``, ``?`` and
    ``…`` are kept and only the space follows.  Empty parts are left out and
    whitespace is folded, so the result is one line.
    """
    texts = [t for t in (" ".join(str(p).split()) for p in parts if p) if t]
    out = []
    for i, text in enumerate(texts):
        mark = sep if i < len(texts) - 1 else end
        stop = mark.rstrip()
        space = mark[len(stop):]
        if stop and text.endswith(_OWN_STOPS):
            out.append(text + space)
            continue
        if stop and text[-1] in _WEAK_MARKS:
            text = text[:-1].rstrip()
        out.append(text + stop + space)
    return "".join(out)


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
    """The process ended without an output: say so, with the server's reason.

    The reason is the server's own sentence and often ends with a full stop;
    :func:`joined` sees to it that the next sentence does not add another.
    """
    verb = "was cancelled" if status == "Cancelled" else "failed"
    because = f": {one_line(reason, 200)}" if reason else ""
    if place == "cli":
        return joined(f"process {process_id} {verb}{because}",
                      "it has no output, start it again with other settings or another input",
                      sep="; ", end="")
    return joined(f"Process {process_id} {verb}{because}",
                  "It has no output: start it again with other settings or another input")


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


_ELSEWHERE = {"python": "save into another directory{}",
              "magic": "give --save another directory{}",
              "cli": "give -o another directory{}",
              "panel": "type another directory{} in Save to"}
_AGAIN = {"python": "", "magic": ", then run the cell again",
          "cli": ", then run the command again", "panel": ", then press Save images again"}


def could_not_save(what: str, where: str | None, error: BaseException, place: Place) -> str:
    """One file was not saved (the others were): why, and what to do about it here.

    ``what`` names the file in words ("the output"), ``where`` is the path it
    was to take; ``error`` is the ``OSError`` of the copy, or the
    :class:`TopazError` that kept the file from being had at all.
    """
    if isinstance(error, TopazError):
        text = f"could not save {what}: {say(error, place)}"
        return text if place == "cli" else text[0].upper() + text[1:]
    code = getattr(error, "errno", None)
    elsewhere = _ELSEWHERE[place].format("")
    if isinstance(error, (IsADirectoryError, NotADirectoryError, FileExistsError)) \
            or code == errno.ENOTEMPTY:
        why, cure = ("a directory is in the way" if isinstance(error, IsADirectoryError)
                     or code == errno.ENOTEMPTY else "something is in the way",
                     f"move it aside or {elsewhere}")
    elif isinstance(error, PermissionError) or code == errno.EROFS:
        why, cure = "not allowed to write there", _ELSEWHERE[place].format(" you can write to")
    elif code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        why, cure = "the disk is full", f"free some space or {elsewhere}"
    else:
        why = getattr(error, "strerror", None) or type(error).__name__
        cure = f"check the directory and its free space, or {elsewhere}"
    as_ = f" as {where!r}" if where else ""
    if place == "cli":
        return f"could not save {what}{as_} ({why}); {cure}{_AGAIN[place]}"
    return f"Could not save {what}{as_} ({why}): {cure}{_AGAIN[place]}."


def not_saved(failures: Sequence[tuple[str, str | None, BaseException]], place: Place, *,
              saved: int) -> str:
    """The files that were not saved, one line each; in Python, where the others are."""
    lines = [could_not_save(what, where, error, place) for what, where, error in failures]
    if place == "python" and saved:
        others = f"other {saved} files were" if saved > 1 else "other file was"
        lines.append(f"The {others} saved: the error's .saved lists {'them' if saved > 1 else 'it'}.")
    return "\n".join(lines)


def closed_comparison(process_id: str) -> str:
    """A closed comparison (or one whose view was closed) was asked for its view."""
    return (f"The comparison of {process_id} was closed, and its files may have left the "
            "cache since: fetch it again to view it.")


def cache_over_bound(in_use: int, in_use_bytes: int) -> str:
    """Why the download cache holds more than its bound, and what brings it back."""
    if in_use:
        files = f"{in_use} downloaded file{'s' * (in_use != 1)}"
        return (f"over its bound: {files} in use ({byte_size(in_use_bytes)} with "
                "their previews and tile pyramids) stay while a view shows them or a fetch "
                "needs them; the first fetch after they are closed trims the cache")
    return "over its bound: the next fetch trims it"


def not_a_review_file(path: object, header: Sequence[str]) -> str:
    """A review was pointed at a CSV that is not a review file."""
    return (f"{path} is not a review file (its first line should name the columns "
            f"{','.join(header)}): choose another path")


def review_file_unreadable(path: object, why: object) -> str:
    """A review file exists but cannot be read."""
    if isinstance(why, OSError):
        why = why.strerror or type(why).__name__
    return f"Cannot read the review file {path}: {why}."


def not_recorded(what: str, path: object, exc: OSError) -> str:
    """A decision or a note could not be written: nothing was recorded."""
    return f"The {what} was not recorded: {cannot_save(path, exc)}"


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


def stopped_waiting(process_id: str, place: Place) -> str:
    """Cancel (or Ctrl-C) while waiting for a process to finish: nothing was
    downloading yet, so there is nothing to resume; say how to wait again."""
    if place == "cli":
        return (f"stopped waiting for {process_id}, nothing was downloaded; run the command "
                "again to wait again")
    if place == "panel":
        return (f"Stopped waiting for {process_id}: nothing was downloaded. Fetch again to "
                "wait again, or untick “wait until ready” to see its input now.")
    if place == "magic":
        return (f"Stopped waiting for {process_id}: nothing was downloaded. Run the cell again "
                "to wait again, or drop --wait to see its input now.")
    return (f"Stopped waiting for {process_id}: nothing was downloaded; "
            f"TopazClient.wait({process_id!r}) waits again.")


def no_output_yet(failed: bool) -> str:
    """The note beside an output that was not downloaded: it will come, or it never will."""
    return "nothing to download" if failed else "not downloaded yet"


ListingCut = Literal["cursor", "no_cursor", "pages", "time"]
"""Why paging through the API's list of processes stopped before its last page."""


def listing_cut(why: ListingCut, pages: int, seconds: float, place: Place) -> str:
    """The API's list of processes was not read to its end: why, and what to do.

    A cursor handed back twice (or none, while more pages were announced)
    would repeat pages or lead nowhere; the page and time bounds stop a server
    that announces more pages for ever.
    """
    read = f"{pages} page{'s' * (pages != 1)}"
    if why == "cursor":
        what = (f"The list of processes stopped after {read}: the API sent a page cursor it "
                "had sent before, so processes may be missing from it")
    elif why == "no_cursor":
        what = (f"The list of processes stopped after {read}: the API said more pages follow "
                "but sent no cursor for them, so processes may be missing from it")
    else:
        bound = (f"{read}, the most one listing reads" if why == "pages" else
                 f"{duration(seconds)} ({read}), the longest one listing takes")
        what = f"The list of processes was cut after {bound}: the API kept announcing more"
    narrow = {"python": "narrow it with since= or limit=",
              "magic": "narrow it with --since or --limit",
              "cli": "narrow it with --since or --limit",
              "panel": ""}[place] if why in ("pages", "time") else ""
    if place == "cli":
        return joined(what[0].lower() + what[1:], narrow, sep="; ", end="")
    return joined(what, narrow, sep="; ")


def listing_skipped(count: int, place: Place) -> str:
    """Entries of the API's list that are not a process were left out, the rest listed."""
    what = ("1 entry in the API's list was left out: it has no process ID that is a UUID"
            if count == 1 else
            f"{count} entries in the API's list were left out: they have no process ID "
            "that is a UUID")
    return what if place == "cli" else what + "."


def not_found(process_id: str, place: Place) -> str:
    """Unknown process, or past the 7-day retention."""
    head = (f"Process {process_id} was not found: the ID is unknown to this API key, "
            "or the process is older than the 7-day retention")
    if place == "cli":
        return head[0].lower() + head[1:] + "; check the ID"
    if place == "python":
        return f"{head}; TopazClient.statuses() lists the current ones."
    return f"{head}; check the ID."


_REFUSALS: dict[str, tuple[str, str]] = {
    # reason: (what storage did, what to do next); {what}, {said} and {check} filled in.
    "expired": (
        "storage refused the link to {what} as expired ({said}), a fresh one too",
        ("run it again in a minute; if it fails again, the links reach storage already "
         "expired: report it to Topaz")),
    "signature": (
        "storage rejected the link to {what} ({said}), a fresh one too",
        ("the URL was changed on its way (re-encoded, or by a proxy): run it again with no "
         "proxy in between, and report it if it persists")),
    "denied": (
        "storage denied access to {what} ({said}), a fresh link too",
        "S3 says so of deleted images too (kept 7 days): check the process exists: {check}"),
    "gone": (
        "{what} is gone from storage ({said})",
        "images are kept 7 days; check whether the process still exists: {check}"),
    "unexplained": (
        "storage refused the link to {what} ({said}), a fresh one too",
        "run it again in a minute; if it persists, check the process exists: {check}"),
    "other": (
        "storage refused the link to {what} ({said}), a fresh one too",
        "run it again in a minute, and report it to Topaz if it persists"),
}


def storage_refused(exc: TransferError, place: Place, limit: int = 300) -> str:
    """Storage refused a link: what it said (its XML error ``Code``) and the
    next step for that reason, in the words of ``place``.

    The message fits in ``limit`` characters by shortening its URL
    (:func:`short_url`), never its advice.
    """
    head, advice = _REFUSALS.get(exc.reason or "", _REFUSALS["other"])
    pid = exc.process_id
    what = f"the {exc.side or 'image'} of {pid}" if pid else "the image"
    check = {"python": f"TopazClient.status({pid!r})", "magic": f"%topaz {pid} --links",
             "cli": f"topaz-nb links {pid}", "panel": "the Recent list"}[place] if pid \
        else "the Topaz web app"
    said = f"HTTP {exc.status_code}" if exc.status_code else "refused"
    if exc.reason == "unexplained":
        said += ", no reason given"
    if exc.storage_code:
        said += f" {exc.storage_code}"
        if exc.storage_message and (exc.reason == "other" or (
                exc.reason == "expired" and exc.storage_code == "AccessDenied")):
            said += f": {one_line(exc.storage_message, 80).rstrip('.')}"

    def build(url: str) -> str:
        shown = f"{said}, {url}" if url else said
        first = head.format(what=what, said=shown)
        nxt = advice.format(check=check)
        if place == "cli":
            return f"{first}; {nxt}"
        return f"{first[0].upper()}{first[1:]}. {nxt[0].upper()}{nxt[1:]}."

    url = exc.url or ""
    text = build(url)
    if len(text) <= limit or not url:
        return text
    # The URL gives way, down to its host, then to nothing: the object is named anyway.
    shorter = short_url(url, max(0, len(url) - (len(text) - limit)))
    host = _URL_PARTS.match(url)
    for shown in (shorter, host.group(1).partition("://")[2] if host else "", ""):
        text = build(shown)
        if len(text) <= limit:
            break
    return text


def say(exc: TopazError, place: Place) -> str:
    """The one line to show for ``exc`` at ``place`` (a :class:`NotSaved`: one per file).

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
    if isinstance(exc, NotSaved):  # one line per file that was not saved
        return not_saved(exc.failures, place, saved=len(exc.saved))
    if isinstance(exc, TransferError) and exc.reason:
        return storage_refused(exc, place)
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
