"""A model shoot-out: several Topaz outputs of one input, in one synced view.

``%topaz ID1 ID2 … --grid`` returns a :class:`Shootout`.  It holds one
:class:`~topaz_nb.comparison.Comparison` per process and shows the input once
(from the first process) with every output beside it in one
:class:`~topaz_nb.view.widget.CompareView` (grid mode first; the pair modes compare
any two panes), with a table of each output's model, size and fidelity
(PSNR, SSIM against its own input).

The outputs should come from the same input.  Whether they do is decided by
the ``source_id`` the API reports where every status gives one; otherwise by
the inputs' sizes and the SHA-256 of their files.  When they differ the
shoot-out says so in one line and still shows them, each output aligned to the
first output's grid as usual.

Its comparisons keep their downloads pinned against the cache's bound until
the shoot-out is closed, or its view (:meth:`Shootout.close`).
"""

from __future__ import annotations

import hashlib
import html
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._ids import check_process_id
from .._tasks import child_event, workers
from .._text import html_table, psnr_text, ssim_text
from ..comparison import Comparison
from ..errors import TopazError
from ..view.modes import MAX_OUTPUTS
from .cards import close_when_done

if TYPE_CHECKING:
    from ..api.client import TopazClient
    from ..storage import Transfer
    from ..view.widget import CompareView


class Shootout:
    """Several processes' outputs of one input: ``comparisons``, ``view``, ``rows()``."""

    def __init__(self, comparisons: list[Comparison], *, mode: str = "grid") -> None:
        if len(comparisons) < 1:
            raise TopazError("A shoot-out needs at least one process.")
        if len(comparisons) > MAX_OUTPUTS:
            raise TopazError(f"A shoot-out compares at most {MAX_OUTPUTS} outputs; "
                             f"got {len(comparisons)}.")
        for c in comparisons:
            if not c.ready:
                raise TopazError(c.status_line("python"))
        self.comparisons = comparisons
        self.mode = mode
        self._view: CompareView | None = None

    @classmethod
    def fetch(cls, process_ids: list[str], *, client: TopazClient, transfer: Transfer,
              max_workers: int = 4, preview_size: int = 2048, mode: str = "grid",
              on_done: Callable[[str], None] | None = None,
              cancel: threading.Event | None = None) -> Shootout:
        """Fetch every process (``max_workers`` at a time; all IDs checked first)
        and make the shoot-out; the first that fails, or has no output, is the error.
        Ctrl-C (or ``cancel``) stops every download at once."""
        ids = list(dict.fromkeys(check_process_id(p) for p in process_ids))
        if len(ids) > MAX_OUTPUTS:
            raise TopazError(f"A shoot-out compares at most {MAX_OUTPUTS} outputs; got {len(ids)}.")
        stop = child_event(cancel)

        def one(pid: str) -> Comparison:
            try:
                return Comparison.fetch(pid, client=client, transfer=transfer,
                                        preview_size=preview_size, mode=mode, cancel=stop)
            finally:
                if on_done is not None:
                    on_done(pid)

        with workers(max_workers, "topaz-shootout", stop) as pool:
            futures = [pool.submit(one, pid) for pid in ids]
            try:
                comparisons = [future.result() for future in futures]
            except BaseException:
                for future in futures:  # nobody will show them: let their files go
                    close_when_done(future)
                raise
        try:
            return cls(comparisons, mode=mode)
        except BaseException:
            for comparison in comparisons:
                comparison.close()
            raise

    def close(self) -> None:
        """Close the view and every comparison: their downloads are no longer
        pinned against the cache's bound.  Closing the view does this too."""
        view, self._view = self._view, None
        if view is not None:
            view.close()
        for comparison in self.comparisons:
            comparison.close()

    def __enter__(self) -> Shootout:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what is compared ----------------------------------------------------
    @property
    def labels(self) -> list[str]:
        """``Input``, then each output as ``<model> · <first 8 of its process ID>``."""
        out = ["Input"]
        for c in self.comparisons:
            model = c.status.model if c.status is not None and c.status.model else "Output"
            out.append(f"{model} · {c.process_id[:8]}")
        return out

    @property
    def mismatch(self) -> str | None:
        """One line when the processes do not share one input, else ``None``."""
        first = self.comparisons[0]
        others = [c for c in self.comparisons[1:] if not _same_input(first, c)]
        if not others:
            return None
        listed = ", ".join(c.process_id[:8] for c in others)
        return (f"Not the same input: {listed} started from another image than "
                f"{first.process_id[:8]}; every output is shown over {first.process_id[:8]}'s input.")

    @property
    def view(self) -> CompareView:
        """The shoot-out widget: the first input, then every output (made once)."""
        if self._view is None:
            from ..view.widget import CompareView

            first = self.comparisons[0]
            inp = first.source("input")
            outputs = [c.source("output") for c in self.comparisons]
            crop = first.status.crop_to_fill if first.status is not None else None
            mode = self.mode if len(outputs) > 1 or self.mode != "grid" else "swipe"
            view = CompareView(inp, *outputs, labels=self.labels,
                               preview_size=first.preview_size, crop_to_fill=crop)
            view.fidelity_source = lambda k: self.comparisons[k - 1].fidelity
            view.mode = mode  # after the source: fidelity mode reads the cached results
            view.on_close(self.close)  # on screen, it keeps every comparison's files
            self._view = view
        return self._view

    def rows(self) -> list[tuple[str, str, str, str, str, str]]:
        """Per output: label, model, size, scale, PSNR and SSIM against its input
        (the PSNR cell says why when they could not be computed)."""
        rows = []
        for label, c in zip(self.labels[1:], self.comparisons):
            info = c.info
            out = info.get("output", {})
            size = f"{out['width']}×{out['height']}" if "width" in out else ""
            scale = f"{info['scale']:.2f}×" if "scale" in info else ""
            model = c.status.model if c.status is not None and c.status.model else ""
            f = c.fidelity  # a reason instead of the scores where none can be computed
            rows.append((label, model, size, scale, f.reason or psnr_text(f.psnr),
                         ssim_text(f.ssim)))
        return rows

    def metadata_html(self) -> str:
        return html_table(self.rows(), header=("Output", "Model", "Size", "Scale",
                                                "PSNR vs input", "SSIM vs input"),
                          caption="Model shoot-out", row_headers=True, css_class="topaz-meta")

    def widget(self) -> Any:
        """The view, a one-line note when the inputs differ, and the table."""
        import ipywidgets as w

        parts: list[Any] = []
        note = self.mismatch
        if note:
            parts.append(w.HTML(f"<div class='topaz-note'>{html.escape(note)}</div>"))
        parts += [self.view, w.HTML(self.metadata_html())]
        return w.VBox(parts, layout=w.Layout(width="100%"))

    def __repr__(self) -> str:
        return f"Shootout({', '.join(self.labels[1:])})"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = self.widget()._repr_mimebundle_(include=include, exclude=exclude)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        data = dict(data or {})
        note = self.mismatch
        data["text/plain"] = repr(self) + (f"\n{note}" if note else "")
        return data


def _same_input(a: Comparison, b: Comparison) -> bool:
    ids = [c.status.source_id if c.status is not None else None for c in (a, b)]
    if all(ids):
        return ids[0] == ids[1]
    ia, ib = a.source("input"), b.source("input")
    if ia is None or ib is None or ia.size != ib.size:
        return False
    fa, fb = a.files().get("input"), b.files().get("input")
    if fa is None or fb is None:
        return False
    return _sha256(fa) == _sha256(fb)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
