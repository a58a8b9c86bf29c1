"""Tests of topaz_nb.storage.refusal: what storage's error documents say.

The documents are those S3 and Google Cloud Storage send (trimmed of request
IDs); the whole path, over real sockets, is in test_transfer.py.
"""

from __future__ import annotations

import pytest

from topaz_nb.storage.refusal import MAX_DOCUMENT, from_document

S3_EXPIRED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
              b"<Message>Request has expired</Message><X-Amz-Expires>3600</X-Amz-Expires>"
              b"<Expires>2026-10-15T02:03:37Z</Expires><ServerTime>2026-10-15T02:03:42Z"
              b"</ServerTime><RequestId>955102B1FB2</RequestId></Error>")
GCS_EXPIRED = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ExpiredToken</Code>"
               b"<Message>The provided token has expired.</Message>"
               b"<Details>Request has expired: 1760493817</Details></Error>")
S3_SIGNATURE = (b"<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we "
                b"calculated does not match the signature you provided. Check your key and "
                b"signing method.</Message><StringToSign>GET&#10;/b/k</StringToSign></Error>")


@pytest.mark.parametrize(("status", "body", "reason", "code"), [
    (403, S3_EXPIRED, "expired", "AccessDenied"),
    (400, GCS_EXPIRED, "expired", "ExpiredToken"),
    (400, (b"<Error><Code>ExpiredToken</Code><Message>The provided token has expired."
          b"</Message></Error>"), "expired", "ExpiredToken"),
    (403, b"<Error><Code>ExpiredRequest</Code><Message>x</Message></Error>", "expired",
     "ExpiredRequest"),  # Cloudflare R2
    (403, S3_SIGNATURE, "signature", "SignatureDoesNotMatch"),
    (403, b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
     "denied", "AccessDenied"),
    (403, (b"<Error><Code>AccessDenied</Code><Message>Access denied.</Message><Details>"
          b"signer@p.iam.gserviceaccount.com does not have storage.objects.get access"
          b"</Details></Error>"), "denied", "AccessDenied"),
    (404, (b"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist."
          b"</Message></Error>"), "gone", "NoSuchKey"),
    (403, b"<Error><Code>NoSuchKey</Code></Error>", "gone", "NoSuchKey"),
    (404, b"", "gone", None),
    (403, b"<html><body><h1>403 Forbidden</h1></body></html>", "unexplained", None),
    (403, b"", "unexplained", None),
    (403, (b"<Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you "
          b"provided does not exist in our records.</Message></Error>"), "other",
     "InvalidAccessKeyId"),
])
def test_the_code_decides_the_reason(status: int, body: bytes, reason: str,
                                     code: str | None) -> None:
    refusal = from_document(status, body)
    assert (refusal.status, refusal.reason, refusal.code) == (status, reason, code)


def test_the_message_is_unescaped_and_folded() -> None:
    refusal = from_document(403, b"<Error><Code>X</Code><Message>a &amp; b\n   c</Message>"
                                 b"</Error>")
    assert refusal.message == "a & b c"
    assert from_document(403, S3_EXPIRED).message == "Request has expired"


def test_only_the_start_of_a_huge_body_is_read() -> None:
    body = b"<Error>" + b" " * MAX_DOCUMENT + b"<Code>AccessDenied</Code></Error>"
    assert from_document(403, body).code is None
