"""The data routes: ``GET /api/v1/data/price`` and ``GET /api/v1/data/ohlcv``.

How symbols and provider failures are handled is in :data:`SYMBOLS` and :data:`FAILURES`, which
the OpenAPI document shows too. Their blocking work runs in the data routes' own worker threads
(:mod:`fks_pipelines.api.bulkheads`); prices come from Binance's stream while it is fresh, else
they are coalesced and, while the shared cache is down, kept in process
(:mod:`fks_pipelines.api.prices`).

Bars are answered as JSON or, with ``format=csv``, as CSV for a spreadsheet (:data:`CSV`). Both
are streamed: the bars are fetched whole in a worker thread, then rendered a chunk of rows at a
time on the event loop (:func:`csv_chunks`, :func:`json_chunks`), so that the text of a large
window is never built as one string.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

import anyio.lowlevel
import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter

from fks_pipelines.api.errors import ApiError
from fks_pipelines.api.prices import PriceDesk, get_prices, seconds_since
from fks_pipelines.api.schemas import (
    ERROR_RESPONSES,
    OHLCV_CSV_RESPONSE,
    Candle,
    OhlcvResponse,
    PriceResponse,
    Validation,
)
from fks_pipelines.api.services import Services, get_services
from fks_pipelines.market.frame import empty_frame
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import ProviderId, Universe
from fks_pipelines.providers.base import utc_now
from fks_pipelines.providers.errors import (
    BadPayload,
    CircuitOpen,
    MissingCredentials,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    RequestRejected,
    TimedOut,
    Unauthorized,
    Unavailable,
    UnknownSymbol,
)
from fks_pipelines.providers.failover import NoProviderServed
from fks_pipelines.quality.assess import WindowAssessment, assess_window, history_start
from fks_pipelines.quality.completeness import check_completeness

log = logging.getLogger(__name__)

SYMBOLS = (
    "Without `provider`, `symbol` is a canonical instrument of the universe (`BTC-USD`, `SPY`), "
    "served through the failover manager: the instrument's providers in the universe's priority "
    "order, the next one when one fails or has its circuit open. With `provider`, `symbol` is "
    "that provider's own ticker (`BTCUSDT`, `X:BTCUSD`, `AAPL.US`) or a canonical instrument it "
    "lists, and only that provider is asked. Symbols outside the universe are refused (404) "
    "without any upstream request."
)
FAILURES = (
    "A symbol the asked provider does not know is a 404. "
    "Provider failures answer 502 (an error answer or an unreadable one), 503 (circuit open, "
    "rate limited, quota used up, key not configured; `Retry-After` when known) or 504 (no "
    "answer in time); a request the provider refuses as made (an interval it does not offer) "
    "is a 422. A 503 `overloaded` with `Retry-After` says the service's workers for the data "
    'routes are all busy. Every error is `{"error": {"code": ..., "message": ...}}`.'
)
EARLIEST = pd.Timestamp("2000-01-01", tz="UTC")
"""Windows start here at the earliest: the trading calendars begin in 2000."""
CANDLE_COLUMNS = ["ts", "open", "high", "low", "close", "volume", "quote_volume", "bar_kind"]
CANDLES = TypeAdapter(list[Candle])
OHLCV = TypeAdapter(OhlcvResponse)
CSV = (
    "`format=csv` answers `text/csv; charset=utf-8` for a spreadsheet: a header row "
    f"(`{','.join(CANDLE_COLUMNS)}`), then one row per bar: `ts` in ISO-8601 UTC with `Z` "
    "(`2024-01-05T00:00:00Z`, as the JSON's), prices and volumes with every digit Python's "
    "`repr` gives (they read back to the same floats), an empty field where JSON has null. "
    "What the JSON's top-level fields say comes in headers: `X-FKS-Symbol`, `X-FKS-Provider`, "
    "`X-FKS-Provider-Symbol`, `X-FKS-Source`, `X-FKS-Interval`, `X-FKS-Start`, `X-FKS-End`; "
    "`Content-Disposition` names the file `<instrument>_<interval>_<start>_<end>.csv`. "
    "`validate=true` with `format=csv` is a 422 `validate_needs_json`: the verdict is a "
    "document, which a table of bars cannot hold. Errors are JSON whatever the format."
)
CHUNK_ROWS = 1000
"""Bars rendered per chunk of a streamed answer: 5-10 ms of CSV (Python's float ``repr`` is most
of it) or about 6 ms of JSON on the event loop, so that other requests wait at most that long."""

SymbolParam = Annotated[
    str,
    Query(
        min_length=1,
        max_length=64,
        description="Without provider: a canonical instrument of the universe (BTC-USD, SPY). "
        "With provider: that provider's ticker (BTCUSDT, X:BTCUSD, AAPL.US) or a canonical "
        "instrument it lists.",
        examples=["BTC-USD"],
    ),
]
ProviderParam = Annotated[
    ProviderId | None,
    Query(
        description="Ask only this provider. Without it: the instrument's providers in the "
        "universe's priority order, the next one when one fails or has its circuit open."
    ),
]


@dataclass(frozen=True)
class Target:
    """What a request names: a canonical instrument and the ``(provider, ticker)`` to ask."""

    instrument: str
    routes: list[tuple[str, str]]


def resolve(universe: Universe, symbol: str, provider: str | None) -> Target:
    """The instrument and routes ``symbol`` (and ``provider``) name; 404 when none."""
    if provider is None:
        if symbol not in universe.instruments:
            raise ApiError(
                404,
                "unknown_symbol",
                f"unknown instrument {symbol!r}; known: {', '.join(universe.instruments)} "
                "(a provider's own ticker needs provider=...)",
            )
        return Target(symbol, universe.routes(symbol))
    spec = universe.providers.get(provider)
    if spec is None:
        raise ApiError(
            404,
            "unknown_provider",
            f"provider {provider!r} is not in the universe; it has {', '.join(universe.providers)}",
        )
    if symbol in spec.symbols:
        return Target(spec.symbols[symbol], [(provider, symbol)])
    tickers = [ticker for ticker, instrument in spec.symbols.items() if instrument == symbol]
    if tickers:
        return Target(symbol, [(provider, tickers[0])])
    raise ApiError(
        404,
        "unknown_symbol",
        f"{provider} lists no {symbol!r}; its tickers: {', '.join(spec.symbols)}",
    )


# A provider's failure as an answer: (error type, status, code, tell Retry-After), first match
# wins, so subclasses come before their bases (UnknownSymbol, TimedOut, CircuitOpen).
_FAILURES: tuple[tuple[type[Exception], int, str, bool], ...] = (
    (ValueError, 422, "unsupported_interval", False),
    (MissingCredentials, 503, "provider_not_configured", False),
    (Unauthorized, 502, "upstream_unauthorized", False),
    # The universe lists it, the provider does not know it: not there, and not transient.
    (UnknownSymbol, 404, "unknown_symbol", False),
    (RequestRejected, 422, "rejected_by_provider", False),
    (CircuitOpen, 503, "circuit_open", True),
    (RateLimited, 503, "upstream_rate_limited", True),
    (QuotaExhausted, 503, "upstream_quota_exhausted", False),
    (TimedOut, 504, "upstream_timeout", False),
    (BadPayload, 502, "upstream_bad_payload", False),
    (Unavailable, 502, "upstream_unavailable", False),
)


def provider_failure(exc: Exception) -> ApiError:
    """The answer for a provider's failure (or its refusal of an interval: ``ValueError``)."""
    for kind, status, code, tells_retry in _FAILURES:
        if isinstance(exc, kind):
            retry = getattr(exc, "retry_after", None) if tells_retry else None
            headers = {"Retry-After": str(max(1, math.ceil(retry)))} if retry else None
            return ApiError(status, code, str(exc), headers)
    return ApiError(502, "upstream_error", str(exc))


