"""CoinGecko: daily bars formed from market-chart samples, and the latest price (providers.md §3).

Endpoints per interval:
    ``1d`` (the only interval offered): ``GET /coins/{id}/market_chart/range`` with
    ``vs_currency=usd``, ``from``/``to`` in Unix **seconds** and ``precision=full``, one request per
    run of at most 90 UTC days. Latest price: ``GET /simple/price?ids={id}&vs_currencies=usd
    &include_last_updated_at=true&precision=full``.

Wire format: market_chart/range answers ``{"prices": [[ms, v], ...], "market_caps": [...],
"total_volumes": [...]}``, sample times in ms, not aligned to any grid; simple/price answers
``{id: {"usd": v, "last_updated_at": s}}`` (``last_updated_at`` can be missing). Errors come as
``{"status": {"error_code", "error_message"}}``, ``{"error": "..."}`` or ``{"error": {"status":
{...}}}``; the CDN sends HTML.

How bars are formed (CoinGecko serves no daily OHLCV on the free plans, so we say what we build):
    A range of 1-90 days that does not end now is sampled about hourly (a 1-day range ending now
    every 5 minutes; either works below). The samples inside the UTC day ``[D, D+1d)`` give the
    bar ``ts = D`` with ``bar_kind`` ``sampled``: ``open``/``close`` are the first/last sampled
    price, ``high``/``low`` the largest and smallest *sampled* price (so the range is narrower
    than the traded one), and ``quote_volume`` is the rolling 24 h ``total_volumes`` (USD) at the
    day's last volume sample, as CoinGecko states it (about 23:00, so it covers roughly the 24 h
    before that, not exactly the UTC day). It is never converted: ``volume`` (coins) is null,
    because USD divided by a mean sampled price would be our figure, not CoinGecko's. ``vwap``
    and ``trades`` are null.
    A day is formed only when its samples cover it: the first sample within 65 minutes of its
    start, the last within 65 minutes of its end, and no hole longer than 3 hours; other days are
    left out and logged (a gap, never a guessed bar). Days not ended by the clock are not asked.

Pitfalls handled (providers.md §3.6):
    - Auto-granularity: windows are cut into runs of at most 90 days, as one longer range would
      come back daily (one 00:00 price per day: no high/low). An answer sampled coarser than every
      2 hours is refused as :class:`BadPayload`, never turned into bars.
    - ``/coins/{id}/ohlc`` is not used: its candle size follows ``days`` (4-day candles beyond 30
      days), its timestamp is the candle *end*, and it has no volume.
    - ``from``/``to`` go out in seconds; sample times come back in ms; ``last_updated_at`` is in s.
    - The live "now" sample: days not ended by the clock are not requested, and a day whose last
      sample is far from its end is not a closed bar.
    - The three arrays are not assumed to be parallel (samples can be missing from one); ``null``
      values are dropped as missing samples.
    - Demo and pro differ in host *and* header: ``plan`` picks both (``x-cg-demo-api-key`` on
      ``api.coingecko.com``, ``x-cg-pro-api-key`` on ``pro-api.coingecko.com``). Without a key the
      keyless public API is used, at its much lower rate.
    - Unknown ids: 404 ``Could not find coin with the given id`` / ``coin not found`` on the chart,
      simply missing from a 200 simple/price answer; both are :class:`UnknownSymbol`. A 404 for a
      wrong *path* (``Incorrect path. Please check https://www.coingecko.com/api/``, recorded) is
      our request's fault, not the coin's: :class:`RequestRejected`. Only the two coin texts
      make an :class:`UnknownSymbol`, whatever the status they come with.
    - ``simple/price`` without ``last_updated_at``: the price is as of the answer, so it is stamped
      with the answer's ``Date`` header (not later than the client's clock), or the client's clock
      when the header is missing or malformed; it is not refused.
    - An error body inside an HTTP 200 is mapped like the error it carries. A coin whose id is
      ``status`` (Status Network) is a valid simple/price key, so only ``status`` objects holding an
      ``error_code`` count as errors.
    - Demo/keyless history reaches back about 365 days: older ranges answer error 10012, mapped to
      :class:`Unauthorized` (the plan is not entitled to the data).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import numpy as np
import pandas as pd

from fks_pipelines.market.frame import build_frame, empty_frame
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.quote import Quote
from fks_pipelines.providers.base import Clock, ProviderClient, utc_now
from fks_pipelines.providers.errors import (
    BadPayload,
    MissingCredentials,
    ProviderError,
    RateLimited,
    RequestRejected,
    Unauthorized,
    Unavailable,
    UnknownSymbol,
)
from fks_pipelines.providers.http import ProviderHttp, parse_retry_after
from fks_pipelines.providers.ratelimit import ProviderLimits, Quota, Window
from fks_pipelines.providers.runtime import ProviderRuntime, RuntimeConfig, get_runtime
from fks_pipelines.providers.secrets import clip

if TYPE_CHECKING:  # annotations only: the client's ProviderHttp imports httpx when it is built
    import httpx

log = logging.getLogger(__name__)

PROVIDER = "coingecko"
DEFAULT_BASE_URL = "https://api.coingecko.com/api/v3"
PRO_BASE_URL = "https://pro-api.coingecko.com/api/v3"
KEY_VARIABLE = "COINGECKO_API_KEY"
KEY_HEADERS = {"demo": "x-cg-demo-api-key", "pro": "x-cg-pro-api-key"}
VS_CURRENCY = "usd"
MARKET_CHART_RANGE_PATH = "/coins/{id}/market_chart/range"
SIMPLE_PRICE_PATH = "/simple/price"
SUPPORTED_INTERVALS = ("1d",)
MAX_DAYS_PER_REQUEST = 90  # "2 - 90 days from any time = hourly data"; longer ranges are daily
MAX_SAMPLE_SPACING = pd.Timedelta(hours=2)
MAX_EDGE_GAP = pd.Timedelta(minutes=65)
MAX_HOLE = pd.Timedelta(hours=3)
DAY = pd.Timedelta(days=1)
_CDN_CODE = re.compile(r"error\s*(?:code)?\s*:?\s*(1\d{3})\b", re.IGNORECASE)
_UNKNOWN_COIN = re.compile(r"\bcoin not found\b|\bcould not find coin\b", re.IGNORECASE)
_KEY_CODES = {10002, 10010, 10011}
_PLAN_CODES = {10005, 10012}


def _vendor_error(body: Any) -> tuple[int | str | None, str | None]:
    """``(error_code, message)`` from any of CoinGecko's error shapes, else ``(None, None)``."""
    if not isinstance(body, dict):
        return None, None
    error = body.get("error")
    status = body.get("status")
    if isinstance(error, dict) and isinstance(error.get("status"), dict):
        status = error["status"]  # {"error": {"status": {...}}} (seen with 10012)
    if isinstance(status, dict) and "error_code" in status:
        message = status.get("error_message")
        return status.get("error_code"), str(message) if message is not None else None
    if isinstance(error, str):
        return None, error
    return None, None


