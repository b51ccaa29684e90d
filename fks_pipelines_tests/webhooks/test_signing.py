"""Webhook signatures: the HMAC over "<timestamp>.<body>", the timestamp window."""

import hashlib
import hmac

import pytest
from pydantic import SecretStr

from fks_pipelines.webhooks.signing import (
    SignatureError,
    check_timestamp,
    sign,
    signed_headers,
    verify,
)

SECRET = SecretStr("whsec-test-0123456789")
BODY = b'{"event":"ohlcv.updated"}'
NOW = 1_720_000_000


def test_the_signature_is_the_documented_hmac() -> None:
    digest = hmac.new(b"whsec-test-0123456789", b"1720000000." + BODY, hashlib.sha256)

    assert sign(SECRET, NOW, BODY) == "sha256=" + digest.hexdigest()
    assert signed_headers(SECRET, BODY, NOW) == {
        "X-FKS-Timestamp": "1720000000",
        "X-FKS-Signature": "sha256=" + digest.hexdigest(),
    }


def test_a_good_signature_passes() -> None:
    timestamp = check_timestamp(str(NOW - 299), now=NOW)

    verify(SECRET, timestamp, sign(SECRET, timestamp, BODY), BODY)


@pytest.mark.parametrize(
    ("signature", "body", "code"),
    [
        (sign(SecretStr("another secret"), NOW, BODY), BODY, "invalid_signature"),
        (sign(SECRET, NOW, BODY), BODY + b" ", "invalid_signature"),  # the body was altered
        (sign(SECRET, NOW + 1, BODY), BODY, "invalid_signature"),  # signed at another time
        (sign(SECRET, NOW, BODY).removeprefix("sha256="), BODY, "invalid_signature"),
        ("sha256=ü", BODY, "invalid_signature"),
        (None, BODY, "missing_signature"),
        ("", BODY, "missing_signature"),
    ],
)
def test_a_bad_or_missing_signature_is_refused(
    signature: str | None, body: bytes, code: str
) -> None:
    with pytest.raises(SignatureError) as refused:
        verify(SECRET, NOW, signature, body)

    assert refused.value.code == code
    assert SECRET.get_secret_value() not in refused.value.message
    assert sign(SECRET, NOW, body) not in refused.value.message


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (None, "missing_signature"),
        ("", "missing_signature"),
        (str(NOW - 301), "stale_timestamp"),
        (str(NOW + 301), "stale_timestamp"),
        ("1720000000.5", "invalid_timestamp"),
        ("-1720000000", "invalid_timestamp"),
        ("1" * 40, "invalid_timestamp"),
        ("١٧٢٠٠٠٠٠٠٠", "invalid_timestamp"),  # Arabic-Indic digits: isdigit, not ASCII
    ],
)
def test_a_missing_malformed_or_stale_timestamp_is_refused(value: str | None, code: str) -> None:
    with pytest.raises(SignatureError) as refused:
        check_timestamp(value, now=NOW)

    assert refused.value.code == code


def test_the_window_is_300_seconds_either_way() -> None:
    assert check_timestamp(str(NOW - 300), now=NOW) == NOW - 300
    assert check_timestamp(str(NOW + 300), now=NOW) == NOW + 300
