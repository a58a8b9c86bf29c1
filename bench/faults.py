"""How long a user waits when things go wrong: Ctrl-C, and no network.

    python bench/faults.py            # 5 runs of each; prints medians and spreads

The test suite shows *that* Ctrl-C stops a fetch and *that* an unreachable
host is reported (with events and recorded waits, never with clocks); this
measures *how soon*, from the user's side, in fresh processes:

* **Ctrl-C → prompt back**: a ``topaz-nb fetch`` and a ``%topaz`` cell in an
  IPython shell, each against a local sandbox whose storage holds every
  request for ten minutes.  The clock starts when SIGINT is sent (after the
  sandbox has seen the request) and stops when the process has exited, which
  includes the interpreter's shutdown: everything the user waits for.
* **no network → first line**: ``topaz-nb links`` against a host name that
  cannot resolve (``*.invalid``) and against a closed port, from process start
  to exit (the error is the first and only line).

Targets from the product's promises: Ctrl-C ≤ 2 s, first feedback offline ≤ 5 s.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from topaz_nb.sandbox import Sandbox

RUNS = 5
_GIVE_UP = 60.0
"""Seconds after which a run counts as hung (shown as ``inf``)."""
_CELL = """
import sys
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "topaz_nb")
shell.run_cell("r = %topaz " + sys.argv[1])
"""


def _interrupt_seconds(box: Sandbox, argv: list[str], env: dict[str, str]) -> float:
    seen = len(box.requests)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not any(r.server == "storage" for r in box.requests[seen:]):
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the fetch never reached storage")
        time.sleep(0.01)
    started = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(_GIVE_UP)
    except subprocess.TimeoutExpired:  # still running: reported as "more than _GIVE_UP"
        proc.kill()
        proc.wait()
        return float("inf")
    return time.perf_counter() - started


def _exit_seconds(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    try:
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=_GIVE_UP, check=False)
    except subprocess.TimeoutExpired:
        return float("inf")
    return time.perf_counter() - started


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _row(name: str, samples: list[float], target: float) -> str:
    med = statistics.median(samples)
    verdict = "pass" if max(samples) <= target else "FAIL"
    return (f"{name:<34} median {med:5.2f} s  min {min(samples):5.2f}  "
            f"max {max(samples):5.2f}  target ≤ {target:g} s  {verdict}")


def main() -> None:
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"{os.cpu_count()} cores, {RUNS} runs each")
    with tempfile.TemporaryDirectory() as tmp, Sandbox() as box:
        env = dict(os.environ, TOPAZ_API_URL=box.base_url, TOPAZ_API_KEY=box.api_key,
                   IPYTHONDIR=str(Path(tmp) / "ipython"))
        cli, magic = [], []
        for i in range(RUNS):
            for kind, samples in (("cli", cli), ("magic", magic)):
                pid = box.add_job(box_image(i), box_image(i, 4))
                box.inject("latency", server="storage", seconds=600, path=pid)
                run_env = dict(env, TOPAZ_NB_CACHE=str(Path(tmp) / f"cache-{kind}-{i}"))
                argv = ([sys.executable, "-m", "topaz_nb.cli", "fetch", pid, "-o",
                         str(Path(tmp) / f"out-{i}")] if kind == "cli"
                        else [sys.executable, "-c", _CELL, pid])
                samples.append(_interrupt_seconds(box, argv, run_env))
        pid = str(uuid.uuid4())
        offline_env = dict(os.environ, TOPAZ_API_KEY="bench-key")
        dns = [_exit_seconds([sys.executable, "-m", "topaz_nb.cli", "--api-url",
                              "https://api.topaz-nb-bench.invalid/v1", "links", pid], offline_env)
               for _ in range(RUNS)]
        refused = [_exit_seconds([sys.executable, "-m", "topaz_nb.cli", "--api-url",
                                  f"http://127.0.0.1:{_closed_port()}/v1", "links", pid],
                                 offline_env) for _ in range(RUNS)]
    print(_row("Ctrl-C → exit, topaz-nb fetch", cli, 2))
    print(_row("Ctrl-C → exit, %topaz in IPython", magic, 2))
    print(_row("offline (no DNS) → error, topaz-nb", dns, 5))
    print(_row("refused port → error, topaz-nb", refused, 5))


def box_image(seed: int, scale: int = 1) -> object:
    from PIL import Image

    return Image.new("RGB", (64 * scale, 48 * scale), (seed * 40 % 256, 90, 160))


if __name__ == "__main__":
    main()
