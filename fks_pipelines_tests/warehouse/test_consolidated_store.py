"""Idempotent writes and reads of the consolidated series, on SQLite and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from fks_pipelines.market.consolidate import (
    COLUMNS,
    conform_consolidated,
    consolidate,
    empty_consolidated,
)
from fks_pipelines.market.frame import build_frame
from fks_pipelines.market.intervals import Interval
from fks_pipelines.warehouse.store import ConsolidatedScope, Warehouse, WarehouseError
from fks_pipelines.warehouse.tables import ohlcv_consolidated

DAY = pd.Timestamp("2024-01-02", tz="UTC")


def series(
    instrument: str = "BTC-USD",
    start: pd.Timestamp = DAY,
    periods: int = 24,
    *,
    interval: str = "1h",
    base: float = 100.0,
) -> pd.DataFrame:
    """A consolidated series from two providers: the primary lacks bars 5 and 6, the secondary
    is 10 bps off and lacks the last two bars. ``base`` shifts every price."""
    ts = pd.date_range(start, periods=periods, freq=Interval.parse(interval).offset)
    opens = base + np.arange(periods, dtype="float64")

    def window(provider: str, symbol: str, keep: np.ndarray, factor: float) -> pd.DataFrame:
        closes = (opens + 0.5) * factor
        return build_frame(
            provider=provider,
            symbol=symbol,
            interval=interval,
            ts=ts[keep],
            open=opens[keep],
            high=(opens + 2.0)[keep],
            low=(opens - 1.0)[keep],
            close=closes[keep],
            volume=np.arange(periods, dtype="float64")[keep] * 1.5,
            vwap=(opens + 0.25)[keep],
            trades=(np.arange(periods) * 10)[keep],
        )

    index = np.arange(periods)
    primary = window("binance", f"{instrument}-primary", ~np.isin(index, [5, 6]), 1.0)
    secondary = window("polygon", f"{instrument}-secondary", index < periods - 2, 1.001)
    return consolidate(instrument, interval, [primary, secondary])


def day_scope(
    *instruments: str, day: pd.Timestamp = DAY, interval: str = "1h"
) -> ConsolidatedScope:
    return ConsolidatedScope(interval, instruments or ("BTC-USD",), day, day + pd.Timedelta(days=1))


def combine(*frames: pd.DataFrame) -> pd.DataFrame:
    """Frames concatenated in the table's key order (instrument, interval, ts)."""
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values(["instrument", "interval", "ts"], kind="stable", ignore_index=True)


def table(store: Warehouse) -> pd.DataFrame:
    """Every row of ``ohlcv_consolidated`` in key order."""
    columns = [ohlcv_consolidated.c[name] for name in COLUMNS]
    query = sa.select(*columns).order_by(
        ohlcv_consolidated.c.instrument, ohlcv_consolidated.c.interval, ohlcv_consolidated.c.ts
    )
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    return conform_consolidated(pd.DataFrame(rows, columns=list(COLUMNS)))


def read_scope(store: Warehouse, scope: ConsolidatedScope) -> pd.DataFrame:
    return store.read_consolidated(scope.interval, scope.instruments, scope.start, scope.end)


def neighbours() -> pd.DataFrame:
    """Rows just outside ``day_scope()``: another instrument, the days around, another interval."""
    return combine(
        series("ETH-USD", base=2000.0),
        series(start=DAY - pd.Timedelta(hours=3), periods=3, base=50.0),
        series(start=DAY + pd.Timedelta(days=1), periods=3, base=60.0),  # opens exactly at end
        series(interval="1d", periods=1, base=70.0),
    )


def seed(store: Warehouse, frame: pd.DataFrame) -> None:
    """Write ``frame`` one (instrument, interval, day) scope at a time."""
    days = frame["ts"].dt.floor("D")
    for (instrument, interval, day), part in frame.groupby(
        [frame["instrument"], frame["interval"], days], observed=True
    ):
        store.write_consolidated(part, day_scope(instrument, day=day, interval=interval))


def test_starts_empty(warehouse: Warehouse) -> None:
    pd.testing.assert_frame_equal(read_scope(warehouse, day_scope()), empty_consolidated())


