"""Outliers against each series' rolling baseline: spikes found, trends left alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fks_pipelines.market.frame import build_frame
from fks_pipelines.quality.outliers import MAX_LISTED, OutlierDetector

METHODS = ("mad", "zscore", "iqr")
START = pd.Timestamp("2024-01-01", tz="UTC")


def bars(closes: np.ndarray, volumes: np.ndarray | None = None, symbol: str = "BTCUSDT"):
    n = len(closes)
    return build_frame(
        provider="binance",
        symbol=symbol,
        interval="1h",
        ts=pd.date_range(START, periods=n, freq="h"),
        open=closes,
        high=closes * 1.001,
        low=closes * 0.999,
        close=closes,
        volume=np.full(n, 50.0) if volumes is None else volumes,
    )


def smooth(n: int = 500) -> np.ndarray:
    """A calm, wavy series around 100."""
    return 100.0 + np.sin(np.arange(n) / 10.0)


@pytest.mark.parametrize("method", METHODS)
def test_a_spike_is_found_with_high_severity(method: str) -> None:
    closes = smooth()
    closes[250] *= 1.2

    [close, volume] = OutlierDetector(method).detect(bars(closes))

    # A bad print shows twice: the return into the bar and the return out of it.
    assert close.count == 2
    assert close.severity == "high"
    assert set(close.timestamps) == {START + pd.Timedelta(hours=h) for h in (250, 251)}
    assert close.values[close.timestamps.index(START + pd.Timedelta(hours=250))] == pytest.approx(
        closes[250]
    )
    assert close.scored == 499  # the first bar has no return
    assert volume.count == 0 and volume.severity == "none"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "closes",
    [
        100.0 + 0.5 * np.arange(500),  # linear: returns shrink steadily
        100.0 * 1.002 ** np.arange(500),  # exponential: constant returns
        100.0 + 0.3 * np.arange(500) + np.sin(np.arange(500) / 7.0),  # trend with waves
    ],
    ids=["linear", "exponential", "wavy"],
)
def test_a_steady_trend_has_no_outliers(method: str, closes: np.ndarray) -> None:
    [result] = OutlierDetector(method).detect(bars(closes), fields=("close",))

    assert result.count == 0
    assert result.severity == "none"
    assert result.timestamps == []


def test_a_volume_burst_is_an_outlier() -> None:
    volumes = 50.0 * (1.0 + 0.2 * np.sin(np.arange(500) / 5.0))
    volumes[300] *= 50

    [volume] = OutlierDetector().detect(bars(smooth(), volumes), fields=("volume",))

    assert volume.count == 1
    assert volume.timestamps == [START + pd.Timedelta(hours=300)]
    assert volume.values == [pytest.approx(volumes[300])]
    assert 9.0 <= volume.scores[0] < 18.0  # 3 to 6 times the threshold
    assert volume.severity == "medium"


def test_two_symbols_do_not_share_baselines() -> None:
    """A calm symbol's 2 % jump stands out although the other symbol swings 5 % a bar."""
    rng = np.random.default_rng(11)
    calm = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.001, 400)))
    calm[200:] *= 1.02  # a level shift: one return of 2 %, twenty sigmas
    wild = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.05, 400)))
    both = pd.concat([bars(wild, symbol="WILD"), bars(calm, symbol="CALM")])
    interleaved = both.sort_values(["ts", "symbol"], kind="stable", ignore_index=True)
    detector = OutlierDetector("mad")

    [together] = detector.detect(interleaved, fields=("close",))
    [alone_calm] = detector.detect(bars(calm, symbol="CALM"), fields=("close",))
    [alone_wild] = detector.detect(bars(wild, symbol="WILD"), fields=("close",))

    jump = START + pd.Timedelta(hours=200)
    assert jump in alone_calm.timestamps
    assert together.count == alone_calm.count + alone_wild.count
    assert together.scored == alone_calm.scored + alone_wild.scored
    calm_found = {
        t for t, s in zip(together.timestamps, together.symbols, strict=True) if s == "CALM"
    }
    assert calm_found == set(alone_calm.timestamps)
    np.testing.assert_allclose(
        detector.score(interleaved, "close")[interleaved["symbol"].to_numpy() == "CALM"],
        detector.score(bars(calm, symbol="CALM"), "close"),
    )


