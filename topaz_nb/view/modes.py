"""The comparison modes and the view's limits, defined once.

The widget sends these to the front end through its model, the ``%topaz``
magic and the ``topaz-nb`` command offer :data:`MODES` as their choices, and the
``Topaz.mode`` setting is an enum of them: adding a mode or changing a limit is
an edit here, not a hunt through Python and JavaScript.
"""

from __future__ import annotations

MODES: tuple[str, ...] = ("swipe", "side-by-side", "blend", "difference", "toggle", "grid",
                          "fidelity")
"""Every comparison mode, in the order the ``m`` key cycles through them."""

PAIR_MODES: tuple[str, ...] = ("swipe", "side-by-side", "blend", "difference", "toggle")
"""Modes that compare two panes, ``left`` and ``right``; ``grid`` shows every pane and
``fidelity`` the output of ``right`` under its heat map."""

MAX_OUTPUTS = 8
"""The most outputs one view compares (a shoot-out): memory and bytes grow with each."""

INPUT_FILTERS: tuple[str, ...] = ("smooth", "nearest")
"""How a magnified pane is drawn: interpolated (default) or its real pixels as blocks."""

DEFAULT_MODE = "swipe"

ORIENTATIONS: tuple[str, ...] = ("vertical", "horizontal")

TILE_PX = 512
"""A tile is this many image pixels square at its level (``512 / level`` output px)."""

MAX_ZOOM = 64.0
"""Largest zoom: 64 screen pixels per output pixel."""

DIFF_GAIN = 4
"""Difference mode shows ``|output - input| × DIFF_GAIN`` so small changes are visible."""

BLEND_DEFAULT = 0.5
"""Blend mode's output opacity when a view opens: an even mix of both images."""


def limits() -> dict[str, object]:
    """The constants the front end needs, as the widget's read-only ``limits`` trait."""
    return {"modes": list(MODES), "orientations": list(ORIENTATIONS), "tile_px": TILE_PX,
            "max_zoom": MAX_ZOOM, "diff_gain": DIFF_GAIN, "input_filters": list(INPUT_FILTERS)}
