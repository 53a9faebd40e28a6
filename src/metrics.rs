//! Prometheus metrics: every name the bridge exports, documented once.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `cohort_bridge_requests_total` | counter | `source`, `outcome` | requests to a receiver ([`RequestOutcome`]): `accepted`, `duplicate`, `ignored`, `unauthorized`, `invalid`, `too_large`, `unavailable`, `rate_limited` (formerly `cohort_bridge_pushes_total`: a push is one cohort's changes, a request may carry several) |
//! | `cohort_bridge_changes_total` | counter | `source`, `outcome` | membership changes ([`ChangeOutcome`]): `accepted` counts every change newer than what was stored; each has one final outcome: `stale`, `skipped_without_key`, `skipped_invalid_key` (longer than `server.max_key_bytes` or holding a control character) on arrival; `unchanged`, `cancelled` (flip back), `superseded` before a write; `written` and `dead_lettered` after one (see `store::ApplyOutcome`) |
//! | `cohort_bridge_ld_requests_total` | counter | `operation`, `status` | LaunchDarkly attempts, by HTTP status or `timeout` / `transport` / `not_sent`, or `shadowed` (shadow mode: audited, not sent) |
//! | `cohort_bridge_ld_request_seconds` | histogram | `operation` | LaunchDarkly request duration |
//! | `cohort_bridge_flush_lag_seconds` | histogram | | from a link's due time to its acknowledged write (depends on `flush.max_delay_ms` and the rate) |
//! | `cohort_bridge_dirty_backlog` | gauge | | members of this replica's partitions still waiting for LaunchDarkly |
//! | `cohort_bridge_leases_held` | gauge | | partitions this replica flushes |
//! | `cohort_bridge_links_blocked_total` | counter | `reason` | flush attempts stopped by 401/403/404 or a configuration gap |
//! | `cohort_bridge_reconcile_runs_total` | counter | `result` | reconciles with LaunchDarkly's export: `ok`, `bad_export` (unexpected layout), `launchdarkly_error`, `redis_error`, `not_reconcilable`, `shadow_mode` |
//! | `cohort_bridge_reconcile_members_total` | counter | `kind` | members of finished reconciles: `checked`, `missing`, `extra`, `repaired` |
//! | `cohort_bridge_drift_members_total` | counter | `kind` | differences a reconcile or sampled verification found where the bridge had recorded LaunchDarkly as agreeing: `missing`, `extra` |
//! | `cohort_bridge_verify_checks_total` | counter | `result` | sampled verification's read-backs of single members (`flush.verify_share`): `match`, `mismatch` (repaired), `changed` (touched between read and answer, not judged), `not_found`, `error`, `timeout` (never judged) |
//! | `cohort_bridge_ld_budget_requests_per_second` | gauge | | LaunchDarkly requests/s this replica sent over the last 10 s (retries included) |
//! | `cohort_bridge_ld_budget_limit_requests_per_second` | gauge | | the configured `launchdarkly.requests_per_second` (the deployment's; each replica works under it divided by the live replicas) |
//! | `cohort_bridge_ld_ratelimit_remaining` | gauge | | the last `X-Ratelimit-Route-Remaining` LaunchDarkly reported to this replica |
//! | `cohort_bridge_oldest_dirty_age_seconds` | gauge | | age of the oldest change of this replica's partitions not yet acknowledged by LaunchDarkly (0 if none) |
//! | `cohort_bridge_propagation_seconds` | histogram | | from the 2xx of a push to LaunchDarkly's acknowledgement of its change, one sample per acknowledged batch, measured from the link's oldest unacknowledged change (an upper bound for the batch) |
//! | `cohort_bridge_links_blocked` | gauge | | links of this replica's partitions blocked now |
//! | `cohort_bridge_redis_up` | gauge | | 1 when Redis answered the last health check (`PING`, every few seconds), else 0 |
//! | `cohort_bridge_partitions` | gauge | | the configured `redis.partitions` (a partition no replica holds: `sum(cohort_bridge_leases_held) < max(cohort_bridge_partitions)`) |
//! | `cohort_bridge_group_commit_size` | histogram | | pushes per group commit (`ingest.group_commit_wait_us`): one sample per script call of the group path; above 1 when pushes arriving together shared a call |

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

