"""Idempotent OHLCV writes and reads, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from fks_pipelines.market.frame import COLUMNS, build_frame, conform, empty_frame, validate
from fks_pipelines.market.intervals import Interval
from fks_pipelines.warehouse import pgcopy
from fks_pipelines.warehouse.store import Scope, Warehouse, WarehouseError
from fks_pipelines.warehouse.tables import ohlcv

DAY = pd.Timestamp("2024-01-02", tz="UTC")


def bars(
    symbol: str = "BTCUSDT",
    start: pd.Timestamp = DAY,
    periods: int = 24,
    *,
    interval: str = "1h",
    provider: str = "binance",
    base: float = 100.0,
) -> pd.DataFrame:
    """Valid consecutive bars; ``base`` shifts every price so that rewrites are told apart."""
    opens = base + np.arange(periods, dtype="float64")
    return build_frame(
        provider=provider,
        symbol=symbol,
        interval=interval,
        ts=pd.date_range(start, periods=periods, freq=Interval.parse(interval).offset),
        open=opens,
        high=opens + 2.0,
        low=opens - 1.0,
        close=opens + 0.5,
        volume=np.arange(periods, dtype="float64") * 1.5,
        vwap=opens + 0.25,
        trades=np.arange(periods) * 10,
    )


def day_scope(
    *symbols: str,
    day: pd.Timestamp = DAY,
    interval: str = "1h",
    provider: str = "binance",
) -> Scope:
    """The scope of one UTC day of ``symbols`` (default BTCUSDT)."""
    return Scope(provider, interval, symbols or ("BTCUSDT",), day, day + pd.Timedelta(days=1))


def combine(*frames: pd.DataFrame) -> pd.DataFrame:
    """Frames concatenated in the table's order (provider, symbol, interval, ts)."""
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values(list(COLUMNS[:4]), kind="stable").reset_index(drop=True)


def table(store: Warehouse) -> pd.DataFrame:
    """Every row of ``ohlcv``, canonical, in key order."""
    query = sa.select(*(ohlcv.c[name] for name in COLUMNS)).order_by(
        ohlcv.c.provider, ohlcv.c.symbol, ohlcv.c.interval, ohlcv.c.ts
    )
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    return conform(pd.DataFrame(rows, columns=list(COLUMNS)))


def read_scope(store: Warehouse, scope: Scope) -> pd.DataFrame:
    return store.read_ohlcv(scope.provider, scope.interval, scope.symbols, scope.start, scope.end)


def neighbours() -> pd.DataFrame:
    """Rows just outside ``day_scope()``: other symbol, days, interval and provider."""
    return combine(
        bars("ETHUSDT", base=2000.0),
        bars(start=DAY - pd.Timedelta(hours=3), periods=3, base=50.0),  # the day before
        bars(start=DAY + pd.Timedelta(days=1), periods=3, base=60.0),  # opens exactly at end
        bars(interval="1d", periods=1, base=70.0),
        bars(provider="polygon", base=80.0),
    )


def seed(store: Warehouse, frame: pd.DataFrame) -> None:
    """Write ``frame`` one (provider, interval, symbol, day) partition at a time."""
    days = frame["ts"].dt.floor("D")
    for (provider, interval, symbol, day), part in frame.groupby(
        [frame["provider"], frame["interval"], frame["symbol"], days], observed=True
    ):
        store.write_ohlcv(part, day_scope(symbol, day=day, interval=interval, provider=provider))


def test_ensure_schema_twice_is_safe(warehouse: Warehouse) -> None:
    warehouse.write_ohlcv(bars(), day_scope())
    warehouse.ensure_schema()
    warehouse.ensure_schema()
    pd.testing.assert_frame_equal(table(warehouse), bars())


def test_starts_empty(warehouse: Warehouse) -> None:
    assert warehouse.count_ohlcv() == 0
    assert read_scope(warehouse, day_scope()).empty
    pd.testing.assert_frame_equal(read_scope(warehouse, day_scope()), empty_frame())


