"""Parsing the three webhook shapes into one event model, and refusing everything else."""

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings

from fks_pipelines.webhooks.events import EventError, canonical_hash, parse_events
from fks_pipelines_tests.webhooks.samples import (
    BINANCE_DOCS_KLINE,
    GENERIC,
    POLYGON_DOCS_AM,
    body,
    closed_kline,
)
from fks_pipelines_tests.webhooks.strategies import YEAR_9999_MS, signed_bodies


def test_a_binance_kline_event() -> None:
    delivery = parse_events("binance", body(BINANCE_DOCS_KLINE))

    [event] = delivery.events
    assert not delivery.batch
    assert event.id == "binance:BTCUSDT:1m:1638747660000:1638747660000"
    assert (event.source, event.provider, event.symbol, event.interval) == (
        "binance",
        "binance",
        "BTCUSDT",
        "1m",
    )
    assert event.start == datetime(2021, 12, 5, 23, 41, tzinfo=UTC)
    assert event.end == datetime(2021, 12, 5, 23, 42, tzinfo=UTC)  # T + 1 ms
    assert event.closed is False
    assert event.payload == BINANCE_DOCS_KLINE  # kept whole, unknown fields included
    assert event.payload_hash == canonical_hash(BINANCE_DOCS_KLINE)


def test_a_polygon_list_of_minute_aggregates() -> None:
    later = {**POLYGON_DOCS_AM, "sym": "AAPL", "s": 1610144700000, "e": 1610144760000}

    delivery = parse_events("polygon", body([POLYGON_DOCS_AM, later]))

    assert delivery.batch
    assert [e.id for e in delivery.events] == [
        "polygon:AM:GTE:1610144640000",
        "polygon:AM:AAPL:1610144700000",
    ]
    first = delivery.events[0]
    assert (first.provider, first.interval, first.closed) == ("polygon", "1m", True)
    assert first.start == datetime(2021, 1, 8, 22, 24, tzinfo=UTC)
    assert first.end == datetime(2021, 1, 8, 22, 25, tzinfo=UTC)


def test_a_single_polygon_event_is_accepted_too() -> None:
    assert not parse_events("polygon", body(POLYGON_DOCS_AM)).batch


def test_a_generic_event_is_identified_by_its_payload_or_its_sender_id() -> None:
    [event] = parse_events("generic", body(GENERIC)).events
    [named] = parse_events("generic", body({**GENERIC, "id": "eod-2024-01-08"})).events

    assert event.id == f"generic:sha256:{canonical_hash(GENERIC)}"
    assert (event.provider, event.symbol, event.interval) == ("eodhd", "AAPL.US", "1d")
    assert (event.start, event.end) == (
        datetime(2024, 1, 5, tzinfo=UTC),
        datetime(2024, 1, 9, tzinfo=UTC),
    )
    assert named.id == "generic:id:eod-2024-01-08"


def test_the_payload_hash_ignores_key_order_and_spacing() -> None:
    reordered = json.dumps(dict(reversed(GENERIC.items())), indent=2).encode()

    [a] = parse_events("generic", body(GENERIC)).events
    [b] = parse_events("generic", reordered).events

    assert (a.id, a.payload_hash) == (b.id, b.payload_hash)


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"not json", b'{"e": NaN}', b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000],
)
def test_a_body_that_is_not_json_is_malformed(raw: bytes) -> None:
    with pytest.raises(EventError) as refused:
        parse_events("binance", raw)

    assert refused.value.kind == "malformed"


