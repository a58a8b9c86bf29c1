// input.js: pointer, wheel and keyboard.  Handlers only translate events into
// calls on the view's controller `c` (see compare.js); they hold no view state
// beyond the gesture in progress.

const HANDLE_CSS = 12; // grab distance around the swipe divider

function attachInput(c, listen) {
  const { root, stage } = c.dom;
  const pointers = new Map();
  let gesture = null;

  const nearDivider = (x, y) => {
    if (c.st.mode !== "swipe" || c.st.solo) return false;
    const split = splitAt(c.panes()[0], c.st.orientation, c.st.position);
    const grab = HANDLE_CSS * c.st.dpr;
    return Math.abs((c.st.orientation === "horizontal" ? y : x) - split) <= grab;
  };

  function onPointerDown(ev) {
    if (ev.button !== undefined && ev.button > 0) return;
    root.focus({ preventScroll: true });
    const [x, y] = c.devPoint(ev);
    pointers.set(ev.pointerId, [x, y]);
    try {
      stage.setPointerCapture(ev.pointerId);
    } catch (_) { /* synthetic events have no capture */ }
    if (pointers.size === 2) {
      const [p, q] = [...pointers.values()];
      gesture = {
        kind: "pinch",
        dist: Math.hypot(p[0] - q[0], p[1] - q[1]) || 1,
        zoom: c.currentZoom(),
      };
    } else if (nearDivider(x, y)) {
      gesture = { kind: "divider" };
      c.setPositionAt(x, y);
    } else {
      gesture = { kind: "pan", start: [x, y], last: [x, y], moved: false };
    }
    c.st.gesture = gesture;
    ev.preventDefault();
  }

  function onPointerMove(ev) {
    const [x, y] = c.devPoint(ev);
    if (!pointers.has(ev.pointerId)) {
      const cursor = nearDivider(x, y)
        ? (c.st.orientation === "horizontal" ? "row-resize" : "col-resize") : "";
      if (stage.style.cursor !== cursor) stage.style.cursor = cursor;
      return;
    }
    pointers.set(ev.pointerId, [x, y]);
    const g = gesture;
    if (!g) return;
    if (g.kind === "divider") {
      c.setPositionAt(x, y);
    } else if (g.kind === "pinch" && pointers.size >= 2) {
      const [p, q] = [...pointers.values()];
      const dist = Math.hypot(p[0] - q[0], p[1] - q[1]) || 1;
      c.zoomTo((p[0] + q[0]) / 2, (p[1] + q[1]) / 2, g.zoom * (dist / g.dist));
    } else if (g.kind === "pan") {
      if (Math.hypot(x - g.start[0], y - g.start[1]) > 3 * c.st.dpr) g.moved = true;
      if (!g.moved) return;
      c.pan(x - g.last[0], y - g.last[1]);
      g.last = [x, y];
    }
  }

  function onPointerUp(ev) {
    if (!pointers.has(ev.pointerId)) return;
    pointers.delete(ev.pointerId);
    const g = gesture;
    if (pointers.size === 0) {
      gesture = null;
      c.st.gesture = null;
      // A click (no drag): toggle mode switches images, grid mode picks the
      // pane as B, fidelity mode zooms to the marked region under it.
      if (g && g.kind === "pan" && !g.moved && ev.type === "pointerup") {
        const [x, y] = c.devPoint(ev);
        if (c.st.mode === "toggle") c.flipAB();
        else if (c.st.mode === "grid") c.pickPaneAt(x, y);
        else if (c.st.mode === "fidelity") c.zoomToRegionAt(x, y);
      }
    } else if (g && g.kind === "pinch") {
      const [p] = [...pointers.values()];
      gesture = { kind: "pan", start: p, last: p, moved: true };
      c.st.gesture = gesture;
    }
  }

  // The page keeps its scroll: the wheel zooms only when the view has focus
  // (a click into it, or Tab) or with Ctrl/⌘ held, which is also what a
  // trackpad pinch sends.  Otherwise the event goes on to scroll the page,
  // and a hint says how to zoom.
  function onWheel(ev) {
    if (!(ev.ctrlKey || ev.metaKey || c.focused())) {
      c.showHint();
      return;
    }
    ev.preventDefault();
    const [x, y] = c.devPoint(ev);
    c.zoomBy(x, y, wheelFactor(ev.deltaY, ev.deltaMode));
  }

  function onDoubleClick(ev) {
    const [x, y] = c.devPoint(ev);
    if (nearDivider(x, y)) return;
    ev.preventDefault();
    c.oneToOneOrFit(x, y);
  }

  const ON_CONTROLS = new Set([" ", "Spacebar", "Enter", "ArrowLeft", "ArrowRight",
    "ArrowUp", "ArrowDown", "Home", "End", "PageUp", "PageDown"]);

  // Keys reach this before the notebook's shortcuts (keys.js).  The view keeps
  // the keys it uses and every other plain character; the rest (Escape when
  // there is nothing to close, Enter, Tab, arrows it does not use, Ctrl/Cmd/Alt
  // combinations) go on to the notebook.
  function onKey(ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    // A focused button, slider or mode drop-down keeps its own keys (space presses
    // a button, arrows move the slider or pick a mode); every other shortcut works
    // from anywhere inside.
    const control = ev.target !== root && ev.target.closest
      && ev.target.closest("button, input, select");
    if (control && ON_CONTROLS.has(ev.key)) {
      ev.stopPropagation(); // its default action stays; the notebook's Enter does not run
      return;
    }
    const step = ev.shiftKey ? 0.1 : 0.02;
    const horizontal = c.st.orientation === "horizontal" && c.st.mode === "swipe";
    let handled = true;
    switch (ev.key) {
      case "ArrowLeft":
      case "ArrowRight":
        if (horizontal) handled = false;
        else c.nudge(ev.key === "ArrowLeft" ? -step : step);
        break;
      case "ArrowUp":
      case "ArrowDown":
        if (horizontal) c.nudge(ev.key === "ArrowUp" ? -step : step);
        else handled = false;
        break;
      case " ":
      case "Spacebar":
        c.flipAB();
        break;
      case "Escape":
        handled = c.endSolo() || c.hideHelp();
        break;
      case "m":
      case "M":
        c.cycleMode(ev.key === "M" ? -1 : 1);
        break;
      case "o":
        c.flipOrientation();
        break;
      case "[":
      case "]":
        c.stepPane(ev.shiftKey ? "left" : "right", ev.key === "[" ? -1 : 1);
        break;
      case "{":
      case "}":
        c.stepPane("left", ev.key === "{" ? -1 : 1);
        break;
      case "0":
        c.fit();
        break;
      case "1":
        c.oneToOne();
        break;
      case "+":
      case "=":
        c.zoomStep(1.5);
        break;
      case "-":
        c.zoomStep(1 / 1.5);
        break;
      case "?":
        c.toggleHelp();
        break;
      default:
        handled = false;
    }
    // The notebook's own shortcuts (m = Markdown, a = insert a cell, ...) never see these.
    if (handled || plainCharacter(ev)) keepKey(ev);
  }

  listen(stage, "pointerdown", onPointerDown);
  listen(stage, "pointermove", onPointerMove);
  listen(stage, "pointerup", onPointerUp);
  listen(stage, "pointercancel", onPointerUp);
  listen(stage, "wheel", onWheel, { passive: false });
  listen(stage, "dblclick", onDoubleClick);
  listen(window, "keydown", keysInside(() => root, onKey), true);
}
