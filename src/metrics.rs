//! Prometheus metrics: every name the bridge exports, documented once.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `cohort_bridge_pushes_total` | counter | `source`, `outcome` | requests to a receiver: `accepted`, `duplicate`, `ignored`, `unauthorized`, `invalid`, `too_large`, `unavailable` |
//! | `cohort_bridge_changes_total` | counter | `source`, `outcome` | membership changes: `accepted` counts every change newer than what was stored; each has one final outcome: `stale`, `skipped_without_key`, `skipped_invalid_key` (longer than `server.max_key_bytes` or holding a control character) on arrival; `unchanged`, `cancelled` (flip back), `superseded` before a write; `written` and `dead_lettered` after one (see `store::ApplyOutcome`) |
//! | `cohort_bridge_ld_requests_total` | counter | `operation`, `status` | LaunchDarkly attempts, by HTTP status or `timeout` / `transport` / `not_sent` |
//! | `cohort_bridge_ld_request_seconds` | histogram | `operation` | LaunchDarkly request duration |
//! | `cohort_bridge_flush_lag_seconds` | histogram | | from a link's due time to its acknowledged write (depends on `flush.max_delay_ms` and the rate) |
//! | `cohort_bridge_dirty_backlog` | gauge | | members of this replica's partitions still waiting for LaunchDarkly |
//! | `cohort_bridge_leases_held` | gauge | | partitions this replica flushes |
//! | `cohort_bridge_links_blocked_total` | counter | `reason` | flush attempts stopped by 401/403/404 or a configuration gap |

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

pub const PUSHES: &str = "cohort_bridge_pushes_total";
pub const CHANGES: &str = "cohort_bridge_changes_total";
pub const LD_REQUESTS: &str = "cohort_bridge_ld_requests_total";
pub const LD_REQUEST_SECONDS: &str = "cohort_bridge_ld_request_seconds";
pub const FLUSH_LAG_SECONDS: &str = "cohort_bridge_flush_lag_seconds";
pub const DIRTY_BACKLOG: &str = "cohort_bridge_dirty_backlog";
pub const LEASES_HELD: &str = "cohort_bridge_leases_held";
pub const LINKS_BLOCKED: &str = "cohort_bridge_links_blocked_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .expect("buckets are not empty");
            match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder is installed (embedding): render an empty registry.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Counts changes of one outcome.
pub fn changes(source: &str, outcome: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!(CHANGES, "source" => source.to_string(), "outcome" => outcome)
            .increment(n);
    }
}

/// Counts one push by outcome.
pub fn push(source: &str, outcome: &'static str) {
    metrics::counter!(PUSHES, "source" => source.to_string(), "outcome" => outcome).increment(1);
}
