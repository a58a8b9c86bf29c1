"""The first view over a shaped link, as from object storage: ``python bench/network.py``.

    python bench/network.py            # L-png (8000×6000 PNG) and the gallery; ~4 min
    python bench/network.py --xl       # also XL (16384×12288 PNG, ~400 MB); ~6 min more
    python bench/network.py --repeats 5

Every other figure in ``bench/`` is over loopback, where bytes are free.  Real
object storage caps one HTTP stream (~25 MB/s per connection), shares the
client's link (~100 MB/s over all connections) and answers after ~20 ms.  The
sandbox's storage host runs here with exactly that :class:`~topaz_nb.sandbox.Link`
(the API host is not shaped), in this process; each measurement runs in a
fresh interpreter (``--child``) so no decoded image or warm cache leaks from
one into the next, and imports happen before its clock starts.  Every column
fetches both sides of the comparison (input JPEG and output PNG), from asking
the API for the links to both images decoded:

* ``link ideal``: both objects' bytes / the shared rate.  No client can move
  the bytes faster; decoding is not in it, so it is a real lower bound.
* ``decode only``: Pillow decoding both files from local bytes, no network
  (the CPU's part, for "where time goes").
* ``1 GET``: one plain GET per object (both objects at once), then Pillow's
  full decode, as ``bench/methods.py``'s baselines do.
* ``4 ranges``: a HEAD for the size, then 4 parallel Range GETs per object,
  assembled in memory, then the same decode: the baseline a ranged
  downloader should meet.
* ``topaz-nb cold``: ``Comparison.fetch(...).prepare()`` and the display
  bundle with an empty cache, as ``bench/run.py`` measures the first view,
  with :class:`~topaz_nb.storage.Transfer` as it is; if it takes
  ``connections=``, once with its default and once with ``connections=1``.

The gallery is 12 processes of a ~19 MB PNG each (3600×2700) and its 4×
smaller JPEG: time from ``start()`` to the first card and to all cards, with
a cold cache, against the link's ideal for one process and for all twelve,
and the decode of one process's pair from local bytes.

Medians of ``--repeats`` runs (3), with the load average at each start.
Results go to ``bench/network.json``.
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _p in (str(REPO), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

PER_CONNECTION = 25e6
SHARED = 100e6
LATENCY = 0.02
RANGES = 4
GALLERY_N = 12
GALLERY_SIZE = (3600, 2700)
RESULTS = HERE / "network.json"
SIDES = ("input", "output")


# -- the measurements (each in a fresh interpreter) --------------------------------------------

def _links(session: Any, base: str, key: str, pid: str, side: str) -> dict[str, Any]:
    path = f"/download/{pid}" if side == "output" else f"/download/input/{pid}"
    resp = session.get(base + path, headers={"X-API-Key": key}, timeout=60)
    resp.raise_for_status()
    return dict(resp.json())


def _decode(body: bytes | bytearray | memoryview) -> tuple[int, int]:
    from PIL import Image

    image = Image.open(io.BytesIO(body))
    image.load()
    return image.size


def _plain(pid: str, base: str, key: str) -> dict[str, Any]:
    import requests

    stamps: dict[str, float] = {}

    def one(side: str) -> tuple[int, int]:
        with requests.Session() as session:
            url = _links(session, base, key, pid, side)["download_url"]
            resp = session.get(url, timeout=300)
            resp.raise_for_status()
            body = resp.content
        stamps[side] = time.perf_counter()
        return _decode(body)

    started = time.perf_counter()
    with ThreadPoolExecutor(len(SIDES)) as pool:
        sizes = list(pool.map(one, SIDES))
    done = time.perf_counter()
    return {"seconds": done - started, "sizes": sizes,
            "transfer_s": max(stamps.values()) - started}


def _ranged(pid: str, base: str, key: str) -> dict[str, Any]:
    import requests

    stamps: dict[str, float] = {}

    def part(url: str, start: int, end: int, into: memoryview) -> None:
        with requests.Session() as session, session.get(
                url, headers={"Range": f"bytes={start}-{end}"}, timeout=300, stream=True) as resp:
            if resp.status_code != 206:
                raise RuntimeError(f"range {start}-{end}: HTTP {resp.status_code}")
            at = start
            for chunk in resp.iter_content(1 << 20):
                into[at - start:at - start + len(chunk)] = chunk
                at += len(chunk)
            if at != end + 1:
                raise RuntimeError(f"range {start}-{end}: {at - start} bytes")

    def one(side: str) -> tuple[int, int]:
        with requests.Session() as session:
            links = _links(session, base, key, pid, side)
            head = session.head(links["head_url"], timeout=60)
            head.raise_for_status()
        size = int(head.headers["Content-Length"])
        body = bytearray(size)
        view = memoryview(body)
        step = -(-size // RANGES)
        bounds = [(s, min(size, s + step) - 1) for s in range(0, size, step)]
        with ThreadPoolExecutor(len(bounds)) as pool:
            for future in [pool.submit(part, links["download_url"], s, e, view[s:e + 1])
                           for s, e in bounds]:
                future.result()
        stamps[side] = time.perf_counter()
        return _decode(body)

    started = time.perf_counter()
    with ThreadPoolExecutor(len(SIDES)) as pool:
        sizes = list(pool.map(one, SIDES))
    done = time.perf_counter()
    return {"seconds": done - started, "sizes": sizes,
            "transfer_s": max(stamps.values()) - started}


def _transfer(cache: Path, connections: int | None) -> Any:
    from topaz_nb.storage import Transfer

    kwargs: dict[str, Any] = {} if connections is None else {"connections": connections}
    return Transfer(cache_dir=cache, **kwargs)


def _ours(pid: str, base: str, key: str, cache: Path, connections: int | None) -> dict[str, Any]:
    from methods import _mimebundle_bytes

    from topaz_nb.api.client import TopazClient
    from topaz_nb.comparison import Comparison

    client, transfer = TopazClient(api_key=key, base_url=base), _transfer(cache, connections)
    started = time.perf_counter()
    comparison = Comparison.fetch(pid, client=client, transfer=transfer)
    fetched = time.perf_counter()
    comparison.prepare()
    view = comparison.view
    bundle = view._repr_mimebundle_()
    done = time.perf_counter()
    _mimebundle_bytes(bundle)
    return {"seconds": done - started, "transfer_s": fetched - started,
            "phases": {"fetch": fetched - started, "prepare_and_bundle": done - fetched}}


def _decode_only(paths: list[str]) -> dict[str, Any]:
    bodies = [Path(p).read_bytes() for p in paths]
    started = time.perf_counter()
    with ThreadPoolExecutor(len(bodies)) as pool:
        sizes = list(pool.map(_decode, bodies))
    return {"seconds": time.perf_counter() - started, "sizes": sizes}


def _gallery(pids: list[str], base: str, key: str, cache: Path,
             connections: int | None) -> dict[str, Any]:
    import threading

    from topaz_nb.api.client import TopazClient
    from topaz_nb.batch.gallery import Gallery

    with TopazClient(api_key=key, base_url=base) as client, \
            _transfer(cache, connections) as transfer:
        statuses = [client.status(pid) for pid in pids]
        stamps: list[float] = []
        lock = threading.Lock()
        gallery = Gallery(pids, client=client, transfer=transfer, statuses=statuses)

        def on_card(card: Any) -> None:
            with lock:
                stamps.append(time.perf_counter())

        gallery.on_card(on_card)
        gallery.widget()  # the cards' widgets are updated as in a notebook
        started = time.perf_counter()
        gallery.start().wait()
        done = time.perf_counter()
        if gallery.errors:
            raise RuntimeError(f"gallery errors: {gallery.errors!r}")
    return {"seconds": done - started, "first_card_s": min(stamps) - started,
            "all_cards_s": done - started, "cards": len(stamps)}


def child(argv: list[str]) -> None:
    """``--child METHOD ARG...``: one measurement; prints its JSON on the last line."""
    import ipywidgets  # noqa: F401
    import requests  # noqa: F401
    from PIL import Image

    import topaz_nb.batch.gallery
    import topaz_nb.comparison
    import topaz_nb.widget  # noqa: F401

    Image.MAX_IMAGE_PIXELS = 512_000_000
    base, key = os.environ.get("TOPAZ_BENCH_BASE_URL", ""), os.environ.get(
        "TOPAZ_BENCH_API_KEY", "")
    method, *rest = argv
    conn = None if os.environ.get("TOPAZ_BENCH_CONNECTIONS", "") == "" \
        else int(os.environ["TOPAZ_BENCH_CONNECTIONS"])
    if method == "plain":
        result = _plain(rest[0], base, key)
    elif method == "ranged":
        result = _ranged(rest[0], base, key)
    elif method == "ours":
        result = _ours(rest[1], base, key, Path(rest[0]), conn)
    elif method == "decode":
        result = _decode_only(rest)
    elif method == "gallery":
        result = _gallery(rest[1:], base, key, Path(rest[0]), conn)
    else:
        raise SystemExit(f"unknown method {method!r}")
    print(json.dumps(result))


# -- the driver ---------------------------------------------------------------------------------

def _run(env: dict[str, str], *args: str, connections: int | None = None) -> dict[str, Any]:
    """One fresh interpreter; its answer with the 1-minute load average at its start."""
    load = os.getloadavg()[0]
    env = {**env, "TOPAZ_BENCH_CONNECTIONS": "" if connections is None else str(connections)}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", *args],
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{args[0]} failed: {done.stderr.strip()[-1500:]}")
    result = dict(json.loads(lines[-1]))
    result["load1"] = load
    return result


def _repeat(times: int, env: dict[str, str], *args: str, cold: bool = False,
            connections: int | None = None) -> list[dict[str, Any]]:
    runs = []
    for _ in range(times):
        if cold:
            with tempfile.TemporaryDirectory(prefix="topaz-netbench-") as tmp:
                runs.append(_run(env, args[0], tmp, *args[1:], connections=connections))
        else:
            runs.append(_run(env, *args, connections=connections))
    return runs


def _median(runs: list[dict[str, Any]], key: str = "seconds") -> float:
    return float(statistics.median(r[key] for r in runs))


def _connections_variants() -> list[tuple[str, int | None]]:
    """``Transfer``'s default, plus ``connections=1`` when it takes that argument."""
    from topaz_nb.storage import Transfer

    if "connections" in inspect.signature(Transfer).parameters:
        return [("topaz-nb cold", None), ("topaz-nb cold, connections=1", 1)]
    return [("topaz-nb cold", None)]


