"""CoinMarketCap payloads -> canonical frames, quotes and typed errors, from the fixtures."""

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from fks_pipelines.market.frame import COLUMNS, validate
from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers import coinmarketcap as cmc
from fks_pipelines.providers.errors import (
    BadPayload,
    QuotaExhausted,
    RateLimited,
    RequestRejected,
    Unauthorized,
    Unavailable,
    UnknownSymbol,
)
from fks_pipelines_tests.providers.support import assert_bars

FIXTURES = Path(__file__).parent.parent / "fixtures" / "coinmarketcap"
DAILY = Interval.parse("1d")
HOURLY = Interval.parse("1h")
OHLCV_DOCS = "v2_cryptocurrency_ohlcv_historical_BTC_daily_docs_example.json"
QUOTES_BY_ID = "v2_cryptocurrency_quotes_latest_id1_BTC_dzhegash.json"
QUOTES_BY_SLUG = "v2_cryptocurrency_quotes_latest_slug_bitcoin_dzhegash.json"
QUOTES_BY_SYMBOL = "v2_cryptocurrency_quotes_latest_symbol_BTC_dzhegash.json"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


# --- quotes/latest (recorded) -------------------------------------------------------------


def test_recorded_quotes_by_id_parse_to_exactly_their_values() -> None:
    quote = cmc.parse_quotes_latest(load(QUOTES_BY_ID), "1")

    assert quote.provider == "coinmarketcap"
    assert quote.symbol == "1"
    assert quote.price == 21864.74930690019
    assert quote.ts == utc("2022-06-16T07:18:00")


def test_recorded_quotes_by_slug_are_keyed_by_id_too() -> None:
    quote = cmc.parse_quotes_latest(load(QUOTES_BY_SLUG), "1")

    assert quote.price == 21847.757042255787
    assert quote.ts == utc("2022-06-16T07:22:00")


def test_recorded_quotes_by_symbol_are_not_read_as_an_id_answer() -> None:
    # Asked by symbol, data["BTC"] is an array (pitfall 1): the client never asks that way, and
    # an answer keyed by anything but the id asked for is refused, not guessed at.
    with pytest.raises(BadPayload, match="not keyed by the id 1"):
        cmc.parse_quotes_latest(load(QUOTES_BY_SYMBOL), "1")


def test_an_array_under_the_id_key_is_searched_for_the_id() -> None:
    by_symbol = load(QUOTES_BY_SYMBOL)
    payload = {"status": by_symbol["status"], "data": {"1": by_symbol["data"]["BTC"]}}

    quote = cmc.parse_quotes_latest(payload, "1")

    assert quote.price == 21871.88352845583
    assert quote.ts == utc("2022-06-16T07:10:00")


def test_quote_without_its_own_last_updated_uses_the_coins() -> None:
    payload = load(QUOTES_BY_ID)
    del payload["data"]["1"]["quote"]["USD"]["last_updated"]
    payload["data"]["1"]["last_updated"] = "2022-06-16T07:17:00.000Z"

    assert cmc.parse_quotes_latest(payload, "1").ts == utc("2022-06-16T07:17:00")


def test_an_empty_data_object_means_the_id_is_unknown() -> None:
    payload = {"status": load(QUOTES_BY_ID)["status"], "data": {}}
    with pytest.raises(UnknownSymbol):
        cmc.parse_quotes_latest(payload, "999999999")


def _quotes_with(mutate: Any) -> Any:
    payload = load(QUOTES_BY_ID)
    mutate(payload["data"]["1"])
    return payload


@pytest.mark.parametrize(
    "payload",
    [
        _quotes_with(lambda c: c["quote"]["USD"].update(price=0)),
        _quotes_with(lambda c: c["quote"]["USD"].update(price="abc")),
        _quotes_with(lambda c: c["quote"]["USD"].update(price=None)),
        _quotes_with(lambda c: c["quote"].pop("USD")),
        _quotes_with(lambda c: c["quote"]["USD"].update(last_updated="yesterday")),
        _quotes_with(lambda c: c.update(id=1027)),
        {"status": {"error_code": 0}},
        {"data": [1, 2]},
        [],
        "<html>maintenance</html>",
    ],
    ids=[
        "zero-price",
        "text-price",
        "null-price",
        "no-usd",
        "bad-time",
        "other-id",
        "no-data",
        "data-list",
        "list",
        "string",
    ],
)
def test_malformed_quotes_are_bad_payload(payload: Any) -> None:
    with pytest.raises(BadPayload) as caught:
        cmc.parse_quotes_latest(payload, "1")
    assert caught.value.provider == "coinmarketcap"


# --- ohlcv/historical -----------------------------------------------------------------------


