"""EODHD payloads -> canonical frames, quotes and typed errors, from the fixtures."""

import json
import logging
from pathlib import Path

import httpx
import pandas as pd
import pytest

from fks_pipelines.market.frame import COLUMNS, validate
from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers import eodhd, secrets
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

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eodhd"
FIVE_MINUTES = Interval.parse("5m")
RECORDED_5M = "intraday_AAPL.US_5m_2026-06-01_selected_rows_tradeseven.json"
SECRET = "5b58b853733183.22292691"


def load(name: str) -> object:
    return json.loads((FIXTURES / name).read_text())


def utc(seconds: int) -> pd.Timestamp:
    return pd.Timestamp(seconds, unit="s", tz="UTC")


# --- intraday --------------------------------------------------------------------------------


def test_recorded_5m_bars_parse_to_exactly_their_values() -> None:
    frame = eodhd.parse_intraday(load(RECORDED_5M), "AAPL.US", FIVE_MINUTES)

    # All 17 recorded rows are bars; the 20:00Z zero-range print with volume null (16:00 New
    # York, the XNYS close on 2026-06-01) is the closing auction, kept with no volume.
    assert_bars(
        frame,
        provider="eodhd",
        symbol="AAPL.US",
        interval="5m",
        ts=[
            utc(s)
            for s in (
                *range(1780320600, 1780323900 + 1, 300),
                1780343400,
                1780343700,
                1780344000,
                1780407000,
                1780407300,
            )
        ],
        open=[
            309.535003, 310.010009, 309.850006, 309.549987, 310.149993, 309.400085, 310.079986,
            309.18991, 309.820007, 309.700012, 309.619995, 308.975006, 307.540008, 306.399993,
            306.309997, 307.459991, 309.630004,
        ],
        high=[
            310.679992, 310.929992, 310.100006, 310.299987, 310.619995, 310.410003, 310.25,
            310.119995, 309.820007, 310.149993, 309.94989, 308.98001, 307.625, 306.48001,
            306.309997, 309.890014, 309.729888,
        ],
        low=[
            308.5, 309.589996, 309.160003, 309.279998, 309.339996, 309.149993, 309.119995,
            309.144989, 309.170013, 309.559997, 308.959991, 307.799987, 306.100006, 305.909912,
            306.309997, 306.720001, 308.122009,
        ],
        close=[
            310.029998, 309.879913, 309.525512, 310.119995, 309.399993, 310.040008, 309.190002,
            309.795013, 309.709014, 309.609985, 308.979888, 307.839996, 306.409912, 306.320007,
            306.309997, 309.654296, 308.570007,
        ],
        volume=[
            3861073, 717238, 633466, 575764, 631506, 523833, 623325, 580451, 445256, 507673,
            498902, 576712, 888035, 2715281, None, 2288506, 788287,
        ],
        quote_volume=None,
        vwap=None,
        trades=None,
        bar_kind=["traded"] * 14 + ["auction"] + ["traded"] * 2,
    )  # fmt: skip
    assert frame["ts"].iloc[0] == pd.Timestamp("2026-06-01T13:30:00Z")  # 09:30 New York (EDT)
    last_of_june_1 = frame.loc[frame["ts"] < pd.Timestamp("2026-06-02", tz="UTC")].iloc[-1]
    assert last_of_june_1["ts"] == pd.Timestamp("2026-06-01T20:00:00Z")
    assert last_of_june_1["close"] == 306.309997
    assert last_of_june_1["bar_kind"] == "auction"
    assert pd.isna(last_of_june_1["volume"])


def test_recorded_timestamps_agree_with_their_utc_datetime_strings() -> None:
    rows = load(RECORDED_5M)
    frame = eodhd.parse_intraday(rows, "AAPL.US", FIVE_MINUTES)
    assert frame["ts"].tolist() == [pd.Timestamp(r["datetime"], tz="UTC") for r in rows]  # type: ignore[union-attr]


