#!/usr/bin/env bash
# The whole bridge, end to end, on this machine:
#   private Redis (AOF) + LaunchDarkly emulator + cohort-bridge serve,
#   replay of fixtures/amplitude, heap, segment, mixpanel, standard-webhooks
#   and partner (authenticated and signed as each sender would), wait until LaunchDarkly has everything,
#   then print the resulting LaunchDarkly segments and compare them with
#   fixtures/expected.json.
#
# Needs Rust (cargo), python3 and curl; installs redis-server with apt-get if
# it is missing. Everything it starts is stopped on exit; set KEEP_TMP=1 to
# keep the temporary directory (Redis AOF and the three logs).
# DEMO_OPS_SCREENSHOT=docs/ops-dashboard.png also opens the operator API and
# saves a screenshot of the /ops dashboard with the demo's data
# (scripts/screenshot-ops.sh; DEMO_OPS_WAIT_S seconds of charts first, 30).
# DEMO_STAY=1 opens the operator API too and, after the check, keeps
# everything running so that the /ops dashboard can be looked at, until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

CONFIG=config/demo.toml
EXPECTED=fixtures/expected.json
TIMEOUT_S=60

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

for tool in cargo python3 curl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cohort-bridge-demo.XXXXXX")
PIDS=()

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # Stop in reverse order: bridge (graceful on SIGTERM), emulator, Redis.
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[$i]}" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ]; then
    for f in bridge.log emulator.log redis.log; do
      if [ -s "$TMP/$f" ]; then
        printf '\n--- last lines of %s ---\n' "$f" >&2
        tail -n 25 "$TMP/$f" >&2
      fi
    done
  fi
  if [ "${KEEP_TMP:-0}" = 1 ]; then
    log "Kept $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# --- 1. Redis and the binaries -------------------------------------------------
scripts/install-redis.sh

log "Building (cargo build --release --bins)"
cargo build --release --bins
BRIDGE=$ROOT/target/release/cohort-bridge
EMULATOR=$ROOT/target/release/ld-emulator

