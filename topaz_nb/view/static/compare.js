// compare.js: `render` wires the parts together for one view.
//
// The parts (geometry.js, tiles.js, draw.js, dom.js, input.js) come before
// this file in the one module widget.py assembles; see its docstring.  The
// view maps the OUTPUT image's pixel grid onto the screen; the input is drawn
// at its placement on that grid.  Modes and limits come from the model's
// read-only `limits` trait (topaz_nb/_modes.py), never from constants here.

const SYNC_MS = 150; // kernel sync throttle during gestures
const GAP_CSS = 4;   // gap between side-by-side panes
const HINT_MS = 1500;
const SYNCED = ["mode", "orientation", "position", "opacity", "zoom", "center", "showing",
  "left", "right", "input_filter"];

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
  const limits = () => {
    const l = model.get("limits") || {};
    return {
      modes: l.modes || ["swipe"],
      tilePx: l.tile_px || 512,
      maxZoom: l.max_zoom || 64,
      gain: l.diff_gain || 1,
    };
  };

  const dom = buildDom(host, limits().modes);
  cleanups.push(() => dom.root.remove());
  const painter = new Painter(dom.canvas);

  // ---- state (per view; nothing global) -----------------------------------
  const st = {
    dpr: window.devicePixelRatio || 1,
    previews: [],      // one bitmap per pane, input first
    heat: null,        // the fidelity overlay: {pane, bitmap, rect, regions}
    previewToken: 0,
    heatToken: 0,
    solo: null,        // "input" / "output": one side alone, whatever the mode
    raf: 0,
    disposed: false,
    gesture: null,
    dirty: new Set(),  // traits changed here and not yet sent to the kernel
    syncTimer: 0,
    lastSync: 0,
    committing: false,
    hinted: false,
  };
  for (const name of SYNCED) st[name] = model.get(name);
  st.center = st.center || [0, 0];

  const sizes = () => model.get("sizes") || { input: [1, 1], output: [1, 1] };
  const outSize = () => sizes().output || [1, 1];
  const placement = () => {
    const p = model.get("placement");
    const [w, h] = outSize();
    return p && p.length === 4 ? p : [0, 0, w, h];
  };
  const view = () => ({ zoom: st.zoom, center: st.center });
  const names = () => model.get("panes") || model.get("labels") || ["Input", "Output"];
  const paneCount = () => Math.max(2, names().length);
  const panes = () => panesFor(st.mode, dom.canvas.width, dom.canvas.height,
    Math.round(GAP_CSS * st.dpr), paneCount(), outSize()[0] / outSize()[1]);
  // Where pane i lies on the grid, its native size and its preview's format.
  function paneInfo(i) {
    const info = (model.get("pane_info") || [])[i];
    if (info) return info;
    const formats = model.get("preview_formats") || {};
    return i === 0
      ? { rect: placement(), size: sizes().input, format: formats.input }
      : { rect: [0, 0, ...outSize()], size: outSize(), format: formats.output };
  }
  const magnified = (i) => {
    const info = paneInfo(i);
    return info.rect[2] > (info.size || [info.rect[2]])[0] + 1e-6;
  };
  const keyOf = (i, filter) => `${i}${filter === "smooth" && magnified(i) ? "s" : "n"}`;
  function source(i) {
    const info = paneInfo(i);
    return {
      bitmap: st.previews[i] || null,
      rect: info.rect,
      pkey: keyOf(i, st.input_filter),
      smooth: st.input_filter === "smooth" && magnified(i),
    };
  }
  // The panes the current mode draws: all in grid mode, B in fidelity mode, else A and B.
  function shownPanes() {
    if (st.mode === "grid") return names().map((_, i) => i);
    if (st.mode === "fidelity") return [st.right];
    return st.left === st.right ? [st.left] : [st.left, st.right];
  }
  const tfOf = (pane) => viewTransform(pane, view(), outSize(), limits().maxZoom);

  // ---- tiles ----------------------------------------------------------------
  const cache = new TileCache();
  function previewInfo(i) {
    const bitmap = st.previews[i];
    if (!bitmap) return null;
    const info = paneInfo(i);
    return {
      width: bitmap.width,
      rectWidth: info.rect[2],
      nativeWidth: (info.size || [bitmap.width])[0],
      lossy: !!info.format && info.format !== "png",
    };
  }
  function wantedLevel() {
    if (!dom.canvas.width) return null;
    const z = tfOf(panes()[0]).z;
    const short = shownPanes().some((i) => previewFallsShort(previewInfo(i), z));
    return short ? tileLevel(z) : 0;
  }
  const loader = new TileLoader({
    model,
    viewId,
    cache,
    want: () => {
      const level = wantedLevel();
      const l = limits();
      const tiles = level ? visibleTiles(panes(), view(), outSize(), level, l.tilePx, l.maxZoom) : [];
      return { level, tiles, panes: shownPanes(), filter: st.input_filter };
    },
    keyOf,
    onTile: () => {
      dom.status.hidden = true;
      scheduleDraw();
    },
    onError: (message) => {
      dom.status.textContent = message;
      dom.status.hidden = false;
      setText(dom.statusText, message);
    },
  });

  // ---- kernel sync ------------------------------------------------------------
  // Only what changed here goes back: a change that came from the kernel is
  // never echoed, and a zoom does not resend the mode.
  function commit() {
    st.syncTimer = 0;
    st.lastSync = performance.now();
    if (!st.dirty.size) return;
    // Setting one trait fires its change event at once; the others must not
    // be read back from the model half-way through.
    st.committing = true;
    try {
      for (const name of st.dirty) {
        model.set(name, name === "center" ? [st.center[0], st.center[1]] : st[name]);
      }
    } finally {
      st.committing = false;
    }
    st.dirty.clear();
    model.save_changes();
  }

  // Updates leave at most every SYNC_MS: the kernel may handle comm messages
  // on more than one thread (kernel subshells), and spacing them keeps it from
  // applying two of them out of order.  Whatever the state is when the timer
  // fires is what is sent, so the last one wins.
  function changed(...names) {
    for (const name of names) st.dirty.add(name);
    if (!st.syncTimer) {
      const wait = Math.max(0, SYNC_MS - (performance.now() - st.lastSync));
      st.syncTimer = setTimeout(commit, wait);
    }
  }

  function viewChanged() {
    scheduleDraw();
    loader.soon();
  }

  function setView(v) {
    st.zoom = v.zoom;
    st.center = v.center;
    changed("zoom", "center");
    viewChanged();
  }

  // ---- drawing ------------------------------------------------------------------
  function scheduleDraw() {
    if (!st.raf && !st.disposed) st.raf = requestAnimationFrame(draw);
  }

  function draw() {
    st.raf = 0;
    if (st.disposed) return;
    const ps = panes();
    const transforms = ps.map(tfOf);
    const l = limits();
    const all = names().map((_, i) => source(i));
    const heat = st.heat && st.heat.pane === st.right ? st.heat : null;
    painter.frame({
      all,
      heat,
      dpr: st.dpr,
      mode: st.mode,
      orientation: st.orientation,
      position: st.position,
      opacity: st.opacity,
      showing: st.showing,
      solo: st.mode === "toggle" ? null : st.solo,
      gain: l.gain,
      panes: ps,
      transforms,
      tiles: cache,
      sides: { input: all[st.left], output: all[st.right] },
    });
    const names_ = names();
    updateOverlay(dom, {
      mode: st.mode,
      orientation: st.orientation,
      position: st.position,
      opacity: st.opacity,
      showing: st.showing,
      solo: st.mode === "toggle" ? null : st.solo,
      labels: [names_[st.left] || "", names_[st.right] || ""],
      names: names_,
      left: st.left,
      right: st.right,
      filter: st.input_filter,
      fidelity: model.get("fidelity_map") || {},
      gain: l.gain,
      zoomPercent: Math.round(transforms[0].z * 100),
      fitted: st.zoom <= 0,
      dpr: st.dpr,
      panes: ps,
    });
  }

  // ---- the controller: what input handlers (and buttons) can do -----------------
  const c = {
    dom,
    st,
    panes,
    focused: () => dom.root.contains(document.activeElement),
    devPoint(ev) {
      const r = dom.canvas.getBoundingClientRect();
      const sx = r.width ? dom.canvas.width / r.width : st.dpr;
      const sy = r.height ? dom.canvas.height / r.height : st.dpr;
      return [(ev.clientX - r.left) * sx, (ev.clientY - r.top) * sy];
    },
    currentZoom: () => tfOf(panes()[0]).z,
    zoomTo(x, y, zoom) {
      const pane = paneAt(panes(), x, y);
      setView(zoomAbout(view(), pane, outSize(), x, y, zoom, limits().maxZoom));
    },
    zoomBy(x, y, factor) {
      c.zoomTo(x, y, tfOf(paneAt(panes(), x, y)).z * factor);
    },
    zoomStep(factor) {
      const p = panes()[0];
      c.zoomBy(p.x + p.w / 2, p.y + p.h / 2, factor);
    },
    pan(dx, dy) {
      setView(panBy(view(), panes()[0], outSize(), dx, dy, limits().maxZoom));
    },
    fit() {
      const [ow, oh] = outSize();
      setView({ zoom: 0, center: [ow / 2, oh / 2] });
    },
    oneToOne(x, y) {
      const p = panes()[0];
      c.zoomTo(x === undefined ? p.x + p.w / 2 : x, y === undefined ? p.y + p.h / 2 : y, 1);
    },
    oneToOneOrFit(x, y) {
      if (st.zoom > 0 && Math.abs(st.zoom - 1) < 1e-6) c.fit();
      else c.oneToOne(x, y);
    },
    setPositionAt(x, y) {
      st.position = positionAt(panes()[0], st.orientation, x, y);
      changed("position");
      scheduleDraw();
    },
    // Arrow keys: the divider in swipe mode, the opacity in blend and fidelity modes.
    nudge(delta) {
      const name = st.mode === "blend" || st.mode === "fidelity" ? "opacity" : "position";
      st[name] = clamp(Math.round((st[name] + delta) * 1000) / 1000, 0, 1);
      changed(name);
      scheduleDraw();
    },
    // Toggle mode switches `showing`; every other mode keeps its mode and shows
    // the output alone, then the input alone, in place, until Esc or a mode change.
    flipAB() {
      if (st.mode === "toggle") {
        st.showing = st.showing === "input" ? "output" : "input";
        changed("showing");
      } else {
        st.solo = st.solo === "output" ? "input" : "output";
      }
      scheduleDraw();
    },
    endSolo() {
      if (!st.solo) return false;
      st.solo = null;
      scheduleDraw();
      return true;
    },
    setMode(mode) {
      st.mode = mode;
      st.solo = null;
      changed("mode");
      loader.forget();
      viewChanged();
    },
    cycleMode(step) {
      const modes = limits().modes;
      const i = Math.max(0, modes.indexOf(st.mode));
      c.setMode(modes[(i + step + modes.length) % modes.length]);
    },
    // `[` / `]`: the next pane as B (or with Shift as A), skipping the other one.
    stepPane(which, step) {
      const n = paneCount();
      if (n < 3 && which === "right" && st.mode !== "grid") return;
      const other = which === "right" ? st.left : st.right;
      let i = st[which];
      for (let k = 0; k < n; k++) {
        i = (i + step + n) % n;
        if (i !== other) break;
      }
      c.setPane(which, i);
    },
    setPane(which, i) {
      if (st[which] === i) return;
      st[which] = i;
      changed(which);
      loader.forget();
      viewChanged();
    },
    pickPaneAt(x, y) {
      const i = paneIndexAt(panes(), x, y);
      if (i >= 0 && i < paneCount()) c.setPane("right", i);
    },
    // Fidelity mode: a click inside a marked region shows it centred, at 100 %
    // or larger (never smaller than it is shown now).
    zoomToRegionAt(x, y) {
      const heat = st.heat && st.heat.pane === st.right ? st.heat : null;
      if (!heat) return;
      const tf = tfOf(panes()[0]);
      const [px, py] = toImage(tf, x, y);
      const hit = heat.regions.find((g) => px >= g[0] && px <= g[0] + g[2]
        && py >= g[1] && py <= g[1] + g[3]);
      if (!hit) return;
      setView(regionView(hit, tf.z, limits().maxZoom));
    },
    toggleFilter() {
      st.input_filter = st.input_filter === "nearest" ? "smooth" : "nearest";
      changed("input_filter");
      loader.forget();
      viewChanged();
    },
    flipOrientation() {
      st.orientation = st.orientation === "horizontal" ? "vertical" : "horizontal";
      changed("orientation");
      scheduleDraw();
    },
    toggleHelp(show = dom.help.hidden) {
      dom.help.hidden = !show;
      dom.helpBtn.setAttribute("aria-expanded", String(show));
      return true;
    },
    hideHelp() {
      if (dom.help.hidden) return false;
      return c.toggleHelp(false);
    },
    // Once per view: the first wheel that scrolls the page past the view says
    // how to zoom instead.
    showHint() {
      if (st.hinted) return;
      st.hinted = true;
      dom.hint.classList.add("tnb-shown");
      const timer = setTimeout(() => dom.hint.classList.remove("tnb-shown"), HINT_MS);
      cleanups.push(() => clearTimeout(timer));
    },
  };

  attachInput(c, listen);
  const refocus = () => dom.root.focus({ preventScroll: true });
  listen(dom.modeGroup, "click", (ev) => {
    const btn = ev.target && ev.target.closest && ev.target.closest("button[data-mode]");
    if (btn) c.setMode(btn.dataset.mode);
  });
  listen(dom.modeSelect, "change", () => { c.setMode(dom.modeSelect.value); refocus(); });
  listen(dom.filterBtn, "click", () => { c.toggleFilter(); refocus(); });
  listen(dom.slider, "input", () => {
    const name = st.mode === "blend" || st.mode === "fidelity" ? "opacity" : "position";
    st[name] = clamp(Number(dom.slider.value), 0, 1);
    changed(name);
    scheduleDraw();
  });
  listen(dom.fitBtn, "click", () => { c.fit(); refocus(); });
  listen(dom.oneBtn, "click", () => { c.oneToOne(); refocus(); });
  listen(dom.helpBtn, "click", () => c.toggleHelp());

  // ---- model → view -------------------------------------------------------------
  function pull(name) {
    if (st.committing) return;
    const viewTrait = name === "zoom" || name === "center" || name === "position"
      || name === "opacity";
    if (viewTrait && st.gesture) return; // the user's drag wins
    st[name] = model.get(name);
    if (name === "center") st.center = st.center || [0, 0];
    st.dirty.delete(name); // the kernel's value stands; nothing to send back
    if (name === "mode") {
      st.solo = null;
      loader.forget();
    }
    if (name === "left" || name === "right" || name === "input_filter") loader.forget();
    viewChanged();
  }

  async function loadPreviews() {
    const token = ++st.previewToken;
    const encoded = [model.get("input_preview"), model.get("output_preview"),
      ...(model.get("more_previews") || [])];
    const bitmaps = await Promise.all(encoded.map(decodeImage));
    if (st.disposed || token !== st.previewToken) {
      for (const b of bitmaps) if (b) b.close();
      return;
    }
    for (const b of st.previews) if (b) b.close();
    st.previews = bitmaps;
    cache.clear();
    loader.forget();
    viewChanged();
  }

  // The fidelity overlay of pane `right`, decoded when the kernel sends it.
  async function loadHeat() {
    const fmap = model.get("fidelity_map") || {};
    const token = ++st.heatToken;
    const bitmap = fmap.overlay ? await decodeImage(fmap.overlay) : null;
    if (st.disposed || token !== st.heatToken) {
      if (bitmap) bitmap.close();
      return;
    }
    if (st.heat && st.heat.bitmap) st.heat.bitmap.close();
    st.heat = fmap.pane === undefined ? null : {
      pane: fmap.pane, bitmap, rect: fmap.rect || [0, 0, ...outSize()], regions: fmap.regions || [],
    };
    scheduleDraw();
  }

  for (const name of SYNCED) onModel(`change:${name}`, () => pull(name));
  onModel("change:labels", scheduleDraw);
  onModel("change:placement", () => { cache.clear(); loader.forget(); viewChanged(); });
  onModel("change:input_preview", loadPreviews);
  onModel("change:output_preview", loadPreviews);
  onModel("change:more_previews", loadPreviews);
  onModel("change:fidelity_map", loadHeat);
  onModel("change:panes", scheduleDraw);
  onModel("change:height", () => { dom.stage.style.height = `${model.get("height")}px`; });
  onModel("msg:custom", (msg, buffers) => loader.receive(msg, buffers));

  function resize() {
    const r = dom.stage.getBoundingClientRect();
    // Hidden (collapsed output, inactive tab): keep the last drawing.
    if (r.width < 1 || r.height < 1) return;
    st.dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(r.width * st.dpr));
    const h = Math.max(1, Math.round(r.height * st.dpr));
    if (dom.canvas.width !== w || dom.canvas.height !== h) {
      dom.canvas.width = w;
      dom.canvas.height = h;
      dom.canvas.style.width = `${r.width}px`;
      dom.canvas.style.height = `${r.height}px`;
      loader.forget();
      viewChanged();
    }
  }
  dom.stage.style.height = `${model.get("height")}px`;
  const observer = new ResizeObserver(resize);
  observer.observe(dom.stage);
  cleanups.push(() => observer.disconnect());
  // The toolbar folds to its width (folding never changes its width; a change of
  // its height alone is no reason to fold again).
  let barWidth = -1;
  const barObserver = new ResizeObserver(() => {
    if (dom.bar.clientWidth === barWidth) return;
    barWidth = dom.bar.clientWidth;
    fitToolbar(dom);
  });
  barObserver.observe(dom.bar);
  cleanups.push(() => barObserver.disconnect());

  resize();
  fitToolbar(dom);
  loadPreviews();
  loadHeat();

  return () => {
    st.disposed = true;
    if (st.raf) cancelAnimationFrame(st.raf);
    if (st.syncTimer) clearTimeout(st.syncTimer);
    loader.dispose();
    for (const b of st.previews) if (b) b.close();
    st.previews = [];
    if (st.heat && st.heat.bitmap) st.heat.bitmap.close();
    st.heat = null;
    painter.dispose();
    for (const fn of cleanups.reverse()) fn();
  };
}

export default { render };
