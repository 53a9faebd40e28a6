#!/usr/bin/env bash
# Installs redis-server with apt-get when it is not already on PATH.
# Used by scripts/demo.sh, scripts/test.sh and .ci/run. Debian/Ubuntu only;
# the bridge needs Redis >= 6.2 (its scripts use ZADD ... LT).
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "redis-server is not installed and apt-get is not available: install Redis >= 6.2 and retry." >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
else
  as_root=(sudo)
fi
echo "==> Installing redis-server with apt-get" >&2
"${as_root[@]}" apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server
