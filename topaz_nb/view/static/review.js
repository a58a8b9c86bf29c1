// review.js: the review's strip of thumbnails, and its keys.
//
// The strip shows the batch (the `items` trait) with each process's decision
// mark and the one on screen (`current`) highlighted; a click shows another.
// Thumbnails come as messages, not traits (see topaz_nb/review.py).
//
// Keys are taken for the whole review box (`.topaz-review`, the ipywidgets
// VBox around the comparison, the note field and this strip), in the capture
// phase on the document, so they work wherever the focus is inside the box,
// the comparison included, and the notebook's own shortcuts (a, r, j, k...)
// never see them.  Keys typed in a text field stay there; Escape leaves it.

const MARKS = { accept: "✓", reject: "✗", flag: "⚑" };
const KEYS = new Set(["j", "k", "a", "r", "f"]);

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "topaz-review-strip";
  root.tabIndex = 0;
  root.setAttribute("role", "listbox");
  root.setAttribute("aria-label", "Processes of the batch (j/k to step, a/r/f to decide)");
  el.appendChild(root);
  const thumbs = new Map();
  let cells = [];

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
        ev.target.blur();
        root.focus({ preventScroll: true });
        ev.preventDefault();
        ev.stopPropagation();
      }
      return;
    }
    if (ev.key === "n") {
      const note = box.querySelector(".topaz-review-note input, .topaz-review-note textarea");
      if (note) note.focus();
    } else if (KEYS.has(ev.key)) {
      model.send({ event: "key", key: ev.key });
    } else {
      return;
    }
    ev.preventDefault();
    ev.stopPropagation();
  }

  model.on("change:items", draw);
  model.on("change:current", draw);
  model.on("msg:custom", onMessage);
  document.addEventListener("keydown", onKey, true);
  draw();
  model.send({ event: "ready" });
  // Keys work at once: the strip takes the focus when the review appears.
  requestAnimationFrame(() => root.focus({ preventScroll: true }));

  return () => {
    model.off("change:items", draw);
    model.off("change:current", draw);
    model.off("msg:custom", onMessage);
    document.removeEventListener("keydown", onKey, true);
    root.remove();
  };
}

export default { render };
