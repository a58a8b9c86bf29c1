"""Wording and formatting, per place: the sentences users meet most."""

from __future__ import annotations

import datetime as _dt

import pytest

from topaz_nb import _text
from topaz_nb.errors import (
    ApiError,
    AuthenticationError,
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


@pytest.mark.parametrize("place", PLACES)
def test_no_key_and_wrong_key_never_say_to_type_the_key_into_a_cell(place: str) -> None:
    wrong = AuthenticationError("x", status_code=401, server_message="Invalid API key")
    for line in (_text.say(MissingApiKey(), place),  # type: ignore[arg-type]
                 _text.say(wrong, place)):  # type: ignore[arg-type]
        assert "%env" not in line and "api_key=..." not in line
        if place in ("magic", "panel"):
            assert "before starting Jupyter" in line


def test_key_in_notebook_is_one_line_naming_the_cells_and_the_way_out() -> None:
    both = _text.key_in_notebook([3], in_source=True, printed=True)
    assert "\n" not in both and "source and output of cell [3]" in both
    assert "remove the key from it and clear the output" in both and "%topaz login" in both
    typed = _text.key_in_notebook([2, 5], in_source=True, printed=False)
    assert "source of cells [2], [5]" in typed and "remove the key from them" in typed
    assert "output" not in typed
    shown = _text.key_in_notebook([4], in_source=False, printed=True)
    assert "output of cell [4]" in shown and "clear its output" in shown
    assert "source" not in shown and "remove the key" not in shown