pub const REQUESTS: &str = "cohort_bridge_requests_total";
pub const CHANGES: &str = "cohort_bridge_changes_total";
pub const LD_REQUESTS: &str = "cohort_bridge_ld_requests_total";
pub const LD_REQUEST_SECONDS: &str = "cohort_bridge_ld_request_seconds";
pub const FLUSH_LAG_SECONDS: &str = "cohort_bridge_flush_lag_seconds";
pub const DIRTY_BACKLOG: &str = "cohort_bridge_dirty_backlog";
pub const LEASES_HELD: &str = "cohort_bridge_leases_held";
pub const LINKS_BLOCKED: &str = "cohort_bridge_links_blocked_total";
pub const RECONCILE_RUNS: &str = "cohort_bridge_reconcile_runs_total";
pub const RECONCILE_MEMBERS: &str = "cohort_bridge_reconcile_members_total";
pub const DRIFT_MEMBERS: &str = "cohort_bridge_drift_members_total";
pub const LD_BUDGET_RPS: &str = "cohort_bridge_ld_budget_requests_per_second";
pub const LD_BUDGET_LIMIT_RPS: &str = "cohort_bridge_ld_budget_limit_requests_per_second";
pub const LD_RATELIMIT_REMAINING: &str = "cohort_bridge_ld_ratelimit_remaining";
pub const OLDEST_DIRTY_AGE_SECONDS: &str = "cohort_bridge_oldest_dirty_age_seconds";
pub const PROPAGATION_SECONDS: &str = "cohort_bridge_propagation_seconds";
pub const LINKS_BLOCKED_NOW: &str = "cohort_bridge_links_blocked";
pub const REDIS_UP: &str = "cohort_bridge_redis_up";
pub const PARTITIONS: &str = "cohort_bridge_partitions";
pub const VERIFY_CHECKS: &str = "cohort_bridge_verify_checks_total";
pub const GROUP_COMMIT_SIZE: &str = "cohort_bridge_group_commit_size";

