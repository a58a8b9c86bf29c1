// CompareView front end: one canvas, two images, one shared view.
//
// Everything is drawn in device pixels on a 2D canvas.  The view maps the
// OUTPUT image's pixel grid onto the screen (`zoom` device px per output px,
// `center` in output px); the input is drawn at its placement on that grid.
// Previews arrive as binary traits; when the view asks for more detail than a
// preview holds, native tiles are requested from the kernel with custom
// messages and drawn over the preview as they arrive.  See widget.py for the
// message protocol.

const MODES = ["swipe", "side-by-side", "blend", "difference", "toggle"];
const MODE_TITLES = {
  "swipe": "Swipe",
  "side-by-side": "Side by side",
  "blend": "Blend",
  "difference": "Difference",
  "toggle": "Toggle",
};
const TILE_PX = 512;        // a tile is 512×512 image pixels at its level
const MAX_TILES = 48;       // tile pairs kept per view (bounded memory)
const DIFF_GAIN = 4;        // difference mode amplification
const SYNC_MS = 150;        // kernel sync throttle during drags
const REQUEST_DELAY_MS = 60; // settle time before asking for tiles
const MAX_ZOOM = 64;
const GAP_CSS = 4;          // gap between side-by-side panes
const HANDLE_CSS = 12;      // grab distance around the swipe divider

function bytesOf(value) {
  if (!value) return null;
  if (value instanceof DataView) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  return null;
}

async function decodeImage(value) {
  const bytes = bytesOf(value);
  if (!bytes || bytes.byteLength === 0) return null;
  // Exact pixel values matter (lossless tiles, difference mode): no colour
  // conversion, no premultiplication round trip.
  return createImageBitmap(new Blob([bytes]), {
    premultiplyAlpha: "none",
    colorSpaceConversion: "none",
  });
}

