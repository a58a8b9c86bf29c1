// dom.js: the widget's elements (toolbar, stage, labels, help) and keeping
// their text and placement in step with the view.  Text and styles are only
// written when they change, so a frame that only moves pixels touches no DOM.

const MODE_TITLES = {
  "swipe": "Swipe",
  "side-by-side": "Side by side",
  "blend": "Blend",
  "difference": "Difference",
  "toggle": "Toggle",
  "grid": "Grid",
  "fidelity": "Fidelity",
};

const HELP = [
  ["Drag", "move the divider (near it) or pan"],
  ["Wheel", "zoom about the pointer once the view has focus (click it); Ctrl + wheel or pinch zooms anyway"],
  ["Double-click, 1", "100 % (one image pixel per screen pixel)"],
  ["0", "fit the image to the view"],
  ["+ / −", "zoom in / out"],
  ["← → (↑ ↓)", "move the divider; Shift for bigger steps"],
  ["Space", "A/B: in toggle mode switch images; in the other modes show B alone, then A, in place"],
  ["Esc", "back from A or B alone to the mode's own view"],
  ["Click", "in toggle mode, switch images"],
  ["m / M", "next / previous mode"],
  ["[ / ]", "with several outputs: compare the previous / next one (B); Shift: change A"],
  ["Click", "in grid mode, compare that pane (B); in fidelity mode, show a marked region at 100 % (or larger: a click never zooms out)"],
  ["o", "flip the swipe divider between vertical and horizontal"],
  ["?", "show or hide these keys"],
];

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(text, title) {
  const b = el("button", "tnb-btn", text);
  b.type = "button";
  if (title) b.title = title;
  return b;
}

// Build the elements for the given modes; returns them by name.
function buildDom(host, modes) {
  const root = el("div", "tnb-compare");
  root.tabIndex = 0;
  root.setAttribute("role", "application");
  root.setAttribute("aria-roledescription", "image comparison");
  root.setAttribute("aria-label",
    "Image comparison. Arrow keys move the divider, space switches images, " +
    "m changes mode, 0 fits, 1 shows 100 percent, question mark lists the keys.");

  const bar = el("div", "tnb-bar");
  const modeGroup = el("div", "tnb-modes");
  modeGroup.setAttribute("role", "group");
  modeGroup.setAttribute("aria-label", "Comparison mode");
  const modeButtons = {};
  // The same modes as one drop-down, shown instead of the buttons when the
  // toolbar is too narrow for them (see fitToolbar).
  const modeSelect = el("select", "tnb-mode-select");
  modeSelect.setAttribute("aria-label", "Comparison mode");
  modeSelect.title = "Comparison mode (m)";
  for (const mode of modes) {
    const b = button(MODE_TITLES[mode] || mode);
    b.dataset.mode = mode;
    modeButtons[mode] = b;
    modeGroup.append(b);
    const option = el("option", "", MODE_TITLES[mode] || mode);
    option.value = mode;
    modeSelect.append(option);
  }
  const sliderWrap = el("label", "tnb-slider");
  const sliderName = el("span", "tnb-slider-name", "Split");
  const slider = el("input");
  slider.type = "range";
  slider.min = "0";
  slider.max = "1";
  slider.step = "0.001";
  sliderWrap.append(sliderName, slider);
  const spacer = el("div", "tnb-spacer");
  // Zoom and status are announced politely by screen readers.
  const live = el("div", "tnb-live");
  live.setAttribute("aria-live", "polite");
  live.setAttribute("role", "status");
  const zoomText = el("span", "tnb-zoom", "fit");
  const statusText = el("span", "tnb-status-text");
  live.append(zoomText, statusText);
  const filterBtn = button("", "How a magnified input is drawn: interpolated or its real pixels");
  filterBtn.classList.add("tnb-filter");
  // "Input: " goes when the toolbar is narrow; the button keeps its title.
  const filterWord = el("span", "tnb-filter-word");
  filterBtn.append(el("span", "tnb-filter-name", "Input: "), filterWord);
  const fitBtn = button("Fit", "Fit to view (0)");
  const oneBtn = button("100%", "One image pixel per screen pixel (1, double-click)");
  const helpBtn = button("?", "Keys and gestures (?)");
  helpBtn.setAttribute("aria-expanded", "false");
  bar.append(modeGroup, modeSelect, sliderWrap, spacer, live, filterBtn, fitBtn, oneBtn, helpBtn);

  const stage = el("div", "tnb-stage");
  const canvas = el("canvas", "tnb-canvas");
  canvas.setAttribute("aria-hidden", "true");
  const labelA = el("div", "tnb-label");
  const labelB = el("div", "tnb-label");
  const divider = el("div", "tnb-divider");
  divider.append(el("div", "tnb-knob"));
  const status = el("div", "tnb-status");
  status.hidden = true;
  const hint = el("div", "tnb-hint", "Ctrl + scroll to zoom");
  hint.setAttribute("aria-hidden", "true");
  const help = el("div", "tnb-help");
  help.hidden = true;
  help.id = `tnb-help-${Math.random().toString(36).slice(2, 10)}`;
  helpBtn.setAttribute("aria-controls", help.id);
  const table = el("dl");
  for (const [key, what] of HELP) table.append(el("dt", "", key), el("dd", "", what));
  help.append(el("div", "tnb-help-title", "Keys and gestures"), table);
  const gridLabels = el("div", "tnb-grid-labels");
  stage.append(canvas, divider, labelA, labelB, gridLabels, status, hint, help);
  root.append(bar, stage);
  host.append(root);
  return {
    root, bar, modeGroup, modeButtons, modeSelect, sliderWrap, sliderName, slider, zoomText,
    statusText, filterBtn, filterWord, fitBtn, oneBtn, helpBtn, stage, canvas, labelA, labelB, gridLabels, divider,
    status, hint, help,
  };
}

