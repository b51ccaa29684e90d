#!/usr/bin/env bash
# Command 2: set up and run the whole test suite. Tests that need PostgreSQL use
# FKS_TEST_POSTGRES_URL (or start a throwaway server from local binaries) and skip with a reason
# when neither works; with FKS_REQUIRE_SERVICES=1 a missing service fails instead.
# Extra arguments go to pytest (e.g. -k warehouse).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