def test_the_closing_print_is_an_auction_bar_and_other_volumeless_bars_stay_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    payload = load(RECORDED_5M)
    moved = {**payload[0], "timestamp": 1780321000, "volume": None}  # type: ignore[index]
    caplog.set_level(logging.DEBUG, logger="fks_pipelines.providers.eodhd")

    frame = eodhd.parse_intraday([*payload, moved], "AAPL.US", FIVE_MINUTES)  # type: ignore[misc]

    assert len(frame) == 18
    kinds = dict(zip(frame["ts"], frame["bar_kind"], strict=True))
    assert kinds[utc(1780344000)] == "auction"
    assert kinds[utc(1780321000)] == "traded"  # a null volume is not a claim: kept, null
    assert frame.loc[frame["ts"] == utc(1780321000), "volume"].isna().all()
    assert (frame["bar_kind"] == "auction").sum() == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["eodhd AAPL.US 5m: 1 bar(s) without volume kept with a null volume"]


def bar(ts: str, price: float = 100.0, volume: float | None = None, **prices: float) -> dict:
    return {
        "timestamp": int(pd.Timestamp(ts).timestamp()),
        "open": price,
        "high": prices.get("high", price),
        "low": prices.get("low", price),
        "close": price,
        "volume": volume,
    }


@pytest.mark.parametrize(
    ("row", "symbol", "kind"),
    [
        # winter: the XNYS close is 21:00Z
        (bar("2024-01-05T21:00Z"), "AAPL.US", "auction"),
        (bar("2024-01-05T20:00Z"), "AAPL.US", "traded"),
        # 2024-07-03 is a half day: the close is 13:00 New York, 17:00Z
        (bar("2024-07-03T17:00Z"), "AAPL.US", "auction"),
        (bar("2024-07-03T20:00Z"), "AAPL.US", "traded"),
        # a range is a traded bar, not a one-price print
        (bar("2024-01-05T21:00Z", high=100.5), "AAPL.US", "traded"),
        # a volume is stated: a traded bar
        (bar("2024-01-05T21:00Z", volume=1200.0), "AAPL.US", "traded"),
        # 2024-07-04 is a holiday: no session, no close
        (bar("2024-07-04T20:00Z"), "AAPL.US", "traded"),
        # no calendar is known for other exchanges: no bar is taken for an auction print
        (bar("2024-01-05T16:30Z"), "BMW.XETRA", "traded"),
    ],
    ids=[
        "winter-close",
        "an-hour-early",
        "half-day-close",
        "half-day-full-day-close",
        "with-a-range",
        "with-volume",
        "holiday",
        "other-exchange",
    ],
)
def test_only_one_price_prints_without_volume_at_the_regular_close_are_auctions(
    row: dict, symbol: str, kind: str
) -> None:
    frame = eodhd.parse_intraday([row], symbol, FIVE_MINUTES)

    assert frame["bar_kind"].tolist() == [kind]
    assert frame["close"].tolist() == [row["close"]]
    assert frame["volume"].isna().tolist() == [row["volume"] is None]


def test_intraday_docs_example_shape() -> None:
    frame = eodhd.parse_intraday(
        load("intraday_AAPL.US_5m_openapi_example.json"), "AAPL.US", FIVE_MINUTES
    )
    validate(frame)
    assert frame["ts"].tolist() == [
        pd.Timestamp("2021-08-13T17:35:00Z"),
        pd.Timestamp("2021-08-13T17:40:00Z"),
    ]


def test_empty_intraday_answer_is_an_empty_canonical_frame() -> None:
    frame = eodhd.parse_intraday([], "AAPL.US", FIVE_MINUTES)
    assert frame.empty and list(frame.columns) == list(COLUMNS)
    validate(frame)


# --- eod -------------------------------------------------------------------------------------


