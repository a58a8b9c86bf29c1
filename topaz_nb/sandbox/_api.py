"""The API host: the Download and Status operations of the Topaz Image API.

Answers follow ``topaz-image-api.yaml``: the same paths under ``/image/v1``,
the same ``{code, message}`` error bodies and messages, the 7-day retention,
409 for an output that is not ready.  Checks run in the order production runs
them: key, then process ID syntax, then lookup.  A missing or wrong key gets
401 with the spec's ``unauthorizedExample`` body (``{"code": 401, "message":
"Unauthorized"}``, "the API key provided is invalid or expired"); 403 is for a
key without access to an endpoint, which the sandbox's one key never lacks.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import itertools
import json
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from ._faults import Fault
from ._http import RecordedRequest, Reply, Route, header
from ._jobs import Job
from ._storage import Signer

PREFIX = "/image/v1"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
_MESSAGES = {
    400: "Invalid process ID. Please ensure it is a valid UUID.",
    401: "Unauthorized",
    403: "Forbidden",
    404: "An image with the given process ID was not found.",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "An internal server error occurred. Please try again later. If the problem "
         "persists, please contact support.",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def api_error(code: int, message: str = "") -> Reply:
    """A ``{code, message}`` JSON error, as every API error response is."""
    return _json(code, {"code": code, "message": message or _MESSAGES.get(code, "Error")})


def _json(status: int, payload: Any) -> Reply:
    body = json.dumps(payload).encode()
    return Reply(status, [("Content-Type", "application/json")], body)


def _not_ready(job: Job, now: float) -> Reply:
    status, progress, _ = job.snapshot(now)
    if status in ("Pending", "Processing"):
        return api_error(409, f"The image is not ready yet (status: {status}, {progress}%).")
    return api_error(409, f"The image has no output to download (status: {status}).")


def _encode_cursor(process_id: str, salt: int | None = None) -> str:
    """The cursor of the page after ``process_id``; ``salt`` makes a cursor never
    sent before for the same place (the ``endless`` listing fault)."""
    data: dict[str, Any] = {"process_id": process_id}
    if salt is not None:
        data["salt"] = salt
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def _decode_cursor(cursor: str) -> str | None:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode() + b"=" * (-len(cursor) % 4)))
        return str(data["process_id"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        return None


def make_api_route(*, api_key: Callable[[], str], jobs: Callable[[str], Job | None],
                   live_jobs: Callable[[float], list[Job]], signer: Signer,
                   link_ttl: Callable[[], float]) -> Route:
    """The API host's request handler, closed over the sandbox's state."""

    def download(job: Job, side: str, now: float) -> Reply:
        issued = int(now)
        expiry = int(now + link_ttl())
        path = signer.object_path(job, side)
        return _json(200, {
            "download_url": signer.sign("GET", path, issued, expiry),
            "head_url": signer.sign("HEAD", path, issued, expiry),
            "expiry": expiry,
        })

    salts = itertools.count(1)

    def all_statuses(query: dict[str, str], now: float, bend: str | None) -> Reply:
        """``GET /status``: the whole list, or one page of it; ``bend`` is a
        ``listing`` fault's mode (see ``_faults.LISTING_MODES``)."""
        paginated = query.get("paginated", "false").lower()
        if paginated not in ("true", "false"):
            return api_error(400, "Invalid query parameter: paginated must be true or false.")
        statuses = live_jobs(now)
        if paginated == "false":
            return _json(200, [j.status_json(now) for j in statuses])
        limit_text = query.get("limit", "50")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
            return api_error(400, "Invalid query parameter: limit must be an integer from 1 "
                                  "to 100.")
        limit = int(limit_text)
        start = 0
        ids = [j.process_id for j in statuses]
        if query.get("cursor"):
            after = _decode_cursor(query["cursor"])
            if after == "" and bend == "endless":  # past the end of an empty list
                start = len(ids)
            elif after is None or after not in ids:
                return api_error(400, "Invalid query parameter: cursor is not valid.")
            else:
                start = ids.index(after) + (0 if bend == "overlap" else 1)
        page = statuses[start:start + limit]
        has_next = start + limit < len(statuses)
        pagination: dict[str, Any] = {"has_next_page": has_next}
        if has_next:
            pagination["next_cursor"] = _encode_cursor(page[-1].process_id)
        if bend == "endless":
            last = page[-1].process_id if page else (ids[-1] if ids else "")
            pagination = {"has_next_page": True,
                          "next_cursor": _encode_cursor(last, salt=next(salts))}
        elif bend == "stuck_cursor":
            pagination = {"has_next_page": True, "next_cursor": query.get("cursor")
                          or _encode_cursor(page[-1].process_id if page else "")}
        data = [j.status_json(now) for j in page]
        if bend == "bad_entry":
            bad = {**(data[0] if data else {}), "process_id": "job-0042", "status": "Completed"}
            data.insert(1, bad)
        return _json(200, {"data": data, "pagination": pagination})

    def route(request: RecordedRequest, fault: Fault | None = None) -> Reply:
        path = request.path.rstrip("/") or "/"
        if not path.startswith(PREFIX + "/"):
            return api_error(404, "Not Found")
        parts = path[len(PREFIX) + 1:].split("/")
        if parts[0] == "download" and len(parts) == 3 and parts[1] == "input":
            op, pid = "input", parts[2]
        elif parts[0] == "download" and len(parts) == 2:
            op, pid = "output", parts[1]
        elif parts[0] == "status" and len(parts) == 2:
            op, pid = "status", parts[1]
        elif parts == ["status"]:
            op, pid = "all", ""
        else:
            return api_error(404, "Not Found")
        if request.method != "GET":
            reply = api_error(405)
            reply.headers.append(("Allow", "GET"))
            return reply

        sent = header(request, "X-API-Key")
        if not sent or not hmac.compare_digest(sent.encode(), api_key().encode()):
            return api_error(401)

        now = time.time()
        if op == "all":
            query = {k: v[0] for k, v in parse_qs(request.query, keep_blank_values=True).items()}
            bend = fault.params["mode"] if fault is not None and fault.kind == "listing" else None
            return all_statuses(query, now, bend)
        if not _UUID.match(pid):
            return api_error(400)
        job = jobs(pid.lower())
        if job is None or job.expired(now):
            return api_error(404)
        if op == "status":
            return _json(200, job.status_json(now))
        if op == "output":
            status, _, _ = job.snapshot(now)
            if status != "Completed" or job.output is None:
                return _not_ready(job, now)
        return download(job, op, now)

    return route
