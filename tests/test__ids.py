"""Process IDs are checked before any request."""

from __future__ import annotations

import pytest

from topaz_nb._ids import check_process_id
from topaz_nb.errors import InvalidProcessId, TopazError

CANONICAL = "d7b3b3b3-7b3b-4b3b-8b3b-3b3b3b3b3b3b"


@pytest.mark.parametrize("text", [CANONICAL, CANONICAL.upper(), f"  {CANONICAL}\n",
                                  CANONICAL.replace("-", "")])
def test_accepts_uuids_and_canonicalises(text):
    assert check_process_id(text) == CANONICAL


@pytest.mark.parametrize("value", ["", "12345", CANONICAL[:-1], CANONICAL + "0",
                                   "g7b3b3b3-7b3b-4b3b-8b3b-3b3b3b3b3b3b", None, 42,
                                   f"{{{CANONICAL}}}", "../../etc/passwd"])
def test_rejects_everything_else_with_one_line(value):
    with pytest.raises(InvalidProcessId) as info:
        check_process_id(value)
    message = str(info.value)
    assert "not a process ID" in message and "\n" not in message
    assert isinstance(info.value, TopazError) and isinstance(info.value, ValueError)
