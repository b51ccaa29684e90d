"""Quality figures per OHLCV partition (table ``ohlcv_quality``), on PostgreSQL and SQLite.

One row per provider (or ``consolidated``), interval, symbol and UTC day: the quality score and
its parts, missing bars, outliers, cross-provider agreement and the checks that failed. A write
upserts its rows (``INSERT ... ON CONFLICT DO UPDATE`` on both databases) in the caller's
transaction, so re-assessing a partition replaces its row and a failed write changes nothing.
The daily quality report (:mod:`fks_pipelines.quality.report`) reads them back.

A frame of quality rows has :data:`QUALITY_COLUMNS` in :data:`QUALITY_DTYPES`; ``day`` is the
partition's UTC date as a tz-naive midnight, ``updated_at`` a UTC timestamp.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from fks_pipelines.quality.report import FAILED_CHECKS_PATTERN
from fks_pipelines.warehouse.tables import OUTLIER_SEVERITIES, ohlcv_quality

KEY_COLUMNS = ("provider", "interval", "symbol", "day")
PART_COLUMNS = (
    "quality_completeness",
    "quality_validity",
    "quality_outliers",
    "quality_timeliness",
    "quality_agreement",
)
QUALITY_COLUMNS = (
    *KEY_COLUMNS,
    "quality_score",
    *PART_COLUMNS,
    "expected_bars",
    "missing_bars",
    "outlier_count",
    "outlier_severity",
    "agreement_max_bps",
    "bars_compared",
    "failed_checks",
    "run_id",
    "updated_at",
)
"""Columns of a quality frame, in order. The score columns are named like the keys of
:meth:`~fks_pipelines.quality.score.QualityScore.as_metadata`, so that a score fills a row."""

QUALITY_DTYPES: dict[str, object] = {
    "provider": "string",
    "interval": "string",
    "symbol": "string",
    "day": "datetime64[ns]",
    "quality_score": "float64",
    **dict.fromkeys(PART_COLUMNS, "float64"),
    "expected_bars": "Int64",
    "missing_bars": "int64",
    "outlier_count": "int64",
    "outlier_severity": "string",
    "agreement_max_bps": "float64",
    "bars_compared": "Int64",
    "failed_checks": "string",
    "run_id": "string",
    "updated_at": pd.DatetimeTZDtype(unit="ns", tz="UTC"),
}

# Columns a frame may leave out: nullable ones, failed_checks (none failed) and updated_at
# (stamped at the write).
_OPTIONAL = frozenset(c.name for c in ohlcv_quality.columns if c.nullable) | {
    "failed_checks",
    "updated_at",
}
_REQUIRED_VALUES = ("provider", "interval", "symbol", "day", "missing_bars", "outlier_count")


def empty_quality() -> pd.DataFrame:
    """A quality frame without rows."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in QUALITY_DTYPES.items()})


