#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs uv if missing, builds the virtual
# environment from uv.lock, then runs pytest (extra arguments go to pytest).
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
uv run --frozen --no-sync pytest "$@"
