#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs uv if missing, creates the
# virtual environment from uv.lock, then runs pytest (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.local/bin:$PATH"
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --user "uv>=0.9" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages --user "uv>=0.9"
fi
uv sync --frozen --python 3.11 --quiet
exec uv run --frozen --no-sync pytest "$@"
