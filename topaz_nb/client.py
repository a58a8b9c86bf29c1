"""The former home of the API client, kept so that notebooks importing it from here
go on working.  New code imports from :mod:`topaz_nb` or :mod:`topaz_nb.api.client`."""

from .api.client import (
    DEFAULT_BASE_URL,
    RETENTION,
    STATUSES,
    Status,
    TopazClient,
    parse_since,
    parse_status,
)

__all__ = ["DEFAULT_BASE_URL", "RETENTION", "STATUSES", "Status", "TopazClient", "parse_since", "parse_status"]
