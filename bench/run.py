"""Benchmark topaz_nb's first view against a naive baseline, jupyter-compare-view
and the physical lower bound, over loopback against the sandbox.

    python bench/run.py                 # everything (front end too if Chromium is there)
    python bench/run.py --only S L-png  # some workloads
    python bench/run.py --no-frontend   # kernel side only

Prints a table and writes ``bench/results.json``.  It installs nothing: a
missing bench dependency is named with the command that installs it.  See
``bench/README.md`` for what each column means.
"""

from __future__ import annotations

import argparse
import importlib.util
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

import workloads as wl

RESULTS = HERE / "results.json"
REQUIRED = {"PIL": "pillow", "requests": "requests", "ipywidgets": "ipywidgets",
            "anywidget": "anywidget", "psutil": "psutil", "pyvips": "pyvips"}

#: Repetitions per workload and method; the big ones cost tens of seconds a run.
REPEATS: dict[str, dict[str, int]] = {
    "S": {"cold": 5, "warm": 3, "naive": 1, "naive_jpeg": 1, "compare_view": 3,
          "lower_bound": 5, "zoom_cold": 3, "zoom_warm": 2},
    "L-jpeg": {"cold": 3, "warm": 3, "naive": 1, "naive_jpeg": 1, "compare_view": 2,
               "lower_bound": 3, "zoom_cold": 3, "zoom_warm": 2},
    "L-png": {"cold": 3, "warm": 3, "naive": 1, "naive_jpeg": 1, "compare_view": 2,
              "lower_bound": 3, "zoom_cold": 3, "zoom_warm": 2},
    "XL": {"cold": 3, "warm": 2, "naive": 1, "naive_jpeg": 1, "compare_view": 1,
           "lower_bound": 3, "zoom_cold": 3, "zoom_warm": 2},
    # Memory only: the baselines would hold 1.9 GB decoded (and PNG-encode it for minutes).
    "RGBA": {"cold": 2, "warm": 1, "naive": 0, "naive_jpeg": 0, "compare_view": 0,
             "lower_bound": 1, "zoom_cold": 2, "zoom_warm": 1},
}
ROWS = ("cold", "warm", "naive", "naive_jpeg", "compare_view", "lower_bound")

TARGETS = {
    "cold_vs_lower_bound": "cold first view ≤ 1.1 × lower bound (L, XL)",
    "cold_vs_lower_bound_S": "cold first view ≤ 1.3 × lower bound (S)",
    "faster_than_compare_view": "cold first view faster than jupyter-compare-view (S)",
    "vs_naive": "≥ 5× faster than the naive baseline (L)",
    "bytes_per_image": "first-view bytes ≤ 2 MB per image",
    "warm_vs_cold": "warm ≤ 0.1 × cold",
    "first_tile_p95": "first 1:1 tile after a cold view + 2 s pause, p95 over runs ≤ 100 ms (L-png, XL)",
    "tile_p95": "1:1 tile p95 (first tile included) ≤ 50 ms",
    "peak_rss_XL": "peak RSS ≤ 300 MB (XL, cold view and zoom)",
    "peak_rss_RGBA": "peak RSS ≤ 600 MB (22000² RGBA PNG, cold view and zoom)",
}


# -- environment -----------------------------------------------------------------------------

def missing_dependencies() -> list[str]:
    """Packages the kernel-side bench cannot run without."""
    return [pkg for mod, pkg in REQUIRED.items() if importlib.util.find_spec(mod) is None]


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("topaz-nb", "pillow", "requests", "ipywidgets", "anywidget",
                 "jupyter-compare-view", "playwright", "jupyterlab"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def machine() -> dict[str, Any]:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"platform": platform.platform(), "cpus": os.cpu_count(),
            "memory_gb": round(mem / 2**30, 1), "loadavg_at_start": list(os.getloadavg())}


# -- running methods -------------------------------------------------------------------------