/// Every metric name above, in the table's order (tests check each is exported).
pub const ALL: [&str; 20] = [
    REQUESTS,
    CHANGES,
    LD_REQUESTS,
    LD_REQUEST_SECONDS,
    FLUSH_LAG_SECONDS,
    DIRTY_BACKLOG,
    LEASES_HELD,
    LINKS_BLOCKED,
    RECONCILE_RUNS,
    RECONCILE_MEMBERS,
    DRIFT_MEMBERS,
    LD_BUDGET_RPS,
    LD_BUDGET_LIMIT_RPS,
    LD_RATELIMIT_REMAINING,
    OLDEST_DIRTY_AGE_SECONDS,
    PROPAGATION_SECONDS,
    LINKS_BLOCKED_NOW,
    REDIS_UP,
    PARTITIONS,
    VERIFY_CHECKS,
    // GROUP_COMMIT_SIZE joins once group commit is on by default (a sample
    // exists only then).
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ];
            // Propagation includes flush.max_delay_ms and any backlog: longer buckets.
            let propagation = [
                0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
            ];
            // Pushes per group commit: up to ingest.group_commit_max (at most 1024).
            let group = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(PROPAGATION_SECONDS.into()), &propagation)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(GROUP_COMMIT_SIZE.into()), &group)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                })
                .expect("buckets are not empty");
            match builder.install_recorder() {
                Ok(h) => {
                    describe();
                    baseline();
                    h
                }
                // Another recorder is installed (embedding): render an empty registry.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Counters that may stay untouched for hours (reconciles) start at 0, so
/// a scrape shows them and `increase()` has a series from the start.
fn baseline() {
    metrics::counter!(RECONCILE_RUNS, "result" => "ok").absolute(0);
    metrics::counter!(RECONCILE_MEMBERS, "kind" => "checked").absolute(0);
    metrics::counter!(DRIFT_MEMBERS, "kind" => "missing").absolute(0);
    // Shadow mode's would-be writes (`flush::shadow`).
    metrics::counter!(LD_REQUESTS, "operation" => "update_membership", "status" => "shadowed")
        .absolute(0);
    metrics::counter!(VERIFY_CHECKS, "result" => "match").absolute(0);
}

/// The HELP text of every metric (the table above, in one line each), so a
/// scrape explains itself; `promtool check metrics` requires it
/// (`tests/it/metrics_exposition.rs`).
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        REQUESTS,
        "Requests to a receiver, by source and outcome (accepted, duplicate, ignored, unauthorized, invalid, too_large, unavailable, rate_limited)."
    );
    describe_counter!(
        CHANGES,
        "Membership changes by source and final outcome (accepted, stale, unchanged, superseded, cancelled, written, dead_lettered, skipped_without_key, skipped_invalid_key)."
    );
    describe_counter!(
        LD_REQUESTS,
        "LaunchDarkly request attempts by operation and HTTP status (or timeout, transport, not_sent; shadowed: shadow mode, audited and not sent)."
    );
    describe_histogram!(
        LD_REQUEST_SECONDS,
        Unit::Seconds,
        "Duration of LaunchDarkly requests, by operation."
    );
    describe_histogram!(
        FLUSH_LAG_SECONDS,
        Unit::Seconds,
        "Time from a link's due time to its acknowledged LaunchDarkly write."
    );
    describe_gauge!(
        DIRTY_BACKLOG,
        "Members of this replica's partitions still waiting for a LaunchDarkly write."
    );
    describe_gauge!(LEASES_HELD, "Partitions this replica holds and flushes.");
    describe_counter!(
        LINKS_BLOCKED,
        "Flush attempts stopped by a 401/403/404 from LaunchDarkly or a configuration gap, by reason."
    );
    describe_counter!(
        RECONCILE_RUNS,
        "Reconciles with LaunchDarkly's big-segment export, by result (ok, bad_export, launchdarkly_error, redis_error, not_reconcilable, shadow_mode)."
    );
    describe_counter!(
        RECONCILE_MEMBERS,
        "Members of finished reconciles, by kind (checked, missing, extra, repaired)."
    );
    describe_counter!(
        DRIFT_MEMBERS,
        "Members a reconcile or sampled verification found LaunchDarkly to differ on from what the bridge had recorded, by kind (missing, extra)."
    );
    describe_counter!(
        VERIFY_CHECKS,
        "Sampled verification's read-backs of single members, by result (match, mismatch, changed, not_found, error, timeout)."
    );
    describe_gauge!(
        LD_BUDGET_RPS,
        "LaunchDarkly requests per second this replica sent over the last 10 s, retries included."
    );
    describe_gauge!(
        LD_BUDGET_LIMIT_RPS,
        "The configured LaunchDarkly rate (launchdarkly.requests_per_second) shared by the live replicas."
    );
    describe_gauge!(
        LD_RATELIMIT_REMAINING,
        "The last X-Ratelimit-Route-Remaining LaunchDarkly reported to this replica."
    );
    describe_gauge!(
        OLDEST_DIRTY_AGE_SECONDS,
        Unit::Seconds,
        "Age of the oldest change of this replica's partitions not yet acknowledged by LaunchDarkly (0 if none)."
    );
    describe_histogram!(
        PROPAGATION_SECONDS,
        Unit::Seconds,
        "Time from a push's 2xx to LaunchDarkly's acknowledgement of its change (per batch, from its link's oldest unacknowledged change)."
    );
    describe_gauge!(
        LINKS_BLOCKED_NOW,
        "Links of this replica's partitions blocked now (401/403/404 from LaunchDarkly or a configuration gap)."
    );
    describe_gauge!(
        REDIS_UP,
        "1 when Redis answered the bridge's last health check, else 0."
    );
    describe_gauge!(
        PARTITIONS,
        "The configured number of partitions (redis.partitions)."
    );
    describe_histogram!(
        GROUP_COMMIT_SIZE,
        "Pushes applied in one script call by group commit (ingest.group_commit_wait_us)."
    );
}

