#!/usr/bin/env bash
# Rough ingest figures with wrk: a private Redis (AOF everysec), the
# LaunchDarkly emulator and a release bridge on this machine, then 10 s of
# 1,000-member Amplitude pushes and 10 s of one-member pushes from 16
# connections. Everything shares the machine's cores, wrk included.
# A stop-gap until the benchmark harness of the benchmarks issue exists.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-redis.sh
command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }
cargo build --release --bins -q

TMP=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$TMP"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
RPORT=$(free_port); PORT=$(free_port)

redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec --dir "$TMP" >/dev/null &
pids+=($!)
target/release/ld-emulator --listen 127.0.0.1:0 --token bench > "$TMP/emu.out" 2>/dev/null &
pids+=($!)
until [ -s "$TMP/emu.out" ]; do sleep 0.1; done
EMU=$(head -1 "$TMP/emu.out" | sed 's/.* on //')

cat > "$TMP/bench.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
[redis]
url = "redis://127.0.0.1:$RPORT"
key_prefix = "bench"
[launchdarkly]
base_url = "$EMU"
requests_per_second = 50.0
[destinations.production]
project = "default"
environment = "production"
[[sources]]
id = "amp"
kind = "amplitude"
destinations = ["production"]
auth = { scheme = "header", header = "X-Cohort-Bridge-Token", secret_env = "BENCH_SECRET" }
TOML
LD_API_TOKEN=bench BENCH_SECRET=bench-secret RUST_LOG=warn target/release/cohort-bridge serve --config "$TMP/bench.toml" 2>"$TMP/bridge.log" &
pids+=($!)
BRIDGE_PID=$!
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; do sleep 0.1; done

python3 - "$TMP" <<'PY'
import json, sys
tmp = sys.argv[1]
users = [{"user_id": f"user-{i:07d}-abcdefgh", "user_properties": {}} for i in range(1000)]
big = {"cohort_name": "Bench", "cohort_id": "bench", "in_cohort": True, "computed_time": "1767225600", "users": users}
one = {"cohort_name": "Bench1", "cohort_id": "bench1", "in_cohort": True, "computed_time": "1767225600", "users": [{"user_id": "u-1"}]}
for name, body in (("1000", big), ("1", one)):
    open(f"{tmp}/body{name}.json", "w").write(json.dumps(body, separators=(",", ":")))
    open(f"{tmp}/post{name}.lua", "w").write(
        'wrk.method = "POST"\n'
        f'local f = io.open("{tmp}/body{name}.json", "r"); wrk.body = f:read("*a"); f:close()\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        'wrk.headers["X-Cohort-Bridge-Token"] = "bench-secret"\n')
PY

for n in 1000 1; do
  echo "== ${n}-member Amplitude pushes, 16 connections, 10 s"
  wrk -t2 -c16 -d10s -s "$TMP/post$n.lua" "http://127.0.0.1:$PORT/v1/webhooks/amp" | grep -E "Latency|Requests/sec|Non-2xx"
done
echo "== bridge resident memory after the runs: $(ps -o rss= -p "$BRIDGE_PID") KiB"