def conform_quality(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with exactly :data:`QUALITY_COLUMNS`, in order and in :data:`QUALITY_DTYPES`.

    ``day`` may be dates, ISO strings or timestamps (tz-aware ones are taken in UTC); left-out
    optional columns are null, ``failed_checks`` empty.

    Raises:
        ValueError: A required column is missing or null, or a ``day`` is not a midnight.
    """
    missing = [c for c in QUALITY_COLUMNS if c not in frame.columns and c not in _OPTIONAL]
    if missing:
        raise ValueError(f"quality frame lacks columns {missing}")
    out = frame.reindex(columns=list(QUALITY_COLUMNS))
    nulls = [c for c in _REQUIRED_VALUES if out[c].isna().any()]
    if nulls:
        raise ValueError(f"quality frame has null values in {nulls}")
    out["day"] = _days(out["day"])
    out["updated_at"] = pd.to_datetime(out["updated_at"], utc=True).dt.as_unit("ns")
    out["failed_checks"] = out["failed_checks"].astype("string").fillna("")
    return out.astype({k: v for k, v in QUALITY_DTYPES.items() if k not in ("day", "updated_at")})


def _days(values: pd.Series) -> pd.Series:
    days = pd.to_datetime(values)
    if isinstance(days.dtype, pd.DatetimeTZDtype):
        days = days.dt.tz_convert("UTC").dt.tz_localize(None)
    days = days.dt.as_unit("ns")
    if (days != days.dt.normalize()).any():
        raise ValueError("quality frame has a day that is not a UTC midnight")
    return days


def validate_quality(frame: pd.DataFrame) -> None:
    """Refuse what the database would refuse row by row, naming the first offender.

    Raises:
        ValueError: Two rows share a key, an outlier severity is unknown, or ``failed_checks``
            is not a ``check:SEVERITY`` list.
    """
    duplicated = frame.duplicated(list(KEY_COLUMNS), keep=False)
    if duplicated.any():
        first = frame.loc[duplicated, list(KEY_COLUMNS)].iloc[0].to_dict()
        raise ValueError(f"{int(duplicated.sum())} quality rows share a key, e.g. {first}")
    malformed = ~frame["failed_checks"].str.fullmatch(FAILED_CHECKS_PATTERN).astype(bool)
    if malformed.any():
        raise ValueError(
            f"failed_checks {frame['failed_checks'][malformed].iloc[0]!r} is not a comma-separated "
            '"check:SEVERITY" list (empty when no check failed)'
        )
    severity = frame["outlier_severity"]
    unknown = severity.notna() & ~severity.isin(OUTLIER_SEVERITIES)
    if unknown.any():
        raise ValueError(
            f"unknown outlier severity {severity[unknown].iloc[0]!r}; "
            f"known: {', '.join(OUTLIER_SEVERITIES)}"
        )


def upsert_quality(conn: sa.Connection, frame: pd.DataFrame, now: pd.Timestamp) -> int:
    """Insert or replace the rows of a conformed, validated ``frame`` in ``conn``'s transaction.

    Rows without ``updated_at`` get ``now``. One ``executemany`` of one statement: psycopg
    pipelines it on PostgreSQL, SQLite runs it in process. Returns the rows written.
    """
    if frame.empty:
        return 0
    columns: dict[str, list[object]] = {
        name: frame[name].astype(object).where(frame[name].notna(), None).tolist()
        for name in QUALITY_COLUMNS
    }
    # Replacing a column keeps its place in the dict, so values stay in QUALITY_COLUMNS order.
    columns["day"] = frame["day"].dt.date.tolist()
    stamped = frame["updated_at"].fillna(now.tz_convert("UTC"))
    columns["updated_at"] = list(stamped.array.to_pydatetime())
    rows = [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]
    conn.execute(_upsert_statement(conn.dialect.name), rows)
    return len(rows)


def _upsert_statement(dialect: str) -> sa.Insert:
    insert = (postgresql if dialect == "postgresql" else sqlite).insert(ohlcv_quality)
    return insert.on_conflict_do_update(
        index_elements=list(KEY_COLUMNS),
        set_={name: insert.excluded[name] for name in QUALITY_COLUMNS if name not in KEY_COLUMNS},
    )


def select_quality(
    conn: sa.Connection,
    day_start: date,
    day_end: date,
    providers: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Rows of days in ``[day_start, day_end)`` (of ``providers`` only, if given), conformed and
    sorted by provider, interval, symbol and day."""
    table = ohlcv_quality
    query = sa.select(*(table.c[name] for name in QUALITY_COLUMNS)).where(
        table.c.day >= day_start, table.c.day < day_end
    )
    if providers is not None:
        query = query.where(table.c.provider.in_(list(providers)))
    query = query.order_by(*(table.c[name] for name in KEY_COLUMNS))
    rows = conn.execute(query).all()
    if not rows:
        return empty_quality()
    return conform_quality(pd.DataFrame(rows, columns=list(QUALITY_COLUMNS)))