def _classify(
    status: int, code: int | str | None, message: str | None, retry_after: float | None
) -> ProviderError:
    """The typed error for an answer's HTTP status and vendor code (code first where it says
    more than the status does)."""
    reason = clip(message, 200) if message else f"HTTP {status} without an error message"
    kw: dict[str, Any] = {"status": status, "vendor_code": code}
    if status == 429 or code == 429:
        return RateLimited(PROVIDER, f"rate limited: {reason}", retry_after=retry_after, **kw)
    if code in _KEY_CODES or (status == 401 and code not in _PLAN_CODES):
        return Unauthorized(
            PROVIDER, f"API key missing, invalid or for another host: {reason}", **kw
        )
    if code in _PLAN_CODES:
        return Unauthorized(PROVIDER, f"not available on this plan: {reason}", **kw)
    if message and _UNKNOWN_COIN.search(message):
        return UnknownSymbol(PROVIDER, f"unknown coin id: {reason}", **kw)
    if status == 408 or status >= 500:
        return Unavailable(PROVIDER, f"server error: {reason}", **kw)
    return RequestRejected(PROVIDER, reason, **kw)


def map_error(response: httpx.Response, body: Any) -> ProviderError:
    """Map a CoinGecko error answer (HTTP status >= 400) to a typed error."""
    code, message = _vendor_error(body)
    # Cloudflare answers in HTML: "Access denied | error code: 1020".
    if body is None and (found := _CDN_CODE.search(response.text[:5000])):
        code = int(found.group(1))
        message = f"blocked by the CDN (Cloudflare error {code})"
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return _classify(response.status_code, code, message, retry_after)


def check_body(body: Any) -> ProviderError | None:
    """An error object in an HTTP 200 answer, mapped like the same error with its own status."""
    code, message = _vendor_error(body)
    if code is None and message is None:
        return None
    return _classify(200, code, message, None)


def _pairs(payload: dict, key: str) -> tuple[np.ndarray, np.ndarray]:
    """``(times_ms, values)`` of one ``[[ms, value], ...]`` array; ``null`` values dropped."""
    rows = payload[key]
    if not isinstance(rows, list):
        raise ValueError(f"{key} is not a list")
    if not rows:
        return np.empty(0, dtype=np.int64), np.empty(0)
    pairs = np.asarray(rows, dtype="float64")  # None -> nan; text or ragged rows -> ValueError
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"{key} rows are not [time, value] pairs")
    if np.isnan(pairs[:, 0]).any():
        raise ValueError(f"{key} has rows without a time")
    keep = ~np.isnan(pairs[:, 1])
    return pairs[keep, 0].astype("int64"), pairs[keep, 1]