// The toolbar stays one row at every width: the narrower it is, the more it
// folds, one step at a time, until nothing overflows (the slider's room is
// kept in every mode, so switching modes never moves anything):
//   1: the slider's name goes (the slider keeps its label) and it narrows;
//   2: the input filter button drops "Input: ";
//   3: tighter gaps, a shorter slider;
//   4: the mode buttons become one drop-down;
//   5: no slider (the divider, a drag and the arrow keys do its work).
const TOOLBAR_STEPS = 5;

function fitToolbar(d) {
  const bar = d.bar;
  if (!bar.clientWidth) return; // hidden: measured when shown
  for (let step = 0; step <= TOOLBAR_STEPS; step++) {
    const want = String(step);
    if (d.root.dataset.fold !== want) d.root.dataset.fold = want;
    if (bar.scrollWidth <= bar.clientWidth + 0.5) return;
  }
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function setAttr(node, name, value) {
  if (node.getAttribute(name) !== value) node.setAttribute(name, value);
}

// Place a label at one corner ("tl", "tr", "bl") of the stage, offset by `left` CSS px.
function placeLabel(node, corner, left = 8) {
  const want = corner === "tr" ? ["", "8px", "8px", ""]
    : corner === "bl" ? [`${left}px`, "", "", "8px"]
      : [`${left}px`, "", "8px", ""];
  const s = node.style;
  if (s.left !== want[0]) s.left = want[0];
  if (s.right !== want[1]) s.right = want[1];
  if (s.top !== want[2]) s.top = want[2];
  if (s.bottom !== want[3]) s.bottom = want[3];
}

// One label per pane in grid mode; the pane compared as B is marked.
function updateGridLabels(d, v) {
  const show = v.mode === "grid" && !v.solo;
  d.gridLabels.hidden = !show;
  if (!show) return;
  while (d.gridLabels.children.length > v.names.length) d.gridLabels.lastChild.remove();
  while (d.gridLabels.children.length < v.names.length) d.gridLabels.append(el("div", "tnb-label"));
  v.names.forEach((name, i) => {
    const node = d.gridLabels.children[i];
    const pane = v.panes[i] || v.panes[0];
    setText(node, i === v.right ? `${name}  ·  B` : i === v.left ? `${name}  ·  A` : name);
    node.classList.toggle("tnb-picked", i === v.right);
    const left = `${pane.x / v.dpr + 8}px`;
    const top = `${pane.y / v.dpr + 8}px`;
    if (node.style.left !== left) node.style.left = left;
    if (node.style.top !== top) node.style.top = top;
  });
}

function fidelityText(v) {
  const f = v.fidelity;
  const [, b] = v.labels;
  if (!f || f.pane === undefined) return `${b}  ·  computing the fidelity map…`;
  if (f.pane === 0) return `${b} is the input: pick an output with ] for its fidelity map`;
  if (f.reason) return `${b}  ·  fidelity ${f.reason}`;
  const psnr = f.psnr === null || f.psnr === undefined ? "identical" : `${f.psnr.toFixed(1)} dB`;
  const boxes = f.regions && f.regions.length ? "  ·  click a box to zoom to it" : "";
  return `${b}  ·  PSNR ${psnr}  ·  SSIM ${Number(f.ssim).toFixed(3)}${boxes}`;
}

// Bring labels, divider, toolbar state and the zoom text in line with `v`:
//   {mode, orientation, position, opacity, showing, solo, labels, gain,
//    zoomPercent, fitted, dpr, panes, names, left, right, filter, fidelity}
function updateOverlay(d, v) {
  const [a, b] = v.labels;
  d.root.dataset.mode = v.mode;
  d.root.dataset.orientation = v.orientation;
  d.root.dataset.solo = v.solo || "";
  d.root.dataset.inputFilter = v.filter;
  for (const [mode, btn] of Object.entries(d.modeButtons)) {
    setAttr(btn, "aria-pressed", String(mode === v.mode));
  }
  if (d.modeSelect.value !== v.mode) d.modeSelect.value = v.mode;
  setText(d.filterWord, v.filter === "nearest" ? "pixels" : "smooth");
  setAttr(d.filterBtn, "aria-pressed", String(v.filter === "nearest"));
  const weighted = v.mode === "blend" || v.mode === "fidelity";
  const sliding = (v.mode === "swipe" || weighted) && !v.solo;
  d.sliderWrap.hidden = !sliding;
  setText(d.sliderName, v.mode === "fidelity" ? "Heat map" : v.mode === "blend" ? "Opacity" : "Split");
  setAttr(d.slider, "aria-label", v.mode === "fidelity" ? "Heat map opacity"
    : v.mode === "blend" ? `${b} opacity` : "Divider position");
  const value = String(weighted ? v.opacity : v.position);
  if (d.slider.value !== value) d.slider.value = value;
  updateGridLabels(d, v);
  setText(d.zoomText, `${v.fitted ? "fit " : ""}${v.zoomPercent}%`);

  d.labelA.hidden = false;
  d.labelB.hidden = false;
  d.divider.hidden = v.mode !== "swipe" || !!v.solo;
  let textA = a;
  let textB = b;
  if (v.solo) {
    d.labelB.hidden = true;
    textA = `${v.solo === "input" ? a : b} alone  ·  space: switch, Esc: back to ${MODE_TITLES[v.mode] || v.mode}`;
    placeLabel(d.labelA, "tl");
  } else if (v.mode === "side-by-side") {
    placeLabel(d.labelA, "tl", v.panes[0].x / v.dpr + 8);
    placeLabel(d.labelB, "tl", v.panes[1].x / v.dpr + 8);
  } else if (v.mode === "grid") {
    d.labelA.hidden = true;
    d.labelB.hidden = true;
  } else if (v.mode === "fidelity") {
    d.labelB.hidden = true;
    textA = fidelityText(v);
    placeLabel(d.labelA, "tl");
  } else if (v.mode === "toggle") {
    d.labelB.hidden = true;
    textA = `${v.showing === "input" ? a : b}  ·  space or click to switch`;
    placeLabel(d.labelA, "tl");
  } else if (v.mode === "difference") {
    d.labelB.hidden = true;
    textA = `|${b} − ${a}| × ${v.gain}`;
    placeLabel(d.labelA, "tl");
  } else if (v.mode === "blend") {
    textA = `${a}  ${Math.round((1 - v.opacity) * 100)}%`;
    textB = `${b}  ${Math.round(v.opacity * 100)}%`;
    placeLabel(d.labelA, "tl");
    placeLabel(d.labelB, "tr");
  } else {
    placeLabel(d.labelA, "tl");
    placeLabel(d.labelB, v.orientation === "horizontal" ? "bl" : "tr");
  }
  setText(d.labelA, textA);
  setText(d.labelB, textB);
  if (!d.divider.hidden) {
    const split = `${splitAt(v.panes[0], v.orientation, v.position) / v.dpr}px`;
    const horizontal = v.orientation === "horizontal";
    const s = d.divider.style;
    if (s.left !== (horizontal ? "0px" : split)) s.left = horizontal ? "0px" : split;
    if (s.top !== (horizontal ? split : "0px")) s.top = horizontal ? split : "0px";
  }
}
