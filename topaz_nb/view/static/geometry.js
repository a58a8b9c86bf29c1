// geometry.js: the view's arithmetic.  Pure functions of plain values: no DOM,
// no model, no state, so a blank page can load this file alone and test it.
//
// A pane is a rectangle of the canvas in device pixels, {x, y, w, h}.  A view
// is {zoom, center: [cx, cy]}: `zoom` device pixels per OUTPUT pixel (0 means
// "fit the pane"), `center` in output pixels.  `out` is the output's size
// [w, h].  A pane's transform {z, ox, oy} maps output pixel p to device pixel
// o + p * z.

function clamp(v, lo, hi) {
  return Math.min(hi, Math.max(lo, v));
}

// Columns and rows for n panes of aspect (w/h) in a width × height area, each
// pane as large as possible.
function gridShape(n, width, height, aspect) {
  let best = -1;
  let shape = [n, 1];
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const size = Math.min(width / cols, (height / rows) * aspect);
    if (size > best + 1e-9) {
      best = size;
      shape = [cols, rows];
    }
  }
  return shape;
}

// One pane; two with a gap between them in side-by-side mode; in grid mode
// `count` panes of the output's `aspect`, tiled to fill the canvas.
function panesFor(mode, width, height, gap, count = 2, aspect = 1) {
  if (mode === "grid" && count > 1) {
    const [cols, rows] = gridShape(count, width, height, aspect);
    const w = Math.floor((width - gap * (cols - 1)) / cols);
    const h = Math.floor((height - gap * (rows - 1)) / rows);
    const panes = [];
    for (let i = 0; i < count; i++) {
      const c = i % cols;
      const r = Math.floor(i / cols);
      panes.push({ x: c * (w + gap), y: r * (h + gap), w, h });
    }
    return panes;
  }
  if (mode === "side-by-side") {
    const w = Math.floor((width - gap) / 2);
    return [
      { x: 0, y: 0, w, h: height },
      { x: width - w, y: 0, w, h: height },
    ];
  }
  return [{ x: 0, y: 0, w: width, h: height }];
}

// The index of the pane under a device point, or -1.
function paneIndexAt(panes, x, y) {
  return panes.findIndex((p) => x >= p.x && x < p.x + p.w && y >= p.y && y < p.y + p.h);
}

// The pane under a device point (the first pane when it is in none).
function paneAt(panes, x, y) {
  for (const p of panes) {
    if (x >= p.x && x < p.x + p.w && y >= p.y && y < p.y + p.h) return p;
  }
  return panes[0];
}

// The zoom that shows the whole output in the pane.
function fitZoom(pane, out, maxZoom) {
  if (!pane.w || !pane.h) return 1;
  return Math.min(pane.w / out[0], pane.h / out[1], maxZoom);
}

function viewTransform(pane, view, out, maxZoom) {
  const fit = view.zoom <= 0;
  const z = fit ? fitZoom(pane, out, maxZoom) : view.zoom;
  const cx = fit ? out[0] / 2 : view.center[0];
  const cy = fit ? out[1] / 2 : view.center[1];
  // Whole device pixels keep 1:1 drawing exact at 100 %.
  return {
    z,
    ox: Math.round(pane.x + pane.w / 2 - cx * z),
    oy: Math.round(pane.y + pane.h / 2 - cy * z),
  };
}

function toImage(tf, x, y) {
  return [(x - tf.ox) / tf.z, (y - tf.oy) / tf.z];
}

function toScreen(tf, px, py) {
  return [tf.ox + px * tf.z, tf.oy + py * tf.z];
}

// The same picture with explicit numbers: a fitted view becomes its zoom and centre.
function pinnedView(view, pane, out, maxZoom) {
  if (view.zoom > 0) return { zoom: view.zoom, center: [view.center[0], view.center[1]] };
  return { zoom: fitZoom(pane, out, maxZoom), center: [out[0] / 2, out[1] / 2] };
}

