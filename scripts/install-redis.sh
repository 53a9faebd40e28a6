#!/usr/bin/env bash
# Installs redis-server with apt-get when it is not already on PATH.
# Used by scripts/demo.sh. Debian/Ubuntu only; the bridge needs Redis >= 6.2
# (its scripts use ZADD ... LT).
set -euo pipefail
exec "$(dirname "$0")/ensure-packages.sh" redis-server:redis-server
