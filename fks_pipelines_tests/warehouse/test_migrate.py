"""Tables written before ``quote_volume`` and ``bar_kind`` existed are upgraded in place."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from fks_pipelines.market.frame import validate
from fks_pipelines.warehouse import migrate
from fks_pipelines.warehouse.store import Warehouse

DAY = pd.Timestamp("2019-01-02", tz="UTC")
_SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"


def _bar_columns() -> list[sa.Column]:
    """The bar columns as the code before the upgrade defined them: ``volume`` NOT NULL."""
    return [
        sa.Column("open", sa.Double, nullable=False),
        sa.Column("high", sa.Double, nullable=False),
        sa.Column("low", sa.Double, nullable=False),
        sa.Column("close", sa.Double, nullable=False),
        sa.Column("volume", sa.Double, nullable=False),
        sa.Column("vwap", sa.Double, nullable=True),
        sa.Column("trades", sa.BigInteger, nullable=True),
    ]


def _old_tables() -> tuple[sa.MetaData, sa.Table, sa.Table]:
    """``ohlcv`` and ``ohlcv_consolidated`` exactly as the earlier code created them."""
    old = sa.MetaData()

    def stamp() -> sa.Column:
        return sa.Column(
            "ingested_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.current_timestamp(),
        )

    bars = sa.Table(
        "ohlcv",
        old,
        sa.Column("provider", sa.String(32), primary_key=True),
        sa.Column("symbol", sa.String(64), primary_key=True),
        sa.Column("interval", sa.String(8), primary_key=True),
        sa.Column("ts", sa.DateTime(timezone=True), primary_key=True),
        *_bar_columns(),
        stamp(),
        sa.CheckConstraint("volume >= 0", name="ohlcv_volume_non_negative"),
        sa.CheckConstraint("high >= low", name="ohlcv_high_not_below_low"),
    )
    consolidated = sa.Table(
        "ohlcv_consolidated",
        old,
        sa.Column("instrument", sa.String(32), primary_key=True),
        sa.Column("interval", sa.String(8), primary_key=True),
        sa.Column("ts", sa.DateTime(timezone=True), primary_key=True),
        *_bar_columns(),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("source_symbol", sa.String(64), nullable=False),
        sa.Column("providers", sa.Integer, nullable=False),
        sa.Column("agreement_bps", sa.Double, nullable=True),
        stamp(),
        sa.CheckConstraint("volume >= 0", name="ohlcv_consolidated_volume_non_negative"),
        sa.CheckConstraint("high >= low", name="ohlcv_consolidated_high_not_below_low"),
    )
    return old, bars, consolidated


OLD_BARS = [
    # provider, symbol, day offset, close, volume as the earlier code stored it, vwap, trades
    ("binance", "BTCUSDT", 0, 3943.0, 1234.5, 3900.1, 77),
    ("binance", "BTCUSDT", 1, 3836.7, 1500.0, None, None),
    ("coinmarketcap", "BTC", 0, 3943.41, 5244856835.7, None, None),
    ("coingecko", "bitcoin", 0, 3941.2, 1_330_000.0, None, None),
]


def _ts(offset: int) -> object:
    return (DAY + pd.Timedelta(days=offset)).to_pydatetime()


@pytest.fixture
def old_warehouse(warehouse_url: str) -> Iterator[sa.Engine]:
    """A warehouse holding rows written by the earlier schema, and nothing else."""
    engine = sa.create_engine(warehouse_url)
    old, bars, consolidated = _old_tables()
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS ohlcv"))
        conn.execute(sa.text("DROP TABLE IF EXISTS ohlcv_consolidated"))
        old.create_all(conn)
        conn.execute(
            sa.insert(bars),
            [
                {
                    "provider": provider,
                    "symbol": symbol,
                    "interval": "1d",
                    "ts": _ts(offset),
                    "open": close - 10,
                    "high": close + 20,
                    "low": close - 30,
                    "close": close,
                    "volume": volume,
                    "vwap": vwap,
                    "trades": trades,
                }
                for provider, symbol, offset, close, volume, vwap, trades in OLD_BARS
            ],
        )
        conn.execute(
            sa.insert(consolidated),
            [
                {
                    "instrument": "BTC-USD",
                    "interval": "1d",
                    "ts": _ts(offset),
                    "open": 3900.0,
                    "high": 4000.0,
                    "low": 3800.0,
                    "close": 3950.0,
                    "volume": volume,
                    "vwap": None,
                    "trades": None,
                    "source": source,
                    "source_symbol": symbol,
                    "providers": 1,
                    "agreement_bps": None,
                }
                for offset, source, symbol, volume in (
                    (0, "binance", "BTCUSDT", 1234.5),
                    (1, "coinmarketcap", "BTC", 4.9e9),
                    (2, "coingecko", "bitcoin", 1.2e6),
                )
            ],
        )
    try:
        yield engine
    finally:
        engine.dispose()


def test_upgrade_keeps_every_row_and_its_meaning(old_warehouse: sa.Engine) -> None:
    warehouse = Warehouse(old_warehouse)
    warehouse.ensure_schema()

    stored = {
        provider: warehouse.read_ohlcv(provider, "1d", [symbol], DAY, DAY + pd.Timedelta(days=2))
        for provider, symbol in (("binance", "BTCUSDT"), ("coinmarketcap", "BTC"))
    }
    stored["coingecko"] = warehouse.read_ohlcv(
        "coingecko", "1d", ["bitcoin"], DAY, DAY + pd.Timedelta(days=1)
    )
    assert warehouse.count_ohlcv() == len(OLD_BARS)
    for frame in stored.values():
        validate(frame)

    binance = stored["binance"]
    assert binance["close"].tolist() == [3943.0, 3836.7]
    assert binance["volume"].tolist() == [1234.5, 1500.0]
    assert binance["quote_volume"].isna().all()
    assert binance["vwap"].tolist()[0] == 3900.1 and np.isnan(binance["vwap"].tolist()[1])
    assert binance["trades"].tolist() == [77, pd.NA]
    assert binance["bar_kind"].tolist() == ["traded", "traded"]
    # CoinMarketCap's volume was quote.USD.volume: USD turnover, now in the column that says so.
    cmc = stored["coinmarketcap"]
    assert cmc["volume"].isna().all()
    assert cmc["quote_volume"].tolist() == [5244856835.7]
    assert cmc["bar_kind"].tolist() == ["traded"]
    # CoinGecko's was derived (USD / mean sampled price): cleared, and the bar is marked sampled.
    gecko = stored["coingecko"]
    assert gecko["close"].tolist() == [3941.2]
    assert gecko["volume"].isna().all() and gecko["quote_volume"].isna().all()
    assert gecko["bar_kind"].tolist() == ["sampled"]

    consolidated = warehouse.read_consolidated("1d", ["BTC-USD"], DAY, DAY + pd.Timedelta(days=3))
    assert consolidated["source"].tolist() == ["binance", "coinmarketcap", "coingecko"]
    assert consolidated["volume"].tolist()[0] == 1234.5
    assert np.isnan(consolidated["volume"].tolist()[1])
    assert consolidated["quote_volume"].tolist()[1] == 4.9e9
    assert consolidated["bar_kind"].tolist() == ["traded", "traded", "sampled"]


def test_upgraded_tables_take_new_bars_and_keep_their_constraints(
    old_warehouse: sa.Engine,
) -> None:
    warehouse = Warehouse(old_warehouse)
    warehouse.ensure_schema()
    with warehouse.engine.begin() as conn:
        assert migrate.upgrade(conn) == []  # a second upgrade has nothing to do
    ts = DAY.strftime(_SQLITE_TS) if warehouse.dialect == "sqlite" else DAY.to_pydatetime()
    row = {
        "provider": "coinmarketcap",
        "symbol": "ETH",
        "interval": "1d",
        "ts": ts,
        "open": 1.0,
        "high": 2.0,
        "low": 0.5,
        "close": 1.5,
        "volume": None,
        "quote_volume": -1.0,
    }
    insert = sa.text(
        'INSERT INTO ohlcv (provider, symbol, "interval", ts, open, high, low, close, volume,'
        " quote_volume, bar_kind) VALUES (:provider, :symbol, :interval, :ts, :open, :high,"
        " :low, :close, :volume, :quote_volume, :bar_kind)"
    )
    for bad in (
        {"quote_volume": -1.0, "bar_kind": "traded"},
        {"quote_volume": 1.0, "bar_kind": "x"},
    ):
        with pytest.raises(sa.exc.IntegrityError), warehouse.engine.begin() as conn:
            conn.execute(insert, {**row, **bad})
    with warehouse.engine.begin() as conn:
        conn.execute(insert, {**row, "quote_volume": 7.0, "bar_kind": "traded"})
    assert warehouse.count_ohlcv() == len(OLD_BARS) + 1
