"""Binance payloads -> canonical frames and typed errors, from the real fixtures."""

import json
from pathlib import Path

import httpx
import pandas as pd
import pytest

from fks_pipelines.market.frame import COLUMNS, validate
from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers import binance
from fks_pipelines.providers.errors import (
    BadPayload,
    Banned,
    RateLimited,
    RequestRejected,
    Unauthorized,
    Unavailable,
    UnknownSymbol,
)
from fks_pipelines_tests.providers.support import assert_bars

FIXTURES = Path(__file__).parent.parent / "fixtures" / "binance"
ONE_MINUTE = Interval.parse("1m")


def load(name: str) -> object:
    return json.loads((FIXTURES / name).read_text())


def utc(ms: int) -> pd.Timestamp:
    return pd.Timestamp(ms, unit="ms", tz="UTC")


def test_recorded_usdm_klines_parse_to_exactly_their_values() -> None:
    frame = binance.parse_klines(
        load("fapi_v1_klines_BTCUSDT_1m_limit3_ccxt.json"), "BTCUSDT", ONE_MINUTE
    )

    assert_bars(
        frame,
        provider="binance",
        symbol="BTCUSDT",
        interval="1m",
        ts=[utc(1712738460000), utc(1712738520000), utc(1712738580000)],
        open=[71481.90, 71471.00, 71470.70],
        high=[71481.90, 71471.00, 71470.90],
        low=[71481.90, 70459.40, 70459.40],
        close=[71481.90, 70459.40, 70459.40],
        # field 5, base units (BTC), as given
        volume=[0.002, 0.120, 1.542],
        # field 7, quote units (USDT), as given
        quote_volume=[142.96380, 8518.17600, 108661.55840],
        # vwap is quote volume / volume
        vwap=[142.96380 / 0.002, 8518.17600 / 0.120, 108661.55840 / 1.542],
        trades=[1, 9, 8],
        bar_kind="traded",
    )


def test_recorded_spot_klines_share_the_row_format() -> None:
    frame = binance.parse_klines(
        load("api_v3_klines_BTCUSDT_1m_nautilus.json"), "BTCUSDT", ONE_MINUTE
    )

    validate(frame)
    assert len(frame) == 10
    first, last = frame.iloc[0], frame.iloc[-1]
    assert first["ts"] == utc(1634943780000)
    assert (first["open"], first["high"], first["low"], first["close"]) == (
        60685.22,
        60729.84,
        60670.90,
        60719.27,
    )
    assert first["volume"] == 21.63272
    assert first["quote_volume"] == 1313200.0134041
    assert first["trades"] == 617
    assert first["bar_kind"] == "traded"
    assert last["ts"] == utc(1634944320000)
    assert last["close"] == 60739.85
    assert last["volume"] == 0.04734
    assert frame["ts"].diff().dropna().eq(pd.Timedelta(minutes=1)).all()


def test_recorded_hourly_klines_start_on_the_hour_after_an_unaligned_start() -> None:
    frame = binance.parse_klines(
        load("api_v3_klines_BTCUSDT_1h_since_limit3_ccxt.json"), "BTCUSDT", Interval.parse("1h")
    )

    assert_bars(
        frame,
        provider="binance",
        symbol="BTCUSDT",
        interval="1h",
        ts=pd.date_range("2024-01-30T16:00:00Z", periods=3, freq="h"),
        open=[43519.34, 43488.71, 43374.81],
        high=[43936.00, 43832.08, 44048.00],
        low=[43171.00, 43084.00, 43062.00],
        close=[43488.71, 43374.80, 43361.11],
        volume=[20.55495, 21.80865, 23.66547],
        quote_volume=[891428.42858070, 946546.04941680, 1027527.77116170],
        vwap=[891428.42858070 / 20.55495, 946546.04941680 / 21.80865, 1027527.77116170 / 23.66547],
        trades=[3743, 4365, 4063],
        bar_kind="traded",
    )


def test_a_bar_without_volume_has_no_vwap() -> None:
    row = [1712738460000, "1.0", "1.0", "1.0", "1.0", "0", 1712738519999, "0", 0, "0", "0", "0"]

    frame = binance.parse_klines([row], "BTCUSDT", ONE_MINUTE)

    assert (frame["volume"].iloc[0], frame["quote_volume"].iloc[0]) == (0.0, 0.0)
    assert pd.isna(frame["vwap"].iloc[0])
    assert frame["trades"].iloc[0] == 0


def test_rows_of_another_interval_are_refused() -> None:
    # The docs example is a weekly bar (close time = open + 7 days - 1 ms): shape only.
    with pytest.raises(BadPayload, match="not 1d bars"):
        binance.parse_klines(
            load("fapi_v1_klines_docs_example_nautilus.json"), "BTCUSDT", Interval.parse("1d")
        )


