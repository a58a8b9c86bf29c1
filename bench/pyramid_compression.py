"""Pyramid compression and size threshold, measured: ``python bench/pyramid_compression.py``.

For each workload output and each lossless TIFF compression, in a fresh child
process: build time, peak RSS of the child (psutil sampling), bytes on disk,
and 100 random 512² tile reads at full resolution (first after a fresh open,
p50, p95).  Also Pillow's full decode (time, peak RSS) and a tile cut from the
decoded image, which is the alternative below the threshold.  Prints JSON lines.

The pyvips-binary wheel's libtiff has no ZSTD support ("ZSTD compression
support is not configured"), so that row reports a failure.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

CHOICES = {
    "none": {"compression": "none"},
    "deflate+pred": {"compression": "deflate", "predictor": "horizontal", "level": 1},
    "zstd+pred": {"compression": "zstd", "predictor": "horizontal", "level": 1},  # see note
    "lzw+pred": {"compression": "lzw", "predictor": "horizontal"},
}


def _child(kind: str, source: str, choice: str) -> dict:
    from PIL import Image

    from topaz_nb.imaging import pyramid as _pyramid
    Image.MAX_IMAGE_PIXELS = None
    rng = random.Random(1)
    if kind == "pillow":
        t0 = time.perf_counter()
        im = Image.open(source)
        im.load()
        decode = time.perf_counter() - t0
        times = []
        for _ in range(100):
            x, y = rng.randrange(0, im.width - 512), rng.randrange(0, im.height - 512)
            t = time.perf_counter()
            im.crop((x, y, x + 512, y + 512)).convert("RGBA")
            times.append(time.perf_counter() - t)
        return {"build_s": decode, "tiles_ms": times}
    with tempfile.TemporaryDirectory(dir=os.environ.get("PYR_TMP")) as tmp:
        path = Path(tmp) / "p.tif"
        t0 = time.perf_counter()
        _pyramid.build(Path(source), path, compression=CHOICES[choice])
        built = time.perf_counter() - t0
        disk = path.stat().st_size
        times = []
        t = time.perf_counter()
        pyr = _pyramid.open_pyramid(path, Path(source))
        w, h = pyr.size
        for i in range(100):
            if i:
                t = time.perf_counter()
            x, y = rng.randrange(0, w - 512), rng.randrange(0, h - 512)
            pyr.region(0, (x, y, x + 512, y + 512))
            times.append(time.perf_counter() - t)
        return {"build_s": built, "disk_mb": disk / 1e6, "tiles_ms": times}


def _run(kind: str, source: str, choice: str) -> dict:
    import psutil
    proc = subprocess.Popen([sys.executable, __file__, "--child", kind, source, choice],
                            stdout=subprocess.PIPE, text=True)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.02)
    lines = proc.stdout.read().strip().splitlines()
    if proc.returncode or not lines:
        return {"error": f"failed (exit {proc.returncode}); see stderr"}
    out = json.loads(lines[-1])
    first = out["tiles_ms"][0]
    t = sorted(out.pop("tiles_ms"))
    out.update(first_ms=first * 1e3, p50_ms=t[50] * 1e3, p95_ms=t[95] * 1e3, peak_mb=peak / 1e6)
    return out


def main() -> None:
    import workloads as wl
    names = sys.argv[1:] or ["S", "L-png", "L-jpeg", "XL"]
    for work in wl.ensure(names, log=False):
        src = str(work.output_path)
        wanted = os.environ.get("PYR_CHOICES", "pillow," + ",".join(CHOICES)).split(",")
        if "pillow" in wanted:
            row = _run("pillow", src, "-")
            print(json.dumps({"workload": work.name, "method": "pillow decode", **row}),
                  flush=True)
        for choice in (c for c in CHOICES if c in wanted):
            row = _run("pyramid", src, choice)
            print(json.dumps({"workload": work.name, "method": choice, **row}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(_child(*sys.argv[2:5])))
    else:
        main()
