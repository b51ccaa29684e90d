"""Typed provider errors.

Every error names the provider, the HTTP status (``None`` when no response arrived) and the
vendor's own error code (``None`` when the vendor gave none), so an alert can say
``binance: unknown symbol (HTTP 400, code -1121)``. Messages never contain API keys or query
strings: every error scrubs the secrets registered in :mod:`.secrets` from its reason, vendor code,
``str()`` and ``args`` when it is built, whichever code built it (an error mapper quoting a
vendor message, a parser quoting a payload value).

    ProviderError
    ├── RequestRejected      the provider refused the request as made (4xx); retrying won't help
    │   ├── UnknownSymbol    the symbol or ticker does not exist at this provider
    │   └── Unauthorized     missing, invalid or unentitled credentials (401/403/451)
    │       └── MissingCredentials  the key's environment variable is not set
    ├── RateLimited          slow down (429 or an in-body throttle); ``retry_after`` in seconds
    │   ├── Banned           the IP is banned until ``retry_after`` has passed (Binance 418)
    │   └── SlotTimeout      not sent: our own limiter found no slot within its longest wait
    ├── QuotaExhausted       a daily or monthly quota is used up; retry after it rolls over
    ├── BadPayload           the answer could not be understood (malformed or unexpected body)
    └── Unavailable          server error (5xx), timeout or connection failure; transient
        ├── TimedOut         no answer within the connect or read timeout
        └── CircuitOpen      not sent: the provider's circuit breaker is open
"""

from __future__ import annotations

from fks_pipelines.providers.secrets import scrub


class ProviderError(Exception):
    """Base of all provider errors.

    Attributes:
        provider: Provider id, e.g. ``binance``.
        status: HTTP status of the answer, or ``None`` when no answer arrived.
        vendor_code: The vendor's own error code, when it sent one.
        reason: One line saying what went wrong; registered secrets are scrubbed from it.
    """

    retryable = False

    def __init__(
        self,
        provider: str,
        reason: str,
        *,
        status: int | None = None,
        vendor_code: int | str | None = None,
    ) -> None:
        self.provider = provider
        # partial_tail: mappers cut vendor text to a length, which may cut a key in half.
        self.reason = scrub(reason, partial_tail=True)
        self.status = status
        self.vendor_code = scrub(vendor_code) if isinstance(vendor_code, str) else vendor_code
        super().__init__(str(self))

    def __str__(self) -> str:
        details = []
        if self.status is not None:
            details.append(f"HTTP {self.status}")
        if self.vendor_code is not None:
            details.append(f"code {self.vendor_code}")
        suffix = f" ({', '.join(details)})" if details else ""
        # Scrubbed again: a secret registered after the error was built is hidden as well.
        return scrub(f"{self.provider}: {self.reason}{suffix}")


class RequestRejected(ProviderError):
    """The provider refused the request as made; the same request will fail again."""


class UnknownSymbol(RequestRejected):
    """The symbol does not exist at this provider."""


class Unauthorized(RequestRejected):
    """Credentials are missing, invalid, or not entitled to this data."""


class MissingCredentials(Unauthorized):
    """A provider that needs a key was used without one; names the variable to set."""

    def __init__(self, provider: str, variable: str) -> None:
        super().__init__(provider, f"no API key: set the environment variable {variable}")


class RateLimited(ProviderError):
    """The provider asked us to slow down.

    Attributes:
        retry_after: Seconds the provider asked us to wait, when it said.
    """

    retryable = True

    def __init__(self, provider: str, reason: str, *, retry_after: float | None = None, **kw):
        self.retry_after = retry_after
        super().__init__(provider, reason, **kw)


class Banned(RateLimited):
    """The provider banned this IP; no request may be sent before ``retry_after`` has passed."""

    retryable = False


class SlotTimeout(RateLimited):
    """Not sent: the local rate limiter (or a pause the provider asked for) would have made the
    request wait longer than allowed. Not a failure of the provider, and not retried."""

    retryable = False


class QuotaExhausted(ProviderError):
    """A daily or monthly quota is used up."""


class BadPayload(ProviderError):
    """The answer was not in the documented shape."""


class Unavailable(ProviderError):
    """A transient failure: server error, timeout or connection failure."""

    retryable = True


class TimedOut(Unavailable):
    """No answer arrived within the connect or read timeout."""


class CircuitOpen(Unavailable):
    """The request was not sent: the provider's circuit is open (see :mod:`.breaker`).

    Attributes:
        retry_after: Seconds until the circuit lets a probe through.
    """

    retryable = False

    def __init__(self, provider: str, reason: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(provider, reason)
