#!/usr/bin/env bash
# Cost (CPU of the process, peak heap above the baseline) of the worst
# unauthenticated request per receiver kind, measured in-process over HTTP.
# The body size is CB_COST_BODY_MIB (default 1). The figures include the
# test client's own work of sending the body (same process).
set -euo pipefail
cd "$(dirname "$0")/.."
CB_COST_BODY_MIB="${CB_COST_BODY_MIB:-1}" cargo test --release --test it -- \
  --ignored --nocapture --exact ingress_security::cost_of_the_worst_unauthenticated_request_per_receiver
