"""Property-based fuzzing of every route through a real socket: no input gets a 5xx.

Two generators against one uvicorn server whose providers are the local fake servers:

- schemathesis, from the app's own OpenAPI document: data that fits the schema and data that
  does not, each answer checked against the documented statuses, content types and bodies;
- hypothesis, with values near the valid ones (known symbols and tickers, real intervals,
  windows around 2024), so that the examples reach the warehouse, the providers, failover and
  validation instead of stopping at a 404.

The fuzzed universe leaves out Alpha Vantage and CoinMarketCap: their free-tier quotas (25
requests a day, 333 credits a day) would be used up by the examples, and the 503 that follows
would be the truth, not a bug (``test_price.py`` tests that answer). Each example asks for at
most 500 bars (one Binance page), so that the examples stay within Binance's weight limit too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fks_pipelines.api.app import create_app
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import PROVIDER_IDS
from fks_pipelines_tests.api.support import Fakes, uvicorn_server

FUZZ_UNIVERSE = """
instruments:
  BTC-USD: {asset_class: crypto}
  ETH-USD: {asset_class: crypto}
  SPY: {asset_class: equity, calendar: XNYS}
  AAPL: {asset_class: equity, calendar: XNYS}
priority: [binance, polygon, eodhd, coingecko]
providers:
  binance:
    {start_date: 2024-01-01, intervals: [1h, 1d], symbols: {BTCUSDT: BTC-USD, ETHUSDT: ETH-USD}}
  polygon:
    start_date: 2024-01-01
    intervals: [1h, 1d]
    symbols: {AAPL: AAPL, SPY: SPY, "X:BTCUSD": BTC-USD}
  eodhd:
    start_date: 2024-01-01
    intervals: [1h, 1d]
    symbols: {AAPL.US: AAPL, SPY.US: SPY, BTC-USD.CC: BTC-USD}
  coingecko:
    {start_date: 2024-01-01, intervals: [1d], symbols: {bitcoin: BTC-USD, ethereum: ETH-USD}}
"""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FUZZ = hypothesis.settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("fuzz")
    universe = data_dir / "universe.yaml"
    universe.write_text(FUZZ_UNIVERSE)
    with ExitStack() as stack:
        fakes = Fakes.start(stack)
        settings = fakes.settings(
            data_dir,
            FKS_UNIVERSE_FILE=universe,
            FKS_API_MAX_BARS=500,
            REDIS_URL=None,
            # With a secret the webhook route is live: unsigned fuzz is refused with a 401.
            FKS_WEBHOOK_SECRET="whsec-fuzz",
        )
        yield stack.enter_context(uvicorn_server(create_app(settings)))


@pytest.fixture(scope="module")
def schema(server: str) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_dict(httpx.get(f"{server}/openapi.json").json())


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server) as client:
        yield client


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, "negative"])
def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(
    server: str, schema: schemathesis.schemas.BaseSchema, mode: str
) -> None:
    @FUZZ
    @given(case=schema.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call(base_url=server)
        hypothesis.event(f"{case.operation.label}: HTTP {response.status_code}")
        case.validate_response(response, checks=CHECKS)

    fuzz()


SYMBOLS = st.sampled_from(
    ["BTC-USD", "ETH-USD", "SPY", "AAPL", "BTCUSDT", "X:BTCUSD", "AAPL.US", "bitcoin", "SOL-USD"]
) | st.text(max_size=12)
PROVIDERS = st.none() | st.sampled_from(PROVIDER_IDS)
SERVED = [
    ("BTC-USD", None),
    ("ETH-USD", None),
    ("SPY", None),
    ("AAPL", None),
    ("BTCUSDT", "binance"),
    ("X:BTCUSD", "polygon"),
    ("AAPL", "polygon"),
    ("AAPL.US", "eodhd"),
    ("SPY", "eodhd"),
    ("bitcoin", "coingecko"),
]
TARGETS = st.sampled_from(SERVED) | st.tuples(SYMBOLS, PROVIDERS)
# Mostly intervals some provider serves, then ones that parse but nobody serves, or do not parse.
INTERVALS = st.sampled_from(["1h", "1d", "1m", "5m", "15m", "2h", "4h", "45m", "7m", "0m", "1M"])
TIMES = st.datetimes(
    min_value=datetime(2023, 12, 1), max_value=datetime(2024, 2, 1), timezones=st.just(UTC)
)


@st.composite
def windows(draw: st.DrawFn) -> tuple[str, str, str]:
    """An interval and a window of up to 600 of its bars (or a few the wrong way round); one
    in ten is text instead of times."""
    interval = draw(INTERVALS)
    if draw(st.sampled_from([False] * 9 + [True])):
        return draw(st.text(max_size=4)), draw(st.text(max_size=25)), draw(st.text(max_size=25))
    try:
        step = Interval.parse(interval).delta
    except ValueError:
        step = timedelta(hours=1)
    start = draw(TIMES)
    end = start + draw(st.integers(min_value=-2, max_value=600)) * step
    return interval, start.isoformat(), end.isoformat()


def assert_well_answered(response: httpx.Response) -> None:
    hypothesis.event(f"HTTP {response.status_code}")
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code >= 400:
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}


def test_prices_of_near_valid_symbols_never_fail(client: httpx.Client) -> None:
    @FUZZ
    @given(target=TARGETS)
    def fuzz(target: tuple[str, str | None]) -> None:
        symbol, provider = target
        params = {"symbol": symbol, **({"provider": provider} if provider else {})}
        assert_well_answered(client.get("/api/v1/data/price", params=params))

    fuzz()


def test_windows_of_near_valid_bars_never_fail(client: httpx.Client) -> None:
    @FUZZ
    @given(target=TARGETS, window=windows(), validate=st.booleans())
    def fuzz(target: tuple[str, str | None], window: tuple[str, str, str], validate: bool) -> None:
        (symbol, provider), (interval, start, end) = target, window
        params = {
            "symbol": symbol,
            "interval": interval,
            "start": start,
            "end": end,
            "validate": str(validate).lower(),
            **({"provider": provider} if provider else {}),
        }
        response = client.get("/api/v1/data/ohlcv", params=params)
        assert_well_answered(response)
        if response.status_code == 200 and validate:
            assert response.json()["validation"]["quality"]["weights"]

    fuzz()
