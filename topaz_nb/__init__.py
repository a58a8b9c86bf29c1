"""topaz-nb: review Topaz Labs Image API results in Jupyter.

``%load_ext topaz_nb`` registers the ``%topaz`` magic.  The public names are
imported lazily so that loading the extension stays fast.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__ as __version__

__all__ = [
    "CompareView",
    "Comparison",
    "Sandbox",
    "TopazClient",
    "TopazPanel",
    "load_ipython_extension",
    "unload_ipython_extension",
]

_LAZY = {
    "CompareView": "topaz_nb.widget",
    "Comparison": "topaz_nb.comparison",
    "Sandbox": "topaz_nb.sandbox",
    "TopazClient": "topaz_nb.client",
    "TopazPanel": "topaz_nb.panel",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'topaz_nb' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%topaz``; called by ``%load_ext topaz_nb``."""
    from .magics import TopazMagics

    ipython.register_magics(TopazMagics(ipython))


def unload_ipython_extension(ipython: Any) -> None:
    """Nothing to undo beyond what IPython does itself."""