def test_ohlcv_docs_example_shape_single_id() -> None:
    # doc-example: shape only, but its numbers must come through untouched
    frame = cmc.parse_ohlcv(load(OHLCV_DOCS), "1", DAILY)

    assert_bars(
        frame,
        provider="coinmarketcap",
        symbol="1",
        interval="1d",
        ts=[utc("2019-01-02"), utc("2019-01-03")],
        open=[3849.21640853, 3931.04863841],
        high=[3947.9812729, 3935.68513083],
        low=[3817.40949569, 3826.22287069],
        close=[3943.40933686, 3836.74131867],
        volume=None,  # CMC states no volume in coins
        quote_volume=[5244856835.70851, 4530215218.84018],  # quote.USD.volume: USD turnover
        vwap=None,
        trades=None,
        bar_kind="traded",
    )


def test_ohlcv_keyed_by_id_shape_parses_the_same() -> None:
    payload = load(OHLCV_DOCS)
    keyed = {"status": payload["status"], "data": {"1": payload["data"]}}

    pd.testing.assert_frame_equal(
        cmc.parse_ohlcv(keyed, "1", DAILY), cmc.parse_ohlcv(payload, "1", DAILY)
    )


def test_ohlcv_keyed_by_other_ids_is_refused() -> None:
    payload = load(OHLCV_DOCS)
    keyed = {"status": payload["status"], "data": {"1027": payload["data"]}}
    with pytest.raises(BadPayload):
        cmc.parse_ohlcv(keyed, "1", DAILY)


def hourly_quote(time_open: str, close: float, volume: float | None) -> dict[str, Any]:
    return {
        "time_open": time_open,
        "time_close": time_open.replace(":00:00.000Z", ":59:59.999Z"),
        "quote": {
            "USD": {"open": 10.0, "high": 12.0, "low": 9.0, "close": close, "volume": volume}
        },
    }


def test_hourly_bars_open_at_time_open_and_a_missing_volume_stays_missing() -> None:
    # CMC has no hourly volume before 2020-09-22; null must not become 0.
    payload = {
        "data": {
            "id": 1,
            "quotes": [
                hourly_quote("2020-09-21T22:00:00.000Z", 11.0, None),
                hourly_quote("2020-09-21T23:00:00.000Z", 11.5, 250.5),
            ],
        },
        "status": {"error_code": 0, "error_message": None, "credit_count": 1},
    }

    frame = cmc.parse_ohlcv(payload, "1", HOURLY)

    assert_bars(
        frame,
        provider="coinmarketcap",
        symbol="1",
        interval="1h",
        ts=[utc("2020-09-21T22:00"), utc("2020-09-21T23:00")],
        open=[10.0, 10.0],
        high=[12.0, 12.0],
        low=[9.0, 9.0],
        close=[11.0, 11.5],
        volume=None,
        quote_volume=[None, 250.5],
        vwap=None,
        trades=None,
        bar_kind="traded",
    )


def test_empty_quotes_are_an_empty_canonical_frame() -> None:
    frame = cmc.parse_ohlcv({"data": {"id": 1, "quotes": []}}, "1", DAILY)
    assert frame.empty and list(frame.columns) == list(COLUMNS)
    validate(frame)


def _ohlcv_with(mutate: Any) -> Any:
    payload = copy.deepcopy(load(OHLCV_DOCS))
    mutate(payload["data"])
    return payload


def _quote(index: int, **values: Any) -> Any:
    return lambda data: data["quotes"][index]["quote"]["USD"].update(values)


@pytest.mark.parametrize(
    "payload",
    [
        _ohlcv_with(_quote(0, close="abc")),
        _ohlcv_with(_quote(1, open=None)),
        _ohlcv_with(lambda d: d["quotes"][0]["quote"].pop("USD")),
        _ohlcv_with(lambda d: d["quotes"][0].pop("time_open")),
        _ohlcv_with(lambda d: d["quotes"][0].update(time_open="not a time")),
        _ohlcv_with(lambda d: d["quotes"][0].update(time_open="2019-01-02T05:00:00.000Z")),
        _ohlcv_with(lambda d: d["quotes"][1].update(time_open="2019-01-02T00:00:00.000Z")),
        _ohlcv_with(lambda d: d["quotes"].append("row")),
        _ohlcv_with(lambda d: d.update(quotes={"a": 1})),
        _ohlcv_with(lambda d: d.update(id=1027)),
        {"data": [], "status": {"error_code": 0}},
        {"status": {"error_code": 0}},
        "date,open\n2019-01-02,1\n",
        None,
    ],
    ids=[
        "text-price",
        "null-price",
        "no-usd",
        "no-time-open",
        "bad-time-open",
        "off-grid",
        "duplicate-period",
        "string-row",
        "quotes-object",
        "other-id",
        "data-list",
        "no-data",
        "csv",
        "none",
    ],
)
def test_malformed_ohlcv_is_bad_payload(payload: Any) -> None:
    with pytest.raises(BadPayload) as caught:
        cmc.parse_ohlcv(payload, "1", DAILY)
    assert caught.value.provider == "coinmarketcap"


