#!/usr/bin/env bash
# Runs the whole test suite. The integration tests start their own Redis
# (redis-server), LaunchDarkly emulator and bridge, and run real tools over
# real artifacts (promtool on /metrics, ...). The Debian packages of
# scripts/test-packages.txt are installed with apt-get when absent, the
# Python tools of scripts/python-requirements.txt into a venv.
# Extra arguments are passed to the test runner.
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t packages < <(grep -v '^\s*\(#.*\)\?$' scripts/test-packages.txt)
scripts/ensure-packages.sh "${packages[@]}"
tools_bin=$(scripts/python-tools.sh)
export PATH="$tools_bin:$PATH"

if command -v cargo-nextest >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace "$@"
fi
