#!/usr/bin/env bash
# Command 1: set up and start Dagster (UI on http://127.0.0.1:3000) on the embedded defaults:
# instance storage in SQLite under .dagster_home/, the warehouse in data/warehouse.sqlite.
# Extra arguments go to `dg dev` (e.g. --port 3001). Ctrl-C, SIGTERM or SIGHUP stop everything it
# started, run workers included, within about 10 s.
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

# Seconds the Dagster processes get to stop after SIGINT before they are killed.
STOP_GRACE_S=8

# Python keeps an inherited "ignore SIGINT" (a background job of a non-interactive shell starts
# so), and Dagster gives SIGTERM whatever SIGINT does: dg and every process it starts would then
# ignore both. This resets SIGINT before exec'ing dg, as GNU `env --default-signal=INT` would.
DEFAULT_SIGINT='import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execv(sys.argv[1], sys.argv[1:])'

# dg is not exec'd: a signal to this script would reach only dg, not the webserver, daemon, code
# servers and run workers it starts, and run workers outlive their code server. Job control puts
# dg and everything under it in a process group of its own, which the traps below stop as one.
# Its stdin is /dev/null so that, as a background job, it is never stopped for reading a terminal.
set -m
"$ROOT/.venv/bin/python" -c "$DEFAULT_SIGINT" \
  "$ROOT/.venv/bin/dg" dev -w "$ROOT/workspace.yaml" "$@" </dev/null &
DG_PID=$!
set +m

# SIGINT to the whole group, as Ctrl-C in a terminal sends to a foreground `dg dev`: dg shuts
# down its webserver, daemon and code servers, and run workers are interrupted. What is still
# there after the grace period is killed: a run of an asset with a RetryPolicy takes the interrupt
# for a failure to retry, and sleeps out the retry delay instead of ending.
stop_group() {
  kill -INT -- "-$DG_PID" 2>/dev/null || return 0
  wait_group "$STOP_GRACE_S" && return 0
  kill -KILL -- "-$DG_PID" 2>/dev/null || return 0
  wait_group 2 || true
}

# Until no process of dg's group is left (true), or for at most $1 seconds (false).
wait_group() {
  local deadline=$((SECONDS + $1))
  while kill -0 -- "-$DG_PID" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

on_signal() {
  trap '' INT TERM HUP # a second Ctrl-C must not cut the shutdown short
  stop_group
  wait "$DG_PID" 2>/dev/null || true
  exit "$1"
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP

status=0
wait "$DG_PID" || status=$?
# dg ended on its own (an error at start-up, e.g. an unknown option): whatever it leaves behind
# goes with it.
trap '' INT TERM HUP
stop_group
exit "$status"
