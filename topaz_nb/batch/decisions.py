"""The review file: decisions and notes in a CSV that no writer can lose.

The CSV is the only copy (no database beside it), because it is what a
person opens in a spreadsheet, edits by hand and mails on; one row per
process under :data:`HEADER`.  Every change is a read-modify-write of the
whole file under an exclusive lock:

* **the lock**: ``fcntl.flock`` on ``.<name>.lock`` beside the file, plus a
  lock per file among this process's threads.  Two reviews in one kernel, two
  kernels, a re-run cell: each waits for the other, and the kernel drops the
  lock of a writer that dies, even by SIGKILL.  (Where ``fcntl`` is missing
  only the threads are kept apart.)
* **inside the lock** the file is read again and only the one row being
  changed is replaced (or appended), so a decision another writer made a
  moment ago is kept; the last writer of a given process wins.
* **whole or not at all**: the new text goes to a temporary file in the same
  directory, fsynced, then ``os.replace``\\ d over the old one; a kill at any
  moment leaves the old file or the new one, never half of either.  A
  temporary file left by a killed writer is removed by the next one.

Every other row is written back byte for byte: rows of other batches, rows
with a decision this version does not know, blank lines, hand-typed notes.
A file saved by a spreadsheet is read and kept in its shape: a UTF-8 BOM,
CRLF or LF line ends, ``;`` or tab separators, headers in another case or
order, extra columns (kept, and left blank in new rows), upper-case process
IDs and ``Accept`` for ``accept``.

**Spreadsheet-safe cells.**  A cell this module writes that starts with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return (which a spreadsheet
would run as a formula: a server-sent file name ``=HYPERLINK(...)``) or with
``'`` is written with a ``'`` in front, as OWASP advises against CSV
injection; reading strips that one quote again, so every value round-trips.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .._text import not_a_review_file, review_file_unreadable
from ..errors import TopazError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process per file is assumed
    fcntl = None  # type: ignore[assignment]

__all__ = ["DECISIONS", "HEADER", "Entry", "ReviewFile", "escape_cell", "unescape_cell"]

_log = logging.getLogger("topaz_nb.review")

DECISIONS: tuple[str, ...] = ("accept", "reject", "flag")
"""The decisions a process can get, as written in the CSV."""

HEADER: tuple[str, ...] = ("process_id", "decision", "note", "model", "filename", "reviewed_at")
"""The review file's columns."""

_OWNED = ("", *DECISIONS)
"""The decisions of a row this review owns: none yet (a note alone), or one it knows."""
_BOM = "\ufeff"
_FORMULA = ("=", "+", "-", "@", "\t", "\r", "'")
_SEPARATORS = (",", ";", "\t")


class Entry(NamedTuple):
    """What the file says of one process: its decision (``""`` for none yet:
    a note may come before the decision) and the rest of its row.  (A named
    tuple: a file of ten thousand rows is read on every write.)"""

    process_id: str
    decision: str = ""
    note: str = ""
    model: str = ""
    filename: str = ""
    reviewed_at: str = ""


def escape_cell(value: str) -> str:
    """``value`` as a spreadsheet shows it as text: a ``'`` before a leading
    ``= + - @``, tab, CR or ``'``; anything else unchanged."""
    return "'" + value if value.startswith(_FORMULA) else value


def unescape_cell(value: str) -> str:
    """The value :func:`escape_cell` was given.  A ``'`` that does not stand
    before one of the escaped characters was typed by a person and stays."""
    if value[:1] == "'" and value[1:2] in _FORMULA:
        return value[1:]
    return value


@dataclass
class _Parsed:
    """A review file as read: its shape, and every record's raw text."""

    bom: bool
    newline: str
    separator: str
    header: str                  # the header record's raw text, line end included
    columns: dict[str, int]      # HEADER name -> its column's index
    width: int                   # how many columns the header has
    records: list[str]           # raw text of every record after the header
    fields: list[list[str]]      # the same records, split into cells
    rows: dict[str, int]         # process ID -> index of its (last) row in records
    entries: dict[str, Entry]

    @classmethod
    def empty(cls) -> _Parsed:
        return cls(bom=False, newline="\r\n", separator=",",
                   header=_line(HEADER, ",", "\r\n"), columns={n: i for i, n in enumerate(HEADER)},
                   width=len(HEADER), records=[], fields=[], rows={}, entries={})

    def text(self) -> str:
        return (_BOM if self.bom else "") + self.header + "".join(self.records)


