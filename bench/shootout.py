"""How much do fidelity and the shoot-out cost?  ``python bench/shootout.py``

Two measurements on workload L (2000×1500 input, 8000×6000 output), each in a
fresh process so no decoded image or warm cache leaks between runs:

* **fidelity**: :func:`topaz_nb.fidelity` on already decoded images, pinned to
  one core (the target: ≤ 0.3 s), with the shrink of the output to the input's
  grid (band by band, as fidelity does it) timed on its own;
  ``bench/fidelity.py`` measures it at more sizes, with its memory;
* **shootout first view**: ``%topaz ID1 … ID4 --grid``'s work, cold (download,
  decode, five previews) and warm (a second kernel: previews from the disk
  cache), against the sandbox over loopback, with one process's first view
  measured the same way beside it.

Prints a table and writes ``bench/shootout.json``.  Run ``python
bench/workloads.py`` first if ``bench/.cache`` is empty (or let this do it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

RESULTS = HERE / "shootout.json"
OUTPUTS = 4


def _fidelity(workload: str) -> dict[str, Any]:
    import numpy as np  # noqa: F401 -- imported before the clock, as in a kernel
    import workloads as wl

    from topaz_nb.imaging import fidelity as _fidelity
    from topaz_nb.imaging.source import load_image

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    (w,) = wl.ensure([workload], log=False)
    inp = load_image(w.input_path, label="input").full()
    out = load_image(w.output_path, label="output").full()
    samples, shrink = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        placement = _fidelity.align(inp.size, out.size)
        overlap = _fidelity._overlap(placement, inp.size, out.size)
        assert overlap is not None
        box_in, box_out = overlap
        size = (box_in[2] - box_in[0], box_in[3] - box_in[1])
        shrinker = _fidelity._Shrink(out, box_out, size)
        band = max(28, -(-_fidelity._CHUNK_PIXELS // size[0]))  # as fidelity() takes them
        for r0 in range(0, size[1], band):
            shrinker.rows(r0, min(size[1], r0 + band))
        shrink.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        result = _fidelity.fidelity(inp, out)
        samples.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(samples), "samples": samples,
            "shrink_seconds": statistics.median(shrink), "psnr": result.psnr,
            "ssim": result.ssim, "input": list(inp.size), "output": list(out.size)}


def _first_view(ids: list[str], cache: str) -> dict[str, Any]:
    from topaz_nb.api.client import TopazClient
    from topaz_nb.batch.shootout import Shootout
    from topaz_nb.comparison import Comparison
    from topaz_nb.storage import Transfer

    client = TopazClient(api_key=os.environ["TOPAZ_BENCH_API_KEY"],
                         base_url=os.environ["TOPAZ_BENCH_BASE_URL"])
    transfer = Transfer(cache_dir=Path(cache))
    t0 = time.perf_counter()
    if len(ids) == 1:
        view = Comparison.fetch(ids[0], client=client, transfer=transfer).view
        sent = len(view.input_preview) + len(view.output_preview)
    else:
        view = Shootout.fetch(ids, client=client, transfer=transfer, max_workers=4).view
        sent = len(view.input_preview) + len(view.output_preview) + sum(
            len(p) for p in view.more_previews)
    seconds = time.perf_counter() - t0
    import resource

    return {"seconds": seconds, "bytes_sent": sent,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _child(argv: list[str]) -> None:
    kind = argv[0]
    if kind == "fidelity":
        result = _fidelity(argv[1])
    else:
        result = _first_view(argv[2:], argv[1])
    print(json.dumps(result))


def _run_child(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="L-png", choices=["L-png", "L-jpeg"])
    parser.add_argument("--child", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return
    import workloads as wl

    from topaz_nb.sandbox import Sandbox

    (w,) = wl.ensure([args.workload])
    report: dict[str, Any] = {"workload": w.describe(), "machine": {
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "load": os.getloadavg()}}
    report["fidelity"] = _run_child("fidelity", args.workload)

    source, output = w.input_path.read_bytes(), w.output_path.read_bytes()
    with Sandbox(demo=False) as sandbox:
        ids = [sandbox.add_job(source, output, model=f"Model {k + 1}") for k in range(OUTPUTS)]
        env = {"TOPAZ_BENCH_BASE_URL": sandbox.base_url, "TOPAZ_BENCH_API_KEY": sandbox.api_key}
        views: dict[str, Any] = {}
        for name, chosen in (("one_process", ids[:1]), (f"shootout_{OUTPUTS}", ids)):
            with tempfile.TemporaryDirectory(prefix="topaz-bench-") as cache:
                cold = _run_child("view", cache, *chosen, env=env)
                warm = _run_child("view", cache, *chosen, env=env)
            views[name] = {"cold": cold, "warm": warm}
        report["first_view"] = views
    report["machine"]["load_after"] = os.getloadavg()
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")

    f = report["fidelity"]
    print(f"workload {args.workload}: input {f['input'][0]}×{f['input'][1]}, "
          f"output {f['output'][0]}×{f['output'][1]}")
    print(f"fidelity (one core, decoded images): {f['seconds']:.3f} s median "
          f"(shrink to the input grid {f['shrink_seconds']:.3f} s); target ≤ 0.3 s")
    for name, v in views.items():
        print(f"{name:>12}: cold {v['cold']['seconds']:.2f} s, warm {v['warm']['seconds']:.2f} s, "
              f"{v['cold']['bytes_sent'] / 1e6:.2f} MB to the browser, "
              f"peak RSS {v['cold']['maxrss_mb']:.0f} MB")
    print(f"load average before/after: {report['machine']['load']} / "
          f"{report['machine']['load_after']}")


if __name__ == "__main__":
    main()
