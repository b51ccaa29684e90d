"""GET /api/v1/data/ohlcv: warehouse or provider, the quality verdict, and bad input."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from fks_pipelines.api.app import create_app
from fks_pipelines.market.frame import build_frame
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import load_universe
from fks_pipelines.quality.assess import assess_window
from fks_pipelines.quality.bar_errors import FIELDS
from fks_pipelines.warehouse.store import Scope, Warehouse
from fks_pipelines_tests.api.support import Fakes, served
from fks_pipelines_tests.fakes.binance import expected_frame
from fks_pipelines_tests.fakes.server import Response

pytestmark = pytest.mark.anyio

OHLCV = "/api/v1/data/ohlcv"
KLINES = "/fapi/v1/klines"
DAY = pd.Timestamp("2024-01-05", tz="UTC")  # a Friday
NEXT_DAY = DAY + pd.Timedelta(days=1)
HOUR = Interval.parse("1h")
WINDOW = {"interval": "1h", "start": "2024-01-05T00:00:00Z", "end": "2024-01-06T00:00:00Z"}


def stored_day(closes: np.ndarray | None = None) -> pd.DataFrame:
    """A day of hourly BTCUSDT bars unlike the fake's (close 1000 + hour), as if stored."""
    hours = pd.date_range(DAY, periods=24, freq="1h")
    closes = 1000.0 + np.arange(24) if closes is None else closes
    return build_frame(
        provider="binance",
        symbol="BTCUSDT",
        interval="1h",
        ts=hours,
        open=closes,
        high=closes + 1,
        low=closes - 1,
        close=closes,
        volume=np.full(24, 5.0),
    )


def store(url: str, frame: pd.DataFrame) -> None:
    scope = Scope("binance", "1h", ("BTCUSDT",), DAY, NEXT_DAY)
    Warehouse.from_url(url).write_ohlcv(frame, scope)


async def test_bars_missing_from_the_warehouse_come_from_the_provider(
    api: httpx.AsyncClient, fakes: Fakes
) -> None:
    response = await api.get(OHLCV, params={"symbol": "BTC-USD", **WINDOW})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["provider"], body["provider_symbol"], body["source"]) == (
        "binance",
        "BTCUSDT",
        "provider",
    )
    assert (body["start"], body["end"], body["interval"]) == (
        "2024-01-05T00:00:00Z",
        "2024-01-06T00:00:00Z",
        "1h",
    )
    assert body["validation"] is None
    expected = expected_frame("BTCUSDT", "1h", "2024-01-05", "2024-01-06")
    assert len(body["candles"]) == 24
    assert body["candles"][0] == {
        "ts": "2024-01-05T00:00:00Z",
        **{
            k: float(expected[k].iloc[0])
            for k in ("open", "high", "low", "close", "volume", "quote_volume")
        },
        "bar_kind": "traded",
    }
    assert [c["ts"] for c in body["candles"]][-1] == "2024-01-05T23:00:00Z"
    assert len(fakes.binance.requests_to(KLINES)) == 1


async def test_the_same_window_again_is_served_from_the_provider_cache(
    api: httpx.AsyncClient, fakes: Fakes
) -> None:
    first = await api.get(OHLCV, params={"symbol": "BTC-USD", **WINDOW})
    second = await api.get(OHLCV, params={"symbol": "BTC-USD", **WINDOW})

    assert second.json()["candles"] == first.json()["candles"]
    assert len(fakes.binance.requests_to(KLINES)) == 1


async def test_a_window_the_warehouse_holds_whole_is_served_from_it(
    fakes: Fakes, tmp_path: Path, warehouse_url: str
) -> None:
    store(warehouse_url, stored_day())
    app = create_app(fakes.settings(tmp_path, FKS_WAREHOUSE_URL=warehouse_url))
    async with served(app) as api:
        canonical = await api.get(OHLCV, params={"symbol": "BTC-USD", **WINDOW})
        ticker = await api.get(OHLCV, params={"symbol": "BTCUSDT", "provider": "binance", **WINDOW})

    for response in (canonical, ticker):
        body = response.json()
        assert (body["source"], body["provider"], body["provider_symbol"]) == (
            "warehouse",
            "binance",
            "BTCUSDT",
        )
        assert [c["close"] for c in body["candles"]] == [1000.0 + h for h in range(24)]
    assert fakes.requests() == 0


