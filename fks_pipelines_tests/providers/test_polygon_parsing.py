"""Polygon payloads -> canonical frames, quotes and typed errors, from the real fixtures."""

import json
from pathlib import Path

import httpx
import pandas as pd
import pytest

from fks_pipelines.market.frame import COLUMNS, validate
from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers import polygon, secrets
from fks_pipelines.providers.errors import (
    BadPayload,
    RateLimited,
    RequestRejected,
    Unauthorized,
    Unavailable,
    UnknownSymbol,
)
from fks_pipelines_tests.providers.support import assert_bars

FIXTURES = Path(__file__).parent.parent / "fixtures" / "polygon"
DAY = Interval.parse("1d")
HOUR = Interval.parse("1h")
SECRET = "pk-test-Xq81LmZ0aQ"


def load(name: str) -> object:
    return json.loads((FIXTURES / name).read_text())


def dates(*days: str) -> list[pd.Timestamp]:
    return [pd.Timestamp(d, tz="UTC") for d in days]


def test_recorded_stock_day_bars_parse_to_exactly_their_values() -> None:
    frame = polygon.parse_aggs(
        load("v2_aggs_ticker_AAPL_range_1_day_2023-01-01_2023-01-10_openbb.json"), "AAPL", DAY
    )

    assert_bars(
        frame,
        provider="polygon",
        symbol="AAPL",
        interval="1d",
        # t 1672722000000 is 2023-01-03T05:00Z, midnight New York: labelled with its trading date.
        ts=dates(
            "2023-01-03", "2023-01-04", "2023-01-05", "2023-01-06", "2023-01-09", "2023-01-10"
        ),
        open=[130.28, 126.89, 127.13, 126.01, 130.465, 130.26],
        high=[130.9, 128.6557, 127.77, 130.29, 133.41, 131.2636],
        low=[124.17, 125.08, 124.76, 124.89, 129.89, 128.12],
        close=[125.07, 126.36, 125.02, 129.62, 130.15, 130.73],
        # v in shares, as given; exponent-form volumes (1.12117471e+08) are plain numbers
        volume=[112117471.0, 89100633.0, 80716808.0, 87754715.0, 70790813.0, 63896155.0],
        quote_volume=None,  # Polygon states none
        vwap=[125.725, 126.6464, 126.0883, 128.1982, 131.6292, 129.822],
        trades=[1021065, 770042, 665458, 711520, 645365, 554940],
        bar_kind="traded",
    )


def test_recorded_crypto_day_bars_are_utc_days() -> None:
    body = load("v2_aggs_ticker_X_BTCUSD_range_1_day_2023-01-01_2023-01-10_openbb.json")
    rows = body["results"]

    frame = polygon.parse_aggs(body, "X:BTCUSD", DAY)

    assert_bars(
        frame,
        provider="polygon",
        symbol="X:BTCUSD",
        interval="1d",
        ts=[pd.Timestamp("2023-01-01", tz="UTC") + pd.Timedelta(days=k) for k in range(10)],
        open=[r["o"] for r in rows],
        high=[r["h"] for r in rows],
        low=[r["l"] for r in rows],
        close=[r["c"] for r in rows],
        volume=[r["v"] for r in rows],  # in BTC, as given
        quote_volume=None,
        vwap=[r["vw"] for r in rows],
        trades=[r["n"] for r in rows],
        bar_kind="traded",
    )
    # spot checks against the recorded text, so that the comprehension above reads the right keys
    first, last = frame.iloc[0], frame.iloc[-1]
    assert (first["open"], first["high"], first["low"], first["close"]) == (
        16532.0,
        16644.0,
        16490.0,
        16611.58,
    )
    assert first["volume"] == 12300.315533316923
    assert first["vwap"] == 16549.5494
    assert first["trades"] == 292354
    assert (last["open"], last["high"], last["low"], last["close"]) == (
        17177.94,
        17506.0,
        17145.1,
        17443.46,
    )
    assert last["volume"] == 28242.029977765436
    assert last["trades"] == 567001
    assert frame["volume"].iloc[6] == 6569.5374952721295


