"""Presigned objects and the disk cache: HEAD and GET against object storage
(streaming, resume, integrity checks, link refresh through a ``LinkSource``),
the cache layout and its locks, and the cache's disk bound.

May import: ``net`` and the shared vocabulary.  Never imports ``api`` (it
never sees the API key) nor anything above it.

Modules, each importing only those listed after it:

* ``transfer``: :class:`Transfer`, the facade users construct, and
  :class:`Fetched`;
* ``budget``: the cache's disk bound, least recently used first;
* ``download``: HTTP HEAD/GET, streaming into a ``.part``, resume and checks;
  :class:`ObjectInfo`;
* ``arrival``: a download's bytes handed on in order as they land (:class:`Arrival`);
* ``refresh``: one operation's link, refreshed at most once;
* ``refusal``: why storage refused a request, from its XML error ``Code``;
* ``cache``: the layout (:class:`CacheEntry`), sidecars, locks, pins (:class:`Pin`),
  sweeping.

``DEFAULT_MAX_BYTES`` here is the ceiling on a download of unknown size
(``Topaz.max_download_bytes``); the cache's own bound is
``budget.DEFAULT_MAX_BYTES`` (``Topaz.cache_max_bytes``).
"""

from .arrival import Arrival
from .cache import CacheEntry, Pin, default_cache_dir
from .download import DEFAULT_MAX_BYTES, DEFAULT_STALL_TIMEOUT, ObjectInfo
from .transfer import Fetched, Transfer

__all__ = [
    "DEFAULT_MAX_BYTES", "DEFAULT_STALL_TIMEOUT", "Arrival", "CacheEntry", "Fetched", "ObjectInfo", "Pin",
    "Transfer", "default_cache_dir",
]