/// The `outcome` label of `cohort_bridge_changes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOutcome {
    /// Newer than what was stored.
    Accepted,
    /// Older than what was stored: no effect.
    Stale,
    /// Accepted, and LaunchDarkly already reflects it.
    Unchanged,
    /// A pending change replaced before it was written.
    Superseded,
    /// Accepted, and it undid a pending change (a flip back).
    Cancelled,
    /// The member had no value at the source's `key_field`.
    SkippedWithoutKey,
    /// The member's key is too long or holds a control character.
    SkippedInvalidKey,
    /// LaunchDarkly acknowledged it.
    Written,
    /// LaunchDarkly refused it for good.
    DeadLettered,
}

impl ChangeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOutcome::Accepted => "accepted",
            ChangeOutcome::Stale => "stale",
            ChangeOutcome::Unchanged => "unchanged",
            ChangeOutcome::Superseded => "superseded",
            ChangeOutcome::Cancelled => "cancelled",
            ChangeOutcome::SkippedWithoutKey => "skipped_without_key",
            ChangeOutcome::SkippedInvalidKey => "skipped_invalid_key",
            ChangeOutcome::Written => "written",
            ChangeOutcome::DeadLettered => "dead_lettered",
        }
    }
}

/// The `outcome` label of `cohort_bridge_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Applied (2xx).
    Accepted,
    /// A delivery applied before: not applied again.
    Duplicate,
    /// Understood, with nothing to apply.
    Ignored,
    /// Refused 401 or 403.
    Unauthorized,
    /// Refused 413.
    TooLarge,
    /// Refused 503: Redis unavailable.
    Unavailable,
    /// Refused otherwise (400, 404, 408, a batch in progress).
    Invalid,
    /// Refused 429: a partner token past its `requests_per_second`.
    RateLimited,
}

impl RequestOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Accepted => "accepted",
            RequestOutcome::Duplicate => "duplicate",
            RequestOutcome::Ignored => "ignored",
            RequestOutcome::Unauthorized => "unauthorized",
            RequestOutcome::TooLarge => "too_large",
            RequestOutcome::Unavailable => "unavailable",
            RequestOutcome::Invalid => "invalid",
            RequestOutcome::RateLimited => "rate_limited",
        }
    }
}

/// Counts `n` changes of one outcome.
pub fn changes(source: &str, outcome: ChangeOutcome, n: u64) {
    if n > 0 {
        increment(
            &CHANGE_COUNTERS,
            source,
            outcome as usize,
            n,
            || metrics::counter!(CHANGES, "source" => source.to_string(), "outcome" => outcome.as_str()),
        );
    }
}

/// Per source, the counters of each outcome already registered by this
/// thread (indexed by the outcome's discriminant): a request then costs one
/// map look-up instead of building its labels and hashing its key into the
/// recorder's registry. Only once the recorder is installed ([`handle`]):
/// a handle taken before would stay a no-op.
type Cache = std::cell::RefCell<std::collections::HashMap<String, Vec<Option<metrics::Counter>>>>;

thread_local! {
    static CHANGE_COUNTERS: Cache = Cache::default();
    static REQUEST_COUNTERS: Cache = Cache::default();
}

/// Adds `n` to the counter of `source` and the outcome `index`, registered
/// by `register` the first time this thread counts it.
fn increment(
    cache: &'static std::thread::LocalKey<Cache>,
    source: &str,
    index: usize,
    n: u64,
    register: impl FnOnce() -> metrics::Counter,
) {
    if HANDLE.get().is_none() {
        register().increment(n);
        return;
    }
    cache.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(Some(counter)) = c.get(source).and_then(|v| v.get(index)) {
            counter.increment(n);
            return;
        }
        let counter = register();
        counter.increment(n);
        let slots = c.entry(source.to_string()).or_default();
        if slots.len() <= index {
            slots.resize(index + 1, None);
        }
        slots[index] = Some(counter);
    });
}

/// Records the size of one group commit (pushes in one script call).
pub fn group_commit_size(pushes: usize) {
    metrics::histogram!(GROUP_COMMIT_SIZE).record(pushes as f64);
}

/// Counts one request to a receiver.
pub fn request(source: &str, outcome: RequestOutcome) {
    increment(
        &REQUEST_COUNTERS,
        source,
        outcome as usize,
        1,
        || metrics::counter!(REQUESTS, "source" => source.to_string(), "outcome" => outcome.as_str()),
    );
}
