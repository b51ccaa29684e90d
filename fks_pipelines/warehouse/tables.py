"""Warehouse tables (SQLAlchemy Core), portable across PostgreSQL and SQLite."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

ohlcv = sa.Table(
    "ohlcv",
    metadata,
    sa.Column("provider", sa.String(32), primary_key=True, comment="Provider id."),
    sa.Column("symbol", sa.String(64), primary_key=True, comment="The provider's own ticker."),
    sa.Column("interval", sa.String(8), primary_key=True, comment="Bar length, e.g. 1h."),
    sa.Column("ts", sa.DateTime(timezone=True), primary_key=True, comment="Bar open time, UTC."),
    sa.Column("open", sa.Double, nullable=False),
    sa.Column("high", sa.Double, nullable=False),
    sa.Column("low", sa.Double, nullable=False),
    sa.Column("close", sa.Double, nullable=False),
    sa.Column("volume", sa.Double, nullable=False),
    sa.Column("vwap", sa.Double, nullable=True),
    sa.Column("trades", sa.BigInteger, nullable=True),
    sa.Column(
        "ingested_at",
        sa.DateTime(timezone=True),
        nullable=False,
        server_default=sa.func.current_timestamp(),
        comment="When this row was written; used for freshness.",
    ),
    sa.CheckConstraint("volume >= 0", name="ohlcv_volume_non_negative"),
    sa.CheckConstraint("high >= low", name="ohlcv_high_not_below_low"),
    comment="Closed OHLCV bars, one row per provider, symbol, interval and open time.",
)