def test_round_trip_is_exact(warehouse: Warehouse) -> None:
    btc = series()
    btc.loc[[0, 3], "vwap"] = np.nan
    btc.loc[[3, 7], "trades"] = pd.NA
    btc.loc[1, ["open", "close", "vwap"]] = [0.1 + 0.2, 1 / 3, np.pi]
    btc.loc[1, "agreement_bps"] = 1e-12
    btc.loc[2, "trades"] = 2**40
    frame = combine(btc, series("ETH-USD", base=2000.0))
    scope = day_scope("BTC-USD", "ETH-USD")

    assert warehouse.write_consolidated(frame, scope) == len(frame) == 48
    stored = read_scope(warehouse, scope)

    pd.testing.assert_frame_equal(stored, frame)
    assert stored["agreement_bps"].isna().sum() == 2 * 4  # bars 5, 6, 22, 23 of each
    assert set(stored["source"]) == {"binance", "polygon"}
    assert stored.loc[stored["source"] == "polygon", "source_symbol"].unique().tolist() == [
        "BTC-USD-secondary",
        "ETH-USD-secondary",
    ]


def test_read_selects_instruments_interval_and_window(warehouse: Warehouse) -> None:
    seed(warehouse, neighbours())
    warehouse.write_consolidated(series(), day_scope())
    start, end = DAY + pd.Timedelta(hours=3), DAY + pd.Timedelta(hours=6)

    stored = warehouse.read_consolidated("1h", ["BTC-USD"], start, end)

    expected = series().iloc[3:6].reset_index(drop=True)
    pd.testing.assert_frame_equal(stored, expected)
    assert warehouse.read_consolidated("4h", ["BTC-USD"], start, end).empty
    assert warehouse.read_consolidated("1h", ["SOL-USD"], start, end).empty


def test_rewriting_a_scope_is_idempotent(warehouse: Warehouse) -> None:
    seed(warehouse, neighbours())
    warehouse.write_consolidated(series(), day_scope())
    before = table(warehouse)

    assert warehouse.write_consolidated(series(), day_scope()) == 24

    pd.testing.assert_frame_equal(table(warehouse), before)
    pd.testing.assert_frame_equal(table(warehouse), combine(neighbours(), series()))


def test_rewrite_replaces_values_and_removes_vanished_bars(warehouse: Warehouse) -> None:
    outside = neighbours()
    seed(warehouse, outside)
    warehouse.write_consolidated(series(), day_scope())
    fewer = series(base=500.0).drop(index=[0, 10, 23])  # index left with gaps on purpose

    assert warehouse.write_consolidated(fewer, day_scope()) == 21

    pd.testing.assert_frame_equal(read_scope(warehouse, day_scope()), fewer.reset_index(drop=True))
    pd.testing.assert_frame_equal(table(warehouse), combine(outside, fewer))


def test_scope_with_several_instruments_replaces_only_those(warehouse: Warehouse) -> None:
    btc, eth, sol = series(), series("ETH-USD", base=2000.0), series("SOL-USD", base=10.0)
    warehouse.write_consolidated(combine(btc, eth, sol), day_scope("BTC-USD", "ETH-USD", "SOL-USD"))

    new_btc = series(base=300.0, periods=5)
    warehouse.write_consolidated(new_btc, day_scope("BTC-USD", "ETH-USD"))

    pd.testing.assert_frame_equal(table(warehouse), combine(new_btc, sol))


def test_empty_frame_clears_the_scope(warehouse: Warehouse) -> None:
    outside = neighbours()
    seed(warehouse, outside)
    warehouse.write_consolidated(series(), day_scope())

    assert warehouse.write_consolidated(empty_consolidated(), day_scope()) == 0

    assert read_scope(warehouse, day_scope()).empty
    pd.testing.assert_frame_equal(table(warehouse), outside)