def test_eod_docs_example_is_raw_prices_at_the_trading_date() -> None:
    frame = eodhd.parse_eod(load("eod_AAPL.US_daily_openapi_example.json"), "AAPL.US")

    assert_bars(
        frame,
        provider="eodhd",
        symbol="AAPL.US",
        interval="1d",
        ts=[pd.Timestamp("2022-01-03T00:00:00Z"), pd.Timestamp("2022-01-04T00:00:00Z")],
        open=[177.83, 182.63],
        high=[182.88, 182.94],
        low=[177.71, 179.12],
        close=[182.01, 179.7],  # raw close, not adjusted_close
        volume=[104487900, 99310400],  # shares
        quote_volume=None,
        vwap=None,
        trades=None,
        bar_kind="traded",
    )


def test_a_daily_bar_without_volume_is_kept_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = load("eod_AAPL.US_daily_openapi_example.json")
    rows[1]["volume"] = None  # type: ignore[index]

    with caplog.at_level(logging.WARNING, logger="fks_pipelines.providers.eodhd"):
        frame = eodhd.parse_eod(rows, "AAPL.US")

    assert frame["volume"].isna().tolist() == [False, True]
    assert frame["bar_kind"].tolist() == ["traded", "traded"]
    assert [r.getMessage() for r in caplog.records] == [
        "eodhd AAPL.US 1d: 1 bar(s) without volume kept with a null volume"
    ]


def test_free_tier_warning_element_is_dropped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    note = "Data is limited by one year as you have free subscription."
    payload = [*load("eod_AAPL.US_daily_openapi_example.json"), {"warning": note}]  # type: ignore[misc]

    with caplog.at_level(logging.WARNING, logger="fks_pipelines.providers.eodhd"):
        frame = eodhd.parse_eod(payload, "AAPL.US")
        only_warning = eodhd.parse_eod([{"warning": note}], "AAPL.US")

    assert len(frame) == 2
    assert only_warning.empty
    assert any(note in r.getMessage() for r in caplog.records)


# --- real-time -------------------------------------------------------------------------------


def test_real_time_object_docs_example() -> None:
    quote = eodhd.parse_real_time(load("real-time_AAPL.US_openapi_example.json"), "AAPL.US")
    assert (quote.provider, quote.symbol, quote.price) == ("eodhd", "AAPL.US", 231.41)
    assert quote.ts == utc(1729888080)


@pytest.mark.parametrize(
    ("symbol", "price", "seconds"),
    [
        ("AAPL.US", 231.41, 1729888080),
        ("VTI.US", 285.54, 1729887240),
        ("EUR.FOREX", 0.9257, 1729891800),
    ],
)
def test_real_time_array_docs_example(symbol: str, price: float, seconds: int) -> None:
    payload = load("real-time_AAPL.US_s_VTI.US_EUR.FOREX_openapi_example.json")
    quote = eodhd.parse_real_time(payload, symbol)
    assert (quote.symbol, quote.price, quote.ts) == (symbol, price, utc(seconds))


def test_real_time_na_answer_is_unknown_symbol() -> None:
    payload = {"code": "NOPE.US", "timestamp": "NA", "gmtoffset": 0, "close": "NA"}
    with pytest.raises(UnknownSymbol) as caught:
        eodhd.parse_real_time(payload, "NOPE.US")
    assert (caught.value.status, caught.value.vendor_code) == (200, "NA")


@pytest.mark.parametrize(
    "payload",
    [
        {"code": "MSFT.US", "timestamp": 1729888080, "close": 1.0},
        {"code": "AAPL.US", "timestamp": 1729888080, "close": 0},
        {"code": "AAPL.US", "timestamp": 1729888080},
        {"code": "AAPL.US", "timestamp": "soon", "close": 1.0},
        {"code": "AAPL.US", "timestamp": 1729888080.5, "close": 1.0},
        [{"code": "VTI.US", "timestamp": 1, "close": 1.0}],
        "231.41",
        None,
    ],
    ids=[
        "other-symbol",
        "zero-price",
        "no-close",
        "text-time",
        "fractional-time",
        "array-without-it",
        "string",
        "null",
    ],
)
def test_malformed_real_time_is_bad_payload(payload: object) -> None:
    with pytest.raises(BadPayload) as caught:
        eodhd.parse_real_time(payload, "AAPL.US")
    assert caught.value.provider == "eodhd"


