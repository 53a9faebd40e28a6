#!/usr/bin/env bash
# Installs, with apt-get, the Debian packages whose command is not on PATH.
# Arguments: command:package pairs, e.g. `redis-server:redis-server promtool:prometheus`.
# One `apt-get update`, then `apt-get install -y` of only what is absent.
set -euo pipefail

missing=()
for pair in "$@"; do
  cmd=${pair%%:*}
  pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing ${missing[*]} and apt-get is not available: install them and retry." >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
else
  as_root=(sudo)
fi
echo "==> Installing ${missing[*]} with apt-get" >&2
"${as_root[@]}" apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
