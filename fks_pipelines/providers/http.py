"""The one HTTP helper every provider uses.

It owns, for every request: the circuit breaker, quotas, the rate limiter, connect/read
timeouts, the server's word on pacing (``Retry-After``, used-weight and remaining-request
headers), retries with exponential backoff and jitter (tenacity), the mapping of error answers
to typed errors, and the accounting reported as materialisation metadata. A provider supplies
only how to read its error answers and, optionally, its pacing headers.

Secrets: every credential a session sends (the values of its credential headers, the bearer token
of an ``Authorization`` header, every ``auth_params`` value) is registered in :mod:`.secrets` when
the session is built, so that no error (whoever built it) and no log record of the process can
quote it; providers need not, and do not, pass their key to their error mappers.

Answers are JSON (:meth:`ProviderHttp.get_json`); :meth:`ProviderHttp.get` also gives the
server's ``Date``, for a provider whose answer does not say when its price was true.
"""

from __future__ import annotations

import email.utils
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import pandas as pd
import tenacity

from fks_pipelines.providers import secrets
from fks_pipelines.providers.errors import (
    BadPayload,
    Banned,
    CircuitOpen,
    ProviderError,
    RateLimited,
    SlotTimeout,
    TimedOut,
    Unavailable,
)

if TYPE_CHECKING:
    # httpx, and the rich and pygments its command line pulls in, take ~0.05 s to import. Every
    # provider module imports this one, and loading the code location sends no request: httpx is
    # imported where a client is built or a request is sent.
    import httpx

    from fks_pipelines.providers.runtime import ProviderRuntime

log = logging.getLogger(__name__)

ErrorMapper = Callable[["httpx.Response", Any], ProviderError]
"""Turns an error answer (status >= 400) and its decoded body (``None`` if not JSON) into an
error."""


BodyCheck = Callable[[Any], ProviderError | None]
"""Finds an error reported inside a successful (2xx) answer's decoded body, if any."""

Pacing = Callable[["httpx.Response"], float | None]
"""Reads a provider's pacing headers; returns seconds every process should hold off, if any."""

_CREDENTIAL_HEADER = re.compile(r"authorization|api[-_]?key|token|secret|password", re.IGNORECASE)
"""Header names whose values are credentials (``Authorization``, ``X-CMC_PRO_API_KEY``,
``x-cg-demo-api-key``, ``X-MBX-APIKEY``, ...)."""
_AUTH_SCHEMES = ("bearer", "token", "basic")


@dataclass
class RequestStats:
    """What a client did; reported as materialisation metadata."""

    requests: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    retries: int = 0
    limiter_wait_s: float = 0.0
    bytes_received: int = 0
    errors: int = 0

    def as_metadata(self) -> dict[str, int | float]:
        return {
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "retries": self.retries,
            "limiter_wait_s": round(self.limiter_wait_s, 3),
            "bytes_received": self.bytes_received,
            "upstream_errors": self.errors,
        }


@dataclass(frozen=True)
class Answer:
    """A successful answer: its decoded JSON body and when the server says it made it.

    Attributes:
        body: The decoded JSON body.
        date: The ``Date`` header as an aware UTC datetime; ``None`` when absent or malformed.
    """

    body: Any
    date: datetime | None = None

    def made_at(self, now: pd.Timestamp) -> pd.Timestamp:
        """When the answer was made: its ``Date`` when that parses and is not after ``now`` (the
        client's clock as it arrived), else ``now``. A ``Date`` in the past is kept: a cached
        answer was made then."""
        if self.date is None:
            return now
        return min(pd.Timestamp(self.date), now)


