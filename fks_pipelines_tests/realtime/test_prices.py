"""Live prices in a real Redis: newest event wins, whatever the arrival order; entries expire."""

import threading

import pandas as pd
import redis

from fks_pipelines.realtime.prices import LivePrices

T0 = pd.Timestamp("2024-01-05T10:00:00.123Z")


def test_a_price_reads_back_with_its_event_time_and_age(redis_client: redis.Redis) -> None:
    prices = LivePrices(redis_client)

    assert prices.get("BTCUSDT") is None
    assert prices.put("BTCUSDT", 44210.12345678901, T0)

    live = prices.get("BTCUSDT")
    assert live is not None
    assert (live.symbol, live.price, live.event_time) == ("BTCUSDT", 44210.12345678901, T0)
    assert live.age_s(T0 + pd.Timedelta(seconds=2.5)) == 2.5
    assert live.age_s(T0 - pd.Timedelta(seconds=1)) == 0.0  # a clock behind the exchange's
    assert prices.get("ETHUSDT") is None


def test_an_older_event_never_replaces_a_newer_one(redis_client: redis.Redis) -> None:
    prices = LivePrices(redis_client)
    prices.put("BTCUSDT", 2.0, T0 + pd.Timedelta(seconds=1))

    assert not prices.put("BTCUSDT", 1.0, T0)  # late frame of an earlier event
    assert not prices.put("BTCUSDT", 3.0, T0 + pd.Timedelta(seconds=1))  # same event again
    assert prices.get("BTCUSDT").price == 2.0


def test_concurrent_writers_leave_the_newest_event(redis_client: redis.Redis) -> None:
    prices = LivePrices(redis_client)
    events = [(float(n), T0 + pd.Timedelta(milliseconds=n)) for n in range(400)]

    def write(part: list[tuple[float, pd.Timestamp]]) -> None:
        for price, at in part:
            prices.put("BTCUSDT", price, at)

    threads = [threading.Thread(target=write, args=(events[n::4][::-1],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert prices.get("BTCUSDT").price == 399.0


def test_entries_expire_after_their_last_update(redis_client: redis.Redis) -> None:
    prices = LivePrices(redis_client, keep_s=60)
    prices.put("BTCUSDT", 1.0, T0)

    ttl_ms = redis_client.pttl("fks:v1:binance:live:BTCUSDT")
    assert 0 < ttl_ms <= 60_000
