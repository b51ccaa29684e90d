"""A CoinGecko REST server: market_chart/range, simple/price, and CoinGecko's error answers.

Samples are generated deterministically from their time, so any window can be served and
checked. Like the real API, granularity follows the range (5-minutely for one day ending now,
hourly up to 90 days, daily at 00:00 beyond), sample times are not aligned (a few seconds past
the hour), the live "now" sample ends a range reaching now, unknown coin ids answer 404 on the
chart and are left out of simple/price, and keys are checked per host (demo or pro).
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from fks_pipelines_tests.fakes.server import LocalHttpServer, Request, Response

ROOT = "/api/v3"
CHART_SUFFIX = "/market_chart/range"
SIMPLE_PRICE = f"{ROOT}/simple/price"
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
RATE_LIMIT_MESSAGE = (
    "You've exceeded the Rate Limit. Please visit https://www.coingecko.com/en/api/pricing to "
    "subscribe to our API plans for higher rate limits."
)


def chart_path(coin: str) -> str:
    return f"{ROOT}/coins/{coin}{CHART_SUFFIX}"


def price_at(ms: np.ndarray) -> np.ndarray:
    """The deterministic price sampled at each of ``ms`` (changes every 5 minutes)."""
    k = np.asarray(ms, dtype=np.int64) // (5 * MINUTE_MS)
    return 1000.0 + (k % 101) * 1.5 + (k % 7) * 0.25


def volume_at(ms: np.ndarray) -> np.ndarray:
    """The deterministic rolling 24 h USD volume at each of ``ms``."""
    k = np.asarray(ms, dtype=np.int64) // HOUR_MS
    return 2.0e9 + (k % 13) * 1.0e7


def sample_times(from_ms: int, to_ms: int, step_ms: int, now_ms: int) -> np.ndarray:
    """Sample times in ``[from_ms, min(to_ms, now_ms)]``: a few seconds past each step, as the
    real series are (``...241331``), except daily samples, which are at 00:00 exactly."""
    offset = 0 if step_ms == DAY_MS else 41_000
    first = -(-from_ms // step_ms) * step_ms
    grid = np.arange(first - step_ms, min(to_ms, now_ms) + 1, step_ms, dtype=np.int64)
    times = grid + offset + (grid // step_ms % 7) * 1000 * (offset > 0)
    return times[(times >= from_ms) & (times <= min(to_ms, now_ms))]


class FakeCoinGecko(LocalHttpServer):
    """Serves ``/api/v3/coins/{id}/market_chart/range`` and ``/api/v3/simple/price``.

    Attributes:
        now_ms: The server's clock; a range reaching it ends with a live "now" sample.
        coins: Coin ids that exist.
        plan: Which host this is: ``demo`` (``x-cg-demo-api-key`` or no key) or ``pro``.
        api_key: The one valid key; ``None`` lets keyless requests through on the demo host.
        holes: Sample times (ms, on the hour) left out of every series, to make partial days.
        calls_per_minute: When set, requests beyond it in a wall-clock minute answer 429.
        scripted: Answers to send instead of data, one per request, oldest first.
    """

    def __init__(self, coins: tuple[str, ...] = ("bitcoin", "ethereum", "solana")) -> None:
        super().__init__(self._handle)
        self.coins = set(coins)
        self.now_ms = 1_893_456_000_000  # 2030-01-01
        self.plan = "demo"
        self.api_key: str | None = None
        self.holes: set[int] = set()
        self.calls_per_minute: int | None = None
        self.scripted: deque[Response] = deque()
        self._minute = -1
        self._calls = 0

    def samples(self, from_ms: int, to_ms: int) -> dict[str, np.ndarray]:
        """What a range answer holds for ``[from_ms, to_ms]`` (for assertions too)."""
        span = to_ms - from_ms
        reaches_now = to_ms >= self.now_ms - 5 * MINUTE_MS
        if span <= DAY_MS and reaches_now:
            step = 5 * MINUTE_MS
        elif span <= 90 * DAY_MS:
            step = HOUR_MS
        else:
            step = DAY_MS
        times = sample_times(from_ms, to_ms, step, self.now_ms)
        if self.holes:
            times = times[~np.isin(times // HOUR_MS * HOUR_MS, list(self.holes))]
        if reaches_now and from_ms <= self.now_ms:
            times = np.append(times[times < self.now_ms], self.now_ms)
        return {"times": times, "prices": price_at(times), "volumes": volume_at(times)}

    def _handle(self, request: Request) -> Response:
        if self.scripted:
            return self.scripted.popleft()
        if (denied := self._check_key(request)) is not None:
            return denied
        if self.calls_per_minute is not None and (throttled := self._throttle()) is not None:
            return throttled
        if request.path.startswith(f"{ROOT}/coins/") and request.path.endswith(CHART_SUFFIX):
            coin = request.path[len(f"{ROOT}/coins/") : -len(CHART_SUFFIX)]
            return self._market_chart_range(coin, request.query)
        if request.path == SIMPLE_PRICE:
            return self._simple_price(request.query)
        return Response.json(
            {"error": "Incorrect path. Please check https://www.coingecko.com/api/"}, status=404
        )

    def _check_key(self, request: Request) -> Response | None:
        demo, pro = (
            request.headers.get("x-cg-demo-api-key"),
            request.headers.get("x-cg-pro-api-key"),
        )
        if self.plan == "demo" and pro is not None:
            return status_error(
                401,
                10010,
                "If you are using Pro API key, please change your root URL from "
                "api.coingecko.com to pro-api.coingecko.com",
            )
        if self.plan == "pro" and demo is not None:
            return status_error(
                401,
                10011,
                "If you are using Demo API key, please change your root URL from "
                "pro-api.coingecko.com to api.coingecko.com",
            )
        sent = pro if self.plan == "pro" else demo
        if sent is None and (self.plan == "pro" or self.api_key is not None):
            return status_error(401, 10002, "API Key Missing")
        if sent is not None and sent != self.api_key:
            return status_error(401, 10002, "Incorrect API Key")
        return None

    def _throttle(self) -> Response | None:
        minute = int(time.time() // 60)
        if minute != self._minute:
            self._minute, self._calls = minute, 0
        self._calls += 1
        if self._calls <= (self.calls_per_minute or 0):
            return None
        return rate_limited(retry_after=max(1, int(60 - time.time() % 60)))

    def _market_chart_range(self, coin: str, query: dict[str, str]) -> Response:
        if coin not in self.coins:
            return Response.json({"error": "coin not found"}, status=404)
        try:
            from_s, to_s = int(query["from"]), int(query["to"])
        except (KeyError, ValueError):
            return Response.json({"error": "Missing or invalid parameter from/to"}, status=400)
        if query.get("vs_currency") != "usd":
            return Response.json({"error": "invalid vs_currency"}, status=400)
        s = self.samples(from_s * 1000, to_s * 1000)
        times = s["times"].tolist()
        return Response.json(
            {
                "prices": [[t, p] for t, p in zip(times, s["prices"].tolist(), strict=True)],
                "market_caps": [[t, p * 19e6] for t, p in zip(times, s["prices"], strict=True)],
                "total_volumes": [
                    [t, v] for t, v in zip(times, s["volumes"].tolist(), strict=True)
                ],
            }
        )

    def _simple_price(self, query: dict[str, str]) -> Response:
        if "ids" not in query or "vs_currencies" not in query:
            return Response.json({"error": "Missing parameter ids or vs_currencies"}, status=400)
        answer: dict[str, dict[str, float | int]] = {}
        for coin in query["ids"].split(","):
            if coin in self.coins:
                updated_s = self.now_ms // 1000 - 17
                entry: dict[str, float | int] = {
                    "usd": float(price_at(np.array([updated_s * 1000]))[0])
                }
                if query.get("include_last_updated_at") == "true":
                    entry["last_updated_at"] = updated_s
                answer[coin] = entry
        return Response.json(answer)


def status_error(status: int, code: int, message: str) -> Response:
    """CoinGecko's ``{"status": {"error_code", "error_message"}}`` answer."""
    return Response.json({"status": {"error_code": code, "error_message": message}}, status=status)


def rate_limited(retry_after: int = 119) -> Response:
    """The real 429 answer (body as logged in a public PR, with its ``retry-after`` header)."""
    response = status_error(429, 429, RATE_LIMIT_MESSAGE)
    response.headers["retry-after"] = str(retry_after)
    return response


def cdn_blocked() -> Response:
    """Cloudflare's firewall page (code 1020), sent as HTML with HTTP 403."""
    body = (
        b"<!DOCTYPE html><html><head><title>Access denied | api.coingecko.com used Cloudflare "
        b"to restrict access</title></head><body><h1>Error 1020</h1><p>Access denied</p>"
        b"<span>error code: 1020</span></body></html>"
    )
    return Response(status=403, body=body, headers={"Content-Type": "text/html; charset=UTF-8"})
