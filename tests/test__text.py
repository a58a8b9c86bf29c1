"""Wording and formatting, per place: the sentences users meet most."""

from __future__ import annotations

import datetime as _dt

import pytest

from topaz_nb import _text
from topaz_nb.errors import (
    ApiError,
    AuthenticationError,
    ImageError,
    MissingApiKey,
    NotFound,
    NotReady,
    ProcessFailed,
)

PID = "1b2c3d4e-0000-4000-8000-000000000001"
PLACES = ("python", "magic", "cli", "panel")


def _soon() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=30)


def test_byte_sizes_are_decimal() -> None:
    assert _text.byte_size(950) == "950 B"
    assert _text.byte_size(2_200) == "2.2 kB"
    assert _text.byte_size(10_000_000) == "10.0 MB"
    assert _text.byte_size(1_200_000_000) == "1.20 GB"


@pytest.mark.parametrize("place", PLACES)
def test_no_key(place: str) -> None:
    line = _text.say(MissingApiKey(), place)  # type: ignore[arg-type]
    assert "\n" not in line and "TOPAZ_API_KEY" in line
    assert ("api_key=" in line) == (place == "python")
    assert ("%topaz" in line) == (place == "magic")
    if place == "magic":
        assert "%topaz demo" in _text.say(MissingApiKey(), "magic")
    # A raiser's own, more specific words are kept.
    specific = MissingApiKey("The API key was empty.")
    assert _text.say(specific, place) == "The API key was empty."  # type: ignore[arg-type]


@pytest.mark.parametrize("place", PLACES)
def test_not_ready(place: str) -> None:
    exc = NotReady("x", status="Processing", progress=42, eta=_soon(), process_id=PID)
    line = _text.say(exc, place)  # type: ignore[arg-type]
    assert PID in line and "Processing, 42%, ETA" in line and "not ready" in line
    assert ("%topaz" in line) == (place == "magic")
    assert ("--wait" in line) == (place in ("magic", "cli"))
    assert ("TopazClient.wait" in line) == (place == "python")
    assert ("wait until ready" in line) == (place == "panel")


@pytest.mark.parametrize("place", PLACES)
def test_failed_with_a_reason_never_says_wait(place: str) -> None:
    for exc in (NotReady("x", status="Failed", progress=0, eta=_soon(), process_id=PID,
                         reason="Out of\ncredits"),
                ProcessFailed("x", status="Failed", process_id=PID, reason="Out of\ncredits")):
        line = _text.say(exc, place)  # type: ignore[arg-type]
        assert f"{PID} failed: Out of credits" in line
        assert "wait" not in line.lower() and "not ready" not in line and "ETA" not in line
        assert "%topaz" not in line and "\n" not in line
    cancelled = NotReady("x", status="Cancelled", process_id=PID)
    assert "was cancelled" in _text.say(cancelled, place)  # type: ignore[arg-type]


@pytest.mark.parametrize("place", PLACES)
def test_not_found(place: str) -> None:
    line = _text.say(NotFound("x", process_id=PID), place)  # type: ignore[arg-type]
    assert PID in line and "not found" in line and "7-day" in line
    assert ("TopazClient.statuses()" in line) == (place == "python")
    assert "%topaz" not in line


@pytest.mark.parametrize("place", ("magic", "cli", "panel"))
def test_wrong_key(place: str) -> None:
    exc = AuthenticationError("The Topaz API refused (401); check the key: pass api_key=..., "
                              "or run %topaz login", status_code=401,
                              server_message="Invalid API key")
    line = _text.say(exc, place)  # type: ignore[arg-type]
    assert "refused the key (401 Invalid API key)" in line and "api_key=" not in line
    assert ("%topaz" in line) == (place == "magic")



def test_html_table_escapes_and_has_no_links() -> None:
    page = _text.html_table([("<b>", "http://h/p?…", None)], header=("a", "b", "c"),
                            caption="<cap>", row_headers=True)
    assert "&lt;b&gt;" in page and "<b>" not in page
    assert "&lt;cap&gt;" in page and "<a " not in page and "<td " in page and "<th " in page


@pytest.mark.parametrize("place, setting", [("python", "base_url="),
                                            ("magic", "%config Topaz.base_url"),
                                            ("cli", "--api-url"), ("panel", "TOPAZ_API_URL")])
def test_address_problems_name_the_setting_of_the_place(place: str, setting: str) -> None:
    from topaz_nb.errors import ServerError

    unreachable = ServerError("x", status_code=None)
    unreachable.address_problem = "Could not reach the Topaz API at api.example"
    odd = ApiError("x", status_code=200)
    odd.address_problem = "The Topaz API at api.example sent something that is not JSON"
    for exc in (unreachable, odd):
        line = _text.say(exc, place)  # type: ignore[arg-type]
        assert line.startswith(exc.address_problem) and setting in line
        assert ("network" in line) == (exc is unreachable)
    others = {"base_url=", "%config Topaz.base_url", "--api-url"} - {setting}
    assert not any(word in _text.say(odd, place) for word in others)  # type: ignore[arg-type]


def test_fidelity_scores_and_why_there_are_none() -> None:
    assert _text.psnr_text(31.25) == "31.2 dB" and _text.psnr_text(float("inf")) == "identical"
    assert _text.psnr_text(None) == "—" and _text.ssim_text(None) == "—"
    assert _text.ssim_text(0.98765) == "0.988"
    assert _text.fidelity_no_overlap((1000, 2), (2, 1000), True) == (
        "not computed: the 2×1000 output (cropped to fill) covers no whole pixel of the "
        "1000×2 input")
    assert "(fitted)" in _text.fidelity_no_overlap((5, 5), (1, 1), None)
    line = _text.fidelity_failed(ImageError("output is truncated or corrupt (broken PNG); "
                                            "download it again"))
    assert line == "not computed: output is truncated or corrupt (broken PNG); download it again"
