"""Where this kernel's requests go: the real API or an in-process sandbox.

The magic, the panel and the gallery share one session, so ``%topaz demo`` or
``%topaz login`` applies to all of them.  The key given to ``login`` lives in
this object's memory only: it is never written to the environment, a file or
a widget.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from .settings import Topaz

if TYPE_CHECKING:
    from .api.client import TopazClient
    from .sandbox import Sandbox
    from .storage import Transfer


class Session:
    """The API connection, transfer cache and optional sandbox of one kernel."""

    def __init__(self, settings: Topaz | None = None) -> None:
        self.settings = settings or Topaz()
        self._lock = threading.RLock()
        self._api_key: str | None = None
        self._sandbox: Sandbox | None = None
        self._client: TopazClient | None = None
        self._client_args: tuple | None = None
        self._transfers: dict[tuple[str, bool, int, float, float, int, int], Transfer] = {}

    def __repr__(self) -> str:
        return f"<Session {self.describe()}>"

    @property
    def sandbox(self) -> Sandbox | None:
        return self._sandbox

    @property
    def logged_in(self) -> bool:
        """Whether a key was given to :meth:`login` (it wins over ``TOPAZ_API_KEY``)."""
        return self._api_key is not None

    def login(self, api_key: str) -> None:
        """Use ``api_key`` for the real API from now on (kept in memory only)."""
        key = api_key.strip()
        if not key:
            from .errors import MissingApiKey

            raise MissingApiKey("The API key was empty: paste the key from your Topaz account.")
        with self._lock:
            self._api_key = key
            self._stop_sandbox()
            self._client = None

    def use_demo(self) -> Sandbox:
        """Switch to an in-process sandbox seeded with demo jobs (started once)."""
        from .sandbox import Sandbox

        with self._lock:
            if self._sandbox is None:
                self._sandbox = Sandbox().start()
            self._client = None
            return self._sandbox

    def _stop_sandbox(self) -> None:
        if self._sandbox is not None:
            self._sandbox.stop()
            self._sandbox = None

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            for transfer in self._transfers.values():
                transfer.close()
            self._transfers.clear()
            self._stop_sandbox()

    def describe(self) -> str:
        """Where requests go, in words safe to print (never the key)."""
        if self._sandbox is not None:
            return f"the local sandbox at {self._sandbox.base_url}"
        source = "%topaz login" if self._api_key else (
            "TOPAZ_API_KEY" if os.environ.get("TOPAZ_API_KEY") else "no key")
        return f"{self.settings.base_url} (key: {source})"

    def client(self) -> TopazClient:
        """The API client for the current target, rebuilt when a setting changed."""
        from .api.client import TopazClient

        with self._lock:
            key: str | None
            if self._sandbox is not None:
                key, url = self._sandbox.api_key, self._sandbox.base_url
            else:
                # Read the environment each time, so a key set after the kernel started
                # takes effect (the magic warns when a cell gave that key away).
                key = self._api_key or os.environ.get("TOPAZ_API_KEY", "").strip() or None
                url = self.settings.base_url
            args = (key, url, self.settings.timeout, self.settings.max_retry_after)
            if self._client is None or self._client_args != args:
                if self._client is not None:
                    self._client.close()
                self._client = TopazClient(api_key=key, base_url=url, timeout=self.settings.timeout,
                                           max_retry_after=self.settings.max_retry_after)
                self._client_args = args
            return self._client

    def transfer(self, *, use_cache: bool = True) -> Transfer:
        """The presigned-object downloader for the configured cache dir, ceiling
        (``Topaz.max_download_bytes``), stall limit (``Topaz.stall_timeout``),
        Range requests in flight (``Topaz.download_connections``) and disk bound (``Topaz.cache_max_bytes``); a changed setting gives a
        new one."""
        from .storage import Transfer

        with self._lock:
            s = self.settings
            key = (s.cache_dir, use_cache, s.max_download_bytes, s.stall_timeout,
                   s.max_retry_after, s.cache_max_bytes, s.download_connections)
            if key not in self._transfers:
                self._transfers[key] = Transfer(
                    s.cache_dir, use_cache=use_cache, timeout=max(s.timeout, 60.0),
                    max_bytes=s.max_download_bytes, stall_timeout=s.stall_timeout,
                    max_retry_after=s.max_retry_after, cache_max_bytes=s.cache_max_bytes,
                    connections=max(1, s.download_connections),
                )
            return self._transfers[key]


_default: Session | None = None
_default_lock = threading.Lock()


def default_session() -> Session:
    """The process-wide session, made on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Session()
        return _default


def set_default_session(session: Session) -> None:
    """Make ``session`` the one the panel and gallery use (the magic does this)."""
    global _default
    with _default_lock:
        _default = session
