"""Warehouse tables (SQLAlchemy Core), portable across PostgreSQL and SQLite."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from fks_pipelines.market.frame import BAR_KINDS

metadata = sa.MetaData()

_KNOWN_KINDS = "bar_kind IN ({})".format(", ".join(f"'{kind}'" for kind in BAR_KINDS))


def _bar_columns() -> list[sa.Column]:
    """The bar's values, shared by ``ohlcv`` and ``ohlcv_consolidated`` (see market/frame.py)."""
    return [
        sa.Column("open", sa.Double, nullable=False),
        sa.Column("high", sa.Double, nullable=False),
        sa.Column("low", sa.Double, nullable=False),
        sa.Column("close", sa.Double, nullable=False),
        sa.Column(
            "volume",
            sa.Double,
            nullable=True,
            comment="Traded volume in base units; null where the provider states none.",
        ),
        sa.Column(
            "quote_volume",
            sa.Double,
            nullable=True,
            comment="Traded value in the quote currency; null where the provider states none.",
        ),
        sa.Column("vwap", sa.Double, nullable=True),
        sa.Column("trades", sa.BigInteger, nullable=True),
        sa.Column(
            "bar_kind",
            sa.String(8),
            nullable=False,
            server_default="traded",
            comment="traded, sampled (formed from price samples) or auction (closing print).",
        ),
    ]


def _bar_constraints(table: str) -> list[sa.CheckConstraint]:
    return [
        sa.CheckConstraint("volume >= 0", name=f"{table}_volume_non_negative"),
        sa.CheckConstraint("quote_volume >= 0", name=f"{table}_quote_volume_non_negative"),
        sa.CheckConstraint("high >= low", name=f"{table}_high_not_below_low"),
        sa.CheckConstraint(_KNOWN_KINDS, name=f"{table}_bar_kind_known"),
    ]


ohlcv = sa.Table(
    "ohlcv",
    metadata,
    sa.Column("provider", sa.String(32), primary_key=True, comment="Provider id."),
    sa.Column("symbol", sa.String(64), primary_key=True, comment="The provider's own ticker."),
    sa.Column("interval", sa.String(8), primary_key=True, comment="Bar length, e.g. 1h."),
    sa.Column("ts", sa.DateTime(timezone=True), primary_key=True, comment="Bar open time, UTC."),
    *_bar_columns(),
    sa.Column(
        "ingested_at",
        sa.DateTime(timezone=True),
        nullable=False,
        server_default=sa.func.current_timestamp(),
        comment="When this row was written; used for freshness.",
    ),
    *_bar_constraints("ohlcv"),
    comment="Closed OHLCV bars, one row per provider, symbol, interval and open time.",
)

ohlcv_consolidated = sa.Table(
    "ohlcv_consolidated",
    metadata,
    sa.Column("instrument", sa.String(32), primary_key=True, comment="Canonical instrument."),
    sa.Column("interval", sa.String(8), primary_key=True, comment="Bar length, e.g. 1h."),
    sa.Column("ts", sa.DateTime(timezone=True), primary_key=True, comment="Bar open time, UTC."),
    *_bar_columns(),
    sa.Column("source", sa.String(32), nullable=False, comment="Provider the bar was taken from."),
    sa.Column("source_symbol", sa.String(64), nullable=False, comment="That provider's ticker."),
    sa.Column("providers", sa.Integer, nullable=False, comment="How many providers had this bar."),
    sa.Column(
        "agreement_bps",
        sa.Double,
        nullable=True,
        comment="Largest deviation of another provider's close from this close, in basis "
        "points, compared like with like (a sampled bar only with sampled bars); null where no "
        "such bar was there to compare.",
    ),
    sa.Column(
        "ingested_at",
        sa.DateTime(timezone=True),
        nullable=False,
        server_default=sa.func.current_timestamp(),
        comment="When this row was written; used for freshness.",
    ),
    *_bar_constraints("ohlcv_consolidated"),
    sa.CheckConstraint("providers >= 1", name="ohlcv_consolidated_providers_positive"),
    sa.CheckConstraint(
        "agreement_bps IS NULL OR agreement_bps >= 0",
        name="ohlcv_consolidated_agreement_non_negative",
    ),
    comment="The consolidated series: one bar per instrument, interval and open time, taken from "
    "the most preferred provider that had a traded bar (or auction print), else a sampled one.",
)

WEBHOOK_STATUSES = ("pending", "requested", "unmapped", "ignored")

webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column(
        "seq",
        # SQLite only auto-increments an INTEGER primary key; AUTOINCREMENT (below) keeps it from
        # ever reusing a number, so the sensor's cursor can never skip a new event.
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        sa.Identity(),
        primary_key=True,
        comment="Arrival order; the webhook sensor's cursor.",
    ),
    sa.Column("id", sa.String(200), nullable=False, unique=True, comment="Event id."),
    sa.Column(
        "payload_hash",
        sa.String(64),
        nullable=False,
        unique=True,
        comment="SHA-256 of the event's canonical JSON; a re-delivery has the same one.",
    ),
    sa.Column(
        "received_at",
        sa.DateTime(timezone=True),
        nullable=False,
        comment="When the intake stored it (and acknowledged it right after), UTC.",
    ),
    sa.Column("source", sa.String(16), nullable=False, comment="Route: binance, polygon, generic."),
    sa.Column("provider", sa.String(32), nullable=False, comment="Provider whose data changed."),
    sa.Column("symbol", sa.String(64), nullable=False, comment="The provider's own ticker."),
    sa.Column("interval", sa.String(8), nullable=False, comment="Bar length, e.g. 1h."),
    sa.Column("window_start", sa.DateTime(timezone=True), nullable=False, comment="UTC."),
    sa.Column("window_end", sa.DateTime(timezone=True), nullable=False, comment="UTC, exclusive."),
    sa.Column("closed", sa.Boolean, nullable=False, comment="The bars of the window are final."),
    sa.Column("payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
    sa.Column(
        "status",
        sa.String(16),
        nullable=False,
        server_default="pending",
        comment="pending until the sensor saw it; then requested, unmapped or ignored.",
    ),
    sa.Column("reason", sa.Text, nullable=True, comment="Why the sensor gave it its status."),
    sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True, comment="Status set, UTC."),
    sa.Column(
        "published",
        sa.Boolean,
        nullable=False,
        server_default=sa.false(),
        comment="Added to the Redis stream (at least once).",
    ),
    sa.CheckConstraint(
        "status IN ({})".format(", ".join(f"'{s}'" for s in WEBHOOK_STATUSES)),
        name="webhook_events_status_known",
    ),
    sa.CheckConstraint("window_end > window_start", name="webhook_events_window_not_empty"),
    sa.Index("webhook_events_status_seq", "status", "seq"),
    sa.Index("webhook_events_published_seq", "published", "seq"),
    sa.Index("webhook_events_handled_at", "handled_at"),
    sqlite_autoincrement=True,
    comment="Signed webhook events, stored before they are acknowledged; the webhook_events "
    "sensor turns them into runs of the partitions they affect.",
)

OUTLIER_SEVERITIES = ("none", "low", "medium", "high")

ohlcv_quality = sa.Table(
    "ohlcv_quality",
    metadata,
    sa.Column("provider", sa.String(32), primary_key=True, comment="Provider id, or consolidated."),
    sa.Column("interval", sa.String(8), primary_key=True, comment="Bar length, e.g. 1h."),
    sa.Column(
        "symbol",
        sa.String(64),
        primary_key=True,
        comment="The provider's own ticker; the canonical instrument for consolidated.",
    ),
    sa.Column("day", sa.Date, primary_key=True, comment="The partition's UTC day."),
    sa.Column("quality_score", sa.Double, nullable=True, comment="0-100; null if nothing scored."),
    sa.Column("quality_completeness", sa.Double, nullable=True, comment="Part score, 0-100."),
    sa.Column("quality_validity", sa.Double, nullable=True, comment="Part score, 0-100."),
    sa.Column("quality_outliers", sa.Double, nullable=True, comment="Part score, 0-100."),
    sa.Column("quality_timeliness", sa.Double, nullable=True, comment="Part score, 0-100."),
    sa.Column("quality_agreement", sa.Double, nullable=True, comment="Part score, 0-100."),
    sa.Column(
        "expected_bars", sa.Integer, nullable=True, comment="Bars the calendar expects that day."
    ),
    sa.Column("missing_bars", sa.Integer, nullable=False, comment="Expected bars not stored."),
    sa.Column("outlier_count", sa.Integer, nullable=False, comment="Outlying values found."),
    sa.Column(
        "outlier_severity", sa.String(8), nullable=True, comment="none, low, medium or high."
    ),
    sa.Column(
        "agreement_max_bps",
        sa.Double,
        nullable=True,
        comment="Largest deviation of another provider's close, in basis points.",
    ),
    sa.Column(
        "bars_compared",
        sa.Integer,
        nullable=True,
        comment="Bars compared across providers; null where agreement was not measured.",
    ),
    sa.Column(
        "failed_checks",
        sa.Text,
        nullable=False,
        server_default="",
        comment='Failed checks as comma-separated "check:SEVERITY"; empty when none failed.',
    ),
    sa.Column("run_id", sa.String(64), nullable=True, comment="Dagster run that assessed it."),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, comment="When it was written."
    ),
    sa.CheckConstraint(
        "quality_score IS NULL OR (quality_score >= 0 AND quality_score <= 100)",
        name="ohlcv_quality_score_in_range",
    ),
    sa.CheckConstraint(
        "expected_bars IS NULL OR expected_bars >= 0", name="ohlcv_quality_expected_non_negative"
    ),
    sa.CheckConstraint("missing_bars >= 0", name="ohlcv_quality_missing_non_negative"),
    sa.CheckConstraint("outlier_count >= 0", name="ohlcv_quality_outliers_non_negative"),
    sa.CheckConstraint(
        "outlier_severity IS NULL OR outlier_severity IN ({})".format(
            ", ".join(f"'{s}'" for s in OUTLIER_SEVERITIES)
        ),
        name="ohlcv_quality_severity_known",
    ),
    sa.CheckConstraint(
        "agreement_max_bps IS NULL OR agreement_max_bps >= 0",
        name="ohlcv_quality_agreement_non_negative",
    ),
    sa.CheckConstraint(
        "bars_compared IS NULL OR bars_compared >= 0", name="ohlcv_quality_compared_non_negative"
    ),
    sa.Index("ohlcv_quality_day", "day"),
    comment="Quality figures of each OHLCV partition (provider or consolidated, interval, symbol, "
    "UTC day), rewritten whenever the partition is assessed; the daily quality report reads them.",
)
