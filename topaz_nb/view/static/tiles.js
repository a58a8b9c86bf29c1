// tiles.js: decoding, the bounded tile cache, and asking the kernel for tiles.
//
// A tile is a lossless image of one pane (the input or an output) for one
// rectangle of the output grid at one level; the protocol is in widget.py.
// Each cached image is keyed "level/ix/iy/<pane key>", where the pane key is
// the pane's index and "s" or "n": whether a magnified pane was interpolated
// (the smooth input filter) or cut as blocks.

const MAX_TILES = 96;        // tile images kept per view (bounded memory)
const REQUEST_DELAY_MS = 60; // settle time before asking for tiles

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

// Least recently drawn tiles go first; every evicted bitmap is closed.
class TileCache {
  constructor(limit = MAX_TILES) {
    this.limit = limit;
    this.tiles = new Map(); // key -> {level, x, y, w, h, pkey, image}
  }

  has(key) {
    return this.tiles.has(key);
  }

  add(key, tile) {
    this.drop(key);
    this.tiles.set(key, tile);
    while (this.tiles.size > this.limit) this.drop(this.tiles.keys().next().value);
  }

  drop(key) {
    const t = this.tiles.get(key);
    if (!t) return;
    this.tiles.delete(key);
    t.image.close();
  }

  clear() {
    for (const key of [...this.tiles.keys()]) this.drop(key);
  }

  // Tiles of pane key `pkey` meeting the pane under transform tf, coarsest
  // first (so the sharpest ends on top); each is marked as recently used.
  inView(pane, tf, pkey) {
    const { z, ox, oy } = tf;
    const hits = [];
    for (const [key, t] of this.tiles) {
      if (t.pkey !== pkey) continue;
      const sx = ox + t.x * z;
      const sy = oy + t.y * z;
      if (sx > pane.x + pane.w || sy > pane.y + pane.h) continue;
      if (sx + t.w * z < pane.x || sy + t.h * z < pane.y) continue;
      hits.push([key, t]);
    }
    hits.sort((a, b) => a[1].level - b[1].level);
    for (const [key, t] of hits) {
      this.tiles.delete(key);
      this.tiles.set(key, t);
    }
    return hits.map((h) => h[1]);
  }
}

// Sends "tiles" requests (debounced, and only when the missing list changed)
// and turns "tile" answers into cache entries.  `want()` returns the level,
// the visible tiles (or level 0 when the previews are enough), the panes shown
// and the input filter; `keyOf(pane, filter)` is a pane's cache key.
class TileLoader {
  constructor({ model, viewId, cache, want, keyOf, onTile, onError }) {
    Object.assign(this, { model, viewId, cache, want, keyOf, onTile, onError });
    this.gen = 0;
    this.last = "";
    this.timer = 0;
    this.disposed = false;
  }

  soon() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.request(), REQUEST_DELAY_MS);
  }

  forget() {
    this.last = "";
  }

  request() {
    this.timer = 0;
    if (this.disposed) return;
    const { level, tiles, panes, filter } = this.want();
    if (level === null) return; // nothing measurable yet
    const keys = panes.map((p) => this.keyOf(p, filter));
    const missing = level
      ? tiles.filter((t) => keys.some((k) => !this.cache.has(`${t.key}/${k}`))) : [];
    const signature = `${keys.join("+")}:` + missing.map((t) => t.key).join(",");
    if (signature === this.last) return;
    this.last = signature;
    this.gen += 1;
    // An empty list tells the kernel to drop whatever it still had queued.
    this.model.send({
      type: "tiles",
      view: this.viewId,
      gen: this.gen,
      level: level || 1,
      tiles: missing.map((t) => [t.ix, t.iy]),
      panes,
      input_filter: filter,
    });
  }

  async receive(msg, buffers) {
    if (!msg || msg.view !== this.viewId) return;
    if (msg.type === "tile-error") {
      this.onError(msg.message || "Tiles unavailable");
      return;
    }
    if (msg.type !== "tile") return;
    // A stale answer for a level the view has left is not worth decoding.
    if (msg.gen < this.gen && msg.level !== this.want().level) return;
    const panes = msg.panes || [0, 1];
    if (!buffers || buffers.length < panes.length) return;
    const base = `${msg.level}/${msg.ix}/${msg.iy}`;
    const pkeys = panes.map((p) => this.keyOf(p, msg.input_filter || "nearest"));
    const images = await Promise.all(pkeys.map((k, i) => (
      this.cache.has(`${base}/${k}`) ? null : decodeImage(buffers[i]))));
    let added = false;
    images.forEach((image, i) => {
      if (!image) return;
      const key = `${base}/${pkeys[i]}`;
      if (this.disposed || this.cache.has(key)) {
        image.close();
        return;
      }
      this.cache.add(key, {
        level: msg.level, x: msg.x, y: msg.y, w: msg.w, h: msg.h, pkey: pkeys[i], image,
      });
      added = true;
    });
    if (added) this.onTile();
  }

  dispose() {
    this.disposed = true;
    if (this.timer) clearTimeout(this.timer);
    this.cache.clear();
  }
}

// Whether a side's preview falls short at zoom z: it is downscaled and the
// view enlarges it, or it is lossy and the view promises exact pixels (100 %+).
function previewFallsShort(preview, z) {
  if (!preview) return false;
  const scale = preview.width / preview.rectWidth;
  return (preview.width < preview.nativeWidth && z > scale * 1.01)
    || (preview.lossy && z >= 0.999 * scale);
}