function clamp(v, lo, hi) {
  return Math.min(hi, Math.max(lo, v));
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function render({ model, el: host }) {
  const viewId = Math.random().toString(36).slice(2, 10);
  const cleanups = [];
  const listen = (target, type, fn, opts) => {
    target.addEventListener(type, fn, opts);
    cleanups.push(() => target.removeEventListener(type, fn, opts));
  };
  const onModel = (name, fn) => {
    model.on(name, fn);
    cleanups.push(() => model.off(name, fn));
  };

  // ---- DOM ---------------------------------------------------------------
  const root = el("div", "tnb-compare");
  root.tabIndex = 0;
  root.setAttribute("role", "application");
  root.setAttribute("aria-label",
    "Image comparison. Arrow keys move the divider, space switches images, " +
    "m changes mode, 0 fits, 1 shows 100 percent.");

  const bar = el("div", "tnb-bar");
  const modeGroup = el("div", "tnb-modes");
  modeGroup.setAttribute("role", "group");
  const modeButtons = {};
  for (const mode of MODES) {
    const b = el("button", "tnb-btn", MODE_TITLES[mode]);
    b.type = "button";
    b.dataset.mode = mode;
    b.tabIndex = -1;
    modeButtons[mode] = b;
    modeGroup.append(b);
  }
  const sliderWrap = el("label", "tnb-slider");
  const sliderName = el("span", "tnb-slider-name", "Split");
  const slider = el("input");
  slider.type = "range";
  slider.min = "0";
  slider.max = "1";
  slider.step = "0.001";
  slider.tabIndex = -1;
  sliderWrap.append(sliderName, slider);
  const spacer = el("div", "tnb-spacer");
  const zoomText = el("span", "tnb-zoom", "fit");
  const fitBtn = el("button", "tnb-btn", "Fit");
  fitBtn.type = "button";
  fitBtn.tabIndex = -1;
  fitBtn.title = "Fit to view (0)";
  const oneBtn = el("button", "tnb-btn", "100%");
  oneBtn.type = "button";
  oneBtn.tabIndex = -1;
  oneBtn.title = "One image pixel per screen pixel (1, double-click)";
  bar.append(modeGroup, sliderWrap, spacer, zoomText, fitBtn, oneBtn);

  const stage = el("div", "tnb-stage");
  const canvas = el("canvas", "tnb-canvas");
  const labelA = el("div", "tnb-label");
  const labelB = el("div", "tnb-label");
  const divider = el("div", "tnb-divider");
  divider.append(el("div", "tnb-knob"));
  const status = el("div", "tnb-status");
  stage.append(canvas, divider, labelA, labelB, status);
  root.append(bar, stage);
  host.append(root);
  cleanups.push(() => root.remove());

  const ctx = canvas.getContext("2d");

  // ---- state (per view; nothing global) -----------------------------------
  const st = {
    mode: model.get("mode"),
    orientation: model.get("orientation"),
    position: model.get("position"),
    zoom: model.get("zoom"),
    center: model.get("center") || [0, 0],
    showing: model.get("showing"),
    cssW: 0,
    cssH: 0,
    dpr: window.devicePixelRatio || 1,
    previews: { input: null, output: null },
    previewToken: 0,
    tiles: new Map(),     // key -> {level, x, y, w, h, input, output}
    gen: 0,
    lastRequest: "",
    requestTimer: 0,
    raf: 0,
    disposed: false,
    pointers: new Map(),
    gesture: null,
    syncTimer: 0,
    committing: false,
    lastSync: 0,
  };

  const sizes = () => model.get("sizes") || { input: [1, 1], output: [1, 1] };
  const outSize = () => sizes().output || [1, 1];
  const placement = () => {
    const p = model.get("placement");
    const [w, h] = outSize();
    return p && p.length === 4 ? p : [0, 0, w, h];
  };

  // ---- geometry -----------------------------------------------------------
  function panes() {
    const W = canvas.width;
    const H = canvas.height;
    if (st.mode === "side-by-side") {
      const gap = Math.round(GAP_CSS * st.dpr);
      const w = Math.floor((W - gap) / 2);
      return [
        { x: 0, y: 0, w, h: H },
        { x: W - w, y: 0, w, h: H },
      ];
    }
    return [{ x: 0, y: 0, w: W, h: H }];
  }

  function fitZoom(pane) {
    const [ow, oh] = outSize();
    if (!pane.w || !pane.h) return 1;
    return Math.min(pane.w / ow, pane.h / oh, MAX_ZOOM);
  }

  // The transform of one pane: screen = o + p * z (device px).
  function transform(pane) {
    const [ow, oh] = outSize();
    const fit = st.zoom <= 0;
    const z = fit ? fitZoom(pane) : st.zoom;
    const cx = fit ? ow / 2 : st.center[0];
    const cy = fit ? oh / 2 : st.center[1];
    // Whole device pixels keep 1:1 drawing exact at 100 %.
    const ox = Math.round(pane.x + pane.w / 2 - cx * z);
    const oy = Math.round(pane.y + pane.h / 2 - cy * z);
    return { z, ox, oy };
  }

  function paneAt(devX, devY) {
    for (const p of panes()) {
      if (devX >= p.x && devX < p.x + p.w && devY >= p.y && devY < p.y + p.h) return p;
    }
    return panes()[0];
  }

  function splitDev(pane) {
    return st.orientation === "horizontal"
      ? pane.y + st.position * pane.h
      : pane.x + st.position * pane.w;
  }

  // Make the current view explicit (fit → numbers) before changing it.
  function pinView() {
    if (st.zoom > 0) return;
    const pane = panes()[0];
    const [ow, oh] = outSize();
    st.zoom = fitZoom(pane);
    st.center = [ow / 2, oh / 2];
  }

  function zoomAbout(devX, devY, newZoom) {
    pinView();
    const pane = paneAt(devX, devY);
    const { z, ox, oy } = transform(pane);
    const px = (devX - ox) / z;
    const py = (devY - oy) / z;
    const nz = clamp(newZoom, fitZoom(pane) / 8, MAX_ZOOM);
    st.zoom = nz;
    st.center = [
      px - (devX - pane.x - pane.w / 2) / nz,
      py - (devY - pane.y - pane.h / 2) / nz,
    ];
    viewChanged();
  }

  function oneToOne(devX, devY) {
    const pane = panes()[0];
    if (devX === undefined) {
      devX = pane.x + pane.w / 2;
      devY = pane.y + pane.h / 2;
    }
    zoomAbout(devX, devY, 1);
  }

  function fit() {
    const [ow, oh] = outSize();
    st.zoom = 0;
    st.center = [ow / 2, oh / 2];
    viewChanged();
  }

  // ---- kernel sync ----------------------------------------------------------
  function commit() {
    st.syncTimer = 0;
    st.lastSync = performance.now();
    // Setting one trait fires its change event at once; the others must not be
    // read back from the model half-way through.
    st.committing = true;
    try {
      writeModel();
    } finally {
      st.committing = false;
    }
    model.save_changes();
  }

  function writeModel() {
    model.set("position", st.position);
    model.set("zoom", st.zoom);
    model.set("center", [st.center[0], st.center[1]]);
    model.set("mode", st.mode);
    model.set("orientation", st.orientation);
    model.set("showing", st.showing);
  }

  // Updates leave at most every SYNC_MS, also when a gesture ends: the kernel
  // may handle comm messages on more than one thread (kernel subshells), and
  // spacing them keeps it from applying two of them out of order.  Whatever
  // the state is when the timer fires is what is sent, so the last one wins.
  function syncSoon() {
    if (st.syncTimer) return;
    const wait = Math.max(0, SYNC_MS - (performance.now() - st.lastSync));
    st.syncTimer = setTimeout(commit, wait);
  }

  function viewChanged() {
    scheduleDraw();
    scheduleTiles();
    syncSoon();
  }

  // ---- tiles ----------------------------------------------------------------
  function previewScale(side) {
    const bmp = st.previews[side];
    if (!bmp) return 0;
    const rect = side === "input" ? placement() : [0, 0, ...outSize()];
    return bmp.width / rect[2];
  }

  function isDownscaled(side) {
    const bmp = st.previews[side];
    const native = sizes()[side];
    return !!bmp && !!native && bmp.width < native[0];
  }

  // A whole-image preview that was sent lossy (to keep the first view small)
  // still needs native tiles from 100 % on, where exact pixels are promised.
  function isLossy(side) {
    const formats = model.get("preview_formats") || {};
    return !!formats[side] && formats[side] !== "png";
  }

  function needsTiles(side, z) {
    return (isDownscaled(side) && z > previewScale(side) * 1.01)
      || (isLossy(side) && z >= 0.999 * previewScale(side));
  }

  function wantedLevel(z) {
    const needOut = needsTiles("output", z);
    const needIn = needsTiles("input", z);
    if (!needOut && !needIn) return 0;
    // Power-of-two levels up to native: above 100 % native pixels are enlarged.
    return Math.min(1, Math.pow(2, Math.ceil(Math.log2(z) - 1e-9)));
  }

  function visibleTiles(level) {
    const [ow, oh] = outSize();
    const span = TILE_PX / level;
    const keys = [];
    const seen = new Set();
    for (const pane of panes()) {
      const { z, ox, oy } = transform(pane);
      const x0 = clamp((pane.x - ox) / z, 0, ow);
      const y0 = clamp((pane.y - oy) / z, 0, oh);
      const x1 = clamp((pane.x + pane.w - ox) / z, 0, ow);
      const y1 = clamp((pane.y + pane.h - oy) / z, 0, oh);
      if (x1 <= x0 || y1 <= y0) continue;
      const cx = (x0 + x1) / 2;
      const cy = (y0 + y1) / 2;
      for (let iy = Math.floor(y0 / span); iy * span < y1; iy++) {
        for (let ix = Math.floor(x0 / span); ix * span < x1; ix++) {
          const key = `${level}/${ix}/${iy}`;
          if (seen.has(key)) continue;
          seen.add(key);
          const d = Math.hypot((ix + 0.5) * span - cx, (iy + 0.5) * span - cy);
          keys.push({ key, ix, iy, d });
        }
      }
    }
    keys.sort((a, b) => a.d - b.d);
    return keys;
  }

  function scheduleTiles() {
    if (st.requestTimer) clearTimeout(st.requestTimer);
    st.requestTimer = setTimeout(requestTiles, REQUEST_DELAY_MS);
  }

  function requestTiles() {
    st.requestTimer = 0;
    if (st.disposed || !canvas.width) return;
    const z = transform(panes()[0]).z;
    const level = wantedLevel(z);
    const missing = level ? visibleTiles(level).filter((t) => !st.tiles.has(t.key)) : [];
    const signature = missing.map((t) => t.key).join(",");
    if (signature === st.lastRequest) return;
    st.lastRequest = signature;
    st.gen += 1;
    // An empty list tells the kernel to drop whatever it still had queued.
    model.send({
      type: "tiles",
      view: viewId,
      gen: st.gen,
      level: level || 1,
      tiles: missing.map((t) => [t.ix, t.iy]),
    });
  }

  function dropTile(key) {
    const t = st.tiles.get(key);
    if (!t) return;
    st.tiles.delete(key);
    t.input.close();
    t.output.close();
  }

  function clearTiles() {
    for (const key of [...st.tiles.keys()]) dropTile(key);
    st.lastRequest = "";
  }

  async function onTile(msg, buffers) {
    if (msg.view !== viewId) return;
    if (msg.type === "tile-error") {
      status.textContent = msg.message || "Tiles unavailable";
      status.hidden = false;
      return;
    }
    const currentLevel = wantedLevel(transform(panes()[0]).z);
    // A stale answer for a level the view has left is not worth decoding.
    if (msg.gen < st.gen && msg.level !== currentLevel) return;
    const key = `${msg.level}/${msg.ix}/${msg.iy}`;
    if (st.tiles.has(key) || !buffers || buffers.length < 2) return;
    const [input, output] = await Promise.all([decodeImage(buffers[0]), decodeImage(buffers[1])]);
    if (st.disposed || st.tiles.has(key)) {
      input && input.close();
      output && output.close();
      return;
    }
    st.tiles.set(key, {
      level: msg.level, x: msg.x, y: msg.y, w: msg.w, h: msg.h, input, output,
    });
    while (st.tiles.size > MAX_TILES) {
      dropTile(st.tiles.keys().next().value);
    }
    status.hidden = true;
    scheduleDraw();
  }

  // ---- drawing ----------------------------------------------------------------
  function scheduleDraw() {
    if (!st.raf && !st.disposed) st.raf = requestAnimationFrame(draw);
  }

  // Draws one side (preview, then any tiles over it) into the context `c`.
  function drawSide(c, side, pane, tf) {
    const { z, ox, oy } = tf;
    const rect = side === "input" ? placement() : [0, 0, ...outSize()];
    c.imageSmoothingEnabled = z < 0.999;
    c.imageSmoothingQuality = "high";
    const bmp = st.previews[side];
    if (bmp) {
      c.drawImage(bmp, ox + rect[0] * z, oy + rect[1] * z, rect[2] * z, rect[3] * z);
    }
    // Coarser levels first, so the sharpest available tile ends on top.
    const visible = [];
    for (const [key, t] of st.tiles) {
      const sx = ox + t.x * z;
      const sy = oy + t.y * z;
      if (sx > pane.x + pane.w || sy > pane.y + pane.h) continue;
      if (sx + t.w * z < pane.x || sy + t.h * z < pane.y) continue;
      visible.push([key, t]);
    }
    visible.sort((a, b) => a[1].level - b[1].level);
    for (const [key, t] of visible) {
      // Touch: recently drawn tiles are the last to be evicted.
      st.tiles.delete(key);
      st.tiles.set(key, t);
      c.drawImage(t[side], ox + t.x * z, oy + t.y * z, t.w * z, t.h * z);
    }
  }

  function clip(x, y, w, h, c = ctx) {
    c.beginPath();
    c.rect(x, y, w, h);
    c.clip();
  }

  // Blend and difference need each side flattened first: a side is a preview
  // with tiles over it, and compositing those layers one by one would count
  // the overlap twice.
  let layer = null;
  function drawLayered(side, pane, tf, alpha, operation) {
    if (!layer) layer = document.createElement("canvas");
    if (layer.width !== canvas.width || layer.height !== canvas.height) {
      layer.width = canvas.width;
      layer.height = canvas.height;
    }
    const lc = layer.getContext("2d");
    lc.setTransform(1, 0, 0, 1, 0, 0);
    lc.clearRect(pane.x, pane.y, pane.w, pane.h);
    lc.save();
    clip(pane.x, pane.y, pane.w, pane.h, lc);
    drawSide(lc, side, pane, tf);
    lc.restore();
    ctx.save();
    ctx.globalAlpha = alpha;
    ctx.globalCompositeOperation = operation;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(layer, pane.x, pane.y, pane.w, pane.h, pane.x, pane.y, pane.w, pane.h);
    ctx.restore();
  }

  function amplify(pane) {
    const w = Math.max(1, Math.round(pane.w));
    const h = Math.max(1, Math.round(pane.h));
    const img = ctx.getImageData(pane.x, pane.y, w, h);
    const d = img.data;
    for (let i = 0; i < d.length; i += 4) {
      d[i] = Math.min(255, d[i] * DIFF_GAIN);
      d[i + 1] = Math.min(255, d[i + 1] * DIFF_GAIN);
      d[i + 2] = Math.min(255, d[i + 2] * DIFF_GAIN);
      d[i + 3] = 255;
    }
    ctx.putImageData(img, pane.x, pane.y);
  }

  function draw() {
    st.raf = 0;
    if (st.disposed) return;
    const W = canvas.width;
    const H = canvas.height;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.globalAlpha = 1;
    ctx.globalCompositeOperation = "source-over";
    ctx.clearRect(0, 0, W, H);
    const ps = panes();
    for (let i = 0; i < ps.length; i++) {
      const pane = ps[i];
      const tf = transform(pane);
      ctx.save();
      clip(pane.x, pane.y, pane.w, pane.h);
      if (st.mode === "side-by-side") {
        drawSide(ctx, i === 0 ? "input" : "output", pane, tf);
      } else if (st.mode === "toggle") {
        drawSide(ctx, st.showing, pane, tf);
      } else if (st.mode === "blend") {
        drawSide(ctx, "input", pane, tf);
        drawLayered("output", pane, tf, st.position, "source-over");
      } else if (st.mode === "difference") {
        ctx.fillStyle = "#000";
        ctx.fillRect(pane.x, pane.y, pane.w, pane.h);
        drawSide(ctx, "input", pane, tf);
        drawLayered("output", pane, tf, 1, "difference");
      } else {
        const split = splitDev(pane);
        ctx.save();
        if (st.orientation === "horizontal") {
          clip(pane.x, split, pane.w, pane.y + pane.h - split);
        } else {
          clip(split, pane.y, pane.x + pane.w - split, pane.h);
        }
        drawSide(ctx, "output", pane, tf);
        ctx.restore();
        ctx.save();
        if (st.orientation === "horizontal") {
          clip(pane.x, pane.y, pane.w, split - pane.y);
        } else {
          clip(pane.x, pane.y, split - pane.x, pane.h);
        }
        drawSide(ctx, "input", pane, tf);
        ctx.restore();
      }
      ctx.restore();
      if (st.mode === "difference") amplify(pane);
    }
    updateOverlay();
  }

  // ---- overlay (labels, divider, toolbar state) -------------------------------
  function updateOverlay() {
    const labels = model.get("labels") || ["Input", "Output"];
    const d = st.dpr;
    const ps = panes();
    root.dataset.mode = st.mode;
    root.dataset.orientation = st.orientation;
    for (const mode of MODES) {
      modeButtons[mode].setAttribute("aria-pressed", String(mode === st.mode));
    }
    const sliding = st.mode === "swipe" || st.mode === "blend";
    sliderWrap.hidden = !sliding;
    sliderName.textContent = st.mode === "blend" ? "Opacity" : "Split";
    slider.value = String(st.position);
    const z = transform(ps[0]).z;
    zoomText.textContent = `${st.zoom <= 0 ? "fit " : ""}${Math.round(z * 100)}%`;

    labelA.hidden = false;
    labelB.hidden = false;
    labelA.className = "tnb-label";
    labelB.className = "tnb-label";
    labelA.style.left = labelA.style.right = labelA.style.top = labelA.style.bottom = "";
    labelB.style.left = labelB.style.right = labelB.style.top = labelB.style.bottom = "";
    labelA.textContent = labels[0];
    labelB.textContent = labels[1];
    divider.hidden = st.mode !== "swipe";
    if (st.mode === "side-by-side") {
      labelA.style.left = `${ps[0].x / d + 8}px`;
      labelA.style.top = "8px";
      labelB.style.left = `${ps[1].x / d + 8}px`;
      labelB.style.top = "8px";
    } else if (st.mode === "toggle") {
      labelB.hidden = true;
      labelA.textContent = `${st.showing === "input" ? labels[0] : labels[1]}  ·  space to switch`;
      labelA.style.left = "8px";
      labelA.style.top = "8px";
    } else if (st.mode === "difference") {
      labelB.hidden = true;
      labelA.textContent = `|${labels[1]} − ${labels[0]}| × ${DIFF_GAIN}`;
      labelA.style.left = "8px";
      labelA.style.top = "8px";
    } else if (st.mode === "blend") {
      labelA.textContent = `${labels[0]}  ${Math.round((1 - st.position) * 100)}%`;
      labelB.textContent = `${labels[1]}  ${Math.round(st.position * 100)}%`;
      labelA.style.left = "8px";
      labelA.style.top = "8px";
      labelB.style.right = "8px";
      labelB.style.top = "8px";
    } else if (st.orientation === "horizontal") {
      labelA.style.left = "8px";
      labelA.style.top = "8px";
      labelB.style.left = "8px";
      labelB.style.bottom = "8px";
    } else {
      labelA.style.left = "8px";
      labelA.style.top = "8px";
      labelB.style.right = "8px";
      labelB.style.top = "8px";
    }
    if (st.mode === "swipe") {
      const split = splitDev(ps[0]) / d;
      if (st.orientation === "horizontal") {
        divider.style.left = "0px";
        divider.style.top = `${split}px`;
      } else {
        divider.style.top = "0px";
        divider.style.left = `${split}px`;
      }
    }
  }

  // ---- input: pointer -----------------------------------------------------------
  function devPoint(ev) {
    const r = canvas.getBoundingClientRect();
    const sx = r.width ? canvas.width / r.width : st.dpr;
    const sy = r.height ? canvas.height / r.height : st.dpr;
    return [(ev.clientX - r.left) * sx, (ev.clientY - r.top) * sy];
  }

  function nearDivider(dx, dy) {
    if (st.mode !== "swipe") return false;
    const pane = panes()[0];
    const split = splitDev(pane);
    const grab = HANDLE_CSS * st.dpr;
    return st.orientation === "horizontal"
      ? Math.abs(dy - split) <= grab
      : Math.abs(dx - split) <= grab;
  }

  function setPositionFrom(dx, dy) {
    const pane = panes()[0];
    st.position = st.orientation === "horizontal"
      ? clamp((dy - pane.y) / pane.h, 0, 1)
      : clamp((dx - pane.x) / pane.w, 0, 1);
    scheduleDraw();
    syncSoon();
  }

  function onPointerDown(ev) {
    if (ev.button !== undefined && ev.button > 0) return;
    root.focus({ preventScroll: true });
    const [dx, dy] = devPoint(ev);
    st.pointers.set(ev.pointerId, [dx, dy]);
    try {
      stage.setPointerCapture(ev.pointerId);
    } catch (_) { /* synthetic events have no capture */ }
    if (st.pointers.size === 2) {
      const pts = [...st.pointers.values()];
      pinView();
      st.gesture = {
        kind: "pinch",
        dist: Math.hypot(pts[0][0] - pts[1][0], pts[0][1] - pts[1][1]) || 1,
        zoom: st.zoom,
      };
    } else if (nearDivider(dx, dy)) {
      st.gesture = { kind: "divider" };
      setPositionFrom(dx, dy);
    } else {
      st.gesture = { kind: "pan", start: [dx, dy], last: [dx, dy], moved: false };
    }
    ev.preventDefault();
  }

  function onPointerMove(ev) {
    const [dx, dy] = devPoint(ev);
    if (!st.pointers.has(ev.pointerId)) {
      stage.style.cursor = nearDivider(dx, dy)
        ? (st.orientation === "horizontal" ? "row-resize" : "col-resize")
        : "";
      return;
    }
    st.pointers.set(ev.pointerId, [dx, dy]);
    const g = st.gesture;
    if (!g) return;
    if (g.kind === "divider") {
      setPositionFrom(dx, dy);
    } else if (g.kind === "pinch" && st.pointers.size >= 2) {
      const pts = [...st.pointers.values()];
      const dist = Math.hypot(pts[0][0] - pts[1][0], pts[0][1] - pts[1][1]) || 1;
      const mx = (pts[0][0] + pts[1][0]) / 2;
      const my = (pts[0][1] + pts[1][1]) / 2;
      zoomAbout(mx, my, g.zoom * (dist / g.dist));
    } else if (g.kind === "pan") {
      if (Math.hypot(dx - g.start[0], dy - g.start[1]) > 3 * st.dpr) g.moved = true;
      if (!g.moved) return;
      pinView();
      st.center = [
        st.center[0] - (dx - g.last[0]) / st.zoom,
        st.center[1] - (dy - g.last[1]) / st.zoom,
      ];
      g.last = [dx, dy];
      viewChanged();
    }
  }

  function onPointerUp(ev) {
    if (!st.pointers.has(ev.pointerId)) return;
    st.pointers.delete(ev.pointerId);
    const g = st.gesture;
    if (st.pointers.size === 0) {
      st.gesture = null;
      if (g && g.kind === "pan" && !g.moved && st.mode === "toggle" && ev.type === "pointerup") {
        st.showing = st.showing === "input" ? "output" : "input";
        scheduleDraw();
      }
      if (g) syncSoon();
    } else if (g && g.kind === "pinch") {
      const [p] = [...st.pointers.values()];
      st.gesture = { kind: "pan", start: p, last: p, moved: true };
    }
  }

  function onWheel(ev) {
    ev.preventDefault();
    const [dx, dy] = devPoint(ev);
    const unit = ev.deltaMode === 1 ? 16 : ev.deltaMode === 2 ? 400 : 1;
    const z = transform(paneAt(dx, dy)).z;
    zoomAbout(dx, dy, z * Math.exp(-ev.deltaY * unit * 0.0015));
  }

  function onDoubleClick(ev) {
    const [dx, dy] = devPoint(ev);
    if (nearDivider(dx, dy)) return;
    ev.preventDefault();
    if (st.zoom > 0 && Math.abs(st.zoom - 1) < 1e-6) fit();
    else oneToOne(dx, dy);
  }

  // ---- input: keyboard ----------------------------------------------------------
  function nudge(delta) {
    st.position = clamp(Math.round((st.position + delta) * 1000) / 1000, 0, 1);
    scheduleDraw();
    syncSoon();
  }

  function onKey(ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const step = ev.shiftKey ? 0.1 : 0.02;
    const horizontal = st.orientation === "horizontal" && st.mode === "swipe";
    let handled = true;
    switch (ev.key) {
      case "ArrowLeft":
        if (horizontal) handled = false; else nudge(-step);
        break;
      case "ArrowRight":
        if (horizontal) handled = false; else nudge(step);
        break;
      case "ArrowUp":
        if (horizontal) nudge(-step); else handled = false;
        break;
      case "ArrowDown":
        if (horizontal) nudge(step); else handled = false;
        break;
      case " ":
      case "Spacebar":
        st.showing = st.showing === "input" ? "output" : "input";
        st.mode = "toggle";
        scheduleDraw();
        syncSoon();
        break;
      case "m":
      case "M": {
        const i = MODES.indexOf(st.mode);
        const di = ev.key === "M" ? MODES.length - 1 : 1;
        st.mode = MODES[(i + di) % MODES.length];
        forgetLastRequest();
        viewChanged();
        syncSoon();
        break;
      }
      case "o":
        st.orientation = st.orientation === "horizontal" ? "vertical" : "horizontal";
        scheduleDraw();
        syncSoon();
        break;
      case "0":
        fit();
        syncSoon();
        break;
      case "1":
        oneToOne();
        syncSoon();
        break;
      case "+":
      case "=": {
        const p = panes()[0];
        zoomAbout(p.x + p.w / 2, p.y + p.h / 2, transform(p).z * 1.5);
        break;
      }
      case "-": {
        const p = panes()[0];
        zoomAbout(p.x + p.w / 2, p.y + p.h / 2, transform(p).z / 1.5);
        break;
      }
      default:
        handled = false;
    }
    if (handled) {
      // Keep the notebook's own shortcuts (m = markdown, 1 = heading, ...) away.
      ev.preventDefault();
      ev.stopPropagation();
    }
  }

  function forgetLastRequest() {
    st.lastRequest = "";
  }

  // ---- model → view -----------------------------------------------------------
  function pullFromModel() {
    if (st.committing) return;
    if (!st.gesture) {
      st.position = model.get("position");
      st.zoom = model.get("zoom");
      st.center = model.get("center") || st.center;
    }
    st.mode = model.get("mode");
    st.orientation = model.get("orientation");
    st.showing = model.get("showing");
    viewChanged();
  }

  async function loadPreviews() {
    const token = ++st.previewToken;
    const [input, output] = await Promise.all([
      decodeImage(model.get("input_preview")),
      decodeImage(model.get("output_preview")),
    ]);
    if (st.disposed || token !== st.previewToken) {
      input && input.close();
      output && output.close();
      return;
    }
    for (const side of ["input", "output"]) {
      if (st.previews[side]) st.previews[side].close();
    }
    st.previews = { input, output };
    clearTiles();
    viewChanged();
  }

  for (const name of ["mode", "orientation", "position", "zoom", "center", "showing"]) {
    onModel(`change:${name}`, pullFromModel);
  }
  onModel("change:labels", scheduleDraw);
  onModel("change:placement", () => { clearTiles(); viewChanged(); });
  onModel("change:input_preview", loadPreviews);
  onModel("change:output_preview", loadPreviews);
  onModel("change:height", () => { stage.style.height = `${model.get("height")}px`; });
  onModel("msg:custom", onTile);

  // ---- DOM events -----------------------------------------------------------------
  listen(stage, "pointerdown", onPointerDown);
  listen(stage, "pointermove", onPointerMove);
  listen(stage, "pointerup", onPointerUp);
  listen(stage, "pointercancel", onPointerUp);
  listen(stage, "wheel", onWheel, { passive: false });
  listen(stage, "dblclick", onDoubleClick);
  listen(root, "keydown", onKey);
  listen(modeGroup, "click", (ev) => {
    const mode = ev.target && ev.target.dataset && ev.target.dataset.mode;
    if (!mode) return;
    st.mode = mode;
    root.focus({ preventScroll: true });
    viewChanged();
    syncSoon();
  });
  listen(slider, "input", () => {
    st.position = clamp(Number(slider.value), 0, 1);
    scheduleDraw();
    syncSoon();
  });
  listen(slider, "change", syncSoon);
  listen(fitBtn, "click", () => { fit(); syncSoon(); root.focus({ preventScroll: true }); });
  listen(oneBtn, "click", () => { oneToOne(); syncSoon(); root.focus({ preventScroll: true }); });

  function resize() {
    const r = stage.getBoundingClientRect();
    // Hidden (collapsed output, inactive tab): keep the last drawing.
    if (r.width < 1 || r.height < 1) return;
    st.dpr = window.devicePixelRatio || 1;
    st.cssW = r.width;
    st.cssH = r.height;
    const w = Math.max(1, Math.round(r.width * st.dpr));
    const h = Math.max(1, Math.round(r.height * st.dpr));
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
      canvas.style.width = `${r.width}px`;
      canvas.style.height = `${r.height}px`;
      st.lastRequest = "";
      viewChanged();
    }
  }
  stage.style.height = `${model.get("height")}px`;
  const observer = new ResizeObserver(resize);
  observer.observe(stage);
  cleanups.push(() => observer.disconnect());

  status.hidden = true;
  resize();
  loadPreviews();

  return () => {
    st.disposed = true;
    if (st.raf) cancelAnimationFrame(st.raf);
    if (st.requestTimer) clearTimeout(st.requestTimer);
    if (st.syncTimer) clearTimeout(st.syncTimer);
    clearTiles();
    for (const side of ["input", "output"]) {
      if (st.previews[side]) st.previews[side].close();
    }
    st.previews = { input: null, output: null };
    if (layer) layer.width = layer.height = 0;
    for (const fn of cleanups.reverse()) fn();
  };
}

export default { render };
