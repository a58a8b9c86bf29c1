"""CompareView: an input and its processed output, compared in one view.

The front end draws both images on one canvas, in one view expressed in the
*output's* pixel grid; the input is drawn where :func:`topaz_nb.imaging.align`
places it on that grid.  Modes: swipe, side by side, blend, difference and
toggle; space switches A/B instantly in every mode.

Front-end code
--------------
The JavaScript lives in ``static/`` as a few files with one job each:
``geometry.js`` (pure view arithmetic: fit, zoom about a point, visible
tiles), ``tiles.js`` (decoding, the bounded tile cache, tile requests),
``draw.js`` (one frame per mode), ``dom.js`` (toolbar, labels, help),
``input.js`` (pointer, wheel, keys) and ``compare.js`` (``render``, which
wires them and is the only file with an ``export``).  anywidget hands the
browser ``_esm`` as *one* module string (a blob or data URL in JupyterLab,
Notebook 7, VS Code and Voila alike), so relative imports between files
cannot resolve; :func:`_assemble_esm` therefore joins the files, in
:data:`_JS_PARTS` order, into one module when this class is defined.  That
is the whole "build": no bundler, no generated file to keep in step, and
each part except ``compare.js`` is a plain script that a test can load into
a blank page on its own (``geometry.js`` is tested that way).  The parts
share one scope, so their top-level names must not collide.

Protocol
--------
**Previews.**  Each side's preview (at most ``preview_size`` px on its long
side) travels once, as a binary ``Bytes`` trait (never base64).  A preview that
is the whole image is lossless PNG when that fits the first-view budget
(2 MB an image), so what is seen at 100 % is exact; otherwise, and for every
downscaled preview, it is JPEG q90 (WebP q90 when it has transparency), and
``preview_formats`` tells the front end which sides are lossy, so that it asks
for exact tiles from 100 % on.

**Tiles.**  When the view needs more detail than a preview holds, the front end
sends a custom message::

    {"type": "tiles", "view": <view id>, "gen": <int>, "level": <1, 1/2, 1/4, ...>,
     "tiles": [[ix, iy], ...]}

listing, nearest the centre first, the visible tiles it lacks.  A tile is
``512 / level`` output pixels square (a 512×512 image at that level) and sits at
``(ix, iy)`` in that grid.  The list *replaces* whatever that view had queued:
while the user pans, superseded tiles are never cut.  The kernel answers tile by
tile.  Tiles are cut on worker threads, one tile pair of a widget at a time,
never on the kernel's event loop: while a tile is being cut (or waits for the
first full-resolution data) the kernel keeps handling messages, so a newer
request replaces the queue and only the tile already started is finished.
Each answer is::

    {"type": "tile", "view", "gen", "level", "ix", "iy", "x", "y", "w", "h"}
    buffers = [input PNG, output PNG]

``(x, y, w, h)`` is the tile's rectangle in output pixels; both images are
``round(w * level) × round(h * level)`` and lossless, cut by
:class:`topaz_nb.imaging.TileSource` from the full-resolution images (a large
image's tiled pyramid on disk, or the decoded image).

**Building ahead.**  Once the view has been displayed, each side's
full-resolution data (its pyramid, or its decoded pixels) is prepared in the
background, so that zooming to 100 % finds it ready; a tile asked for earlier
waits for that same preparation instead of decoding again.  The
front end keeps a bounded cache of tiles, drops answers for a level it has
left, and keeps drawing the scaled preview until tiles arrive.  A failure is
answered once with ``{"type": "tile-error", "view", "gen", "message"}``.

**Constants.**  Modes, tile size, maximum zoom and difference gain are
defined in :mod:`topaz_nb._modes` and reach the front end as the read-only
``limits`` trait; the JavaScript repeats none of them.

**Traits back.**  Dragging the divider, zooming, panning and the keys update
the view every frame locally and write back only the traits the user changed
(``position``, ``opacity``, ``zoom``, ``center``, ``mode``, ``orientation``,
``showing``), at most every 150 ms and once more when the gesture ends.  A
change made in the kernel is applied and never echoed: setting ``zoom`` from
Python sends nothing back.  Showing A or B alone with space outside toggle
mode is a momentary view state and is not synced.

No synced trait ever holds a URL or a key: the widget only receives pixels.
"""