def no_provider(exc: NoProviderServed) -> ApiError:
    """The answer when no provider served: the request's own fault (422) when every provider
    that was asked refused it as made, else 503 naming every attempt."""
    failures = [provider_failure(a.error) for a in exc.attempts if a.error is not None]
    if failures and all(f.status < 500 for f in failures):
        return ApiError(failures[0].status, failures[0].code, str(exc))
    retries = [int(f.headers["Retry-After"]) for f in failures if "Retry-After" in f.headers]
    headers = {"Retry-After": str(min(retries))} if retries else None
    return ApiError(503, "no_provider_available", str(exc), headers)


def latest_price(services: Services, symbol: str, provider: str | None) -> PriceResponse:
    """The latest price of ``symbol`` (see :data:`SYMBOLS`), from the provider cache when it
    holds one.

    Raises:
        ApiError: Unknown symbol or provider (404); every provider asked failed (see
            :func:`provider_failure` and :func:`no_provider`).
    """
    target = resolve(services.universe, symbol, provider)
    return fetch_price(services, target, provider)


def price_key(universe: Universe, symbol: str, provider: str | None) -> tuple[str | None, str]:
    """What identifies the price a request asks for: the provider's ticker with ``provider``,
    else the canonical instrument (404 for a symbol the universe does not list)."""
    target = resolve(universe, symbol, provider)
    if provider is None:
        return None, target.instrument
    [(_, ticker)] = target.routes
    return provider, ticker


