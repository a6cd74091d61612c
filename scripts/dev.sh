#!/usr/bin/env bash
# The README's "run the main job" command: the whole system on this machine (development
# only) — a dev identity provider, the API on SQLite and the MCP server at
# http://127.0.0.1:8001/mcp. Installs uv and the locked dependencies first; Ctrl-C stops it.
# Extra arguments go to `toolbridge-mcp dev` (./scripts/dev.sh --seed-demo, --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
# exec: Ctrl-C and SIGTERM reach the supervisor itself, which stops every component.
exec "$toolbridge_venv/bin/toolbridge-mcp" dev "$@"