from __future__ import annotations

import asyncio
import base64
import math
import threading
from concurrent.futures import Future
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import traitlets as t
from PIL import Image

from . import _composite
from ._modes import BLEND_DEFAULT, MODES, ORIENTATIONS, TILE_PX
from ._modes import MAX_ZOOM as _MAX_ZOOM
from ._modes import limits as _limits
from .imaging import SourceImage, TileSource, align, encode, load_image
from .links import SIDES

if TYPE_CHECKING:
    from .imaging import Placement

_LEVELS = tuple(1 / 2**k for k in range(8))
_MAX_TILES_PER_REQUEST = 512
_FALLBACK_WIDTH = 800
_FALLBACK_LIMIT = 300_000
_STATIC = files("topaz_nb") / "static"
_JS_PARTS = ("geometry.js", "tiles.js", "draw.js", "dom.js", "input.js", "compare.js")
"""Front-end files in the order they are joined: each uses only names defined above it."""


def _assemble_esm() -> str:
    """The widget's one ES module: the front-end files joined, each under a header."""
    return "\n".join(f"// ==== {name} ====\n" + (_STATIC / name).read_text(encoding="utf-8")
                     for name in _JS_PARTS)


def _scale_text(scale: float) -> str:
    text = f"{scale:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _default_labels(bases: tuple[str, str], inp: SourceImage, out: SourceImage,
                    placement: Placement) -> tuple[str, str]:
    (iw, ih), (ow, oh) = inp.size, out.size
    label_in = f"{bases[0]} {iw}×{ih}"
    label_out = f"{bases[1]} {ow}×{oh}"
    scale = placement.scale
    if abs(scale - 1) > 1e-3:
        label_out += f" ({_scale_text(scale)}×)"
    return label_in, label_out


_PREVIEW_BUDGET = 2_000_000
"""Bytes one image may cost in the first view; lossless when it fits."""
_TILE_POOL: ThreadPoolExecutor | None = None
_WORK_POOL: ThreadPoolExecutor | None = None
_AHEAD_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _make_preview(src: SourceImage, max_side: int) -> tuple[Image.Image, bytes, str]:
    """The preview, its encoding and that encoding's format.

    A whole-image preview is tried as PNG only when its raw pixels are small
    enough that the PNG can fit the budget; photos compress to about half.
    """
    img = src.preview(max_side=max_side)
    if img.size == tuple(src.size) and img.width * img.height * len(img.getbands()) <= 2 * _PREVIEW_BUDGET:
        png = src.preview_bytes(max_side, format="png")
        if len(png) <= _PREVIEW_BUDGET:
            return img, png, "png"
    if img.mode == "RGBA":
        return img, src.preview_bytes(max_side, format="webp", quality=90), "webp"
    # Opaque: JPEG q90 is about as many bytes as WebP q90 on photos (594 against
    # 552 kB for a 2000×1500 preview) and encodes 19× faster (8 against 152 ms).
    return img, src.preview_bytes(max_side, format="jpeg", quality=90), "jpeg"


def _tile_pool() -> ThreadPoolExecutor:
    """Two threads shared by every view: a tile pair's two sides compress in parallel."""
    global _TILE_POOL
    with _POOL_LOCK:
        if _TILE_POOL is None:
            _TILE_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="topaz-tile")
        return _TILE_POOL


def _work_pool() -> ThreadPoolExecutor:
    """Threads that keep tile cutting off the kernel's event loop: one tile pair
    per widget at a time.  Separate from :func:`_tile_pool`, whose threads a
    tile pair waits on, and from :func:`_ahead_pool`, so that a tile never
    queues behind another view's background build."""
    global _WORK_POOL
    with _POOL_LOCK:
        if _WORK_POOL is None:
            _WORK_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="topaz-work")
        return _WORK_POOL


def _ahead_pool() -> ThreadPoolExecutor:
    """One thread for building ahead (pyramids, decodes), one image at a time:
    a build keeps a core busy, and tiles asked for meanwhile must find the
    other.  A tile that needs an image still queued here builds it itself;
    the queued job then finds it done."""
    global _AHEAD_POOL
    with _POOL_LOCK:
        if _AHEAD_POOL is None:
            _AHEAD_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="topaz-ahead")
        return _AHEAD_POOL


