"""Which partitions a stored event affects: closed bars -> their UTC days, the rest marked."""

from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from fks_pipelines.warehouse.webhook_events import StoredEvent
from fks_pipelines.webhooks.mapping import AssetScope, decide

BINANCE_1H = AssetScope("binance", "1h", frozenset({"BTCUSDT", "ETHUSDT"}), date(2024, 1, 1))
BINANCE_1D = AssetScope("binance", "1d", frozenset({"BTCUSDT", "ETHUSDT"}), date(2024, 1, 1))
ASSETS = {("binance", "1h"): BINANCE_1H, ("binance", "1d"): BINANCE_1D}
NOW = datetime(2024, 7, 10, 12, 0, tzinfo=UTC)


def event(start: str, end: str, **fields: object) -> StoredEvent:
    base = StoredEvent(
        seq=1,
        id="e1",
        received_at=NOW,
        source="binance",
        provider="binance",
        symbol="BTCUSDT",
        interval="1h",
        start=datetime.fromisoformat(start).replace(tzinfo=UTC),
        end=datetime.fromisoformat(end).replace(tzinfo=UTC),
        closed=True,
        status="pending",
        reason=None,
        published=False,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def test_a_closed_bar_refreshes_its_days_partition() -> None:
    decision = decide(event("2024-07-05T13:00", "2024-07-05T14:00"), ASSETS, NOW)

    assert (decision.status, decision.asset, decision.days) == (
        "requested",
        BINANCE_1H,
        (date(2024, 7, 5),),
    )
    assert decision.reason == "refresh ohlcv/binance/1h 2024-07-05|BTCUSDT"


def test_the_last_bar_of_a_day_is_that_days_not_the_next() -> None:
    decision = decide(event("2024-07-09T23:00", "2024-07-10T00:00"), ASSETS, NOW)

    assert decision.days == (date(2024, 7, 9),)


def test_a_window_over_several_days_refreshes_each_finished_one() -> None:
    window = event("2023-12-30T06:00", "2024-01-03T00:00", interval="1d")

    decision = decide(window, ASSETS, NOW)

    assert decision.asset == BINANCE_1D
    assert decision.days == (date(2024, 1, 1), date(2024, 1, 2))
    assert decision.reason.endswith("; left out: days before 2024-01-01")


def test_a_window_reaching_into_today_refreshes_the_closed_days_only() -> None:
    decision = decide(event("2024-07-08T00:00", "2024-07-11T00:00"), ASSETS, NOW)

    assert decision.days == (date(2024, 7, 8), date(2024, 7, 9))
    assert "days from 2024-07-10 (not closed)" in decision.reason


def test_a_long_window_names_a_few_partitions() -> None:
    decision = decide(event("2024-01-01T00:00", "9999-01-01T00:00"), ASSETS, NOW)

    assert len(decision.days) == 191  # 1 January to 9 July 2024
    assert "and 186 more" in decision.reason


@pytest.mark.parametrize(
    ("changes", "status", "reason"),
    [
        ({"closed": False}, "ignored", "open bar"),
        ({"start": datetime(2024, 7, 10, 9, tzinfo=UTC)}, "ignored", "2024-07-10 has not closed"),
        ({"provider": "kraken"}, "unmapped", "no OHLCV asset of provider 'kraken'"),
        ({"interval": "1m"}, "unmapped", "ohlcv/binance keeps no 1m bars (intervals: 1d, 1h)"),
        ({"symbol": "DOGEUSDT"}, "unmapped", "'DOGEUSDT' is not a symbol of ohlcv/binance/1h"),
    ],
)
def test_what_cannot_be_refreshed_is_marked_with_the_reason(
    changes: dict[str, object], status: str, reason: str
) -> None:
    base = event("2024-07-05T13:00", "2024-07-05T14:00")
    if "start" in changes:
        base = replace(base, end=datetime(2024, 7, 10, 10, tzinfo=UTC))

    decision = decide(replace(base, **changes), ASSETS, NOW)  # type: ignore[arg-type]

    assert (decision.status, decision.days) == (status, ())
    assert reason in decision.reason


def test_a_window_before_the_first_partition_is_unmapped() -> None:
    decision = decide(event("2023-06-01T00:00", "2023-06-02T00:00"), ASSETS, NOW)

    assert decision.status == "unmapped"
    assert decision.reason == "before the first partition of ohlcv/binance/1h (2024-01-01)"
