"""Tests of topaz_nb.storage.refresh: one operation's link, asked for once and
refreshed at most once.  The HTTP side (a refusal by storage triggering the
refresh) is tested through ``Transfer`` in test_transfer.py."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from topaz_nb.links import Link
from topaz_nb.storage.refresh import LinkHolder

PID = "0b7f6c1e-2a8d-4c65-9e43-0123456789ab"


class Source:
    """A link source handing out numbered links, expired ones first when asked."""

    def __init__(self, expired: int = 0) -> None:
        self.calls: list[bool] = []
        self._expired = expired

    def __call__(self, refresh: bool) -> Link:
        self.calls.append(refresh)
        n = len(self.calls)
        offset = timedelta(seconds=-1) if n <= self._expired else timedelta(hours=1)
        url = f"http://storage.invalid/{PID}?sig={n}"
        return Link(PID, "output", url + "g", url + "h",
                    expiry=datetime.now(timezone.utc) + offset)


def test_the_link_is_asked_for_once_and_reused() -> None:
    source = Source()
    holder = LinkHolder(source, PID, "output")
    first = holder.current()
    assert holder.current() is first and holder.current() is first
    assert source.calls == [False] and not holder.refreshed
    assert (holder.process_id, holder.side) == (PID, "output")


def test_a_refresh_replaces_the_link_for_what_follows() -> None:
    source = Source()
    holder = LinkHolder(source)
    old = holder.current()
    fresh = holder.refresh()
    assert fresh != old and holder.current() is fresh
    assert source.calls == [False, True] and holder.refreshed


def test_a_link_expired_before_use_is_refreshed_before_use(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="topaz_nb.transfer")
    source = Source(expired=1)
    holder = LinkHolder(source, PID, "output")
    link = holder.current()
    assert not link.expired and source.calls == [False, True] and holder.refreshed
    assert any("expired before use" in r.getMessage() and r.name == "topaz_nb.transfer"
               for r in caplog.records)
    assert all("sig=" not in r.getMessage() for r in caplog.records)  # no signature logged


def test_a_refreshed_link_that_is_expired_too_is_not_refreshed_again() -> None:
    source = Source(expired=5)  # a clock far off: every link looks expired
    holder = LinkHolder(source)
    link = holder.current()
    assert link.expired and source.calls == [False, True]
    assert holder.current() is link and source.calls == [False, True]  # storage decides now



def test_parts_refused_at_once_share_one_refresh() -> None:
    """Parts of a ranged download refused with the same link: the first gets a
    fresh link, the others are told to use it, and no second refresh is spent."""
    source = Source()
    holder = LinkHolder(source)
    used = holder.current()
    assert holder.refresh_after(used) is True  # this caller fetched the fresh link
    fresh = holder.current()
    assert fresh is not used
    assert holder.refresh_after(used) is True  # another part, refused with the old one
    assert holder.current() is fresh
    assert holder.refresh_after(fresh) is False  # the fresh link refused: final
    assert source.calls == [False, True]