def test_recorded_day_bars_across_the_dst_change_keep_their_dates() -> None:
    # 2005-04-01 starts 05:00Z (EST); DST began 2005-04-03, so 2005-04-04 starts 04:00Z.
    frame = polygon.parse_aggs(
        load("v2_aggs_ticker_AAPL_range_1_day_2005-04-01_2005-04-04_client-python.json"),
        "AAPL",
        DAY,
    )

    assert frame["ts"].tolist() == dates("2005-04-01", "2005-04-04")
    assert frame["open"].tolist() == [1.5032, 1.4639]
    assert frame["high"].tolist() == [1.5064, 1.4754]
    assert frame["low"].tolist() == [1.4489, 1.4343]
    assert frame["close"].tolist() == [1.4604, 1.4675]
    assert frame["volume"].tolist() == [642646396.0, 578172308.0]
    assert frame["vwap"].tolist() == [1.469, 1.4589]
    assert frame["trades"].tolist() == [82132, 65543]


def test_previous_close_bar_is_not_a_range_day_bar() -> None:
    # /prev stamps its bar at 16:00 New York (providers.md 2.3): taking it for a midnight day
    # bar would mislabel it, so it is refused rather than guessed.
    with pytest.raises(BadPayload, match="midnight America/New_York"):
        polygon.parse_aggs(load("v2_aggs_ticker_AAPL_prev_client-python.json"), "AAPL", DAY)


def test_recorded_last_trade_keeps_the_exact_nanoseconds() -> None:
    quote = polygon.parse_last_trade(load("v2_last_trade_AAPL_client-python.json"), "AAPL")

    assert quote.price == 166.25
    assert quote.ts.value == 1651179319310617300
    assert quote.ts == pd.Timestamp("2022-04-28T20:55:19.310617300Z")
    assert (quote.provider, quote.symbol) == ("polygon", "AAPL")


def test_recorded_last_crypto_trade() -> None:
    quote = polygon.parse_last_crypto(load("v1_last_crypto_BTC_USD_client-python.json"), "X:BTCUSD")

    assert quote.price == 39976.89682331
    assert quote.ts == pd.Timestamp(1651180409688, unit="ms", tz="UTC")
    assert quote.symbol == "X:BTCUSD"


def test_last_trade_timestamp_through_a_float_is_refused() -> None:
    body = load("v2_last_trade_AAPL_client-python.json")
    body["results"]["t"] = float(body["results"]["t"])
    with pytest.raises(BadPayload, match="must be an integer"):
        polygon.parse_last_trade(body, "AAPL")


def test_delayed_status_is_success_and_missing_results_is_empty() -> None:
    body = load("v2_aggs_ticker_AAPL_range_1_day_2023-01-01_2023-01-10_openbb.json")
    assert len(polygon.parse_aggs({**body, "status": "DELAYED"}, "AAPL", DAY)) == 6

    empty = {"ticker": "AAPL", "queryCount": 0, "resultsCount": 0, "status": "OK"}
    frame = polygon.parse_aggs(empty, "AAPL", HOUR)
    assert frame.empty and list(frame.columns) == list(COLUMNS)
    validate(frame)


