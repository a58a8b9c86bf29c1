"""Presigned links never print their signatures."""

from __future__ import annotations

import datetime as dt

from topaz_nb.links import Link, redact_url

URL = ("https://bucket.s3.amazonaws.com/p/abc/output.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
       "&X-Amz-Signature=0123456789abcdef0123456789abcdef#frag")


def test_redact_url_drops_query_fragment_and_userinfo():
    assert redact_url(URL) == "https://bucket.s3.amazonaws.com/p/abc/output.png?…"
    assert redact_url("https://user:pw@host.example/a") == "https://host.example/a"
    assert redact_url("https://host.example/a") == "https://host.example/a"
    assert redact_url("") == "" and redact_url(None) == ""


def test_link_repr_and_expiry():
    soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=120)
    link = Link("d7b3b3b3-7b3b-4b3b-8b3b-3b3b3b3b3b3b", "output", URL, URL, soon)
    shown = repr(link) + str(link)
    assert "Signature" not in shown and "output.png?…" in shown
    assert 100 < link.seconds_left <= 120 and not link.expired
    past = Link(link.process_id, "input", URL, URL, soon - dt.timedelta(hours=1))
    assert past.expired and past.seconds_left < 0
