#!/bin/sh
# Entrypoint of the fks-pipelines image (every service and every run container).
#
# docker compose hands each container every variable of the deployment, set or not: the
# DockerRunLauncher forwards a fixed list of names to run containers (deploy/dagster.yaml) and
# refuses to launch a run when one of them is missing from the daemon's environment. An empty
# value means "not set", as in .env: fks_pipelines/settings.py would read FKS_BINANCE_RPS= as a
# number and fail. So, for whatever loads the project (code server, fks-api, run workers), the
# project's variables that are empty are unset before the command starts. The daemon keeps them
# as they are: it forwards them and reads none of them itself.
set -eu
if [ "${1:-}" != "dagster-daemon" ]; then
  for name in $(env | sed -n 's/^\(\(FKS\|DAGSTER\|REDIS\|POLYGON\|COINGECKO\|COINMARKETCAP\|ALPHA_VANTAGE\|EODHD\)_[A-Za-z0-9_]*\)=$/\1/p'); do
    unset "$name"
  done
fi
exec "$@"