def test_optional_fields_may_be_absent_in_some_rows() -> None:
    body = {
        "status": "OK",
        "results": [
            {"o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 10, "t": 1704067200000, "vw": 1.2, "n": 3},
            {"o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 0, "t": 1704070800000},
        ],
    }
    frame = polygon.parse_aggs(body, "X:BTCUSD", HOUR)

    assert_bars(
        frame,
        provider="polygon",
        symbol="X:BTCUSD",
        interval="1h",
        ts=[pd.Timestamp("2024-01-01T00:00Z"), pd.Timestamp("2024-01-01T01:00Z")],
        open=[1.0, 1.0],
        high=[2.0, 2.0],
        low=[0.5, 0.5],
        close=[1.5, 1.5],
        volume=[10.0, 0.0],
        quote_volume=None,
        vwap=[1.2, None],
        trades=[3, None],
        bar_kind="traded",
    )


ROW = {"o": 1.0, "h": 2.0, "l": 0.5, "c": 1.5, "v": 10.0, "t": 1704067200000}


@pytest.mark.parametrize(
    "body",
    [
        [ROW],
        "<html>Bad Gateway</html>",
        None,
        {"status": "OK", "results": {"o": 1}},
        {"status": "OK", "results": [[1704067200000, 1, 2, 0.5, 1.5, 10]]},
        {"status": "OK", "results": [{k: v for k, v in ROW.items() if k != "c"}]},
        {"status": "OK", "results": [{**ROW, "o": "abc"}]},
        {"status": "OK", "results": [{**ROW, "t": None}]},
        {"status": "OK", "results": [{**ROW, "t": 1704067200000.5}]},
        {"status": "OK", "results": [{**ROW, "t": 1704067260000}]},
        {"status": "OK", "results": [{**ROW, "n": 2.5}]},
        {"status": "OK", "results": [ROW, None]},
        {"status": "ERROR", "error": "Something went wrong"},
        {"results": [ROW]},
        {"status": "OK", "ticker": "MSFT", "results": [ROW]},
    ],
    ids=[
        "bare-list",
        "html-text",
        "none",
        "results-object",
        "rows-as-lists",
        "missing-close",
        "non-numeric-open",
        "null-t",
        "fractional-t",
        "off-grid-t",
        "fractional-trades",
        "null-row",
        "error-status",
        "no-status",
        "other-ticker",
    ],
)
def test_malformed_aggs_are_bad_payload(body: object) -> None:
    with pytest.raises(BadPayload) as caught:
        polygon.parse_aggs(body, "AAPL", HOUR)
    assert caught.value.provider == "polygon"


@pytest.mark.parametrize(
    "body",
    [
        {"status": "OK"},
        {"status": "OK", "results": {"p": "abc", "t": 1}},
        {"status": "OK", "results": {"p": 0, "t": 1}},
        {"status": "OK", "results": {"p": 1.0}},
        {"status": "OK", "results": {"T": "MSFT", "p": 1.0, "t": 1}},
        {"status": "OK", "results": [1, 2]},
        "<html></html>",
        {"status": "ERROR", "error": "x"},
    ],
    ids=[
        "no-results",
        "text-price",
        "zero",
        "no-t",
        "other-ticker",
        "list",
        "html",
        "error-status",
    ],
)
def test_malformed_last_trade_is_bad_payload(body: object) -> None:
    with pytest.raises(BadPayload):
        polygon.parse_last_trade(body, "AAPL")


@pytest.mark.parametrize(
    "body",
    [
        {"status": "OK", "last": {"price": 1.0, "timestamp": 1}},
        {"status": "success", "last": {"price": 1.0}},
        {"status": "success", "symbol": "ETH-USD", "last": {"price": 1.0, "timestamp": 1}},
        {"status": "success", "last": "nope"},
    ],
    ids=["wrong-status-word", "no-timestamp", "other-pair", "last-not-object"],
)
def test_malformed_last_crypto_is_bad_payload(body: object) -> None:
    with pytest.raises(BadPayload):
        polygon.parse_last_crypto(body, "X:BTCUSD")


def answer(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers)


def test_rate_limit_quote_maps_to_rate_limited_with_the_free_tier_backoff() -> None:
    body = load("error_429_rate_limit_quoted_abridged.json")

    error = polygon.map_error(answer(429), body)

    assert type(error) is RateLimited
    assert (error.provider, error.status, error.vendor_code) == ("polygon", 429, "ERROR")
    assert error.retry_after == 12.0  # Polygon sends no Retry-After; one free-tier slot
    assert error.retryable
    assert "exceeded the maximum requests per minute" in str(error)
    assert polygon.map_error(answer(429, {"Retry-After": "3"}), body).retry_after == 3


def test_rate_limit_quote_inside_a_200_is_rate_limited_too() -> None:
    error = polygon.check_body(load("error_429_rate_limit_quoted_abridged.json"))

    assert type(error) is RateLimited
    assert (error.status, error.vendor_code, error.retry_after) == (200, "ERROR", 12.0)


@pytest.mark.parametrize(
    ("status", "body", "expected", "code"),
    [
        (401, {"status": "ERROR", "error": "Unknown API Key"}, Unauthorized, "ERROR"),
        (
            403,
            {"status": "NOT_AUTHORIZED", "message": "You are not entitled to this data."},
            Unauthorized,
            "NOT_AUTHORIZED",
        ),
        (404, {"status": "NOT_FOUND", "message": "Data not found."}, UnknownSymbol, "NOT_FOUND"),
        (400, {"status": "ERROR", "error": "Could not parse 'from'"}, RequestRejected, "ERROR"),
        (500, {"status": "ERROR", "error": "Internal error"}, Unavailable, "ERROR"),
        (502, None, Unavailable, None),
        (503, None, Unavailable, None),
        (499, None, Unavailable, None),
        (405, None, RequestRejected, None),
    ],
)
def test_documented_error_answers_map_to_their_error(
    status: int, body: object, expected: type, code: str | None
) -> None:
    error = polygon.map_error(answer(status), body)
    assert type(error) is expected
    assert (error.provider, error.status, error.vendor_code) == ("polygon", status, code)


@pytest.mark.parametrize(
    ("body", "expected", "code"),
    [
        ({"status": "NOT_AUTHORIZED", "message": "not entitled"}, Unauthorized, "NOT_AUTHORIZED"),
        ({"status": "NOT_FOUND", "message": "Data not found."}, UnknownSymbol, "NOT_FOUND"),
        ({"status": "ERROR", "error": "bad from"}, RequestRejected, "ERROR"),
        ({"status": "MAINTENANCE"}, BadPayload, "MAINTENANCE"),
    ],
)
def test_error_words_in_a_200_answer_are_errors(body: dict, expected: type, code: str) -> None:
    error = polygon.check_body(body)
    assert type(error) is expected
    assert (error.status, error.vendor_code) == (200, code)


@pytest.mark.parametrize(
    "body", [{"status": "OK"}, {"status": "DELAYED"}, {"status": "success"}, [1], None]
)
def test_good_or_unenveloped_bodies_pass_the_body_check(body: object) -> None:
    assert polygon.check_body(body) is None


def test_error_text_never_carries_a_query_string() -> None:
    # A key the registry does not know (e.g. in a next_url) still goes: query strings are cut.
    body = {
        "status": "ERROR",
        "error": "bad request at https://api.polygon.io/v2/aggs/x?apiKey=unknown-key&cursor=abc",
    }
    error = polygon.map_error(answer(400), body)

    assert "unknown-key" not in str(error)
    assert "apiKey" not in str(error) and "cursor" not in str(error)
    assert "https://api.polygon.io/v2/aggs/x?..." in str(error)


def test_error_text_never_carries_a_registered_key() -> None:
    secrets.register(SECRET)
    body = {"status": "ERROR", "error": f"API key {SECRET} is unknown"}

    for error in (polygon.map_error(answer(401), body), polygon.check_body(body)):
        assert error is not None
        assert SECRET not in str(error) and SECRET not in repr(error.args)
        assert "API key *** is unknown" in str(error)


def test_supported_intervals_and_page_sizes() -> None:
    pages = {name: polygon.bars_per_page(Interval.parse(name)) for name in polygon.SUPPORTED}
    assert pages == {"1m": 50_000, "5m": 10_000, "15m": 3_333, "1h": 833, "1d": 50_000}
    with pytest.raises(ValueError, match="supported: 1m, 5m, 15m, 1h, 1d"):
        polygon.timespan(Interval.parse("4h"))


@pytest.mark.parametrize(
    ("ticker", "pair"),
    [
        ("X:BTCUSD", ("BTC", "USD")),
        ("X:ETHBTC", ("ETH", "BTC")),
        ("X:BTCUSDT", ("BTC", "USDT")),
        ("X:USDTUSD", ("USDT", "USD")),
        ("X:DOGEXYZ", ("DOGE", "XYZ")),
    ],
)
def test_crypto_pairs(ticker: str, pair: tuple[str, str]) -> None:
    assert polygon.crypto_pair(ticker) == pair
