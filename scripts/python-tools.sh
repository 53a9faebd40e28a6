#!/usr/bin/env bash
# Installs the Python tools of scripts/python-requirements.txt into a venv at
# target/tools-venv (or $COHORT_BRIDGE_TOOLS_VENV), once per version of that
# file, and prints the venv's bin directory.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${COHORT_BRIDGE_TOOLS_VENV:-$PWD/target/tools-venv}
req=scripts/python-requirements.txt
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements-sha256" 2>/dev/null)" != "$want" ]; then
  if grep -qv '^\s*\(#.*\)\?$' "$req"; then
    echo "==> Installing Python tools into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
  else
    mkdir -p "$venv/bin"
  fi
  echo "$want" >"$venv/.requirements-sha256"
fi
echo "$venv/bin"
