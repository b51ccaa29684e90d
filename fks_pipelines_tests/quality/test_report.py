"""The daily quality report on crafted quality rows: table, sparklines, summary and figures."""

from __future__ import annotations

import re
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from fks_pipelines.quality.report import (
    BARS,
    NO_FIGURE,
    NO_ROW,
    NO_SCORE,
    daily_report,
    history_window,
)
from fks_pipelines.warehouse.quality import conform_quality, empty_quality

DAY = date(2024, 1, 14)
PRIORITY = ("binance", "polygon", "eodhd", "coinmarketcap", "coingecko", "alpha_vantage")


def rows(*records: dict[str, object]) -> pd.DataFrame:
    """Quality rows as ``read_quality`` returns them; unnamed figures are clean."""
    defaults = {
        "provider": "binance",
        "interval": "1h",
        "symbol": "BTCUSDT",
        "day": DAY,
        "quality_score": 100.0,
        "expected_bars": 24,
        "missing_bars": 0,
        "outlier_count": 0,
        "outlier_severity": "none",
        "failed_checks": "",
    }
    frame = pd.DataFrame([{**defaults, **record} for record in records])
    return conform_quality(frame).sort_values(["provider", "interval", "symbol", "day"])


def ago(days: int) -> date:
    return DAY - timedelta(days=days)