// Zoom to `newZoom` keeping the output pixel under device point (x, y) there.
// The zoom is kept between an eighth of "fit" and maxZoom.
function zoomAbout(view, pane, out, x, y, newZoom, maxZoom) {
  const v = pinnedView(view, pane, out, maxZoom);
  const [px, py] = toImage(viewTransform(pane, v, out, maxZoom), x, y);
  const z = clamp(newZoom, fitZoom(pane, out, maxZoom) / 8, maxZoom);
  return {
    zoom: z,
    center: [px - (x - pane.x - pane.w / 2) / z, py - (y - pane.y - pane.h / 2) / z],
  };
}

// The view a click on a fidelity region goes to: the region centred, at 100 %
// or, when the picture is already shown larger than that (a small image
// fitted to a large pane), at the zoom it has: a click never zooms out.
// `region` is [x, y, w, h] in output pixels; `current` the zoom shown now.
function regionView(region, current, maxZoom) {
  return {
    zoom: clamp(Math.max(1, current), 0, maxZoom),
    center: [region[0] + region[2] / 2, region[1] + region[3] / 2],
  };
}

// Move the picture by (dx, dy) device pixels.
function panBy(view, pane, out, dx, dy, maxZoom) {
  const v = pinnedView(view, pane, out, maxZoom);
  return { zoom: v.zoom, center: [v.center[0] - dx / v.zoom, v.center[1] - dy / v.zoom] };
}

// The wheel's zoom factor: a 120-px notch zooms by e^0.18 (about 20 %).
function wheelFactor(deltaY, deltaMode) {
  const unit = deltaMode === 1 ? 16 : deltaMode === 2 ? 400 : 1;
  return Math.exp(-deltaY * unit * 0.0015);
}

// The tile level for a zoom: a power of two, at most 1 (native pixels are
// enlarged above 100 %, never cut finer).
function tileLevel(z) {
  return Math.min(1, Math.pow(2, Math.ceil(Math.log2(z) - 1e-9)));
}

// Tiles of `level` that any pane shows, nearest the middle of what is seen
// first.  A tile covers tilePx / level output pixels square; keys are
// "level/ix/iy".
function visibleTiles(panes, view, out, level, tilePx, maxZoom) {
  const span = tilePx / level;
  const found = [];
  const seen = new Set();
  for (const pane of panes) {
    const tf = viewTransform(pane, view, out, maxZoom);
    const [ax, ay] = toImage(tf, pane.x, pane.y);
    const [bx, by] = toImage(tf, pane.x + pane.w, pane.y + pane.h);
    const x0 = clamp(ax, 0, out[0]);
    const y0 = clamp(ay, 0, out[1]);
    const x1 = clamp(bx, 0, out[0]);
    const y1 = clamp(by, 0, out[1]);
    if (x1 <= x0 || y1 <= y0) continue;
    const cx = (x0 + x1) / 2;
    const cy = (y0 + y1) / 2;
    for (let iy = Math.floor(y0 / span); iy * span < y1; iy++) {
      for (let ix = Math.floor(x0 / span); ix * span < x1; ix++) {
        const key = `${level}/${ix}/${iy}`;
        if (seen.has(key)) continue;
        seen.add(key);
        const d = Math.hypot((ix + 0.5) * span - cx, (iy + 0.5) * span - cy);
        found.push({ key, ix, iy, d });
      }
    }
  }
  found.sort((a, b) => a.d - b.d);
  return found;
}

// Where the swipe divider is in a pane, in device pixels along its axis.
function splitAt(pane, orientation, position) {
  return orientation === "horizontal"
    ? pane.y + position * pane.h
    : pane.x + position * pane.w;
}

// The divider position (0..1) for a device point.
function positionAt(pane, orientation, x, y) {
  return orientation === "horizontal"
    ? clamp((y - pane.y) / pane.h, 0, 1)
    : clamp((x - pane.x) / pane.w, 0, 1);
}