async def test_a_window_the_warehouse_holds_in_part_comes_from_the_provider(
    fakes: Fakes, tmp_path: Path, warehouse_url: str
) -> None:
    store(warehouse_url, stored_day().iloc[:20])
    app = create_app(fakes.settings(tmp_path, FKS_WAREHOUSE_URL=warehouse_url))
    async with served(app) as api:
        response = await api.get(OHLCV, params={"symbol": "BTC-USD", **WINDOW})

    assert response.json()["source"] == "provider"
    assert len(response.json()["candles"]) == 24
    assert len(fakes.binance.requests_to(KLINES)) == 1


async def test_a_failing_primary_fails_over_for_bars_too(
    api: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.binance.failing_symbols.add("BTCUSDT")

    response = await api.get(OHLCV, params={"symbol": "BTC-USD", **WINDOW})

    assert response.status_code == 200
    body = response.json()
    assert (body["provider"], body["provider_symbol"], len(body["candles"])) == (
        "polygon",
        "X:BTCUSD",
        24,
    )


async def test_a_canonical_instrument_with_a_provider_uses_its_ticker(
    api: httpx.AsyncClient, fakes: Fakes
) -> None:
    response = await api.get(OHLCV, params={"symbol": "AAPL", "provider": "eodhd", **WINDOW})

    assert response.status_code == 200, response.text
    assert response.json()["provider_symbol"] == "AAPL.US"
    assert fakes.requests() == len(fakes.eodhd.requests) > 0


async def test_a_day_without_a_session_is_an_empty_list(
    api: httpx.AsyncClient, fakes: Fakes
) -> None:
    saturday = {"interval": "1d", "start": "2024-01-06", "end": "2024-01-07"}

    response = await api.get(OHLCV, params={"symbol": "AAPL", **saturday})

    assert response.status_code == 200, response.text
    assert (response.json()["provider"], response.json()["candles"]) == ("polygon", [])


async def test_validate_adds_the_verdict_of_the_asset_checks(
    fakes: Fakes, tmp_path: Path, warehouse_url: str
) -> None:
    closes = 1000.0 + np.sin(np.arange(24) / 3.0)
    closes[12] *= 1.3  # a bad print
    bars = stored_day(closes)
    store(warehouse_url, bars)
    app = create_app(fakes.settings(tmp_path, FKS_WAREHOUSE_URL=warehouse_url))
    async with served(app) as api:
        response = await api.get(OHLCV, params={"symbol": "BTC-USD", "validate": "true", **WINDOW})

    validation = response.json()["validation"]
    assert validation["schema"]["passed"] is True
    assert validation["schema"]["rows"] == 24
    found = {r["field"]: r for r in validation["outliers"]}
    assert list(found) == list(FIELDS)  # the detectors of the OHLCV assets' checks
    # open = close here: the whole bar is off both neighbours.
    assert found["shift"]["severity"] == "high"
    assert found["shift"]["examples"][0].startswith("BTCUSDT 2024-01-05T12:00:00+00:00")
    assert validation["completeness"]["missing"] == 0
    now = pd.Timestamp.now(tz="UTC")
    expected = assess_window(
        bars, bars.iloc[:0], load_universe().instruments["BTC-USD"], HOUR, DAY, NEXT_DAY, now, 1800
    )
    assert validation["quality"] == {
        "score": pytest.approx(expected.score.score),
        "parts": pytest.approx(expected.score.parts),
        "weights": pytest.approx(expected.score.weights),
    }


async def test_validate_on_provider_bars(api: httpx.AsyncClient) -> None:
    response = await api.get(OHLCV, params={"symbol": "ETH-USD", "validate": "true", **WINDOW})

    validation = response.json()["validation"]
    assert validation["schema"]["passed"]
    assert validation["completeness"]["expected"] == validation["completeness"]["present"] == 24
    assert 0 <= validation["quality"]["score"] <= 100


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"interval": "7m"}, 422, "bad_interval"),
        ({"interval": "1M"}, 422, "bad_interval"),
        ({"interval": "banana"}, 422, "bad_interval"),
        ({"start": "2024-01-06T00:00:00Z"}, 422, "bad_window"),  # end == start
        ({"end": "2024-01-04T00:00:00Z"}, 422, "bad_window"),
        ({"start": "yesterday"}, 422, "invalid_request"),
        ({"start": "2024-13-01"}, 422, "invalid_request"),
        ({"start": "1999-12-31T00:00:00Z"}, 422, "bad_window"),
        ({"start": "2999-01-01", "end": "2999-01-02"}, 422, "bad_window"),
        ({"start": "9999-01-01", "end": "9999-01-02"}, 422, "bad_window"),
        ({"interval": "1m", "start": "2024-01-01", "end": "2024-02-01"}, 422, "window_too_large"),
        ({"symbol": "DOGE-USD"}, 404, "unknown_symbol"),
        ({"symbol": "BTC-USD", "provider": "kraken"}, 422, "invalid_request"),
        ({"validate": "perhaps"}, 422, "invalid_request"),
        ({"symbol": "bitcoin", "provider": "coingecko"}, 422, "unsupported_interval"),
    ],
)
async def test_bad_input_is_a_4xx_without_an_upstream_request(
    api: httpx.AsyncClient, fakes: Fakes, params: dict[str, str], status: int, code: str
) -> None:
    response = await api.get(OHLCV, params={"symbol": "BTC-USD", **WINDOW, **params})

    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert fakes.requests() == 0