def run_method(method: str, pid: str, cache: Path, env: dict[str, str]) -> dict[str, Any]:
    """One fresh interpreter running one measurement; its JSON answer, with its own
    peak RSS sampled from here (psutil, every 10 ms) and the load average at its start."""
    import psutil

    load = os.getloadavg()[0]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, str(HERE / "methods.py"), method, pid,
                                 "--cache", str(cache)], env=env, stdout=out, stderr=err,
                                text=True)
        child, peak = psutil.Process(proc.pid), 0
        deadline = time.monotonic() + 600
        while proc.poll() is None:
            try:
                peak = max(peak, child.memory_info().rss)
            except psutil.Error:
                pass
            if time.monotonic() > deadline:
                proc.kill()
            time.sleep(0.01)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (stderr or stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{method} failed: " + " | ".join(tail))
    result = dict(json.loads(lines[-1]))
    result["peak_rss_mb"] = peak / 1e6
    result["load1"] = load
    return result


def repeat(method: str, pid: str, cache: Path | None, env: dict[str, str], times: int,
           fresh_cache: bool) -> list[dict[str, Any]]:
    """``times`` runs; ``fresh_cache`` empties the download cache before each (cold)."""
    runs = []
    for _ in range(times):
        with tempfile.TemporaryDirectory(prefix="topaz-bench-") as tmp:
            target = Path(tmp) if fresh_cache or cache is None else cache
            runs.append(run_method(method, pid, target, env))
    return runs


def median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def measure_workload(work: wl.Workload, pid: str, env: dict[str, str],
                     have_compare_view: bool) -> dict[str, Any]:
    """Every method on one workload, each repeated, raw samples kept."""
    reps = REPEATS[work.name]
    out: dict[str, Any] = {"workload": work.describe(), "methods": {}}
    methods = out["methods"]
    methods["lower_bound"] = repeat("lower_bound", pid, None, env, reps["lower_bound"], True)
    methods["cold"] = repeat("ours", pid, None, env, reps["cold"], True)
    methods["zoom_cold"] = repeat("zoom_cold", pid, None, env, reps["zoom_cold"], True)
    with tempfile.TemporaryDirectory(prefix="topaz-bench-warm-") as tmp:
        warm_cache = Path(tmp)
        run_method("ours", pid, warm_cache, env)  # fills the cache (files, previews, pyramid)
        methods["warm"] = repeat("ours", pid, warm_cache, env, reps["warm"], False)
        methods["zoom_warm"] = repeat("zoom_warm", pid, warm_cache, env, reps["zoom_warm"],
                                      False)
    for baseline in ("naive", "naive_jpeg"):
        if reps[baseline]:
            methods[baseline] = repeat(baseline, pid, None, env, reps[baseline], True)
    if have_compare_view and reps["compare_view"]:
        methods["compare_view"] = repeat("compare_view", pid, None, env,
                                         reps["compare_view"], True)
    return out


# -- summary ---------------------------------------------------------------------------------

def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Medians, spreads, ratios and the targets that apply to this workload."""
    m = result["methods"]
    name = result["workload"]["name"]
    s: dict[str, Any] = {}
    for method, runs in m.items():
        secs = [r["seconds"] for r in runs]
        s[method] = {"seconds": statistics.median(secs), "min": min(secs), "max": max(secs),
                     "runs": len(runs), "bytes_sent": median(runs, "bytes_sent")
                     if "bytes_sent" in runs[0] else None,
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                     "load1": [round(r["load1"], 2) for r in runs]}
    for kind in ("zoom_cold", "zoom_warm"):
        runs = m[kind]
        firsts = [r["first_tile"] for r in runs]
        samples = [x for r in runs for x in r["samples"]]
        s[kind].update(first_tile_ms=[1000 * x for x in firsts],
                       first_tile_p95_ms=1000 * percentile(firsts, 0.95),
                       tile_median_ms=1000 * statistics.median(samples),
                       tile_p95_ms=1000 * percentile(samples, 0.95),
                       rss_after_tiles_mb=statistics.median(r["rss_after_tiles_mb"] for r in runs),
                       pyramid_mb=runs[0].get("pyramid_mb"),
                       build_s=[round(b, 2) for r in runs for b in r["build_seconds"]],
                       builds=[r["pyramid_builds"] for r in runs])
    cold, lb, warm = s["cold"]["seconds"], s["lower_bound"]["seconds"], s["warm"]["seconds"]
    s["ratios"] = {"cold_over_lower_bound": cold / lb, "warm_over_cold": warm / cold}
    if "naive" in s:
        s["ratios"]["naive_over_cold"] = s["naive"]["seconds"] / cold
    if "compare_view" in s:
        s["ratios"]["compare_view_over_cold"] = s["compare_view"]["seconds"] / cold
    per_image = max(max(r["bytes_per_image"].values()) for r in m["cold"])
    checks: dict[str, dict[str, Any]] = {
        "bytes_per_image": {"value_mb": per_image / 1e6, "limit_mb": 2.0,
                            "pass": per_image <= 2_000_000},
        "warm_vs_cold": {"value": warm / cold, "limit": 0.1, "pass": warm / cold <= 0.1},
    }
    if name in ("L-jpeg", "L-png", "XL"):
        checks["cold_vs_lower_bound"] = {"value": cold / lb, "limit": 1.1,
                                         "pass": cold / lb <= 1.1}
    if name == "S":
        checks["cold_vs_lower_bound_S"] = {"value": cold / lb, "limit": 1.3,
                                           "pass": cold / lb <= 1.3}
        if "compare_view" in s:
            ratio = s["compare_view"]["seconds"] / cold
            checks["faster_than_compare_view"] = {"value": ratio, "limit": 1.0,
                                                  "pass": ratio > 1.0}
    if name in ("L-jpeg", "L-png"):
        ratio = s["naive"]["seconds"] / cold
        checks["vs_naive"] = {"value": ratio, "limit": 5.0, "pass": ratio >= 5.0}
    if name in ("L-png", "XL"):
        p95 = s["zoom_cold"]["first_tile_p95_ms"]
        checks["first_tile_p95"] = {"value_ms": p95, "limit_ms": 100.0, "pass": p95 <= 100.0}
    p95 = s["zoom_cold"]["tile_p95_ms"]
    checks["tile_p95"] = {"value_ms": p95, "limit_ms": 50.0, "pass": p95 <= 50.0}
    for big, limit in (("XL", 300.0), ("RGBA", 600.0)):
        if name == big:
            peak = max(s["cold"]["peak_rss_mb"], s["zoom_cold"]["peak_rss_mb"])
            checks[f"peak_rss_{big}"] = {"value_mb": peak, "limit_mb": limit,
                                         "pass": peak <= limit}
    s["targets"] = checks
    return s


def decoded_mb_from(result: dict[str, Any]) -> float:
    """Decoded size of the larger image as Pillow holds it (4 bytes a pixel for RGB)."""
    w, h = result["workload"]["output_size"]
    return w * h * 4 / 1e6


def _fmt_s(value: float | None) -> str:
    return "—" if value is None else (f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s")


def _fmt_mb(value: float | None) -> str:
    return "—" if value is None else f"{value / 1e6:.1f}"


def table(summaries: dict[str, dict[str, Any]]) -> str:
    """The printed table: one row per workload and method, medians with min–max."""
    head = (f"{'workload':<8} {'method':<13} {'first view':>10} {'min–max':>15} {'/lower':>7} "
            f"{'naive/x':>8} {'sent MB':>8} {'peak MB':>8}  load")
    lines = [head, "-" * len(head)]
    for name, s in summaries.items():
        lb = s["lower_bound"]["seconds"]
        for method in ROWS:
            if method not in s:
                continue
            row = s[method]
            speedup = (f"{s['naive']['seconds'] / row['seconds']:>7.1f}×" if "naive" in s
                       else f"{'—':>8}")
            sent = None if method == "lower_bound" else row["bytes_sent"]
            spread = f"{_fmt_s(row['min'])}–{_fmt_s(row['max'])}"
            lines.append(f"{name:<8} {method:<13} {_fmt_s(row['seconds']):>10} {spread:>15} "
                         f"{row['seconds'] / lb:>6.2f}× {speedup} {_fmt_mb(sent):>8} "
                         f"{row['peak_rss_mb']:>8.0f}  {row['load1']}")
        for kind, label in (("zoom_cold", "zoom cold+2s"), ("zoom_warm", "zoom warm")):
            z = s[kind]
            firsts = ", ".join(f"{x:.0f}" for x in z["first_tile_ms"])
            pyr = "no pyramid" if z["pyramid_mb"] is None else (
                f"pyramid {z['pyramid_mb']:.0f} MB, built in {z['build_s']} s")
            lines.append(f"{name:<8} {label:<13} first tile [{firsts}] ms (p95 "
                         f"{z['first_tile_p95_ms']:.0f}); tiles median {z['tile_median_ms']:.1f},"
                         f" p95 {z['tile_p95_ms']:.1f} ms; RSS after {z['rss_after_tiles_mb']:.0f}"
                         f" MB, peak {z['peak_rss_mb']:.0f} MB; {pyr}; load {z['load1']}")
        lines.append("")
    lines.append("targets:")
    for name, s in summaries.items():
        for key, check in s["targets"].items():
            value = next(v for k, v in check.items() if k.startswith("value"))
            limit = next(v for k, v in check.items() if k.startswith("limit"))
            mark = "PASS" if check["pass"] else "MISS"
            lines.append(f"  {mark} {name:<7} {TARGETS[key]}: {value:.3g} (limit {limit:.3g})")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------

def _sandbox_env(base_url: str, api_key: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(TOPAZ_BENCH_BASE_URL=base_url, TOPAZ_BENCH_API_KEY=api_key,
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p))
    return env


def run_kernel_side(names: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """All kernel-side measurements against one sandbox; raw results and summaries."""
    from topaz_nb.sandbox import Sandbox

    works = wl.ensure(names)
    have_cv = importlib.util.find_spec("jupyter_compare_view") is not None
    if not have_cv:
        print("note: jupyter-compare-view not installed, its row is skipped "
              "(pip install -r bench/requirements.txt)")
    raw: dict[str, Any] = {}
    summaries: dict[str, Any] = {}
    with Sandbox(demo=False) as sb:
        env = _sandbox_env(sb.base_url, sb.api_key)
        for work in works:
            started = time.perf_counter()
            pid = sb.add_job(work.input_path, work.output_path)
            raw[work.name] = measure_workload(work, pid, env, have_cv)
            summaries[work.name] = summarise(raw[work.name])
            print(f"measured {work.name} in {time.perf_counter() - started:.0f} s", flush=True)
    return raw, summaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(wl.SPECS), help="workloads to run")
    parser.add_argument("--frontend", action="store_true", help="require the browser bench")
    parser.add_argument("--no-frontend", action="store_true", help="skip the browser bench")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    missing = missing_dependencies()
    if missing:
        print(f"missing: {', '.join(missing)}; run: pip install -r bench/requirements.txt")
        return 2
    started = time.perf_counter()
    raw, summaries = run_kernel_side(args.only or list(wl.SPECS))
    front: dict[str, Any] | None = None
    if not args.no_frontend:
        import frontend

        problem = frontend.unavailable()
        if problem is None:
            front = frontend.run()
        elif args.frontend:
            print(f"front end bench cannot run: {problem}")
            return 2
        else:
            print(f"note: front end skipped: {problem}")
    text = table(summaries)
    if front is not None:
        text += "\n\n" + frontend.describe(front)
    print(text)
    results = {"generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
               "versions": versions(), "targets": TARGETS, "summaries": summaries,
               "frontend": front, "raw": raw, "table": text,
               "wall_seconds": time.perf_counter() - started}
    args.output.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"\nwrote {args.output.relative_to(REPO) if args.output.is_relative_to(REPO) else args.output}"
          f" in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
