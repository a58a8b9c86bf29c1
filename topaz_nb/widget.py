"""The former home of the comparison widget, kept so that notebooks importing
it from here go on working.  New code imports from :mod:`topaz_nb` or
:mod:`topaz_nb.view`."""

from .view.modes import MODES, TILE_PX
from .view.widget import CompareView

__all__ = ["MODES", "TILE_PX", "CompareView"]
