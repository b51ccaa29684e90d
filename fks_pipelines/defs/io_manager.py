"""An I/O manager that hands the stored bars to downstream assets.

The OHLCV assets (``ohlcv/<provider>/<interval>`` and ``ohlcv/consolidated/<interval>``) write
their own rows, one idempotent write per block of partitions, and end with a
``MaterializeResult``: Dagster then calls no ``handle_output``. What this manager adds is the
other half: a downstream asset that takes one of them as a parameter receives one DataFrame of
exactly the partitions it maps to, loaded through the warehouse's fast read path
(:mod:`fks_pipelines.warehouse.reads`):

- the same date x symbol partitions: those bars;
- a daily partitioned asset: every symbol of its dates (Dagster maps one dimension);
- a range of partitions (a backfill run, a ``TimeWindowPartitionMapping`` with offsets): all of
  them, read as the fewest symbol x consecutive-day rectangles;
- an unpartitioned asset: every symbol over the last ``unpartitioned_days`` days of the upstream
  partitions.

Rows come sorted by symbol (instrument) and ``ts``; provider series in the canonical frame
(:mod:`fks_pipelines.market.frame`), the consolidated series in its own
(:mod:`fks_pipelines.market.consolidate`).
"""

from __future__ import annotations

import dagster as dg
import pandas as pd
from pydantic import Field

from fks_pipelines.defs.partitions import DaySymbol, blocks
from fks_pipelines.defs.resources import WarehouseResource
from fks_pipelines.market import consolidate
from fks_pipelines.market.frame import empty_frame
from fks_pipelines.warehouse.store import Warehouse

CONSOLIDATED = "consolidated"
IO_MANAGER_KEY = "warehouse_io_manager"
"""The resource key the OHLCV assets name as their I/O manager."""


class WarehouseIOManager(dg.ConfigurableIOManager):
    """Loads ``ohlcv/<provider>/<interval>`` and ``ohlcv/consolidated/<interval>`` partitions
    from the warehouse for the assets downstream of them; stores nothing itself."""

    warehouse: WarehouseResource
    unpartitioned_days: int = Field(
        default=30,
        ge=1,
        description="Days of bars an unpartitioned downstream asset receives: the latest ones.",
    )

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        """Nothing to store: the OHLCV assets wrote their rows before they returned."""
        if obj is not None:
            raise TypeError(
                f"{context.asset_key.to_user_string()} returned a value to the warehouse I/O "
                "manager, which stores nothing: the OHLCV assets write their own rows"
            )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        path = context.asset_key.path
        if len(path) != 3 or path[0] != "ohlcv":
            raise dg.DagsterInvariantViolationError(
                f"the warehouse I/O manager loads ohlcv/<provider>/<interval> assets, not "
                f"{context.asset_key.to_user_string()}"
            )
        _, provider, interval = path
        keys = self._partition_keys(context)
        warehouse = self.warehouse.get_warehouse()
        frames = [
            _read(warehouse, provider, interval, block.symbols, block.start, block.end)
            for block in blocks(keys)
        ]
        frame = _combine(frames, provider)
        # Input metadata takes one upstream partition only: the run's log says what was loaded.
        context.log.info(
            "loaded %d rows of %s, %d partitions in %d reads",
            len(frame),
            context.asset_key.to_user_string(),
            len(keys),
            len(frames),
        )
        return frame

    def _partition_keys(self, context: dg.InputContext) -> list[str]:
        """The upstream partitions to load: those the downstream partition maps to, or the
        latest ``unpartitioned_days`` days of every symbol for an unpartitioned asset."""
        if not context.has_asset_partitions:
            raise dg.DagsterInvariantViolationError(
                f"{context.asset_key.to_user_string()} is not partitioned by date x symbol"
            )
        keys = list(context.asset_partition_keys)
        # A partitioned downstream runs one partition or a range of them.
        if context.has_partition_key or context.step_context.has_partition_key_range:
            return keys
        day_of = {key: DaySymbol.from_key(key).day for key in keys}
        latest = set(sorted(set(day_of.values()))[-self.unpartitioned_days :])
        return [key for key, day in day_of.items() if day in latest]


def _read(
    warehouse: Warehouse,
    provider: str,
    interval: str,
    symbols: tuple[str, ...],
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> pd.DataFrame:
    if provider == CONSOLIDATED:
        return warehouse.read_consolidated(interval, symbols, start, end)
    return warehouse.read_ohlcv(provider, interval, symbols, start, end)


def _combine(frames: list[pd.DataFrame], provider: str) -> pd.DataFrame:
    """One frame sorted by symbol (instrument) and ``ts``, in the read path's dtypes."""
    if not frames:
        return consolidate.empty_consolidated() if provider == CONSOLIDATED else empty_frame()
    if len(frames) == 1:
        return frames[0]
    key = "instrument" if provider == CONSOLIDATED else "symbol"
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values([key, "ts"], kind="stable", ignore_index=True)
