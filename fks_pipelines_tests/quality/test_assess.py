"""One window's verdict: schema, outliers against stored history, completeness and score."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Instrument
from fks_pipelines.quality.assess import BASELINE_BARS, assess_window
from fks_pipelines.quality.bar_errors import FIELDS
from fks_pipelines_tests.quality.support import wavy_hours

HOUR = Interval.parse("1h")
DAY = pd.Timestamp("2024-01-02", tz="UTC")
NEXT_DAY = DAY + pd.Timedelta(days=1)
CRYPTO = Instrument(asset_class="crypto")
LAG_S = 1800.0


def hourly(start: pd.Timestamp, hours: int, closes: np.ndarray | None = None) -> pd.DataFrame:
    return wavy_hours(pd.date_range(start, periods=hours, freq="1h"), closes)


def test_a_clean_old_window_scores_without_timeliness() -> None:
    assessed = assess_window(
        hourly(DAY, 24),
        hourly(DAY, 0),
        CRYPTO,
        HOUR,
        DAY,
        NEXT_DAY,
        NEXT_DAY + pd.Timedelta(days=30),
        LAG_S,
    )

    assert assessed.schema.passed
    assert assessed.completeness.missing == 0
    assert [r.field for r in assessed.outliers] == list(FIELDS)
    assert assessed.score.score == 100.0
    assert "timeliness" not in assessed.score.parts


def test_a_window_just_closed_is_scored_on_time_too() -> None:
    now = NEXT_DAY + pd.Timedelta(seconds=4 * LAG_S)

    assessed = assess_window(
        hourly(DAY, 24), hourly(DAY, 0), CRYPTO, HOUR, DAY, NEXT_DAY, now, LAG_S
    )

    assert assessed.score.parts["timeliness"] == 0.0


def test_a_bad_print_is_found_against_the_history_before_the_window() -> None:
    history = hourly(DAY - (BASELINE_BARS + 1) * HOUR.offset, BASELINE_BARS + 1)
    closes = 100.0 + np.sin(np.arange(24) / 3.0)
    closes[0] *= 1.5  # the window's first bar: only the history gives it a baseline
    bars = hourly(DAY, 24, closes)
    later = NEXT_DAY + pd.Timedelta(days=30)

    with_history = assess_window(bars, history, CRYPTO, HOUR, DAY, NEXT_DAY, later, LAG_S)

    # The whole bar (open = close here) is off both neighbours.
    [shift] = [r for r in with_history.outliers if r.field == "shift"]
    assert shift.severity == "high"
    assert shift.timestamps[0] == DAY
    assert with_history.score.parts["outliers"] == 0.0
    assert shift.scored == 23  # the history is baseline only; the last bar awaits its next


def test_missing_bars_lower_completeness() -> None:
    bars = hourly(DAY, 24).iloc[:20]
    later = NEXT_DAY + pd.Timedelta(days=30)

    assessed = assess_window(bars, hourly(DAY, 0), CRYPTO, HOUR, DAY, NEXT_DAY, later, LAG_S)

    assert assessed.completeness.missing == 4
    assert assessed.score.parts["completeness"] < 100.0