@dataclass(frozen=True)
class Timeouts:
    """Connect and read timeouts in seconds; both reach every request."""

    connect: float = 5.0
    read: float = 30.0

    def as_httpx(self) -> httpx.Timeout:
        import httpx  # see the imports at the top

        return httpx.Timeout(self.read, connect=self.connect)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def decode_json(response: httpx.Response) -> Any:
    """The decoded JSON body, or ``None`` when the body is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP ``Date`` header as an aware UTC datetime, or ``None`` when absent or malformed."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": the zone is unknown; HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def register_credentials(
    headers: Mapping[str, str] | None, auth_params: Mapping[str, str] | None
) -> None:
    """Register the credentials among ``headers`` and every ``auth_params`` value as secrets."""
    for name, value in (headers or {}).items():
        if not value or not _CREDENTIAL_HEADER.search(name):
            continue
        secrets.register(value)
        scheme, _, credential = value.partition(" ")
        if credential.strip() and scheme.lower() in _AUTH_SCHEMES:
            secrets.register(credential.strip())
    for value in (auth_params or {}).values():
        secrets.register(value)


def remaining_requests_pacing(response: httpx.Response) -> float | None:
    """``X-RateLimit-Remaining: 0``: hold off until ``Retry-After``, else the next minute."""
    if response.headers.get("X-RateLimit-Remaining") != "0":
        return None
    return parse_retry_after(response.headers.get("Retry-After")) or 60 - time.time() % 60


class ProviderHttp:
    """An HTTP session bound to one provider and its runtime.

    Args:
        provider: Provider id used in errors and logs.
        base_url: Base URL of the provider's REST API.
        map_error: Maps an error answer to a typed :class:`ProviderError`.
        runtime: Limiter, breaker, cache and policies shared by the provider's clients.
        headers: Default headers (e.g. an API key header). Values of credential headers
            (names with ``authorization``, ``api-key``, ``token``, ``secret``) are registered as
            secrets, so they reach no log or error.
        auth_params: Query parameters carrying credentials, for providers that accept no header
            (Alpha Vantage ``apikey``, EODHD ``api_token``). Added when a request is sent, so
            they reach no cache key; registered as secrets, so they reach no log or error.
        pacing: Reads the provider's pacing headers (default: ``X-RateLimit-Remaining``).
        check_body: Finds errors a provider reports with HTTP 200 (Alpha Vantage ``Note``,
            CoinMarketCap ``status.error_code``); they are retried and counted like the same
            error with its own status code.
        transport: An httpx transport, for tests that replace the network.
        sleep: How to wait between attempts (tests pass a recorder).
    """

    def __init__(
        self,
        provider: str,
        base_url: str,
        map_error: ErrorMapper,
        runtime: ProviderRuntime,
        *,
        headers: Mapping[str, str] | None = None,
        auth_params: Mapping[str, str] | None = None,
        pacing: Pacing = remaining_requests_pacing,
        check_body: BodyCheck | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.provider = provider
        self.runtime = runtime
        self.stats = RequestStats()
        self._map_error = map_error
        self._auth_params = dict(auth_params or {})
        register_credentials(headers, self._auth_params)
        self._pacing = pacing
        self._check_body = check_body
        self._sleep = sleep
        import httpx  # see the imports at the top

        self._client = httpx.Client(
            base_url=base_url,
            timeout=runtime.config.timeouts.as_httpx(),
            headers=dict(headers or {}),
            transport=transport,
            follow_redirects=False,
        )

    def get_json(
        self,
        endpoint: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        weight: int = 1,
        quota_cost: int = 1,
    ) -> Any:
        """GET ``path`` and return its decoded JSON body, retrying transient failures.

        Args:
            endpoint: A short name of the endpoint for accounting and errors (``klines``).
            path: Path below the base URL.
            params: Query parameters.
            weight: What the request costs in the provider's weight unit.
            quota_cost: What it costs against daily/monthly quotas.

        Raises:
            ProviderError: A typed error for any failure; see :mod:`.errors`.
        """
        return self.get(endpoint, path, params, weight=weight, quota_cost=quota_cost).body

    def get(
        self,
        endpoint: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        weight: int = 1,
        quota_cost: int = 1,
    ) -> Answer:
        """:meth:`get_json`, with the server's ``Date`` of the answer as well."""
        breaker = self.runtime.breaker
        breaker.before_call()
        try:
            answer = self._retrying()(self._attempt, endpoint, path, params, weight, quota_cost)
        except Banned as exc:
            breaker.record_failure(
                open_for_s=exc.retry_after or self.runtime.config.breaker_reset_s
            )
            raise
        except (CircuitOpen, SlotTimeout):
            raise  # nothing was sent: says nothing about the provider's health
        except (Unavailable, BadPayload, RateLimited):
            breaker.record_failure()
            raise
        except ProviderError:
            breaker.record_success()  # the provider answered; the request was at fault
            raise
        breaker.record_success()
        return answer

    def _retrying(self) -> tenacity.Retrying:
        config = self.runtime.config
        backoff = tenacity.wait_random_exponential(
            multiplier=config.backoff_initial_s, max=config.backoff_max_s
        )

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            retry_after = getattr(error, "retry_after", None)
            return retry_after if retry_after is not None else backoff(state)

        def count_retry(state: tenacity.RetryCallState) -> None:
            self.stats.retries += 1
            error = state.outcome.exception() if state.outcome else None
            log.info("%s: retrying after %s", self.provider, error)

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(config.max_attempts),
            retry=tenacity.retry_if_exception(
                lambda exc: isinstance(exc, ProviderError) and exc.retryable
            ),
            wait=wait,
            sleep=self._sleep,
            before_sleep=count_retry,
            reraise=True,
        )

    def _attempt(
        self,
        endpoint: str,
        path: str,
        params: Mapping[str, Any] | None,
        weight: int,
        quota_cost: int,
    ) -> Answer:
        import httpx  # see the imports at the top; loaded by __init__ already

        limiter = self.runtime.limiter
        limiter.reserve(quota_cost)
        try:
            waited = limiter.acquire(weight)
        except SlotTimeout:
            limiter.refund(quota_cost)
            raise
        self.stats.limiter_wait_s += waited
        started = time.perf_counter()
        self.stats.requests += 1
        try:
            # None when empty: httpx drops a path's own query string (a next_url cursor) as
            # soon as params is passed, even an empty one.
            query = {**(params or {}), **self._auth_params} or None
            response = self._client.get(path, params=query)
        except httpx.TimeoutException as exc:
            self.stats.errors += 1
            raise TimedOut(self.provider, f"{endpoint}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            self.stats.errors += 1
            raise Unavailable(
                self.provider, f"{endpoint}: connection failed ({type(exc).__name__})"
            ) from None
        self.stats.bytes_received += len(response.content)
        log.debug(
            "%s %s: upstream HTTP %s, %d bytes in %.0f ms after %.3f s in the limiter",
            self.provider,
            endpoint,
            response.status_code,
            len(response.content),
            (time.perf_counter() - started) * 1000,
            waited,
        )
        hold_off = self._pacing(response)
        if hold_off:
            limiter.pause(hold_off)
        body = decode_json(response)
        if response.status_code >= 400:
            self._fail(self._map_error(response, body))
        if body is None:
            self._fail(
                BadPayload(
                    self.provider, f"{endpoint}: answer is not JSON", status=response.status_code
                )
            )
        if self._check_body is not None and (error := self._check_body(body)) is not None:
            self._fail(error)
        return Answer(body, parse_http_date(response.headers.get("Date")))

    def _fail(self, error: ProviderError) -> NoReturn:
        self.stats.errors += 1
        if isinstance(error, RateLimited) and error.retry_after:
            self.runtime.limiter.pause(error.retry_after)
        raise error

    def close(self) -> None:
        self._client.close()