def kline(**changes: object) -> dict[str, object]:
    return {**BINANCE_DOCS_KLINE, "k": {**BINANCE_DOCS_KLINE["k"], **changes}}  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("source", "payload", "says"),
    [
        ("binance", [], "empty list"),
        ("binance", 42, "expected a JSON object"),
        ("binance", [BINANCE_DOCS_KLINE, "x"], "event 1: expected a JSON object"),
        ("binance", POLYGON_DOCS_AM, "not a BinanceKlineEvent"),  # the wrong route's shape
        ("binance", {**BINANCE_DOCS_KLINE, "e": "aggTrade"}, "e: Input should be 'kline'"),
        ("binance", kline(o=None), "k.o"),
        ("binance", kline(o="1,5"), "k.o"),
        ("binance", kline(x="true"), "k.x"),
        ("binance", kline(t="1638747660000"), "k.t"),
        ("binance", kline(t=-1), "k.t"),
        ("binance", kline(T=10**20), "k.T"),
        ("binance", kline(T=1638747660000), "close time"),
        ("binance", kline(h="0.0010"), "high"),
        ("binance", kline(s="ETHUSDT"), "differs"),
        ("binance", {**BINANCE_DOCS_KLINE, "s": "BTC USDT"}, "s: String should match"),
        ("polygon", {**POLYGON_DOCS_AM, "ev": "A"}, "ev"),
        ("polygon", {**POLYGON_DOCS_AM, "e": 1610144640001}, "60000 ms"),
        ("polygon", {**POLYGON_DOCS_AM, "v": -1}, "volume"),
        ("generic", {**GENERIC, "event": "ohlcv.deleted"}, "event"),
        ("generic", {**GENERIC, "end": GENERIC["start"]}, "end must be after start"),
        ("generic", {**GENERIC, "start": "2024-01-05T00:00:00"}, "timezone"),
        ("generic", {**GENERIC, "provider": "Binance!"}, "provider"),
        ("generic", {**GENERIC, "interval": "hourly"}, "interval"),
        ("generic", {**GENERIC, "symbol": "x" * 65}, "symbol"),
        ("generic", {**GENERIC, "extra": 1}, "extra: Extra inputs are not permitted"),
        ("generic", {**GENERIC, "id": "a b"}, "id"),
        ("generic", {k: v for k, v in GENERIC.items() if k != "symbol"}, "symbol: Field required"),
        ("polygon", {**POLYGON_DOCS_AM, "note": "a\x00b"}, "NUL"),
        ("polygon", {**POLYGON_DOCS_AM, "note": "\ud800"}, "invalid Unicode"),
    ],
)
def test_an_unknown_shape_or_a_bad_field_is_invalid(
    source: str, payload: object, says: str
) -> None:
    with pytest.raises(EventError) as refused:
        parse_events(source, body(payload))

    assert refused.value.kind == "invalid"
    assert says in refused.value.message


def test_a_number_beyond_a_float_is_invalid() -> None:
    raw = json.dumps(POLYGON_DOCS_AM).replace('"c": 0.4486', '"c": 1e400').encode()

    with pytest.raises(EventError) as refused:
        parse_events("polygon", raw)

    assert "c: Input should be a finite number" in refused.value.message


@pytest.mark.parametrize("depth", [40, 990, 5000])
def test_deeply_nested_extra_fields_are_refused(depth: int) -> None:
    nested = "[" * depth + "1" + "]" * depth
    raw = json.dumps({**POLYGON_DOCS_AM, "extra": "X"}).replace('"X"', nested).encode()

    with pytest.raises(EventError, match=r"nested|recursion"):
        parse_events("polygon", raw)


def test_nesting_within_the_limit_is_kept() -> None:
    nested = {"a": [[{"b": [1, 2]}]]}

    [event] = parse_events("polygon", body({**POLYGON_DOCS_AM, "extra": nested})).events

    assert event.payload["extra"] == nested


@pytest.mark.parametrize(
    ("source", "payload", "field"),
    [
        ("binance", kline(T=YEAR_9999_MS), "k.T"),
        ("binance", kline(t=0, T=59_999), "k.t"),
        ("binance", kline(t=946684799000, T=946684859000), "k.t"),  # 1999-12-31 23:59:59
        ("binance", {**BINANCE_DOCS_KLINE, "E": YEAR_9999_MS}, "E"),
        ("binance", kline(t=4133980800000, T=4133980859999), "k.t"),  # 2101-01-01
        ("polygon", {**POLYGON_DOCS_AM, "s": YEAR_9999_MS - 60_000, "e": YEAR_9999_MS}, "s"),
        ("generic", {**GENERIC, "start": "0001-01-01T00:00:00+01:00"}, "start"),
        ("generic", {**GENERIC, "end": "9999-12-31T23:00:00-05:00"}, "end"),
        ("generic", {**GENERIC, "start": "1999-12-31T23:59:59Z"}, "start"),
        ("generic", {**GENERIC, "end": "2101-01-01T00:00:01Z"}, "end"),
    ],
)
def test_a_time_outside_the_years_2000_to_2100_is_refused_naming_the_field(
    source: str, payload: object, field: str
) -> None:
    """Such times made ``OverflowError: date value out of range`` (a 500 and a reset
    connection) or stored nonsense; the partitions begin in 2000."""
    with pytest.raises(EventError) as refused:
        parse_events(source, body(payload))

    assert refused.value.kind == "invalid"
    assert f"{field}: " in refused.value.message
    assert "2000-2100" in refused.value.message


