"""The swipe drag in a real browser: frames per second and kernel traffic.

A JupyterLab server (started as the browser tests start it, from
``tests/browser_support.py``) shows a CompareView of the S workload in
Chromium.  The swipe divider is dragged across for about 2 s in many small
``page.mouse.move`` steps while the page counts:

* animation frames (an independent ``requestAnimationFrame`` loop: what the
  browser could show) and the widget's own redraws (its rAF callbacks);
* comm messages sent to the kernel (``WebSocket.prototype.send`` is wrapped
  before the page loads), to show the drag does not cost a round trip per frame.

Afterwards the kernel's ``position`` is read back and compared with the
position of the pointer where the drag ended, after the drag has settled.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

DRAG_SECONDS = 2.0
TARGETS = {"fps": 55.0}

_COUNTERS = """
(() => {
  const w = window;
  w.__bench = {frames: 0, widgetFrames: 0, sends: 0, commSends: 0, on: false};
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    if (w.__bench.on) {
      w.__bench.sends += 1;
      const text = typeof data === 'string' ? data : new TextDecoder().decode(
        data instanceof ArrayBuffer ? new Uint8Array(data) : data);
      if (text.includes('"comm_msg"')) w.__bench.commSends += 1;
    }
    return send.call(this, data);
  };
  const raf = w.requestAnimationFrame.bind(w);
  w.requestAnimationFrame = (cb) => raf((t) => {
    if (w.__bench.on) w.__bench.widgetFrames += 1;
    return cb(t);
  });
  const tick = () => { if (w.__bench.on) w.__bench.frames += 1; raf(tick); };
  raf(tick);
})();
"""


def unavailable() -> str | None:
    """Why the browser bench cannot run here, or ``None``."""
    try:
        import browser_support
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -r bench/requirements.txt)"
    if not browser_support.CHROMIUM.exists():
        return f"no Chromium at {browser_support.CHROMIUM} (apt-get install chromium)"
    return None


def _notebook_cells(input_path: Path, output_path: Path) -> list[str]:
    return [(
        "from topaz_nb.widget import CompareView\n"
        f"v = CompareView({str(input_path)!r}, {str(output_path)!r}, height=600)\nv"
    )]


def _drag(page: Any) -> dict[str, Any]:
    """Drag the divider from its place to 85 % of the stage in ~2 s of small steps."""
    stage = page.locator(".tnb-stage").first.bounding_box()
    divider = page.locator(".tnb-divider").first.bounding_box()
    y = stage["y"] + stage["height"] / 2
    x0 = divider["x"] + divider["width"] / 2
    x1 = stage["x"] + stage["width"] * 0.85
    page.mouse.move(x0, y)
    page.mouse.down()
    page.evaluate("() => { Object.assign(window.__bench, {frames: 0, widgetFrames: 0, "
                  "sends: 0, commSends: 0, on: true}); }")
    started = time.perf_counter()
    steps = 0
    while (elapsed := time.perf_counter() - started) < DRAG_SECONDS:
        x = x0 + (x1 - x0) * min(1.0, elapsed / (DRAG_SECONDS * 0.95))
        page.mouse.move(x, y)
        steps += 1
    page.mouse.move(x1, y)
    duration = time.perf_counter() - started
    counts = page.evaluate("() => { window.__bench.on = false; return window.__bench; }")
    page.mouse.up()
    expected = (x1 - stage["x"]) / stage["width"]
    return {"seconds": duration, "moves": steps + 1, "frames": counts["frames"],
            "widget_frames": counts["widgetFrames"], "kernel_messages": counts["commSends"],
            "websocket_sends": counts["sends"], "expected_position": expected}


def run() -> dict[str, Any]:
    """Start Jupyter and Chromium, show the S comparison, drag, measure."""
    import browser_support as bs
    import workloads

    work = workloads.ensure(["S"])[0]
    with tempfile.TemporaryDirectory(prefix="topaz-bench-lab-") as tmp:
        root = Path(tmp)
        bs.write_notebook(root / "bench.ipynb", _notebook_cells(work.input_path,
                                                                 work.output_path))
        with bs.jupyter_server(root) as server, bs.launch_browser() as page:
            page.add_init_script(_COUNTERS)
            bs.open_notebook(page, server, "bench.ipynb")
            bs.run_all(page)
            page.wait_for_selector(".tnb-canvas", timeout=60_000)
            page.wait_for_timeout(1500)  # previews decoded and drawn
            drag = _drag(page)
            page.wait_for_timeout(800)  # the last throttled update reaches the kernel
            kernel = float(bs.run_code(page, "print(round(v.position, 4))").split()[-1])
    fps = float(drag["frames"]) / drag["seconds"]
    result = {
        **drag, "fps": fps, "widget_redraws_per_s": drag["widget_frames"] / drag["seconds"],
        "kernel_messages_per_s": drag["kernel_messages"] / drag["seconds"],
        "kernel_position": kernel,
        "position_error": abs(kernel - drag["expected_position"]),
        "chromium": str(bs.CHROMIUM), "viewport": [1280, 900],
    }
    frames = drag["widget_frames"] or 1
    result["targets"] = {
        "fps": {"value": fps, "limit": TARGETS["fps"], "pass": fps >= TARGETS["fps"]},
        "no_round_trip_per_frame": {"value": drag["kernel_messages"] / frames, "limit": 0.5,
                                    "pass": drag["kernel_messages"] <= 0.5 * frames},
        "final_position_synced": {"value": result["position_error"], "limit": 0.01,
                                  "pass": result["position_error"] <= 0.01},
    }
    return result


def describe(result: dict[str, Any]) -> str:
    """A few lines for the printed table."""
    lines = [
        f"front end (S, swipe drag {result['seconds']:.1f} s, {result['moves']} pointer moves):",
        (f"  {result['fps']:.1f} fps (page frames), widget redraws {result['widget_frames']} "
         f"({result['widget_redraws_per_s']:.1f}/s)"),
        (f"  kernel messages during drag: {result['kernel_messages']} "
         f"({result['kernel_messages_per_s']:.1f}/s)"),
        (f"  final position: kernel {result['kernel_position']:.4f}, page "
         f"{result['expected_position']:.4f}"),
    ]
    for key, check in result["targets"].items():
        mark = "PASS" if check["pass"] else "MISS"
        lines.append(f"  {mark} {key}: {check['value']:.3g} (limit {check['limit']:.3g})")
    return "\n".join(lines)


if __name__ == "__main__":
    problem = unavailable()
    if problem:
        print(problem)
        sys.exit(2)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print(describe(run()))
