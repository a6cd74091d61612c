# Sourced by scripts/*.sh and .ci/run: makes `uv` available (installing it with pip if the
# machine has none) and builds the virtual environment from uv.lock. Needs only Python (3.11,
# 3.12 or 3.13) and network access to the package index.
#
# TOOLBRIDGE_PYTHON picks the interpreter: 3.11 (the default) builds .venv; another version
# builds .venv-<version> (TOOLBRIDGE_PYTHON=3.13 ./scripts/test.sh runs the suite on 3.13).
# It is exported as UV_PROJECT_ENVIRONMENT, so later `uv run` calls use the same environment.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v uv >/dev/null 2>&1; then
  if ! python3 -m uv --version >/dev/null 2>&1; then
    # --user on most systems; plain inside a virtualenv; Debian's Python wants the last.
    python3 -m pip install --quiet --user "uv>=0.13" 2>/dev/null \
      || python3 -m pip install --quiet "uv>=0.13" 2>/dev/null \
      || python3 -m pip install --quiet --user --break-system-packages "uv>=0.13"
  fi
  # pip --user puts the uv binary in the user scripts folder, which may not be on PATH.
  PATH="$(python3 -c 'import os, sysconfig; print(sysconfig.get_path("scripts", os.name + "_user"))'):$PATH"
  export PATH
  command -v uv >/dev/null 2>&1 || uv() { python3 -m uv "$@"; }
fi
# Trust the platform's certificate store, as pip does (proxies with their own CA).
export UV_SYSTEM_CERTS="${UV_SYSTEM_CERTS:-1}"

# A child started from a run on another Python (the dev-stack tests run scripts/dev.sh with the
# TOOLBRIDGE_* variables removed) inherits only UV_PROJECT_ENVIRONMENT: keep that
# environment's Python, never rebuild it with another one.
if [ -z "${TOOLBRIDGE_PYTHON:-}" ] && [[ "${UV_PROJECT_ENVIRONMENT:-}" =~ \.venv-([0-9]+\.[0-9]+)$ ]]; then
  TOOLBRIDGE_PYTHON="${BASH_REMATCH[1]}"
fi
export TOOLBRIDGE_PYTHON="${TOOLBRIDGE_PYTHON:-3.11}"
if [ "$TOOLBRIDGE_PYTHON" != "3.11" ]; then
  export UV_PROJECT_ENVIRONMENT="${UV_PROJECT_ENVIRONMENT:-.venv-$TOOLBRIDGE_PYTHON}"
fi
toolbridge_venv="${UV_PROJECT_ENVIRONMENT:-.venv}"
toolbridge_interpreter="$TOOLBRIDGE_PYTHON"
if ! uv python find "$toolbridge_interpreter" >/dev/null 2>&1 && command -v pyenv >/dev/null 2>&1; then
  # pyenv's shims answer only for the versions pyenv has selected, and uv gives up on the
  # others; ask pyenv where the newest installed one of that version lives.
  toolbridge_pyenv_version="$(pyenv latest "$TOOLBRIDGE_PYTHON" 2>/dev/null || true)"
  if [ -n "$toolbridge_pyenv_version" ] \
    && [ -x "$(pyenv root)/versions/$toolbridge_pyenv_version/bin/python" ]; then
    toolbridge_interpreter="$(pyenv root)/versions/$toolbridge_pyenv_version/bin/python"
  fi
fi
uv sync --frozen --python "$toolbridge_interpreter" --quiet