def parse_market_chart(payload: Any) -> tuple[pd.Series, pd.Series]:
    """The price and 24 h volume samples of a market_chart answer, each indexed by UTC time.

    Raises:
        BadPayload: The answer is not three arrays of ``[ms, number]`` pairs.
    """
    try:
        if not isinstance(payload, dict):
            raise ValueError(f"expected an object, got {type(payload).__name__}")
        series = []
        for key in ("prices", "total_volumes"):
            ms, values = _pairs(payload, key)
            index = pd.DatetimeIndex(pd.to_datetime(ms, unit="ms", utc=True), name="ts")
            series.append(pd.Series(values, index=index, name=key).sort_index())
    except (KeyError, TypeError, ValueError) as exc:
        raise BadPayload(PROVIDER, f"market_chart/range: malformed answer ({exc})") from None
    prices, volumes = series
    return prices, volumes


def daily_bars(
    prices: pd.Series,
    volumes: pd.Series,
    symbol: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> pd.DataFrame:
    """``1d`` bars for the UTC days in ``[start, end)`` formed from samples (module docstring).

    Days the samples do not cover are left out and logged.

    Raises:
        BadPayload: The samples are spaced more than 2 hours apart (a daily series).
    """
    prices = prices[(prices.index >= start) & (prices.index < end)]
    volumes = volumes[(volumes.index >= start) & (volumes.index < end)]
    if len(prices) > 1:
        spacing = pd.Series(prices.index).diff().median()
        if spacing > MAX_SAMPLE_SPACING:
            raise BadPayload(
                PROVIDER,
                f"market_chart/range: samples are {spacing} apart; daily bars need hourly samples",
            )
    if prices.empty:
        return empty_frame()
    day = prices.index.floor("D")
    times = pd.Series(prices.index, index=day)
    # Holes between samples of the same day (the first sample's gap reaches into the day before).
    gaps = times.diff().where(times.index.to_series().diff() == pd.Timedelta(0))
    frame = pd.DataFrame({"price": prices.to_numpy(), "t": times, "gap": gaps}, index=day)
    grouped = frame.groupby(level=0)
    bars = grouped["price"].agg(["first", "max", "min", "last"])
    first_t, last_t, holes = grouped["t"].min(), grouped["t"].max(), grouped["gap"].max()
    day_volume = volumes.groupby(volumes.index.floor("D")).last().reindex(bars.index)
    covered = (
        (first_t - bars.index <= MAX_EDGE_GAP)
        & (bars.index + DAY - last_t <= MAX_EDGE_GAP)
        & (holes.fillna(pd.Timedelta(0)) <= MAX_HOLE)
        & day_volume.notna()
    )
    if not covered.all():
        log.warning(
            "%s %s: %d day(s) not covered by samples, no bar formed: %s",
            PROVIDER,
            symbol,
            int((~covered).sum()),
            ", ".join(d.strftime("%Y-%m-%d") for d in bars.index[~covered]),
        )
    bars, day_volume = bars[covered], day_volume[covered]
    return build_frame(
        provider=PROVIDER,
        symbol=symbol,
        interval="1d",
        ts=bars.index,
        open=bars["first"].to_numpy(),
        high=bars["max"].to_numpy(),
        low=bars["min"].to_numpy(),
        close=bars["last"].to_numpy(),
        quote_volume=day_volume.to_numpy(),
        bar_kind="sampled",
    )


def parse_simple_price(payload: Any, symbol: str, *, answered_at: pd.Timestamp) -> Quote:
    """Parse ``/simple/price`` (asked with ``include_last_updated_at``) for one coin id.

    Args:
        payload: The decoded answer.
        symbol: The coin id asked for.
        answered_at: When the answer was made (:meth:`~.http.Answer.made_at`): the quote's time
            when the entry has no ``last_updated_at``.

    Raises:
        UnknownSymbol: The id is missing from the answer (CoinGecko's way of saying unknown).
        BadPayload: The entry lacks a positive USD price, or its ``last_updated_at`` is not a
            number.
    """
    if not isinstance(payload, dict):
        raise BadPayload(
            PROVIDER, f"simple/price: expected an object, got {type(payload).__name__}"
        )
    if symbol not in payload:
        raise UnknownSymbol(PROVIDER, f"unknown coin id {symbol!r} (not in the answer)", status=200)
    try:
        entry = payload[symbol]
        price = float(entry[VS_CURRENCY])
        updated = entry.get("last_updated_at")
        if updated is None:
            ts = answered_at
        elif isinstance(updated, bool) or not isinstance(updated, int | float):
            raise ValueError(f"last_updated_at is {clip(updated, 40)!r}")
        else:
            ts = pd.Timestamp(int(updated), unit="s", tz="UTC")
    except (KeyError, TypeError, ValueError) as exc:
        raise BadPayload(PROVIDER, f"simple/price: malformed entry ({exc})") from None
    if not math.isfinite(price) or price <= 0:
        raise BadPayload(PROVIDER, f"simple/price: implausible price {price}")
    return Quote(provider=PROVIDER, symbol=symbol, price=price, ts=ts)


class CoinGeckoClient(ProviderClient):
    """CoinGecko market data by coin id (``bitcoin``), quoted in USD.

    Args:
        api_key: A demo or pro key; optional on ``plan="demo"`` (keyless public API without it),
            required on ``plan="pro"``.
        base_url: Root URL; the default follows ``plan``.
        plan: ``"demo"`` (``api.coingecko.com``, ``x-cg-demo-api-key``) or ``"pro"``
            (``pro-api.coingecko.com``, ``x-cg-pro-api-key``).
    """

    name = PROVIDER
    LIMITS = ProviderLimits(
        # Demo: 30 calls a minute, counted per minute (bursts allowed; a 429 says when to resume).
        requests=(Window(limit=30, period_s=60),),
        quotas=(Quota("calls", 10_000, "month"),),  # demo: 10k call credits a month
    )
    KEYLESS_LIMITS = ProviderLimits(requests=(Window(limit=5, period_s=60),))
    """The keyless public API: about 5 calls/min per IP (no documented monthly quota)."""

    def __init__(
        self,
        api_key: str | None,
        base_url: str = DEFAULT_BASE_URL,
        *,
        plan: Literal["demo", "pro"] = "demo",
        runtime: ProviderRuntime | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Clock = utc_now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if plan not in KEY_HEADERS:
            raise ValueError(f"unknown CoinGecko plan {plan!r}: use 'demo' or 'pro'")
        api_key = api_key or None
        if plan == "pro":
            if api_key is None:
                raise MissingCredentials(PROVIDER, KEY_VARIABLE)
            if base_url == DEFAULT_BASE_URL:
                base_url = PRO_BASE_URL  # a pro key is refused on the demo host (10010)
        elif base_url == PRO_BASE_URL:
            raise ValueError("a demo or keyless client cannot use the pro host; pass plan='pro'")
        self.plan = plan
        self.base_url = base_url
        limits = self.LIMITS if api_key else self.KEYLESS_LIMITS
        super().__init__(
            ProviderHttp(
                PROVIDER,
                base_url,
                map_error,
                runtime or get_runtime(PROVIDER, limits, RuntimeConfig()),
                headers={KEY_HEADERS[plan]: api_key} if api_key else None,
                check_body=check_body,
                transport=transport,
                sleep=sleep,
            ),
            clock=clock,
        )

    def page_span(self, interval: Interval) -> pd.Timedelta:
        return MAX_DAYS_PER_REQUEST * interval.offset

    def _fetch_ohlcv(
        self, symbol: str, interval: Interval, start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        """Daily bars opening in ``[start, end)``: one request per run of up to 90 ended days."""
        if interval.name not in SUPPORTED_INTERVALS:
            raise ValueError(
                f"{PROVIDER} offers only {', '.join(SUPPORTED_INTERVALS)} bars (formed from "
                f"hourly market_chart samples), not {interval}"
            )
        start, end = pd.Timestamp(start).tz_convert("UTC"), pd.Timestamp(end).tz_convert("UTC")
        first = start.ceil("D")
        stop = min(end.ceil("D"), self.clock().tz_convert("UTC").floor("D"))  # ended days only
        path = MARKET_CHART_RANGE_PATH.format(id=quote(symbol, safe=""))
        pages = []
        run_start = first
        while run_start < stop:
            run_end = min(run_start + MAX_DAYS_PER_REQUEST * DAY, stop)
            payload = self.http.get_json(
                "market_chart_range",
                path,
                {
                    "vs_currency": VS_CURRENCY,
                    "from": _seconds(run_start),
                    "to": _seconds(run_end),
                    "precision": "full",
                },
            )
            prices, volumes = parse_market_chart(payload)
            pages.append(daily_bars(prices, volumes, symbol, run_start, run_end))
            run_start = run_end
        return self.closed_bars(pages, interval, start, end)

    def _latest_price(self, symbol: str) -> Quote:
        answer = self.http.get(
            "simple_price",
            SIMPLE_PRICE_PATH,
            {
                "ids": symbol,
                "vs_currencies": VS_CURRENCY,
                "include_last_updated_at": "true",
                "precision": "full",
            },
        )
        return parse_simple_price(answer.body, symbol, answered_at=answer.made_at(self.clock()))


def _seconds(ts: pd.Timestamp) -> int:
    return ts.value // 1_000_000_000
