#!/usr/bin/env bash
# The Docker deployment end to end (fks_pipelines_tests/deploy/test_stack.py, marker `docker`):
# the image built from uv.lock, docker-compose.yml brought up with the test's override, runs in
# containers, `down -v`. About 3 minutes with the image layers cached, 5 cold.
#
# Uses the Docker daemon that answers; if none does, starts one with
# ../shared/docker/start-dockerd.sh (these machines: no bridge, no registry) and stops it on exit.
# Where the shared scripts exist, the base images are their local stand-ins
# (make-standin-images.sh; FKS_E2E_STANDIN_IMAGES=0 pulls the real ones instead).
# Extra arguments go to pytest. With FKS_REQUIRE_SERVICES=1 (CI) a missing Docker fails the test.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The machines' Docker helpers sit beside the checkout (../shared/docker); a clone made elsewhere
# (a CI clone in /tmp) finds them through FKS_SHARED_DOCKER or the workplace's /work/shared.
SHARED_DOCKER="${FKS_SHARED_DOCKER:-}"
for candidate in "$(cd "$ROOT/.." && pwd)/shared/docker" /work/shared/docker; do
  if [ -z "$SHARED_DOCKER" ] && [ -d "$candidate" ]; then
    SHARED_DOCKER="$candidate"
  fi
done
"$ROOT/scripts/bootstrap.sh"

DOCKERD_PID=""
stop_dockerd() {
  [ -n "$DOCKERD_PID" ] || return 0
  kill "$DOCKERD_PID" 2>/dev/null || return 0
  for _ in $(seq 1 60); do
    kill -0 "$DOCKERD_PID" 2>/dev/null || return 0
    sleep 0.5
  done
  kill -KILL "$DOCKERD_PID" 2>/dev/null || true
}
trap stop_dockerd EXIT

if ! docker info >/dev/null 2>&1 && [ -x "$SHARED_DOCKER/start-dockerd.sh" ]; then
  echo "e2e: starting dockerd" >&2
  DOCKERD_PID="$("$SHARED_DOCKER/start-dockerd.sh" | tail -1)"
fi
if [ "${FKS_E2E_STANDIN_IMAGES:-1}" = 1 ] && [ -x "$SHARED_DOCKER/make-standin-images.sh" ] \
   && docker info >/dev/null 2>&1; then
  "$SHARED_DOCKER/make-standin-images.sh" >&2
fi

cd "$ROOT"
status=0
"$ROOT/.venv/bin/python" -m pytest -m docker fks_pipelines_tests/deploy "$@" || status=$?
if [ -f test-artifacts/e2e-figures.json ]; then
  echo "e2e figures (test-artifacts/e2e-figures.json):" >&2
  cat test-artifacts/e2e-figures.json >&2
fi
exit "$status"