def fetch_price(services: Services, target: Target, provider: str | None) -> PriceResponse:
    """The latest price of a resolved ``target`` (see :func:`latest_price`)."""
    if provider is None:
        try:
            served = services.failover.serve(
                target.instrument, lambda client, ticker: client.latest_price_result(ticker)
            )
        except NoProviderServed as exc:
            raise _logged(no_provider(exc)) from None
        provider, ticker, result = served.provider, served.symbol, served.value
    else:
        [(provider, ticker)] = target.routes
        try:
            result = services.client(provider).latest_price_result(ticker)
        except ProviderError as exc:
            raise _logged(provider_failure(exc)) from None
    quote = result.value
    ts = quote.ts.to_pydatetime(warn=False)  # sub-microsecond digits mean nothing
    return PriceResponse(
        symbol=target.instrument,
        provider=provider,
        provider_symbol=ticker,
        price=quote.price,
        ts=ts,
        source="rest",
        age_s=seconds_since(ts),
        cached=result.hit,
    )


def parse_window(
    interval: str, start: datetime, end: datetime, now: pd.Timestamp, max_bars: int
) -> tuple[Interval, pd.Timestamp, pd.Timestamp]:
    """The interval and ``[start, end)`` in UTC, ``end`` clipped to the bar open at ``now``
    (later bars have not closed); 422 when they make no sense."""
    try:
        bar = Interval.parse(interval)
    except ValueError as exc:
        raise ApiError(422, "bad_interval", str(exc)) from None
    first, last = _utc(start), _utc(end)
    if last <= first:
        raise ApiError(422, "bad_window", f"end ({last.isoformat()}) must be after start")
    if first < EARLIEST:
        raise ApiError(422, "bad_window", f"start must be {EARLIEST.date()} or later")
    open_bar = now.floor(bar.offset)
    last = min(last, open_bar)
    if first >= last:
        raise ApiError(
            422,
            "bad_window",
            f"no {bar} bar opening in the window has closed yet (the open bar began at "
            f"{open_bar.isoformat()})",
        )
    bars = bar.bars_between(first, last)
    if bars > max_bars:
        raise ApiError(
            422,
            "window_too_large",
            f"the window holds {bars} {bar} bars; at most {max_bars} per request",
        )
    return bar, first, last


def _utc(value: datetime) -> pd.Timestamp:
    """A timezone-aware UTC timestamp; a naive time is read as UTC."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, OverflowError) as exc:  # beyond pandas' years 1677-2262
        raise ApiError(422, "bad_window", f"unsupported time {value.isoformat()}: {exc}") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass(frozen=True)
class Bars:
    """Bars of one provider ticker and where they came from (``warehouse`` or ``provider``)."""

    provider: str
    symbol: str
    frame: pd.DataFrame
    source: str


def fetch_bars(
    services: Services,
    target: Target,
    explicit: bool,
    bar: Interval,
    start: pd.Timestamp,
    end: pd.Timestamp,
    now: pd.Timestamp,
) -> Bars:
    """Stored bars when the warehouse holds the whole window for one of the routes (in
    priority order), else the provider's (through its cache)."""
    instrument = services.universe.instruments[target.instrument]
    for provider, ticker in target.routes:
        stored = services.stored_ohlcv(provider, bar, ticker, start, end)
        if stored is None:
            break  # the warehouse is down: go to the providers
        report = check_completeness(stored, instrument, bar, start, end, now)
        if report.expected and not report.missing:
            return Bars(provider, ticker, stored, "warehouse")
    if explicit:
        [(provider, ticker)] = target.routes
        try:
            frame = services.client(provider).fetch_ohlcv(ticker, bar, start, end)
        except (ValueError, ProviderError) as exc:
            raise _logged(provider_failure(exc)) from None
        return Bars(provider, ticker, frame, "provider")
    try:
        served = services.failover.fetch_ohlcv(target.instrument, bar, start, end)
    except NoProviderServed as exc:
        # A provider that answered without bars (a weekend, a window before its history) has
        # the answer: there are none.
        for attempt in exc.attempts:
            if attempt.outcome == "incomplete":
                return Bars(attempt.provider, attempt.symbol, empty_frame(), "provider")
        raise _logged(no_provider(exc)) from None
    return Bars(served.provider, served.symbol, served.value, "provider")