def test_the_edges_of_the_range_are_accepted() -> None:
    first = kline(t=946684800000, T=946684859999)  # 2000-01-01 00:00, a minute bar
    last = kline(t=4133980740000, T=4133980799999)  # 2100-12-31 23:59, a minute bar
    window = {**GENERIC, "start": "2000-01-01T00:00:00Z", "end": "2101-01-01T00:00:00Z"}

    [a] = parse_events("binance", body(first)).events
    [b] = parse_events("binance", body(last)).events
    [c] = parse_events("generic", body(window)).events

    assert a.start == datetime(2000, 1, 1, tzinfo=UTC)
    assert b.end == datetime(2101, 1, 1, tzinfo=UTC)
    assert (c.start, c.end) == (datetime(2000, 1, 1, tzinfo=UTC), datetime(2101, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("source", "payload", "number", "field"),
    [
        ("binance", kline(q="N"), "1e400", "k.q"),  # an extra field of the kline
        ("binance", {**BINANCE_DOCS_KLINE, "extra": {"a": ["N"]}}, "-1e400", "extra.a[0]"),
        ("polygon", [POLYGON_DOCS_AM, {**POLYGON_DOCS_AM, "vw": "N"}], "1E+999", "event 1: vw"),
        ("polygon", {**POLYGON_DOCS_AM, "c": "N"}, "1e400", "c"),  # a modelled field
    ],
)
def test_a_number_beyond_a_float_anywhere_is_refused_naming_the_field(
    source: str, payload: object, number: str, field: str
) -> None:
    """``1e400`` parsed to infinity, which PostgreSQL's jsonb refuses: the answer was a 503
    ("retry"), so the sender retried for ever."""
    raw = body(payload).replace(b'"N"', number.encode())

    with pytest.raises(EventError) as refused:
        parse_events(source, raw)

    assert refused.value.kind == "invalid"
    assert f"{field}: " in refused.value.message
    assert "finite" in refused.value.message


@pytest.mark.parametrize("price", ["1e400", "-1E+309", "NaN", "Infinity"])
def test_a_price_string_beyond_a_float_is_refused(price: str) -> None:
    with pytest.raises(EventError) as refused:
        parse_events("binance", body(kline(c=price)))

    assert "k.c" in refused.value.message


# Property: whatever a sender signs, parsing gives events the warehouse can store, or an
# EventError (answered 400 or 422); never another exception (a 500).


@settings(max_examples=500, deadline=None)
@given(case=signed_bodies)
def test_every_body_is_storable_events_or_an_event_error(case: tuple[str, bytes]) -> None:
    source, raw = case
    try:
        delivery = parse_events(source, raw)
    except EventError as exc:
        assert exc.kind in ("malformed", "invalid")
        return
    for event in delivery.events:
        assert datetime(2000, 1, 1, tzinfo=UTC) <= event.start < event.end
        assert event.end <= datetime(2101, 1, 1, tzinfo=UTC)
        json.dumps(event.payload, allow_nan=False).encode()  # what jsonb would refuse raises


def test_a_closed_kline_is_one_event_whatever_its_event_time() -> None:
    """The stream's close and a REST gap fill's copy of the same bar (another ``E``) are one
    event; open klines stay one event per update."""
    streamed = closed_kline("BTCUSDT", "1h", 1704448800000, event_ms=1704452400012)
    fetched = closed_kline("BTCUSDT", "1h", 1704448800000, event_ms=1704452400000)
    update = {**streamed, "k": {**streamed["k"], "x": False}}

    [a] = parse_events("binance", body(streamed)).events
    [b] = parse_events("binance", body(fetched)).events
    [c] = parse_events("binance", body(update)).events

    assert a.id == b.id == "binance:BTCUSDT:1h:1704448800000:closed"
    assert c.id == "binance:BTCUSDT:1h:1704448800000:1704452400012"
