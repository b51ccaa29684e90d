#!/usr/bin/env bash
# Command 1: set up and start Dagster (UI on http://127.0.0.1:3000) on the embedded defaults:
# instance storage in SQLite under .dagster_home/, the warehouse in data/warehouse.sqlite.
# Extra arguments go to `dagster dev` (e.g. --port 3001).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"

if [ -z "${DAGSTER_HOME:-}" ]; then
  export DAGSTER_HOME="$ROOT/.dagster_home"
  mkdir -p "$DAGSTER_HOME"
  ln -sf "$ROOT/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
fi
# Start from DAGSTER_HOME: Dagster warns about a dagster.yaml in the working directory that is not
# DAGSTER_HOME's own, which the repository root would trigger.
cd "$DAGSTER_HOME"
exec "$ROOT/.venv/bin/dagster" dev -w "$ROOT/workspace.yaml" "$@"
