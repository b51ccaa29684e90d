"""The one HTTP helper every provider uses: timeouts, error mapping, request accounting.

A provider supplies only how to turn an error answer into a typed error; timeouts, transport
failures and accounting are handled here, once.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from fks_pipelines.providers.errors import BadPayload, ProviderError, Unavailable

log = logging.getLogger(__name__)

ErrorMapper = Callable[[httpx.Response, Any], ProviderError]
"""Turns an error answer (status >= 400) and its decoded body (``None`` if not JSON) into an
error."""


@dataclass
class RequestStats:
    """What a client did upstream; reported as materialisation metadata."""

    requests: int = 0
    bytes_received: int = 0
    errors: int = 0

    def as_metadata(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "bytes_received": self.bytes_received,
            "upstream_errors": self.errors,
        }


@dataclass(frozen=True)
class Timeouts:
    """Connect and read timeouts in seconds; both reach every request."""

    connect: float = 5.0
    read: float = 30.0

    def as_httpx(self) -> httpx.Timeout:
        return httpx.Timeout(self.read, connect=self.connect)


DEFAULT_TIMEOUTS = Timeouts()


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


class ProviderHttp:
    """An HTTP session bound to one provider.

    Args:
        provider: Provider id used in errors and logs.
        base_url: Base URL of the provider's REST API.
        map_error: Maps an error answer to a typed :class:`ProviderError`.
        timeouts: Connect/read timeouts applied to every request.
        headers: Default headers (e.g. an API key header). Never logged.
        transport: An httpx transport, for tests that replace the network.
    """

    def __init__(
        self,
        provider: str,
        base_url: str,
        map_error: ErrorMapper,
        *,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.provider = provider
        self.stats = RequestStats()
        self._map_error = map_error
        self._client = httpx.Client(
            base_url=base_url,
            timeout=timeouts.as_httpx(),
            headers=dict(headers or {}),
            transport=transport,
            follow_redirects=False,
        )

    def get_json(self, endpoint: str, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET ``path`` and return its decoded JSON body.

        Args:
            endpoint: A short name of the endpoint for accounting and errors (``klines``).
            path: Path below the base URL.
            params: Query parameters.

        Raises:
            ProviderError: A typed error for any failure; see :mod:`.errors`.
        """
        started = time.perf_counter()
        try:
            response = self._client.get(path, params=params)
        except httpx.TimeoutException as exc:
            self.stats.errors += 1
            raise Unavailable(
                self.provider, f"{endpoint}: timed out ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            self.stats.errors += 1
            raise Unavailable(
                self.provider, f"{endpoint}: connection failed ({type(exc).__name__})"
            ) from None
        finally:
            self.stats.requests += 1
        self.stats.bytes_received += len(response.content)
        log.debug(
            "%s %s -> HTTP %s in %.0f ms",
            self.provider,
            endpoint,
            response.status_code,
            (time.perf_counter() - started) * 1000,
        )
        body = decode_json(response)
        if response.status_code >= 400:
            self.stats.errors += 1
            raise self._map_error(response, body)
        if body is None:
            self.stats.errors += 1
            raise BadPayload(
                self.provider, f"{endpoint}: answer is not JSON", status=response.status_code
            )
        return body

    def close(self) -> None:
        self._client.close()
