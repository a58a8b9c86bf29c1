"""One measurement, run in a fresh process: ``python bench/methods.py METHOD ...``.

Every method runs in its own interpreter so that no decoded image or warm
cache leaks from one measurement into the next.  Its peak RSS is sampled from
outside by ``run.py`` (psutil, every 10 ms): ``ru_maxrss`` read in a child
can report the parent's peak.  Imports happen before the clock starts, for every
method alike: a notebook kernel has them loaded already.

The process prints one JSON object on its last stdout line: ``seconds`` (the
timed part), ``bytes_sent`` (what the first view sends to the browser),
``rss_end_mb`` (resident memory when the method ends) and method-specific
details.  The sandbox's address and key come
in the environment (``TOPAZ_BENCH_BASE_URL``, ``TOPAZ_BENCH_API_KEY``), never
on the command line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
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


def _rss_mb() -> float:
    """Resident memory of this process now, in MB."""
    import psutil

    return psutil.Process().memory_info().rss / 1e6


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
    """``Comparison.fetch`` + ``.view`` + ``_repr_mimebundle_``: everything the
    first view sends, made (the display bundle's fallback picture included)."""
    from topaz_nb.api.client import TopazClient
    from topaz_nb.comparison import Comparison
    from topaz_nb.storage import Transfer

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
    _wait_build_ahead(view)  # not timed: a shown view keeps building; let it finish
    return {
        "seconds": done - started,  # previews encoded and the display bundle made
        "bytes_sent": previews + fallback,
        "bytes_per_image": {"input": len(view.input_preview), "output": len(view.output_preview)},
        "phases": {"fetch": fetched - started, "view": built - fetched, "bundle": done - built},
        "fallback_bytes": fallback,
        "from_cache": {s: comparison.info[s].get("from_cache") for s in SIDES},
    }


def _wait_build_ahead(view: Any) -> None:
    for future in view._build_ahead():
        future.result()


def _pyramid_facts(comparison: Any) -> dict[str, Any]:
    from topaz_nb.imaging import pyramid as _pyramid

    source = comparison.source("output")
    path = source._pyramid_path
    return {"pyramid": source.has_pyramid, "pyramid_builds": _pyramid.builds,
            "pyramid_mb": path.stat().st_size / 1e6 if source.has_pyramid and path.exists()
            else None}


def _zoom(pid: str, cache: Path, pause: float, count: int = 100,
          seed: int = 1) -> dict[str, Any]:
    """The first view (as ``ours``), a pause, then zoom to 100 % at the centre
    and pan: ``count`` more random 1:1 tile pairs.

    Tiles go through ``CompareView``'s own handler (cut both sides, compress,
    send; only ``send`` is captured); with no event loop running in this
    script the handler cuts each tile before returning, so the time of a call
    is the tile's time.  The first tile includes any wait for the background
    preparation (pyramid or decode) still under way after ``pause`` seconds.
    """
    from topaz_nb.api.client import TopazClient
    from topaz_nb.comparison import Comparison
    from topaz_nb.imaging import pyramid as _pyramid
    from topaz_nb.storage import Transfer
    from topaz_nb.view.widget import TILE_PX

    build_times: list[float] = []
    real_build = _pyramid.build

    def timed_build(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real_build(*args, **kwargs)
        finally:
            build_times.append(time.perf_counter() - t0)

    _pyramid.build = timed_build  # type: ignore[assignment]
    base, key = _env()
    started = time.perf_counter()
    comparison = Comparison.fetch(pid, client=TopazClient(api_key=key, base_url=base),
                                  transfer=Transfer(cache_dir=cache))
    view = comparison.view
    view._repr_mimebundle_()
    shown = time.perf_counter() - started
    sent: list[Any] = []
    view.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]
    time.sleep(pause)
    width, height = view.sizes["output"]
    grid = [(ix, iy) for iy in range(height // TILE_PX) for ix in range(width // TILE_PX)]
    centre = (width // 2 // TILE_PX, height // 2 // TILE_PX)

    def ask(gen: int, tile: tuple[int, int]) -> float:
        t0 = time.perf_counter()
        view._on_tile_request(view, {"type": "tiles", "view": "bench", "gen": gen, "level": 1,
                                     "tiles": [list(tile)]}, [])
        return time.perf_counter() - t0

    first = ask(0, centre)
    rng = random.Random(seed)
    samples = [first] + [ask(gen, rng.choice(grid)) for gen in range(1, count + 1)]
    assert len(sent) == count + 1 and all(m["type"] == "tile" for m in sent), sent[:1]
    return {"seconds": first, "first_tile": first, "samples": samples, "view_seconds": shown,
            "pause": pause, "build_seconds": build_times, "rss_after_tiles_mb": _rss_mb(),
            **_pyramid_facts(comparison)}


def zoom_cold(pid: str, cache: Path) -> dict[str, Any]:
    """Cold first view, the user looks for 2 s, then zooms to 100 % and pans."""
    return _zoom(pid, cache, pause=2.0)


def zoom_warm(pid: str, cache: Path) -> dict[str, Any]:
    """Warm first view (files and pyramid on disk: a new kernel), zoom at once."""
    return _zoom(pid, cache, pause=0.0)


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


def naive_jpeg(pid: str, cache: Path) -> dict[str, Any]:
    """Sequential requests, full decode, full-resolution JPEG q90 into ``ipywidgets.Image``."""
    import ipywidgets

    started = time.perf_counter()
    bodies = _download_sequential(pid)
    jpegs = []
    for side in SIDES:
        image = Image.open(io.BytesIO(bodies[side]))
        image.load()
        buf = io.BytesIO()
        image.convert("RGB").save(buf, "JPEG", quality=90)
        jpegs.append(buf.getvalue())
        del image
    widgets = [ipywidgets.Image(value=data, format="jpeg") for data in jpegs]
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
    """Both links, both bodies downloaded in parallel in 1 MiB reads, each decoded
    once as cheaply as the product may: a JPEG larger than the 2048-px preview
    at the reduced scale the product drafts it to (down to 90 % of the preview
    size), everything else in full.  Nothing else."""
    base, key = _env()
    preview = 2048

    def one(side: str) -> tuple[int, int]:
        body = io.BytesIO()
        with (requests.Session() as session,
              session.get(_link(session, base, key, pid, side), timeout=300,
                          stream=True) as resp):
            resp.raise_for_status()
            for chunk in resp.iter_content(1 << 20):
                body.write(chunk)
        body.seek(0)
        image = Image.open(body)
        if image.format == "JPEG" and max(image.size) > preview:
            s = preview / max(image.size) * 0.9
            image.draft(image.mode, (int(image.width * s), int(image.height * s)))
        image.load()
        return image.size

    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        sizes = list(pool.map(one, SIDES))
    return {"seconds": time.perf_counter() - started, "bytes_sent": 0, "sizes": sizes}


METHODS: dict[str, Callable[[str, Path], dict[str, Any]]] = {
    "ours": ours, "naive": naive, "naive_jpeg": naive_jpeg, "compare_view": compare_view,
    "lower_bound": lower_bound, "zoom_cold": zoom_cold, "zoom_warm": zoom_warm,
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
    result["rss_end_mb"] = _rss_mb()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
