"""What the HTTP service answers: one pydantic model per response, shown in the OpenAPI document.

Times are ISO-8601 in UTC (``2024-01-05T00:00:00Z``); prices and volumes are JSON numbers. The
bars' CSV form is described by :data:`OHLCV_CSV_RESPONSE` (OpenAPI only: it has no model).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from fks_pipelines.api.errors import ErrorBody


class PriceResponse(BaseModel):
    """The latest price of an instrument at one provider."""

    symbol: str = Field(description="The canonical instrument, e.g. BTC-USD.")
    provider: str = Field(description="The provider that served the price.")
    provider_symbol: str = Field(description="The provider's own ticker, e.g. BTCUSDT.")
    price: float = Field(description="The latest price, in the instrument's quote currency.")
    ts: datetime = Field(
        description="When the provider says the price was current (UTC); with source=stream, "
        "the event time Binance stamped on it."
    )
    source: Literal["stream", "rest"] = Field(
        description="stream: Binance's WebSocket stream, as fks-stream keeps its latest price "
        "(while no older than FKS_STREAM_PRICE_MAX_AGE_S); rest: the provider's REST API, "
        "possibly through the caches."
    )
    age_s: float = Field(
        description="Seconds from ts to this answer (0 when the provider's clock is ahead of "
        "the service's)."
    )
    cached: bool = Field(
        description="True when no upstream request was made for this answer: served from a "
        "cache, or the stream's price (source=stream)."
    )
    cache: Literal["redis", "disk", "process"] | None = Field(
        default=None,
        description="Which cache served it: redis (the provider cache every process shares; "
        "with source=stream, the live prices fks-stream keeps there), disk (the provider cache "
        "of the machine, without Redis), process (the service's own, while the shared cache is "
        "unreachable); null when fetched upstream.",
    )


class Candle(BaseModel):
    """One closed bar. Volumes keep the unit the provider states and are never converted."""

    ts: datetime = Field(description="Open time of the bar (UTC).")
    open: float
    high: float
    low: float
    close: float
    volume: float | None = Field(
        description="Traded volume in base units (coins, shares; contracts on Binance USD-M); "
        "null where the provider states none (CoinMarketCap, CoinGecko)."
    )
    quote_volume: float | None = Field(
        description="Traded value in the quote currency, e.g. USD turnover; null where the "
        "provider states none (Polygon, EODHD, Alpha Vantage)."
    )
    bar_kind: Literal["traded", "sampled", "auction"] = Field(
        description="How the bar was made: traded (the provider's bar of its trades), sampled "
        "(formed from price samples: CoinGecko's daily bars; high and low are the extremes of "
        "the samples) or auction (an official closing-auction print, no volume)."
    )


class SchemaVerdict(BaseModel):
    """The schema check of the provider assets (pandera model plus time-grid checks)."""

    passed: bool
    rows: int
    failures: int = Field(description="Failing rows plus frame-level cases.")
    failing_rows: int
    checks: dict[str, int] = Field(description="Failed check -> failing rows.")
    examples: list[dict[str, Any]] = Field(description="A few failures, frame-level first.")


class OutlierVerdict(BaseModel):
    """One data-error detector's findings (as the OHLCV assets' ``outliers`` check runs it):
    ``close`` (a spike the next open reverts), ``shift`` (a whole bar off both neighbours),
    ``high``/``low`` (wicks far beyond open, close and next open), ``bar`` (repeats the bar
    before), ``volume`` (off its session type's level, or 0). Each bar is judged against the N
    bars before it and the bar after it; the window's last bar is provisional."""

    field: str = Field(description="The detector.")
    method: str
    threshold: float
    count: int
    scored: int
    max_score: float | None
    severity: Literal["none", "low", "medium", "high"]
    examples: list[str] = Field(description="The worst findings: symbol, time, value, score.")


class CompletenessVerdict(BaseModel):
    """Bars present against the bars the instrument's calendar expects in the window."""

    expected: int
    present: int
    missing: int
    duplicates: int
    open_bars: int
    stale_runs: int
    ratio: float
    missing_examples: list[str]


class QualityVerdict(BaseModel):
    """The 0-100 quality score and the parts it was made of (see ``quality/score.py``)."""

    score: float | None
    parts: dict[str, float]
    weights: dict[str, float]


class Validation(BaseModel):
    """The verdict of the provider assets' checks on the returned bars."""

    schema_: SchemaVerdict = Field(alias="schema")
    outliers: list[OutlierVerdict]
    completeness: CompletenessVerdict
    quality: QualityVerdict


class OhlcvResponse(BaseModel):
    """Closed bars of one instrument in ``[start, end)``."""

    symbol: str = Field(description="The canonical instrument.")
    provider: str = Field(description="The provider whose bars these are.")
    provider_symbol: str = Field(description="The provider's own ticker.")
    interval: str
    start: datetime
    end: datetime
    source: Literal["warehouse", "provider"] = Field(
        description="warehouse: stored bars covering the whole window; provider: fetched "
        "through the provider cache."
    )
    candles: list[Candle]
    validation: Validation | None = Field(
        default=None, description="The quality verdict with validate=true; null without."
    )


class ComponentHealth(BaseModel):
    """A dependency of the service: Redis or the warehouse."""

    state: Literal["ok", "degraded", "down", "not_configured"]
    detail: str | None = None


class ProviderHealth(BaseModel):
    """A provider's key and circuit, as every process sharing the Redis sees the circuit."""

    configured: bool = Field(description="False when the provider's key is not set.")
    circuit: Literal["closed", "open", "half_open", "unknown"]
    failures: int = Field(description="Consecutive failed calls counted by the breaker.")
    retry_after_s: float | None = Field(description="Seconds until an open circuit probes.")
    detail: str | None = None


class PriceCacheHealth(BaseModel):
    """Which cache serves latest prices now."""

    serving: Literal["redis", "disk", "process"] = Field(
        description="redis or disk: the provider cache shared with the other processes; "
        "process: the service's own, while the shared one is unreachable (or there is none)."
    )
    detail: str | None = None


class LivePricesHealth(BaseModel):
    """Whether Binance prices are answered from the stream (see PriceResponse.source)."""

    state: Literal["stream", "rest", "unused", "off"] = Field(
        description="What the latest Binance price this process answered came from: stream "
        "(fks-stream's live price) or rest (its fallback; detail says why); unused: none "
        "asked yet; off: no Redis, so no live prices."
    )
    detail: str | None = None


class WorkersHealth(BaseModel):
    """One bulkhead: the worker threads of one kind of work."""

    threads: int
    busy: int = Field(description="Calls running in a thread now.")
    waiting: int = Field(description="Calls waiting for a thread now.")
    waiting_for_store: int | None = Field(
        default=None,
        description="intake only: webhook requests waiting for the warehouse to store their "
        "events (without a thread).",
    )


class HealthResponse(BaseModel):
    """The service is up; what it depends on may not be."""

    status: Literal["ok", "degraded"]
    degraded: list[str] = Field(description="What is down or open, e.g. redis, provider:polygon.")
    redis: ComponentHealth
    warehouse: ComponentHealth
    providers: dict[str, ProviderHealth]
    price_cache: PriceCacheHealth
    live_prices: LivePricesHealth
    workers: dict[str, WorkersHealth] = Field(
        description="The worker threads of the data routes, the webhook intake and these "
        "operational routes, each kind its own."
    )


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


OHLCV_CSV_RESPONSE: dict[str, Any] = {
    "description": "The bars: JSON by default; with format=csv a CSV table of the candles' "
    "fields, its top-level fields in the X-FKS-* headers.",
    "content": {
        "text/csv": {
            "schema": {"type": "string"},
            "example": "ts,open,high,low,close,volume,quote_volume,bar_kind\r\n"
            "2024-01-05T00:00:00Z,44190.1,44300.0,44100.5,44250.3,1520.25,,traded\r\n",
        }
    },
    "headers": {
        "Content-Disposition": _header(
            'format=csv: attachment; filename="<instrument>_<interval>_<start>_<end>.csv", '
            "e.g. BTC-USD_1h_20240105T0000Z_20240106T0000Z.csv."
        ),
        "X-FKS-Symbol": _header("format=csv: the canonical instrument (JSON: symbol)."),
        "X-FKS-Provider": _header("format=csv: the provider whose bars these are."),
        "X-FKS-Provider-Symbol": _header("format=csv: the provider's own ticker."),
        "X-FKS-Source": _header("format=csv: warehouse or provider (JSON: source)."),
        "X-FKS-Interval": _header("format=csv: the bar interval."),
        "X-FKS-Start": _header("format=csv: window start (UTC), e.g. 2024-01-05T00:00:00Z."),
        "X-FKS-End": _header("format=csv: window end (UTC, exclusive, clipped to the open bar)."),
    },
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown symbol or provider."},
    422: {
        "model": ErrorBody,
        "description": "Bad parameters: interval, dates, window, or a request the provider "
        "refuses as made.",
    },
    502: {"model": ErrorBody, "description": "The provider answered with an error or garbage."},
    503: {
        "model": ErrorBody,
        "description": "No provider can serve now: circuit open, rate limited, quota used up, "
        "key not configured; or the service's workers are all busy (overloaded). Retry-After "
        "when known.",
    },
    504: {"model": ErrorBody, "description": "The provider did not answer in time."},
    500: {"model": ErrorBody, "description": "A bug; the service's log has the traceback."},
}