@dataclass(frozen=True)
class Window:
    """What an OHLCV request resolved to: the instrument, the interval, ``[start, end)`` in UTC
    (``end`` clipped to the bar still open) and the bars found for it."""

    instrument: str
    bar: Interval
    start: pd.Timestamp
    end: pd.Timestamp
    bars: Bars


def bars_in_window(
    services: Services,
    symbol: str,
    interval: str,
    start: datetime,
    end: datetime,
    provider: str | None,
    now: pd.Timestamp,
) -> Window:
    """Closed bars of ``symbol`` in ``[start, end)``: stored, or the providers' (see
    :func:`fetch_bars`).

    Raises:
        ApiError: Bad interval or window (422), unknown symbol or provider (404), or every
            provider asked failed.
    """
    bar, first, last = parse_window(interval, start, end, now, services.settings.api_max_bars)
    target = resolve(services.universe, symbol, provider)
    bars = fetch_bars(services, target, provider is not None, bar, first, last, now)
    return Window(target.instrument, bar, first, last, bars)


def ohlcv(
    services: Services,
    symbol: str,
    interval: str,
    start: datetime,
    end: datetime,
    provider: str | None,
    validate: bool,
) -> OhlcvResponse:
    """Closed bars of ``symbol`` in ``[start, end)`` (see :func:`bars_in_window`), with the
    quality verdict when ``validate``: computed by
    :func:`~fks_pipelines.quality.assess.assess_window` against the stored history before
    ``start``, as the provider assets' checks do.
    """
    now = utc_now()
    window = bars_in_window(services, symbol, interval, start, end, provider, now)
    bars, bar, first, last = window.bars, window.bar, window.start, window.end
    validation = None
    if validate:
        instrument = services.universe.instruments[window.instrument]
        history = services.stored_ohlcv(
            bars.provider, bar, bars.symbol, history_start(first, bar, instrument), first
        )
        lag_s = services.universe.providers[bars.provider].freshness_lag_minutes * 60.0
        assessed = assess_window(
            bars.frame,
            empty_frame() if history is None else history,
            instrument,
            bar,
            first,
            last,
            now,
            lag_s,
        )
        validation = _validation(assessed)
    return OhlcvResponse(
        symbol=window.instrument,
        provider=bars.provider,
        provider_symbol=bars.symbol,
        interval=bar.name,
        start=first.to_pydatetime(),
        end=last.to_pydatetime(),
        source=bars.source,
        candles=CANDLES.validate_python(_records(bars.frame.loc[:, CANDLE_COLUMNS])),
        validation=validation,
    )


def json_chunks(answer: OhlcvResponse, rows: int = CHUNK_ROWS) -> Iterator[bytes]:
    """``answer`` as the JSON bytes FastAPI renders for it (pydantic's serialiser, aliases),
    ``rows`` candles per chunk: the document without candles is cut where its empty list is,
    and the candles go in between."""
    document = OHLCV.dump_json(answer.model_copy(update={"candles": []}), by_alias=True)
    # Every string value is escaped JSON, so the key with its empty list occurs once.
    before, after = document.split(b'"candles":[]', 1)
    yield before + b'"candles":['
    candles = answer.candles
    for offset in range(0, len(candles), rows):
        chunk = CANDLES.dump_json(candles[offset : offset + rows])[1:-1]  # without [ and ]
        yield chunk if offset == 0 else b"," + chunk
    yield b"]" + after


@dataclass(frozen=True)
class CsvTable:
    """A ``format=csv`` answer before rendering: its headers and its cells."""

    headers: dict[str, str]
    cells: np.ndarray


def ohlcv_csv(
    services: Services,
    symbol: str,
    interval: str,
    start: datetime,
    end: datetime,
    provider: str | None,
) -> CsvTable:
    """The bars a ``format=csv`` request asks for (see :func:`bars_in_window`), made ready
    for :func:`csv_chunks` here, in the worker thread: what is left for the event loop is
    writing the lines."""
    window = bars_in_window(services, symbol, interval, start, end, provider, utc_now())
    return CsvTable(csv_headers(window), csv_cells(window.bars.frame))


