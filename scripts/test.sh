#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs uv if missing, builds the virtual
# environment from uv.lock, then runs pytest (extra arguments go to pytest).
# TOOLBRIDGE_PYTHON=3.12 (or 3.13) runs it on that Python, in .venv-3.12 (see bootstrap.sh).
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
uv run --frozen --no-sync pytest "$@"
