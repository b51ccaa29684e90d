"""GET /api/v1/data/price: symbols, the cache, failover and every way a provider fails."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from fks_pipelines.api.app import create_app
from fks_pipelines.settings import Settings
from fks_pipelines_tests.api.support import KEYS, Fakes, served, services_of
from fks_pipelines_tests.fakes.server import Response

pytestmark = pytest.mark.anyio

PRICE = "/api/v1/data/price"
TICKER = "/fapi/v1/ticker/price"


async def test_a_canonical_instrument_is_served_by_the_first_provider_in_priority(
    api: httpx.AsyncClient, fakes: Fakes
) -> None:
    response = await api.get(PRICE, params={"symbol": "BTC-USD"})

    assert response.status_code == 200
    body = response.json()
    assert body == {
        "symbol": "BTC-USD",
        "provider": "binance",
        "provider_symbol": "BTCUSDT",
        "price": pytest.approx(body["price"]),
        "ts": "2030-01-01T00:00:00Z",
        "source": "rest",
        "age_s": 0.0,  # the fake's clock is ahead
        "cached": False,
        "cache": None,
    }
    assert isinstance(body["price"], float)
    assert len(fakes.binance.requests_to(TICKER)) == 1


async def test_a_second_call_within_the_ttl_makes_no_upstream_request(
    api: httpx.AsyncClient, fakes: Fakes
) -> None:
    first = await api.get(PRICE, params={"symbol": "ETH-USD"})
    second = await api.get(PRICE, params={"symbol": "ETH-USD"})

    assert (first.json()["cached"], second.json()["cached"]) == (False, True)
    assert (first.json()["cache"], second.json()["cache"]) == (None, "redis")
    assert second.json()["price"] == first.json()["price"]
    assert len(fakes.binance.requests_to(TICKER)) == 1
    assert fakes.requests() == 1


@pytest.mark.parametrize(
    ("symbol", "provider", "served_as"),
    [
        ("BTCUSDT", "binance", "BTCUSDT"),  # the provider's own ticker
        ("X:BTCUSD", "polygon", "X:BTCUSD"),
        ("BTC-USD", "polygon", "X:BTCUSD"),  # a canonical instrument the provider lists
        ("bitcoin", "coingecko", "bitcoin"),
        ("1", "coinmarketcap", "1"),
    ],
)
async def test_with_a_provider_only_that_provider_is_asked(
    api: httpx.AsyncClient, fakes: Fakes, symbol: str, provider: str, served_as: str
) -> None:
    response = await api.get(PRICE, params={"symbol": symbol, "provider": provider})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["symbol"], body["provider"], body["provider_symbol"]) == (
        "BTC-USD",
        provider,
        served_as,
    )
    assert len(getattr(fakes, provider).requests) == 1
    assert fakes.requests() == 1


async def test_a_primary_answering_5xx_fails_over_to_the_next_provider(
    api: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.binance.scripted.append(Response(status=503, body=b"<html>maintenance</html>"))

    response = await api.get(PRICE, params={"symbol": "BTC-USD"})

    assert response.status_code == 200
    assert (response.json()["provider"], response.json()["provider_symbol"]) == (
        "polygon",
        "X:BTCUSD",
    )
    assert len(fakes.binance.requests_to(TICKER)) == 1
    assert len(fakes.polygon.requests) == 1


async def test_an_open_circuit_is_skipped_without_a_request(
    app: FastAPI, api: httpx.AsyncClient, fakes: Fakes
) -> None:
    services_of(app).clients["binance"].http.runtime.breaker.record_failure(open_for_s=60)

    response = await api.get(PRICE, params={"symbol": "BTC-USD"})

    assert response.json()["provider"] == "polygon"
    assert fakes.binance.requests == []


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"symbol": "DOGE-USD"}, 404, "unknown_symbol"),
        ({"symbol": "BTCUSDT"}, 404, "unknown_symbol"),  # a ticker needs its provider
        ({"symbol": "SPY", "provider": "binance"}, 404, "unknown_symbol"),
        ({"symbol": "BTC-USD", "provider": "kraken"}, 422, "invalid_request"),
        ({"symbol": ""}, 422, "invalid_request"),
        ({"symbol": "x" * 65}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
    ],
)
async def test_bad_input_is_refused_without_an_upstream_request(
    api: httpx.AsyncClient, fakes: Fakes, params: dict[str, str], status: int, code: str
) -> None:
    response = await api.get(PRICE, params=params)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert fakes.requests() == 0


async def test_a_provider_left_out_of_the_universe_is_unknown(fakes: Fakes, tmp_path: Path) -> None:
    universe = tmp_path / "universe.yaml"
    universe.write_text(
        "instruments: {BTC-USD: {asset_class: crypto}}\n"
        "priority: [binance]\n"
        "providers:\n"
        "  binance: {start_date: 2024-01-01, intervals: [1h], symbols: {BTCUSDT: BTC-USD}}\n"
    )
    app = create_app(fakes.settings(tmp_path, FKS_UNIVERSE_FILE=universe))
    async with served(app) as api:
        response = await api.get(PRICE, params={"symbol": "BTC-USD", "provider": "polygon"})

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_provider"


@pytest.mark.parametrize(
    ("answer", "status", "code"),
    [
        (Response(status=502, body=b"<html>Bad Gateway</html>"), 502, "upstream_unavailable"),
        (Response(status=200, body=b"<html>maintenance</html>"), 502, "upstream_bad_payload"),
        (Response.json({"code": -2015, "msg": "Invalid API-key."}, status=401), 502, None),
        (
            Response.json({"code": -1003, "msg": "Too many."}, 429, {"Retry-After": "7"}),
            503,
            "upstream_rate_limited",
        ),
        (Response(status=200, body=b"{}", delay_s=1.0), 504, "upstream_timeout"),
    ],
    ids=["5xx", "garbage", "unauthorized", "rate-limited", "timeout"],
)
async def test_a_failing_provider_is_a_5xx_with_a_clear_code(
    fakes: Fakes, tmp_path: Path, answer: Response, status: int, code: str | None
) -> None:
    fakes.binance.scripted.append(answer)
    app = create_app(fakes.settings(tmp_path, FKS_HTTP_READ_TIMEOUT_S=0.3))
    async with served(app) as api:
        response = await api.get(PRICE, params={"symbol": "BTCUSDT", "provider": "binance"})

    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == (code or "upstream_unauthorized")
    assert error["message"].startswith("binance: ")
    if status == 503:
        assert response.headers["Retry-After"] == "7"


async def test_an_open_circuit_of_the_asked_provider_is_a_503_with_retry_after(
    app: FastAPI, api: httpx.AsyncClient, fakes: Fakes
) -> None:
    services_of(app).clients["binance"].http.runtime.breaker.record_failure(open_for_s=60)

    response = await api.get(PRICE, params={"symbol": "BTCUSDT", "provider": "binance"})

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "circuit_open"
    assert 55 <= int(response.headers["Retry-After"]) <= 60
    assert fakes.binance.requests == []


async def test_a_provider_without_its_key_is_not_configured(fakes: Fakes, tmp_path: Path) -> None:
    app = create_app(fakes.settings(tmp_path, POLYGON_API_KEY=None))
    async with served(app) as api:
        response = await api.get(PRICE, params={"symbol": "AAPL", "provider": "polygon"})

    assert response.status_code == 503
    assert response.json()["error"] == {
        "code": "provider_not_configured",
        "message": "polygon: no API key: set the environment variable POLYGON_API_KEY",
    }


async def test_an_exhausted_quota_is_a_503(fakes: Fakes, tmp_path: Path) -> None:
    app = create_app(fakes.settings(tmp_path))
    async with served(app) as api:
        limiter = services_of(app).clients["alpha_vantage"].http.runtime.limiter
        for _ in range(limiter.limits.quotas[0].limit):
            limiter.reserve(1)
        response = await api.get(PRICE, params={"symbol": "AAPL", "provider": "alpha_vantage"})

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "upstream_quota_exhausted"
    assert fakes.alpha_vantage.requests == []


async def test_when_every_provider_fails_the_answer_names_each_attempt(
    fakes: Fakes, tmp_path: Path
) -> None:
    settings = fakes.settings(tmp_path, POLYGON_API_KEY=None)
    fakes.binance.scripted.append(Response(status=500, body=b"down"))
    fakes.eodhd.failing_symbols.add("BTC-USD.CC")
    fakes.coinmarketcap.scripted.append(Response(status=500, body=b"down"))
    fakes.coingecko.scripted.append(Response(status=500, body=b"down"))
    async with served(create_app(settings)) as api:
        response = await api.get(PRICE, params={"symbol": "BTC-USD"})

    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "no_provider_available"
    for provider in ("binance", "polygon", "eodhd", "coinmarketcap", "coingecko"):
        assert f"{provider}: " in error["message"]
    assert "POLYGON_API_KEY" in error["message"]


async def test_without_redis_the_price_is_cached_on_disk(fakes: Fakes, tmp_path: Path) -> None:
    settings: Settings = fakes.settings(tmp_path, REDIS_URL=None)
    async with served(create_app(settings)) as api:
        first = await api.get(PRICE, params={"symbol": "SOL-USD"})
        second = await api.get(PRICE, params={"symbol": "SOL-USD"})

    assert (first.json()["cached"], second.json()["cached"]) == (False, True)
    assert second.json()["cache"] == "disk"
    assert len(fakes.binance.requests_to(TICKER)) == 1


@pytest.mark.parametrize(
    ("provider", "symbol", "answer"),
    [
        (
            "alpha_vantage",
            "AAPL",
            lambda key: Response.json(
                {"Information": f"rate limit for key {key}; see the premium plans"}, status=401
            ),
        ),
        (
            "coinmarketcap",
            "1",
            lambda key: Response.json(
                {
                    "status": {
                        "error_code": 1001,
                        "error_message": f"This API Key {key} is invalid.",
                    }
                },
                status=401,
            ),
        ),
        (
            "coingecko",
            "bitcoin",
            lambda key: Response.json(
                {"status": {"error_code": 10002, "error_message": f"API key {key} is invalid"}},
                status=401,
            ),
        ),
    ],
    ids=["alpha_vantage", "coinmarketcap", "coingecko"],
)
async def test_a_key_the_vendor_echoes_never_reaches_the_answer_or_the_log(
    fakes: Fakes,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    provider: str,
    symbol: str,
    answer: object,
) -> None:
    key = KEYS[provider]
    getattr(fakes, provider).scripted.append(answer(key))  # type: ignore[operator]
    app = create_app(fakes.settings(tmp_path))
    async with served(app) as api:
        response = await api.get(PRICE, params={"symbol": symbol, "provider": provider})

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unauthorized"
    assert "***" in response.json()["error"]["message"]
    assert key not in response.text
    assert all(key not in record.getMessage() for record in caplog.records)