def test_round_trip_is_exact(warehouse: Warehouse) -> None:
    btc = bars()
    btc.loc[[0, 5], "vwap"] = np.nan
    btc.loc[[5, 7], "trades"] = pd.NA
    # values that only survive a lossless path
    btc.loc[1, ["open", "close", "vwap"]] = [0.1 + 0.2, 1 / 3, np.pi]
    btc.loc[1, ["high", "low", "volume"]] = [1e9 + 0.5, 1e-9, 123456.789012345]
    btc.loc[2, "trades"] = 2**40
    eth = bars("ETHUSDT", base=2000.0).assign(vwap=np.nan, trades=pd.NA)
    sol = bars("SOLUSDT", base=10.0)
    frame = conform(combine(sol, btc, eth))
    scope = day_scope("BTCUSDT", "ETHUSDT", "SOLUSDT")

    assert warehouse.write_ohlcv(frame, scope) == len(frame) == 72
    stored = read_scope(warehouse, scope)

    pd.testing.assert_frame_equal(stored, frame)
    validate(stored)
    assert stored["vwap"].isna().sum() == 2 + 24
    assert stored["trades"].isna().sum() == 2 + 24
    assert stored.loc[stored["symbol"] == "BTCUSDT", "trades"].iloc[2] == 2**40


def test_read_selects_symbols_and_window(warehouse: Warehouse) -> None:
    frame = combine(bars(), bars("ETHUSDT", base=2000.0))
    warehouse.write_ohlcv(frame, day_scope("BTCUSDT", "ETHUSDT"))
    start, end = DAY + pd.Timedelta(hours=3), DAY + pd.Timedelta(hours=6)

    stored = warehouse.read_ohlcv("binance", "1h", ["ETHUSDT"], start, end)

    expected = frame.loc[
        (frame["symbol"] == "ETHUSDT") & (frame["ts"] >= start) & (frame["ts"] < end)
    ].reset_index(drop=True)
    pd.testing.assert_frame_equal(stored, expected)
    assert len(stored) == 3
    assert warehouse.read_ohlcv("binance", "1d", ["ETHUSDT"], start, end).empty
    assert warehouse.read_ohlcv("polygon", "1h", ["ETHUSDT"], start, end).empty


def test_rewriting_a_partition_is_idempotent(warehouse: Warehouse) -> None:
    seed(warehouse, neighbours())
    frame = bars()
    warehouse.write_ohlcv(frame, day_scope())
    before = table(warehouse)

    assert warehouse.write_ohlcv(frame, day_scope()) == 24

    pd.testing.assert_frame_equal(table(warehouse), before)
    pd.testing.assert_frame_equal(table(warehouse), combine(neighbours(), frame))


def test_rewrite_replaces_values_and_drops_missing_bars(warehouse: Warehouse) -> None:
    warehouse.write_ohlcv(bars(), day_scope())
    fewer = bars(base=500.0).drop(index=[0, 10, 23])  # index left with gaps on purpose

    assert warehouse.write_ohlcv(fewer, day_scope()) == 21

    pd.testing.assert_frame_equal(table(warehouse), fewer.reset_index(drop=True))


def test_rows_outside_the_scope_are_untouched(warehouse: Warehouse) -> None:
    outside = neighbours()
    seed(warehouse, outside)
    warehouse.write_ohlcv(bars(), day_scope())

    rewrite = bars(base=900.0, periods=12)
    warehouse.write_ohlcv(rewrite, day_scope())

    pd.testing.assert_frame_equal(table(warehouse), combine(outside, rewrite))


def test_scope_with_several_symbols_replaces_only_those(warehouse: Warehouse) -> None:
    btc, eth, sol = bars(), bars("ETHUSDT", base=2000.0), bars("SOLUSDT", base=10.0)
    warehouse.write_ohlcv(combine(btc, eth, sol), day_scope("BTCUSDT", "ETHUSDT", "SOLUSDT"))

    new_btc = bars(base=300.0, periods=5)
    warehouse.write_ohlcv(new_btc, day_scope("BTCUSDT", "ETHUSDT"))

    pd.testing.assert_frame_equal(table(warehouse), combine(new_btc, sol))


def test_empty_frame_clears_the_scope(warehouse: Warehouse) -> None:
    outside = neighbours()
    seed(warehouse, outside)
    warehouse.write_ohlcv(bars(), day_scope())

    assert warehouse.write_ohlcv(empty_frame(), day_scope()) == 0

    assert read_scope(warehouse, day_scope()).empty
    pd.testing.assert_frame_equal(table(warehouse), outside)


