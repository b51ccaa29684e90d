"""Alpha Vantage payloads -> canonical frames, quotes and typed errors, from the fixtures."""

import csv
import json
import logging
from pathlib import Path

import httpx
import pandas as pd
import pytest

from fks_pipelines.market.frame import COLUMNS, validate
from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers import alpha_vantage as av
from fks_pipelines.providers import secrets
from fks_pipelines.providers.errors import (
    BadPayload,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    RequestRejected,
    Unauthorized,
    Unavailable,
    UnknownSymbol,
)
from fks_pipelines_tests.providers.support import assert_bars

FIXTURES = Path(__file__).parent.parent / "fixtures" / "alphavantage"
MSFT_1MIN = "time_series_intraday_MSFT_1min_compact_romeltorres.json"
AAPL_15MIN_CSV = "time_series_intraday_AAPL_15min_month2023-01_csv_first28rows_openbb.csv"
ONE_MINUTE = Interval.parse("1m")
FIVE_MINUTES = Interval.parse("5m")
FIFTEEN_MINUTES = Interval.parse("15m")
DAILY = Interval.parse("1d")
SECRET = "AVKEY-parse-41Xz"
DAILY_CAP_TEXT = (
    "Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day. "
    "Please subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to "
    "instantly remove all daily rate limits."
)
BURST_TEXT = (
    "Thank you for using Alpha Vantage! Please consider spreading out your free API requests "
    "more sparingly (1 request per second). You may subscribe to any of the premium plans at "
    "https://www.alphavantage.co/premium/ to lift the free key rate limit (25 requests per day)."
)
PREMIUM_TEXT = (
    "Thank you for using Alpha Vantage! This is a premium endpoint. You may subscribe to any of "
    "the premium plans at https://www.alphavantage.co/premium/ to instantly unlock all premium "
    "endpoints"
)
DEMO_TEXT = (
    "The **demo** API key is for demo purposes only. Please claim your free API key at "
    "(https://www.alphavantage.co/support/#api-key) to explore our full API offerings."
)
MISSING_KEY_TEXT = (
    "the parameter apikey is invalid or missing. Please claim your free API key on "
    "(https://www.alphavantage.co/support/#api-key). It should take less than 20 seconds."
)


def load(name: str) -> object:
    return json.loads((FIXTURES / name).read_text())


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def intraday_body(series: dict, interval: str = "5min", zone: str = "US/Eastern") -> dict:
    return {
        "Meta Data": {
            "1. Information": f"Intraday ({interval}) open, high, low, close prices and volume",
            "2. Symbol": "AAPL",
            "3. Last Refreshed": "2024-03-11 16:00:00",
            "4. Interval": interval,
            "5. Output Size": "Full size",
            "6. Time Zone": zone,
        },
        f"Time Series ({interval})": series,
    }


def row(price: str = "10.0000", volume: str = "100") -> dict[str, str]:
    return {
        "1. open": price,
        "2. high": price,
        "3. low": price,
        "4. close": price,
        "5. volume": volume,
    }


# --- recorded bodies -------------------------------------------------------------------------


def test_recorded_intraday_json_parses_to_exactly_its_values() -> None:
    body = load(MSFT_1MIN)
    frame = av.parse_intraday(body, "MSFT", ONE_MINUTE)

    validate(frame)
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 100
    # Newest first on the wire, oldest first here; 2017-12-18 is EST (UTC-5).
    first, last = frame.iloc[0], frame.iloc[-1]
    assert first["ts"] == utc("2017-12-18T18:17:00")
    assert (first["open"], first["high"], first["low"], first["close"], first["volume"]) == (
        86.8101,
        86.8200,
        86.7900,
        86.8000,
        31172.0,
    )
    assert last["ts"] == utc("2017-12-18T19:56:00")
    assert (last["open"], last["high"], last["low"], last["close"], last["volume"]) == (
        86.49,
        86.50,
        86.475,
        86.50,
        10494.0,
    )
    assert frame.iloc[-2]["low"] == 86.4801
    # Every column of every row, against an independent reading of the file.
    series = body["Time Series (1min)"]
    ordered = sorted(series)
    assert_bars(
        frame,
        provider="alpha_vantage",
        symbol="MSFT",
        interval="1m",
        ts=[pd.Timestamp(k).tz_localize("US/Eastern").tz_convert("UTC") for k in ordered],
        open=[float(series[k]["1. open"]) for k in ordered],
        high=[float(series[k]["2. high"]) for k in ordered],
        low=[float(series[k]["3. low"]) for k in ordered],
        close=[float(series[k]["4. close"]) for k in ordered],
        volume=[float(series[k]["5. volume"]) for k in ordered],  # shares
        quote_volume=None,
        vwap=None,
        trades=None,
        bar_kind="traded",
    )


