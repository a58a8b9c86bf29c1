"""What a decision costs in the review file, against the old whole-file rewrite.

    python bench/review_file.py        # 3 file sizes; medians of 31 decisions each

The review file (``topaz_nb.batch.decisions.ReviewFile``) takes an exclusive
lock, reads the file again, replaces one row and writes the whole text
through an fsynced temporary file (then ``os.replace`` and a directory
fsync).  The baseline, measured in the same run on the same disk, is what
the review did before: parse the rows it held into a CSV writer, fsync,
``os.replace``, with no lock and no re-read.  Each decision is timed from
the call to its return; the figure is the median, with the ratio to the
baseline.  A person decides a few times a minute: the target is that a
decision in a 10 000-row file stays well under 100 ms.
"""

from __future__ import annotations

import csv
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from topaz_nb.batch.decisions import HEADER, ReviewFile

RUNS = 31
SIZES = (100, 1_000, 10_000)


def _baseline_write(path: Path, rows: dict[str, dict[str, str]]) -> None:
    """The review's write before the review file: every row held, rewritten."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows.values())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _rows(n: int) -> dict[str, dict[str, str]]:
    out = {}
    for i in range(n):
        pid = str(uuid.UUID(int=i + 1))
        out[pid] = {"process_id": pid, "decision": ("accept", "reject", "flag")[i % 3],
                    "note": f"note number {i}, with a comma", "model": "Standard V2",
                    "filename": f"photo-{i:05d}.jpg",
                    "reviewed_at": "2026-11-01T00:00:00+00:00"}
    return out


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'rows':>7} {'baseline':>10} {'review file':>12} {'ratio':>7}")
    for n in SIZES:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "review.csv"
            rows = _rows(n)
            _baseline_write(path, rows)
            pids = list(rows)
            base, new = [], []
            for i in range(RUNS):
                pid = pids[(i * 7919) % n]
                rows[pid] = dict(rows[pid], decision="flag", note=f"run {i}")
                t0 = time.perf_counter()
                _baseline_write(path, rows)
                base.append(time.perf_counter() - t0)
                store = ReviewFile(path)  # a fresh reader each time, as another kernel
                t0 = time.perf_counter()
                store.record(pid, decision="accept", note=f"run {i}", reviewed_at="t")
                new.append(time.perf_counter() - t0)
            b, r = _median_ms(base), _median_ms(new)
            print(f"{n:>7} {b:>8.1f} ms {r:>9.1f} ms {r / b:>6.2f}×")


if __name__ == "__main__":
    main()
