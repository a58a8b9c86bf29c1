"""The no-length completeness check, measured: ``python bench/format_end.py``.

A body that came with no length is walked to its format's end
(``topaz_nb._format_end.reaches_end``) before it may become the cached file.
This times that walk on large synthetic images against the baseline every
download already pays: the SHA-256 of the same bytes, read from the same file
in 1 MiB pieces.  Medians of 5, in this process, with the 1-minute load at the
start; prints JSON lines.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _sha256(path: Path) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            digest.update(block)


def _walk(path: Path) -> None:
    from topaz_nb._format_end import reaches_end

    with open(path, "rb") as fp:
        assert reaches_end(fp, path.stat().st_size) is True


def _median(work: Callable[[Path], None], path: Path) -> float:
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        work(path)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    # Grain quantised to steps of 4: compresses a little, like a noisy photo.
    image = Image.fromarray((rng.integers(0, 255, (6000, 8000, 3), dtype=np.uint8) // 4) * 4)
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, options in (("JPEG", {"quality": 95}), ("PNG", {"compress_level": 1}),
                             ("TIFF", {})):
            path = Path(tmp) / f"image.{fmt.lower()}"
            buf = io.BytesIO()
            image.save(buf, fmt, **options)
            path.write_bytes(buf.getvalue())
            load = os.getloadavg()[0]
            walk, sha = _median(_walk, path), _median(_sha256, path)
            print(json.dumps({"format": fmt, "mb": round(path.stat().st_size / 1e6, 1),
                              "walk_ms": round(walk * 1000, 1),
                              "sha256_ms": round(sha * 1000, 1),
                              "walk_over_sha256": round(walk / sha, 3), "load": load}))


if __name__ == "__main__":
    main()