class ReviewFile:
    """The decisions and notes of reviews, in the CSV at ``path``.

    :meth:`entries` reads (again only when the file changed on disk);
    :meth:`record` changes one process's row under the lock and returns
    what the whole file says afterwards, other writers' rows included.
    Safe to share between threads; any number of these, in any number of
    processes, may point at one file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self._seen: tuple[int, int, int, int] | None = None
        self._parsed: _Parsed | None = None
        self._guard = threading.Lock()

    @property
    def lock_path(self) -> Path:
        """The lock file beside the review file (hidden, left in place: removing
        a lock file others may be waiting on would let two writers in)."""
        return self.path.with_name(f".{self.path.name}.lock")

    def entries(self) -> dict[str, Entry]:
        """Process ID (lower case) → :class:`Entry`, for every process the file
        has a row for; ``{}`` when there is no file yet.

        A :class:`~topaz_nb.errors.TopazError` when the file cannot be read or
        is not a review file.
        """
        with self._guard:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                self._seen, self._parsed = None, None
                return {}
            except OSError as exc:
                raise TopazError(review_file_unreadable(self.path, exc)) from None
            seen = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            # A writer replaces the file (a new inode); a spreadsheet or an
            # editor that rewrites it in place changes its time or size.
            if self._parsed is None or seen != self._seen:
                self._parsed = self._load()
                self._seen = seen
            return dict(self._parsed.entries)

    def record(self, process_id: str, *, decision: str | None = None, note: str | None = None,
               model: str = "", filename: str = "", reviewed_at: str = "") -> dict[str, Entry]:
        """Write one process's row: ``decision`` and ``note`` when given (``None``
        keeps what the file has), ``model`` and ``filename`` when known (empty
        keeps them), ``reviewed_at``.  Returns :meth:`entries` after the write.

        ``OSError`` when the file cannot be written (nothing changed then); a
        :class:`~topaz_nb.errors.TopazError` when it is not a review file.
        """
        pid = process_id.strip().lower()
        if decision is not None and decision not in _OWNED:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
        with self._locked():
            parsed = self._load()
            old = parsed.entries.get(pid, Entry(pid))
            new = old._replace(decision=old.decision if decision is None else decision,
                               note=old.note if note is None else note,
                               model=model or old.model, filename=filename or old.filename,
                               reviewed_at=reviewed_at or old.reviewed_at)
            _put(parsed, pid, new)
            self._sweep()
            _write_text(self.path, parsed.text())
            with self._guard:  # what was just written, as the next read will see it
                self._parsed, self._seen = parsed, _identity(self.path)
            return dict(parsed.entries)

    # -- inside -----------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The file's lock, across this process's threads and across processes."""
        with _thread_lock(self.path):
            if fcntl is None:  # pragma: no cover - Windows
                yield
                return
            directory = self.path.parent
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    _log.debug("waiting for another writer of %s", self.path)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing the descriptor releases the lock

    def _load(self) -> _Parsed:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return _Parsed.empty()
        except OSError as exc:
            raise TopazError(review_file_unreadable(self.path, exc)) from None
        try:
            return _parse(data)
        except UnicodeDecodeError:
            raise TopazError(review_file_unreadable(
                self.path, "it is not UTF-8 text: save it as \u201cCSV UTF-8\u201d")) from None
        except csv.Error as exc:
            raise TopazError(review_file_unreadable(self.path, exc)) from None
        except _NotAReviewFile:
            raise TopazError(not_a_review_file(self.path, HEADER)) from None

    def _sweep(self) -> None:
        """Remove the temporary files of writers that died: under the lock, no
        live writer has one."""
        directory = self.path.parent
        prefix = f".{self.path.name}."
        try:
            names = os.listdir(directory)
        except OSError:
            return
        for name in names:
            if name.startswith(prefix) and name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(directory / name)


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class _NotAReviewFile(Exception):
    """Internal: the first record does not name the review's columns."""


_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    """One lock per review file for the whole process, whichever
    :class:`ReviewFile` (or review) goes through it."""
    key = os.path.abspath(path)
    with _thread_locks_guard:
        return _thread_locks.setdefault(key, threading.Lock())


# -- reading --------------------------------------------------------------------

