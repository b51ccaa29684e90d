"""The instrument universe file and the settings that locate it."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from fks_pipelines.market.universe import (
    DEFAULT_AGREEMENT,
    DEFAULT_UNIVERSE_FILE,
    Instrument,
    Tolerance,
    UniverseError,
    load_universe,
)
from fks_pipelines.settings import Settings

VALID = """\
instruments:
  BTC-USD: {asset_class: crypto}
  SPY: {asset_class: equity, calendar: XNYS}
providers:
  binance:
    start_date: 2024-06-01
    intervals: [1m, 1d]
    symbols:
      BTCUSDT: BTC-USD
"""

INVALID = {
    "bad_yaml": ("instruments: {BTC-USD: [unclosed\n", "not valid YAML"),
    "not_a_mapping": ("- just\n- a list\n", "is invalid"),
    "unknown_provider": (
        VALID.replace("  binance:", "  bitfinex:"),
        "unknown provider 'bitfinex'",
    ),
    "undeclared_instrument": (
        VALID.replace("BTCUSDT: BTC-USD", "BTCUSDT: BTC-USD\n      DOGEUSDT: DOGE-USD"),
        "undeclared instruments ['DOGE-USD']",
    ),
    "bad_interval": (VALID.replace("[1m, 1d]", "[1m, 1M]"), "unsupported interval '1M'"),
    "interval_not_tiling_a_day": (VALID.replace("[1m, 1d]", "[7m]"), "tile a UTC day"),
    "duplicate_interval": (VALID.replace("[1m, 1d]", "[1h, 1h]"), "duplicate intervals"),
    "no_intervals": (VALID.replace("[1m, 1d]", "[]"), "intervals"),
    "no_symbols": (
        VALID.replace("    symbols:\n      BTCUSDT: BTC-USD\n", "    symbols: {}\n"),
        "symbols",
    ),
    "equity_without_calendar": (
        VALID.replace("{asset_class: equity, calendar: XNYS}", "{asset_class: equity}"),
        "equity instruments need a calendar",
    ),
    "unknown_asset_class": (VALID.replace("asset_class: crypto", "asset_class: fx"), "fx"),
    "unknown_key": (VALID.replace("  binance:\n", "  binance:\n    api_key: x\n"), "api_key"),
    "bad_start_date": (VALID.replace("2024-06-01", "soon"), "start_date"),
}


def write(tmp_path: Path, text: str) -> Path:
    """A universe file holding ``text``."""
    path = tmp_path / "universe.yaml"
    path.write_text(text)
    return path


def test_default_universe_maps_binance_tickers() -> None:
    universe = load_universe()
    binance = universe.provider("binance")
    assert binance.symbols == {
        "BTCUSDT": "BTC-USD",
        "ETHUSDT": "ETH-USD",
        "SOLUSDT": "SOL-USD",
    }
    assert universe.canonical("binance", "ETHUSDT") == "ETH-USD"
    assert binance.intervals
    assert isinstance(binance.start_date, date)


def test_default_universe_declares_equities_with_a_calendar() -> None:
    instruments = load_universe().instruments
    for name in ("SPY", "AAPL"):
        assert instruments[name].asset_class == "equity"
        assert instruments[name].calendar
    for name in ("BTC-USD", "ETH-USD", "SOL-USD"):
        assert instruments[name] == Instrument(asset_class="crypto")


def test_default_path_is_the_packaged_file() -> None:
    assert load_universe(DEFAULT_UNIVERSE_FILE) == load_universe()


def test_loads_a_valid_file(tmp_path: Path) -> None:
    universe = load_universe(write(tmp_path, VALID))
    spec = universe.provider("binance")
    assert spec.start_date == date(2024, 6, 1)
    assert spec.intervals == ("1m", "1d")
    assert universe.instruments["SPY"].calendar == "XNYS"


def test_unknown_provider_or_symbol_lookup_raises() -> None:
    universe = load_universe()
    with pytest.raises(UniverseError, match="tiingo"):
        universe.provider("tiingo")
    with pytest.raises(UniverseError, match="DOGEUSDT"):
        universe.canonical("binance", "DOGEUSDT")


@pytest.mark.parametrize(("text", "fragment"), INVALID.values(), ids=INVALID.keys())
def test_invalid_file_names_its_path(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UniverseError) as excinfo:
        load_universe(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert fragment in message.replace(str(path), "")


def test_missing_file_names_its_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "universe.yaml"
    with pytest.raises(UniverseError) as excinfo:
        load_universe(path)
    assert str(path) in str(excinfo.value)
    assert "cannot read" in str(excinfo.value)


def test_universe_error_is_a_value_error() -> None:
    assert issubclass(UniverseError, ValueError)


def test_settings_honour_universe_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, VALID)
    monkeypatch.setenv("FKS_UNIVERSE_FILE", str(path))
    settings = Settings()
    assert settings.universe_file == path
    assert settings.universe.provider("binance").intervals == ("1m", "1d")


def test_settings_report_a_bad_universe_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, INVALID["unknown_provider"][0])
    monkeypatch.setenv("FKS_UNIVERSE_FILE", str(path))
    with pytest.raises(UniverseError, match=str(path)):
        _ = Settings().universe


def test_settings_default_to_packaged_universe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FKS_UNIVERSE_FILE", raising=False)
    assert Settings().universe_file == DEFAULT_UNIVERSE_FILE


def test_default_warehouse_is_sqlite_in_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FKS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("FKS_WAREHOUSE_URL", raising=False)
    settings = Settings()
    assert settings.data_dir == tmp_path
    assert settings.resolved_warehouse_url == f"sqlite:///{tmp_path / 'warehouse.sqlite'}"


def test_warehouse_url_overrides_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FKS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FKS_WAREHOUSE_URL", "postgresql://warehouse@db/fks")
    assert Settings().resolved_warehouse_url == "postgresql://warehouse@db/fks"


def test_a_priority_naming_an_unknown_provider_is_refused(tmp_path: Path) -> None:
    text = (
        "instruments: {BTC-USD: {asset_class: crypto}}\n"
        "priority: [binance, kraken]\n"
        "providers:\n"
        "  binance: {start_date: 2024-01-01, intervals: [1h], symbols: {BTCUSDT: BTC-USD}}\n"
    )
    with pytest.raises(UniverseError, match="kraken"):
        load_universe(write(tmp_path, text))


def test_default_tolerances_per_asset_class() -> None:
    universe = load_universe()
    assert universe.tolerance("BTC-USD") == Tolerance(warn_bps=50, error_bps=500)
    assert universe.tolerance("SOL-USD") == Tolerance(warn_bps=50, error_bps=500)
    assert universe.tolerance("SPY") == Tolerance(warn_bps=25, error_bps=200)
    assert universe.tolerance("AAPL") == Tolerance(warn_bps=25, error_bps=200)


def test_a_file_without_agreement_gets_the_defaults(tmp_path: Path) -> None:
    universe = load_universe(write(tmp_path, VALID))
    assert universe.agreement == DEFAULT_AGREEMENT
    assert universe.tolerance("SPY").error_bps == 200


def test_an_agreement_section_overrides_only_the_classes_it_names(tmp_path: Path) -> None:
    universe = load_universe(
        write(tmp_path, VALID + "agreement:\n  crypto: {warn_bps: 10, error_bps: 100.5}\n")
    )
    assert universe.tolerance("BTC-USD") == Tolerance(warn_bps=10, error_bps=100.5)
    assert universe.tolerance("SPY") == DEFAULT_AGREEMENT["equity"]


def test_tolerance_of_an_undeclared_instrument_raises() -> None:
    with pytest.raises(UniverseError, match="DOGE-USD"):
        load_universe().tolerance("DOGE-USD")


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        pytest.param("crypto: {warn_bps: 50, error_bps: 50}", "must be above warn_bps", id="equal"),
        pytest.param("crypto: {warn_bps: 60, error_bps: 50}", "must be above warn_bps", id="below"),
        pytest.param("crypto: {warn_bps: 0, error_bps: 50}", "warn_bps", id="zero-warn"),
        pytest.param("equity: {warn_bps: -5, error_bps: 50}", "warn_bps", id="negative-warn"),
        pytest.param("crypto: {warn_bps: 5}", "error_bps", id="missing-error"),
        pytest.param("fx: {warn_bps: 5, error_bps: 50}", "fx", id="unknown-asset-class"),
        pytest.param("crypto: {warn_bps: 5, error_bps: 50, info_bps: 1}", "info_bps", id="extra"),
    ],
)
def test_invalid_agreement_sections_are_refused(
    tmp_path: Path, section: str, fragment: str
) -> None:
    path = write(tmp_path, f"{VALID}agreement:\n  {section}\n")
    with pytest.raises(UniverseError) as excinfo:
        load_universe(path)
    assert fragment in str(excinfo.value).replace(str(path), "")


def test_routes_follow_the_priority_order() -> None:
    universe = load_universe()
    assert universe.routes("BTC-USD") == [
        ("binance", "BTCUSDT"),
        ("polygon", "X:BTCUSD"),
        ("eodhd", "BTC-USD.CC"),
        ("coinmarketcap", "1"),
        ("coingecko", "bitcoin"),
    ]
    assert universe.routes("SPY") == [
        ("polygon", "SPY"),
        ("eodhd", "SPY.US"),
        ("alpha_vantage", "SPY"),
    ]


ROUTED = """\
instruments:
  BTC-USD: {asset_class: crypto}
  ETH-USD: {asset_class: crypto}
