"""The stream bridge: Binance kline streams in; intake events and live prices out.

One task per combined-stream connection (:func:`~fks_pipelines.realtime.binance.connection_urls`)
reads frames with the ``websockets`` client and hands each to :meth:`StreamBridge.handle`:

- every kline updates the symbol's live price (kept in memory, newest event wins, and written to
  Redis by one flusher task every ``flush_s``: a burst of frames costs one write per symbol);
- a closed kline (``k.x``) not passed on before becomes an event of the webhook intake (durable
  row, idempotent id, Redis stream), queued to one storing task that submits whatever has
  queued up together and retries, with backoff, while the warehouse refuses; so a slow
  warehouse slows nothing but the storing, and no closed kline is dropped for it.

**Reconnects.** A connection that fails to open, drops (a dead one misses the client's pings) or
is closed by the server (Binance closes every connection after 24 hours) is opened again after a
delay drawn from ``[0, min(cap, base * 2**failures)]`` (exponential backoff, full jitter; reset
once a connection delivers a frame). The client's own reconnecting iterator backs off only when
opening fails, not after a connection that opened and dropped at once, and does not say when
it reconnected, which the gap fill must know. Before Binance's 24-hour cut, a connection is
rotated (``max_age_s``) without a delay.

**Gaps.** Each time a connection opens, every one of its streams is checked for klines that
closed while it was not listening (:func:`~fks_pipelines.realtime.binance.missed_window`, from
the last closed kline passed on, or at start-up the last one the intake stored, at most
``lookback`` ago). Those are fetched through the REST client, one request per stream with a gap
(the client's cache and rate limiter apply), in a task of their own, retried while REST fails,
and passed on like streamed ones. A kline both streamed and fetched has one event id
(:mod:`fks_pipelines.webhooks.events`): the intake stores it once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd
import redis
from prometheus_client import Counter, Gauge, Histogram
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers.state import WarnOnce
from fks_pipelines.realtime.binance import FrameError, KlineFrame, missed_window, parse_frame
from fks_pipelines.realtime.prices import LivePrices
from fks_pipelines.warehouse.webhook_events import Receipt
from fks_pipelines.webhooks.events import EventError, WebhookEvent, parse_events
from fks_pipelines.webhooks.writer import EventRejected, StorageUnavailable

log = logging.getLogger(__name__)

MESSAGES = Counter(
    "fks_stream_messages",
    "Frames read from Binance's streams, by kind: kline (open), closed, duplicate (a closed "
    "kline passed on before), malformed.",
    ["kind"],
)
RECONNECTS = Counter(
    "fks_stream_reconnects",
    "Connections opened again, by why the last one ended: closed (by the server), dropped, "
    "failed (could not open), rotated (before Binance's 24-hour cut).",
    ["reason"],
)
CONNECTED = Gauge("fks_stream_connections_open", "Stream connections open now.")
STORED = Counter(
    "fks_stream_events",
    "Closed klines passed to the intake, by source (stream, rest: a gap fill) and outcome "
    "(stored, duplicate, rejected).",
    ["source", "outcome"],
)
LAG = Histogram(
    "fks_stream_lag_seconds",
    "From a streamed closed kline's event time (Binance's clock) to its event row committed.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
# Labelled once: a lookup per frame cost 3 us of the ~50 us a frame takes (bench/stream_bridge).
_KLINES = MESSAGES.labels("kline")
_CLOSED = MESSAGES.labels("closed")
_DUPLICATES = MESSAGES.labels("duplicate")
_MALFORMED = MESSAGES.labels("malformed")
GAP_BARS = Counter("fks_stream_gap_bars", "Closed klines fetched through REST after a gap.")
GAP_FAILURES = Counter("fks_stream_gap_failures", "Gap fills that failed and were retried.")


class EventSink(Protocol):
    """Where closed klines go: the webhook intake's :meth:`submit`."""

    def submit(self, events: Sequence[WebhookEvent]) -> Future[list[Receipt]]: ...


