"""The fast read path gives the frame the SQLAlchemy query gave, on SQLite and PostgreSQL.

The reference is the query ``read_ohlcv`` and ``read_consolidated`` ran before the fast path
(SQLAlchemy Core, one Python row per bar), run here on the same rows.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from fks_pipelines.market import consolidate
from fks_pipelines.market.frame import COLUMNS, build_frame, conform
from fks_pipelines.warehouse.reads import (
    SQLITE_TS_FORMAT,
    PostgresReader,
    ReadError,
    Select,
    libpq_uri,
)
from fks_pipelines.warehouse.store import ConsolidatedScope, Scope, Warehouse, WarehouseError
from fks_pipelines.warehouse.tables import ohlcv, ohlcv_consolidated

# Edge dates: before the epoch, a leap day, the last minute of a year, far ahead.
EDGES = pd.DatetimeIndex(
    [
        "1969-12-31 23:59",
        "1970-01-01 00:00",
        "2000-02-29 00:00",
        "2023-12-31 23:59",
        "2024-01-01 00:00",
        "2099-12-31 23:59",
    ],
    tz="UTC",
)
WINDOW = (pd.Timestamp("1969-01-01", tz="UTC"), pd.Timestamp("2100-01-01", tz="UTC"))


def awkward_bars(symbol: str, provider: str = "binance") -> pd.DataFrame:
    """Bars at the edge dates, with NULLs in every nullable column, extreme magnitudes, an
    integer beyond float precision and every bar kind."""
    n = len(EDGES)
    price = np.array([1e-300, 0.1, 123.456789012345, 1e15, 3.0, 1e300])
    frame = build_frame(
        provider=provider,
        symbol=symbol,
        interval="1m",
        ts=EDGES,
        open=price,
        high=price * 2,
        low=price / 2,
        close=price,
        volume=[np.nan, 0.0, 1.5, np.nan, 2.0**60, 7.25],
        quote_volume=[1.0, np.nan, np.nan, 5.5, np.nan, 0.0],
        vwap=[np.nan, 0.1, np.nan, 1e15, 3.0, np.nan],
        trades=pd.array([None, 0, 2**62 + 1, None, 5, 9], dtype="Int64"),
    )
    frame["bar_kind"] = pd.array(["traded", "sampled", "auction"] * (n // 3), dtype="string")
    return frame


def reference_ohlcv(store: Warehouse, symbols: list[str]) -> pd.DataFrame:
    """The SQLAlchemy query the fast path replaced."""
    start, end = (_bind(ts, store.dialect) for ts in WINDOW)
    query = (
        sa.select(*(ohlcv.c[name] for name in COLUMNS))
        .where(
            ohlcv.c.provider == "binance",
            ohlcv.c.interval == "1m",
            ohlcv.c.symbol.in_(symbols),
            ohlcv.c.ts >= start,
            ohlcv.c.ts < end,
        )
        .order_by(ohlcv.c.symbol, ohlcv.c.ts)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    return conform(pd.DataFrame(rows, columns=list(COLUMNS)))


def _bind(ts: pd.Timestamp, dialect: str) -> object:
    return ts.strftime(SQLITE_TS_FORMAT) if dialect == "sqlite" else ts.to_pydatetime()


def test_ohlcv_reads_the_frame_the_sqlalchemy_query_read(warehouse: Warehouse) -> None:
    symbols = ["ETHUSDT", "BTCUSDT"]
    for symbol in symbols:
        frame = awkward_bars(symbol)
        warehouse.write_ohlcv(frame, Scope("binance", "1m", (symbol,), *WINDOW))
    warehouse.write_ohlcv(  # another provider's rows stay out
        awkward_bars("BTCUSDT", "polygon"), Scope("polygon", "1m", ("BTCUSDT",), *WINDOW)
    )

    fast = warehouse.read_ohlcv("binance", "1m", symbols, *WINDOW)

    reference = reference_ohlcv(warehouse, symbols)
    # The SQLAlchemy rows went through float for an integer column with NULLs.
    rounded = fast.assign(trades=fast["trades"].astype("float64").astype("Int64"))
    pd.testing.assert_frame_equal(rounded, reference)
    assert list(fast["symbol"].unique()) == ["BTCUSDT", "ETHUSDT"]  # ordered by symbol, ts
    expected = pd.concat([awkward_bars("BTCUSDT"), awkward_bars("ETHUSDT")], ignore_index=True)
    pd.testing.assert_frame_equal(fast, conform(expected))
    assert fast.loc[2, "trades"] == 2**62 + 1  # exact


def test_window_bounds_are_half_open_and_empty_reads_keep_dtypes(warehouse: Warehouse) -> None:
    frame = awkward_bars("BTCUSDT")
    warehouse.write_ohlcv(frame, Scope("binance", "1m", ("BTCUSDT",), *WINDOW))
    start, end = EDGES[1], EDGES[4]

    inside = warehouse.read_ohlcv("binance", "1m", ["BTCUSDT"], start, end)

    assert list(inside["ts"]) == list(EDGES[1:4])
    empty = warehouse.read_ohlcv("binance", "1m", ["SOLUSDT"], *WINDOW)
    assert empty.empty
    pd.testing.assert_series_equal(empty.dtypes, inside.dtypes)
    pd.testing.assert_series_equal(
        warehouse.read_ohlcv("binance", "1m", [], *WINDOW).dtypes, inside.dtypes
    )


def test_consolidated_reads_the_frame_the_sqlalchemy_query_read(warehouse: Warehouse) -> None:
    windows = [awkward_bars("BTCUSDT"), awkward_bars("BTC-USD", "coingecko")]
    frame = consolidate.consolidate("BTC-USD", "1m", windows)
    frame.loc[frame.index[:2], "agreement_bps"] = np.nan
    warehouse.write_consolidated(frame, ConsolidatedScope("1m", ("BTC-USD",), *WINDOW))

    fast = warehouse.read_consolidated("1m", ["BTC-USD", "ETH-USD"], *WINDOW)

    table = ohlcv_consolidated
    start, end = (_bind(ts, warehouse.dialect) for ts in WINDOW)
    query = (
        sa.select(*(table.c[name] for name in consolidate.COLUMNS))
        .where(table.c.interval == "1m", table.c.ts >= start, table.c.ts < end)
        .order_by(table.c.instrument, table.c.ts)
    )
    with warehouse.engine.connect() as conn:
        rows = conn.execute(query).all()
    reference = consolidate.conform_consolidated(
        pd.DataFrame(rows, columns=list(consolidate.COLUMNS))
    )
    rounded = fast.assign(trades=fast["trades"].astype("float64").astype("Int64"))
    pd.testing.assert_frame_equal(rounded, reference)
    pd.testing.assert_frame_equal(fast, consolidate.conform_consolidated(frame))


def test_symbols_are_bound_as_parameters_not_spliced(warehouse: Warehouse) -> None:
    warehouse.write_ohlcv(awkward_bars("BTCUSDT"), Scope("binance", "1m", ("BTCUSDT",), *WINDOW))

    hostile = "x') OR ('1'='1"
    assert warehouse.read_ohlcv("binance", "1m", [hostile], *WINDOW).empty
    assert len(warehouse.read_ohlcv("binance", "1m", [hostile, "BTCUSDT"], *WINDOW)) == len(EDGES)


def test_concurrent_reads_share_the_pool(warehouse: Warehouse) -> None:
    warehouse.write_ohlcv(awkward_bars("BTCUSDT"), Scope("binance", "1m", ("BTCUSDT",), *WINDOW))
    expected = warehouse.read_ohlcv("binance", "1m", ["BTCUSDT"], *WINDOW)
    failures: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(20):
                got = warehouse.read_ohlcv("binance", "1m", ["BTCUSDT"], *WINDOW)
                pd.testing.assert_frame_equal(got, expected)
        except BaseException as exc:  # reported to the test thread
            failures.append(exc)

    threads = [threading.Thread(target=read) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_a_failed_postgres_read_is_a_warehouse_error_without_the_password(
    pg_warehouse_url: str,
) -> None:
    url = sa.make_url(pg_warehouse_url).set(password="s3cret-pw", database="no_such_database")
    store = Warehouse(sa.create_engine(url))

    with pytest.raises(WarehouseError, match="reading binance/1m bars failed") as failed:
        store.read_ohlcv("binance", "1m", ["BTCUSDT"], *WINDOW)

    assert "s3cret-pw" not in str(failed.value)
    store.engine.dispose()


def test_reads_come_back_after_the_server_closes_pooled_connections(
    pg_warehouse_url: str,
) -> None:
    engine = sa.create_engine(pg_warehouse_url)
    store = Warehouse(engine)
    store.ensure_schema()
    store.write_ohlcv(awkward_bars("BTCUSDT"), Scope("binance", "1m", ("BTCUSDT",), *WINDOW))
    before = store.read_ohlcv("binance", "1m", ["BTCUSDT"], *WINDOW)
    with engine.begin() as conn:  # what a server restart does to the pooled read connections
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND datname = current_database()"
                " AND query LIKE 'SELECT \"provider\"%'"
            )
        )

    after = store.read_ohlcv("binance", "1m", ["BTCUSDT"], *WINDOW)

    pd.testing.assert_frame_equal(after, before)
    engine.dispose()


def test_postgres_reads_honour_the_statement_timeout(pg_warehouse_url: str) -> None:
    engine = sa.create_engine(pg_warehouse_url)
    store = Warehouse(engine, statement_timeout_ms=50)
    store.ensure_schema()
    locker = sa.create_engine(pg_warehouse_url, poolclass=sa.NullPool)
    try:
        with locker.begin() as conn:
            conn.execute(sa.text("LOCK TABLE ohlcv IN ACCESS EXCLUSIVE MODE"))
            with pytest.raises(WarehouseError, match="statement timeout"):
                store.read_ohlcv("binance", "1m", ["BTCUSDT"], *WINDOW)
    finally:
        locker.dispose()
        engine.dispose()


def test_a_timed_out_read_is_not_retried_and_keeps_its_connection(pg_warehouse_url: str) -> None:
    """A statement timeout is no lost connection: one connection, one cancelled statement, the
    connection back in the pool (a retry on a new one would double the caller's wait)."""
    Warehouse(sa.create_engine(pg_warehouse_url, poolclass=sa.NullPool)).ensure_schema()
    reader = PostgresReader(sa.make_url(pg_warehouse_url))
    opened: list[object] = []

    def set_timeout(dbapi_connection: Any, _record: object) -> None:
        opened.append(dbapi_connection)
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = 50")

    sa.event.listen(reader.pool, "connect", set_timeout)
    select = Select("ohlcv", COLUMNS, {"provider": "binance"}, "symbol", ["BTCUSDT"], *WINDOW)
    locker = sa.create_engine(pg_warehouse_url, poolclass=sa.NullPool)
    try:
        with locker.begin() as conn:
            conn.execute(sa.text("LOCK TABLE ohlcv IN ACCESS EXCLUSIVE MODE"))
            with pytest.raises(ReadError, match="statement timeout"):
                reader.read(select)
        assert len(opened) == 1
        assert (reader.pool.checkedin(), reader.pool.checkedout()) == (1, 0)
        assert reader.read(select).empty  # on the same connection
        assert len(opened) == 1
    finally:
        locker.dispose()
        reader.dispose()


def test_libpq_uri_keeps_connection_options_and_encodes_spaces() -> None:
    url = sa.make_url("postgresql+psycopg://u:p%40ss@db:5433/wh").update_query_dict(
        {"options": "-csearch_path=fks -ctimezone=UTC", "sslmode": "require"}
    )

    uri = libpq_uri(url)

    assert uri == (
        "postgresql://u:p%40ss@db:5433/wh"
        "?options=-csearch_path%3Dfks%20-ctimezone%3DUTC&sslmode=require"
    )