def test_the_lists_are_capped_and_the_count_is_exact() -> None:
    closes = smooth(2000)
    closes[100:1900:20] *= 1.1  # 95 bad prints
    frame = bars(closes)
    detector = OutlierDetector()

    [close] = detector.detect(frame, fields=("close",))

    assert close.count == int((detector.score(frame, "close") > 3.0).sum()) > 150
    assert len(close.timestamps) == len(close.values) == len(close.scores) == MAX_LISTED
    assert close.scores == sorted(close.scores, reverse=True)
    assert close.max_score == close.scores[0]


def test_severity_rule() -> None:
    detector = OutlierDetector(threshold=3.0)

    assert detector.severity(None, 0, 0) == "none"
    assert detector.severity(3.5, 1, 1000) == "low"
    assert detector.severity(9.0, 1, 1000) == "medium"  # 3 x threshold
    assert detector.severity(18.0, 1, 1000) == "high"  # 6 x threshold
    assert detector.severity(3.5, 60, 1000) == "medium"  # more than 5 % of bars
    assert detector.severity(3.5, 101, 1000) == "high"  # more than 10 % of bars
    assert detector.severity(3.5, 4, 10) == "low"  # too few outliers for the fraction rules


def test_short_series_and_missing_values() -> None:
    closes = np.array([100.0, 100.5, np.nan, 101.0, 100.8, 100.9, 130.0, 100.7])

    [close] = OutlierDetector(window=48).detect(bars(closes), fields=("close",))

    # Returns touching the NaN are not scored; the short series is judged on its own stats.
    assert close.scored == 5
    assert START + pd.Timedelta(hours=6) in close.timestamps


def test_empty_frame_and_bad_arguments() -> None:
    [close] = OutlierDetector().detect(bars(np.array([])), fields=("close",))
    assert (close.count, close.scored, close.max_score, close.severity) == (0, 0, None, "none")

    with pytest.raises(ValueError, match="no 'nope' column"):
        OutlierDetector().detect(bars(smooth(10)), fields=("nope",))
    with pytest.raises(ValueError, match="unknown method"):
        OutlierDetector("sigma")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window"):
        OutlierDetector(window=2)


def test_metadata_is_flat_and_plain() -> None:
    closes = smooth()
    closes[250] *= 1.2

    [close] = OutlierDetector().detect(bars(closes), fields=("close",))
    metadata = close.as_metadata()

    assert metadata["outliers_close_count"] == 2
    assert metadata["outliers_close_severity"] == "high"
    assert isinstance(metadata["outliers_close_max_score"], float)
    assert metadata["outliers_close_examples"][0].startswith("BTCUSDT 2024-01-11T10:00:00+00:00")


def test_bars_before_since_are_history_only() -> None:
    """A partition's bars are scored against the bars stored before it, which are not counted."""
    closes = smooth(300)
    closes[100] *= 1.2  # an old spike, already reported when its own partition ran
    closes[290] *= 1.2
    since = START + pd.Timedelta(hours=280)

    [close] = OutlierDetector().detect(bars(closes), fields=["close"], since=since)

    assert close.count == 2
    assert min(close.timestamps) >= since
    assert close.scored == 20


def test_each_day_gets_the_verdict_of_its_own_bars() -> None:
    """A spike on day 5 of a ten-day block fails day 5 alone; each day's verdict is the one it
    would get in a run of its own."""
    closes = smooth(24 * 10)
    closes[24 * 4 + 10] *= 1.2  # 10:00 on the fifth day
    frame = bars(closes)
    detector = OutlierDetector()
    since = START + pd.Timedelta(days=2)  # the first two days are baseline only

    by_day = detector.detect_by_day(frame, since=since)

    assert list(by_day) == [START + pd.Timedelta(days=d) for d in range(2, 10)]
    severities = {day.day: results[0].severity for day, results in by_day.items()}
    assert severities[5] == "high"
    assert {d for d, s in severities.items() if s != "none"} == {5}
    [close, volume] = by_day[START + pd.Timedelta(days=4)]
    assert (close.field, volume.field) == ("close", "volume")
    assert close.count == 2 and close.scored == 24
    assert close.timestamps[0].day == 5
    # Scored once as a block, each day matches the detector run on that day alone.
    for day, results in by_day.items():
        alone = detector.detect(frame.loc[frame["ts"] < day + pd.Timedelta(days=1)], since=day)
        assert [(r.count, r.max_score, r.severity) for r in results] == [
            (r.count, r.max_score, r.severity) for r in alone
        ]


def test_days_by_day_of_an_empty_frame_is_empty() -> None:
    assert OutlierDetector().detect_by_day(bars(np.array([]))) == {}