priority: [coingecko, binance]
providers:
  binance:
    start_date: 2024-01-01
    intervals: [1h]
    symbols: {BTCUSDT: BTC-USD, BTCUSDC: BTC-USD, ETHUSDT: ETH-USD}
  coingecko:
    start_date: 2024-01-01
    intervals: [1d]
    symbols: {bitcoin: BTC-USD}
  polygon:
    start_date: 2024-01-01
    intervals: [1h]
    symbols: {X:BTCUSD: BTC-USD}
"""


def test_routes_leave_out_providers_missing_from_the_priority(tmp_path: Path) -> None:
    universe = load_universe(write(tmp_path, ROUTED))
    assert universe.routes("BTC-USD") == [
        ("coingecko", "bitcoin"),
        ("binance", "BTCUSDT"),
        ("binance", "BTCUSDC"),
    ]
    assert universe.routes("ETH-USD") == [("binance", "ETHUSDT")]


def test_routes_of_a_declared_instrument_no_provider_lists_are_empty(tmp_path: Path) -> None:
    universe = load_universe(write(tmp_path, VALID))
    assert universe.routes("SPY") == []


def test_routes_of_an_undeclared_instrument_raise() -> None:
    with pytest.raises(UniverseError, match="DOGE-USD"):
        load_universe().routes("DOGE-USD")


def test_start_date_before_the_calendars_is_refused() -> None:
    import pydantic

    from fks_pipelines.market.universe import Universe

    with pytest.raises(pydantic.ValidationError, match="first day the trading calendars cover"):
        Universe.model_validate(
            {
                "instruments": {"SPY": {"asset_class": "equity", "calendar": "XNYS"}},
                "providers": {
                    "polygon": {
                        "start_date": "1989-06-01",
                        "intervals": ["1d"],
                        "symbols": {"SPY": "SPY"},
                    }
                },
            }
        )
