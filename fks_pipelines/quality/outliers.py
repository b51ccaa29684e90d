"""The result shape the data-error detectors report in, one :class:`OutlierResult` per detector.

The detectors themselves are in :mod:`~fks_pipelines.quality.bar_errors`;
:func:`~fks_pipelines.quality.assess.judge_days` turns their per-bar scores into one result per
detector field (``close``, ``shift``, ``high``, ``low``, ``bar``, ``volume``) and UTC day, which
the asset checks, the quality score and the quality report read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

Method = Literal["errors"]
"""What produced a result: ``errors``, the data-error detectors of
:mod:`~fks_pipelines.quality.bar_errors`."""
Severity = Literal["none", "low", "medium", "high"]
"""Asset checks map ``high`` to ERROR and ``medium`` to WARN; ``low`` passes."""

MAX_LISTED = 20
"""Most flagged bars a result lists (its ``count`` stays exact)."""


@dataclass(frozen=True)
class OutlierResult:
    """Bars one detector flagged.

    Attributes:
        field: The detector (``close``, ``shift``, ``high``, ``low``, ``bar`` or ``volume``).
        method: What produced the result (``errors``).
        threshold: Scores at or above it are flagged (the detector's WARN level).
        count: Flagged bars (exact).
        scored: Bars that could be scored.
        max_score: The worst score; None when nothing was scored.
        severity: ``none``, ``low``, ``medium`` or ``high``.
        timestamps: Bar open times of the worst flagged bars, worst first, at most
            :data:`MAX_LISTED`.
        values: The bars' values of the field judged (prices or volumes, not scores).
        scores: Their scores.
        symbols: Their symbols.
    """

    field: str
    method: Method
    threshold: float
    count: int
    scored: int
    max_score: float | None
    severity: Severity
    timestamps: list[pd.Timestamp] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)

    def as_metadata(self) -> dict[str, object]:
        """Flat metadata (plain Python), keys prefixed ``outliers_<field>_``."""
        prefix = f"outliers_{self.field}_"
        metadata: dict[str, object] = {
            f"{prefix}count": self.count,
            f"{prefix}scored": self.scored,
            f"{prefix}severity": self.severity,
            f"{prefix}method": self.method,
            f"{prefix}threshold": self.threshold,
        }
        if self.max_score is not None:
            metadata[f"{prefix}max_score"] = self.max_score
        if self.timestamps:
            metadata[f"{prefix}examples"] = self.examples
        return metadata

    @property
    def examples(self) -> list[str]:
        """The listed bars, worst first: ``symbol ts value (score s)``."""
        return [
            f"{symbol} {ts.isoformat()} {value:g} (score {score:.1f})"
            for symbol, ts, value, score in zip(
                self.symbols, self.timestamps, self.values, self.scores, strict=True
            )
        ]