def _gallery_pair() -> tuple[Path, Path]:
    """A ~19 MB photo-like PNG and its 4× smaller JPEG, made once into bench/.cache/."""
    import workloads as wl

    out = wl.CACHE / f"net-gallery-{GALLERY_SIZE[0]}x{GALLERY_SIZE[1]}-output.png"
    inp = out.with_name(out.name.replace("-output.png", "-input.jpg"))
    if not (out.exists() and inp.exists()):
        image = wl._photo_like(GALLERY_SIZE)
        wl.CACHE.mkdir(parents=True, exist_ok=True)
        image.reduce(4).save(inp, "JPEG", quality=92)
        image.save(out, "PNG")
    return inp, out


def measure(xl: bool, repeats: int) -> dict[str, Any]:
    import workloads as wl

    from topaz_nb.sandbox import Link, Sandbox

    works = wl.ensure(["L-png", "XL"] if xl else ["L-png"])
    gallery_in, gallery_out = _gallery_pair()
    variants = _connections_variants()
    out: dict[str, Any] = {"link": {"per_connection": PER_CONNECTION, "shared": SHARED,
                                    "latency": LATENCY},
                           "workloads": {}, "gallery": {}}
    link = Link(per_connection=PER_CONNECTION, shared=SHARED, latency=LATENCY)
    with Sandbox(demo=False, link=link) as sb:
        env = {**os.environ, "TOPAZ_BENCH_BASE_URL": sb.base_url,
               "TOPAZ_BENCH_API_KEY": sb.api_key,
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get(
                   "PYTHONPATH", "")) if p)}
        for work in works:
            started = time.perf_counter()
            pid = sb.add_job(work.input_path, work.output_path)
            total = work.input_path.stat().st_size + work.output_path.stat().st_size
            rows: dict[str, Any] = {"bytes": total, "ideal_s": total / SHARED}
            rows["decode only"] = _repeat(repeats, env, "decode", str(work.input_path),
                                          str(work.output_path))
            rows["1 GET"] = _repeat(repeats, env, "plain", pid)
            rows[f"{RANGES} ranges"] = _repeat(repeats, env, "ranged", pid)
            for name, connections in variants:
                rows[name] = _repeat(repeats, env, "ours", pid, cold=True,
                                     connections=connections)
            out["workloads"][work.name] = rows
            print(f"measured {work.name} in {time.perf_counter() - started:.0f} s", flush=True)
        started = time.perf_counter()
        pids = [sb.add_job(gallery_in, gallery_out, filename=f"photo-{i:02d}.jpg", age=float(i))
                for i in range(GALLERY_N)]
        pair = gallery_in.stat().st_size + gallery_out.stat().st_size
        out["gallery"] = {"bytes_per_process": pair, "first_ideal_s": pair / SHARED,
                          "all_ideal_s": GALLERY_N * pair / SHARED, "runs": {},
                          "decode_pair": _repeat(repeats, env, "decode", str(gallery_in),
                                                 str(gallery_out))}
        for name, connections in variants:
            out["gallery"]["runs"][name] = _repeat(repeats, env, "gallery", *pids,
                                                   cold=True, connections=connections)
        print(f"measured the gallery in {time.perf_counter() - started:.0f} s", flush=True)
    return out