# --- malformed bar answers -------------------------------------------------------------------

GOOD_5M = {"timestamp": 1780320600, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 9}
GOOD_1D = {"date": "2022-01-03", "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 9}


@pytest.mark.parametrize(
    "payload",
    [
        {"status": 401, "error": "Unauthorized", "message": "Invalid API token"},
        "Date,Open,High,Low,Close,Adjusted_close,Volume\n2022-01-03,1,2,0.5,1.5,1.4,9\n",
        [[1780320600, 1.0, 2.0, 0.5, 1.5, 9]],
        [1, 2, 3],
        [{**GOOD_5M, "open": "NA"}],
        [{**GOOD_5M, "close": None}],
        [{k: v for k, v in GOOD_5M.items() if k != "high"}],
        [{k: v for k, v in GOOD_5M.items() if k != "volume"}],
        [{**GOOD_5M, "timestamp": None}],
        [{**GOOD_5M, "timestamp": "2026-06-01 13:30:00"}],
        [{**GOOD_5M, "timestamp": 1780320600.5}],
        [GOOD_5M, {"note": "no timestamp"}],
    ],
    ids=[
        "error-object",
        "csv-text",
        "list-of-lists",
        "list-of-numbers",
        "na-price",
        "null-price",
        "missing-high",
        "missing-volume",
        "null-timestamp",
        "string-timestamp",
        "fractional-timestamp",
        "undated-element",
    ],
)
def test_malformed_intraday_is_bad_payload(payload: object) -> None:
    with pytest.raises(BadPayload) as caught:
        eodhd.parse_intraday(payload, "AAPL.US", FIVE_MINUTES)
    assert caught.value.provider == "eodhd"


@pytest.mark.parametrize(
    "payload",
    [
        295.21,  # filter=last_close answers a bare number
        {"date": "2022-01-03"},
        [{**GOOD_1D, "date": "03/01/2022"}],
        [{**GOOD_1D, "date": 20220103}],
        [{**GOOD_1D, "volume": "lots"}],
        [GOOD_1D, {"date": None, "open": 1.0}],
        [{"warning": None}],
    ],
    ids=[
        "bare-number",
        "object",
        "us-date",
        "integer-date",
        "text-volume",
        "null-date-no-warning",
        "null-warning",
    ],
)
def test_malformed_eod_is_bad_payload(payload: object) -> None:
    with pytest.raises(BadPayload):
        eodhd.parse_eod(payload, "AAPL.US")


# --- errors ----------------------------------------------------------------------------------

HTML_429 = "<html><head><title>429 Too Many Requests</title></head></html>"


def answer(
    status: int, text: str = "", headers: dict[str, str] | None = None, content_type: str = ""
) -> httpx.Response:
    return httpx.Response(
        status,
        content=text.encode(),
        headers={"Content-Type": content_type or "text/html", **(headers or {})},
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, Unauthorized),
        (402, Unauthorized),
        (403, Unauthorized),
        (404, UnknownSymbol),
        (400, RequestRejected),
        (422, RequestRejected),
        (500, Unavailable),
        (502, Unavailable),
        (503, Unavailable),
    ],
)
def test_statuses_map_to_their_error_whatever_the_text_body(status: int, expected: type) -> None:
    response = answer(status, f"<html><body>error page for ?api_token={SECRET}</body></html>")
    error = eodhd.map_error(response, None)
    assert type(error) is expected
    assert (error.provider, error.status, error.vendor_code) == ("eodhd", status, None)
    assert SECRET not in str(error) and "<html" not in str(error)


