"""The ``docker`` marker: tests that build the image and run the compose stack on a real dockerd.

They take minutes and need a Docker daemon, so the normal run (``./scripts/test.sh``) leaves
them out: they are deselected unless the marker expression names them (``-m docker``), as
``scripts/e2e.sh`` does after starting dockerd. Selected and without Docker they skip, or fail
with ``FKS_REQUIRE_SERVICES=1`` (see :func:`fks_pipelines_tests.services.unavailable`).
"""

from __future__ import annotations

import pytest

MARKER = "docker"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}: end-to-end test of the Docker deployment; runs only with `-m {MARKER}` "
        "(scripts/e2e.sh)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if MARKER in (config.option.markexpr or ""):
        return
    deselected = [item for item in items if item.get_closest_marker(MARKER)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker(MARKER)]
