#!/usr/bin/env python3
"""Summarise the flusher's per-batch phase log (RUST_LOG=cohort_bridge::flush::phases=debug).

Usage: scripts/phases.py target/bench/bridge-PORT.log [...]
Prints p50 / p99 / max (ms) of each phase of a batch:
  late     flush started - due time   (the flusher's polling / concurrency)
  claim    the claim script (and, claim-first, the link's meta read)
  token    the throttle queue (after the claim, or before it)
  http     the LaunchDarkly request
  ack      acked - answered           (audit + ack script)
  total    acked - due
"""
import re, sys

FIELDS = ("due_ms", "started_ms", "claimed_ms", "token_ms", "answered_ms", "acked_ms", "since_ms", "batch")
pat = re.compile(r"(\w+)=(-?\d+)")

def pct(v, p):
    if not v:
        return -1
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]

for path in sys.argv[1:]:
    rows = []
    for line in open(path, errors="replace"):
        if "Batch acknowledged" not in line:
            continue
        kv = {k: int(v) for k, v in pat.findall(line)}
        if all(f in kv for f in FIELDS[:6]):
            rows.append(kv)
    if not rows:
        print(f"{path}: no phase lines")
        continue
    # Claim then token (before the fix), or token then claim (after it).
    def claim(r):
        return r["claimed_ms"] - (r["token_ms"] if r["token_ms"] <= r["claimed_ms"] else r["started_ms"])
    def token(r):
        return r["token_ms"] - (r["claimed_ms"] if r["token_ms"] > r["claimed_ms"] else r["started_ms"])
    def http(r):
        return r["answered_ms"] - max(r["token_ms"], r["claimed_ms"])
    phases = {
        "late (start-due)": [r["started_ms"] - r["due_ms"] for r in rows],
        "claim": [claim(r) for r in rows],
        "token wait": [token(r) for r in rows],
        "http (answered - later of token, claim)": [http(r) for r in rows],
        "ack (acked-answered)": [r["acked_ms"] - r["answered_ms"] for r in rows],
        "total (acked-due)": [r["acked_ms"] - r["due_ms"] for r in rows],
        "since->acked": [r["acked_ms"] - r["since_ms"] for r in rows if r.get("since_ms", -1) >= 0],
        "batch size": [r["batch"] for r in rows],
    }
    print(f"{path}: {len(rows)} batches")
    print(f"| phase | p50 | p99 | max |\n| --- | ---: | ---: | ---: |")
    for name, v in phases.items():
        print(f"| {name} | {pct(v, 50)} | {pct(v, 99)} | {max(v) if v else -1} |")
