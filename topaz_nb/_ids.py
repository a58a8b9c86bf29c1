"""Process-ID validation, done before anything touches the network."""

from __future__ import annotations

import re

from .errors import InvalidProcessId

_UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.IGNORECASE)


def check_process_id(value: object) -> str:
    """Return the canonical lower-case, dashed form of a process ID, or raise.

    The API takes UUIDs only; checking here means a typo costs no request and
    the message can say what a good ID looks like.
    """
    text = value.strip() if isinstance(value, str) else ""
    if not _UUID.fullmatch(text):
        shown = repr(value) if not isinstance(value, str) else repr(text[:60])
        raise InvalidProcessId(
            f"{shown} is not a process ID: expected a UUID such as "
            "'d7b3b3b3-7b3b-4b3b-8b3b-3b3b3b3b3b3b', the process_id the API returned"
        )
    h = text.replace("-", "").lower()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
