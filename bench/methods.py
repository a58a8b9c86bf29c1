"""One measurement, run in a fresh process: ``python bench/methods.py METHOD ...``.

Every method runs in its own interpreter so that its peak RSS
(``ru_maxrss``) is its own and no decoded image or warm cache leaks from one
measurement into the next.  Imports happen before the clock starts, for every
method alike: a notebook kernel has them loaded already.

The process prints one JSON object on its last stdout line: ``seconds`` (the
timed part), ``bytes_sent`` (what the first view sends to the browser),
``maxrss_mb`` and method-specific details.  The sandbox's address and key come
in the environment (``TOPAZ_BENCH_BASE_URL``, ``TOPAZ_BENCH_API_KEY``), never
on the command line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

Image.MAX_IMAGE_PIXELS = 512_000_000  # the API's own maximum: XL outputs are legitimate
SIDES = ("input", "output")


def _env() -> tuple[str, str]:
    return os.environ["TOPAZ_BENCH_BASE_URL"], os.environ["TOPAZ_BENCH_API_KEY"]


def _maxrss_mb() -> float:
    """Peak resident memory of this process, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _link(session: requests.Session, base: str, key: str, pid: str, side: str) -> str:
    path = f"/download/{pid}" if side == "output" else f"/download/input/{pid}"
    resp = session.get(base + path, headers={"X-API-Key": key}, timeout=60)
    resp.raise_for_status()
    return str(resp.json()["download_url"])


def _mimebundle_bytes(bundle: Any) -> int:
    """Bytes of a display bundle's data as the kernel would send it (JSON strings)."""
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    total = 0
    for value in (data or {}).values():
        text = value if isinstance(value, str) else json.dumps(value)
        total += len(text.encode("utf-8"))
    return total


# -- topaz_nb -------------------------------------------------------------------------------

def ours(pid: str, cache: Path) -> dict[str, Any]:
    """``Comparison.fetch`` + ``.view``: both previews ready to send.

    The display bundle (the widget-less fallback) is made too, outside the
    timed part, because its bytes go to the browser with the first view.
    """
    from topaz_nb.client import TopazClient
    from topaz_nb.comparison import Comparison
    from topaz_nb.transfer import Transfer

    base, key = _env()
    client, transfer = TopazClient(api_key=key, base_url=base), Transfer(cache_dir=cache)
    started = time.perf_counter()
    comparison = Comparison.fetch(pid, client=client, transfer=transfer)
    fetched = time.perf_counter()
    view = comparison.view
    built = time.perf_counter()
    bundle = view._repr_mimebundle_()
    done = time.perf_counter()
    previews = len(view.input_preview) + len(view.output_preview)
    fallback = _mimebundle_bytes(bundle)
    return {
        "seconds": built - started,  # both previews encoded, ready to send
        "bytes_sent": previews + fallback,
        "bytes_per_image": {"input": len(view.input_preview), "output": len(view.output_preview)},
        "phases": {"fetch": fetched - started, "view": built - fetched, "bundle": done - built},
        "fallback_bytes": fallback,
        "from_cache": {s: comparison.info[s].get("from_cache") for s in SIDES},
    }


