"""Webhook signatures, checked against the reference Standard Webhooks implementation."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks

from telecoder import signing
from telecoder.errors import BadInput, WebhookSignatureInvalid

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = json.dumps({"type": "session.finished", "data": {"n": 1}}).encode()


def test_what_we_sign_the_reference_verifies():
    headers = signing.headers(SECRET, "msg_1", BODY)
    assert standardwebhooks.Webhook(SECRET).verify(BODY, headers) == json.loads(BODY)


def test_what_the_reference_signs_we_verify_and_any_change_fails():
    now = datetime.now(UTC)
    signature = standardwebhooks.Webhook(SECRET).sign("msg_2", now, BODY.decode())
    headers = {
        "webhook-id": "msg_2",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    assert signing.verify_standard(SECRET, headers, BODY) == "msg_2"
    with pytest.raises(WebhookSignatureInvalid, match="does not match"):
        signing.verify_standard(SECRET, headers, BODY + b" ")
    with pytest.raises(WebhookSignatureInvalid, match="does not match"):
        signing.verify_standard(SECRET, {**headers, "webhook-id": "msg_3"}, BODY)


def test_one_of_several_signatures_is_enough():
    """A sender rotating its secret signs with both: either one verifies."""
    good = signing.headers(SECRET, "m", BODY)
    both = {**good, "webhook-signature": "v1,AAAA " + good["webhook-signature"]}
    assert signing.verify_standard(SECRET, both, BODY) == "m"


def test_a_timestamp_outside_the_tolerance_is_refused():
    old = signing.headers(SECRET, "m", BODY, now=time.time() - 301)
    with pytest.raises(WebhookSignatureInvalid, match="replay"):
        signing.verify_standard(SECRET, old, BODY)
    future = signing.headers(SECRET, "m", BODY, now=time.time() + 301)
    with pytest.raises(WebhookSignatureInvalid, match="replay"):
        signing.verify_standard(SECRET, future, BODY)
    assert signing.verify_standard(SECRET, old, BODY, tolerance=600) == "m"


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_refused(missing):
    headers = signing.headers(SECRET, "m", BODY)
    del headers[missing]
    with pytest.raises(WebhookSignatureInvalid, match="missing"):
        signing.verify_standard(SECRET, headers, BODY)


def test_hmac_sha256_with_and_without_prefix():
    digest = hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest()
    signing.verify_hmac("s3cret", digest, BODY, header="X-Sig")
    signing.verify_hmac("s3cret", f"sha256={digest.upper()}", BODY, header="X-Sig")
    with pytest.raises(WebhookSignatureInvalid, match="X-Sig"):
        signing.verify_hmac("other", digest, BODY, header="X-Sig")
    with pytest.raises(WebhookSignatureInvalid, match="missing the X-Sig"):
        signing.verify_hmac("s3cret", None, BODY, header="X-Sig")


def test_a_secret_that_is_not_base64_is_bad_input():
    with pytest.raises(BadInput, match="whsec_"):
        signing.secret_bytes("whsec_not base64!")
