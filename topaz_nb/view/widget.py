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
``keys.js`` (which keys a focused widget keeps from the notebook's shortcuts,
and how; the review's strip uses it too), ``input.js`` (pointer, wheel, keys)
and ``compare.js`` (``render``, which wires them and is the only file with an
``export``).  anywidget hands the
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

**Panes.**  A view has panes: the input (0) and one or more outputs (a
shoot-out), all on the first output's grid; ``pane_info`` says where each
lies and ``more_previews`` carries the previews of panes 2 and on.  A
"tiles" request may name the panes it wants and how magnified panes are
resampled::

    {"type": "tiles", ..., "panes": [0, 2], "input_filter": "smooth" | "nearest"}

(default ``[0, 1]`` and ``"nearest"``); the answer repeats both and carries
one buffer per pane, in that order.  The front end asks only for the panes it
shows: all of them in grid mode, ``right`` in fidelity mode, ``left`` and
``right`` otherwise.

**Constants.**  Modes, tile size, maximum zoom and difference gain are
defined in :mod:`topaz_nb.view.modes` and reach the front end as the read-only
``limits`` trait; the JavaScript repeats none of them.

**Traits back.**  Dragging the divider, zooming, panning and the keys update
the view every frame locally and write back only the traits the user changed
(``position``, ``opacity``, ``zoom``, ``center``, ``mode``, ``orientation``,
``showing``, ``left``, ``right``, ``input_filter``), at most every 150 ms and once more when the gesture ends.  A
change made in the kernel is applied and never echoed: setting ``zoom`` from
Python sends nothing back.  Showing A or B alone with space outside toggle
mode is a momentary view state and is not synced.

No synced trait ever holds a URL or a key: the widget only receives pixels.
"""

from __future__ import annotations

import asyncio
import base64
import math
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import traitlets as t
from PIL import Image

from .._tasks import shared_pool
from ..errors import ImageError
from ..imaging.source import SourceImage, TileSource, align, encode, load_image
from ..links import SIDES
from . import composite as _composite
from .modes import BLEND_DEFAULT, INPUT_FILTERS, MAX_OUTPUTS, MODES, ORIENTATIONS, TILE_PX
from .modes import MAX_ZOOM as _MAX_ZOOM
from .modes import limits as _limits
from .panes import PaneTiles, placements_on

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..imaging.fidelity import Fidelity
    from ..imaging.source import Placement

_LEVELS = tuple(1 / 2**k for k in range(8))
_MAX_TILES_PER_REQUEST = 512
_FALLBACK_WIDTH = 800
_FALLBACK_LIMIT = 300_000
_STATIC = files("topaz_nb.view") / "static"
_JS_PARTS = ("geometry.js", "tiles.js", "draw.js", "dom.js", "keys.js", "input.js",
             "compare.js")
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


def _shootout_labels(sources: list[SourceImage]) -> list[str]:
    """``Input W×H``, then ``Output k W×H (scale×)`` for every output."""
    iw, ih = sources[0].size
    labels = [f"Input {iw}×{ih}"]
    for k, src in enumerate(sources[1:], start=1):
        w, h = src.size
        scale = w / iw
        text = f"Output {k} {w}×{h}"
        if abs(scale - 1) > 1e-3:
            text += f" ({_scale_text(scale)}×)"
        labels.append(text)
    return labels


_PREVIEW_BUDGET = 2_000_000
"""Bytes one image may cost in the first view; lossless when it fits."""


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
    return shared_pool("topaz-tile", 2)


def _work_pool() -> ThreadPoolExecutor:
    """Threads that keep tile cutting off the kernel's event loop: one tile pair
    per widget at a time.  Separate from :func:`_tile_pool`, whose threads a
    tile pair waits on, and from :func:`_ahead_pool`, so that a tile never
    queues behind another view's background build."""
    return shared_pool("topaz-work", 4)


def _ahead_pool() -> ThreadPoolExecutor:
    """One thread for building ahead (pyramids, decodes), one image at a time:
    a build keeps a core busy, and tiles asked for meanwhile must find the
    other.  A tile that needs an image still queued here builds it itself;
    the queued job then finds it done."""
    return shared_pool("topaz-ahead", 1)


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
      ``max_zoom``, ``diff_gain`` and ``input_filters`` from
      :mod:`topaz_nb.view.modes`, for the front end.

    A shoot-out (``CompareView(input, out1, out2, ...)`` or
    :meth:`from_images` with more than two images) compares several outputs
    of one input in the same synced view; up to ``MAX_OUTPUTS`` (8) outputs.

    * ``panes`` (list of str, read-only): every pane's label, input first.
    * ``left``, ``right`` (int): the panes the pair modes (swipe, side by
      side, blend, difference, toggle) compare, as indexes into ``panes``
      (default 0 and 1); ``labels`` follows them.  ``[`` / ``]`` step
      ``right`` through the others, with Shift ``left``; a click on a pane
      in ``"grid"`` mode makes it ``right``.
    * ``mode`` ``"grid"``: every pane at once, tiled to fit, one zoom and pan.
    * ``mode`` ``"fidelity"``: pane ``right`` with :func:`topaz_nb.fidelity`'s
      heat map over it in magma colours (opacity from ``opacity``) and the
      worst regions outlined; clicking one zooms to it at 100 %.
    * ``input_filter`` (str): ``"smooth"`` (default) draws a magnified pane
      (the input of an upscale) interpolated, so difference mode shows what a
      model added rather than the input's pixel blocks; ``"nearest"`` shows
      the real input pixels as blocks.
    * ``pane_info`` (list, read-only): per pane ``size``, ``rect`` (where it
      lies on the grid) and ``format`` of its preview; ``more_previews``
      (list of bytes, read-only) the previews of panes 2 and on.
    * ``fidelity_map`` (dict, read-only): in fidelity mode, the ``pane`` it
      describes, its ``overlay`` (RGBA PNG on the input's grid), ``rect`` (the
      input's place on the grid), ``regions`` (grid pixels), ``psnr``, ``ssim``,
      and ``reason``: why there are no scores (``psnr`` and ``ssim`` are then
      ``None`` and the overlay clear), else ``None``.
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
    panes = t.List(t.Unicode(), read_only=True).tag(sync=True)
    left = t.Int(0).tag(sync=True)
    right = t.Int(1).tag(sync=True)
    input_filter = t.Unicode("smooth").tag(sync=True)
    pane_info = t.List(t.Dict(), read_only=True).tag(sync=True)
    more_previews = t.List(t.Bytes(), read_only=True).tag(sync=True)
    fidelity_map = t.Dict(read_only=True).tag(sync=True)

    def __init__(self, input: Any, output: Any, *more: Any, mode: str = "swipe",
                 labels: tuple[str, ...] | list[str] | None = None, preview_size: int = 2048,
                 crop_to_fill: bool | None = None, **kwargs: Any) -> None:
        if int(preview_size) < 16:
            raise t.TraitError(f"preview_size must be at least 16 pixels; got {preview_size!r}.")
        if len(more) + 1 > MAX_OUTPUTS:
            raise t.TraitError(f"A view compares at most {MAX_OUTPUTS} outputs; "
                               f"got {len(more) + 1}.")
        self._close_callbacks: list[Callable[[], None]] = []
        inp = _source(input, "input")
        out = _source(output, "output")
        extra = [_source(image, f"output {k}") for k, image in enumerate(more, start=2)]
        self._sources = {"input": inp, "output": out}
        self._all = [inp, out, *extra]
        self._crop_to_fill = crop_to_fill
        self._placement_obj = align(inp.size, out.size, crop_to_fill=crop_to_fill)
        self._pane_placements = placements_on(tuple(out.size),  # type: ignore[arg-type]
                                              [tuple(src.size) for src in self._all],  # type: ignore[misc]
                                              crop_to_fill=crop_to_fill)
        self._pane_placements[0] = self._placement_obj
        self._tile_source: TileSource | None = None
        self._pane_tiles: PaneTiles | None = None
        self._queues: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._drain_scheduled = False
        self._busy = False
        self._ahead: list[Future[None]] | None = None
        self.fidelity_source: Callable[[int], Fidelity] | None = None
        """``pane -> Fidelity`` for the fidelity mode (a Topaz result's cached one);
        by default computed from the images."""
        self._fidelities: dict[int, Fidelity] = {}
        # The previews at once: Pillow releases the GIL while it decodes,
        # resamples and encodes, so two sides take about as long as one.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="topaz-preview") as pool:
            made = list(pool.map(lambda src: _make_preview(src, int(preview_size)), self._all))
        self._pane_previews: list[Image.Image] = [m[0] for m in made]
        self._previews: dict[str, Image.Image] = {"input": made[0][0], "output": made[1][0]}
        n = len(self._all)
        if labels is None:
            if n == 2:
                labels = _default_labels(("Input", "Output"), inp, out, self._placement_obj)
            else:
                labels = _shootout_labels(self._all)
        elif len(labels) != n:
            what = "two strings (input, output)" if n == 2 else f"{n} strings (input, outputs)"
            raise t.TraitError(f"labels must be {what}; got {labels!r}.")
        names = [str(x) for x in labels]
        ow, oh = out.size
        kwargs.setdefault("center", (ow / 2, oh / 2))
        self.set_trait("panes", names)
        super().__init__(mode=mode, labels=(names[0], names[1]), **kwargs)
        p = self._placement_obj
        self.set_trait("limits", _limits())
        self.set_trait("sizes", {"input": list(inp.size), "output": list(out.size)})
        self.set_trait("placement", (float(p.x), float(p.y), float(p.width), float(p.height)))
        self.set_trait("preview_formats", {"input": made[0][2], "output": made[1][2]})
        self.set_trait("pane_info", [
            {"size": list(src.size), "format": m[2],
             "rect": [float(q.x), float(q.y), float(q.width), float(q.height)]}
            for src, m, q in zip(self._all, made, self._pane_placements)])
        self.set_trait("more_previews", [m[1] for m in made[2:]])
        self.set_trait("input_preview", made[0][1])
        self.set_trait("output_preview", made[1][1])
        self.on_msg(self._on_tile_request)
        self._update_fidelity_map()

    @classmethod
    def from_images(cls, a: Any, b: Any, *more: Any, **kw: Any) -> CompareView:
        """Compare any two images (PIL images, NumPy arrays, paths or bytes), labelled A and B.

        ``b`` defines the pixel grid, as the output does in a Topaz comparison.
        With more images, ``a`` is the input and the others its outputs: a
        shoot-out labelled ``Input``, ``Output 1``, ``Output 2``, ...
        """
        if more:
            return cls(a, b, *more, **kw)
        first, second = _source(a, "A"), _source(b, "B")
        if kw.get("labels") is None:
            placement = align(first.size, second.size, crop_to_fill=kw.get("crop_to_fill"))
            kw["labels"] = _default_labels(("A", "B"), first, second, placement)
        return cls(first, second, **kw)

    # ---- lifetime ---------------------------------------------------------

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once, when the view is closed.

        Whoever made the view from files that must stay while it is on screen
        (a comparison keeps its downloads from the cache's eviction) lets
        go of them here; the view itself knows nothing of where they live.
        """
        self._close_callbacks.append(callback)

    def close(self) -> None:
        """Take the view off the page and let go of what it showed (see
        :meth:`on_close`); it answers no more tile requests."""
        super().close()
        # Not there when the constructor failed early (close runs from __del__ too).
        callbacks = getattr(self, "_close_callbacks", [])
        self._close_callbacks = []
        for callback in callbacks:
            callback()

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

    @t.validate("left", "right")
    def _check_pane(self, proposal: t.Bunch) -> int:
        value = int(proposal["value"])
        n = len(self.panes)
        if not 0 <= value < n:
            name = proposal["trait"].name
            raise t.TraitError(f"{name} must be a pane index from 0 to {n - 1}; got {value!r}.")
        return value

    @t.validate("input_filter")
    def _check_filter(self, proposal: t.Bunch) -> str:
        return _choice(proposal["value"], INPUT_FILTERS, "input_filter")

    @t.observe("left", "right")
    def _pair_changed(self, change: t.Bunch) -> None:
        self.labels = (self.panes[self.left], self.panes[self.right])
        if change["name"] == "right":
            self._update_fidelity_map()

    @t.observe("labels")
    def _labels_changed(self, change: t.Bunch) -> None:
        names = list(self.panes)
        if not names:
            return
        names[self.left], names[self.right] = change["new"]
        if names != list(self.panes):
            self.set_trait("panes", names)

    @t.observe("mode")
    def _mode_changed(self, change: t.Bunch) -> None:
        self._update_fidelity_map()

    def fidelity(self, pane: int | None = None) -> Fidelity:
        """:func:`topaz_nb.fidelity` of output ``pane`` (default ``right``) against the input."""
        k = self.right if pane is None else int(pane)
        if not 1 <= k < len(self._all):
            raise ValueError(f"pane {k} is not an output; outputs are 1 to {len(self._all) - 1}")
        found = self._fidelities.get(k)
        if found is None:
            if self.fidelity_source is not None:
                found = self.fidelity_source(k)
            else:
                from .._text import fidelity_failed
                from ..imaging.fidelity import Fidelity, fidelity

                try:
                    found = fidelity(self._all[0], self._all[k],
                                     crop_to_fill=self._crop_to_fill)
                except ImageError as exc:  # the view shows why instead of a traceback
                    return Fidelity.not_computed(self._all[0].size, self._all[k].size,
                                                 fidelity_failed(exc),
                                                 crop_to_fill=self._crop_to_fill)
            self._fidelities[k] = found
        return found

    def _update_fidelity_map(self) -> None:
        """In fidelity mode, send the heat map of ``right`` (once per pane shown)."""
        if self.mode != "fidelity" or self.fidelity_map.get("pane") == self.right:
            return
        k = self.right
        if k == 0:
            self.set_trait("fidelity_map", {"pane": 0})
            return
        result = self.fidelity(k)
        q = self._pane_placements[k]
        scale_x, scale_y = q.width / self._all[k].size[0], q.height / self._all[k].size[1]
        regions = [[q.x + x * scale_x, q.y + y * scale_y, w * scale_x, h * scale_y]
                   for x, y, w, h in result.regions]
        p = self._placement_obj
        self.set_trait("fidelity_map", {
            "pane": k, "overlay": encode(result.overlay(), format="png"),
            "rect": [float(p.x), float(p.y), float(p.width), float(p.height)],
            "regions": regions,
            "psnr": result.psnr if result.psnr is not None and math.isfinite(result.psnr)
            else None, "ssim": result.ssim, "reason": result.reason})

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
        request = {"view": view, "gen": gen, "level": level, "span": span, "tiles": tiles}
        return self._parse_panes(content, request)

    def _parse_panes(self, content: dict[str, Any], request: dict[str, Any]) -> dict[str, Any] | None:
        """The panes a request wants cut (default the input and the first
        output) and how magnified panes are resampled (default ``nearest``)."""
        panes = content.get("panes", [0, 1])
        smooth = content.get("input_filter", "nearest") == "smooth"
        try:
            chosen = [int(p) for p in list(panes)[:len(self._all)]]
        except (TypeError, ValueError):
            return None
        if not chosen or any(not 0 <= p < len(self._all) for p in chosen):
            return None
        request.update(panes=chosen, smooth=smooth)
        return request

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
        """The request's panes of one tile, compressed (on a worker thread)."""
        if self._tile_source is None:
            self._tile_source = TileSource(self._sources["input"], self._sources["output"],
                                           placement=self._placement_obj)
        span, level = request["span"], request["level"]
        ow, oh = self._sources["output"].size
        x, y = ix * span, iy * span
        w, h = min(span, ow - x), min(span, oh - y)
        source = self._tile_source
        smooth = request.get("smooth", False)

        def cut(pane: int) -> bytes:
            if pane < 2 and not (smooth and self._magnified(pane)):
                tile = source.region(SIDES[pane], x, y, w, h, zoom=level)
            else:
                tile = self._pane_region(pane, x, y, w, h, level, smooth)
            if tile.mode == "RGBA" and tile.getchannel("A").getextrema() == (255, 255):
                tile = tile.convert("RGB")  # opaque: a third less to compress and send
            return encode(tile, format="png")

        panes = request.get("panes", [0, 1])
        buffers = list(_tile_pool().map(cut, panes))
        return ({"type": "tile", "view": request["view"], "gen": request["gen"],
                 "level": level, "ix": ix, "iy": iy, "x": x, "y": y, "w": w, "h": h,
                 "panes": panes, "input_filter": "smooth" if smooth else "nearest"},
                buffers)

    def _build_ahead(self) -> list[Future[None]]:
        """Prepare both sides' full-resolution data in the background, once."""
        if self._ahead is None:
            # The output first: it is the large one a zoom waits for.
            self._ahead = [_ahead_pool().submit(self._sources[side].prepare_tiles)
                           for side in ("output", "input")]
        return self._ahead

    def _magnified(self, pane: int) -> bool:
        """Whether the grid enlarges this pane (the input of an upscale)."""
        return self._pane_placements[pane].scale > 1 + 1e-9

    def _pane_region(self, pane: int, x: float, y: float, w: float, h: float, level: float,
                     smooth: bool) -> Image.Image:
        """A tile of any pane (outputs beyond the first, or a smoothly magnified input)."""
        if self._pane_tiles is None:
            self._pane_tiles = PaneTiles(self._all, self._pane_placements)
        return self._pane_tiles.region(pane, x, y, w, h, zoom=level, smooth=smooth)

    # ---- static forms -----------------------------------------------------

    def _scene(self) -> _composite.Scene:
        rect = self.pane_info[self.left]["rect"]
        return _composite.Scene(
            input=self._pane_previews[self.left], output=self._pane_previews[self.right],
            output_size=tuple(self._sources["output"].size),  # type: ignore[arg-type]
            placement=tuple(rect),  # type: ignore[arg-type]
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
        out_size = tuple(self._sources["output"].size)
        if self.mode == "grid":
            return _composite.compose_grid(
                self._pane_previews, [tuple(p["rect"]) for p in self.pane_info],  # type: ignore[misc]
                out_size, list(self.panes), int(width))  # type: ignore[arg-type]
        if self.mode == "fidelity" and self.right == 0:
            img = _composite.compose(_composite.Scene(
                input=self._pane_previews[0], output=self._pane_previews[0],
                output_size=out_size, placement=tuple(self.pane_info[0]["rect"]),  # type: ignore[arg-type]
                labels=(f"{self.panes[0]}: pick an output for its fidelity map",) * 2,
                mode="toggle", showing="input"), int(width))
            return img
        if self.mode == "fidelity":
            from .._text import psnr_text, ssim_text

            result = self.fidelity(self.right)
            fmap = self.fidelity_map
            label = (f"{self.panes[self.right]}  ·  fidelity {result.reason}" if result.reason
                     else f"{self.panes[self.right]}  ·  PSNR {psnr_text(result.psnr)}, "
                          f"SSIM {ssim_text(result.ssim)}")
            return _composite.compose_fidelity(
                self._pane_previews[self.right], result.overlay(), tuple(fmap["rect"]),
                out_size, fmap["regions"], self.opacity, label, int(width))  # type: ignore[arg-type]
        return _composite.compose(self._scene(), int(width))

    def save_html(self, path: str | Path, *, heading: str | None = None,
                  rows: Sequence[Sequence[object]] = (),
                  header: Sequence[str] | None = ("", "Input", "Output")) -> Path:
        """Write a self-contained page with this comparison and its slider; works offline.

        The page embeds the previews and the same front-end code; with no
        kernel behind it, it shows the previews at every zoom.  The
        comparison takes the window's height.  ``heading`` (a process ID,
        say) is shown above it and ``rows`` as a table below it (with
        ``header``), every value escaped.
        """
        from .._text import html_table

        target = Path(path).expanduser()
        state = {name: getattr(self, name) for name in
                 ("mode", "orientation", "position", "opacity", "zoom", "center", "showing",
                  "labels", "height", "sizes", "placement", "input_preview", "output_preview",
                  "preview_formats", "limits", "panes", "left", "right", "input_filter",
                  "pane_info", "more_previews", "fidelity_map")}
        state["center"] = list(state["center"])
        state["labels"] = list(state["labels"])
        state["placement"] = list(state["placement"])
        title = " vs ".join(self.labels)
        details = html_table(rows, header=header, row_headers=True,
                             css_class="topaz-meta") if rows else ""
        page = _composite.standalone_page(title=f"{heading}: {title}" if heading else title,
                                          state=state, esm=self._esm, css=self._css,
                                          heading=heading, details_html=details)
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
        # A picture of a very tall output (2×1000, say) is narrowed, never taller
        # than twice the usual width.
        ow, oh = self._sources["output"].size
        width = max(16, min(_FALLBACK_WIDTH, 2 * _FALLBACK_WIDTH * ow // oh))
        jpeg = _composite.compact_jpeg(self.to_image(width=width),
                                       max_width=_FALLBACK_WIDTH, limit=_FALLBACK_LIMIT)
        data["image/jpeg"] = base64.b64encode(jpeg).decode("ascii")
        # Shown: from now on, get 100 % ready while the user looks.
        self._build_ahead()
        return data, dict(metadata or {})
