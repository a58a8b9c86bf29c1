"""Many processes at once: thumbnails, key numbers, and a click to compare.

``%topaz ID1 ID2 …`` returns a :class:`Gallery`.  Processes are fetched through
a bounded thread pool, so a batch of fifty neither runs one at a time nor opens
fifty connections.  A process that fails to fetch becomes a line in the gallery
instead of aborting the batch; Ctrl-C stops the whole batch at once (see
:mod:`topaz_nb._tasks`).
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._ids import check_process_id
from ._tasks import child_event, workers
from ._text import byte_size, html_table, say
from .comparison import Comparison
from .errors import TopazError

if TYPE_CHECKING:
    from .client import TopazClient
    from .transfer import Transfer

_THUMB = 160


class Gallery:
    """The comparisons of several processes, in the order they were asked for."""

    def __init__(self, entries: list[tuple[str, Comparison | TopazError]]) -> None:
        self.entries = entries
        self._widget: Any = None

    @classmethod
    def fetch(cls, process_ids: list[str], *, client: TopazClient, transfer: Transfer,
              max_workers: int = 4, preview_size: int = 2048, mode: str = "swipe",
              on_done: Callable[[str], None] | None = None,
              cancel: threading.Event | None = None) -> Gallery:
        """Fetch every process, ``max_workers`` at a time; all IDs are checked first.

        Setting ``cancel`` (or Ctrl-C in the calling thread, which sets it)
        stops every download of the batch within a second.
        """
        ids = list(dict.fromkeys(check_process_id(p) for p in process_ids))
        stop = child_event(cancel)

        def one(pid: str) -> Comparison | TopazError:
            try:
                result = Comparison.fetch(pid, client=client, transfer=transfer,
                                          require_output=False, preview_size=preview_size,
                                          mode=mode, cancel=stop)
                for side in ("input", "output"):  # thumbnails now: a damaged file fails here
                    image = result.source(side)
                    if image is not None:
                        image.preview(_THUMB)
                return result
            except TopazError as exc:
                return exc
            finally:
                if on_done is not None:
                    on_done(pid)

        with workers(max_workers, "topaz-gallery", stop) as pool:
            results = list(pool.map(one, ids))
        return cls(list(zip(ids, results)))

    @property
    def comparisons(self) -> list[Comparison]:
        """The processes that could be fetched."""
        return [r for _, r in self.entries if isinstance(r, Comparison)]

    @property
    def errors(self) -> dict[str, str]:
        """Process ID → one-line reason, for those that could not be fetched or failed.

        A Failed or Cancelled process fetches fine (its input is there) but will
        never have an output, so it counts here, with the server's reason.
        """
        out: dict[str, str] = {}
        for pid, result in self.entries:
            if isinstance(result, TopazError):
                out[pid] = say(result, "python")
            elif result.failed:
                out[pid] = result.status_line("python")
        return out

    def __getitem__(self, index: int) -> Comparison | TopazError:
        return self.entries[index][1]

    def __len__(self) -> int:
        return len(self.entries)

    def summary(self) -> list[dict[str, Any]]:
        """One row of key numbers per process (feed it to ``pandas.DataFrame``)."""
        rows = []
        for pid, result in self.entries:
            row: dict[str, Any] = {"process_id": pid}
            if isinstance(result, TopazError):
                row.update(status="error", error=say(result, "python"))
            else:
                info = result.info
                inp, out = info.get("input", {}), info.get("output", {})
                status = info.get("status") or {}
                if result.failed:
                    row.update(error=result.reason or "")
                row.update(
                    status=status.get("status") or ("Completed" if result.ready else "not ready"),
                    model=status.get("model"),
                    input_size=_size(inp), output_size=_size(out),
                    scale=round(info["scale"], 3) if "scale" in info else None,
                    output_format=out.get("format"),
                    output_bytes=out.get("file_size"),
                    output_megapixels=round(out["megapixels"], 2) if "megapixels" in out else None,
                )
            rows.append(row)
        return rows

    # -- display ------------------------------------------------------------
    def widget(self) -> Any:
        """A grid of cards; a card's Compare button opens its comparison below."""
        if self._widget is not None:
            return self._widget
        import ipywidgets as w

        detail = w.VBox(layout=w.Layout(width="100%"))
        rows = self.summary()
        cards = [self._card(pid, result, row, detail)
                 for (pid, result), row in zip(self.entries, rows)]
        grid = w.GridBox(cards, layout=w.Layout(
            grid_template_columns=f"repeat(auto-fill, minmax({2 * _THUMB + 24}px, 1fr))",
            grid_gap="8px", width="100%"))
        self._widget = w.VBox([grid, detail])
        return self._widget

    def _card(self, pid: str, result: Comparison | TopazError, row: dict[str, Any],
              detail: Any) -> Any:
        import ipywidgets as w

        title = w.HTML(f"<code>{html.escape(pid[:8])}…</code>")
        if isinstance(result, TopazError):
            return w.VBox([title, _error_html(say(result, "panel"))], layout=_card_layout())
        thumbs = [_thumb(result.source(side), side) for side in ("input", "output")]
        numbers = " · ".join(str(x) for x in (
            row.get("output_size") or row.get("status"),
            f"{row['scale']}×" if row.get("scale") else None,
            row.get("model")) if x)
        button = w.Button(description="Compare", disabled=not result.ready,
                          tooltip=result.status_line(), layout=w.Layout(width="auto"))

        def show(_: Any) -> None:
            detail.children = [result.widget()]

        button.on_click(show)
        if result.failed:
            verb = "cancelled" if row.get("status") == "Cancelled" else "failed"
            note = _error_html(f"{verb}: {result.reason}" if result.reason else verb)
        else:
            note = w.HTML(html.escape(numbers))
        return w.VBox([title, w.HBox(thumbs), note, button], layout=_card_layout())

    def _html_table(self) -> str:
        rows = self.summary()
        cols = ["process_id", "status", "input_size", "output_size", "scale", "output_format",
                "output_bytes", "model", "error"]
        cols = [c for c in cols if any(r.get(c) not in (None, "") for r in rows)]

        def shown(row: dict[str, Any], col: str) -> Any:
            value = row.get(col)
            return byte_size(value) if col == "output_bytes" and value is not None else value

        return html_table(([shown(r, c) for c in cols] for r in rows), header=cols,
                          css_class="topaz-gallery")

    def __repr__(self) -> str:
        return f"<Gallery of {len(self.entries)} processes, {len(self.errors)} failed>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = dict(self.widget()._repr_mimebundle_(include=include, exclude=exclude) or {})
        bundle["text/html"] = self._html_table()
        bundle["text/plain"] = "\n".join(
            [repr(self)] + [f"  {r['process_id']}  {r.get('status')}  {r.get('output_size') or r.get('error', '')}"
                            for r in self.summary()])
        return bundle


def _size(entry: dict[str, Any]) -> str | None:
    return f"{entry['width']}×{entry['height']}" if "width" in entry else None


def _card_layout() -> Any:
    import ipywidgets as w

    return w.Layout(border="1px solid #ddd", padding="6px", align_items="flex-start")


def _error_html(text: str) -> Any:
    import ipywidgets as w

    return w.HTML(f"<span style='color:var(--jp-error-color1, #b00)'>{html.escape(text)}</span>")


def _thumb(image: Any, side: str) -> Any:
    """One side's thumbnail under its label, so input and output cannot be confused."""
    import ipywidgets as w

    label = w.HTML(f"<small>{side.capitalize()}</small>")
    if image is None:
        picture: Any = w.HTML(
            f"<div style='width:{_THUMB}px;height:{_THUMB * 3 // 4}px;background:#eee;"
            "display:flex;align-items:center;justify-content:center'>not ready</div>")
    else:
        picture = w.Image(value=image.preview_bytes(_THUMB, format="webp"), format="webp",
                          layout=w.Layout(width=f"{_THUMB}px"))
    return w.VBox([label, picture], layout=w.Layout(margin="0 4px 0 0"))