def test_recorded_csv_parses_to_exactly_its_values() -> None:
    text = (FIXTURES / AAPL_15MIN_CSV).read_bytes().decode()
    assert "\r\n" in text  # CRLF as recorded

    frame = av.parse_csv(text, "AAPL", FIFTEEN_MINUTES)

    validate(frame)
    assert len(frame) == 28
    # 2023-01-30 15:30 EST is the oldest row; 2023-01-31 15:45 EST the newest.
    assert frame["ts"].iloc[0] == utc("2023-01-30T20:30:00")
    assert frame.iloc[0][["open", "high", "low", "close", "volume"]].tolist() == [
        142.0840,
        142.4600,
        141.9990,
        142.4110,
        1792886.0,
    ]
    assert frame["ts"].iloc[2] == utc("2023-01-31T14:30:00")  # the 09:30 opening bar
    assert frame["volume"].iloc[2] == 4394928.0
    assert frame["ts"].iloc[-1] == utc("2023-01-31T20:45:00")  # the 15:45 bar, the session's last
    assert frame.iloc[-1][["open", "high", "low", "close", "volume"]].tolist() == [
        142.4710,
        143.3640,
        142.1380,
        143.3200,
        6111148.0,
    ]
    with (FIXTURES / AAPL_15MIN_CSV).open(newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: r["timestamp"])
    assert_bars(
        frame,
        provider="alpha_vantage",
        symbol="AAPL",
        interval="15m",
        ts=[pd.Timestamp(r["timestamp"]).tz_localize("US/Eastern").tz_convert("UTC") for r in rows],
        open=[float(r["open"]) for r in rows],
        high=[float(r["high"]) for r in rows],
        low=[float(r["low"]) for r in rows],
        close=[float(r["close"]) for r in rows],
        volume=[float(r["volume"]) for r in rows],
        quote_volume=None,
        vwap=None,
        trades=None,
        bar_kind="traded",
    )


LATER = pd.Timestamp("2030-01-01T00:00Z")
"""A time long after any trading day the tests use: the quote is then stamped at the close."""


def global_quote(day: str, price: str = "112.1300") -> dict:
    return {
        "Global Quote": {
            "01. symbol": "MSFT",
            "05. price": price,
            "07. latest trading day": day,
        }
    }


def test_recorded_global_quote_is_stamped_at_the_regular_close_of_its_day() -> None:
    quote = av.parse_global_quote(
        load("global_quote_MSFT_romeltorres.json"), "MSFT", received_at=LATER
    )

    assert quote.provider == "alpha_vantage"
    assert quote.symbol == "MSFT"
    assert quote.price == 112.13
    # 2018-10-05 was a Friday session closing at 16:00 New York (EDT): 20:00Z, not 00:00Z.
    assert quote.ts == utc("2018-10-05T20:00")


def test_during_the_session_the_quote_is_as_of_the_answer() -> None:
    received = utc("2018-10-05T15:07:42")  # 11:07 New York: the price is the latest trade's

    quote = av.parse_global_quote(
        load("global_quote_MSFT_romeltorres.json"), "MSFT", received_at=received
    )

    assert quote.ts == received


@pytest.mark.parametrize(
    ("day", "close"),
    [
        ("2024-01-05", "2024-01-05T21:00"),  # winter: 16:00 EST
        ("2024-07-01", "2024-07-01T20:00"),  # summer: 16:00 EDT
        ("2024-07-03", "2024-07-03T17:00"),  # half day: 13:00 EDT
        ("2024-11-29", "2024-11-29T18:00"),  # half day after Thanksgiving: 13:00 EST
    ],
)
def test_the_close_follows_the_xnys_calendar(day: str, close: str) -> None:
    assert av.parse_global_quote(global_quote(day), "MSFT", received_at=LATER).ts == utc(close)


