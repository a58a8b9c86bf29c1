"""The two caches behind a view, under the name older imports use.

* :mod:`topaz_nb._decoded`: decoded full-resolution images, in memory,
  bounded in bytes (:class:`DecodedCache`).
* :mod:`topaz_nb._previews`: previews kept on disk beside downloads
  (:class:`PreviewStore`), at paths the transfer layer hands out.
"""

from __future__ import annotations

from ._decoded import DecodedCache, default_budget, image_nbytes
from ._previews import PreviewStore

__all__ = ["DecodedCache", "PreviewStore", "default_budget", "image_nbytes"]