def _fmt(seconds: float, ideal: float) -> str:
    return f"{seconds:.2f} s ({seconds / ideal:.1f}×)"


def targets(out: dict[str, Any]) -> list[dict[str, Any]]:
    """The shaped link's targets with their figures (ratios in this run) and pass/fail."""
    found: list[dict[str, Any]] = []

    def add(what: str, value: float, limit: float) -> None:
        found.append({"target": what, "value": round(value, 3), "limit": limit,
                      "pass": value <= limit})

    ours = "topaz-nb cold"
    for name, rows in out["workloads"].items():
        if ours in rows and f"{RANGES} ranges" in rows:
            add(f"{name}: cold first view / '{RANGES} ranges, then decode'",
                _median(rows[ours]) / _median(rows[f"{RANGES} ranges"]), 1.0)
        if name == "XL" and ours in rows:
            add("XL: cold first view / link ideal", _median(rows[ours]) / rows["ideal_s"], 1.6)
    g = out["gallery"]
    if ours in g.get("runs", {}):
        add(f"gallery of {GALLERY_N}: first card / one process's link ideal",
            _median(g["runs"][ours], "first_card_s") / g["first_ideal_s"], 3.0)
        add(f"gallery of {GALLERY_N}: all cards / the batch's link ideal",
            _median(g["runs"][ours], "all_cards_s") / g["all_ideal_s"], 1.2)
    return found


