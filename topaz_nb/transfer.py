"""The former home of the transfer layer, kept so that notebooks importing it from here
go on working.  New code imports from :mod:`topaz_nb` or :mod:`topaz_nb.storage.transfer`."""

from .storage import (
    DEFAULT_MAX_BYTES,
    DEFAULT_STALL_TIMEOUT,
    CacheEntry,
    Fetched,
    ObjectInfo,
    Transfer,
    default_cache_dir,
)

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_STALL_TIMEOUT", "CacheEntry", "Fetched", "ObjectInfo", "Transfer", "default_cache_dir"]
