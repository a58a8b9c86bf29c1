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
// VBox around the comparison and this strip with its note field) before the
// notebook's shortcuts see them (keys.js, which comes before this file), so
// they work wherever the focus is inside the box, the comparison included,
// and the notebook's own shortcuts (a, r, j, k...) never run.  Other plain
// characters pressed in the box are kept from the notebook too.  Keys typed in
// a text field stay there; Escape leaves it.
//
// Stepping carries the view over: a key or click message names the mode the
// comparison shows, so the next one opens in it (Review remembers it), and j/k
// pressed inside the comparison hand the focus to the next comparison once it
// is shown, so the keys that follow reach it without a click.

const MARKS = { accept: "✓", reject: "✗", flag: "⚑" };
const KEYS = new Set(["j", "k", "a", "r", "f"]);
const TYPING = "input:not([type=range]), textarea, [contenteditable]";
const CONTROLS = "button, input, select, textarea, [contenteditable]";
const FOLLOW_MS = 60000; // how long the focus waits for the next comparison

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
  const box = () => el.closest(".topaz-review");
  const comparison = () => {
    const area = box();
    return area && area.querySelector(".tnb-compare");
  };
  // What the kernel is told with a key or a click: the mode on screen.
  const withMode = (message) => {
    const shown = comparison();
    if (shown && shown.dataset.mode) message.mode = shown.dataset.mode;
    return message;
  };
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
          model.send(withMode({ event: "go", index }));
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

  // The focus follows from the comparison `old` to the one that replaces it in
  // `area`, unless the user puts it somewhere else in the meantime.  Focus that
  // falls back to the page or the notebook around the review as the old view
  // goes is not the user's choice; nor is this strip, where the focus waits
  // (j/k still work there, and `old` is null when they are pressed) while the
  // next process shows no comparison (it failed, or is still loading).
  let follow = null;
  function stopFollowing() {
    if (!follow) return;
    follow.observer.disconnect();
    clearTimeout(follow.timer);
    document.removeEventListener("focusin", follow.onFocus, true);
    follow = null;
  }
  function followFocus(area, old) {
    stopFollowing();
    const gone = () => !old || !old.isConnected;
    const fallback = (node) => !node || !node.isConnected || node === document.body
      || node === root || (old && old.contains(node)) || node.contains(area);
    const observer = new MutationObserver(() => {
      const active = document.activeElement;
      const next = [...area.querySelectorAll(".tnb-compare")].find((v) => v !== old);
      if (next) {
        stopFollowing();
        if (fallback(active)) next.focus({ preventScroll: true });
      } else if (gone() && active !== root && fallback(active)) {
        root.focus({ preventScroll: true });
      }
    });
    observer.observe(area, { childList: true, subtree: true });
    const onFocus = (ev) => {
      if (!fallback(ev.target)) stopFollowing();
    };
    document.addEventListener("focusin", onFocus, true);
    follow = { observer, onFocus, timer: setTimeout(stopFollowing, FOLLOW_MS) };
  }

  function onKey(ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const area = box();
    const typing = ev.target.closest && ev.target.closest(TYPING);
    if (typing) {
      if (ev.key === "Escape") {
        ev.target.blur(); // the note field keeps what was typed on blur
        root.focus({ preventScroll: true });
        keepKey(ev);
      } else if (ev.key === "Enter" && ev.target === input) {
        keep();
        keepKey(ev);
      }
      return;
    }
    if (ev.key === "n") {
      input.focus();
    } else if (KEYS.has(ev.key)) {
      const shown = comparison();
      const fromView = shown && shown.contains(ev.target);
      if ((ev.key === "j" || ev.key === "k") && (fromView || (follow && ev.target === root))) {
        followFocus(area, shown || null);
      }
      model.send(withMode({ event: "key", key: ev.key, index: model.get("current") }));
    } else if (!plainCharacter(ev) || (ev.target.closest && ev.target.closest(CONTROLS))) {
      return; // the notebook's, or a control's own (space presses a button)
    }
    keepKey(ev);
  }
  const onWindowKey = keysInside(box, onKey);

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
  window.addEventListener("keydown", onWindowKey, true);
  draw();
  model.send({ event: "ready" });
  // Keys work at once: the strip takes the focus when the review appears.
  requestAnimationFrame(() => root.focus({ preventScroll: true }));

  return () => {
    model.off("change:items", onItems);
    model.off("change:current", draw);
    model.off("msg:custom", onMessage);
    window.removeEventListener("keydown", onWindowKey, true);
    stopFollowing();
    input.removeEventListener("input", onInput);
    input.removeEventListener("blur", keep);
    input.removeEventListener("keydown", stop);
    bar.remove();
    root.remove();
  };
}

export default { render };
