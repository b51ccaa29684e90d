"""Helpers for the provider runtime tests: runtimes, recorders, and work for child processes.

Child processes are started with the ``spawn`` method (a fresh interpreter, no inherited threads
or sockets), so their entry points live here, in a module that imports no pytest.
"""

from __future__ import annotations

import math
import multiprocessing
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.context import SpawnContext
from typing import Any, Literal

import httpx
import pandas as pd
import pyarrow as pa

from fks_pipelines.market.frame import COLUMNS, conform, validate
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.quote import Quote
from fks_pipelines.providers.base import ProviderClient
from fks_pipelines.providers.binance import BinanceClient, parse_klines, parse_ticker_price
from fks_pipelines.providers.errors import (
    ProviderError,
    RateLimited,
    RequestRejected,
    Unauthorized,
    Unavailable,
)
from fks_pipelines.providers.http import ProviderHttp, Timeouts, parse_retry_after
from fks_pipelines.providers.ratelimit import ProviderLimits, Quota, Window
from fks_pipelines.providers.runtime import ProviderRuntime, RuntimeConfig, build_runtime

DAY = pd.Timestamp("2024-01-05", tz="UTC")
HOUR = Interval.parse("1h")
KLINES = "/fapi/v1/klines"
TICKER = "/fapi/v1/ticker/price"
CHILD_TIMEOUT_S = 30.0


def assert_bars(
    frame: pd.DataFrame,
    *,
    provider: str,
    symbol: str,
    interval: str,
    ts: Sequence[pd.Timestamp] | pd.DatetimeIndex,
    open: Sequence[float],
    high: Sequence[float],
    low: Sequence[float],
    close: Sequence[float],
    volume: Sequence[float | None] | None,
    quote_volume: Sequence[float | None] | None,
    vwap: Sequence[float | None] | None,
    trades: Sequence[int | None] | None,
    bar_kind: Sequence[str] | str,
) -> None:
    """``frame`` holds exactly these bars: every canonical column of every row, compared exactly
    (a ``None`` column or value is null), dtypes included, and the frame validates.

    Every column must be named, so that a test cannot forget one.
    """
    n = len(ts)

    def column(values: object, dtype: str) -> object:
        if values is None:
            return pd.array([None] * n, dtype=dtype)
        if isinstance(values, str):
            return pd.array([values] * n, dtype=dtype)
        return pd.array(list(values), dtype=dtype)  # type: ignore[call-overload]

    expected = conform(
        pd.DataFrame(
            {
                "provider": [provider] * n,
                "symbol": [symbol] * n,
                "interval": [interval] * n,
                "ts": pd.DatetimeIndex(ts),
                "open": column(open, "float64"),
                "high": column(high, "float64"),
                "low": column(low, "float64"),
                "close": column(close, "float64"),
                "volume": column(volume, "Float64"),
                "quote_volume": column(quote_volume, "Float64"),
                "vwap": column(vwap, "Float64"),
                "trades": column(trades, "Int64"),
                "bar_kind": column(bar_kind, "string"),
            }
        )
    )
    assert list(frame.columns) == list(COLUMNS)
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), expected, check_exact=True)
    validate(frame)


def encode_format_1(frame: pd.DataFrame) -> bytes:
    """A frame as the codec wrote it before ``quote_volume`` and ``bar_kind`` (format 1, which
    named no format), byte for byte."""
    floats = ("open", "high", "low", "close", "volume", "vwap")
    schema = pa.schema(
        [("ts", pa.int64())] + [(n, pa.float64()) for n in floats] + [("trades", pa.int64())]
    ).with_metadata({b"provider": b"binance", b"symbol": b"BTCUSDT", b"interval": b"1h"})
    columns = [pa.array(frame["ts"].array.asi8, type=pa.int64())]
    columns += [pa.array(frame[n].to_numpy(dtype="float64"), type=pa.float64()) for n in floats]
    columns.append(pa.array(frame["trades"].array, type=pa.int64(), from_pandas=True))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
    return sink.getvalue().to_pybytes()


def runtime(
    limits: ProviderLimits = BinanceClient.LIMITS, provider: str = "binance", **config: Any
) -> ProviderRuntime:
    """A fresh runtime (never the process-wide one) with short timeouts unless overridden."""
    settings: dict[str, Any] = {"timeouts": Timeouts(connect=2, read=2), **config}
    return build_runtime(provider, limits, RuntimeConfig(**settings))


