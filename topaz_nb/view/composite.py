"""Static pictures of a comparison: the composite image and the standalone page.

A notebook is often read where no widget can run (GitHub, nbviewer, nbconvert,
a colleague's e-mail).  What those readers get is built here from the same
previews the widget shows, so the static picture matches the live view's mode
and divider position.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageChops, ImageDraw, ImageFont

from .modes import BLEND_DEFAULT, DIFF_GAIN

BACKGROUND = (31, 31, 31)
"""The stage colour, also behind any part of the grid the input does not cover."""


_GAP = 4
_ASCII = str.maketrans({"×": "x", "−": "-", "→": "->"})


@dataclass(frozen=True)
class Scene:
    """Everything a static picture depends on."""

    input: Image.Image
    output: Image.Image
    output_size: tuple[int, int]
    placement: tuple[float, float, float, float]
    labels: tuple[str, str]
    mode: str = "swipe"
    orientation: str = "vertical"
    position: float = 0.5
    opacity: float = BLEND_DEFAULT
    showing: str = "output"


def _layers(scene: Scene, width: int) -> tuple[Image.Image, Image.Image]:
    """Both images drawn on the output grid scaled to ``width``, over the stage colour."""
    ow, oh = scene.output_size
    s = width / ow
    height = max(1, round(oh * s))
    out = Image.new("RGB", (width, height), BACKGROUND)
    _paste_scaled(out, scene.output, (0, 0), (width, height))

    inp = Image.new("RGB", (width, height), BACKGROUND)
    px, py, pw, ph = scene.placement
    box = (round(px * s), round(py * s), round((px + pw) * s), round((py + ph) * s))
    size = (max(1, box[2] - box[0]), max(1, box[3] - box[1]))
    _paste_scaled(inp, scene.input, box[:2], size)
    return inp, out


def _visible(canvas: tuple[int, int], at: tuple[int, int], size: tuple[int, int],
             source: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int],
                                               tuple[float, float, float, float]] | None:
    """The part of a ``size`` rectangle at ``at`` that lies on the canvas:
    where it goes, its size, and the box of a ``source``-sized image drawn
    there; ``None`` when none of it does.

    An input cropped to fill can reach far past the output (a 1000×2 input
    over a 2×1000 output spans 500 000 of its pixels), so only what shows is
    ever resampled."""
    x, y = at
    w, h = size
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(canvas[0], x + w), min(canvas[1], y + h)
    if x1 <= x0 or y1 <= y0:
        return None
    sx, sy = source[0] / w, source[1] / h
    return ((x0, y0), (x1 - x0, y1 - y0),
            ((x0 - x) * sx, (y0 - y) * sy, (x1 - x) * sx, (y1 - y) * sy))


def _paste_scaled(canvas: Image.Image, im: Image.Image, at: tuple[int, int],
                  size: tuple[int, int], reducing_gap: float | None = 1.0) -> None:
    """Paste ``im`` resized to ``size`` (the part of it on the canvas).

    An opaque image needs no RGBA copy, and a box reduce by the whole factor
    before LANCZOS (``reducing_gap=1``) makes two 2000-px previews into an
    800-px still in a fraction of the time: the display bundle of S went from
    134 to ~55 ms, measured with ``_repr_mimebundle_``.
    """
    part = _visible(canvas.size, at, size, im.size)
    if part is None:
        return
    where, visible, box = part
    if im.mode not in ("RGB", "RGBA"):
        im = im.convert("RGBA")
    src = im.resize(visible, Image.Resampling.LANCZOS, box=box, reducing_gap=reducing_gap)
    canvas.paste(src, where, src if src.mode == "RGBA" else None)


def _font(width: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(11, min(22, width // 55)))


def _label(img: Image.Image, text: str, anchor: str, x0: int = 0, x1: int | None = None) -> None:
    """Draw a label in a dark rounded box at a corner (``tl``, ``tr`` or ``bl``)."""
    draw = ImageDraw.Draw(img)
    font = _font(img.width)
    # Pillow's built-in font has no multiplication or minus sign.
    text = text.translate(_ASCII)
    x1 = img.width if x1 is None else x1
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left, bottom - top
    pad, margin = 5, 8
    x = x0 + margin if anchor in ("tl", "bl") else x1 - margin - tw - 2 * pad
    y = margin if anchor in ("tl", "tr") else img.height - margin - th - 2 * pad
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    ImageDraw.Draw(overlay).rounded_rectangle(
        (x, y, x + tw + 2 * pad, y + th + 2 * pad), radius=3, fill=(0, 0, 0, 150))
    img.paste(Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB"))
    ImageDraw.Draw(img).text((x + pad - left, y + pad - top), text, font=font,
                             fill=(255, 255, 255))


def compose(scene: Scene, width: int) -> Image.Image:
    """An RGB picture of ``scene`` as the widget shows it when fitted, ``width`` px wide."""
    width = max(16, int(width))
    a, b = scene.labels
    if scene.mode == "side-by-side":
        pane = max(8, (width - _GAP) // 2)
        left, _ = _layers(scene, pane)
        _, right = _layers(scene, pane)
        img = Image.new("RGB", (pane * 2 + _GAP, left.height), (255, 255, 255))
        img.paste(left, (0, 0))
        img.paste(right, (pane + _GAP, 0))
        _label(img, a, "tl", 0, pane)
        _label(img, b, "tl", pane + _GAP, img.width)
        return img

    inp, out = _layers(scene, width)
    if scene.mode == "blend":
        img = Image.blend(inp, out, scene.opacity)
        _label(img, f"{a}  {round((1 - scene.opacity) * 100)}%", "tl")
        _label(img, f"{b}  {round(scene.opacity * 100)}%", "tr")
    elif scene.mode == "difference":
        img = ImageChops.difference(inp, out).point(lambda v: min(255, v * DIFF_GAIN))
        _label(img, f"|{b} − {a}| × {DIFF_GAIN}", "tl")
    elif scene.mode == "toggle":
        img = inp if scene.showing == "input" else out
        _label(img, a if scene.showing == "input" else b, "tl")
    else:
        img = out.copy()
        draw = ImageDraw.Draw(img)
        if scene.orientation == "horizontal":
            split = round(scene.position * img.height)
            img.paste(inp.crop((0, 0, img.width, split)), (0, 0))
            draw.rectangle((0, split - 2, img.width, split + 1), fill=(0, 0, 0))
            draw.rectangle((0, split - 1, img.width, split), fill=(255, 255, 255))
            _label(img, a, "tl")
            _label(img, b, "bl")
        else:
            split = round(scene.position * img.width)
            img.paste(inp.crop((0, 0, split, img.height)), (0, 0))
            draw.rectangle((split - 2, 0, split + 1, img.height), fill=(0, 0, 0))
            draw.rectangle((split - 1, 0, split, img.height), fill=(255, 255, 255))
            _label(img, a, "tl")
            _label(img, b, "tr")
    return img


def grid_shape(n: int, width: float, height: float, aspect: float) -> tuple[int, int]:
    """Columns and rows for ``n`` panes of ``aspect`` (w/h) in a ``width × height``
    area, chosen so each pane is as large as possible (as the front end does)."""
    best, shape = -1.0, (n, 1)
    for cols in range(1, n + 1):
        rows = -(-n // cols)
        pw, ph = width / cols, height / rows
        size = min(pw, ph * aspect)
        if size > best + 1e-9:
            best, shape = size, (cols, rows)
    return shape


def compose_grid(previews: list[Image.Image], rects: list[tuple[float, float, float, float]],
                 output_size: tuple[int, int], labels: list[str], width: int) -> Image.Image:
    """Every pane on the output grid, tiled in rows, each labelled."""
    width = max(16, int(width))
    ow, oh = output_size
    n = len(previews)
    cols, rows = grid_shape(n, width, width * 0.75, ow / oh)
    pane_w = max(8, (width - _GAP * (cols - 1)) // cols)
    s = pane_w / ow
    pane_h = max(1, round(oh * s))
    img = Image.new("RGB", (cols * pane_w + _GAP * (cols - 1), rows * pane_h + _GAP * (rows - 1)),
                    (255, 255, 255))
    for i, (preview, rect, label) in enumerate(zip(previews, rects, labels)):
        tile = Image.new("RGB", (pane_w, pane_h), BACKGROUND)
        px, py, pw, ph = rect
        box = (round(px * s), round(py * s), round((px + pw) * s), round((py + ph) * s))
        size = (max(1, box[2] - box[0]), max(1, box[3] - box[1]))
        _paste_scaled(tile, preview.convert("RGBA"), box[:2], size, reducing_gap=None)
        _label(tile, label, "tl")
        img.paste(tile, ((i % cols) * (pane_w + _GAP), (i // cols) * (pane_h + _GAP)))
    return img


def compose_fidelity(output: Image.Image, overlay: Image.Image,
                     rect: tuple[float, float, float, float], output_size: tuple[int, int],
                     regions: list[list[float]], opacity: float, label: str,
                     width: int) -> Image.Image:
    """An output under its fidelity heat map (``overlay`` placed at ``rect``), regions outlined."""
    width = max(16, int(width))
    ow, oh = output_size
    s = width / ow
    height = max(1, round(oh * s))
    img = Image.new("RGB", (width, height), BACKGROUND)
    src = output.convert("RGBA").resize((width, height), Image.Resampling.LANCZOS)
    img.paste(src, (0, 0), src)
    px, py, pw, ph = rect
    box = (round(px * s), round(py * s), round((px + pw) * s), round((py + ph) * s))
    part = _visible(img.size, box[:2], (max(1, box[2] - box[0]), max(1, box[3] - box[1])),
                    overlay.size)
    if part is not None:
        where, visible, source_box = part
        heat = overlay.resize(visible, Image.Resampling.BILINEAR, box=source_box)
        alpha = heat.getchannel("A").point(lambda v: round(v * opacity))
        heat.putalpha(alpha)
        img.paste(heat, where, heat)
    draw = ImageDraw.Draw(img)
    for x, y, w, h in regions:
        draw.rectangle((round(x * s), round(y * s), round((x + w) * s), round((y + h) * s)),
                       outline=(80, 220, 255), width=2)
    _label(img, label, "tl")
    return img


def compact_jpeg(img: Image.Image, *, max_width: int = 800, limit: int = 300_000) -> bytes:
    """A JPEG of ``img`` no wider than ``max_width`` and no larger than ``limit`` bytes.

    Notebook files carry this picture for readers without widgets, so it must
    stay small whatever the photo: quality, then size, step down until it fits.
    """
    if img.width > max_width:
        img = img.resize((max_width, max(1, round(img.height * max_width / img.width))),
                         Image.Resampling.LANCZOS)
    img = img.convert("RGB")
    while True:
        for quality in (80, 65, 50):
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=quality, optimize=True)
            if buf.tell() <= limit:
                return buf.getvalue()
        img = img.resize((max(1, img.width * 3 // 4), max(1, img.height * 3 // 4)),
                         Image.Resampling.LANCZOS)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ margin: 16px; font-family: system-ui, sans-serif; background: #fff; }}
.topaz-page-heading {{ margin: 0 0 8px; font-size: 15px; font-weight: 600;
  font-family: ui-monospace, monospace; overflow-wrap: anywhere; }}
.topaz-page-details {{ margin-top: 16px; max-width: 100%; overflow-x: auto; }}
.topaz-page-details th {{ text-align: left; }}
{css}
</style>
</head>
<body>
{heading}<div id="topaz-compare"></div>
{details}<script type="application/json" id="topaz-compare-state">{state}</script>
<script type="text/plain" id="topaz-compare-esm">{esm}</script>
<script type="module">
// A small stand-in for the widget model: the page has no kernel, so changes
// stay local and tile requests go unanswered (the previews stay on screen).
const state = JSON.parse(document.getElementById("topaz-compare-state").textContent);
const unpack = (text) => {{
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return new DataView(bytes.buffer);
}};
const revive = (v) => {{
  if (Array.isArray(v)) return v.map(revive);
  if (v && typeof v === "object") {{
    if (typeof v.__b64__ === "string") return unpack(v.__b64__);
    for (const k of Object.keys(v)) v[k] = revive(v[k]);
  }}
  return v;
}};
for (const key of Object.keys(state)) {{
  state[key] = state.__binary__.includes(key) ? unpack(state[key]) : revive(state[key]);
}}
const handlers = new Map();
const model = {{
  get: (key) => state[key],
  set(key, value) {{
    const same = JSON.stringify(state[key]) === JSON.stringify(value);
    state[key] = value;
    if (!same) for (const fn of handlers.get("change:" + key) || []) fn();
  }},
  on(name, fn) {{
    if (!handlers.has(name)) handlers.set(name, new Set());
    handlers.get(name).add(fn);
  }},
  off(name, fn) {{ handlers.get(name)?.delete(fn); }},
  save_changes() {{}},
  send() {{}},
}};
const esm = document.getElementById("topaz-compare-esm").textContent;
const url = URL.createObjectURL(new Blob([esm], {{ type: "text/javascript" }}));
const widget = (await import(url)).default;
URL.revokeObjectURL(url);
const host = document.getElementById("topaz-compare");
widget.render({{ model, el: host }});
// The comparison takes the window's height (what is left below the heading
// and the toolbar), never less than a small stage; the details follow below.
const fitHeight = () => {{
  const stage = host.querySelector(".tnb-stage");
  if (!stage) return;
  const top = stage.getBoundingClientRect().top + window.scrollY;
  model.set("height", Math.max(240, Math.floor(window.innerHeight - top - 16)));
}};
fitHeight();
window.addEventListener("resize", fitHeight);
</script>
</body>
</html>
"""