def test_a_day_the_calendar_has_no_session_for_is_stamped_at_four_in_new_york(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="fks_pipelines.providers.alpha_vantage"):
        quote = av.parse_global_quote(global_quote("2024-07-04"), "MSFT", received_at=LATER)

    assert quote.ts == utc("2024-07-04T20:00")
    assert [r.getMessage() for r in caplog.records] == [
        "alpha_vantage: 2024-07-04 is not an XNYS session; global quote stamped at 16:00 New York"
    ]


def test_empty_global_quote_is_an_unknown_symbol() -> None:
    with pytest.raises(UnknownSymbol) as caught:
        av.parse_global_quote({"Global Quote": {}}, "NOPE", received_at=LATER)
    assert caught.value.status == 200


@pytest.mark.parametrize(
    "body",
    [
        {
            "Global Quote": {
                "01. symbol": "IBM",
                "05. price": "1.0",
                "07. latest trading day": "2024-01-02",
            }
        },
        {
            "Global Quote": {
                "01. symbol": "MSFT",
                "05. price": "n/a",
                "07. latest trading day": "2024-01-02",
            }
        },
        {
            "Global Quote": {
                "01. symbol": "MSFT",
                "05. price": "0",
                "07. latest trading day": "2024-01-02",
            }
        },
        {
            "Global Quote": {
                "01. symbol": "MSFT",
                "05. price": "1.0",
                "07. latest trading day": "yesterday",
            }
        },
        {"Global Quote": {"01. symbol": "MSFT", "07. latest trading day": "2024-01-02"}},
        {"Global Quote": ["MSFT", "1.0"]},
        {"Meta Data": {}},
        ["Global Quote"],
    ],
    ids=["other-symbol", "non-numeric", "zero", "bad-date", "no-price", "list", "no-key", "array"],
)
def test_malformed_global_quote_is_bad_payload(body: object) -> None:
    with pytest.raises(BadPayload):
        av.parse_global_quote(body, "MSFT", received_at=LATER)


# --- timestamps ------------------------------------------------------------------------------


def test_intraday_keys_are_bar_starts_localised_across_dst() -> None:
    # US DST began 2024-03-10: 09:30 New York is 14:30 UTC on the 8th, 13:30 UTC on the 11th.
    body = intraday_body(
        {
            "2024-03-11 09:35:00": row("12.0000"),
            "2024-03-11 09:30:00": row("11.0000"),
            "2024-03-08 15:55:00": row("10.5000"),
            "2024-03-08 09:30:00": row("10.0000"),
        }
    )

    frame = av.parse_intraday(body, "AAPL", FIVE_MINUTES)

    assert frame["ts"].tolist() == [
        utc("2024-03-08T14:30:00"),
        utc("2024-03-08T20:55:00"),
        utc("2024-03-11T13:30:00"),
        utc("2024-03-11T13:35:00"),
    ]
    assert frame["open"].tolist() == [10.0, 10.5, 11.0, 12.0]


def test_the_time_zone_entry_is_found_by_its_suffix_whatever_its_number() -> None:
    body = intraday_body({"2024-01-02 10:00:00": row()}, zone="UTC")
    body["Meta Data"] = {"1. Information": "x", "7. Time Zone": "UTC", "4. Interval": "5min"}

    frame = av.parse_intraday(body, "BTC", FIVE_MINUTES)

    assert frame["ts"].tolist() == [utc("2024-01-02T10:00:00")]


def test_daily_keys_are_trading_dates_at_midnight_utc() -> None:
    body = {
        "Meta Data": {"1. Information": av.DAILY_SERIES, "5. Time Zone": "US/Eastern"},
        "Time Series (Daily)": {
            "2024-01-03": row("101.5000", "2000"),
            "2024-01-02": row("100.0000", "1000"),
        },
    }

    frame = av.parse_daily(body, "AAPL")

    validate(frame)
    assert frame["ts"].tolist() == [utc("2024-01-02"), utc("2024-01-03")]
    assert frame["close"].tolist() == [100.0, 101.5]
    assert frame["volume"].tolist() == [1000.0, 2000.0]
    assert set(frame["interval"]) == {"1d"}


def test_empty_series_give_empty_frames() -> None:
    assert av.parse_daily({"Time Series (Daily)": {}}, "AAPL").empty
    assert av.parse_intraday(intraday_body({}), "AAPL", FIVE_MINUTES).empty


