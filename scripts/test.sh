#!/usr/bin/env bash
# Runs the whole test suite. The integration tests start their own Redis
# (redis-server), LaunchDarkly emulator and bridge; one test checks /metrics
# with promtool. Both are installed with apt-get when absent.
# Extra arguments are passed to the test runner.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-packages.sh redis-server:redis-server promtool:prometheus

if command -v cargo-nextest >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace "$@"
fi
