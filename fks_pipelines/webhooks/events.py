"""The webhook event shapes and the one event model they are parsed into.

Three shapes, one per route (each route takes one event object or a JSON list of them, as
Polygon delivers its events):

- ``binance``: a kline event of Binance's market streams,
  ``{"e":"kline","E":<event ms>,"s":"BTCUSDT","k":{"t":<open ms>,"T":<close ms>,"i":"1h",
  "o":"..","c":"..","h":"..","l":"..","v":"..","x":<closed>,...}}`` (prices as strings).
- ``polygon``: a minute aggregate, ``{"ev":"AM","sym":"AAPL","o":..,"h":..,"l":..,"c":..,
  "v":..,"s":<start ms>,"e":<end ms>,...}``.
- ``generic``: ``{"event":"ohlcv.updated","provider":..,"symbol":..,"interval":..,
  "start":<ISO-8601>,"end":<ISO-8601>}`` with an optional sender ``id``: the bars of
  ``[start, end)`` changed.

Every event gets an id: the provider's own identity where it has one (Polygon: symbol and window
start; Binance: symbol, interval and kline open, and the event time while the kline is open: a
kline closes once, so its closed event is the same fact whether the stream or a REST gap fill
delivered it), the sender's ``id`` for the generic shape, else a hash of the canonical payload.
The payload hash (SHA-256 of the canonical JSON: sorted keys, no spaces) identifies a re-delivery
even under another id.

Bounds: whatever is parsed must be storable, so that a signed body is either stored or refused
as the sender's fault (422 naming the field), never a server error or a "retry later". Times
(bar and event times, generic windows) lie in the years 2000-2100 (:data:`EARLIEST`,
:data:`LATEST`): the partitions of the assets begin in 2000, and anything outside Python's
years 1-9999 overflowed when made into a datetime. Numbers anywhere in the payload are finite
(JSON's ``1e400`` parses as infinity, which PostgreSQL's jsonb refuses), prices also when sent
as strings.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

SOURCES = ("binance", "polygon", "generic")

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
"""No time of an event lies before this (the assets' partitions begin in 2000)."""
LATEST = datetime(2101, 1, 1, tzinfo=UTC)
"""Every time of an event lies before this: the years 2000-2100."""
EARLIEST_MS = int(EARLIEST.timestamp() * 1000)
LATEST_MS = int(LATEST.timestamp() * 1000)


def _finite(value: Decimal) -> Decimal:
    """A price as a string may be a decimal no float holds (``"1e400"``): refused like the
    number ``1e400``."""
    if not math.isfinite(float(value)):
        raise ValueError("the number is out of range (beyond ±1.8e308)")
    return value


def _in_years(ms: int) -> int:
    if not EARLIEST_MS <= ms < LATEST_MS:
        raise ValueError(
            f"{ms} ms is out of range: times lie in the years 2000-2100 "
            f"([{EARLIEST_MS}, {LATEST_MS}) ms since 1970)"
        )
    return ms


# Unix milliseconds within the years 2000-2100 (see the module).
Millis = Annotated[
    StrictInt,
    AfterValidator(_in_years),
    Field(json_schema_extra={"minimum": EARLIEST_MS, "exclusiveMaximum": LATEST_MS}),
]
Price = Annotated[Decimal, Field(allow_inf_nan=False), AfterValidator(_finite)]
Number = Annotated[float, Field(allow_inf_nan=False)]
Symbol = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w:./\-]*$")]
IntervalName = Annotated[str, Field(min_length=2, max_length=8, pattern=r"^[0-9]+[A-Za-z]$")]
ProviderName = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]*$")]
SenderId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\w.:\-]+$")]

POLYGON_MINUTE_MS = 60_000
MAX_DEPTH = 32  # levels of nested objects and lists in an event

BINANCE_EXAMPLE = {
    "e": "kline",
    "E": 1704412800123,
    "s": "BTCUSDT",
    "k": {
        "t": 1704409200000,
        "T": 1704412799999,
        "s": "BTCUSDT",
        "i": "1h",
        "o": "44150.10",
        "c": "44210.00",
        "h": "44290.50",
        "l": "44100.00",
        "v": "1520.337",
        "x": True,
    },
}
POLYGON_EXAMPLE = {
    "ev": "AM",
    "sym": "AAPL",
    "v": 12345,
    "o": 185.31,
    "h": 185.40,
    "l": 185.20,
    "c": 185.33,
    "s": 1704465000000,
    "e": 1704465060000,
}
GENERIC_EXAMPLE = {
    "event": "ohlcv.updated",
    "provider": "binance",
    "symbol": "ETHUSDT",
    "interval": "1h",
    "start": "2024-01-05T00:00:00Z",
    "end": "2024-01-06T00:00:00Z",
}