def table(markdown: str) -> list[list[str]]:
    """Cells of the report's table rows (header and rule left out), split on unescaped pipes."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines[1:]]


def by_symbol(markdown: str) -> dict[str, list[str]]:
    return {cells[1]: cells for cells in table(markdown)}


def test_a_clean_day_gives_one_full_row_and_its_figures() -> None:
    report = daily_report(rows({"agreement_max_bps": 3.25, "bars_compared": 24}), DAY)

    assert report.day == DAY
    assert report.markdown.splitlines()[0] == "# Data quality report: 2024-01-14 (UTC)"
    assert table(report.markdown) == [
        [
            "binance 1h",
            "BTCUSDT",
            "100.0",
            "0 / 24",
            "0",
            "3.2 bps (24 bars)",
            "none",
            NO_ROW * 13 + BARS[-1],
        ]
    ]
    assert report.metadata == {
        "partitions": 1,
        "missing_bars": 0,
        "outliers_high": 0,
        "failed_checks": 0,
        "mean_quality_score": 100.0,
        "min_quality_score": 100.0,
        "score_binance_1h": 100.0,
    }
    assert all(type(v) in (int, float) for v in report.metadata.values())


def test_summary_line_counts_partitions_scores_and_failed_checks() -> None:
    report = daily_report(
        rows(
            {"quality_score": 60.0, "missing_bars": 3, "failed_checks": "completeness:WARN"},
            {
                "symbol": "ETHUSDT",
                "quality_score": 90.0,
                "outlier_count": 2,
                "outlier_severity": "high",
                "failed_checks": "outliers:ERROR, schema:ERROR",
            },
            {"symbol": "SOLUSDT", "day": ago(1), "failed_checks": "outliers:ERROR"},
        ),
        DAY,
    )

    summary = report.markdown.splitlines()[2]
    assert summary == (
        "**2** partitions · mean quality score **75.0** (lowest 60.0) · **3** missing bars · "
        "**1** with high-severity outliers · **3** failed checks"
    )
    cells = by_symbol(report.markdown)
    assert cells["ETHUSDT"][4] == "**2 (high)**"
    assert cells["ETHUSDT"][6] == "outliers:ERROR, schema:ERROR"
    assert cells["BTCUSDT"][6] == "completeness:WARN"
    assert report.metadata["failed_checks"] == 3  # yesterday's failure is not today's
    assert report.metadata["outliers_high"] == 1
    assert report.metadata["missing_bars"] == 3


def test_sparkline_maps_0_to_100_onto_eight_bars_in_steps_of_12_5() -> None:
    scores = [0.0, 12.4, 12.5, 25.0, 37.5, 50.0, 62.5, 74.9, 75.0, 87.5, 99.9, 100.0]
    report = daily_report(
        rows(
            *({"day": ago(len(scores) - 1 - i), "quality_score": s} for i, s in enumerate(scores))
        ),
        DAY,
        history_days=len(scores),
    )

    [cells] = table(report.markdown)
    assert cells[-1] == "▁▁▂▃▄▅▆▆▇███"
    assert len(BARS) == 8


def test_days_without_rows_and_rows_without_a_score_show_as_gaps() -> None:
    report = daily_report(
        rows(
            {"day": ago(3), "quality_score": 100.0},
            {"day": ago(2), "quality_score": np.nan},
            {"day": ago(0), "quality_score": 50.0},
        ),
        DAY,
        history_days=5,
    )

    [cells] = table(report.markdown)
    assert cells[-1] == f"{NO_ROW}{BARS[-1]}{NO_SCORE}{NO_ROW}{BARS[4]}"
    assert cells[0] == "binance 1h"
    assert "last 5 days" in report.markdown
    assert "from 2024-01-10 to 2024-01-14" in report.markdown


def test_a_series_without_a_row_that_day_keeps_its_row_with_no_figures() -> None:
    report = daily_report(
        rows(
            {"provider": "polygon", "symbol": "SPY", "day": ago(1), "quality_score": 80.0},
            {"symbol": "BTCUSDT"},
        ),
        DAY,
    )

    spy = by_symbol(report.markdown)["SPY"]
    assert spy[:2] == ["polygon 1h", "SPY"]
    assert spy[2:7] == [NO_FIGURE] * 5
    assert spy[7] == NO_ROW * 12 + BARS[6] + NO_ROW
    assert report.metadata["partitions"] == 1
    assert "score_polygon_1h" not in report.metadata


def test_null_scores_are_left_out_of_means_and_a_day_without_scores_has_none() -> None:
    mixed = daily_report(
        rows(
            {"quality_score": np.nan},
            {"symbol": "ETHUSDT", "quality_score": 80.0},
            {"provider": "polygon", "symbol": "SPY", "quality_score": np.nan},
        ),
        DAY,
    )

    assert mixed.metadata["mean_quality_score"] == 80.0
    assert mixed.metadata["min_quality_score"] == 80.0
    assert mixed.metadata["score_binance_1h"] == 80.0
    assert "score_polygon_1h" not in mixed.metadata
    assert by_symbol(mixed.markdown)["SPY"][2] == NO_FIGURE
    assert by_symbol(mixed.markdown)["SPY"][-1].endswith(NO_SCORE)

    unscored = daily_report(rows({"quality_score": np.nan}), DAY)
    assert set(unscored.metadata) == {
        "partitions",
        "missing_bars",
        "outliers_high",
        "failed_checks",
    }
    assert "mean quality score" not in unscored.markdown


def test_rows_follow_provider_priority_then_interval_then_symbol() -> None:
    report = daily_report(
        rows(
            {"provider": "consolidated", "symbol": "BTC-USD"},
            {"provider": "zeta_feed", "symbol": "BTC"},
            {"provider": "coingecko", "interval": "1d", "symbol": "bitcoin"},
            {"provider": "polygon", "interval": "1d", "symbol": "SPY"},
            {"provider": "polygon", "interval": "1h", "symbol": "SPY"},
            {"provider": "polygon", "interval": "1h", "symbol": "AAPL"},
            {"interval": "1d", "symbol": "ETHUSDT"},
            {"interval": "15m", "symbol": "SOLUSDT"},
            {},
            {"provider": "alpha_feed", "symbol": "BTC"},
        ),
        DAY,
        priority=PRIORITY,
    )

    assert [(cells[0], cells[1]) for cells in table(report.markdown)] == [
        ("binance 15m", "SOLUSDT"),
        ("binance 1h", "BTCUSDT"),
        ("binance 1d", "ETHUSDT"),
        ("polygon 1h", "AAPL"),
        ("polygon 1h", "SPY"),
        ("polygon 1d", "SPY"),
        ("coingecko 1d", "bitcoin"),
        (r"alpha\_feed 1h", "BTC"),  # not in the priority: alphabetically after it
        (r"zeta\_feed 1h", "BTC"),
        ("consolidated 1h", "BTC-USD"),
    ]
    assert [k for k in report.metadata if k.startswith("score_")] == [
        "score_binance_15m",
        "score_binance_1h",
        "score_binance_1d",
        "score_polygon_1h",
        "score_polygon_1d",
        "score_coingecko_1d",
        "score_alpha_feed_1h",
        "score_zeta_feed_1h",
        "score_consolidated_1h",
        "score_consolidated_1h_BTC-USD",  # and one per instrument, for a plot per day each
    ]


def test_per_provider_interval_scores_are_means_over_symbols() -> None:
    report = daily_report(
        rows(
            {"quality_score": 90.0},
            {"symbol": "ETHUSDT", "quality_score": 70.0},
            {"interval": "1d", "quality_score": 40.0},
            {"provider": "polygon", "symbol": "X:BTCUSD", "quality_score": 10.0},
        ),
        DAY,
    )

    assert report.metadata["score_binance_1h"] == 80.0
    assert report.metadata["score_binance_1d"] == 40.0
    assert report.metadata["score_polygon_1h"] == 10.0
    assert report.metadata["mean_quality_score"] == 52.5
    assert report.metadata["min_quality_score"] == 10.0
    assert by_symbol(report.markdown)["X:BTCUSD"][0] == "polygon 1h"


def test_pipes_and_markdown_in_symbols_stay_inside_their_cell() -> None:
    report = daily_report(
        rows({"symbol": "EVIL|SYM*1_`x`"}, {"symbol": "back\\slash", "day": ago(1)}),
        DAY,
    )

    assert r"| EVIL\|SYM\*1\_\`x\` |" in report.markdown
    assert r"| back\\slash |" in report.markdown
    cells = table(report.markdown)
    assert all(len(row) == 8 for row in cells)
    assert {row[1] for row in cells} == {r"EVIL\|SYM\*1\_\`x\`", r"back\\slash"}


def test_outliers_agreement_and_missing_bars_cells() -> None:
    report = daily_report(
        rows(
            {"symbol": "A", "outlier_count": 3, "outlier_severity": "medium"},
            {"symbol": "B", "outlier_count": 0, "outlier_severity": None, "expected_bars": None},
            {"symbol": "C", "bars_compared": 0, "missing_bars": 24},
            {"symbol": "D", "agreement_max_bps": 612.345, "bars_compared": None},
        ),
        DAY,
    )

    cells = by_symbol(report.markdown)
    assert [cells[s][3:6] for s in "ABCD"] == [
        ["0 / 24", "3 (medium)", NO_FIGURE],
        ["0", "0", NO_FIGURE],
        ["24 / 24", "0", "nothing compared"],
        ["0 / 24", "0", "612.3 bps"],
    ]


def test_rows_outside_the_window_are_ignored_and_the_order_of_rows_does_not_matter() -> None:
    inside = rows(
        {"quality_score": 90.0},
        {"day": ago(6), "quality_score": 30.0},
        {"symbol": "ETHUSDT", "day": ago(2), "quality_score": 70.0, "missing_bars": 1},
    )
    outside = rows(
        {"day": ago(7), "quality_score": 0.0, "failed_checks": "schema:ERROR"},
        {"day": DAY + timedelta(days=1), "missing_bars": 99},
        {"symbol": "OLD", "day": ago(30)},
    )

    report = daily_report(pd.concat([outside, inside]).iloc[::-1], DAY, history_days=7)

    assert report == daily_report(inside, DAY, history_days=7)
    assert [cells[1] for cells in table(report.markdown)] == ["BTCUSDT", "ETHUSDT"]
    assert by_symbol(report.markdown)["BTCUSDT"][-1] == f"{BARS[2]}{NO_ROW * 5}{BARS[7]}"


def test_a_window_without_rows_says_so() -> None:
    report = daily_report(empty_quality(), DAY)

    assert report.metadata == {
        "partitions": 0,
        "missing_bars": 0,
        "outliers_high": 0,
        "failed_checks": 0,
    }
    assert "No quality rows stored from 2024-01-01 to 2024-01-14." in report.markdown
    assert not table(report.markdown)


def test_history_days_must_cover_the_day() -> None:
    with pytest.raises(ValueError, match="history_days must be at least 1"):
        daily_report(empty_quality(), DAY, history_days=0)
    one = daily_report(rows({}), DAY, history_days=1)
    assert table(one.markdown)[0][-1] == BARS[-1]


def test_history_window_covers_the_first_reports_history() -> None:
    assert history_window(date(2024, 1, 5), date(2024, 1, 7), 14) == (
        date(2023, 12, 23),
        date(2024, 1, 8),
    )
    assert history_window(DAY, DAY, 1) == (DAY, DAY + timedelta(days=1))
