"""Cross-provider agreement of a consolidated series (see :mod:`fks_pipelines.market.consolidate`).

Only bars that at least two providers have, made alike (traded with traded, sampled with sampled),
are *compared*; the others have no ``agreement_bps`` and count toward ``bars``, ``source_mix``
and ``kind_mix`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True)
class Agreement:
    """How closely providers agree on the closes of a consolidated series.

    Attributes:
        bars: Rows of the consolidated series.
        compared: Bars that at least two providers have (a deviation was measured).
        median_abs_dev_bps: Median of ``agreement_bps`` over compared bars; None if none.
        max_abs_dev_bps: Largest ``agreement_bps`` over compared bars; None if none.
        beyond_tolerance: Compared bars whose ``agreement_bps`` exceeds ``tolerance_bps``.
        tolerance_bps: The tolerance the count was taken against.
        source_mix: Provider id -> bars taken from it, by provider id.
        kind_mix: Bar kind (traded, sampled, auction) -> bars of that kind, by kind.
    """

    bars: int
    compared: int
    median_abs_dev_bps: float | None
    max_abs_dev_bps: float | None
    beyond_tolerance: int
    tolerance_bps: float
    source_mix: dict[str, int]
    kind_mix: dict[str, int] = field(default_factory=dict)

    def as_metadata(self) -> dict[str, float | int]:
        """Flat numeric metadata (plain ``int``/``float``) for an asset materialization.

        The median and maximum are left out when no bar was compared, rather than reported as
        NaN or 0, so that plots over runs show a gap instead of a false value.
        """
        metadata: dict[str, float | int] = {
            "rows": self.bars,
            "bars_compared": self.compared,
            "agreement_beyond_tolerance": self.beyond_tolerance,
            "agreement_tolerance_bps": self.tolerance_bps,
        }
        if self.median_abs_dev_bps is not None:
            metadata["agreement_median_bps"] = self.median_abs_dev_bps
        if self.max_abs_dev_bps is not None:
            metadata["agreement_max_bps"] = self.max_abs_dev_bps
        metadata.update({f"source_{name}": count for name, count in self.source_mix.items()})
        metadata.update({f"bars_{kind}": count for kind, count in self.kind_mix.items()})
        return metadata


def measure_agreement(consolidated: pd.DataFrame, tolerance_bps: float) -> Agreement:
    """Measure the agreement recorded in a consolidated series.

    Args:
        consolidated: A frame from :func:`~fks_pipelines.market.consolidate.consolidate` (or read
            back from the warehouse); uses its ``source``, ``bar_kind``, ``providers`` and
            ``agreement_bps``.
        tolerance_bps: Deviation above which a compared bar counts as beyond tolerance, e.g.
            ``Universe.tolerance(instrument).warn_bps``.

    Raises:
        ValueError: ``tolerance_bps`` is negative or not a number.
    """
    if not tolerance_bps >= 0:  # also refuses NaN
        raise ValueError(f"tolerance_bps must be a non-negative number, got {tolerance_bps!r}")
    deviations = consolidated["agreement_bps"].astype("float64")
    deviations = deviations[(consolidated["providers"] >= 2).to_numpy() & deviations.notna()]
    compared = len(deviations)
    counts = consolidated["source"].value_counts().sort_index()
    kinds = consolidated["bar_kind"].value_counts().sort_index()
    return Agreement(
        bars=len(consolidated),
        compared=compared,
        median_abs_dev_bps=float(deviations.median()) if compared else None,
        max_abs_dev_bps=float(deviations.max()) if compared else None,
        beyond_tolerance=int((deviations > tolerance_bps).sum()),
        tolerance_bps=float(tolerance_bps),
        source_mix={str(name): int(count) for name, count in counts.items()},
        kind_mix={str(kind): int(count) for kind, count in kinds.items()},
    )