def day(offset: int = 0) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``[start, end)`` of the UTC day ``offset`` days after :data:`DAY`."""
    start = DAY + pd.Timedelta(days=offset)
    return start, start + pd.Timedelta(days=1)


@dataclass
class Sleeps:
    """A ``sleep`` that records what it was asked to wait and returns at once."""

    calls: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def max_in_window(times: Sequence[float], window_s: float) -> int:
    """The largest number of ``times`` inside any half-open window ``[t, t + window_s)``."""
    ordered = sorted(times)
    best = 0
    first = 0
    for last, t in enumerate(ordered):
        while ordered[first] <= t - window_s:
            first += 1
        best = max(best, last - first + 1)
    return best


def spawn() -> SpawnContext:
    return multiprocessing.get_context("spawn")


def run_children(
    target: Callable[..., None], args_per_child: Sequence[tuple[Any, ...]]
) -> list[dict[str, Any]]:
    """Run ``target(barrier, queue, *args)`` in one spawned process per ``args``, released
    together by a barrier; returns what each put on the queue (a dict), or raises if one
    failed."""
    ctx = spawn()
    barrier = ctx.Barrier(len(args_per_child))
    queue = ctx.Queue()
    children = [ctx.Process(target=target, args=(barrier, queue, *a)) for a in args_per_child]
    for child in children:
        child.start()
    try:
        results = [queue.get(timeout=CHILD_TIMEOUT_S) for _ in children]
    finally:
        for child in children:
            child.join(timeout=CHILD_TIMEOUT_S)
            if child.is_alive():
                child.kill()
                child.join()
    failures = [r["error"] for r in results if "error" in r]
    if failures:
        raise AssertionError("a child process failed:\n" + "\n".join(failures))
    return results


def fetch_one_day(barrier: Any, queue: Any, base_url: str, redis_url: str) -> None:
    """Child: fetch :data:`DAY` of BTCUSDT hourly bars once, after the barrier."""
    try:
        with BinanceClient(base_url, runtime=runtime(redis_url=redis_url)) as client:
            barrier.wait(timeout=CHILD_TIMEOUT_S)
            frame = client.fetch_ohlcv("BTCUSDT", HOUR, *day())
            queue.put(
                {
                    "hits": client.stats.cache_hits,
                    "misses": client.stats.cache_misses,
                    "requests": client.stats.requests,
                    "rows": len(frame),
                    "close_sum": float(frame["close"].sum()),
                }
            )
    except BaseException:
        queue.put({"error": traceback.format_exc()})


def fetch_days(
    barrier: Any,
    queue: Any,
    base_url: str,
    config: dict[str, Any],
    limits: ProviderLimits,
    offsets: Sequence[int],
) -> None:
    """Child: fetch one distinct day per offset (one request each, no retry), after the barrier,
    on a runtime built with ``config`` (e.g. ``redis_url`` or ``cache_dir``); puts the requests
    sent and, per offset, ``"ok"`` or the name of the provider error raised."""
    try:
        rt = runtime(limits, **{"max_attempts": 1, **config})
        with BinanceClient(base_url, runtime=rt) as client:
            barrier.wait(timeout=CHILD_TIMEOUT_S)
            outcomes = []
            for offset in offsets:
                try:
                    client.fetch_ohlcv("BTCUSDT", HOUR, *day(offset))
                    outcomes.append("ok")
                except ProviderError as exc:
                    outcomes.append(type(exc).__name__)
            queue.put({"requests": client.stats.requests, "outcomes": outcomes})
    except BaseException:
        queue.put({"error": traceback.format_exc()})


def acquire_times(
    barrier: Any, queue: Any, config: dict[str, Any], provider: str, window: Window, count: int
) -> None:
    """Child: acquire ``count`` slots of ``window`` (no margin) from the limiter of a runtime
    built with ``config`` (``redis_url`` or ``cache_dir``), after the barrier; puts the
    wall-clock time each acquisition returned."""
    try:
        limits = ProviderLimits(requests=(window,))
        limiter = runtime(limits, provider, limiter_margin_s=0.0, **config).limiter
        barrier.wait(timeout=CHILD_TIMEOUT_S)
        times = []
        for _ in range(count):
            limiter.acquire()
            times.append(time.time())
        queue.put({"times": times})
    except BaseException:
        queue.put({"error": traceback.format_exc()})


PRETEND = "polygon"
"""Provider id of :class:`PretendKeyedClient` (a known id, so that it can be wired as an asset)."""


def pretend_map_error(response: httpx.Response, body: Any) -> ProviderError:
    status = response.status_code
    if status in (401, 403):
        return Unauthorized(PRETEND, "API key missing or invalid", status=status)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return RateLimited(PRETEND, "rate limited", status=status, retry_after=retry_after)
    if status >= 500:
        return Unavailable(PRETEND, "server error", status=status)
    return RequestRejected(PRETEND, "request rejected", status=status)


class PretendKeyedClient(ProviderClient):
    """A provider that needs an API key, sent in a header or as the query parameter ``apikey``
    (``ProviderHttp(auth_params=...)``), and otherwise speaks the Binance wire format so that
    :class:`FakeBinance` can serve it."""

    name = PRETEND
    LIMITS = ProviderLimits(
        requests=(Window.per_second(100),), quotas=(Quota("calls", 1000, "day"),)
    )

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        runtime: ProviderRuntime,
        key_in: Literal["header", "query"] = "header",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(
            ProviderHttp(
                PRETEND,
                base_url,
                pretend_map_error,
                runtime,
                headers={"X-Api-Key": api_key} if key_in == "header" else None,
                auth_params={"apikey": api_key} if key_in == "query" else None,
                sleep=sleep,
            )
        )

    def _fetch_ohlcv(
        self, symbol: str, interval: Interval, start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        start_ms, end_ms = start.value // 1_000_000, end.value // 1_000_000
        limit = math.ceil((end_ms - start_ms) / interval.ms)
        payload = self.http.get_json(
            "klines",
            KLINES,
            {
                "symbol": symbol,
                "interval": interval.name,
                "startTime": start_ms,
                "endTime": end_ms - 1,
                "limit": limit,
            },
        )
        frame = parse_klines(payload, symbol, interval, now=self.clock())
        return frame.assign(provider=pd.Series(PRETEND, index=frame.index, dtype="string"))

    def _latest_price(self, symbol: str) -> Quote:
        payload = self.http.get_json("price", TICKER, {"symbol": symbol})
        return replace(parse_ticker_price(payload, symbol), provider=PRETEND)