def csv_cells(frame: pd.DataFrame) -> np.ndarray:
    """The canonical ``frame``'s :data:`CANDLE_COLUMNS` as an array of Python values, a row per
    bar: ``ts`` as ``2024-01-05T00:00:00Z`` (bars open on their interval's grid, whole
    minutes, so seconds lose nothing), floats as floats, None where a value is missing."""
    ts = frame["ts"].dt.tz_convert(None).to_numpy()
    values = frame.loc[:, CANDLE_COLUMNS[1:]]
    values = values.astype(object).where(values.notna(), None).to_numpy()
    return np.column_stack([np.datetime_as_string(ts, unit="s", timezone="UTC"), values])


def csv_chunks(cells: np.ndarray, rows: int = CHUNK_ROWS) -> Iterator[str]:
    """:func:`csv_cells` as CSV text (see :data:`CSV`): the header row, then ``rows`` bars per
    chunk; lines end with CRLF (RFC 4180). The csv module writes a float with ``repr`` (the
    shortest text that reads back to the same float) and None as an empty field; pandas'
    ``to_csv`` per chunk took twice as long (slicing the frame, ``strftime`` per time)."""
    yield ",".join(CANDLE_COLUMNS) + "\r\n"
    for offset in range(0, len(cells), rows):
        buffer = io.StringIO()
        csv.writer(buffer).writerows(cells[offset : offset + rows].tolist())
        yield buffer.getvalue()


def csv_headers(window: Window) -> dict[str, str]:
    """The headers of a CSV answer: what the JSON's top-level fields say, and the file's name
    (``BTC-USD_1h_20240105T0000Z_20240106T0000Z.csv``: letters, digits, ``.``, ``-`` and
    ``_`` only, so that no quote or path survives into it)."""
    bars = window.bars
    parts = [
        window.instrument,
        window.bar.name,
        window.start.strftime("%Y%m%dT%H%MZ"),
        window.end.strftime("%Y%m%dT%H%MZ"),
    ]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", "_".join(parts))
    return {
        "Content-Disposition": f'attachment; filename="{name}.csv"',
        "X-FKS-Symbol": window.instrument,
        "X-FKS-Provider": bars.provider,
        "X-FKS-Provider-Symbol": bars.symbol,
        "X-FKS-Source": bars.source,
        "X-FKS-Interval": window.bar.name,
        "X-FKS-Start": _iso(window.start),
        "X-FKS-End": _iso(window.end),
    }


def _iso(ts: pd.Timestamp) -> str:
    """``2024-01-05T00:00:00Z``, as the JSON answer writes times."""
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def _records(frame: pd.DataFrame) -> list[dict[str, object]]:
    """Rows as dicts, a missing value as ``None`` (JSON null), never NaN."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _validation(assessed: WindowAssessment) -> Validation:
    """The checks' results as the response shows them: each verdict model takes its fields
    from the result's attributes of the same names."""
    return Validation.model_validate(
        {
            "schema": assessed.schema,
            "outliers": assessed.outliers,
            "completeness": assessed.completeness,
            "quality": assessed.score,
        },
        from_attributes=True,
    )


def _logged(error: ApiError) -> ApiError:
    """``error``, logged: a warning when a provider failed, info when it refused the request."""
    level = logging.WARNING if error.status >= 500 else logging.INFO
    log.log(level, "answering %d %s: %s", error.status, error.code, error.message)
    return error


# The routes are ``async`` and send the blocking work (Redis, providers, warehouse) to the data
# bulkhead's threads themselves: FastAPI would run a sync route's response serialisation in its
# shared pool too, a second thread hop per request (measured: about 200 µs of CPU, more than a
# cached lookup costs), and a pool shared with the webhook intake.
router = APIRouter(prefix="/api/v1/data", tags=["data"])


