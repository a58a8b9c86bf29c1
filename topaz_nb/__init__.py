"""topaz-nb: review Topaz Labs Image API results in Jupyter.

``%load_ext topaz_nb`` registers the ``%topaz`` magic.  The public names are
imported lazily so that loading the extension stays fast.

The package is built in layers, each a folder that imports only from the
layers below it (``docs/ARCHITECTURE.md`` draws them; ``pyproject.toml``'s
import-linter contracts check them):

* faces: ``magics``, ``panel``, ``cli``, ``settings``, ``_session``, ``_progress``;
* ``batch/``: gallery, review, shoot-out (several processes);
* ``comparison``: one process, its two sides fetched and opened;
* ``view/``: the comparison widget and its front end;
* ``imaging/``: opening, previews, tiles, pyramids, fidelity;
* ``api/`` (the Topaz API) and ``storage/`` (presigned downloads and the disk
  cache), which never import each other, over ``net/`` (retries, log scrubbing);
* the shared vocabulary: ``errors``, ``links``, ``_ids``, ``_text``, ``_tasks``,
  ``_sniff``, ``_files``, ``_version``.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__ as __version__

_ERRORS = (
    "ApiError", "AuthenticationError", "BadRequest", "Cancelled", "ImageError",
    "ImageTooLarge", "InvalidFilter", "InvalidProcessId", "LinkExpired", "MissingApiKey",
    "NotFound", "NotReady", "NotSaved", "ProcessFailed", "RateLimited", "ServerError",
    "TopazError", "TransferError", "WaitTimeout",
)

_LAZY = {
    "CompareView": "topaz_nb.view.widget",
    "Comparison": "topaz_nb.comparison",
    "Fidelity": "topaz_nb.imaging.fidelity",
    "Gallery": "topaz_nb.batch.gallery",
    "Review": "topaz_nb.batch.review",
    "Sandbox": "topaz_nb.sandbox",
    "Shootout": "topaz_nb.batch.shootout",
    "TopazClient": "topaz_nb.api.client",
    "TopazPanel": "topaz_nb.panel",
    "Transfer": "topaz_nb.storage.transfer",
    "fidelity": "topaz_nb.imaging.fidelity",
    **{name: "topaz_nb.errors" for name in _ERRORS},
}

__all__ = [
    "ApiError", "AuthenticationError", "BadRequest", "Cancelled", "CompareView", "Comparison",
    "Fidelity", "Gallery", "ImageError", "ImageTooLarge", "InvalidFilter", "InvalidProcessId",
    "LinkExpired", "MissingApiKey", "NotFound", "NotReady", "NotSaved", "ProcessFailed",
    "RateLimited", "Review", "Sandbox", "ServerError", "Shootout", "TopazClient", "TopazError",
    "TopazPanel", "Transfer", "TransferError", "WaitTimeout", "fidelity",
    "load_ipython_extension", "unload_ipython_extension",
]


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
