#!/bin/sh
# Creates the warehouse database beside Dagster's (docker-compose.yml, service postgres-init).
# One PostgreSQL server holds two databases: $POSTGRES_DB for Dagster's runs, event log and
# schedules (created by the server's first start), and $FKS_WAREHOUSE_DB for the market data
# (`ohlcv`, ... created by fks_pipelines on first use). Run on every `up`, so it also adds the
# database to a volume initialised before it existed; it changes nothing when both are there.
# Connection from PGHOST / PGPORT / PGUSER / PGPASSWORD.
set -eu
db="${FKS_WAREHOUSE_DB:?}"
i=0
until pg_isready -q -d "$POSTGRES_DB"; do
  i=$((i + 1))
  [ "$i" -lt 60 ] || { echo "postgres-init: $PGHOST:$PGPORT did not answer" >&2; exit 1; }
  sleep 1
done
exists=$(psql -d "$POSTGRES_DB" -Atc "SELECT 1 FROM pg_database WHERE datname = '$db'")
if [ "$exists" = 1 ]; then
  echo "postgres-init: database $db exists"
else
  psql -d "$POSTGRES_DB" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE \"$db\""
  echo "postgres-init: created database $db"
fi
