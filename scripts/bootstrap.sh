#!/usr/bin/env bash
# Set up the project environment on a machine that has only Python 3.11+:
# a pinned uv in .tools/, then .venv/ exactly as uv.lock describes it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UV_VERSION="0.13.9"
UV="$ROOT/.tools/bin/uv"

if [ ! -x "$UV" ] || [ "$("$UV" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  echo "bootstrap: installing uv $UV_VERSION into .tools/" >&2
  python3 -m venv "$ROOT/.tools"
  "$ROOT/.tools/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
"$UV" sync --frozen --project "$ROOT" --quiet