@pytest.mark.parametrize("missing", ["symbol", "interval", "start", "end"])
async def test_a_missing_parameter_is_named(api: httpx.AsyncClient, missing: str) -> None:
    params = {"symbol": "BTC-USD", **WINDOW}
    del params[missing]

    response = await api.get(OHLCV, params=params)

    assert response.status_code == 422
    assert f"query.{missing}" in response.json()["error"]["message"]


async def test_an_interval_the_provider_refuses_is_a_422(
    api: httpx.AsyncClient, fakes: Fakes
) -> None:
    params = {**WINDOW, "interval": "45m", "symbol": "BTCUSDT", "provider": "binance"}

    response = await api.get(OHLCV, params=params)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "rejected_by_provider"
    assert "Invalid interval" in response.json()["error"]["message"]


async def test_an_interval_no_provider_offers_is_a_422_naming_each(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get(OHLCV, params={"symbol": "SOL-USD", **WINDOW, "interval": "45m"})

    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "binance: failed" in message and "coingecko: unavailable" in message


async def test_a_naive_time_is_utc(api: httpx.AsyncClient) -> None:
    params = {"symbol": "BTC-USD", **WINDOW, "start": "2024-01-05T00:00", "end": "2024-01-05T06:00"}

    response = await api.get(OHLCV, params=params)

    assert response.json()["start"] == "2024-01-05T00:00:00Z"
    assert len(response.json()["candles"]) == 6


async def test_the_end_is_clipped_to_the_bar_still_open(api: httpx.AsyncClient) -> None:
    now = pd.Timestamp.now(tz="UTC")
    params = {
        "symbol": "BTC-USD",
        "interval": "1d",
        "start": (now - pd.Timedelta(days=3)).floor("D").isoformat(),
        "end": (now + pd.Timedelta(days=30)).isoformat(),
    }

    response = await api.get(OHLCV, params=params)

    assert response.status_code == 200, response.text
    assert response.json()["end"] == now.floor("D").strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len(response.json()["candles"]) == 3


async def test_when_every_provider_fails_the_answer_is_a_503(
    api: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.binance.failing_symbols.add("SOLUSDT")
    fakes.coinmarketcap.scripted.append(Response(status=500, body=b"down"))
    fakes.coingecko.scripted.append(Response(status=500, body=b"down"))

    response = await api.get(OHLCV, params={"symbol": "SOL-USD", **WINDOW})

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_provider_available"