def test_json_401_variant_quotes_its_message() -> None:
    body = {"status": 401, "error": "Unauthorized", "message": "Invalid API token"}
    error = eodhd.map_error(answer(401, json.dumps(body), content_type="application/json"), body)
    assert isinstance(error, Unauthorized)
    assert str(error) == "eodhd: invalid or missing API token: Invalid API token (HTTP 401)"


def test_official_client_forbidden_body_maps_to_unauthorized() -> None:
    error = eodhd.map_error(answer(403, '{"message":"forbidden"}'), {"message": "forbidden"})
    assert isinstance(error, Unauthorized)
    assert "plan" in str(error) and "forbidden" in str(error)


def test_a_token_inside_a_json_message_is_scrubbed() -> None:
    secrets.register(SECRET)
    body = {"message": f"Invalid token {SECRET} for /api/eod/AAPL.US?api_token={SECRET}&fmt=json"}
    error = eodhd.map_error(answer(401), body)
    assert SECRET not in str(error)
    assert str(error) == (
        "eodhd: invalid or missing API token: Invalid token *** for "
        "/api/eod/AAPL.US?api_token=***&fmt=json (HTTP 401)"
    )


def test_an_unregistered_token_in_a_query_string_is_cut() -> None:
    body = {"message": "Invalid request /api/eod/AAPL.US?api_token=not-registered&fmt=json"}
    error = eodhd.map_error(answer(401), body)
    assert "not-registered" not in str(error) and "api_token=***" in str(error)


def test_minute_limit_429_is_rate_limited_with_retry_after() -> None:
    # The header shape of the 429 in EODHD-openapi EXAMPLES.md.
    headers = {"X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": "0", "Retry-After": "60"}
    error = eodhd.map_error(answer(429, HTML_429, headers), None)
    assert type(error) is RateLimited
    assert (error.status, error.retry_after) == (429, 60)
    assert error.retryable


def test_429_with_minute_calls_left_is_the_daily_quota() -> None:
    recorded = load("user_response_headers_rockbound.json")["headers"]  # type: ignore[index]
    headers = {k: v for k, v in recorded.items() if k.startswith("X-RateLimit")}
    assert headers == {"X-RateLimit-Limit": "1200", "X-RateLimit-Remaining": "1174"}
    error = eodhd.map_error(answer(429, HTML_429, headers), None)
    assert isinstance(error, QuotaExhausted)
    assert error.status == 429
    assert not error.retryable


def test_429_saying_daily_is_the_daily_quota() -> None:
    error = eodhd.map_error(answer(429, "You exceeded your daily API requests limit."), None)
    assert isinstance(error, QuotaExhausted)


def test_error_envelope_in_a_200_body_is_found_by_check_body() -> None:
    error = eodhd.check_body({"status": 403, "error": "Forbidden", "message": "plan"})
    assert isinstance(error, Unauthorized) and error.status == 403
    na = eodhd.check_body({"code": "X.US", "timestamp": "NA", "close": "NA"})
    assert isinstance(na, UnknownSymbol)
    assert eodhd.check_body([GOOD_5M]) is None
    assert eodhd.check_body(load("real-time_AAPL.US_openapi_example.json")) is None


# --- request planning ------------------------------------------------------------------------


def test_intraday_spans_respect_the_maximum_and_never_overlap() -> None:
    start = pd.Timestamp("2024-01-01", tz="UTC")
    end = start + pd.Timedelta(days=250)
    spans = eodhd.intraday_spans(Interval.parse("1m"), start, end)

    s0, e0 = int(start.timestamp()), int(end.timestamp())
    day = 86400
    assert spans == [
        (s0, s0 + 120 * day - 1),
        (s0 + 120 * day, s0 + 240 * day - 1),
        (s0 + 240 * day, e0 - 1),
    ]
    assert eodhd.intraday_spans(Interval.parse("5m"), start, end) == [(s0, e0 - 1)]
    assert eodhd.intraday_spans(Interval.parse("1h"), start, start) == []
