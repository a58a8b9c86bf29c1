"""Wording and formatting, per place: the sentences users meet most."""

from __future__ import annotations

import datetime as _dt

import pytest

from topaz_nb import _text
from topaz_nb.errors import (
    ApiError,
    AuthenticationError,
    ImageError,
    LinkExpired,
    MissingApiKey,
    NotFound,
    NotReady,
    ProcessFailed,
    TransferError,
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



@pytest.mark.parametrize(("place", "elsewhere", "writable", "again"), [
    ("python", "save into another directory", "save into another directory you can write to",
     ""),
    ("magic", "give --save another directory", "give --save another directory you can write to",
     ", then run the cell again"),
    ("cli", "give -o another directory", "give -o another directory you can write to",
     ", then run the command again"),
    ("panel", "type another directory in Save to",
     "type another directory you can write to in Save to", ", then press Save images again"),
], ids=PLACES)
def test_files_not_saved_are_one_line_each_in_the_words_of_the_place(
        place: str, elsewhere: str, writable: str, again: str) -> None:
    import errno

    from topaz_nb.errors import NotSaved

    failures: list[tuple[str, str | None, Exception]] = [
        ("the output", "/out/x-output.png", IsADirectoryError(errno.EISDIR, "Is a directory")),
        ("the input", "/out/x-input.jpg", PermissionError(errno.EACCES, "Permission denied")),
        ("the output of a.jpg", "/out/a.png", OSError(errno.ENOSPC, "No space left on device")),
        ("the output of b.jpg", None, NotFound("gone", process_id=PID)),
    ]
    err = NotSaved("…", saved={"other": "/out/o.png"}, failures=failures)
    lines = _text.say(err, place).splitlines()  # type: ignore[arg-type]
    head, sep, end = ("could not save", ";", "") if place == "cli" else ("Could not save", ":", ".")
    assert lines[:3] == [
        (f"{head} the output as '/out/x-output.png' (a directory is in the way){sep} "
         f"move it aside or {elsewhere}{again}{end}"),
        (f"{head} the input as '/out/x-input.jpg' (not allowed to write there){sep} "
         f"{writable}{again}{end}"),
        (f"{head} the output of a.jpg as '/out/a.png' (the disk is full){sep} "
         f"free some space or {elsewhere}{again}{end}"),
    ]
    assert lines[3] == f"{head} the output of b.jpg: {_text.not_found(PID, place)}"  # type: ignore[arg-type]
    assert lines[4:] == (["The other file was saved: the error's .saved lists it."]
                         if place == "python" else [])


# -- long messages and storage refusals ----------------------------------------

LONG_URL = ("https://topaz-production-images.s3.us-east-1.amazonaws.com/"
            + "/".join(f"tenant-{i:04d}-images" for i in range(20)) + "/output.png?…")


def test_a_long_message_gives_up_its_url_and_middle_never_its_advice() -> None:
    advice = "check the connection and run it again to resume"
    text = (f"download of the output of {'0b7f6c1e-2a8d-4c65-9e43-0123456789ab'} stopped at "
            f"1200 of 3400 bytes after 5 attempts ({LONG_URL}); {advice}")
    assert len(text) > 400
    shown = _text.one_line(text)
    assert len(shown) <= 300 and shown.endswith(advice)
    assert "https://topaz-production-images.s3.us-east-1.amazonaws.com/…/output.png?…" in shown
    filler = "word " * 120
    cut = _text.one_line(f"{filler}went wrong. {advice}.")
    assert len(cut) <= 300 and cut.endswith(f"… {advice}.")
    assert _text.one_line("short  and\nsimple") == "short and simple"


def test_short_url_keeps_the_host_and_the_last_part() -> None:
    assert _text.short_url("https://h.example/a/b/c.png?…", 80) == "https://h.example/a/b/c.png?…"
    assert _text.short_url(LONG_URL, 80) == \
        "https://topaz-production-images.s3.us-east-1.amazonaws.com/…/output.png?…"
    assert _text.short_url(LONG_URL, 10) == \
        "https://topaz-production-images.s3.us-east-1.amazonaws.com/…?…"
    assert _text.short_url("not a url", 3) == "not a url"


CHECKS = {"python": f"TopazClient.status({PID!r})", "magic": f"%topaz {PID} --links",
          "cli": f"topaz-nb links {PID}", "panel": "the Recent list"}


def _refused(reason: str, code: str | None, message: str | None = None, status: int = 403,
             url: str = "https://bucket.s3.amazonaws.com/p/output.png?…") -> TransferError:
    cls = TransferError if reason == "gone" else LinkExpired
    return cls("raw", reason=reason, status_code=status, storage_code=code,
               storage_message=message, method="GET", process_id=PID, side="output", url=url)


@pytest.mark.parametrize("place", ["python", "magic", "cli", "panel"])
@pytest.mark.parametrize(("reason", "code", "message", "said", "next_step"), [
    ("denied", "AccessDenied", "Access Denied", "denied access to the output of",
     "S3 says so of deleted images too (kept 7 days): check the process exists: {check}"),
    ("expired", "AccessDenied", "Request has expired",
     "as expired (HTTP 403 AccessDenied: Request has expired",
     ("run it again in a minute; if it fails again, the links reach storage already "
      "expired: report it to Topaz")),
    ("expired", "ExpiredToken", "The provided token has expired.",
     "as expired (HTTP 403 ExpiredToken", "run it again in a minute"),
    ("signature", "SignatureDoesNotMatch", "The request signature we calculated…",
     "(HTTP 403 SignatureDoesNotMatch", "the URL was changed on its way"),
    ("gone", "NoSuchKey", "The specified key does not exist.",
     "is gone from storage (HTTP 403 NoSuchKey",
     "images are kept 7 days; check whether the process still exists: {check}"),
    ("unexplained", None, None, "(HTTP 403, no reason given",
     "run it again in a minute; if it persists, check the process exists: {check}"),
    ("other", "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist.",
     "(HTTP 403 InvalidAccessKeyId: The AWS Access Key Id you provided does not exist",
     "report it to Topaz if it persists"),
])
def test_each_storage_refusal_says_what_it_is_and_what_to_do(
        place: str, reason: str, code: str | None, message: str | None, said: str,
        next_step: str) -> None:
    exc = _refused(reason, code, message)
    for text in (_text.say(exc, place), _text.storage_refused(exc, place)):
        assert said in text and "raw" not in text
        step = next_step.format(check=CHECKS[place])
        assert step in text or step[0].upper() + step[1:] in text, text
        assert "clock" not in text and "\n" not in text
        if place == "cli":
            assert text[0].islower() and not text.endswith(".") and "%topaz" not in text
        else:
            assert text[0].isupper() and text.endswith(".")
        if place != "python":
            assert "TopazClient" not in text


@pytest.mark.parametrize("place", ["python", "magic", "cli"])
@pytest.mark.parametrize("reason", ["denied", "expired", "gone", "unexplained"])
def test_a_refusal_with_a_long_url_shortens_the_url_never_the_advice(place: str,
                                                                      reason: str) -> None:
    exc = _refused(reason, None if reason == "unexplained" else "AccessDenied",
                   "Request has expired" if reason == "expired" else None, url=LONG_URL)
    text = _text.say(exc, place)
    assert len(text) <= 300 and "tenant-" not in text
    end = "report it to Topaz" if reason == "expired" else CHECKS[place]
    assert text.rstrip(".").endswith(end)
    # The URL gives way first: shortened to its host and last part, to its host, or
    # left out (the object is named anyway), while every word of the advice stays.
    host = "topaz-production-images.s3.us-east-1.amazonaws.com"
    if reason == "gone":
        assert f"https://{host}/…/output.png?…" in text
    assert "…" not in text.replace(f"https://{host}/…/output.png?…", "")


# -- joining sentences, and the reasons servers send ------------------------------

def test_joined_marks_every_boundary_once() -> None:
    assert _text.joined("One", "two") == "One. two."
    assert _text.joined("Try another model.", "It has no output") == \
        "Try another model. It has no output."
    assert _text.joined("Out of credits!", "Start again.") == "Out of credits! Start again."
    assert _text.joined("Why?", "", None, "Because;") == "Why? Because."
    assert _text.joined("cut short…", "again") == "cut short… again."
    assert _text.joined("a reason.", "next step", sep="; ", end="") == "a reason; next step"
    assert _text.joined("a reason:", "next", sep="; ", end="") == "a reason; next"
    assert _text.joined("many\n lines. ", "  more ") == "many lines. more."


_DOUBLED = ("..", ".;", ";;", ".:", ";.", ",.", "!.", "?.", ". .")


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("reason", ["The model could not process this image; try another model.",
                                    "Out of credits", "Input too small!"])
def test_a_failed_reason_ending_in_a_stop_is_not_doubled(place: str, reason: str) -> None:
    line = _text.say(ProcessFailed("x", status="Failed", process_id=PID, reason=reason),
                     place)  # type: ignore[arg-type]
    assert not any(mark in line for mark in _DOUBLED), line
    assert line.count(reason.rstrip(".")) == 1 and "no output" in line
    assert line.endswith(".") == (place != "cli")


def test_stopped_waiting_promises_no_download_to_resume() -> None:
    for place in PLACES:
        line = _text.stopped_waiting(PID, place)  # type: ignore[arg-type]
        assert PID in line and "nothing was downloaded" in line and "resume" not in line
        assert ("%topaz" in line or "--wait" in line) == (place == "magic")
    assert "wait until ready" in _text.stopped_waiting(PID, "panel")
    assert "downloads stopped" in _text.interrupted("panel")  # a fetch's Cancel still says so


@pytest.mark.parametrize("place", PLACES)
def test_listing_notes_say_what_was_left_out_and_why(place: str) -> None:
    lines = {why: _text.listing_cut(why, 100 if why == "pages" else 3, 61.0,
                                    place)  # type: ignore[arg-type]
             for why in ("cursor", "no_cursor", "pages", "time")}
    assert "sent before" in lines["cursor"] and "3 pages" in lines["cursor"]
    assert "no cursor" in lines["no_cursor"]
    assert "100 pages" in lines["pages"] and "61 s (3 pages)" in lines["time"]
    hint = {"python": "since=", "magic": "--since", "cli": "--since", "panel": None}[place]
    for why, line in lines.items():
        assert "\n" not in line and not any(mark in line for mark in _DOUBLED)
        assert "list of processes" in line
        assert (hint is not None and hint in line) == (why in ("pages", "time") and
                                                       hint is not None)
        assert ("%topaz" in line) is False
    one, three = (_text.listing_skipped(n, place) for n in (1, 3))  # type: ignore[arg-type]
    assert one.startswith("1 entry") and "was left out" in one
    assert three.startswith("3 entries") and "were left out" in three
    assert "UUID" in one and "check the ID" not in one


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
