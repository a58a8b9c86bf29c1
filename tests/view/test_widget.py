"""CompareView, kernel side: traits, previews, the tile protocol, static forms."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import traitlets
from PIL import Image

from topaz_nb.errors import ImageError
from topaz_nb.imaging.source import load_image
from topaz_nb.view import modes as _modes
from topaz_nb.view.widget import _JS_PARTS, _STATIC, MODES, TILE_PX, CompareView

RED = (220, 40, 30)
BLUE = (30, 60, 200)


class Captured(CompareView):
    """A view whose messages to the front end are kept instead of sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[dict[str, Any], list[bytes]]] = []

    def send(self, content: Any, buffers: Any = None) -> None:  # type: ignore[override]
        self.sent.append((content, list(buffers or [])))


def solid(size: tuple[int, int], color: tuple[int, int, int]) -> np.ndarray:
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[:] = color
    return arr


def noise(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture
def view() -> CompareView:
    return CompareView.from_images(solid((64, 48), RED), solid((256, 192), BLUE))


# ---- traits ------------------------------------------------------------------

def test_defaults_and_labels(view: CompareView) -> None:
    assert (view.mode, view.orientation, view.position, view.zoom) == ("swipe", "vertical", 0.5, 0)
    assert view.showing == "output"
    assert view.center == (128.0, 96.0)
    assert view.labels == ("A 64×48", "B 256×192 (4.0×)")
    assert view.sizes == {"input": [64, 48], "output": [256, 192]}
    assert view.height == 520
    assert repr(view) == "CompareView(A 64×48 → B 256×192 (4.0×), mode=swipe)"


def test_constructor_labels_name_input_and_output() -> None:
    v = CompareView(solid((300, 200), RED), solid((1200, 800), BLUE))
    assert v.labels == ("Input 300×200", "Output 1200×800 (4.0×)")
    same = CompareView(solid((30, 20), RED), solid((30, 20), BLUE))
    assert same.labels == ("Input 30×20", "Output 30×20")
    custom = CompareView(solid((30, 20), RED), solid((60, 40), BLUE), labels=["before", "after"])
    assert custom.labels == ("before", "after")
    with pytest.raises(traitlets.TraitError, match="labels must be two strings"):
        CompareView(solid((30, 20), RED), solid((60, 40), BLUE), labels=["one"])


def test_set_and_observe(view: CompareView) -> None:
    seen: list[tuple[str, Any]] = []
    view.observe(lambda change: seen.append((change["name"], change["new"])),
                 names=["mode", "position", "opacity", "zoom", "center", "showing",
                        "orientation"])
    view.mode = "blend"
    view.position = 0.25
    view.opacity = 0.75
    view.zoom = 1
    view.center = (10, 20)
    view.showing = "input"
    view.orientation = "horizontal"
    assert seen == [("mode", "blend"), ("position", 0.25), ("opacity", 0.75), ("zoom", 1.0),
                    ("center", (10.0, 20.0)), ("showing", "input"),
                    ("orientation", "horizontal")]


def test_mode_validation_lists_the_choices(view: CompareView) -> None:
    with pytest.raises(traitlets.TraitError) as info:
        view.mode = "wipe"
    message = str(info.value)
    assert "\n" not in message and "'wipe'" in message
    for mode in MODES:
        assert repr(mode) in message
    view.mode = "Side_By_Side"
    assert view.mode == "side-by-side"
    with pytest.raises(traitlets.TraitError, match="orientation must be one of"):
        view.orientation = "diagonal"
    with pytest.raises(traitlets.TraitError, match="showing must be one of"):
        view.showing = "both"
    with pytest.raises(traitlets.TraitError, match="swipe"):
        CompareView.from_images(solid((4, 4), RED), solid((4, 4), BLUE), mode="zigzag")


def test_numbers_are_clamped_or_refused(view: CompareView) -> None:
    view.position = 1.7
    assert view.position == 1.0
    view.position = -3
    assert view.position == 0.0
    with pytest.raises(traitlets.TraitError, match="position must be a number"):
        view.position = float("nan")
    with pytest.raises(traitlets.TraitError, match="zoom must be 0"):
        view.zoom = -1
    with pytest.raises(traitlets.TraitError, match="zoom must be 0"):
        view.zoom = float("inf")
    with pytest.raises(traitlets.TraitError, match="center must be"):
        view.center = (float("nan"), 0)
    with pytest.raises(traitlets.TraitError, match="height must be"):
        view.height = 10
    with pytest.raises(traitlets.TraitError, match="preview_size"):
        CompareView.from_images(solid((4, 4), RED), solid((4, 4), BLUE), preview_size=2)


def test_blend_opacity_is_its_own_trait(view: CompareView) -> None:
    assert view.opacity == _modes.BLEND_DEFAULT == 0.5
    view.position = 0.1
    assert view.opacity == 0.5
    view.opacity = 2
    assert view.opacity == 1.0
    with pytest.raises(traitlets.TraitError, match="opacity must be a number"):
        view.opacity = float("nan")
    opened = CompareView.from_images(solid((4, 4), RED), solid((4, 4), BLUE), mode="blend",
                                     position=0.9)
    assert (opened.opacity, opened.position) == (0.5, 0.9)


def test_limits_come_from_the_modes_module(view: CompareView) -> None:
    assert view.limits == {"modes": list(_modes.MODES), "orientations": list(_modes.ORIENTATIONS),
                           "tile_px": _modes.TILE_PX, "max_zoom": _modes.MAX_ZOOM,
                           "diff_gain": _modes.DIFF_GAIN,
                           "input_filters": list(_modes.INPUT_FILTERS)}
    with pytest.raises(traitlets.TraitError):
        view.limits = {}
    # Synced, so the front end reads them; the JavaScript repeats none of them.
    assert "limits" in view.keys
    for name in _JS_PARTS:
        js = (_STATIC / name).read_text(encoding="utf-8")
        assert '"side-by-side", "blend"' not in js, name
        assert not re.search(r"\b(TILE_PX|MAX_ZOOM|DIFF_GAIN)\s*=", js), name


def test_front_end_is_its_parts_joined_in_order() -> None:
    esm = CompareView._esm
    starts = []
    for name in _JS_PARTS:
        body = (_STATIC / name).read_text(encoding="utf-8")
        starts.append(esm.index(f"// ==== {name} ====\n" + body))
    assert starts == sorted(starts)
    # Only the last part exports; the others are plain scripts a blank page can load.
    assert [n for n in _JS_PARTS if "export " in (_STATIC / n).read_text()] == ["compare.js"]
    assert esm.rstrip().endswith("export default { render };")
    assert "import " not in esm


def test_read_only_traits_refuse_writes(view: CompareView) -> None:
    for name in ("sizes", "placement", "input_preview", "output_preview"):
        with pytest.raises(traitlets.TraitError):
            setattr(view, name, getattr(view, name))


# ---- inputs, previews, placement -----------------------------------------------

def test_from_images_takes_pil_arrays_and_paths(tmp_path: Path) -> None:
    a = Image.fromarray(solid((40, 30), RED))
    b_path = tmp_path / "b.png"
    Image.fromarray(solid((80, 60), BLUE)).save(b_path)
    for first, second in [(a, b_path), (np.asarray(a), str(b_path)), (a, b_path.read_bytes())]:
        v = CompareView.from_images(first, second)
        assert v.sizes == {"input": [40, 30], "output": [80, 60]}
        assert decode(v.input_preview)[0, 0].tolist() == list(RED)
        assert decode(v.output_preview)[0, 0].tolist() == list(BLUE)


def test_source_images_are_used_as_given() -> None:
    inp = load_image(solid((50, 50), RED), label="input")
    out = load_image(solid((100, 100), BLUE), label="output")
    v = CompareView(inp, out)
    assert v.labels == ("Input 50×50", "Output 100×100 (2.0×)")


def test_not_an_image_is_a_one_line_image_error(tmp_path: Path) -> None:
    bad = tmp_path / "page.jpg"
    bad.write_text("<html>Access denied</html>")
    with pytest.raises(ImageError) as info:
        CompareView.from_images(bad, solid((10, 10), BLUE))
    assert "\n" not in str(info.value)


def test_previews_are_binary_lossless_when_whole_and_jpeg_when_reduced() -> None:
    v = CompareView.from_images(noise((100, 80)), noise((1000, 800), 1), preview_size=256)
    state = v.get_state()
    assert isinstance(state["input_preview"], (bytes, memoryview))
    assert bytes(v.input_preview).startswith(b"\x89PNG")
    assert np.array_equal(decode(v.input_preview), noise((100, 80)))
    assert bytes(v.output_preview)[:3] == b"\xff\xd8\xff"
    assert Image.open(io.BytesIO(v.output_preview)).size == (256, 205)
    assert v.preview_formats == {"input": "png", "output": "jpeg"}


def test_reduced_previews_with_transparency_are_webp() -> None:
    rgba = Image.fromarray(noise((1000, 800), 1)).convert("RGBA")
    rgba.putalpha(128)
    v = CompareView.from_images(noise((100, 80)), rgba, preview_size=256)
    assert bytes(v.output_preview)[8:12] == b"WEBP" and v.preview_formats["output"] == "webp"


@pytest.mark.parametrize(("inp", "out", "crop", "expected"), [
    ((100, 50), (400, 200), None, (0, 0, 400, 200)),       # same aspect: covers
    ((100, 100), (200, 100), None, (50, 0, 100, 100)),     # letterbox, centred
    ((100, 100), (200, 100), True, (0, -50, 200, 200)),    # crop to fill
    ((200, 100), (100, 100), False, (0, 25, 100, 50)),
])
def test_placement_for_different_aspect_ratios(inp: tuple[int, int], out: tuple[int, int],
                                               crop: bool | None,
                                               expected: tuple[int, ...]) -> None:
    v = CompareView.from_images(solid(inp, RED), solid(out, BLUE), crop_to_fill=crop)
    assert v.placement == pytest.approx(expected)


# ---- tiles ---------------------------------------------------------------------

def request(view_id: str = "v1", gen: int = 1, level: float = 1, tiles: Any = ((0, 0),)) -> dict:
    return {"type": "tiles", "view": view_id, "gen": gen, "level": level,
            "tiles": [list(t) for t in tiles]}


def test_tiles_carry_full_resolution_pixels_of_both_sides() -> None:
    inp, out = noise((300, 200), 1), noise((600, 400), 2)
    v = Captured(inp, out, preview_size=64)
    v._on_tile_request(v, request(tiles=[(0, 0), (1, 0)]), [])
    assert [m["ix"] for m, _ in v.sent] == [0, 1]
    (first, (in_png, out_png)), (second, _) = v.sent
    assert first == {"type": "tile", "view": "v1", "gen": 1, "level": 1.0, "ix": 0, "iy": 0,
                     "x": 0, "y": 0, "w": TILE_PX, "h": 400, "panes": [0, 1],
                     "input_filter": "nearest"}
    assert second["x"] == TILE_PX and second["w"] == 600 - TILE_PX
    assert in_png.startswith(b"\x89PNG") and out_png.startswith(b"\x89PNG")
    out_tile = decode(out_png)
    # Opaque tiles travel as RGB: nothing is lost, a quarter less is sent.
    assert out_tile.shape == (400, TILE_PX, 3)
    assert np.array_equal(out_tile, out[:400, :TILE_PX])
    # The input lies at 2× on the output grid: each input pixel becomes a 2×2 block.
    in_tile = decode(in_png)
    upscaled = inp.repeat(2, axis=0).repeat(2, axis=1)
    assert np.array_equal(in_tile[..., :3], upscaled[:400, :TILE_PX])


def test_reduced_levels_cover_more_of_the_image() -> None:
    v = Captured(noise((100, 100)), noise((1500, 1100), 3), preview_size=64)
    v._on_tile_request(v, request(level=0.5, tiles=[(1, 1)]), [])
    (msg, (in_png, out_png)), = v.sent
    assert (msg["x"], msg["y"], msg["w"], msg["h"]) == (1024, 1024, 476, 76)
    assert decode(out_png).shape[:2] == (38, 238)
    assert decode(in_png).shape[:2] == (38, 238)


async def until(condition: Any, limit: float = 30.0) -> None:
    """Let the event loop run (tiles are cut on worker threads) until ``condition()``.

    ``limit`` only bounds a broken run; nothing is asserted about time.
    """
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("gave up waiting for tiles")
        await asyncio.sleep(0.005)


class BlockingSource:
    """A tile source whose cuts wait for ``release``; records every tile cut."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.cut: list[tuple[str, float, float]] = []
        self._lock = threading.Lock()

    def region(self, side: str, x: float, y: float, w: float, h: float,
               zoom: float = 1.0) -> Image.Image:
        with self._lock:
            self.cut.append((side, x, y))
        self.started.set()
        assert self.release.wait(10)
        return Image.new("RGB", (max(1, round(w * zoom)), max(1, round(h * zoom))))


def test_tiles_are_cut_off_the_event_loop_and_superseded_ones_never_cut() -> None:
    v = Captured(noise((64, 64)), noise((2048, 2048), 4), preview_size=64)
    source = BlockingSource()
    v._tile_source = source  # type: ignore[assignment]
    handled: list[str] = []

    async def interact() -> None:
        v._on_tile_request(v, request("a", 1, tiles=[(0, 0), (1, 0), (2, 0), (3, 0)]), [])
        await until(source.started.is_set)
        # The first tile is blocked in its worker: the loop still takes messages.
        v._on_tile_request(v, request("a", 2, tiles=[(3, 3)]), [])
        handled.append("second request")
        await asyncio.sleep(0.05)
        assert v.sent == []  # nothing finished, nothing sent, and nothing hung
        source.release.set()
        await until(lambda: len(v.sent) == 2 and not v._busy)

    asyncio.run(interact())
    assert handled == ["second request"]
    served = [(m["gen"], m["ix"], m["iy"]) for m, _ in v.sent]
    assert served == [(1, 0, 0), (2, 3, 3)]
    # Tiles (1, 0), (2, 0), (3, 0) of the first request were superseded: never cut.
    cut_x = sorted({x for side, x, _ in source.cut if side == "output"})
    assert cut_x == [0, 3 * TILE_PX]


def test_a_shown_view_builds_ahead_and_an_early_zoom_waits_for_that_build(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from topaz_nb.imaging import pyramid as _pyramid

    if not _pyramid.available():
        pytest.skip("pyvips is not installed")
    monkeypatch.setattr(_pyramid, "MIN_PIXELS", 10_000)
    big = noise((1400, 1000), 6)
    out_path = tmp_path / "out.jpg"  # a JPEG preview is drafted: no full decode for the view
    Image.fromarray(big).save(out_path, quality=95)
    started, release = threading.Event(), threading.Event()
    real_build = _pyramid.build

    def slow_build(*args: Any, **kwargs: Any) -> Any:
        started.set()
        assert release.wait(10)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(_pyramid, "build", slow_build)
    before = _pyramid.builds
    out = load_image(out_path, label="output", pyramid_path=tmp_path / "out.tif")
    v = Captured(noise((350, 250), 7), out, preview_size=256)
    assert not started.is_set()  # the first view did not build anything
    v._repr_mimebundle_()
    assert started.wait(10)  # shown: the build starts in the background

    async def zoom() -> None:
        v._on_tile_request(v, request(tiles=[(1, 1)]), [])
        await asyncio.sleep(0.05)
        assert v.sent == []  # waiting for the build under way, loop still free
        release.set()
        await until(lambda: len(v.sent) == 1)

    asyncio.run(zoom())
    for future in v._build_ahead():
        future.result(10)
    assert _pyramid.builds == before + 1  # one decode, shared by build-ahead and the tile
    (msg, (_, out_png)), = v.sent
    assert msg["type"] == "tile"
    expected = np.asarray(Image.open(out_path).convert("RGB"))[512:1000, 512:1024]
    assert np.array_equal(decode(out_png), expected)


def test_newer_request_supersedes_queued_tiles_of_the_same_view() -> None:
    v = Captured(noise((64, 64)), noise((2048, 2048), 4), preview_size=64)

    async def interact() -> None:
        v._on_tile_request(v, request("a", 1, tiles=[(0, 0), (1, 0), (2, 0), (3, 0)]), [])
        v._on_tile_request(v, request("b", 1, tiles=[(0, 1)]), [])
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        # The user panned: view "a" now wants one other tile only.
        v._on_tile_request(v, request("a", 2, tiles=[(3, 3)]), [])
        await until(lambda: len(v.sent) >= 2 and not v._busy and not v._queues)

    asyncio.run(interact())
    served = [(m["view"], m["gen"], m["ix"], m["iy"]) for m, _ in v.sent]
    stale = [s for s in served if s[0] == "a" and s[1] == 1]
    assert len(stale) <= 1  # at most the one cut before the newer request came in
    assert ("a", 2, 3, 3) in served and ("b", 1, 0, 1) in served
    assert len(served) == len(stale) + 2


def test_an_empty_request_cancels_the_queue() -> None:
    v = Captured(noise((64, 64)), noise((2048, 2048), 4), preview_size=64)

    async def interact() -> None:
        v._on_tile_request(v, request("a", 1, tiles=[(0, 0), (1, 0), (2, 0)]), [])
        v._on_tile_request(v, request("a", 2, tiles=[]), [])
        await until(lambda: not v._busy and not v._queues)

    asyncio.run(interact())
    assert v.sent == []


@pytest.mark.parametrize("content", [
    "tiles",
    {"type": "other"},
    request(level=0.3),
    request(level="x"),
    request(tiles=[(9, 9)]),
    request(tiles=[(-1, 0)]),
    request(tiles=["ab"]),
    {"type": "tiles", "view": "v"},
])
def test_malformed_requests_are_ignored(content: Any) -> None:
    v = Captured(noise((64, 64)), noise((600, 400), 5), preview_size=64)
    v._on_tile_request(v, content, [])
    assert v.sent == []


def test_a_failing_tile_is_reported_once_in_one_line() -> None:
    v = Captured(noise((64, 64)), noise((600, 400), 5), preview_size=64)

    class Broken:
        def region(self, *args: Any, **kwargs: Any) -> Image.Image:
            raise ImageError("Image 'output' is truncated: download it again.")

    v._tile_source = Broken()  # type: ignore[assignment]
    v._on_tile_request(v, request(tiles=[(0, 0), (1, 0)]), [])
    assert len(v.sent) == 1
    msg, buffers = v.sent[0]
    assert msg["type"] == "tile-error" and buffers == []
    assert "truncated" in msg["message"] and "\n" not in msg["message"]


# ---- static forms ----------------------------------------------------------------

def test_to_image_follows_mode_and_position() -> None:
    v = CompareView.from_images(solid((100, 50), RED), solid((400, 200), BLUE))
    img = np.asarray(v.to_image(width=400))
    assert img.shape == (200, 400, 3)
    assert np.abs(img[150, 100].astype(int) - RED).max() <= 3
    assert np.abs(img[150, 300].astype(int) - BLUE).max() <= 3

    v.position = 0.8
    img = np.asarray(v.to_image(width=400))
    assert np.abs(img[150, 300].astype(int) - RED).max() <= 3  # left of 320 now

    v.orientation = "horizontal"
    v.position = 0.5
    img = np.asarray(v.to_image(width=400))
    assert np.abs(img[60, 200].astype(int) - RED).max() <= 3
    assert np.abs(img[150, 200].astype(int) - BLUE).max() <= 3

    v.mode = "blend"  # the opacity, not the divider (0.5 here), sets the mix
    v.position = 0.1
    img = np.asarray(v.to_image(width=400))
    mix = [(a + b) / 2 for a, b in zip(RED, BLUE)]
    assert np.abs(img[150, 200].astype(int) - mix).max() <= 3
    v.opacity = 0.75
    img = np.asarray(v.to_image(width=400))
    mix = [a / 4 + b * 3 / 4 for a, b in zip(RED, BLUE)]
    assert np.abs(img[150, 200].astype(int) - mix).max() <= 3

    v.mode = "difference"
    img = np.asarray(v.to_image(width=400))
    diff = [min(255, abs(a - b) * _modes.DIFF_GAIN) for a, b in zip(RED, BLUE)]
    assert np.abs(img[150, 200].astype(int) - diff).max() <= 3

    v.mode = "toggle"
    v.showing = "input"
    assert np.abs(np.asarray(v.to_image(width=400))[150, 300].astype(int) - RED).max() <= 3
    v.showing = "output"
    assert np.abs(np.asarray(v.to_image(width=400))[150, 100].astype(int) - BLUE).max() <= 3

    v.mode = "side-by-side"
    img = np.asarray(v.to_image(width=404))
    assert img.shape[1] == 404
    assert np.abs(img[80, 100].astype(int) - RED).max() <= 3
    assert np.abs(img[80, 300].astype(int) - BLUE).max() <= 3


def test_to_image_draws_the_letterboxed_input_where_it_lies() -> None:
    v = CompareView.from_images(solid((100, 100), RED), solid((200, 100), BLUE), position=1.0)
    img = np.asarray(v.to_image(width=200))
    assert np.abs(img[80, 100].astype(int) - RED).max() <= 3
    assert img[80, 20].tolist() == [31, 31, 31]  # outside the input: the stage colour


def test_fallback_bundle_is_small_and_shows_both_sides() -> None:
    v = CompareView(noise((600, 400), 6), noise((2400, 1600), 7))
    v.mode = "swipe"
    data, metadata = v._repr_mimebundle_()
    assert isinstance(metadata, dict)
    assert set(data) == {"text/plain", "application/vnd.jupyter.widget-view+json", "image/jpeg"}
    assert data["text/plain"] == (
        "CompareView(Input 600×400 → Output 2400×1600 (4.0×), mode=swipe)")
    jpeg = base64.b64decode(data["image/jpeg"])
    assert len(jpeg) <= 300_000
    picture = Image.open(io.BytesIO(jpeg))
    assert picture.format == "JPEG" and picture.width <= 800

    solid_view = CompareView(solid((300, 200), RED), solid((1200, 800), BLUE))
    data, _ = solid_view._repr_mimebundle_()
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(data["image/jpeg"]))))
    h, w = img.shape[:2]
    assert np.abs(img[h * 3 // 4, w // 4].astype(int) - RED).max() <= 12
    assert np.abs(img[h * 3 // 4, w * 3 // 4].astype(int) - BLUE).max() <= 12


def test_save_html_is_self_contained(tmp_path: Path) -> None:
    v = CompareView.from_images(solid((64, 48), RED), solid((128, 96), BLUE), mode="blend")
    path = v.save_html(tmp_path / "compare.html")
    assert path == tmp_path / "compare.html"
    page = path.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)
    assert v._esm in page and v._css in page
    state = json.loads(re.search(r'id="topaz-compare-state">(.*?)</script>', page, re.DOTALL)
                       .group(1).replace("<\\/", "</"))
    assert base64.b64decode(state["output_preview"]) == bytes(v.output_preview)
    assert state["mode"] == "blend" and state["labels"] == list(v.labels)


def test_no_secret_or_presigned_url_in_the_state(tmp_path: Path) -> None:
    key = "tpz_live_SECRETKEY123"
    url = f"https://storage.example/out.png?X-Amz-Signature=abc&X-Amz-Credential={key}"
    out_file = tmp_path / "out.png"
    Image.fromarray(solid((120, 80), BLUE)).save(out_file)
    inp = load_image(solid((30, 20), RED), label=url)
    out = load_image(out_file, label=f"output {key}")
    v = CompareView(inp, out)
    state = v.get_state()
    text = json.dumps({k: val for k, val in state.items()
                       if not isinstance(val, (bytes, memoryview))})
    assert key not in text and "X-Amz" not in text
    assert not re.search(r"https?://[^\"\s]*\?", text)
    for value in state.values():
        if isinstance(value, (bytes, memoryview)):
            assert key.encode() not in bytes(value)
    data, _ = v._repr_mimebundle_()
    assert key not in data["text/plain"] and "http" not in data["text/plain"]


def test_first_view_stays_within_two_megabytes_an_image() -> None:
    # A whole-image preview of noise cannot be lossless under 2 MB: it goes as JPEG,
    # flagged lossy so the front end fetches exact tiles from 100 % on.
    big = CompareView(noise((300, 250), 5), noise((1200, 1000), 6), preview_size=2048)
    assert big.preview_formats == {"input": "png", "output": "jpeg"}
    assert len(big.output_preview) <= 2_000_000 and big.output_preview[:2] == b"\xff\xd8"
    assert big.input_preview.startswith(b"\x89PNG")
    assert np.array_equal(decode(big.input_preview), noise((300, 250), 5))

    reduced = CompareView(noise((300, 250), 5), noise((1200, 1000), 6), preview_size=256)
    assert reduced.preview_formats["output"] == "jpeg"
    assert len(reduced.output_preview) < 200_000


# ---- shoot-out: several outputs of one input --------------------------------------

def _gradient(size: tuple[int, int]) -> np.ndarray:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1),
                     (xx + yy) % 256], axis=-1).astype(np.uint8)


def shootout(**kwargs: Any) -> Captured:
    inp = _gradient((64, 48))
    img = Image.fromarray(inp)
    plain = np.asarray(img.resize((256, 192), Image.Resampling.LANCZOS))
    patched = plain.copy()
    patched[64:112, 96:160] = noise((64, 48), 5)
    half = np.asarray(img.resize((128, 96), Image.Resampling.LANCZOS))
    return Captured(inp, plain, patched, half, preview_size=64, **kwargs)


def test_a_shootout_has_a_pane_per_image_and_compares_left_with_right() -> None:
    v = shootout()
    assert v.panes == ["Input 64×48", "Output 1 256×192 (4.0×)", "Output 2 256×192 (4.0×)",
                       "Output 3 128×96 (2.0×)"]
    assert (v.left, v.right) == (0, 1)
    assert v.labels == (v.panes[0], v.panes[1])
    assert len(v.more_previews) == 2 and all(v.more_previews)
    # Every pane lies on the first output's grid; the 2× output is stretched over it.
    assert [p["rect"] for p in v.pane_info] == [[0, 0, 256, 192]] * 4
    assert v.pane_info[3]["size"] == [128, 96]
    v.right = 2
    assert v.labels == (v.panes[0], v.panes[2])
    v.left = 3
    assert v.labels == (v.panes[3], v.panes[2])
    with pytest.raises(traitlets.TraitError, match="pane index from 0 to 3"):
        v.right = 4
    v.labels = ("half", "patched")
    assert v.panes[3] == "half" and v.panes[2] == "patched"


def test_from_images_with_more_outputs_is_a_shootout_and_two_keep_their_labels() -> None:
    a, b, c = _gradient((32, 24)), _gradient((64, 48)), _gradient((64, 48))
    v = CompareView.from_images(a, b, c, labels=["in", "model x", "model y"], mode="grid")
    assert v.panes == ["in", "model x", "model y"] and v.mode == "grid"
    pair = CompareView.from_images(a, b)
    assert pair.panes == list(pair.labels) == ["A 32×24", "B 64×48 (2.0×)"]


def test_more_than_eight_outputs_is_a_one_line_error() -> None:
    img = _gradient((16, 12))
    with pytest.raises(traitlets.TraitError, match=r"^A view compares at most 8 outputs; got 9\.$"):
        CompareView(img, *[img] * 9)


def test_tiles_are_cut_for_the_panes_asked_for() -> None:
    v = shootout()
    v._on_tile_request(v, {**request(tiles=[(0, 0)]), "panes": [0, 2, 3]}, [])
    (msg, buffers), = v.sent
    assert msg["panes"] == [0, 2, 3] and len(buffers) == 3
    patched = decode(buffers[1])
    assert patched.shape[:2] == (192, 256)
    assert np.array_equal(patched[64:112, 96:160, :3], noise((64, 48), 5))
    # Output 3 (2×) is magnified onto the 4× grid: nearest by default, 2×2 blocks.
    half = decode(buffers[2])[..., :3]
    assert np.array_equal(half[0::2, 0::2], half[1::2, 1::2])


def test_a_smooth_input_filter_interpolates_magnified_panes() -> None:
    v = shootout()
    v._on_tile_request(v, {**request(tiles=[(0, 0)]), "panes": [0, 1],
                           "input_filter": "smooth"}, [])
    (msg, (smooth_png, _out_png)), = v.sent
    assert msg["input_filter"] == "smooth"
    smooth = decode(smooth_png)[..., :3].astype(int)
    blocks = _gradient((64, 48)).repeat(4, axis=0).repeat(4, axis=1).astype(int)
    # Not the 4×4 blocks, but close to them everywhere (the same picture).
    assert not np.array_equal(smooth, blocks)
    assert np.abs(smooth[8:-8, 8:-8, :2] - blocks[8:-8, 8:-8, :2]).mean() < 3
    row = smooth[50, 40:80, 0]
    assert len(set(row.tolist())) > 10  # a ramp, not four steps
    with pytest.raises(traitlets.TraitError, match="input_filter must be one of"):
        v.input_filter = "bilinear"


def test_fidelity_mode_sends_the_heat_map_of_right_with_its_regions() -> None:
    v = shootout()
    assert v.fidelity_map == {}
    v.mode = "fidelity"
    fmap = v.fidelity_map
    assert fmap["pane"] == 1 and fmap["overlay"].startswith(b"\x89PNG")
    assert fmap["rect"] == [0, 0, 256, 192]
    v.right = 2
    fmap = v.fidelity_map
    assert fmap["pane"] == 2 and fmap["psnr"] < v.fidelity(1).psnr - 3
    x, y, w, h = fmap["regions"][0]
    assert x <= 96 and y <= 64 and x + w >= 160 and y + h >= 112
    overlay = decode(fmap["overlay"])
    assert overlay.shape == (48, 64, 4) and overlay[20, 30, 3] > 0 and overlay[2, 2, 3] == 0


def test_grid_and_fidelity_have_static_pictures() -> None:
    v = shootout(mode="grid")
    grid = np.asarray(v.to_image(width=400))
    assert grid.shape[1] <= 400 and grid.shape[0] > 100
    v.mode = "fidelity"
    v.right = 2
    v.opacity = 1.0
    img = v.to_image(width=256)
    assert img.size == (256, 192)
    r, g, b = img.getpixel((128, 88))[:3]
    assert (r, g, b) != tuple(np.asarray(Image.fromarray(_gradient((64, 48)))
                                         .resize((256, 192)))[88, 128])


def test_pictures_of_an_input_reaching_far_past_its_output_draw_what_shows() -> None:
    # Cropped to fill, a 1000×2 input spans 500 000 px of its 2×1000 output: a
    # picture resampling all of it would need terabytes.
    v = CompareView(solid((1000, 2), (200, 30, 30)), solid((2, 1000), (30, 30, 200)),
                    crop_to_fill=True)
    assert tuple(v.placement) == (-249999.0, 0.0, 500000.0, 1000.0)
    for mode in ("swipe", "side-by-side", "blend", "difference", "toggle", "grid"):
        v.mode = mode
        picture = v.to_image(width=32)
        assert picture.width >= 32 and picture.height >= 1000
    v.mode = "swipe"
    picture = v.to_image(width=32)
    assert picture.getpixel((2, 500)) == (200, 30, 30)  # the input, left of the divider
    assert picture.getpixel((29, 500)) == (30, 30, 200)  # the output, right of it
    data, _ = v._repr_mimebundle_()
    still = Image.open(io.BytesIO(base64.b64decode(data["image/jpeg"])))
    assert still.height <= 8000  # narrowed: at 800 px wide it would be 400 000 px tall


def test_a_view_whose_fidelity_cannot_be_computed_shows_why() -> None:
    # Cropped to fill, a 2×1000 output covers no whole pixel of a 1000×2 input.
    v = CompareView(solid((1000, 2), (200, 30, 30)), solid((2, 1000), (30, 30, 200)),
                    crop_to_fill=True, mode="fidelity")
    fmap = v.fidelity_map
    assert fmap["reason"] == ("not computed: the 2×1000 output (cropped to fill) covers no "
                              "whole pixel of the 1000×2 input")
    assert (fmap["psnr"], fmap["ssim"], fmap["regions"]) == (None, None, [])
    assert decode(fmap["overlay"])[..., 3].max() == 0
    picture = v.to_image(width=32)
    assert picture.width == 32 and picture.getpixel((16, 500)) == (30, 30, 200)
    assert "image/jpeg" in v._repr_mimebundle_()[0]


def test_a_fidelity_that_cannot_decode_is_one_line_in_the_view(monkeypatch) -> None:
    from topaz_nb.errors import ImageTooLarge
    from topaz_nb.imaging import fidelity as _fidelity

    def too_large(*args: Any, **kwargs: Any) -> None:
        raise ImageTooLarge("output is too large to decode in the memory left")

    monkeypatch.setattr(_fidelity, "fidelity", too_large)
    v = CompareView(solid((64, 48), (200, 30, 30)), solid((256, 192), (200, 30, 30)),
                    mode="fidelity")
    assert v.fidelity_map["reason"] == ("not computed: output is too large to decode in the "
                                        "memory left")
    assert v.to_image(width=128).size == (128, 96)


def test_a_shootout_page_carries_every_preview(tmp_path: Path) -> None:
    v = shootout(mode="fidelity")
    page = v.save_html(tmp_path / "shootout.html").read_text(encoding="utf-8")
    state = json.loads(re.search(r'id="topaz-compare-state">(.*?)</script>', page, re.DOTALL)
                       .group(1).replace("<\\/", "</"))
    assert state["panes"] == v.panes and state["mode"] == "fidelity"
    assert [base64.b64decode(p["__b64__"]) for p in state["more_previews"]] == v.more_previews
    assert base64.b64decode(state["fidelity_map"]["overlay"]["__b64__"]) == \
        v.fidelity_map["overlay"]


def test_closing_calls_back_once_whoever_must_let_go_of_what_it_showed() -> None:
    v = CompareView(solid((40, 30), (255, 0, 0)), solid((80, 60), (0, 0, 255)))
    calls: list[str] = []
    v.on_close(lambda: calls.append("first"))
    v.on_close(lambda: calls.append("second"))
    assert calls == []
    v.close()
    assert calls == ["first", "second"] and v.comm is None
    v.close()
    assert calls == ["first", "second"]
