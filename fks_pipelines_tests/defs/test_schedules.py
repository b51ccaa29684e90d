"""Daily schedules and the catch-up sensor: their run requests on calendars with gaps."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from fks_pipelines.defs.partitions import RANGE_END_TAG, RANGE_START_TAG
from fks_pipelines.defs.resources import BinanceResource
from fks_pipelines.defs.schedules import (
    DailyTarget,
    build_catchup_sensor,
    build_daily_schedule,
)
from fks_pipelines.market.universe import Universe, load_universe
from fks_pipelines_tests.defs.support import repository, target, warehouse_resources, wide_universe
from fks_pipelines_tests.fakes.binance import FakeBinance


@pytest.fixture(scope="module")
def universe() -> Universe:
    return load_universe()


def ranges(requests: list[dg.RunRequest]) -> list[tuple[str, str]]:
    """Each request as its (first, last) partition."""
    out = []
    for r in requests:
        if r.partition_key:
            out.append((r.partition_key, r.partition_key))
        else:
            out.append((r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]))
    return out


def tick(
    t: DailyTarget, when: str, missing_key: str | None = None
) -> list[dg.RunRequest] | dg.SkipReason:
    schedule = build_daily_schedule(t, missing_key)
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime.fromisoformat(when).replace(tzinfo=UTC),
        repository_def=repository(),
    )
    result = schedule.evaluate_tick(context)
    return result.skip_message or list(result.run_requests or [])


def test_a_crypto_provider_runs_every_day_as_one_range(universe: Universe) -> None:
    binance = target("binance", "1h")
    for when in ("2024-07-05T00:15", "2024-07-07T00:15"):  # after a holiday, after a Saturday
        requests = tick(binance, when)
        previous = (datetime.fromisoformat(when).date() - timedelta(days=1)).isoformat()
        assert ranges(requests) == [(f"{previous}|BTCUSDT", f"{previous}|SOLUSDT")]
        assert requests[0].job_name == "ohlcv_binance_1h_job"
        assert requests[0].run_key == f"{previous}:{previous}|BTCUSDT:{previous}|SOLUSDT"


def test_a_provider_without_its_key_skips_naming_the_variable(universe: Universe) -> None:
    polygon = target("polygon", "1d")

    assert tick(polygon, "2024-07-06T00:15", missing_key="POLYGON_API_KEY") == (
        "ohlcv/polygon/1d skipped: polygon is not configured (POLYGON_API_KEY is not set)"
    )


def test_schedules_describe_themselves_in_words(universe: Universe) -> None:
    schedule = build_daily_schedule(target("binance", "1h"))

    assert schedule.description == (
        "Daily at 00:15 UTC: the UTC day just closed of ohlcv/binance/1h, for the symbols "
        "whose market had bars that day."
    )


def test_equities_skip_weekends_and_market_holidays(universe: Universe) -> None:
    polygon = target("polygon", "1d")  # AAPL, SPY (XNYS) and X:BTCUSD

    session = tick(polygon, "2024-07-06T00:15")  # Friday 5 July: a session
    holiday = tick(polygon, "2024-07-05T00:15")  # Thursday 4 July: Independence Day
    saturday = tick(polygon, "2024-07-07T00:15")

    assert ranges(session) == [("2024-07-05|AAPL", "2024-07-05|X:BTCUSD")]
    assert ranges(holiday) == [("2024-07-04|X:BTCUSD", "2024-07-04|X:BTCUSD")]
    assert ranges(saturday) == [("2024-07-06|X:BTCUSD", "2024-07-06|X:BTCUSD")]


def test_a_day_with_no_trading_symbol_is_skipped_with_a_reason(universe: Universe) -> None:
    alpha_vantage = target("alpha_vantage", "1d")  # equities only

    assert tick(alpha_vantage, "2024-12-26T00:15") == (
        "no symbol of ohlcv/alpha_vantage/1d traded on 2024-12-25"
    )


def test_intraday_equities_include_the_utc_day_their_post_market_spills_into(
    universe: Universe,
) -> None:
    polygon = target("polygon", "1h")

    # Winter: Friday's post-market runs to 01:00 UTC Saturday; in summer it ends at 00:00 UTC.
    winter = tick(polygon, "2024-01-07T00:15")
    summer = tick(polygon, "2024-07-07T00:15")

    assert ranges(winter) == [("2024-01-06|AAPL", "2024-01-06|X:BTCUSD")]
    assert ranges(summer) == [("2024-07-06|X:BTCUSD", "2024-07-06|X:BTCUSD")]


@pytest.fixture
def server() -> Iterator[FakeBinance]:
    with FakeBinance() as fake:
        yield fake


def catchup(
    targets: list[DailyTarget],
    instance: dg.DagsterInstance,
    now: str,
    cursor: str | None = None,
    lookback_days: int = 7,
    missing_keys: dict[str, str] | None = None,
) -> dg.SensorResult:
    sensor = build_catchup_sensor(
        targets,
        lookback_days=lookback_days,
        max_attempts=2,
        interval_s=60,
        missing_keys=missing_keys,
        clock=lambda: datetime.fromisoformat(now).replace(tzinfo=UTC),
    )
    context = dg.build_sensor_context(instance=instance, cursor=cursor, repository_def=repository())
    return sensor(context)


def reported(instance: dg.DagsterInstance, t: DailyTarget, *keys: str) -> None:
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(t.key, partition=key))


def test_catchup_launches_missing_partitions_of_trading_days_only(
    universe: Universe, instance: dg.DagsterInstance
) -> None:
    polygon = target("polygon", "1d")
    # Lookback from Tuesday 9 July: 2 to 8 July, with Independence Day and a weekend in it.
    reported(
        instance,
        polygon,
        *(f"2024-07-0{d}|X:BTCUSD" for d in range(2, 9)),
        "2024-07-02|AAPL",
        "2024-07-03|AAPL",
        "2024-07-05|AAPL",
        "2024-07-02|SPY",
        "2024-07-03|SPY",
        "2024-07-05|SPY",
    )

    result = catchup([polygon], instance, "2024-07-09T03:00")

    # Missing: AAPL and SPY on Monday 8 July. Not the holiday, not the weekend, not crypto.
    assert ranges(result.run_requests) == [("2024-07-08|AAPL", "2024-07-08|SPY")]
    assert result.run_requests[0].tags["fks/trigger"] == "catchup"
    assert result.run_requests[0].job_name == "ohlcv_polygon_1d_job"


def test_catchup_relaunches_a_failed_partition_until_its_attempts_are_spent(
    universe: Universe, instance: dg.DagsterInstance, server: FakeBinance, tmp_path: Path
) -> None:
    binance = target("binance", "1d")
    days = ["2024-03-04", "2024-03-05", "2024-03-06"]
    reported(instance, binance, *(f"{d}|{s}" for d in days for s in ("ETHUSDT", "SOLUSDT")))
    reported(instance, binance, "2024-03-04|BTCUSDT", "2024-03-06|BTCUSDT")
    server.failing_symbols.add("BTCUSDT")
    failed = dg.materialize(
        [binance.asset],
        partition_key="2024-03-05|BTCUSDT",
        instance=instance,
        resources={
            "binance": BinanceResource(base_url=server.url, cache_dir=str(tmp_path / "cache")),
            **warehouse_resources(f"sqlite:///{tmp_path / 'w.sqlite'}"),
        },
        raise_on_error=False,
    )
    assert not failed.success

    first = catchup([binance], instance, "2024-03-07T01:00", lookback_days=3)
    second = catchup([binance], instance, "2024-03-07T02:00", first.cursor, lookback_days=3)
    third = catchup([binance], instance, "2024-03-07T03:00", second.cursor, lookback_days=3)

    assert ranges(first.run_requests) == [("2024-03-05|BTCUSDT", "2024-03-05|BTCUSDT")]
    assert ranges(second.run_requests) == [("2024-03-05|BTCUSDT", "2024-03-05|BTCUSDT")]
    assert third.run_requests == []
    assert "nothing missing or failed" in (third.skip_reason.skip_message or "")
    assert json.loads(third.cursor) == {"ohlcv_binance_1d|2024-03-05|BTCUSDT": 2}


def test_catchup_groups_a_long_gap_into_ranges_like_a_backfill(
    universe: Universe, instance: dg.DagsterInstance
) -> None:
    binance = target("binance", "1h", per_run=10)

    result = catchup([binance], instance, "2024-02-01T00:30", lookback_days=25)

    # Nothing stored: 25 days x 3 symbols, one symbol per range, at most 10 days per run.
    assert ranges(result.run_requests)[:3] == [
        ("2024-01-07|BTCUSDT", "2024-01-16|BTCUSDT"),
        ("2024-01-17|BTCUSDT", "2024-01-26|BTCUSDT"),
        ("2024-01-27|BTCUSDT", "2024-01-31|BTCUSDT"),
    ]
    assert len(result.run_requests) == 9


def test_catchup_skips_a_provider_without_its_key_and_launches_the_rest(
    universe: Universe, instance: dg.DagsterInstance
) -> None:
    binance, polygon = target("binance", "1d"), target("polygon", "1d")

    result = catchup(
        [binance, polygon],
        instance,
        "2024-07-09T03:00",
        missing_keys={"polygon": "POLYGON_API_KEY"},
    )
    quiet = catchup(
        [polygon], instance, "2024-07-09T03:00", missing_keys={"polygon": "POLYGON_API_KEY"}
    )

    assert {r.job_name for r in result.run_requests} == {"ohlcv_binance_1d_job"}
    assert all("polygon" not in key for key in json.loads(result.cursor))
    assert quiet.skip_reason.skip_message == (
        "nothing missing or failed in the last 7 days; ohlcv/polygon/1d skipped: polygon is "
        "not configured (POLYGON_API_KEY is not set)"
    )


@pytest.mark.parametrize(("symbols", "runs"), [(3, 3), (300, 21)])
def test_a_catchup_tick_grows_with_days_not_symbols(
    instance: dg.DagsterInstance, symbols: int, runs: int
) -> None:
    """Seven missing days: 3 symbols run as one range of days each; 300 symbols as ranges of
    100 symbols for each day, not 300 runs."""
    binance = target("binance", "1d", universe=wide_universe(symbols))

    result = catchup([binance], instance, "2024-07-09T03:00")

    assert len(result.run_requests) == runs
    if symbols == 300:
        assert {r.tags["fks/date"] for r in result.run_requests} == {
            f"2024-07-0{d}" for d in range(2, 9)
        }
        assert ranges(result.run_requests)[:3] == [
            ("2024-07-02|S000USDT", "2024-07-02|S099USDT"),
            ("2024-07-02|S100USDT", "2024-07-02|S199USDT"),
            ("2024-07-02|S200USDT", "2024-07-02|S299USDT"),
        ]
    else:
        assert [r.tags["fks/symbol"] for r in result.run_requests] == list(binance.instruments)


def test_catchup_relaunches_by_symbol_so_one_failing_symbol_holds_back_no_other(
    instance: dg.DagsterInstance,
) -> None:
    """Two missing days of three symbols are first asked for as one run per day; launched again
    (still missing), each symbol gets its own run, so a symbol that fails every run does not keep
    the others out."""
    binance = target("binance", "1d")

    first = catchup([binance], instance, "2024-07-09T03:00", lookback_days=2)
    again = catchup([binance], instance, "2024-07-09T04:00", first.cursor, lookback_days=2)

    assert ranges(first.run_requests) == [
        ("2024-07-07|BTCUSDT", "2024-07-07|SOLUSDT"),
        ("2024-07-08|BTCUSDT", "2024-07-08|SOLUSDT"),
    ]
    assert ranges(again.run_requests) == [
        (f"2024-07-07|{s}", f"2024-07-08|{s}") for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    ]