def test_only_hourly_and_daily_are_offered() -> None:
    assert cmc.time_period(HOURLY) == "hourly"
    assert cmc.time_period(DAILY) == "daily"
    for name in ("1m", "15m", "4h", "12h"):
        with pytest.raises(ValueError, match="1h and 1d"):
            cmc.time_period(Interval.parse(name))


def test_credits_are_one_per_hundred_points() -> None:
    assert [cmc.credits_for(n) for n in (1, 24, 100, 101, 7544, 10_000)] == [1, 1, 1, 2, 76, 100]
    assert cmc.credit_count(load(QUOTES_BY_ID)) == 1
    assert cmc.credit_count({"status": {"credit_count": None}}) is None
    assert cmc.credit_count("html") is None


# --- errors ---------------------------------------------------------------------------------


def cmc_error(code: int, message: str | None) -> dict[str, Any]:
    return {
        "status": {
            "timestamp": "2024-01-05T12:00:00.000Z",
            "error_code": code,
            "error_message": message,
            "elapsed": 0,
            "credit_count": 0,
        }
    }


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (401, 1001, Unauthorized),
        (401, 1002, Unauthorized),
        (402, 1003, Unauthorized),
        (402, 1004, Unauthorized),
        (403, 1005, Unauthorized),
        (403, 1006, Unauthorized),
        (403, 1007, Unauthorized),
        (429, 1008, RateLimited),
        (429, 1009, QuotaExhausted),
        (429, 1010, QuotaExhausted),
        (429, 1011, RateLimited),
        (500, 500, Unavailable),
        (400, 400, RequestRejected),
    ],
)
@pytest.mark.parametrize("message", ["Some message.", None, ""], ids=["text", "null", "empty"])
def test_documented_error_codes_map_to_their_error(
    status: int, code: int, expected: type, message: str | None
) -> None:
    error = cmc.map_error(httpx.Response(status), cmc_error(code, message))

    assert type(error) is expected
    assert (error.provider, error.status, error.vendor_code) == ("coinmarketcap", status, code)
    assert error.retryable == (expected in (RateLimited, Unavailable))


def test_rate_limit_waits_for_the_minute_to_reset_unless_told() -> None:
    body = cmc_error(1008, "You've exceeded your API Key's HTTP request rate limit.")
    plain = cmc.map_error(httpx.Response(429), body)
    told = cmc.map_error(httpx.Response(429, headers={"Retry-After": "7"}), body)

    assert isinstance(plain, RateLimited) and plain.retry_after == 60
    assert isinstance(told, RateLimited) and told.retry_after == 7


def test_invalid_id_is_unknown_symbol() -> None:
    body = cmc_error(400, 'Invalid value for "id": "999999999"')
    error = cmc.map_error(httpx.Response(400), body)

    assert isinstance(error, UnknownSymbol)
    assert (error.status, error.vendor_code) == (400, 400)
    assert str(error) == (
        'coinmarketcap: unknown id: Invalid value for "id": "999999999" (HTTP 400, code 400)'
    )


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, None, Unauthorized),
        (403, None, Unauthorized),
        (429, None, RateLimited),
        (404, {"statusCode": 404, "error": "Not Found"}, RequestRejected),
        (502, None, Unavailable),
        (503, {"status": "down"}, Unavailable),
    ],
    ids=["401-html", "403-waf", "429-plain", "404-other-shape", "502-html", "503-odd-status"],
)
def test_answers_without_an_envelope_map_by_http_status(
    status: int, body: Any, expected: type
) -> None:
    error = cmc.map_error(httpx.Response(status), body)
    assert type(error) is expected
    assert error.status == status and error.vendor_code is None


def test_errors_inside_http_200_bodies_are_found() -> None:
    assert cmc.check_body(load(QUOTES_BY_ID)) is None  # error_code 0, error_message null
    assert cmc.check_body(load(OHLCV_DOCS)) is None  # error_code 0, error_message ""
    assert cmc.check_body("not json object") is None  # left to the parser (BadPayload)

    throttled = cmc.check_body(cmc_error(1008, None))
    quota = cmc.check_body(cmc_error(1010, "monthly"))
    key = cmc.check_body(cmc_error(1001, ""))

    assert isinstance(throttled, RateLimited) and throttled.status == 200
    assert throttled.vendor_code == 1008 and throttled.retry_after == 60
    assert isinstance(quota, QuotaExhausted) and (quota.status, quota.vendor_code) == (200, 1010)
    assert isinstance(key, Unauthorized) and key.vendor_code == 1001