def test_open_bar_is_dropped_when_now_is_given() -> None:
    payload = load("fapi_v1_klines_BTCUSDT_1m_limit3_ccxt.json")
    # At 08:43:30 the 08:43 bar is still open; the 08:42 bar closed at 08:43:00.
    now = pd.Timestamp("2024-04-10T08:43:30Z")

    frame = binance.parse_klines(payload, "BTCUSDT", ONE_MINUTE, now=now)

    assert frame["ts"].tolist() == [utc(1712738460000), utc(1712738520000)]


def test_empty_page_is_an_empty_canonical_frame() -> None:
    frame = binance.parse_klines([], "BTCUSDT", ONE_MINUTE)
    assert frame.empty
    assert list(frame.columns) == list(COLUMNS)
    validate(frame)


@pytest.mark.parametrize(
    "payload",
    [
        {"code": -1121, "msg": "Invalid symbol."},
        [[1712738460000, "1.0", "1.0"]],
        [[1712738460000, "x", "1", "1", "1", "1", 1712738519999, "1", 1, "1", "1", "0"]],
        [[None, "1", "1", "1", "1", "1", 1712738519999, "1", 1, "1", "1", "0"]],
        "not a list",
    ],
    ids=["error-object", "short-row", "non-numeric-price", "null-open-time", "string"],
)
def test_malformed_klines_are_bad_payload(payload: object) -> None:
    with pytest.raises(BadPayload) as caught:
        binance.parse_klines(payload, "BTCUSDT", ONE_MINUTE)
    assert caught.value.provider == "binance"


def test_ticker_price_docs_example() -> None:
    quote = binance.parse_ticker_price(
        load("fapi_v1_ticker_price_BTCUSDT_docs_example_nautilus.json"), "BTCUSDT"
    )
    assert quote.price == 6000.01
    assert quote.ts == utc(1589437530011)
    assert quote.symbol == "BTCUSDT"


@pytest.mark.parametrize(
    "payload",
    [
        {"symbol": "ETHUSDT", "price": "1", "time": 1},
        {"symbol": "BTCUSDT", "price": "0", "time": 1},
        {},
    ],
    ids=["other-symbol", "zero-price", "empty"],
)
def test_malformed_ticker_price_is_bad_payload(payload: object) -> None:
    with pytest.raises(BadPayload):
        binance.parse_ticker_price(payload, "BTCUSDT")


def answer(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def test_invalid_symbol_fixture_maps_to_unknown_symbol() -> None:
    error = binance.map_error(
        answer(400, {}), load("error_400_code_-1121_invalid_symbol_docs.json")
    )
    assert isinstance(error, UnknownSymbol)
    assert (error.provider, error.status, error.vendor_code) == ("binance", 400, -1121)
    assert str(error) == "binance: unknown symbol: Invalid symbol. (HTTP 400, code -1121)"


def test_too_many_requests_fixture_maps_to_rate_limited_with_retry_after() -> None:
    body = load("error_429_code_-1003_too_many_requests_issue_quote.json")
    error = binance.map_error(answer(429, body, {"Retry-After": "7"}), body)
    assert type(error) is RateLimited
    assert error.retry_after == 7
    assert error.vendor_code == -1003
    assert error.retryable


def test_ban_maps_to_banned_with_the_unban_time() -> None:
    body = {"code": -1003, "msg": "Way too many requests; IP(1.2.3.4) banned until 4102444800000."}
    with_header = binance.map_error(answer(418, body, {"Retry-After": "120"}), body)
    without_header = binance.map_error(answer(418, body), body)

    assert isinstance(with_header, Banned) and with_header.retry_after == 120
    assert isinstance(without_header, Banned) and without_header.retry_after > 0
    assert not with_header.retryable


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"code": -1120, "msg": "Invalid interval."}, RequestRejected),
        (401, {"code": -2015, "msg": "Invalid API-key."}, Unauthorized),
        (403, None, RequestRejected),
        (500, {"code": -1000, "msg": "Unknown error."}, Unavailable),
        (503, None, Unavailable),
    ],
)
def test_other_statuses_map_to_their_error(status: int, body: object, expected: type) -> None:
    error = binance.map_error(httpx.Response(status), body)
    assert type(error) is expected
    assert error.status == status


def test_klines_weight_follows_the_documented_steps() -> None:
    assert [binance.klines_weight(n) for n in (1, 99, 100, 499, 500, 1000, 1001, 1500)] == [
        1,
        1,
        2,
        2,
        5,
        5,
        10,
        10,
    ]