def _nested_binary(value: Any) -> Any:
    """Bytes inside lists and dicts (a shoot-out's further previews) as ``{"__b64__": ...}``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"__b64__": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {k: _nested_binary(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nested_binary(v) for v in value]
    return value


def standalone_page(*, title: str, state: dict[str, Any], esm: str, css: str,
                    heading: str | None = None, details_html: str = "") -> str:
    """A self-contained HTML page running ``esm`` on ``state``; bytes values become base64.

    ``heading`` (text, escaped here) goes above the comparison and
    ``details_html`` below it: HTML made by this package with every value
    escaped (``_text.html_table``), never text from elsewhere.
    """
    data: dict[str, Any] = {}
    binary = []
    for key, value in state.items():
        if isinstance(value, (bytes, bytearray, memoryview)):
            data[key] = base64.b64encode(bytes(value)).decode("ascii")
            binary.append(key)
        else:
            data[key] = _nested_binary(value)
    data["__binary__"] = binary
    lowered = esm.lower()
    if any(mark in lowered for mark in ("</script", "<script", "<!--")) \
            or "</style" in css.lower():
        raise ValueError("front-end code cannot be embedded: it would end or escape its tag")
    if "</script" in details_html.lower() or "<script" in details_html.lower():
        raise ValueError("the details of a page are a table, never a script")
    top = f'<h1 class="topaz-page-heading">{html.escape(heading)}</h1>\n' if heading else ""
    below = f'<div class="topaz-page-details">{details_html}</div>\n' if details_html else ""
    return _PAGE.format(title=html.escape(title), css=css, state=_script_json(data), esm=esm,
                        heading=top, details=below)


_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                              "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _script_json(value: Any) -> str:
    """``value`` as JSON that is inert inside a ``<script>`` element of a page.

    The HTML parser ends a script element at ``</script`` and, after a
    ``<!--``, takes a ``<script`` for the start of a nested one, so the
    element then runs on past its own end tag and swallows the page's later
    scripts: a model called ``<!--<script>`` would blank the page.  Every
    ``<`` becomes ``\\u003c``, which closes both doors; ``>`` and ``&`` go
    too, and so do U+2028 and U+2029 (which older JavaScript took for line
    ends; ASCII-only JSON escapes them already).  ``JSON.parse`` reads each
    escape back as the very same character.
    """
    return json.dumps(value).translate(_SCRIPT_SAFE)