@pytest.mark.parametrize(
    "stray",
    [
        pytest.param(lambda: series("ETH-USD", periods=1), id="other-instrument"),
        pytest.param(lambda: series(start=DAY + pd.Timedelta(days=1), periods=1), id="at-end"),
        pytest.param(lambda: series(start=DAY - pd.Timedelta(hours=1), periods=1), id="before"),
        pytest.param(lambda: series(interval="1d", periods=1), id="other-interval"),
    ],
)
def test_rows_outside_the_scope_are_refused(
    warehouse: Warehouse, stray: Callable[[], pd.DataFrame]
) -> None:
    seed(warehouse, neighbours())
    warehouse.write_consolidated(series(), day_scope())
    before = table(warehouse)

    with pytest.raises(ValueError, match="1 rows fall outside the write scope"):
        warehouse.write_consolidated(combine(series(base=700.0), stray()), day_scope())

    pd.testing.assert_frame_equal(table(warehouse), before)


def duplicated_bar(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, frame.iloc[[3]]], ignore_index=True)


def negative_volume(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(volume=frame["volume"].where(frame.index != 7, -1.0))


def high_below_low(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(high=frame["high"].where(frame.index != 9, frame["low"] - 1.0))


def no_source(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(source=frame["source"].where(frame.index != 11, None))


def no_providers(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(providers=frame["providers"].where(frame.index != 12, 0))


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        pytest.param(duplicated_bar, ("unique", "duplicate"), id="duplicate-bar"),
        pytest.param(
            negative_volume, ("ohlcv_consolidated_volume_non_negative",), id="negative-volume"
        ),
        pytest.param(
            high_below_low, ("ohlcv_consolidated_high_not_below_low",), id="high-below-low"
        ),
        pytest.param(no_source, ("source", "not null", "not-null"), id="null-source"),
        pytest.param(no_providers, ("ohlcv_consolidated_providers_positive",), id="zero-providers"),
    ],
)
def test_refused_write_changes_nothing(
    warehouse: Warehouse, spoil: Callable[[pd.DataFrame], pd.DataFrame], reason: tuple[str, ...]
) -> None:
    outside = neighbours()
    seed(warehouse, outside)
    warehouse.write_consolidated(series(), day_scope())
    before = table(warehouse)

    with pytest.raises(WarehouseError, match="nothing was changed") as excinfo:
        warehouse.write_consolidated(spoil(series(base=400.0)), day_scope())

    message = str(excinfo.value).lower()
    assert any(word.lower() in message for word in reason), message
    pd.testing.assert_frame_equal(table(warehouse), before)
    # the scope's DELETE was rolled back with the failed insert
    pd.testing.assert_frame_equal(read_scope(warehouse, day_scope()), series())
    # and the store is still usable afterwards
    warehouse.write_consolidated(series(base=450.0), day_scope())
    pd.testing.assert_frame_equal(table(warehouse), combine(outside, series(base=450.0)))


def test_a_frame_lacking_columns_is_refused(warehouse: Warehouse) -> None:
    with pytest.raises(ValueError, match="agreement_bps"):
        warehouse.write_consolidated(series().drop(columns="agreement_bps"), day_scope())


def test_ingested_at_is_filled_in(warehouse: Warehouse) -> None:
    warehouse.write_consolidated(series(periods=2), day_scope())
    with warehouse.engine.connect() as conn:
        stamps = conn.execute(sa.select(ohlcv_consolidated.c.ingested_at)).scalars().all()
    assert len(stamps) == 2
    assert all(stamp is not None for stamp in stamps)


def test_writes_leave_the_provider_table_alone(warehouse: Warehouse) -> None:
    warehouse.write_consolidated(series(), day_scope())
    assert warehouse.count_ohlcv() == 0


def test_a_larger_series_round_trips(warehouse: Warehouse) -> None:
    frame = series(periods=1440, interval="1m", base=10.0)
    assert warehouse.write_consolidated(frame, day_scope(interval="1m")) == 1440
    pd.testing.assert_frame_equal(read_scope(warehouse, day_scope(interval="1m")), frame)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"instruments": ()}, "at least one instrument"),
        ({"start": pd.Timestamp("2024-01-02")}, "timezone-aware"),
        ({"end": DAY}, "empty scope window"),
    ],
)
def test_scope_rejects_bad_bounds(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "interval": "1h",
        "instruments": ("BTC-USD",),
        "start": DAY,
        "end": DAY + pd.Timedelta(days=1),
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        ConsolidatedScope(**args)  # type: ignore[arg-type]
