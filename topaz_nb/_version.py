"""The package version, in a leaf module.

The bottom layers (``client``, ``transfer``) put it in their User-Agent; taking
it from here instead of the package root keeps them from importing the module
that also loads the ``%topaz`` magic.
"""

from __future__ import annotations

__version__ = "0.1.0"


def user_agent() -> str:
    """``topaz-nb/<version> python-requests/<version>``: what both hosts see us as."""
    import requests

    return f"topaz-nb/{__version__} {requests.utils.default_user_agent()}"
