#!/usr/bin/env bash
# Screenshot of a running bridge's /ops dashboard, in headless Chromium driven
# over WebDriver (Debian's chromium and chromium-driver; installed with
# scripts/ensure-packages.sh when absent). Plain WebDriver JSON with curl.
#
#   scripts/screenshot-ops.sh BRIDGE_URL OPERATOR_TOKEN OUT.png [WIDTH HEIGHT]
#
# Opens BRIDGE_URL/ops, enters the token in the page's prompt, waits until the
# links table and both charts are drawn, and writes the PNG to OUT.png.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { echo "usage: $0 BRIDGE_URL OPERATOR_TOKEN OUT.png [WIDTH HEIGHT]" >&2; exit 2; }
URL=$1 TOKEN=$2 OUT=$3 WIDTH=${4:-1400} HEIGHT=${5:-1100}
scripts/ensure-packages.sh chromium:chromium chromedriver:chromium-driver >&2

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
chromedriver --port="$PORT" >/dev/null 2>&1 &
DRIVER=$!
WD=http://127.0.0.1:$PORT
SESSION=
cleanup() {
  [ -n "$SESSION" ] && curl -fsS -X DELETE "$WD/session/$SESSION" >/dev/null 2>&1 || true
  kill "$DRIVER" 2>/dev/null || true
  wait "$DRIVER" 2>/dev/null || true
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  curl -fsS "$WD/status" 2>/dev/null | grep -q '"ready": *true' && break
  sleep 0.1
done

# wd METHOD PATH [JSON]: one WebDriver command; prints its "value".
wd() {
  local out
  out=$(curl -fsS -X "$1" -H 'Content-Type: application/json' ${3:+--data "$3"} "$WD$2")
  python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["value"]))' <<<"$out"
}
json() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }

caps=$(printf '{"capabilities":{"alwaysMatch":{"goog:chromeOptions":{"args":["--headless=new","--no-sandbox","--disable-gpu","--disable-dev-shm-usage","--hide-scrollbars","--window-size=%s,%s"]}}}}' "$WIDTH" "$HEIGHT")
SESSION=$(wd POST /session "$caps" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sessionId"])')
wd POST "/session/$SESSION/url" "{\"url\": $(json "$URL/ops")}" >/dev/null
script="document.getElementById('token').value = $(json "$TOKEN"); document.getElementById('load').click(); return true;"
wd POST "/session/$SESSION/execute/sync" "{\"script\": $(json "$script"), \"args\": []}" >/dev/null
ready="return !!(document.querySelector('#links tr') && document.querySelector('#chart-propagation path') && document.querySelector('#chart-budget path'));"
for _ in $(seq 1 100); do
  [ "$(wd POST "/session/$SESSION/execute/sync" "{\"script\": $(json "$ready"), \"args\": []}")" = true ] && break
  sleep 0.2
done
wd GET "/session/$SESSION/screenshot" | python3 -c 'import base64,json,sys; open(sys.argv[1], "wb").write(base64.b64decode(json.load(sys.stdin)))' "$OUT"
echo "screenshot of $URL/ops written to $OUT" >&2