def tiles(pid: str, cache: Path, count: int = 200, seed: int = 1) -> dict[str, Any]:
    """Random 1:1 tile pairs, served by the widget's own tile handler.

    A request for one grid tile at level 1 goes through ``CompareView``'s
    message handler exactly as a browser's would (cut both sides, compress
    them in parallel, send); only ``send`` is captured instead of reaching a
    front end.
    """
    from topaz_nb.client import TopazClient
    from topaz_nb.comparison import Comparison
    from topaz_nb.transfer import Transfer
    from topaz_nb.widget import TILE_PX, CompareView

    class _Captured(CompareView):
        def send(self, content: Any, buffers: Any = None) -> None:  # noqa: D102
            self.sent.append((content, buffers))

    base, key = _env()
    comparison = Comparison.fetch(pid, client=TopazClient(api_key=key, base_url=base),
                                  transfer=Transfer(cache_dir=cache))
    view = _Captured(comparison.source("input"), comparison.source("output"), preview_size=512)
    view.sent = []
    width, height = view.sizes["output"]
    grid = [(ix, iy) for iy in range(height // TILE_PX) for ix in range(width // TILE_PX)]

    def ask(gen: int, tile: tuple[int, int]) -> None:
        view._on_tile_request(view, {"type": "tiles", "view": "bench", "gen": gen, "level": 1,
                                     "tiles": [list(tile)]}, [])

    started = time.perf_counter()
    ask(0, grid[0])  # the first tile decodes both full images
    first = time.perf_counter() - started
    rng = random.Random(seed)
    samples = []
    for gen in range(1, count + 1):
        t0 = time.perf_counter()
        ask(gen, rng.choice(grid))
        samples.append(time.perf_counter() - t0)
    assert len(view.sent) == count + 1 and all(m["type"] == "tile" for m, _ in view.sent)
    return {"seconds": first, "samples": samples, "first_tile_decode": first}


# -- baselines ------------------------------------------------------------------------------

def _download_sequential(pid: str) -> dict[str, bytes]:
    base, key = _env()
    session = requests.Session()
    urls = {side: _link(session, base, key, pid, side) for side in SIDES}
    return {side: session.get(urls[side], timeout=300).content for side in SIDES}


def naive(pid: str, cache: Path) -> dict[str, Any]:
    """Sequential requests, full decode, full-resolution PNGs into ``ipywidgets.Image``."""
    import ipywidgets

    started = time.perf_counter()
    bodies = _download_sequential(pid)
    pngs = []
    for side in SIDES:
        image = Image.open(io.BytesIO(bodies[side]))
        image.load()
        buf = io.BytesIO()
        image.save(buf, "PNG")
        pngs.append(buf.getvalue())
        del image
    widgets = [ipywidgets.Image(value=png, format="png") for png in pngs]
    done = time.perf_counter()
    return {"seconds": done - started, "bytes_sent": sum(len(w.value) for w in widgets)}


def compare_view(pid: str, cache: Path) -> dict[str, Any]:
    """Sequential requests, full decode, then jupyter-compare-view's ``compare()``."""
    from jupyter_compare_view import compare

    started = time.perf_counter()
    bodies = _download_sequential(pid)
    images = []
    for side in SIDES:
        image = Image.open(io.BytesIO(bodies[side]))
        image.load()
        images.append(image)
    loaded = time.perf_counter()
    html = compare(images[0], images[1]).data
    done = time.perf_counter()
    return {"seconds": done - started, "bytes_sent": len(html.encode("utf-8")),
            "phases": {"fetch_decode": loaded - started, "compare": done - loaded}}


def lower_bound(pid: str, cache: Path) -> dict[str, Any]:
    """Both links, both bodies downloaded in parallel, each decoded once: nothing else."""
    base, key = _env()

    def one(side: str) -> tuple[int, int]:
        with requests.Session() as session:
            body = session.get(_link(session, base, key, pid, side), timeout=300).content
        image = Image.open(io.BytesIO(body))
        image.load()
        return image.size

    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        sizes = list(pool.map(one, SIDES))
    return {"seconds": time.perf_counter() - started, "bytes_sent": 0, "sizes": sizes}


METHODS: dict[str, Callable[[str, Path], dict[str, Any]]] = {
    "ours": ours, "naive": naive, "compare_view": compare_view, "lower_bound": lower_bound,
    "tiles": tiles,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method", choices=sorted(METHODS))
    parser.add_argument("pid")
    parser.add_argument("--cache", type=Path, required=True)
    args = parser.parse_args(argv)
    # Import everything the methods use before any clock starts.
    import ipywidgets  # noqa: F401

    import topaz_nb.comparison
    import topaz_nb.widget  # noqa: F401
    try:
        import jupyter_compare_view  # noqa: F401
    except ImportError:
        pass
    result = METHODS[args.method](args.pid, args.cache)
    result["maxrss_mb"] = _maxrss_mb()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