class EventError(ValueError):
    """A body that is not an event: ``malformed`` (not JSON) or ``invalid`` (not a known shape,
    or a bad field)."""

    def __init__(self, kind: Literal["malformed", "invalid"], message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class BinanceKline(BaseModel):
    """The ``k`` object of a Binance kline event."""

    model_config = ConfigDict(extra="allow")

    t: Millis = Field(description="Kline open time, ms.")
    T: Millis = Field(description="Kline close time, ms (open + interval - 1).")
    s: Symbol | None = Field(default=None, description="Symbol (same as the event's).")
    i: IntervalName = Field(description="Interval, e.g. 1h.")
    o: Price
    c: Price
    h: Price
    l: Price  # noqa: E741 - Binance's field name
    v: Price = Field(description="Base asset volume.")
    x: StrictBool = Field(description="Whether this kline is closed.")

    @model_validator(mode="after")
    def _consistent(self) -> BinanceKline:
        if self.t >= self.T:
            raise ValueError("k.T (close time) must be after k.t (open time)")
        if self.h < self.l:
            raise ValueError("k.h (high) is below k.l (low)")
        if self.v < 0:
            raise ValueError("k.v (volume) is negative")
        return self


class BinanceKlineEvent(BaseModel):
    """A kline event of Binance's ``<symbol>@kline_<interval>`` stream."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [BINANCE_EXAMPLE]})

    e: Literal["kline"]
    E: Millis = Field(description="Event time, ms.")
    s: Symbol
    k: BinanceKline

    @model_validator(mode="after")
    def _same_symbol(self) -> BinanceKlineEvent:
        if self.k.s is not None and self.k.s != self.s:
            raise ValueError(f"k.s ({self.k.s}) differs from s ({self.s})")
        return self


class PolygonAggregate(BaseModel):
    """A minute aggregate (``AM``) of Polygon's stocks or crypto streams."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [POLYGON_EXAMPLE]})

    ev: Literal["AM"]
    sym: Symbol
    o: Number
    h: Number
    l: Number  # noqa: E741 - Polygon's field name
    c: Number
    v: Number = Field(description="Volume of the minute.")
    s: Millis = Field(description="Window start, ms.")
    e: Millis = Field(description="Window end, ms.")

    @model_validator(mode="after")
    def _consistent(self) -> PolygonAggregate:
        if self.e - self.s != POLYGON_MINUTE_MS:
            raise ValueError("an AM (minute) aggregate spans 60000 ms from s to e")
        if self.h < self.l:
            raise ValueError("h (high) is below l (low)")
        if self.v < 0:
            raise ValueError("v (volume) is negative")
        return self


class GenericEvent(BaseModel):
    """Our own notice: the bars of ``[start, end)`` of a provider's symbol changed."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [GENERIC_EXAMPLE]})

    event: Literal["ohlcv.updated"]
    id: SenderId | None = Field(
        default=None, description="Optional sender id; a re-delivery keeps it."
    )
    provider: ProviderName
    symbol: Symbol
    interval: IntervalName
    start: AwareDatetime = Field(description="Window start (ISO-8601 with offset).")
    end: AwareDatetime = Field(description="Window end, exclusive.")

    @field_validator("start", "end")
    @classmethod
    def _in_range(cls, value: datetime) -> datetime:
        # Compared before any conversion: year 1 at +01:00 has no UTC datetime to convert to.
        if not EARLIEST <= value <= LATEST:
            raise ValueError(
                f"{value.isoformat()} is out of range: times lie in the years 2000-2100 "
                f"([{EARLIEST:%Y-%m-%dT%H:%MZ}, {LATEST:%Y-%m-%dT%H:%MZ}])"
            )
        return value

    @model_validator(mode="after")
    def _window(self) -> GenericEvent:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


SHAPES: dict[str, type[BaseModel]] = {
    "binance": BinanceKlineEvent,
    "polygon": PolygonAggregate,
    "generic": GenericEvent,
}
EXAMPLES: dict[str, object] = {
    "binance": BINANCE_EXAMPLE,
    "polygon": [POLYGON_EXAMPLE],  # Polygon delivers lists
    "generic": GENERIC_EXAMPLE,
}


@dataclass(frozen=True)
class Delivery:
    """The events of one request body; ``batch`` when the body was a JSON list."""

    events: list[WebhookEvent]
    batch: bool


@dataclass(frozen=True)
class WebhookEvent:
    """One event, whatever its shape: which bars of which provider's symbol it concerns.

    Attributes:
        id: Unique per event; the provider's identity or a payload hash (see the module).
        payload_hash: SHA-256 hex of the canonical payload.
        source: The route it came in on (``binance``, ``polygon``, ``generic``).
        start: Open of the first bar concerned, UTC.
        end: End of the window, UTC, exclusive.
        closed: Whether those bars are final (a Binance kline with ``x: false`` is not).
        payload: The event object as received.
    """

    id: str
    payload_hash: str
    source: str
    provider: str
    symbol: str
    interval: str
    start: datetime
    end: datetime
    closed: bool
    payload: dict[str, Any]


def parse_events(source: str, body: bytes) -> Delivery:
    """The events of a request body sent to the ``source`` route.

    Raises:
        EventError: ``malformed`` when the body is not JSON; ``invalid`` when it is not an event
            object of ``source``'s shape or a non-empty list of them.
        KeyError: ``source`` is not one of :data:`SOURCES`.
    """
    shape = SHAPES[source]
    try:
        document = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise EventError("malformed", f"the body is not JSON: {exc}") from None
    items = document if isinstance(document, list) else [document]
    if not items:
        raise EventError("invalid", "the body is an empty list: no events")
    events = []
    for position, item in enumerate(items):
        where = f"event {position}: " if isinstance(document, list) else ""
        if not isinstance(item, dict):
            raise EventError("invalid", f"{where}expected a JSON object, got {type(item).__name__}")
        try:
            model = shape.model_validate(item)
        except ValidationError as exc:
            raise EventError("invalid", where + _summary(exc, shape)) from None
        events.append(_event(source, model, item, where))
    return Delivery(events, batch=isinstance(document, list))


def canonical_hash(payload: dict[str, Any], where: str = "") -> str:
    """SHA-256 hex of ``payload`` as canonical JSON (sorted keys, no spaces, UTF-8).

    Raises:
        EventError: The payload is nested deeper than :data:`MAX_DEPTH`, or holds what no
            database stores: a NUL or a lone surrogate in text, a number that is not finite.
    """
    _check_storable(payload, where)
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        encoded = text.encode()
    except UnicodeEncodeError:
        raise EventError("invalid", f"{where}the event contains invalid Unicode") from None
    return hashlib.sha256(encoded).hexdigest()


_Path = tuple[Any, str | int] | None
"""Where a value sits in the event, as a chain of (parent path, key or index)."""


def _check_storable(payload: object, where: str) -> None:
    """Refuse what the warehouse could not store: PostgreSQL's jsonb takes no NUL and no
    infinite number (JSON's ``1e400`` parses as one), and a deep document would exhaust the
    recursion of the JSON encoders further down the stack. The refusal names the field."""
    stack: list[tuple[object, int, _Path]] = [(payload, 0, None)]
    while stack:
        item, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            raise EventError("invalid", f"{where}the event is nested deeper than {MAX_DEPTH}")
        if isinstance(item, str):
            if "\x00" in item:
                raise EventError("invalid", f"{where}{_field(path)}contains a NUL character")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise EventError(
                    "invalid",
                    f"{where}{_field(path)}a number out of range (beyond ±1.8e308): numbers "
                    "must be finite",
                )
        elif isinstance(item, dict):
            stack.extend((key, depth, path) for key in item)
            stack.extend((value, depth + 1, (path, key)) for key, value in item.items())
        elif isinstance(item, list):
            stack.extend((value, depth + 1, (path, i)) for i, value in enumerate(item))


def _field(path: _Path) -> str:
    """``k.q: `` for the path of ``payload["k"]["q"]``, ``a[2].b: `` with a list on the way."""
    parts: list[str] = []
    while path is not None:
        path, key = path
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    text = "".join(reversed(parts)).removeprefix(".")
    return f"{text}: " if text else "the event "


def _event(source: str, model: BaseModel, payload: dict[str, Any], where: str) -> WebhookEvent:
    digest = canonical_hash(payload, where)
    if isinstance(model, BinanceKlineEvent):
        k = model.k
        return WebhookEvent(
            id=f"binance:{model.s}:{k.i}:{k.t}:{'closed' if k.x else model.E}",
            payload_hash=digest,
            source=source,
            provider="binance",
            symbol=model.s,
            interval=k.i,
            start=_utc_ms(k.t),
            end=_utc_ms(k.T + 1),
            closed=k.x,
            payload=payload,
        )
    if isinstance(model, PolygonAggregate):
        return WebhookEvent(
            id=f"polygon:AM:{model.sym}:{model.s}",
            payload_hash=digest,
            source=source,
            provider="polygon",
            symbol=model.sym,
            interval="1m",
            start=_utc_ms(model.s),
            end=_utc_ms(model.e),
            closed=True,
            payload=payload,
        )
    assert isinstance(model, GenericEvent)
    return WebhookEvent(
        id=f"generic:id:{model.id}" if model.id else f"generic:sha256:{digest}",
        payload_hash=digest,
        source=source,
        provider=model.provider,
        symbol=model.symbol,
        interval=model.interval,
        start=model.start.astimezone(UTC),
        end=model.end.astimezone(UTC),
        closed=True,
        payload=payload,
    )


def _utc_ms(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _summary(exc: ValidationError, shape: type[BaseModel]) -> str:
    """``k.x: Input should be a valid boolean; ...`` (the first three problems)."""
    parts = []
    for error in exc.errors(include_url=False)[:3]:
        where = ".".join(str(part) for part in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    return f"not a {shape.__name__}: " + "; ".join(parts)
