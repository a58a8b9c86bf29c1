// review.js: the review's strip of thumbnails, its note field, and its keys.
//
// The strip shows the batch (the `items` trait) with each process's decision
// mark and the one on screen (`current`) highlighted; a click shows another.
// Thumbnails come as messages, not traits (see topaz_nb/batch/review.py).
//
// The note field shows the note of the process on screen.  What is typed there
// belongs to the process it was typed on, and is kept (sent as a "note"
// message naming that process) on Enter or when the field is left, by Escape
// or a click elsewhere; being on the same channel as the keys, it always
// reaches the kernel before the j or k pressed after it.
//
// Keys are taken for the whole review box (`.topaz-review`, the ipywidgets
// VBox around the comparison, the note field and this strip), in the capture
// phase on the document, so they work wherever the focus is inside the box,
// the comparison included, and the notebook's own shortcuts (a, r, j, k...)
// never see them.  Keys typed in a text field stay there; Escape leaves it.

const MARKS = { accept: "✓", reject: "✗", flag: "⚑" };
const KEYS = new Set(["j", "k", "a", "r", "f"]);

function render({ model, el }) {
  const bar = document.createElement("div");
  bar.className = "topaz-review-bar";
  const noteBox = document.createElement("label");
  noteBox.className = "topaz-review-note";
  const input = document.createElement("input");
  input.type = "text";
  input.placeholder = "note (n to write, Enter to keep it)";
  input.setAttribute("aria-label", "Note on the process on screen");
  noteBox.appendChild(input);
  const legend = document.createElement("small");
  legend.className = "topaz-review-keys";
  legend.textContent = "j/k next/previous · a accept · r reject · f flag · n note";
  bar.append(noteBox, legend);
  el.appendChild(bar);

  const root = document.createElement("div");
  root.className = "topaz-review-strip";
  root.tabIndex = 0;
  root.setAttribute("role", "listbox");
  root.setAttribute("aria-label", "Processes of the batch (j/k to step, a/r/f to decide)");
  el.appendChild(root);
  const thumbs = new Map();
  let cells = [];
  // The index of the process whose note is being typed (null: the field
  // shows the note the kernel has for the process on screen).
  let editing = null;
  // Notes sent and not yet back in `items`, by index: shown meanwhile, so the
  // field never flickers back to the old text (nor keeps it, if the write fails).
  const sent = new Map();

  function noteOf(index) {
    if (sent.has(index)) return sent.get(index);
    const item = (model.get("items") || [])[index];
    return (item && item.note) || "";
  }

  function keep() {
    if (editing === null) return;
    const index = editing;
    editing = null;
    if (input.value !== noteOf(index)) {
      sent.set(index, input.value);
      model.send({ event: "note", index, note: input.value });
    }
  }

  function onItems() {
    const items = model.get("items") || [];
    for (const [index, note] of sent) {
      if (items[index] && (items[index].note || "") === note) sent.delete(index);
    }
    draw();
  }

  function showNote() {
    if (editing !== null) return;
    const note = noteOf(model.get("current"));
    if (input.value !== note) input.value = note;
  }

  function draw() {
    const items = model.get("items") || [];
    const current = model.get("current");
    if (cells.length !== items.length) {
      root.replaceChildren();
      cells = items.map((item, index) => {
        const cell = document.createElement("div");
        cell.className = "topaz-review-cell";
        cell.setAttribute("role", "option");
        const img = document.createElement("img");
        img.alt = "";
        const mark = document.createElement("span");
        mark.className = "topaz-review-mark";
        const name = document.createElement("span");
        name.className = "topaz-review-name";
        cell.append(img, mark, name);
        cell.addEventListener("click", () => {
          root.focus({ preventScroll: true });
          model.send({ event: "go", index });
        });
        root.appendChild(cell);
        return cell;
      });
    }
    items.forEach((item, index) => {
      const cell = cells[index];
      const [img, mark, name] = cell.children;
      const uri = thumbs.get(String(index));
      if (uri && img.src !== uri) img.src = uri;
      img.style.visibility = uri ? "visible" : "hidden";
      mark.textContent = MARKS[item.decision] || "";
      cell.dataset.decision = item.decision || "";
      name.textContent = item.name || "";
      cell.title = `${item.name || item.id}${item.decision ? ": " + item.decision : ""}`;
      const on = index === current;
      cell.classList.toggle("topaz-review-current", on);
      cell.setAttribute("aria-selected", on ? "true" : "false");
      if (on && cell.scrollIntoView && root.isConnected) {
        cell.scrollIntoView({ block: "nearest", inline: "nearest" });
      }
    });
    showNote();
  }

  function onMessage(msg) {
    if (msg && msg.thumbs) {
      for (const [index, uri] of Object.entries(msg.thumbs)) thumbs.set(index, uri);
      draw();
    }
  }

  function onKey(ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const box = el.closest(".topaz-review");
    if (!box || !box.contains(ev.target)) return;
    const typing = ev.target.closest && ev.target.closest("input, textarea, [contenteditable]");
    if (typing) {
      if (ev.key === "Escape") {
        ev.target.blur(); // the note field keeps what was typed on blur
        root.focus({ preventScroll: true });
        ev.preventDefault();
        ev.stopPropagation();
      } else if (ev.key === "Enter" && ev.target === input) {
        keep();
        ev.preventDefault();
        ev.stopPropagation();
      }
      return;
    }
    if (ev.key === "n") {
      input.focus();
    } else if (KEYS.has(ev.key)) {
      model.send({ event: "key", key: ev.key, index: model.get("current") });
    } else {
      return;
    }
    ev.preventDefault();
    ev.stopPropagation();
  }

  function onInput() {
    if (editing === null) editing = model.get("current");
  }

  // Keys typed in the field are the field's: the notebook never sees them.
  function stop(ev) {
    ev.stopPropagation();
  }

  input.addEventListener("input", onInput);
  input.addEventListener("blur", keep);
  input.addEventListener("keydown", stop);
  model.on("change:items", onItems);
  model.on("change:current", draw);
  model.on("msg:custom", onMessage);
  document.addEventListener("keydown", onKey, true);
  draw();
  model.send({ event: "ready" });
  // Keys work at once: the strip takes the focus when the review appears.
  requestAnimationFrame(() => root.focus({ preventScroll: true }));

  return () => {
    model.off("change:items", onItems);
    model.off("change:current", draw);
    model.off("msg:custom", onMessage);
    document.removeEventListener("keydown", onKey, true);
    input.removeEventListener("input", onInput);
    input.removeEventListener("blur", keep);
    input.removeEventListener("keydown", stop);
    bar.remove();
    root.remove();
  };
}

export default { render };
