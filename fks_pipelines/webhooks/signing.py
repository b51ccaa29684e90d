"""Webhook signatures: HMAC-SHA256 of ``"<timestamp>.<raw body>"`` with the shared secret.

A sender puts the unix time in seconds in ``X-FKS-Timestamp`` and
``sha256=<hex digest>`` in ``X-FKS-Signature``. Signing the timestamp with the body lets the
receiver refuse a captured request replayed later (more than :data:`TOLERANCE_S` away from its
clock); within that window a replay is the same event and is de-duplicated by the store.

Errors never quote the secret or the expected digest.
"""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr

TIMESTAMP_HEADER = "X-FKS-Timestamp"
SIGNATURE_HEADER = "X-FKS-Signature"
SCHEME = "sha256="
TOLERANCE_S = 300


class SignatureError(Exception):
    """A request is not signed, or not signed with the secret; ``code`` names which check."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def sign(secret: SecretStr | str, timestamp: int, body: bytes) -> str:
    """The ``X-FKS-Signature`` value of ``body`` sent at ``timestamp`` (unix seconds)."""
    key = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    digest = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return SCHEME + digest.hexdigest()


def signed_headers(secret: SecretStr | str, body: bytes, timestamp: int) -> dict[str, str]:
    """The two headers a sender adds to ``body``."""
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body)}


def check_timestamp(value: str | None, now: float, tolerance_s: float = TOLERANCE_S) -> int:
    """The signed timestamp, if present, an integer and within ``tolerance_s`` of ``now``.

    Checked before the body is read: a stale request is refused without reading a megabyte.

    Raises:
        SignatureError: Missing, not an integer, or too far from ``now``.
    """
    if not value:
        raise SignatureError("missing_signature", f"the {TIMESTAMP_HEADER} header is missing")
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        raise SignatureError(
            "invalid_timestamp", f"{TIMESTAMP_HEADER} must be unix time in whole seconds"
        )
    timestamp = int(value)
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(
            "stale_timestamp",
            f"{TIMESTAMP_HEADER} is more than {tolerance_s:g} s away from the receiver's clock",
        )
    return timestamp


def verify(secret: SecretStr, timestamp: int, signature: str | None, body: bytes) -> None:
    """Check ``signature`` against ``body`` and the (already checked) ``timestamp``.

    Raises:
        SignatureError: Missing, not of the ``sha256=<hex>`` form, or not matching.
    """
    if not signature:
        raise SignatureError("missing_signature", f"the {SIGNATURE_HEADER} header is missing")
    expected = sign(secret, timestamp, body)
    # Compared as bytes: compare_digest refuses str with non-ASCII characters.
    if not hmac.compare_digest(signature.encode(errors="replace"), expected.encode()):
        raise SignatureError(
            "invalid_signature",
            f"{SIGNATURE_HEADER} does not match the body and timestamp "
            f"(expected {SCHEME}<hex HMAC-SHA256 of '<timestamp>.<body>'>)",
        )
