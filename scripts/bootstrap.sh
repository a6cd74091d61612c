# Sourced by scripts/*.sh and .ci/run: makes `uv` available (installing it with pip if the
# machine has none) and builds .venv from uv.lock. Needs only Python 3.11 and network access
# to the package index.
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
uv sync --frozen --python 3.11 --quiet
