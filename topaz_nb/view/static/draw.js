// draw.js: one frame of the canvas, per mode.
//
// A frame is drawn from a plain description (`scene`):
//   {mode, orientation, position, opacity, solo, gain, panes, transforms,
//    sides: {input: src, output: src}, all: [src, ...], heat, dpr, tiles}
// where a src is one image pane {bitmap, rect, pkey, smooth}: `rect` is where
// it lies on the output grid, `pkey` its tiles' key in `tiles` (a TileCache)
// and `smooth` whether a magnified pane is interpolated.  "input" and
// "output" are the two panes a pair mode compares (left and right), `all`
// every pane (grid mode), `heat` the fidelity overlay {bitmap, rect, regions}
// or null.  `solo` ("input", "output" or null) shows one side alone in every
// pane whatever the mode.

function clipRect(c, x, y, w, h) {
  c.beginPath();
  c.rect(x, y, w, h);
  c.clip();
}

class Painter {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.layer = null; // a scratch canvas for flattening one side
  }

  frame(s) {
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.globalAlpha = 1;
    ctx.globalCompositeOperation = "source-over";
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    s.panes.forEach((pane, i) => {
      const tf = s.transforms[i];
      ctx.save();
      clipRect(ctx, pane.x, pane.y, pane.w, pane.h);
      if (s.solo) this.side(ctx, s, s.sides[s.solo], pane, tf);
      else if (s.mode === "grid") this.side(ctx, s, s.all[i], pane, tf);
      else if (s.mode === "fidelity") this.fidelity(s, pane, tf);
      else if (s.mode === "side-by-side") {
        this.side(ctx, s, s.sides[i === 0 ? "input" : "output"], pane, tf);
      } else if (s.mode === "toggle") this.side(ctx, s, s.sides[s.showing], pane, tf);
      else if (s.mode === "blend") this.blend(s, pane, tf);
      else if (s.mode === "difference") this.difference(s, pane, tf);
      else this.swipe(s, pane, tf);
      ctx.restore();
    });
  }

  // One pane's image (its preview, then any tiles over it) into context c.
  side(c, s, src, pane, tf) {
    if (!src) return;
    const { z, ox, oy } = tf;
    const { bitmap, rect } = src;
    c.imageSmoothingEnabled = z < 0.999 || !!src.smooth;
    c.imageSmoothingQuality = "high";
    if (bitmap) c.drawImage(bitmap, ox + rect[0] * z, oy + rect[1] * z, rect[2] * z, rect[3] * z);
    for (const t of s.tiles.inView(pane, tf, src.pkey)) {
      c.drawImage(t.image, ox + t.x * z, oy + t.y * z, t.w * z, t.h * z);
    }
  }

  // The output of pane `right` under its heat map (opacity from the slider),
  // the worst regions outlined, the worst one brightest.
  fidelity(s, pane, tf) {
    const ctx = this.ctx;
    this.side(ctx, s, s.sides.output, pane, tf);
    const heat = s.heat;
    if (!heat || !heat.bitmap) return;
    const { z, ox, oy } = tf;
    const r = heat.rect;
    ctx.save();
    ctx.globalAlpha = s.opacity;
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(heat.bitmap, ox + r[0] * z, oy + r[1] * z, r[2] * z, r[3] * z);
    ctx.restore();
    ctx.save();
    const line = Math.max(1, Math.round(2 * (s.dpr || 1)));
    heat.regions.forEach((g, k) => {
      ctx.lineWidth = k === 0 ? line * 1.5 : line;
      ctx.strokeStyle = k === 0 ? "#5ef0ff" : "rgba(94, 240, 255, 0.7)";
      ctx.strokeRect(ox + g[0] * z, oy + g[1] * z, g[2] * z, g[3] * z);
    });
    ctx.restore();
  }

  swipe(s, pane, tf) {
    const ctx = this.ctx;
    const split = splitAt(pane, s.orientation, s.position);
    const horizontal = s.orientation === "horizontal";
    ctx.save();
    if (horizontal) clipRect(ctx, pane.x, split, pane.w, pane.y + pane.h - split);
    else clipRect(ctx, split, pane.y, pane.x + pane.w - split, pane.h);
    this.side(ctx, s, s.sides.output, pane, tf);
    ctx.restore();
    ctx.save();
    if (horizontal) clipRect(ctx, pane.x, pane.y, pane.w, split - pane.y);
    else clipRect(ctx, pane.x, pane.y, split - pane.x, pane.h);
    this.side(ctx, s, s.sides.input, pane, tf);
    ctx.restore();
  }

  blend(s, pane, tf) {
    this.side(this.ctx, s, s.sides.input, pane, tf);
    this.flatten(s, "output", pane, tf);
    this.composite(pane, s.opacity, "source-over");
  }

  // |output − input| by the canvas's own "difference" compositing, then
  // multiplied by the gain with additive ("lighter") draws of that result:
  // the GPU does the arithmetic, no pixel loop in JavaScript.
  difference(s, pane, tf) {
    const ctx = this.ctx;
    ctx.fillStyle = "#000";
    ctx.fillRect(pane.x, pane.y, pane.w, pane.h);
    this.side(ctx, s, s.sides.input, pane, tf);
    this.flatten(s, "output", pane, tf);
    this.composite(pane, 1, "difference");
    if (s.gain <= 1) return;
    // The scratch canvas takes the difference; each "lighter" draw adds it once
    // more (clamped at 255), the last one with the gain's fraction as alpha.
    const lc = this.scratch();
    lc.save();
    lc.globalCompositeOperation = "copy";
    lc.drawImage(this.canvas, pane.x, pane.y, pane.w, pane.h, pane.x, pane.y, pane.w, pane.h);
    lc.restore();
    for (let more = s.gain - 1; more > 1e-6; more -= 1) {
      this.composite(pane, Math.min(1, more), "lighter");
    }
  }

  scratch() {
    if (!this.layer) this.layer = document.createElement("canvas");
    if (this.layer.width !== this.canvas.width || this.layer.height !== this.canvas.height) {
      this.layer.width = this.canvas.width;
      this.layer.height = this.canvas.height;
    }
    const lc = this.layer.getContext("2d");
    lc.setTransform(1, 0, 0, 1, 0, 0);
    lc.globalAlpha = 1;
    lc.globalCompositeOperation = "source-over";
    lc.imageSmoothingEnabled = false;
    return lc;
  }

  // A side is a preview with tiles over it; compositing those one by one
  // would count their overlap twice, so it is flattened on the scratch canvas.
  flatten(s, side, pane, tf) {
    const lc = this.scratch();
    lc.clearRect(pane.x, pane.y, pane.w, pane.h);
    lc.save();
    clipRect(lc, pane.x, pane.y, pane.w, pane.h);
    this.side(lc, s, s.sides[side], pane, tf);
    lc.restore();
  }

  // Draw the scratch canvas's pane onto the view with `operation`.
  composite(pane, alpha, operation) {
    const ctx = this.ctx;
    ctx.save();
    ctx.globalAlpha = alpha;
    ctx.globalCompositeOperation = operation;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.layer, pane.x, pane.y, pane.w, pane.h, pane.x, pane.y, pane.w, pane.h);
    ctx.restore();
  }

  dispose() {
    if (this.layer) this.layer.width = this.layer.height = 0;
    this.layer = null;
  }
}