class KlineSource(Protocol):
    """The REST side: closed bars of a symbol opening in ``[start, end)``, canonical frame."""

    def fetch_ohlcv(
        self, symbol: str, interval: Interval, start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame: ...


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts: ``uniform(0, min(cap_s, base_s * 2**failures))``."""

    base_s: float = 1.0
    cap_s: float = 60.0

    def delay(self, failures: int) -> float:
        return random.uniform(0.0, min(self.cap_s, self.base_s * 2 ** min(failures, 32)))


@dataclass
class Connection:
    """What /health shows of one combined-stream connection."""

    url: str
    streams: tuple[tuple[str, Interval], ...]
    open: bool = False
    opened_at: float | None = None
    last_frame_at: float | None = None
    frames: int = 0
    reconnects: int = 0

    def health(self, now: float) -> dict[str, Any]:
        return {
            "streams": len(self.streams),
            "open": self.open,
            "open_s": round(now - self.opened_at, 3) if self.open and self.opened_at else None,
            "last_frame_s": round(now - self.last_frame_at, 3) if self.last_frame_at else None,
            "frames": self.frames,
            "reconnects": self.reconnects,
        }


@dataclass(frozen=True)
class _Gap:
    symbol: str
    interval: Interval
    start: pd.Timestamp
    end: pd.Timestamp


@dataclass
class _Pending:
    """A closed kline on its way to the intake."""

    event: WebhookEvent
    source: str
    event_time: float | None = None  # unix seconds Binance stamped it (streamed ones)


@dataclass
class BridgeOptions:
    """Timing of the bridge (see the module)."""

    max_age_s: float = 23.5 * 3600
    open_timeout_s: float = 10.0
    ping_interval_s: float = 20.0
    flush_s: float = 0.05
    max_batch: int = 1000
    drain_s: float = 30.0
    backoff: Backoff = field(default_factory=Backoff)
    store_backoff: Backoff = field(default_factory=lambda: Backoff(0.5, 30.0))


class StreamBridge:
    """Binance kline streams to the intake and to live prices (see the module).

    Args:
        urls: Combined-stream URLs and the (symbol, interval) streams each carries.
        sink: The webhook intake (closed klines).
        rest: The Binance REST client (gap fills); called in a worker thread.
        live: Live prices in Redis, or ``None`` (no Redis: prices are not kept).
        checkpoints: At start-up, per (symbol, interval), the open of the last closed kline
            the intake stored (recent ones only); called in a worker thread, and an error
            leaves every stream starting from now.
        options: Timing.
        clock: Unix seconds.
    """

    def __init__(
        self,
        urls: dict[str, Iterable[tuple[str, Interval]]],
        sink: EventSink,
        rest: KlineSource,
        live: LivePrices | None = None,
        checkpoints: Callable[[], dict[tuple[str, str], pd.Timestamp]] | None = None,
        options: BridgeOptions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.connections = [Connection(url, tuple(streams)) for url, streams in urls.items()]
        self.sink = sink
        self.rest = rest
        self.live = live
        self.options = options or BridgeOptions()
        self._checkpoints = checkpoints
        self._clock = clock
        self.started_at = pd.Timestamp(clock(), unit="s", tz="UTC")
        self.last_closed: dict[tuple[str, str], pd.Timestamp] = {}
        self._prices: dict[str, tuple[float, int]] = {}  # price, event ms
        self._unwritten: set[str] = set()
        self._requested_until: dict[tuple[str, str], pd.Timestamp] = {}
        self._warn = WarnOnce(log)
        self._events: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._gaps: asyncio.Queue[_Gap] = asyncio.Queue()
        self._queued = 0
        self._storing = 0
        self._stop = asyncio.Event()

    # -- running ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Listen until :meth:`stop`; then store what is queued (for at most ``drain_s``).

        Raises:
            Exception: Whatever ended one of the bridge's tasks unexpectedly (a bug), after
                the same clean-up: a process left half-working would look alive while storing
                nothing; its supervisor restarts it, and the gap fill catches up.
        """
        await self._load_checkpoints()
        workers = [
            asyncio.create_task(self._store_events(), name="stream-store"),
            asyncio.create_task(self._fill_gaps(), name="stream-gaps"),
            asyncio.create_task(self._flush_prices(), name="stream-prices"),
        ]
        listeners = [
            asyncio.create_task(self._listen(c), name=f"stream-{n}")
            for n, c in enumerate(self.connections)
        ]
        stopping = asyncio.create_task(self._stop.wait())
        crashed: BaseException | None = None
        try:
            await asyncio.wait(
                [stopping, *workers, *listeners], return_when=asyncio.FIRST_COMPLETED
            )
            ended = [t for t in (*workers, *listeners) if t.done() and not t.cancelled()]
            if ended:
                crashed = ended[0].exception() or RuntimeError(f"{ended[0].get_name()} ended")
                log.error("%s ended unexpectedly: %r", ended[0].get_name(), crashed)
        finally:
            stopping.cancel()
            for task in listeners:
                task.cancel()
            await asyncio.gather(*listeners, return_exceptions=True)
            # The storing task finishes what is queued (a None marks the end), for at most
            # the drain time; the others stop at once.
            storing = workers[0]
            if not storing.done():
                self._events.put_nowait(None)
                await asyncio.wait([storing], timeout=self.options.drain_s)
            if self.pending_events:
                log.error("stopped with %d closed klines not stored", self.pending_events)
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self._write_prices()
        if crashed is not None:
            raise crashed

    def stop(self) -> None:
        self._stop.set()

    @property
    def pending_events(self) -> int:
        """Closed klines not stored yet (queued, or being stored)."""
        return self._queued + self._storing

    @property
    def pending_gaps(self) -> int:
        return self._gaps.qsize()

    def health(self) -> dict[str, Any]:
        """What ``/health`` answers: ``ok`` when every connection is open, ``degraded`` when
        some are, ``down`` when none is."""
        now = self._clock()
        opened = sum(c.open for c in self.connections)
        status = "ok" if opened == len(self.connections) else "degraded" if opened else "down"
        return {
            "status": status,
            "connections": [c.health(now) for c in self.connections],
            "pending_events": self.pending_events,
            "pending_gaps": self.pending_gaps,
            "live_prices": {
                symbol: round(max(0.0, now - at_ms / 1000), 3)
                for symbol, (_, at_ms) in sorted(self._prices.items())
            },
        }

    # -- frames -------------------------------------------------------------------------------

    def handle(self, text: str | bytes) -> KlineFrame | None:
        """One frame: its live price kept, its closed kline queued for the intake once."""
        try:
            frame = parse_frame(text)
        except FrameError as exc:
            _MALFORMED.inc()
            # The first at warning level, the rest at debug (the counter has them all): a feed
            # gone bad must not flood the log.
            self._warn("malformed", "ignored a frame: %s", exc)
            return None
        self._keep_price(frame.symbol, frame.price, frame.event_ms)
        if not frame.closed:
            _KLINES.inc()
            return frame
        stream = (frame.symbol, frame.interval)
        last = self.last_closed.get(stream)
        opened = frame.open_time
        if last is not None and opened <= last:
            _DUPLICATES.inc()
            return frame
        _CLOSED.inc()
        self.last_closed[stream] = opened
        [event] = parse_events("binance", json.dumps(frame.data).encode()).events
        self._queue(_Pending(event, "stream", frame.event_ms / 1000))
        return frame

    def _queue(self, pending: _Pending) -> None:
        self._queued += 1
        self._events.put_nowait(pending)

    def _keep_price(self, symbol: str, price: float, at_ms: int) -> None:
        kept = self._prices.get(symbol)
        if kept is None or at_ms > kept[1]:
            self._prices[symbol] = (price, at_ms)
            self._unwritten.add(symbol)

    # -- connections --------------------------------------------------------------------------

    async def _listen(self, connection: Connection) -> None:
        failures = 0
        while True:
            reason = await self._session(connection)
            if connection.frames and reason != "failed":
                failures = 0
            connection.reconnects += 1
            RECONNECTS.labels(reason).inc()
            if reason == "rotated":
                continue
            delay = self.options.backoff.delay(failures)
            failures += 1
            log.warning(
                "stream connection %s (%s); reconnecting in %.1f s",
                reason,
                _streams_text(connection),
                delay,
            )
            await asyncio.sleep(delay)

    async def _session(self, connection: Connection) -> str:
        """One connection, from opening to its end; why it ended."""
        options = self.options
        try:
            websocket = await connect(
                connection.url,
                open_timeout=options.open_timeout_s,
                ping_interval=options.ping_interval_s,
                ping_timeout=options.ping_interval_s,
                max_size=1 << 20,
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            log.warning("could not open the stream (%s): %s", _streams_text(connection), exc)
            return "failed"
        connection.open, connection.opened_at = True, self._clock()
        CONNECTED.inc()
        try:
            self._note_gaps(connection)
            return await self._read(connection, websocket)
        finally:
            connection.open = False
            CONNECTED.dec()
            await websocket.close()

    async def _read(self, connection: Connection, websocket: ClientConnection) -> str:
        """Frames until the connection ends or is due for rotation; why it ended. A quiet
        connection is left open (an illiquid symbol's stream may be): a dead one misses the
        client's pings and ends as dropped."""
        assert connection.opened_at is not None
        rotate_in = connection.opened_at + self.options.max_age_s - self._clock()
        try:
            async with asyncio.timeout(max(0.0, rotate_in)):
                async for message in websocket:
                    connection.frames += 1
                    connection.last_frame_at = self._clock()
                    self.handle(message)
        except TimeoutError:
            return "rotated"
        except ConnectionClosed:
            return "dropped"
        return "closed"

    # -- gaps ---------------------------------------------------------------------------------

    async def _load_checkpoints(self) -> None:
        if self._checkpoints is None:
            return
        try:
            stored = await asyncio.to_thread(self._checkpoints)
        except Exception as exc:  # the stream must start regardless: gaps then begin now
            log.warning("could not read where the streams left off (%s): starting from now", exc)
            return
        for stream, opened in stored.items():
            last = self.last_closed.get(stream)
            if last is None or opened > last:
                self.last_closed[stream] = opened

    def _note_gaps(self, connection: Connection) -> None:
        now = pd.Timestamp(self._clock(), unit="s", tz="UTC")
        for symbol, interval in connection.streams:
            stream = (symbol, interval.name)
            window = missed_window(self.last_closed.get(stream), interval, now, self.started_at)
            if window is None:
                continue
            # A gap still queued from an earlier reconnect is not asked for again.
            start = max(window[0], self._requested_until.get(stream, window[0]))
            if start < window[1]:
                self._requested_until[stream] = window[1]
                self._gaps.put_nowait(_Gap(symbol, interval, start, window[1]))

    async def _fill_gaps(self) -> None:
        failures = 0
        while True:
            gap = await self._gaps.get()
            try:
                frame = await asyncio.to_thread(
                    self.rest.fetch_ohlcv, gap.symbol, gap.interval, gap.start, gap.end
                )
            except Exception as exc:  # any REST failure: the gap stays and is tried again
                GAP_FAILURES.inc()
                delay = self.options.store_backoff.delay(failures)
                failures += 1
                log.warning(
                    "gap fill of %s %s [%s, %s) failed, retrying in %.1f s: %s",
                    gap.symbol,
                    gap.interval.name,
                    gap.start,
                    gap.end,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                self._gaps.put_nowait(gap)
                continue
            failures = 0
            stream = (gap.symbol, gap.interval.name)
            if self._requested_until.get(stream) == gap.end:
                # No later gap queued: the next reconnect asks from the last kline passed on, so
                # a bar REST did not have yet is asked for again.
                del self._requested_until[stream]
            try:
                self._pass_on_fetched(gap, frame)
            except EventError as exc:  # bars the intake's rules refuse: asking again cannot help
                log.error("gap fill of %s %s refused: %s", gap.symbol, gap.interval.name, exc)

    def _pass_on_fetched(self, gap: _Gap, frame: pd.DataFrame) -> None:
        payloads = kline_events(gap.symbol, gap.interval, frame)
        if not payloads:
            return
        GAP_BARS.inc(len(payloads))
        body = json.dumps(payloads).encode()
        for event in parse_events("binance", body).events:
            self._queue(_Pending(event, "rest"))
        stream = (gap.symbol, gap.interval.name)
        newest = pd.Timestamp(frame["ts"].max())
        last = self.last_closed.get(stream)
        if last is None or newest > last:
            self.last_closed[stream] = newest

    # -- storing ------------------------------------------------------------------------------

    async def _store_events(self) -> None:
        """Store whatever has queued up, together; until the end mark (None)."""
        ended = False
        while not ended:
            batch: list[_Pending] = []
            item = await self._events.get()
            while True:
                if item is None:
                    ended = True
                    break
                batch.append(item)
                if len(batch) >= self.options.max_batch or self._events.empty():
                    break
                item = self._events.get_nowait()
            if not batch:
                continue
            self._queued -= len(batch)
            self._storing = len(batch)
            try:
                await self._store(batch)
            finally:
                self._storing = 0

    async def _store(self, batch: list[_Pending]) -> None:
        """Store ``batch``, retrying while the warehouse is unavailable."""
        failures = 0
        while True:
            try:
                receipts = await asyncio.wrap_future(self.sink.submit([p.event for p in batch]))
            except StorageUnavailable as exc:
                delay = self.options.store_backoff.delay(failures)
                failures += 1
                log.warning(
                    "%d closed klines not stored, retrying in %.1f s: %s", len(batch), delay, exc
                )
                await asyncio.sleep(delay)
                continue
            except EventRejected as exc:
                if len(batch) > 1:  # find the one the database refuses; store the others
                    for pending in batch:
                        await self._store([pending])
                    return
                STORED.labels(batch[0].source, "rejected").inc()
                log.error("the intake refused %s: %s", batch[0].event.id, exc)
                return
            break
        stored_at = self._clock()
        for pending, receipt in zip(batch, receipts, strict=True):
            STORED.labels(pending.source, "duplicate" if receipt.duplicate else "stored").inc()
            if pending.event_time is not None and not receipt.duplicate:
                LAG.observe(max(0.0, stored_at - pending.event_time))

    # -- live prices --------------------------------------------------------------------------

    async def _flush_prices(self) -> None:
        while True:
            await asyncio.sleep(self.options.flush_s)
            if self._unwritten and self.live is not None:
                await asyncio.to_thread(self._write, self._take_prices())

    def _write_prices(self) -> None:
        self._write(self._take_prices())

    def _take_prices(self) -> dict[str, tuple[float, int]]:
        """The prices changed since the last write (in the event loop, where frames land)."""
        symbols, self._unwritten = self._unwritten, set()
        return {symbol: self._prices[symbol] for symbol in symbols}

    def _write(self, prices: dict[str, tuple[float, int]]) -> None:
        if self.live is None:
            return
        try:
            for symbol, (price, at_ms) in prices.items():
                self.live.put(symbol, price, pd.Timestamp(at_ms, unit="ms", tz="UTC"))
        except redis.RedisError as exc:  # Redis down: the next frames write again
            self._warn("redis", "live prices not written: %s", exc)


def kline_events(symbol: str, interval: Interval, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Closed kline events, as the stream sends them, of the canonical bars in ``frame``.

    Prices and volumes as Binance writes them (decimal strings: ``repr`` of the float round-trips
    the REST answer's value); the event time is the kline's close.
    """
    length_ms = interval.seconds * 1000
    events = []
    for bar in frame.itertuples(index=False):
        open_ms = pd.Timestamp(bar.ts).value // 1_000_000
        close_ms = open_ms + length_ms - 1
        events.append(
            {
                "e": "kline",
                "E": close_ms + 1,
                "s": symbol,
                "k": {
                    "t": open_ms,
                    "T": close_ms,
                    "s": symbol,
                    "i": interval.name,
                    "o": repr(float(bar.open)),
                    "c": repr(float(bar.close)),
                    "h": repr(float(bar.high)),
                    "l": repr(float(bar.low)),
                    "v": repr(float(bar.volume)),
                    "x": True,
                },
            }
        )
    return events


def _streams_text(connection: Connection) -> str:
    names = [f"{s.lower()}@kline_{i.name}" for s, i in connection.streams[:3]]
    more = len(connection.streams) - len(names)
    return ", ".join(names) + (f" and {more} more" if more else "")