@router.get(
    "/price",
    response_model=PriceResponse,
    responses=ERROR_RESPONSES,
    summary="The latest price of an instrument",
    description=(
        "A price served by Binance (`provider=binance`, or an instrument whose first provider "
        "in priority is Binance) comes from Binance's WebSocket stream, as fks-stream keeps it "
        "in Redis, while no older than `FKS_STREAM_PRICE_MAX_AGE_S` (`source: stream`, "
        "`cached: true`, `cache: redis`); otherwise, or when the stream's price is missing, "
        "stale or Redis is down, from the provider's REST API (`source: rest`): "
        "the latest price from the provider cache when it holds one younger than "
        "`FKS_CACHE_TTL_PRICE_S` (`cached: true`, no upstream request), else from upstream. "
        "Requests for the same price while one is fetched share that fetch. While the shared "
        "cache (Redis) is unreachable, a price fetched upstream is kept in the service's own "
        "process for the same TTL (`cache: process`). `age_s` is the price's age (now - `ts`). "
        f"{SYMBOLS} {FAILURES}"
    ),
)
async def price_route(
    symbol: SymbolParam,
    prices: Annotated[PriceDesk, Depends(get_prices)],
    provider: ProviderParam = None,
) -> Response:
    """``GET /api/v1/data/price``: the answer is rendered once per fetch and shared by every
    request the fetch served (one dependency: each costs FastAPI a solve per request)."""
    answer = await prices.get(price_key(prices.services.universe, symbol, provider))
    return answer.response()


async def paced(chunks: Iterable[str | bytes]) -> AsyncIterator[str | bytes]:
    """``chunks`` as a streamed body, each rendered when the server asks for it. The event
    loop runs other requests between two chunks: sending one returns at once while the
    socket's buffer has room, so without the checkpoint a whole window would render in one go.

    Rendering stays on the event loop: it is CPU work that holds the GIL, so a worker thread
    would not free the loop for longer, and a data thread borrowed per chunk could be refused
    (503 ``overloaded``) with half the answer sent.
    """
    for chunk in chunks:
        yield chunk
        await anyio.lowlevel.checkpoint()


@router.get(
    "/ohlcv",
    response_model=OhlcvResponse,
    responses={**ERROR_RESPONSES, 200: OHLCV_CSV_RESPONSE},
    summary="Closed OHLCV bars of an instrument in [start, end), as JSON or CSV",
    description=(
        "Closed bars opening in `[start, end)` (ISO-8601; a time without offset is UTC; `end` "
        "is clipped to the bar still open). From the warehouse when it stores every bar the "
        "instrument's calendar expects in the window, else from the provider through its cache. "
        "At most `FKS_API_MAX_BARS` bars per request. `validate=true` adds the verdict of the "
        "provider assets' checks: schema, outliers, completeness and quality score "
        f"(`validation` is null without it). {CSV} {SYMBOLS} {FAILURES}"
    ),
)
async def ohlcv_route(
    symbol: SymbolParam,
    interval: Annotated[
        str,
        Query(
            min_length=1,
            max_length=8,
            description="Bar length that tiles a UTC day: 1m, 5m, 15m, 1h, 4h, 1d, ...",
            examples=["1h"],
        ),
    ],
    start: Annotated[
        datetime,
        Query(description="Window start (inclusive), ISO-8601.", examples=["2024-01-05T00:00Z"]),
    ],
    end: Annotated[
        datetime,
        Query(description="Window end (exclusive), ISO-8601.", examples=["2024-01-06T00:00Z"]),
    ],
    services: Annotated[Services, Depends(get_services)],
    provider: ProviderParam = None,
    validate: Annotated[bool, Query(description="Add the quality verdict (`validation`).")] = False,
    format: Annotated[
        Literal["json", "csv"],
        Query(description="json (the document below) or csv (a table of the bars; no validate)."),
    ] = "json",
) -> Response:
    """``GET /api/v1/data/ohlcv``: the bars are fetched in a data thread, then streamed.

    JSON is streamed too (:func:`json_chunks`: byte for byte what FastAPI rendered from the
    model). Measured on 10,000 bars, pydantic renders the candles in 10 chunks in the same
    58 ms as in one call (rendering is a sixth of the answer's CPU; ``bench/api_ohlcv.py``);
    what streaming gains is that the event loop stops for one chunk (about 6 ms) instead of
    the whole 2 MB, and that the body is never one string.
    """
    if format == "csv":
        if validate:
            raise ApiError(
                422,
                "validate_needs_json",
                "validate=true answers the checks' verdict, which only format=json holds; "
                "leave validate out for CSV",
            )
        table = await services.bulkheads.data.run(
            ohlcv_csv, services, symbol, interval, start, end, provider
        )
        return StreamingResponse(
            paced(csv_chunks(table.cells)), media_type="text/csv", headers=table.headers
        )
    answer = await services.bulkheads.data.run(
        ohlcv, services, symbol, interval, start, end, provider, validate
    )
    return StreamingResponse(paced(json_chunks(answer)), media_type="application/json")
