// keys.js: the keys a focused widget keeps from the notebook's shortcuts.
//
// JupyterLab, Notebook 7 and Voila run their shortcuts through Lumino's
// CommandRegistry.processKeydownEvent, called from a keydown listener on the
// document.  JupyterLab starts its application with `bubblingKeydown: true`,
// so there the listener runs after the key has bubbled through the widget and
// a widget that stops a key keeps it.  Notebook 7 and Voila start the same
// application without it: the listener runs in the capture phase, before the
// widget sees the key, so `m` pressed in a comparison also turned its cell
// into Markdown.  processKeydownEvent ignores an event whose default is
// prevented, and the window's capture listeners run before the document's;
// so the widgets listen there (`keysInside`) and prevent the default of every
// key they keep (`keepKey`), which works whichever phase the notebook uses.
//
// `data-lm-suppress-shortcuts` on the widget would keep every key, also the
// ones the notebook should still get from inside a widget: Escape, Enter and
// Shift+Enter (run the cell), Tab, arrows the view does not use, and anything
// with Ctrl, Cmd or Alt.  A widget keeps the keys it handles and every other
// plain character (`plainCharacter`: a, j, 1... the notebook's command-mode
// letters), so typing at a focused view never edits the notebook.

function plainCharacter(ev) {
  return !(ev.ctrlKey || ev.metaKey || ev.altKey) && typeof ev.key === "string"
    && ev.key.length === 1;
}

// The key is the widget's: the notebook's shortcuts skip it (default
// prevented) and no listener after this one sees it.
function keepKey(ev) {
  ev.preventDefault();
  ev.stopPropagation();
}

// A keydown listener for `listen(window, "keydown", it, true)` that calls
// `fn(ev)` for the keys pressed while the focus is inside `area()` (an
// element, or null when there is none yet).
function keysInside(area, fn) {
  return (ev) => {
    const box = area();
    if (box && ev.target instanceof Node && box.contains(ev.target)) fn(ev);
  };
}
