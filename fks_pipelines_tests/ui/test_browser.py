"""The Dagster UI of a running ``./scripts/dev.sh``, in headless Chromium, as a person reads it.

The script starts as command 1 does (its own session, a free port, a temporary ``DAGSTER_HOME``
and ``FKS_DATA_DIR``, Binance and CoinGecko served by local fakes and no other key). The README's
first run is launched through GraphQL as the UI's Launch run does (``2024-01-05|BTCUSDT`` of
``ohlcv/binance/1h``); then Playwright drives Debian's ``chromium`` through the lineage, the
asset's partition page and its checks, asserting that the providers are named on screen and that
the historical run shows no failed freshness check. Screenshots are kept as test artifacts in
``FKS_TEST_ARTIFACTS`` (default ``test-artifacts/`` at the repository root).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from fks_pipelines.settings import PROJECT_ROOT
from fks_pipelines_tests.devserver import DevScript, dev_env, launch_run, loaded_location
from fks_pipelines_tests.fakes.binance import FakeBinance
from fks_pipelines_tests.fakes.coingecko import FakeCoinGecko
from fks_pipelines_tests.services import unavailable

CHROMIUM = "/usr/bin/chromium"
# Flags for a root, display-less machine with no network but loopback (see the env notes).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PROVIDERS = ("alpha_vantage", "binance", "coingecko", "coinmarketcap", "eodhd", "polygon")
PARTITION = "2024-01-05|BTCUSDT"
READY_WITHIN_S = 120.0
RUN_WITHIN_S = 120.0
PAGE_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("FKS_TEST_ARTIFACTS", PROJECT_ROOT / "test-artifacts")) / "ui"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevScript]:
    tmp_path = tmp_path_factory.mktemp("dev")
    with FakeBinance() as binance, FakeCoinGecko() as coingecko:
        env = dev_env(
            tmp_path,
            FKS_BINANCE_BASE_URL=binance.url,
            FKS_COINGECKO_BASE_URL=f"{coingecko.url}/api/v3",
        )
        script = DevScript(tmp_path, env)
        try:
            location = script.wait_for(
                "code location and run queue", READY_WITHIN_S, lambda: loaded_location(script)
            )
            run_id = launch_run(script, location, "ohlcv_binance_1h_job", PARTITION)
            status = script.wait_for(
                f"run {run_id} to finish", RUN_WITHIN_S, lambda: script.finished(run_id)
            )
            assert status == "SUCCESS", script.tail()
            yield script
        finally:
            script.close()


@pytest.fixture
def page(browser, dev: DevScript) -> Iterator[object]:
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    # Dagster's first-visit community dialog can open after the page settled, over whatever the
    # test is about to click: Playwright dismisses it whenever it blocks an action.
    page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())
    yield page
    page.close()


def visit(page, dev: DevScript, path: str) -> None:
    """Open ``path`` and wait for the UI to settle (the ``page`` fixture dismisses the
    first-visit community dialog whenever it opens)."""
    page.goto(f"{dev.url}{path}", wait_until="networkidle")


def test_the_lineage_names_every_provider(page, dev: DevScript, artifacts: Path) -> None:
    visit(page, dev, "/asset-groups")
    for group in (*PROVIDERS, "consolidated", "quality"):
        page.get_by_text(group, exact=True).first.wait_for(state="visible")
    page.screenshot(path=artifacts / "lineage.png")


def test_a_partition_page_shows_its_provider_checks_and_score(
    page, dev: DevScript, artifacts: Path
) -> None:
    visit(page, dev, f"/assets/ohlcv/binance/1h?view=partitions&partition={PARTITION}")
    # The partition's details load after the page: wait for its metadata, each row in turn.
    for label in ("failed_checks", "quality_score", "missing_bars"):
        page.get_by_text(label, exact=True).first.wait_for(state="visible")
    page.screenshot(path=artifacts / "partition.png", full_page=True)
    assert "binance" in page.inner_text("body")


def test_the_first_run_records_no_failed_freshness_check(
    page, dev: DevScript, artifacts: Path
) -> None:
    visit(page, dev, "/assets/ohlcv/binance/1h?view=checks")
    page.get_by_text("freshness", exact=True).first.click()
    page.get_by_text("Passed").first.wait_for(state="visible")
    page.screenshot(path=artifacts / "checks.png")
    panel = page.inner_text("body")
    assert "stored; history" in panel
    assert "not stored" not in panel  # how a freshness failure reads
