#!/usr/bin/env bash
# Runs the whole test suite. The integration tests start their own Redis
# (redis-server must be installed), LaunchDarkly emulator and bridge.
# Extra arguments are passed to the test runner.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-redis.sh

if command -v cargo-nextest >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace "$@"
fi