# --- 2. A private Redis with AOF ----------------------------------------------
REDIS_PORT=$(free_port)
log "Starting Redis on 127.0.0.1:$REDIS_PORT (AOF in $TMP)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
  --save '' --appendonly yes --appendfsync everysec --dir "$TMP" \
  --maxmemory-policy noeviction --daemonize no \
  >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  if [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; then
    break
  fi
  kill -0 "${PIDS[-1]}" 2>/dev/null || die "redis-server exited"
  sleep 0.1
done
[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] || die "Redis did not answer PING"

# --- 3. The LaunchDarkly emulator ---------------------------------------------
LD_TOKEN=demo-token
log "Starting ld-emulator"
"$EMULATOR" --listen 127.0.0.1:0 --token "$LD_TOKEN" >"$TMP/emulator.out" 2>"$TMP/emulator.log" &
PIDS+=($!)
EMU_URL=
for _ in $(seq 1 100); do
  EMU_URL=$(sed -n 's/^ld-emulator listening on \(http:\/\/[0-9.:]*\).*$/\1/p' "$TMP/emulator.out" | head -n 1)
  [ -n "$EMU_URL" ] && break
  kill -0 "${PIDS[-1]}" 2>/dev/null || die "ld-emulator exited"
  sleep 0.1
done
[ -n "$EMU_URL" ] || die "ld-emulator did not report its address"
log "ld-emulator listening on $EMU_URL"

# --- 4. The bridge --------------------------------------------------------------
BRIDGE_PORT=$(free_port)
BRIDGE_URL=http://127.0.0.1:$BRIDGE_PORT
export LD_API_TOKEN=$LD_TOKEN
export DEMO_AMPLITUDE_SECRET=demo-amplitude-secret
export DEMO_HEAP_SECRET=demo-heap-secret
export DEMO_SEGMENT_SECRET=demo-segment-secret
export DEMO_MIXPANEL_USER=mixpanel
export DEMO_MIXPANEL_PASSWORD=demo-mixpanel-password
export DEMO_STANDARD_WEBHOOKS_SECRET=whsec_ZGVtby1zdGFuZGFyZC13ZWJob29rcy1zZWNyZXQ=
export DEMO_PARTNER_TOKEN=demo-partner-token
export COHORT_BRIDGE_SERVER__LISTEN=127.0.0.1:$BRIDGE_PORT
export COHORT_BRIDGE_REDIS__URL=redis://127.0.0.1:$REDIS_PORT
export COHORT_BRIDGE_LAUNCHDARKLY__BASE_URL=$EMU_URL
if [ -n "${DEMO_OPS_SCREENSHOT:-}" ] || [ "${DEMO_STAY:-0}" = 1 ]; then
  export DEMO_OPERATOR_TOKEN=demo-operator-token
  export COHORT_BRIDGE_SERVER__OPERATOR_TOKEN_ENV=DEMO_OPERATOR_TOKEN
fi
"$BRIDGE" check-config --config "$CONFIG" >&2

log "Starting cohort-bridge serve on $BRIDGE_URL"
"$BRIDGE" serve --config "$CONFIG" >"$TMP/bridge.log" 2>&1 &
PIDS+=($!)
BRIDGE_PID=${PIDS[-1]}
ready=
for _ in $(seq 1 300); do
  if curl -fsS -o /dev/null "$BRIDGE_URL/readyz" 2>/dev/null; then
    ready=1
    break
  fi
  kill -0 "$BRIDGE_PID" 2>/dev/null || die "cohort-bridge exited"
  sleep 0.1
done
[ -n "$ready" ] || die "cohort-bridge did not become ready within 30 s: $(curl -sS "$BRIDGE_URL/readyz" 2>&1 || true)"
log "cohort-bridge is ready"

# --- 5. Replay the recorded pushes ---------------------------------------------
log "Replaying fixtures/amplitude, heap, segment, mixpanel, standard-webhooks and partner"
"$BRIDGE" replay fixtures/amplitude fixtures/heap fixtures/segment fixtures/mixpanel fixtures/standard-webhooks fixtures/partner --config "$CONFIG" --url "$BRIDGE_URL" | tee "$TMP/replay.out"
# Native receivers answer 200; the partner endpoint answers 204, as LaunchDarkly does.
if grep -qvE -- '-> (200|204) ' "$TMP/replay.out"; then
  die "some pushes were not answered 200 or 204 (see above)"
fi

# --- 6. Wait until LaunchDarkly has every change ------------------------------
# Compares the emulator's production segments with fixtures/expected.json;
# prints the segments readably when asked to.
compare() { # compare STATE_FILE [print]
  python3 - "$1" "$EXPECTED" "${2:-}" <<'PY'
import json, sys

state = json.load(open(sys.argv[1]))
expected = json.load(open(sys.argv[2]))
show = sys.argv[3] == "print"
segments = state["segments"] if isinstance(state, dict) else state
production = sorted(
    (s for s in segments if s.get("project") == "default" and s.get("environment") == "production"),
    key=lambda s: s["key"],
)
got = {s["key"]: sorted(s.get("included") or []) for s in production}
if show:
    print()
    print("LaunchDarkly segments (project default, environment production):")
    for s in production:
        members = sorted(s.get("included") or [])
        print()
        print(f"  {s['key']}  \"{s.get('name', '')}\"")
        print(f"    tags: {', '.join(s.get('tags') or [])}   unbounded: {json.dumps(s.get('unbounded'))}"
              f"   context kind: {s.get('unboundedContextKind')}   generation: {s.get('generation')}")
        print(f"    {len(members)} member(s):")
        for m in members:
            print(f"      {m}")
    print()
    if got == expected:
        print(f"MATCH: the segments equal {sys.argv[2]}.")
    else:
        print(f"MISMATCH with {sys.argv[2]}:")
        for key in sorted(set(got) | set(expected)):
            g, e = set(got.get(key, [])), set(expected.get(key, []))
            if key not in got:
                print(f"  {key}: missing in LaunchDarkly")
            elif key not in expected:
                print(f"  {key}: not expected")
            if g - e:
                print(f"  {key}: unexpected members {sorted(g - e)}")
            if e - g:
                print(f"  {key}: missing members {sorted(e - g)}")
sys.exit(0 if got == expected else 1)
PY
}

log "Waiting up to ${TIMEOUT_S}s for the bridge to write everything to LaunchDarkly"
deadline=$((SECONDS + TIMEOUT_S))
matched=
while [ "$SECONDS" -lt "$deadline" ]; do
  kill -0 "$BRIDGE_PID" 2>/dev/null || die "cohort-bridge exited"
  if curl -fsS "$EMU_URL/_emulator/state" -o "$TMP/state.json" 2>/dev/null && compare "$TMP/state.json"; then
    matched=1
    break
  fi
  sleep 0.5
done

curl -fsS "$EMU_URL/_emulator/state" -o "$TMP/state.json"
backlog=$(curl -fsS "$BRIDGE_URL/metrics" | sed -n 's/^cohort_bridge_dirty_backlog \(.*\)$/\1/p' || true)
ld_requests=$(curl -fsS "$BRIDGE_URL/metrics" | grep '^cohort_bridge_ld_requests_total' || true)
status=0
compare "$TMP/state.json" print || status=$?
printf 'LaunchDarkly requests made by the bridge:\n%s\n' "${ld_requests:-  (none)}"
printf 'Bridge dirty backlog gauge: %s (refreshed every few seconds)\n' "${backlog:-n/a}"
if [ -z "$matched" ] || [ "$status" -ne 0 ]; then
  die "LaunchDarkly did not reach the expected membership within ${TIMEOUT_S}s"
fi
if [ -n "${DEMO_OPS_SCREENSHOT:-}" ]; then
  log "Waiting ${DEMO_OPS_WAIT_S:-30}s for the dashboard's series, then a screenshot of $BRIDGE_URL/ops"
  sleep "${DEMO_OPS_WAIT_S:-30}"
  scripts/screenshot-ops.sh "$BRIDGE_URL" "$DEMO_OPERATOR_TOKEN" "$DEMO_OPS_SCREENSHOT"
fi
if [ "${DEMO_STAY:-0}" = 1 ]; then
  log "Still running: open $BRIDGE_URL/ops (operator token: $DEMO_OPERATOR_TOKEN); Ctrl-C stops everything"
  wait "$BRIDGE_PID" || true
fi
