"""What does fidelity cost, against decoding the two images?  ``python bench/fidelity.py``

Pairs with 3, 12 and 48 MP inputs, at 1× (a Sharpen or Denoise model: an output
the input's size, here the input sharpened and saved as PNG) and at 4× (the
workloads of ``bench/workloads.py``: L-png and XL).  A 48 MP input at 4× would
be a 768 MP output, over the 512 MP the API produces, so the largest 4× pair is
XL (12.6 MP → 201 MP).

Each pair runs in a fresh child process pinned to one core:

* **decode**: ``Image.open`` + ``load`` of both files, the plain decode; its time,
  and the resident memory the two decoded images take;
* **fidelity**: :func:`topaz_nb.fidelity` on those decoded images, median of
  several runs; its peak resident memory over what the process held with both
  images loaded (the kernel's peak counter, reset through
  ``/proc/self/clear_refs`` just before; where that is refused, the child's RSS
  sampled every 2 ms by a thread).

Ratios are taken within the same child: fidelity time over decode time, peak
extra memory over the decoded images' size, and bytes per input pixel (the
ceiling is 40).  The one time target, 2000×1500 against 8000×6000 in at most
0.3 s on one core, is checked here (never in the tests).  Prints a table and
writes ``bench/fidelity.json``; the 1× pairs are generated into ``bench/.cache``
on first use (about a minute).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

RESULTS = HERE / "fidelity.json"
TARGET = ("3 MP 4×", 0.3)
MAX_BYTES_PER_INPUT_PIXEL = 40

#: name -> (input size, scale, workload name or None for a generated 1× pair, runs)
PAIRS: dict[str, tuple[tuple[int, int], int, str | None, int]] = {
    "3 MP 1×": ((2000, 1500), 1, None, 5),
    "3 MP 4×": ((2000, 1500), 4, "L-png", 5),
    "12 MP 1×": ((4000, 3000), 1, None, 3),
    "12 MP 4×": ((4096, 3072), 4, "XL", 2),
    "48 MP 1×": ((8000, 6000), 1, None, 2),
}


def _one_times_pair(size: tuple[int, int]) -> tuple[Path, Path]:
    """A photo-like input (JPEG q92) and its sharpened copy (PNG), cached."""
    import workloads as wl
    from PIL import ImageFilter

    stem = f"fidelity-v1-{size[0]}x{size[1]}"
    inp, out = wl.CACHE / f"{stem}-input.jpg", wl.CACHE / f"{stem}-output-1x.png"
    if not (inp.exists() and out.exists()):
        print(f"generating the 1× pair {size[0]}×{size[1]} in {wl.CACHE} …", flush=True)
        wl.CACHE.mkdir(parents=True, exist_ok=True)
        image = wl._photo_like(size)
        image.save(inp.with_suffix(".part"), "JPEG", quality=92)
        inp.with_suffix(".part").replace(inp)
        sharpened = image.filter(ImageFilter.UnsharpMask(radius=2, percent=80, threshold=2))
        sharpened.save(out.with_suffix(".part"), "PNG")
        out.with_suffix(".part").replace(out)
    return inp, out


def _paths(name: str) -> tuple[Path, Path]:
    size, _scale, workload, _runs = PAIRS[name]
    if workload is None:
        return _one_times_pair(size)
    import workloads as wl

    (w,) = wl.ensure([workload])
    return w.input_path, w.output_path


# -- the child -------------------------------------------------------------------

def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


class _Peak:
    """The peak resident memory from now on: the kernel's counter reset, or sampled."""

    def __init__(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.sampler: threading.Thread | None = None
        except OSError:
            self.highest, self.running = _status("VmRSS"), True
            self.sampler = threading.Thread(target=self._sample, daemon=True)
            self.sampler.start()

    def _sample(self) -> None:
        while self.running:
            self.highest = max(self.highest, _status("VmRSS"))
            time.sleep(0.002)

    def stop(self) -> tuple[int, str]:
        if self.sampler is None:
            return _status("VmHWM"), "VmHWM after clear_refs"
        self.running = False
        self.sampler.join()
        return self.highest, "VmRSS sampled every 2 ms"


def _child(name: str, input_path: str, output_path: str) -> dict[str, Any]:
    import numpy  # noqa: F401 -- imported before any clock, as in a kernel
    from PIL import Image

    from topaz_nb.imaging.fidelity import fidelity

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    Image.MAX_IMAGE_PIXELS = 512_000_000  # as the product sets it: XL's output is 201 MP
    load = os.getloadavg()
    runs = PAIRS[name][3]
    # Everything fidelity needs once (imports, tables), on a small pair.
    small = Image.new("RGB", (64, 48), (90, 120, 150))
    fidelity(small, small.resize((256, 192)))

    def decode() -> tuple[Any, Any]:
        images = []
        for path in (input_path, output_path):
            im = Image.open(path)
            im.load()
            images.append(im)
        return images[0], images[1]

    gc.collect()
    before = _status("VmRSS")
    t0 = time.perf_counter()
    inp, out = decode()
    decode_times = [time.perf_counter() - t0]
    gc.collect()
    loaded = _status("VmRSS")
    # Memory first, right after the one decode, as in a kernel that just opened them.
    peak = _Peak()
    t0 = time.perf_counter()
    result = fidelity(inp, out)
    fidelity_times = [time.perf_counter() - t0]
    highest, how = peak.stop()
    del result
    for _ in range(runs - 1):
        t0 = time.perf_counter()
        decode()
        decode_times.append(time.perf_counter() - t0)
        gc.collect()
        t0 = time.perf_counter()
        result = fidelity(inp, out)
        fidelity_times.append(time.perf_counter() - t0)
        del result
        gc.collect()
    decoded = loaded - before
    pixels = inp.width * inp.height
    decode_s, fidelity_s = statistics.median(decode_times), statistics.median(fidelity_times)
    return {"pair": name, "input": list(inp.size), "output": list(out.size),
            "decode_seconds": decode_s, "decode_samples": decode_times,
            "fidelity_seconds": fidelity_s, "fidelity_samples": fidelity_times,
            "time_ratio": fidelity_s / decode_s,
            "decoded_mb": decoded / 1e6, "fidelity_extra_mb": (highest - loaded) / 1e6,
            "memory_ratio": (highest - loaded) / max(1, decoded),
            "bytes_per_input_pixel": (highest - loaded) / pixels,
            "peak_measured_by": how, "load": list(load)}


def _run_child(name: str) -> dict[str, Any]:
    inp, out = _paths(name)
    proc = subprocess.run([sys.executable, __file__, "--child", name, str(inp), str(out)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(PAIRS), help="some pairs")
    parser.add_argument("--child", nargs=3, metavar=("PAIR", "INPUT", "OUTPUT"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(*args.child)))
        return
    names = args.only or list(PAIRS)
    for name in names:
        _paths(name)  # generate before any clock runs
    report: dict[str, Any] = {"machine": {"python": platform.python_version(),
                                          "cpus": os.cpu_count(), "load": os.getloadavg()},
                              "pairs": []}
    print(f"{'pair':<9} {'input':>10} {'output':>12} {'decode':>8} {'fidelity':>9} "
          f"{'/decode':>8} {'decoded':>8} {'extra':>8} {'/decoded':>9} {'B/px':>6}  load")
    for name in names:
        r = _run_child(name)
        report["pairs"].append(r)
        print(f"{name:<9} {'×'.join(map(str, r['input'])):>10} "
              f"{'×'.join(map(str, r['output'])):>12} {r['decode_seconds']:>7.2f}s "
              f"{r['fidelity_seconds']:>8.2f}s {r['time_ratio']:>7.2f}× "
              f"{r['decoded_mb']:>6.0f}MB {r['fidelity_extra_mb']:>6.0f}MB "
              f"{r['memory_ratio']:>8.2f}× {r['bytes_per_input_pixel']:>6.1f}  "
              f"{r['load'][0]:.2f}", flush=True)
    report["machine"]["load_after"] = os.getloadavg()
    checks = []
    for r in report["pairs"]:
        checks.append((r["pair"], f"peak extra ≤ {MAX_BYTES_PER_INPUT_PIXEL} B per input pixel",
                       r["bytes_per_input_pixel"], MAX_BYTES_PER_INPUT_PIXEL))
        if r["pair"] == TARGET[0]:
            checks.append((r["pair"], "fidelity ≤ 0.3 s on one core", r["fidelity_seconds"],
                           TARGET[1]))
    report["targets"] = [{"pair": p, "target": t, "value": v, "limit": lim, "pass": v <= lim}
                         for p, t, v, lim in checks]
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print("targets:")
    for p, t, v, lim in checks:
        print(f"  {'PASS' if v <= lim else 'MISS'} {p:<9} {t}: {v:.3g} (limit {lim})")
    print(f"load average before/after: {report['machine']['load']} / "
          f"{report['machine']['load_after']}")


if __name__ == "__main__":
    main()