# --- malformed bodies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        intraday_body({"2024-03-11 09:30:00": {**row(), "2. high": "n/a"}}),
        intraday_body({"2024-03-11 09:30:00": {"1. open": "1", "4. close": "1"}}),
        intraday_body({"2024-03-11 09:30:00": "10.0"}),
        intraday_body({"2024-03-11 09:30:00": ["1", "1", "1", "1", "1"]}),
        intraday_body({"2024-03-11 09:30:00": {**row(), "5. volume": None}}),
        intraday_body({"yesterday": row()}),
        intraday_body({"2024-03-11 09:30:00": row()}, zone="Mars/Olympus"),
        intraday_body({"2023-11-05 01:30:00": row()}),  # ambiguous: DST ended at 02:00
        intraday_body({"2024-03-10 02:30:00": row()}),  # does not exist: DST began at 02:00
        intraday_body({"2024-03-11 09:30:00": row()}, interval="1min"),  # another interval
        {**intraday_body({"2024-03-11 09:30:00": row()}), "Meta Data": {"4. Interval": "5min"}},
        {"Time Series (5min)": [["2024-03-11 09:30:00", "1"]]},
        {"Meta Data": {}},
        {},
        [],
        "text",
    ],
    ids=[
        "non-numeric",
        "missing-fields",
        "row-not-object",
        "row-list",
        "null-volume",
        "bad-time",
        "unknown-zone",
        "ambiguous-time",
        "nonexistent-time",
        "other-interval",
        "no-zone",
        "series-list",
        "no-series",
        "empty-object",
        "array",
        "string",
    ],
)
def test_malformed_intraday_is_bad_payload(body: object) -> None:
    with pytest.raises(BadPayload):
        av.parse_intraday(body, "AAPL", FIVE_MINUTES)


@pytest.mark.parametrize(
    "body",
    [
        {"Time Series (Daily)": {"2024-01-02": {**row(), "1. open": ""}}},
        {"Time Series (Daily)": {"02/01/2024": row()}},
        {"Time Series (Daily)": {"2024-01-02": 1}},
        {"Time Series (5min)": {"2024-01-02 10:00:00": row()}},
    ],
    ids=["empty-value", "bad-date", "row-number", "wrong-series"],
)
def test_malformed_daily_is_bad_payload(body: object) -> None:
    with pytest.raises(BadPayload):
        av.parse_daily(body, "AAPL")


@pytest.mark.parametrize(
    "text",
    [
        "<html><body>Application Error</body></html>",
        "timestamp,open,high\r\n2023-01-31 15:45:00,1,2\r\n",
        "timestamp,open,high,low,close,volume\r\n2023-01-31 15:45:00,1,2,x,1,1\r\n",
        "{not json",
        '{"unexpected": 1}',
    ],
    ids=["html", "missing-columns", "non-numeric", "broken-json", "json-without-error"],
)
def test_malformed_csv_is_bad_payload(text: str) -> None:
    with pytest.raises(BadPayload):
        av.parse_csv(text, "AAPL", FIFTEEN_MINUTES)


def test_json_error_instead_of_csv_is_detected() -> None:
    text = (FIXTURES / "error_200_note_rate_limit_5_per_minute_issue_quote.json").read_text()
    with pytest.raises(RateLimited) as caught:
        av.parse_csv(text, "AAPL", FIFTEEN_MINUTES)
    assert caught.value.vendor_code == "Note"

    text = (FIXTURES / "error_200_error_message_invalid_call_FX_DAILY_issue_quote.json").read_text()
    with pytest.raises(UnknownSymbol):
        av.parse_csv(text, "AAPL", FIFTEEN_MINUTES)


def test_csv_daily_rows_are_midnight_utc() -> None:
    text = (
        "timestamp,open,high,low,close,volume\r\n2024-01-03,2,2,2,2,5\r\n2024-01-02,1,1,1,1,4\r\n"
    )
    frame = av.parse_csv(text, "AAPL", DAILY)
    assert frame["ts"].tolist() == [utc("2024-01-02"), utc("2024-01-03")]


# --- errors in HTTP 200 bodies ---------------------------------------------------------------


