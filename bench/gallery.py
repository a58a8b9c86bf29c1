"""How a gallery of 500 processes behaves: time to the first card, to all cards, peak RSS.

    python bench/gallery.py                 # 500 processes, 4 workers
    python bench/gallery.py --n 100 --workers 8

The sandbox runs in this process with ``--n`` jobs (one photo-like input and
output, stored once and shared by every job, so each process still downloads
its own copy into its own cache folder); the gallery runs in a child process,
so its peak RSS (``ru_maxrss``) counts the client only.  The child lists the
processes with ``TopazClient.recent`` (paginated), then fetches the gallery
with a cold disk cache and reports:

* ``list_s``: listing all processes (pages of 100);
* ``first_card_s``: from the start of fetching to the first card filled in;
* ``all_cards_s``: to the last card;
* ``rss_before_mb`` / ``peak_rss_mb``: the child's resident set before
  fetching and its peak.

A bench, not a test: it prints figures and fails nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

CHILD = r"""
import json, resource, sys, threading, time
from topaz_nb.client import TopazClient
from topaz_nb.gallery import Gallery
from topaz_nb.transfer import Transfer

url, key, cache, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

with TopazClient(api_key=key, base_url=url) as client, Transfer(cache) as transfer:
    t0 = time.perf_counter()
    statuses = client.recent(limit=100_000)
    listed = time.perf_counter() - t0
    before = rss_mb()
    first = threading.Event()
    stamps = {}
    gallery = Gallery([s.process_id for s in statuses], client=client, transfer=transfer,
                      statuses=statuses, max_workers=workers)
    def on_card(card):
        if not first.is_set():
            stamps["first"] = time.perf_counter()
            first.set()
    gallery.on_card(on_card)
    gallery.widget()  # the cards' widgets are updated as in a notebook (no front end here)
    start = time.perf_counter()
    gallery.start().wait()
    end = time.perf_counter()
    print(json.dumps({
        "processes": len(gallery), "errors": len(gallery.errors),
        "list_s": round(listed, 2), "first_card_s": round(stamps["first"] - start, 3),
        "all_cards_s": round(end - start, 2), "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(rss_mb(), 1),
        "thumb_bytes": sum(len(d or b"") for c in gallery.cards for d in c.thumbs.values()),
    }))
"""


def photo_pair() -> tuple[bytes, bytes]:
    """A 1600×1200 JPEG output and its 400×300 JPEG input, from a bundled photo."""
    from PIL import Image, ImageFilter

    from topaz_nb.sandbox._demo import _photo

    big = _photo("coffee.jpg").resize((1600, 1200), Image.Resampling.BICUBIC)
    big = big.filter(ImageFilter.DETAIL)
    small = big.resize((400, 300), Image.Resampling.BILINEAR)
    out, inp = io.BytesIO(), io.BytesIO()
    big.save(out, "JPEG", quality=92)
    small.save(inp, "JPEG", quality=80)
    return inp.getvalue(), out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    from topaz_nb.sandbox import Sandbox

    inp, out = photo_pair()
    with Sandbox(demo=False) as sb, tempfile.TemporaryDirectory() as cache:
        for i in range(args.n):
            sb.add_job(inp, out, age=float(i), filename=f"photo-{i:04d}.jpg",
                       model=("Standard V2", "High Fidelity V2", "Low Resolution V2")[i % 3])
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run(
            [sys.executable, "-c", CHILD, sb.base_url, sb.api_key, cache, str(args.workers)],
            capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            sys.exit(done.stderr[-2000:])
        figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures.update(input_bytes=len(inp), output_bytes=len(out), workers=args.workers,
                   load=os.getloadavg(), cpus=os.cpu_count())
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