def table(out: dict[str, Any]) -> str:
    """The Markdown tables of ``bench/README.md``: medians, and ratios to the link ideal."""
    lines = []
    for name, rows in out["workloads"].items():
        if not lines:
            heads = [k for k in rows if k not in ("bytes", "ideal_s")]
            lines += ["| workload | link ideal | " + " | ".join(heads) + " |",
                      "| --- " * (len(heads) + 2) + "|"]
        ideal = rows["ideal_s"]
        cells = [_fmt(_median(rows[h]), ideal) for h in heads]
        lines.append(f"| {name} ({rows['bytes'] / 1e6:.0f} MB) | {ideal:.2f} s | "
                     + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Transfer part (both bodies in, before decoding), median:")
    lines.append("")
    for name, rows in out["workloads"].items():
        parts = [f"{h} {_median(rows[h], 'transfer_s'):.2f} s" for h in rows
                 if h not in ("bytes", "ideal_s", "decode only")]
        lines.append(f"* {name}: " + ", ".join(parts))
    g = out["gallery"]
    lines += ["", f"Gallery of {GALLERY_N} processes ({g['bytes_per_process'] / 1e6:.1f} MB each):",
              "", "| | first card | all cards |", "| --- | --- | --- |",
              f"| link ideal | {g['first_ideal_s']:.2f} s | {g['all_ideal_s']:.2f} s |"]
    lines.append(f"| decode only (one process, no network) | "
                 f"{_median(g['decode_pair']):.2f} s | |")
    for name, runs in g["runs"].items():
        lines.append(f"| {name} | {_fmt(_median(runs, 'first_card_s'), g['first_ideal_s'])} | "
                     f"{_fmt(_median(runs, 'all_cards_s'), g['all_ideal_s'])} |")
    loads = [r["load1"] for rows in out["workloads"].values() for k, v in rows.items()
             if isinstance(v, list) for r in v]
    loads += [r["load1"] for runs in [*g["runs"].values(), g["decode_pair"]] for r in runs]
    lines += ["", (f"Load average (1 min) at the starts: {min(loads):.2f}–{max(loads):.2f} "
                   f"on {os.cpu_count()} CPUs.")]
    lines += ["", "| target | now | limit | |", "| --- | --- | --- | --- |"]
    lines += [f"| {t['target']} | {t['value']:.2f}× | {t['limit']}× | "
              f"{'met' if t['pass'] else 'not met'} |" for t in targets(out)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xl", action="store_true", help="also the 16384×12288 PNG (~400 MB)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = measure(args.xl, args.repeats)
    out.update(generated=time.strftime("%Y-%m-%dT%H:%M:%S%z"), cpus=os.cpu_count(),
               wall_seconds=time.perf_counter() - started)
    text = table(out)
    out["table"] = text
    out["targets"] = targets(out)
    print(text)
    args.output.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
