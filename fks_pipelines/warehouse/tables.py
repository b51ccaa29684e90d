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

ohlcv_consolidated = sa.Table(
    "ohlcv_consolidated",
    metadata,
    sa.Column("instrument", sa.String(32), primary_key=True, comment="Canonical instrument."),
    sa.Column("interval", sa.String(8), primary_key=True, comment="Bar length, e.g. 1h."),
    sa.Column("ts", sa.DateTime(timezone=True), primary_key=True, comment="Bar open time, UTC."),
    sa.Column("open", sa.Double, nullable=False),
    sa.Column("high", sa.Double, nullable=False),
    sa.Column("low", sa.Double, nullable=False),
    sa.Column("close", sa.Double, nullable=False),
    sa.Column("volume", sa.Double, nullable=False),
    sa.Column("vwap", sa.Double, nullable=True),
    sa.Column("trades", sa.BigInteger, nullable=True),
    sa.Column("source", sa.String(32), nullable=False, comment="Provider the bar was taken from."),
    sa.Column("source_symbol", sa.String(64), nullable=False, comment="That provider's ticker."),
    sa.Column("providers", sa.Integer, nullable=False, comment="How many providers had this bar."),
    sa.Column(
        "agreement_bps",
        sa.Double,
        nullable=True,
        comment="Largest deviation of another provider's close from this close, in basis "
        "points; null where only one provider had the bar.",
    ),
    sa.Column(
        "ingested_at",
        sa.DateTime(timezone=True),
        nullable=False,
        server_default=sa.func.current_timestamp(),
        comment="When this row was written; used for freshness.",
    ),
    sa.CheckConstraint("volume >= 0", name="ohlcv_consolidated_volume_non_negative"),
    sa.CheckConstraint("high >= low", name="ohlcv_consolidated_high_not_below_low"),
    sa.CheckConstraint("providers >= 1", name="ohlcv_consolidated_providers_positive"),
    sa.CheckConstraint(
        "agreement_bps IS NULL OR agreement_bps >= 0",
        name="ohlcv_consolidated_agreement_non_negative",
    ),
    comment="The consolidated series: one bar per instrument, interval and open time, taken from "
    "the most preferred provider that had it.",
)