def test_recorded_note_is_a_rate_limit_with_a_minute_to_wait() -> None:
    error = av.classify(load("error_200_note_rate_limit_5_per_minute_issue_quote.json"))

    assert isinstance(error, RateLimited)
    assert (error.status, error.vendor_code, error.retry_after) == (200, "Note", 60.0)
    assert "alpha_vantage: rate limited" in str(error) and "code Note" in str(error)


def test_recorded_error_message_is_an_unknown_symbol() -> None:
    body = load("error_200_error_message_invalid_call_FX_DAILY_issue_quote.json")
    error = av.classify(body)

    assert isinstance(error, UnknownSymbol)
    assert (error.status, error.vendor_code) == (200, "Error Message")


@pytest.mark.parametrize(
    ("body", "expected", "retry_after"),
    [
        ({"Information": DAILY_CAP_TEXT}, QuotaExhausted, None),
        ({"Information": BURST_TEXT}, RateLimited, 1.0),
        (
            {"Information": "You have exceeded the rate limit per minute for your plan"},
            RateLimited,
            60.0,
        ),
        ({"Information": PREMIUM_TEXT}, Unauthorized, None),
        ({"Information": DEMO_TEXT}, Unauthorized, None),
        ({"Information": "Something new."}, RequestRejected, None),
        ({"Error Message": MISSING_KEY_TEXT}, Unauthorized, None),
        ({"Error Message": "This API function (NOPE) does not exist."}, RequestRejected, None),
    ],
    ids=["daily-cap", "burst", "per-minute", "premium", "demo", "other-info", "key", "function"],
)
def test_documented_error_bodies_map_by_their_text(
    body: dict, expected: type[ProviderError], retry_after: float | None
) -> None:
    error = av.classify(body)

    assert type(error) is expected
    assert error.status == 200
    assert error.vendor_code == next(iter(body))
    assert getattr(error, "retry_after", None) == retry_after


def test_data_bodies_are_not_errors() -> None:
    assert av.classify(load(MSFT_1MIN)) is None
    assert av.classify(load("global_quote_MSFT_romeltorres.json")) is None
    assert av.classify([1, 2]) is None


@pytest.mark.parametrize("status", [200, 403])
def test_a_message_echoing_the_key_is_redacted_whatever_the_status(status: int) -> None:
    secrets.register(SECRET)
    body = {"Information": f"We have detected your API key as {SECRET} and ... 25 requests per day"}

    error = (
        av.classify(body, status=status)
        if status == 200
        else av.map_error(httpx.Response(status, json=body), body)
    )

    assert isinstance(error, QuotaExhausted)
    assert SECRET not in str(error) and SECRET not in repr(error.args)
    assert "We have detected your API key as *** and" in error.reason


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (503, b"<html>Application Error</html>", Unavailable),
        (429, b"", RateLimited),
        (401, b"", Unauthorized),
        (404, b"<html>Not Found</html>", RequestRejected),
        (400, json.dumps({"Error Message": "Invalid API call. for X."}).encode(), UnknownSymbol),
    ],
)
def test_http_error_statuses_map_to_typed_errors(
    status: int, body: bytes, expected: type[ProviderError]
) -> None:
    response = httpx.Response(status, content=body)
    decoded = json.loads(body) if body.startswith(b"{") else None

    error = av.map_error(response, decoded)

    assert type(error) is expected
    assert error.status == status
    assert error.provider == "alpha_vantage"


def test_429_honours_retry_after() -> None:
    error = av.map_error(httpx.Response(429, headers={"Retry-After": "7"}), None)
    assert isinstance(error, RateLimited) and error.retry_after == 7


# --- intervals and months --------------------------------------------------------------------


def test_interval_names() -> None:
    assert av.av_interval_name(Interval.parse("1h")) == "60min"
    assert av.av_interval_name(Interval.parse("30m")) == "30min"
    with pytest.raises(ValueError, match="supported: 1m, 5m, 15m, 30m, 1h, 1d"):
        av.av_interval_name(Interval.parse("4h"))


def test_months_touched() -> None:
    assert av.months_touched(utc("2024-01-31"), utc("2024-02-01")) == ["2024-01"]
    assert av.months_touched(utc("2024-01-31"), utc("2024-03-01T00:00:01")) == [
        "2024-01",
        "2024-02",
        "2024-03",
    ]
    assert av.months_touched(utc("2024-01-31"), utc("2024-01-31")) == []
