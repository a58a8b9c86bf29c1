"""Where the input lies on the output's pixel grid.

Every view of a comparison works in one coordinate space, the output's
pixels, because that is what the user inspects.  The input is drawn over it
according to the Topaz API's own resize rule (``crop_to_fill`` in the spec):
by default an input of another aspect ratio is *letterboxed*, fitted inside
the output canvas and centred; with ``crop_to_fill`` it is scaled to cover the
canvas and cropped, centred.  The rule is defined here once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    """Where the input image lies in the output's pixel grid.

    ``x, y, width, height`` is the input's rectangle in output pixels (it can
    reach outside the output canvas with ``crop_to_fill``);
    ``input_width, input_height`` is the input's own size, so the placement
    converts rectangles either way by itself.
    """

    x: float
    y: float
    width: float
    height: float
    input_width: int
    input_height: int

    @property
    def scale(self) -> float:
        """Output pixels per input pixel (along the width)."""
        return self.width / self.input_width

    @property
    def scale_y(self) -> float:
        """Output pixels per input pixel along the height; equals :attr:`scale`
        except for the sub-pixel rounding of an output size."""
        return self.height / self.input_height

    def to_input(self, x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        """Map an output-grid rectangle to the input-pixel rectangle under it."""
        sx, sy = self.scale, self.scale_y
        return ((x - self.x) / sx, (y - self.y) / sy, w / sx, h / sy)

    def to_output(self, x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        """Map an input-pixel rectangle to the output grid (inverse of :meth:`to_input`)."""
        sx, sy = self.scale, self.scale_y
        return (self.x + x * sx, self.y + y * sy, w * sx, h * sy)

    def as_dict(self) -> dict[str, float]:
        """Plain numbers, for a widget's state or a metadata table."""
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height,
                "input_width": self.input_width, "input_height": self.input_height,
                "scale": self.scale}


def align(input_size: tuple[int, int], output_size: tuple[int, int], *,
          crop_to_fill: bool | None = None) -> Placement:
    """Place an input of ``input_size`` on the grid of an output of ``output_size``.

    Same aspect ratio (up to the rounding of one output side to whole pixels,
    as when only ``output_width`` was requested) → the input covers the output
    exactly.  Otherwise ``crop_to_fill`` true scales the input to cover the
    output and centres it (the overflow is cropped); false or ``None`` (the
    API's default) fits it inside and centres it (letterbox).
    """
    iw, ih = _positive_size(input_size, "input_size")
    ow, oh = _positive_size(output_size, "output_size")
    if abs(ih * ow / iw - oh) < 0.5 or abs(iw * oh / ih - ow) < 0.5:
        return Placement(0.0, 0.0, float(ow), float(oh), iw, ih)
    fit = min if not crop_to_fill else max
    s = fit(ow / iw, oh / ih)
    width, height = iw * s, ih * s
    return Placement((ow - width) / 2, (oh - height) / 2, width, height, iw, ih)


def _positive_size(size: tuple[int, int], name: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (width, height), got {size!r}") from None
    if w < 1 or h < 1:
        raise ValueError(f"{name} must be at least 1×1 px, got {w}×{h}")
    return w, h