def _source(image: Any, label: str) -> SourceImage:
    return image if isinstance(image, SourceImage) else load_image(image, label=label)


def _choice(value: str, choices: tuple[str, ...], name: str) -> str:
    norm = str(value).strip().lower().replace("_", "-").replace(" ", "-")
    if norm == "sidebyside":
        norm = "side-by-side"
    if norm not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise t.TraitError(f"{name} must be one of {listed}; got {value!r}.")
    return norm


class CompareView(anywidget.AnyWidget):
    """Compare an input image with its processed output in one zoomable view.

    ``CompareView(input, output)`` takes two :class:`~topaz_nb.imaging.SourceImage`
    objects (or anything :func:`~topaz_nb.imaging.load_image` takes: a path,
    bytes, a PIL image or a NumPy array).  The output defines the pixel grid;
    the input is aligned onto it (``crop_to_fill`` as in the Topaz API).

    In the view: drag the divider (or use ←/→, ↑/↓ when horizontal) to
    swipe; drag elsewhere to pan; once the view has focus (click it) the
    wheel zooms about the pointer, and Ctrl/⌘ + wheel or a pinch zooms
    without focus (otherwise the wheel scrolls the page); double-click or
    ``1`` for 100 %, ``0`` to fit; space switches A/B instantly: in toggle
    mode it flips ``showing`` (so does a click), in the other modes it shows
    the output alone, then the input alone, in place, until Esc or a mode
    change; ``m`` cycles modes; ``o`` flips the swipe orientation; ``?``
    lists the keys.

    Synced traits:

    * ``mode`` (str): ``"swipe"`` (default), ``"side-by-side"``, ``"blend"``,
      ``"difference"`` (``|output − input|`` amplified ×4) or ``"toggle"``.
    * ``orientation`` (str): the swipe divider, ``"vertical"`` (input left,
      output right) or ``"horizontal"`` (input above, output below).
    * ``position`` (float): divider position across the view in swipe mode;
      0..1, values outside are clamped.
    * ``opacity`` (float): the output's opacity over the input in blend mode,
      0..1 (default 0.5, an even mix); values outside are clamped.
    * ``zoom`` (float): device pixels per output pixel; ``1.0`` is 100 % (one
      image pixel per physical screen pixel), ``0`` fits the image to the view.
    * ``center`` (tuple of float): the view centre in output pixels (ignored
      while fitted).
    * ``showing`` (str): toggle mode's visible side, ``"input"`` or ``"output"``.
    * ``labels`` (tuple of str): the two captions, by default the sizes and
      scale factor, e.g. ``Input 1200×800`` and ``Output 4800×3200 (4.0×)``.
    * ``height`` (int): the view's height in CSS pixels.
    * ``sizes`` (dict, read-only): ``{"input": [w, h], "output": [w, h]}``.
    * ``placement`` (tuple, read-only): ``(x, y, w, h)`` of the input on the
      output grid.
    * ``input_preview``, ``output_preview`` (bytes, read-only): the encoded
      previews.
    * ``preview_formats`` (dict, read-only): each preview's encoding, ``"png"``
      (exact), ``"jpeg"`` or ``"webp"`` (with transparency).
    * ``limits`` (dict, read-only): ``modes``, ``orientations``, ``tile_px``,
      ``max_zoom`` and ``diff_gain`` from :mod:`topaz_nb._modes`, for the front end.
    """

    _esm = _assemble_esm()
    _css = (_STATIC / "compare.css").read_text(encoding="utf-8")

    mode = t.Unicode("swipe").tag(sync=True)
    orientation = t.Unicode("vertical").tag(sync=True)
    position = t.Float(0.5).tag(sync=True)
    opacity = t.Float(BLEND_DEFAULT).tag(sync=True)
    zoom = t.Float(0.0).tag(sync=True)
    center = t.Tuple(t.Float(), t.Float(), default_value=(0.0, 0.0)).tag(sync=True)
    showing = t.Unicode("output").tag(sync=True)
    labels = t.Tuple(t.Unicode(), t.Unicode(), default_value=("Input", "Output")).tag(sync=True)
    height = t.Int(520).tag(sync=True)
    sizes = t.Dict(read_only=True).tag(sync=True)
    placement = t.Tuple(t.Float(), t.Float(), t.Float(), t.Float(),
                        default_value=(0.0, 0.0, 1.0, 1.0), read_only=True).tag(sync=True)
    input_preview = t.Bytes(b"", read_only=True).tag(sync=True)
    output_preview = t.Bytes(b"", read_only=True).tag(sync=True)
    preview_formats = t.Dict(read_only=True).tag(sync=True)
    limits = t.Dict(read_only=True).tag(sync=True)

    def __init__(self, input: Any, output: Any, *, mode: str = "swipe",
                 labels: tuple[str, str] | list[str] | None = None, preview_size: int = 2048,
                 crop_to_fill: bool | None = None, **kwargs: Any) -> None:
        if int(preview_size) < 16:
            raise t.TraitError(f"preview_size must be at least 16 pixels; got {preview_size!r}.")
        inp = _source(input, "input")
        out = _source(output, "output")
        self._sources = {"input": inp, "output": out}
        self._placement_obj = align(inp.size, out.size, crop_to_fill=crop_to_fill)
        self._tile_source: TileSource | None = None
        self._queues: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._drain_scheduled = False
        self._busy = False
        self._ahead: list[Future[None]] | None = None
        # Both previews at once: Pillow releases the GIL while it decodes,
        # resamples and encodes, so two sides take about as long as one.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="topaz-preview") as pool:
            made = dict(zip(SIDES, pool.map(
                lambda side: _make_preview(self._sources[side], int(preview_size)), SIDES)))
        self._previews: dict[str, Image.Image] = {side: made[side][0] for side in SIDES}
        encoded = {side: made[side][1] for side in SIDES}
        if labels is None:
            labels = _default_labels(("Input", "Output"), inp, out, self._placement_obj)
        elif len(labels) != 2:
            raise t.TraitError(f"labels must be two strings (input, output); got {labels!r}.")
        ow, oh = out.size
        kwargs.setdefault("center", (ow / 2, oh / 2))
        super().__init__(mode=mode, labels=tuple(str(x) for x in labels), **kwargs)
        p = self._placement_obj
        self.set_trait("limits", _limits())
        self.set_trait("sizes", {"input": list(inp.size), "output": list(out.size)})
        self.set_trait("placement", (float(p.x), float(p.y), float(p.width), float(p.height)))
        self.set_trait("preview_formats", {side: made[side][2] for side in SIDES})
        self.set_trait("input_preview", encoded["input"])
        self.set_trait("output_preview", encoded["output"])
        self.on_msg(self._on_tile_request)

    @classmethod
    def from_images(cls, a: Any, b: Any, **kw: Any) -> CompareView:
        """Compare any two images (PIL images, NumPy arrays, paths or bytes), labelled A and B.

        ``b`` defines the pixel grid, as the output does in a Topaz comparison.
        """
        first, second = _source(a, "A"), _source(b, "B")
        if kw.get("labels") is None:
            placement = align(first.size, second.size, crop_to_fill=kw.get("crop_to_fill"))
            kw["labels"] = _default_labels(("A", "B"), first, second, placement)
        return cls(first, second, **kw)

    # ---- validation -------------------------------------------------------

    @t.validate("mode")
    def _check_mode(self, proposal: t.Bunch) -> str:
        return _choice(proposal["value"], MODES, "mode")

    @t.validate("orientation")
    def _check_orientation(self, proposal: t.Bunch) -> str:
        return _choice(proposal["value"], ORIENTATIONS, "orientation")

    @t.validate("showing")
    def _check_showing(self, proposal: t.Bunch) -> str:
        return _choice(proposal["value"], SIDES, "showing")

    @t.validate("position", "opacity")
    def _check_fraction(self, proposal: t.Bunch) -> float:
        value = float(proposal["value"])
        if not math.isfinite(value):
            name = proposal["trait"].name
            raise t.TraitError(f"{name} must be a number from 0 to 1; got {value!r}.")
        return min(1.0, max(0.0, value))

    @t.validate("zoom")
    def _check_zoom(self, proposal: t.Bunch) -> float:
        value = float(proposal["value"])
        if not math.isfinite(value) or value < 0 or value > _MAX_ZOOM:
            raise t.TraitError(
                f"zoom must be 0 (fit to view) or a scale up to {_MAX_ZOOM:g} "
                f"(1 = 100 %); got {value!r}.")
        return value

    @t.validate("center")
    def _check_center(self, proposal: t.Bunch) -> tuple[float, float]:
        x, y = (float(v) for v in proposal["value"])
        if not (math.isfinite(x) and math.isfinite(y)):
            raise t.TraitError(f"center must be two finite output-pixel coordinates; got {(x, y)}.")
        return (x, y)

    @t.validate("height")
    def _check_height(self, proposal: t.Bunch) -> int:
        value = int(proposal["value"])
        if not 80 <= value <= 4000:
            raise t.TraitError(f"height must be from 80 to 4000 CSS pixels; got {value!r}.")
        return value

    # ---- tiles ------------------------------------------------------------

    def _on_tile_request(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """Queue a tile request; it replaces what the same view asked for before."""
        request = self._parse_request(content)
        if request is None:
            return
        view = request["view"]
        self._queues.pop(view, None)
        self._queues[view] = request
        self._build_ahead()  # if the view was shown without a display bundle
        self._schedule_drain()

    def _parse_request(self, content: Any) -> dict[str, Any] | None:
        if not isinstance(content, dict) or content.get("type") != "tiles":
            return None
        try:
            view = str(content["view"])[:64]
            gen = int(content["gen"])
            level = float(content["level"])
            raw = list(content["tiles"])[:_MAX_TILES_PER_REQUEST]
        except (KeyError, TypeError, ValueError):
            return None
        matches = [lv for lv in _LEVELS if abs(lv - level) < 1e-9]
        if not matches:
            return None
        level = matches[0]
        span = round(TILE_PX / level)
        ow, oh = self._sources["output"].size
        tiles: list[tuple[int, int]] = []
        for item in raw:
            try:
                ix, iy = (int(v) for v in item)
            except (TypeError, ValueError):
                continue
            if 0 <= ix * span < ow and 0 <= iy * span < oh and ix >= 0 and iy >= 0:
                tiles.append((ix, iy))
        return {"view": view, "gen": gen, "level": level, "span": span, "tiles": tiles}

    def _schedule_drain(self) -> None:
        """Start the next queued tile on a worker thread, one at a time per widget.

        Without a running event loop (a script, a test) tiles are cut here,
        one after the other.
        """
        if self._drain_scheduled or self._busy:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            while self._serve_one():
                pass
            return
        self._drain_scheduled = True
        loop.call_soon(self._drain_step, loop)

    def _drain_step(self, loop: asyncio.AbstractEventLoop) -> None:
        self._drain_scheduled = False
        if self._busy:
            return
        job = self._next_tile()
        if job is None:
            return
        request, ix, iy = job
        self._busy = True
        future = _work_pool().submit(self._cut_pair, request, ix, iy)

        def finished(done: Future[tuple[dict[str, Any], list[bytes]]]) -> None:
            try:
                loop.call_soon_threadsafe(self._tile_done, request, done)
            except RuntimeError:  # the loop has closed: nobody is listening any more
                pass

        future.add_done_callback(finished)

    def _tile_done(self, request: dict[str, Any],
                   done: Future[tuple[dict[str, Any], list[bytes]]]) -> None:
        """On the event loop: send a cut tile (or its error), then start the next."""
        self._busy = False
        self._answer(request, done)
        self._schedule_drain()

    def _next_tile(self) -> tuple[dict[str, Any], int, int] | None:
        while self._queues:
            view, request = next(iter(self._queues.items()))
            # Round-robin between views of this widget.
            self._queues.move_to_end(view)
            if not request["tiles"]:
                del self._queues[view]
                continue
            ix, iy = request["tiles"].pop(0)
            return request, ix, iy
        return None

    def _serve_one(self) -> bool:
        """Cut and send the next queued tile here; ``False`` when nothing is queued."""
        job = self._next_tile()
        if job is None:
            return False
        request, ix, iy = job
        done: Future[tuple[dict[str, Any], list[bytes]]] = Future()
        try:
            done.set_result(self._cut_pair(request, ix, iy))
        except Exception as exc:  # noqa: BLE001 - reported to the view by _answer
            done.set_exception(exc)
        self._answer(request, done)
        return True

    def _answer(self, request: dict[str, Any],
                done: Future[tuple[dict[str, Any], list[bytes]]]) -> None:
        exc = done.exception()
        if exc is None:
            content, buffers = done.result()
            self.send(content, buffers)
            return
        view = request["view"]
        if self._queues.get(view) is request:
            self._queues.pop(view, None)
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self.send({"type": "tile-error", "view": view, "gen": request["gen"],
                   "message": f"Full-resolution tiles unavailable: {message}"})

    def _cut_pair(self, request: dict[str, Any], ix: int,
                  iy: int) -> tuple[dict[str, Any], list[bytes]]:
        """Both sides of one tile, compressed (on a worker thread)."""
        if self._tile_source is None:
            self._tile_source = TileSource(self._sources["input"], self._sources["output"],
                                           placement=self._placement_obj)
        span, level = request["span"], request["level"]
        ow, oh = self._sources["output"].size
        x, y = ix * span, iy * span
        w, h = min(span, ow - x), min(span, oh - y)
        source = self._tile_source

        def cut(side: str) -> bytes:
            tile = source.region(side, x, y, w, h, zoom=level)
            if tile.mode == "RGBA" and tile.getchannel("A").getextrema() == (255, 255):
                tile = tile.convert("RGB")  # opaque: a third less to compress and send
            return encode(tile, format="png")

        buffers = list(_tile_pool().map(cut, SIDES))
        return ({"type": "tile", "view": request["view"], "gen": request["gen"],
                 "level": level, "ix": ix, "iy": iy, "x": x, "y": y, "w": w, "h": h},
                buffers)

    def _build_ahead(self) -> list[Future[None]]:
        """Prepare both sides' full-resolution data in the background, once."""
        if self._ahead is None:
            # The output first: it is the large one a zoom waits for.
            self._ahead = [_ahead_pool().submit(self._sources[side].prepare_tiles)
                           for side in ("output", "input")]
        return self._ahead

    # ---- static forms -----------------------------------------------------

    def _scene(self) -> _composite.Scene:
        return _composite.Scene(
            input=self._previews["input"], output=self._previews["output"],
            output_size=tuple(self._sources["output"].size),  # type: ignore[arg-type]
            placement=tuple(self.placement),  # type: ignore[arg-type]
            labels=tuple(self.labels),  # type: ignore[arg-type]
            mode=self.mode, orientation=self.orientation, position=self.position,
            opacity=self.opacity, showing=self.showing)

    def to_image(self, *, width: int | None = None) -> Image.Image:
        """A still picture of the current mode and divider position, fitted to ``width`` px.

        Without ``width`` it is as wide as the output's preview.
        """
        if width is None:
            width = self._previews["output"].width
        if int(width) < 16:
            raise t.TraitError(f"width must be at least 16 pixels; got {width!r}.")
        return _composite.compose(self._scene(), int(width))

    def save_html(self, path: str | Path) -> Path:
        """Write a self-contained page with this comparison and its slider; works offline.

        The page embeds the previews and the same front-end code; with no
        kernel behind it, it shows the previews at every zoom.
        """
        target = Path(path).expanduser()
        state = {name: getattr(self, name) for name in
                 ("mode", "orientation", "position", "opacity", "zoom", "center", "showing",
                  "labels", "height", "sizes", "placement", "input_preview", "output_preview",
                  "preview_formats", "limits")}
        state["center"] = list(state["center"])
        state["labels"] = list(state["labels"])
        state["placement"] = list(state["placement"])
        page = _composite.standalone_page(title=" vs ".join(self.labels), state=state,
                                          esm=self._esm, css=self._css)
        target.write_text(page, encoding="utf-8")
        return target

    def _summary(self) -> str:
        return f"CompareView({self.labels[0]} → {self.labels[1]}, mode={self.mode})"

    def __repr__(self) -> str:
        return self._summary()

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The widget, plus a small composite and a text line for widget-less readers."""
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        data = dict(data)
        data["text/plain"] = self._summary()
        jpeg = _composite.compact_jpeg(self.to_image(width=_FALLBACK_WIDTH),
                                       max_width=_FALLBACK_WIDTH, limit=_FALLBACK_LIMIT)
        data["image/jpeg"] = base64.b64encode(jpeg).decode("ascii")
        # Shown: from now on, get 100 % ready while the user looks.
        self._build_ahead()
        return data, dict(metadata or {})
