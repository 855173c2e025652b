#!/usr/bin/env bash
# Installs the Python client with its test extras into a private virtual environment (from
# PyPI) and runs its tests — the shared scenarios and the wrapper's own — against a live
# contextd started on a free port. Needs python3 and CONTEXTD_BIN (default:
# <repo>/target/debug/contextd).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${CONTEXTD_PY_VENV:-$here/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# Reinstall only when the package's metadata changed (the install is editable: code changes
# need none).
stamp="$venv/.contextd-installed"
want=$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here[test]"
  echo "$want" >"$stamp"
fi
cd "$here"
exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
