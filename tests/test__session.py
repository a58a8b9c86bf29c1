"""The session decides where requests go; a key given to login stays in memory."""

from __future__ import annotations

import os

import pytest

from topaz_nb._session import Session
from topaz_nb.errors import MissingApiKey
from topaz_nb.settings import Topaz


def test_login_key_is_used_but_never_shown(sandbox, monkeypatch):
    monkeypatch.delenv("TOPAZ_API_KEY", raising=False)
    session = Session(Topaz(base_url=sandbox.base_url))
    with pytest.raises(MissingApiKey):
        session.client()
    session.login(f"  {sandbox.api_key}  ")
    assert session.client().status(sandbox.demo_ids[0]).status == "Completed"
    assert "TOPAZ_API_KEY" not in os.environ
    shown = repr(session) + session.describe() + repr(session.client())
    assert sandbox.api_key not in shown and "%topaz login" in session.describe()
    with pytest.raises(MissingApiKey, match="empty"):
        session.login("   ")
    session.close()


def test_environment_key_changes_are_picked_up(sandbox, monkeypatch):
    monkeypatch.setenv("TOPAZ_API_KEY", "sbx_wrong")
    session = Session(Topaz(base_url=sandbox.base_url))
    first = session.client()
    monkeypatch.setenv("TOPAZ_API_KEY", sandbox.api_key)
    second = session.client()
    assert second is not first
    assert second.status(sandbox.demo_ids[0]).done
    assert session.client() is second  # unchanged settings reuse the client
    session.close()


def test_demo_switches_to_an_in_process_sandbox_and_login_leaves_it(monkeypatch, tmp_path):
    monkeypatch.delenv("TOPAZ_API_KEY", raising=False)
    session = Session(Topaz(cache_dir=str(tmp_path)))
    sandbox = session.use_demo()
    assert session.use_demo() is sandbox and "sandbox" in session.describe()
    assert session.client().base_url == sandbox.base_url
    assert session.transfer().cache_dir == tmp_path
    session.login("some-real-key")
    assert session.sandbox is None and "sandbox" not in session.describe()
    session.close()


def test_retry_after_cap_setting_reaches_the_client(waits):
    """``%config Topaz.max_retry_after`` bounds what a server's Retry-After can make us wait."""
    session = Session(Topaz(max_retry_after=2.5))
    session.use_demo()
    try:
        box = session.sandbox
        box.inject("status", code=503, retry_after=86400, times=1)
        assert session.client().status(box.demo_ids[0]).done
        assert waits.waits == [2.5]
    finally:
        session.close()


def test_retry_after_cap_setting_reaches_the_storage_downloads(waits, tmp_path):
    session = Session(Topaz(max_retry_after=1.5, cache_dir=str(tmp_path)))
    box = session.use_demo()
    try:
        pid = box.demo_ids[0]
        source = session.client().link_source(pid, "output")
        box.inject("status", server="storage", code=503, retry_after=86400, times=1)
        assert session.transfer().head(source).size
        assert waits.waits == [1.5]
    finally:
        session.close()


def test_download_connections_setting_reaches_the_transfer(tmp_path):
    """``%config Topaz.download_connections`` sets the Range requests in flight;
    a changed value gives a new Transfer, and fewer than one is refused."""
    import pytest
    from traitlets import TraitError

    settings = Topaz(cache_dir=str(tmp_path))
    session = Session(settings)
    try:
        assert session.transfer().connections == 4
        settings.download_connections = 1
        assert session.transfer().connections == 1
        with pytest.raises(TraitError):
            settings.download_connections = 0
    finally:
        session.close()
