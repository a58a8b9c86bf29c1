"""The storage host: presigned URLs, and the server that honours them.

URLs look like S3 query-string-signed URLs (``X-Amz-Date``, ``X-Amz-Expires``,
``X-Amz-Signature``...).  The signature is an HMAC-SHA256 over the method,
the object path, the issue time and the lifetime, with a secret only this
sandbox knows, so a URL signed for HEAD cannot be used for GET, and any edit
to its path or expiry is refused like S3 refuses it.  This host never looks at
``X-API-Key``: a client that sends it here is leaking it, and the request log
shows that.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timezone
from html import escape
from urllib.parse import parse_qs, quote, urlencode

from ._faults import Fault
from ._http import RecordedRequest, Reply, Route, header
from ._jobs import Job, StoredObject

BUCKET = "topaz-sandbox-images"
_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_PATH = re.compile(rf"^/{BUCKET}/([0-9a-f-]{{36}})/(input|output)\.[a-z]+$")
_BARE_PATH = re.compile(rf"^/{BUCKET}/(input|output)/([0-9a-f-]{{36}})$")

STORAGE_PROFILES = ("s3", "bare")
"""How much the storage host tells about an object.

``s3`` answers like S3: ETag (the MD5 of a single-part object), Last-Modified,
Content-Length and an ``image/*`` Content-Type, under a path ending in
``output.png``.  ``bare`` answers with what the Topaz API actually promises,
which is nothing: no ETag, no Last-Modified, chunked bodies with no
Content-Length (not even on HEAD), ``application/octet-stream``, under a path
ending in the bare UUID.  Clients must work against both.
"""
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

_S3_CODES = {400: "InvalidRequest", 403: "AccessDenied", 404: "NoSuchKey",
             405: "MethodNotAllowed", 416: "InvalidRange", 500: "InternalError",
             503: "SlowDown"}
_S3_MESSAGES = {400: "Invalid request.", 403: "Access Denied",
                404: "The specified key does not exist.",
                405: "The specified method is not allowed against this resource.",
                416: "The requested range is not satisfiable",
                500: "We encountered an internal error. Please try again.",
                503: "Please reduce your request rate."}


_DOCUMENT_MESSAGES = {
    "s3": {"AccessDenied": "Access Denied",
           "ExpiredToken": "The provided token has expired.",
           "SignatureDoesNotMatch": "The request signature we calculated does not match the "
                                    "signature you provided. Check your key and signing method.",
           "NoSuchKey": "The specified key does not exist."},
    "gcs": {"AccessDenied": "Access denied.",
            "ExpiredToken": "The provided token has expired.",
            "SignatureDoesNotMatch": "The request signature we calculated does not match the "
                                     "signature you provided. Check your Google secret key and "
                                     "signing method.",
            "NoSuchKey": "The specified key does not exist."},
}
_GCS_DETAILS = {
    "AccessDenied": "sandbox-signer@topaz-sandbox.iam.gserviceaccount.com does not have "
                    "storage.objects.get access to the Google Cloud Storage object.",
    "ExpiredToken": "Request has expired: {now}",
}


def _xml(text: str) -> str:
    return escape(text, quote=False)


def storage_error(code: int, message: str = "", s3_code: str | None = None, *,
                  dialect: str = "s3") -> Reply:
    """An error document as object storage sends it.

    ``dialect`` is ``"s3"`` (S3's ``<Error><Code>…`` with a RequestId),
    ``"gcs"`` (Google Cloud Storage's XML API, with ``<Details>``) or
    ``"none"``: an HTML page with no error code, as a proxy or CDN in front
    of the storage answers.  ``s3_code`` is the document's ``Code``.
    """
    if dialect == "none":
        page = (f"<html><head><title>{code} Forbidden</title></head><body><h1>{code} "
                "Forbidden</h1></body></html>" if code == 403 else
                f"<html><body><h1>Error {code}</h1></body></html>")
        return Reply(code, [("Content-Type", "text/html")], page.encode())
    if code == 403 and message == "expired":
        message = "Request has expired"
    s3_code = s3_code or _S3_CODES.get(code, "ServiceUnavailable" if code >= 500 else "Error")
    message = message or _DOCUMENT_MESSAGES.get(dialect, {}).get(s3_code) \
        or _S3_MESSAGES.get(code, "Error")
    if dialect == "gcs":
        details = _GCS_DETAILS.get(s3_code, "").format(now=int(time.time()))
        body = ("<?xml version='1.0' encoding='UTF-8'?>"
                f"<Error><Code>{_xml(s3_code)}</Code><Message>{_xml(message)}</Message>"
                + (f"<Details>{_xml(details)}</Details>" if details else "")
                + "</Error>").encode()
    else:
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{_xml(s3_code)}</Code><Message>{_xml(message)}</Message>"
                f"<RequestId>{secrets.token_hex(8).upper()}"
                "</RequestId></Error>").encode()
    return Reply(code, [("Content-Type", "application/xml")], body)


class Signer:
    """Issues and checks presigned URLs for one sandbox's storage host."""

    def __init__(self, secret: bytes, profile: str = "s3") -> None:
        if profile not in STORAGE_PROFILES:
            raise ValueError(f"storage_profile must be one of {', '.join(STORAGE_PROFILES)}, "
                             f"not {profile!r}")
        self._secret = secret
        self.profile = profile
        self.base_url = ""

    def object_path(self, job: Job, side: str) -> str:
        obj = job.input if side == "input" else job.output
        assert obj is not None
        if self.profile == "bare":
            return f"/{BUCKET}/{side}/{job.process_id}"
        return f"/{BUCKET}/{job.process_id}/{side}.{obj.extension}"

    def _signature(self, method: str, path: str, date: str, expires: str) -> str:
        message = f"{method}\n{path}\n{date}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def sign(self, method: str, path: str, issued: int, expiry: int) -> str:
        date = datetime.fromtimestamp(issued, timezone.utc).strftime(_DATE_FORMAT)
        expires = str(expiry - issued)
        query = urlencode({
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"SBXSANDBOXKEY/{date[:8]}/us-east-1/s3/aws4_request",
            "X-Amz-Date": date,
            "X-Amz-Expires": expires,
            "X-Amz-SignedHeaders": "host",
            "X-Amz-Signature": self._signature(method, path, date, expires),
        }, quote_via=quote)
        return f"{self.base_url}{path}?{query}"

    def check(self, method: str, path: str, query: str, now: float) -> Reply | None:
        """``None`` when the URL is good for this method now, else the 403 to send."""
        params = {k: v[0] for k, v in parse_qs(query).items()}
        date, expires, signature = (params.get("X-Amz-Date"), params.get("X-Amz-Expires"),
                                    params.get("X-Amz-Signature"))
        if not (date and expires and signature):
            return storage_error(403, "Query-string authentication requires the "
                                 "X-Amz-Signature, X-Amz-Date and X-Amz-Expires parameters")
        expected = self._signature(method, path, date, expires)
        if not hmac.compare_digest(expected, signature):
            return storage_error(
                403, "The request signature we calculated does not match the signature you "
                "provided. Check your key and signing method.", "SignatureDoesNotMatch")
        try:
            issued = datetime.strptime(date, _DATE_FORMAT).replace(tzinfo=timezone.utc)
            expiry = issued.timestamp() + int(expires)
        except ValueError:
            return storage_error(403, "X-Amz-Date or X-Amz-Expires is malformed")
        if now >= expiry:
            return storage_error(403, "Request has expired")
        return None


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """``(start, end_inclusive)``, ``None`` for the whole object, or ``"unsatisfiable"``."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        return None  # malformed or multi-range: answer the whole object, as RFC 9110 allows
    first, last = match.groups()
    if first == "":
        length = int(last)
        if length == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or (last != "" and int(last) < start):
        return "unsatisfiable"
    return start, end


def _object_headers(obj: StoredObject, profile: str) -> list[tuple[str, str]]:
    if profile == "bare":
        return [("Content-Type", "application/octet-stream"), ("Accept-Ranges", "bytes"),
                ("Transfer-Encoding", "chunked")]
    return [("Content-Type", obj.content_type), ("ETag", obj.etag),
            ("Last-Modified", obj.last_modified), ("Accept-Ranges", "bytes"),
            ("x-amz-server-side-encryption", "AES256")]


def _match(path: str) -> tuple[str, str] | None:
    """``(process id, side)`` of an object path of either profile."""
    s3 = _PATH.match(path)
    if s3:
        return s3.group(1), s3.group(2)
    bare = _BARE_PATH.match(path)
    return (bare.group(2), bare.group(1)) if bare else None


def make_storage_route(signer: Signer, lookup: Callable[[str], Job | None]) -> Route:
    """The storage host's request handler, closed over the sandbox's jobs."""

    def route(request: RecordedRequest, fault: Fault | None = None) -> Reply:
        if request.method not in ("GET", "HEAD"):
            return storage_error(405)
        denied = signer.check(request.method, request.path, request.query, time.time())
        if denied is not None:
            return denied
        match = _match(request.path)
        job = lookup(match[0]) if match else None
        if match is None or job is None or job.expired(time.time()):
            return storage_error(404)
        obj = job.input if match[1] == "input" else job.output
        if obj is None or request.path != signer.object_path(job, match[1]):
            return storage_error(404)
        headers = _object_headers(obj, signer.profile)
        if fault is not None and fault.kind == "change_etag":  # the object was replaced
            headers = [(n, v) for n, v in headers if n != "ETag"]
            headers.append(("ETag", str(fault.params.get("etag") or '"0-replaced"')))
        rng = _byte_range(header(request, "Range"), obj.size)
        if fault is not None and fault.kind == "ignore_range":
            rng = None  # storage that does not do ranges: the whole object, 200
        if_range = header(request, "If-Range")
        validators = (obj.etag, obj.last_modified) if signer.profile == "s3" else ()
        if if_range is not None and if_range not in validators:
            rng = None  # the object changed since the client's partial copy: send it all
        if isinstance(rng, str):  # "unsatisfiable"
            reply = storage_error(416)
            reply.headers.append(("Content-Range", f"bytes */{obj.size}"))
            return reply
        view = memoryview(obj.data)
        if rng is None:
            return Reply(200, headers, view)
        start, end = rng
        headers.append(("Content-Range", f"bytes {start}-{end}/{obj.size}"))
        return Reply(206, headers, view[start:end + 1])

    return route