@pytest.mark.parametrize(
    "stray",
    [
        pytest.param(lambda: bars("ETHUSDT", periods=1), id="other-symbol"),
        pytest.param(lambda: bars(start=DAY + pd.Timedelta(days=1), periods=1), id="at-end"),
        pytest.param(lambda: bars(start=DAY - pd.Timedelta(hours=1), periods=1), id="before"),
        pytest.param(lambda: bars(interval="1d", periods=1), id="other-interval"),
        pytest.param(lambda: bars(provider="polygon", periods=1), id="other-provider"),
    ],
)
def test_rows_outside_the_scope_are_refused(
    warehouse: Warehouse, stray: Callable[[], pd.DataFrame]
) -> None:
    seed(warehouse, neighbours())
    warehouse.write_ohlcv(bars(), day_scope())
    before = table(warehouse)

    with pytest.raises(ValueError, match="1 rows fall outside the write scope"):
        warehouse.write_ohlcv(combine(bars(base=700.0), stray()), day_scope())

    pd.testing.assert_frame_equal(table(warehouse), before)


def duplicated_bar(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, frame.iloc[[3]]], ignore_index=True)


def negative_volume(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(volume=frame["volume"].where(frame.index != 7, -1.0))


def high_below_low(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(high=frame["high"].where(frame.index != 9, frame["low"] - 1.0))


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        pytest.param(duplicated_bar, ("unique", "duplicate"), id="duplicate-bar"),
        pytest.param(negative_volume, ("ohlcv_volume_non_negative",), id="negative-volume"),
        pytest.param(high_below_low, ("ohlcv_high_not_below_low",), id="high-below-low"),
    ],
)
def test_refused_write_changes_nothing(
    warehouse: Warehouse, spoil: Callable[[pd.DataFrame], pd.DataFrame], reason: tuple[str, ...]
) -> None:
    outside = neighbours()
    seed(warehouse, outside)
    previous = bars()
    warehouse.write_ohlcv(previous, day_scope())
    before = table(warehouse)

    with pytest.raises(WarehouseError, match="nothing was changed") as excinfo:
        warehouse.write_ohlcv(spoil(bars(base=400.0)), day_scope())

    message = str(excinfo.value).lower()
    assert any(word.lower() in message for word in reason), message
    pd.testing.assert_frame_equal(table(warehouse), before)
    # the scope's DELETE was rolled back with the failed insert
    pd.testing.assert_frame_equal(read_scope(warehouse, day_scope()), previous)
    # and the store is still usable afterwards
    warehouse.write_ohlcv(bars(base=450.0), day_scope())
    pd.testing.assert_frame_equal(table(warehouse), combine(outside, bars(base=450.0)))


