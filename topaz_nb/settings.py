"""User settings, as traitlets so ``%config Topaz.preview_size = 1024`` works.

One instance per IPython shell is registered in ``shell.configurables``; the
magic, the panel and the command line all read the same object, so a setting
changed once applies everywhere in the session.
"""

from __future__ import annotations

import os
from typing import Any

from traitlets import Enum, Float, Integer, TraitError, Unicode, default, validate
from traitlets.config import Configurable

from .view.modes import DEFAULT_MODE, MODES


class _Mode(Enum):
    """An enum of :data:`MODES` that forgives case and says the way out in one line.

    traitlets' own message ("The 'mode' trait of a Topaz instance expected any
    of …") does not name the setting as the user typed it.
    """

    def validate(self, obj: Any, value: Any) -> str:
        text = value.strip().lower() if isinstance(value, str) else value
        if text in MODES:
            return str(text)
        raise TraitError(f"Topaz.mode cannot be {value!r}: use one of {', '.join(MODES)}.")


class Topaz(Configurable):
    """Settings of topaz-nb (``%config Topaz`` lists them)."""

    base_url = Unicode(
        help="Topaz Image API base URL; defaults to $TOPAZ_API_URL or the production URL."
    ).tag(config=True)
    cache_dir = Unicode(
        help="Where downloaded images are cached; defaults to $TOPAZ_NB_CACHE or the user cache dir."
    ).tag(config=True)
    preview_size = Integer(2048, help="Long side, in px, of the previews sent to the browser.").tag(
        config=True
    )
    timeout = Float(30.0, help="Seconds to wait for one API or storage response.").tag(config=True)
    max_retry_after = Float(
        60.0,
        help="Longest wait, in seconds, when the API or storage asks to retry later "
             "(Retry-After); longer requests are cut to this.",
    ).tag(config=True)
    wait_timeout = Float(600.0, help="Default seconds for --wait when none is given.").tag(config=True)
    max_workers = Integer(4, help="Processes fetched at once for a gallery.").tag(config=True)
    mode = _Mode(MODES, default_value=DEFAULT_MODE,
                help=f"Initial comparison mode: {', '.join(MODES)}.").tag(config=True)
    max_download_bytes = Integer(
        4_000_000_000,
        help="Ceiling, in bytes, on a download whose size storage does not announce; a body "
             "that runs past it is abandoned.",
    ).tag(config=True)
    cache_max_bytes = Integer(
        20_000_000_000,
        help="Bound, in bytes, on the download cache's disk use; least recently used "
             "previews and tile pyramids go first, then downloads. Files in use (a view "
             "not closed, a fetch under way, in any kernel) are never evicted: the cache "
             "goes over the bound for them (0: keep only what is in use).",
    ).tag(config=True)
    download_connections = Integer(
        4, min=1,
        help="Range requests in flight for one large download (16 MB and up, size known); "
             "one stream from object storage is capped below what the link carries "
             "(1: one stream always).",
    ).tag(config=True)
    stall_timeout = Float(
        30.0,
        help="Seconds a download may go with fewer than 64 KiB arriving before it is abandoned "
             "(what arrived is kept, so running again resumes).",
    ).tag(config=True)

    @default("base_url")
    def _default_base_url(self) -> str:
        from .api.client import DEFAULT_BASE_URL

        return os.environ.get("TOPAZ_API_URL", "").strip() or DEFAULT_BASE_URL

    @default("cache_dir")
    def _default_cache_dir(self) -> str:
        from .storage import default_cache_dir

        return str(default_cache_dir())

    @validate("preview_size")
    def _check_preview_size(self, proposal: dict) -> int:
        value = int(proposal["value"])
        if not 64 <= value <= 8192:
            from traitlets import TraitError

            raise TraitError(f"preview_size must be between 64 and 8192 px, not {value}")
        return value