def _records(text: str, separator: str) -> Iterator[tuple[str, list[str]]]:
    """``(raw text, cells)`` of each CSV record, quoted line breaks included.

    The csv reader asks for one line at a time and yields a record as soon as
    its last line is in, so the lines it consumed are that record's text.
    """
    consumed: list[str] = []

    def lines() -> Iterator[str]:
        for line in io.StringIO(text, newline=""):
            consumed.append(line)
            yield line

    for cells in csv.reader(lines(), delimiter=separator):
        raw = "".join(consumed)
        consumed.clear()
        yield raw, cells
    if consumed:  # pragma: no cover - the reader ends on the last line
        yield "".join(consumed), []


def _column_name(name: str) -> str:
    return name.strip().lower().replace(" ", "_")


def _parse(data: bytes) -> _Parsed:
    text = data.decode("utf-8")
    bom = text.startswith(_BOM)
    if bom:
        text = text[1:]
    if not text.strip():
        parsed = _Parsed.empty()
        parsed.bom = bom
        return parsed
    first = next(io.StringIO(text, newline=""))
    for separator in _SEPARATORS:
        names = [_column_name(n) for n in next(csv.reader([first], delimiter=separator), [])]
        if all(n in names for n in HEADER):
            break
    else:
        raise _NotAReviewFile()
    records = _records(text, separator)
    header, names = next(records)
    names = [_column_name(n) for n in names]
    if not all(n in names for n in HEADER):  # a quoted line break in the header
        raise _NotAReviewFile()
    columns = {n: names.index(n) for n in HEADER}
    newline = "\r\n" if header.endswith("\r\n") else ("\r" if header.endswith("\r") else "\n")
    parsed = _Parsed(bom=bom, newline=newline, separator=separator, header=header,
                     columns=columns, width=len(names), records=[], fields=[], rows={},
                     entries={})
    where = tuple(columns[n] for n in HEADER)
    for raw, cells in records:
        parsed.records.append(raw)
        parsed.fields.append(cells)
        entry = _entry(cells, where)
        if entry is not None:
            parsed.rows[entry.process_id] = len(parsed.records) - 1
            parsed.entries[entry.process_id] = entry
    return parsed


def _entry(cells: list[str], where: tuple[int, ...]) -> Entry | None:
    """The entry a row holds, or ``None`` for a row this review does not own:
    no process ID, or a decision it does not know (another tool's row).
    ``where`` is the index of each :data:`HEADER` column."""
    n = len(cells)
    values = [unescape_cell(cells[i]) if i < n else "" for i in where]
    pid, decision = values[0].strip().lower(), values[1].strip().lower()
    if not pid or decision not in _OWNED:
        return None
    return Entry(pid, decision, *values[2:])


# -- writing --------------------------------------------------------------------

def _line(cells: tuple[str, ...] | list[str], separator: str, newline: str) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=separator, lineterminator=newline).writerow(cells)
    return out.getvalue()


def _put(parsed: _Parsed, pid: str, entry: Entry) -> None:
    """Replace ``pid``'s row (its other columns, and the ID as it was spelt,
    kept) or append one; every other record stays as it was."""
    at = parsed.rows.get(pid)
    if at is None:
        cells = [""] * parsed.width
        cells[parsed.columns["process_id"]] = pid
        newline = parsed.newline
    else:
        cells = list(parsed.fields[at]) + [""] * max(0, parsed.width - len(parsed.fields[at]))
        raw = parsed.records[at]
        newline = raw[len(raw.rstrip("\r\n")):] or parsed.newline
    for name in HEADER[1:]:
        cells[parsed.columns[name]] = escape_cell(getattr(entry, name))
    text = _line(cells, parsed.separator, newline)
    if at is None:
        if parsed.records and not parsed.records[-1].endswith(("\n", "\r")):
            parsed.records[-1] += parsed.newline
        elif not parsed.records and not parsed.header.endswith(("\n", "\r")):
            parsed.header += parsed.newline
        parsed.records.append(text)
        parsed.fields.append(cells)
        parsed.rows[pid] = len(parsed.records) - 1
    else:
        parsed.records[at] = text
        parsed.fields[at] = cells
    parsed.entries[pid] = entry


def _write_text(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file beside it, fsynced and
    moved over it, keeping the old file's permissions."""
    directory = path.parent
    tmp = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            with contextlib.suppress(OSError):
                os.chmod(fh.fileno(), os.stat(path).st_mode & 0o7777)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _sync_directory(directory)


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable (where directories can be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