def test_large_frame_round_trips(warehouse: Warehouse) -> None:
    per_symbol = 16_667  # about 11.6 days of 1m bars; 50k rows over three symbols
    start = pd.Timestamp("2024-03-01", tz="UTC")
    frames = []
    rng = np.random.default_rng(7)
    for number, symbol in enumerate(("BTCUSDT", "ETHUSDT", "SOLUSDT")):
        frame = bars(symbol, start, per_symbol, interval="1m", base=10.0 ** (number + 1))
        # sprinkle nulls so the COPY encoder sees every null pattern
        frame.loc[rng.random(per_symbol) < 0.1, "vwap"] = np.nan
        frame.loc[rng.random(per_symbol) < 0.1, "trades"] = pd.NA
        frames.append(frame)
    frame = combine(*frames)
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    scope = Scope("binance", "1m", symbols, start, start + pd.Timedelta(days=12))

    assert warehouse.write_ohlcv(frame, scope) == 50_001
    pd.testing.assert_frame_equal(read_scope(warehouse, scope), frame)

    assert warehouse.write_ohlcv(frame, scope) == 50_001
    assert warehouse.count_ohlcv() == 50_001


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"symbols": ()}, "at least one symbol"),
        ({"start": pd.Timestamp("2024-01-02")}, "timezone-aware"),
        ({"end": DAY}, "empty scope window"),
    ],
)
def test_scope_rejects_bad_bounds(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "provider": "binance",
        "interval": "1h",
        "symbols": ("BTCUSDT",),
        "start": DAY,
        "end": DAY + pd.Timedelta(days=1),
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        Scope(**args)  # type: ignore[arg-type]


def test_pgcopy_stream_loads_the_frame(pg_warehouse: Warehouse) -> None:
    frame = combine(bars(), bars("ETHUSDT", base=2000.0))
    frame.loc[[1, 30], "vwap"] = np.nan
    frame.loc[[2, 30, 40], "trades"] = pd.NA
    stream = pgcopy.encode(frame)
    assert stream.startswith(b"PGCOPY\n\xff\r\n\x00")
    assert stream.endswith(b"\xff\xff")

    columns = ", ".join(f'"{name}"' for name in COLUMNS)
    copy_sql = f"COPY ohlcv ({columns}) FROM STDIN (FORMAT BINARY)"
    with pg_warehouse.engine.begin() as conn:
        driver = conn.connection.driver_connection
        with driver.cursor() as cursor, cursor.copy(copy_sql) as copy:  # type: ignore[union-attr]
            copy.write(stream)

    pd.testing.assert_frame_equal(table(pg_warehouse), frame)


def test_postgres_reads_are_independent_of_session_time_zone(pg_warehouse_url: str) -> None:
    url = sa.make_url(pg_warehouse_url)
    options = f"{url.query['options']} -ctimezone=Asia/Kolkata"
    engine = sa.create_engine(url.update_query_dict({"options": options}))
    try:
        store = Warehouse(engine)
        store.ensure_schema()
        frame = bars(interval="1d", periods=1)
        store.write_ohlcv(frame, day_scope(interval="1d"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SHOW timezone")).scalar() == "Asia/Kolkata"
        pd.testing.assert_frame_equal(read_scope(store, day_scope(interval="1d")), frame)
    finally:
        engine.dispose()


def _create_schema(url: str, barrier: Any, outcomes: Any) -> None:
    """Run in a child process: the first thing every dagster run process does."""
    engine = sa.create_engine(url)
    try:
        barrier.wait()
        Warehouse(engine).ensure_schema()
        outcomes.put("ok")
    except Exception as exc:  # reported back to the parent, which asserts on it
        outcomes.put(f"{type(exc).__name__}: {exc}")
    finally:
        engine.dispose()


@pytest.mark.parametrize("trial", range(3))
def test_sqlite_schema_creation_is_safe_from_concurrent_processes(
    tmp_path: Path, trial: int
) -> None:
    # Spawned, as dagster starts its run processes: a forked child inherits whatever lock a
    # thread of this process (a rate limiter's leaker inside SQLite, say) held at the fork, and
    # can wait on it forever.
    ctx = multiprocessing.get_context("spawn")
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    racers = 8
    barrier, outcomes = ctx.Barrier(racers), ctx.Queue()
    processes = [
        ctx.Process(target=_create_schema, args=(url, barrier, outcomes), daemon=True)
        for _ in range(racers)
    ]
    for process in processes:
        process.start()
    try:
        results = [outcomes.get(timeout=120) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    assert results == ["ok"] * racers


def _row_versions(store: Warehouse) -> dict[pd.Timestamp, str]:
    """PostgreSQL's xmin per bar: it changes exactly when a row is rewritten."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT ts, xmin::text FROM ohlcv ORDER BY ts")).all()
    return {pd.Timestamp(ts): xmin for ts, xmin in rows}


def test_postgres_rerun_rewrites_only_changed_bars(pg_warehouse: Warehouse) -> None:
    frame = bars()
    pg_warehouse.write_ohlcv(frame, day_scope())
    before = _row_versions(pg_warehouse)

    pg_warehouse.write_ohlcv(frame, day_scope())
    assert _row_versions(pg_warehouse) == before

    changed = frame.copy()
    changed.loc[5, ["close", "high"]] = changed.loc[5, "high"] + 1.0
    pg_warehouse.write_ohlcv(changed.drop(index=7), day_scope())
    after = _row_versions(pg_warehouse)
    moved = changed["ts"][5]
    assert after[moved] != before[moved]
    assert changed["ts"][7] not in after
    assert {ts: v for ts, v in after.items() if ts != moved} == {
        ts: v for ts, v in before.items() if ts not in (moved, changed["ts"][7])
    }
    pd.testing.assert_frame_equal(table(pg_warehouse), changed.drop(index=7).reset_index(drop=True))
