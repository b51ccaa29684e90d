"""An example of using the data downstream: daily returns and realised volatility.

``analytics/daily_returns`` is daily partitioned and takes ``ohlcv/consolidated/1h`` as a
parameter: the warehouse I/O manager (:mod:`fks_pipelines.defs.io_manager`) hands it every
instrument's bars of its UTC day, one DataFrame per run (a backfill range run gets its whole
range). It shows its rows in its materialisation (a table in the UI) and stores nothing: Dagster's
default I/O manager cannot store one output for a range of partitions, and a real consumer would
write its own table. Two checks come with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import dagster as dg
import numpy as np
import pandas as pd

from fks_pipelines.defs.assets import DEFAULT_POLICY, AssetPolicy
from fks_pipelines.defs.consolidated import consolidated_asset_key, consolidated_instruments
from fks_pipelines.market.returns import daily_returns
from fks_pipelines.market.universe import Universe

SOURCE_INTERVAL = "1h"
MAX_ABS_RETURN = 1.0
"""A day's return beyond +-100 % is a data error, not a market move, for these instruments."""
MAX_SHOWN = 100
"""Rows the materialisation's table shows (a range run of many days shows its first ones)."""


def daily_returns_key() -> dg.AssetKey:
    return dg.AssetKey(["analytics", "daily_returns"])


def build_daily_returns_asset(
    universe: Universe, start: date, policy: AssetPolicy = DEFAULT_POLICY
) -> dg.AssetsDefinition:
    """``analytics/daily_returns`` from ``ohlcv/consolidated/1h``, daily from ``start``."""
    key = daily_returns_key()
    source = consolidated_asset_key(SOURCE_INTERVAL)
    instruments = consolidated_instruments(universe, SOURCE_INTERVAL)

    @dg.asset(
        key=key,
        ins={"bars": dg.AssetIn(key=source)},
        partitions_def=dg.DailyPartitionsDefinition(start_date=start.isoformat()),
        group_name="analytics",
        kinds={"python", "pandas"},
        owners=list(policy.owners),
        backfill_policy=policy.backfill,
        check_specs=[
            dg.AssetCheckSpec(
                "values_in_range",
                asset=key,
                description=(
                    "Every return and realised volatility is finite, volatility is not "
                    f"negative and no day moved more than {MAX_ABS_RETURN:.0%}."
                ),
            ),
            dg.AssetCheckSpec(
                "one_row_per_instrument_day",
                asset=key,
                description="Each instrument with bars on a day has exactly one row for it.",
            ),
        ],
        description=(
            "Daily return (first open to last close of the UTC day) and realised volatility "
            "(square root of the sum of squared hourly log returns) per instrument, from the "
            f"consolidated 1h series ({', '.join(instruments)}). An example of a downstream "
            "asset: the warehouse I/O manager loads exactly its days of every instrument."
        ),
    )
    def _daily_returns(bars: pd.DataFrame) -> Iterator[object]:
        returns = daily_returns(bars)
        yield dg.MaterializeResult(
            metadata={
                "rows": len(returns),
                "input_bars": len(bars),
                "returns": _table(returns.head(MAX_SHOWN)),
            }
        )
        yield _in_range(key, returns)
        yield _one_row_each(key, bars, returns)

    return _daily_returns


def _table(returns: pd.DataFrame) -> dg.TableMetadataValue:
    """The rows as a table the UI shows, rounded for reading."""
    records = [
        dg.TableRecord(
            {
                "instrument": row.instrument,
                "day": row.day.date().isoformat(),
                "close": float(row.close),
                "day_return_pct": round(float(row.day_return) * 100, 4),
                "realised_vol_pct": round(float(row.realised_vol) * 100, 4),
                "bars": int(row.bars),
            }
        )
        for row in returns.itertuples(index=False)
    ]
    return dg.MetadataValue.table(records)


def _in_range(key: dg.AssetKey, returns: pd.DataFrame) -> dg.AssetCheckResult:
    values = returns[["day_return", "realised_vol"]].to_numpy(dtype="float64")
    bad = (
        ~np.isfinite(values).all(axis=1)
        | (returns["realised_vol"].to_numpy() < 0)
        | (returns["day_return"].abs().to_numpy() > MAX_ABS_RETURN)
    )
    failed = returns.loc[bad, ["instrument", "day", "day_return", "realised_vol"]]
    return dg.AssetCheckResult(
        asset_key=key,
        check_name="values_in_range",
        passed=failed.empty,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "failed_rows": len(failed),
            "examples": dg.MetadataValue.text(failed.head(5).to_string(index=False)),
        },
    )


def _one_row_each(
    key: dg.AssetKey, bars: pd.DataFrame, returns: pd.DataFrame
) -> dg.AssetCheckResult:
    days = bars["ts"].dt.tz_convert("UTC").dt.tz_localize(None).dt.floor("D")
    expected = pd.MultiIndex.from_arrays([bars["instrument"], days]).unique()
    got = pd.MultiIndex.from_frame(returns[["instrument", "day"]])
    duplicated = int(got.duplicated().sum())
    missing = len(expected.difference(got))
    return dg.AssetCheckResult(
        asset_key=key,
        check_name="one_row_per_instrument_day",
        passed=not duplicated and not missing,
        metadata={"rows": len(got), "duplicated": duplicated, "missing": missing},
    )
