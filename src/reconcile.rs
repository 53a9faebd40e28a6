#![warn(missing_docs)]
//! Reconciling a link with what LaunchDarkly actually holds.
//!
//! A resync re-sends what the bridge tracks; a reconcile reads LaunchDarkly's
//! side back and repairs every difference, including members LaunchDarkly
//! has that the bridge never wrote:
//!
//! 1. start a big-segment export of the link's segment, poll its status
//!    until it completes, and download the file its `_links` point to;
//! 2. stream the file through the strict parser ([`ExportKeys`]) a chunk at
//!    a time into a staging set in Redis (TTL, the link's hash tag): the
//!    bridge never holds more than [`STAGE_CHUNK`] keys. A layout other than
//!    the assumed one fails here, before anything is marked;
//! 3. compare chunk by chunk in Redis (`reconcile.lua`): HSCAN the cohort's
//!    members against the staged set, then SPOP what is left (keys only
//!    LaunchDarkly has). Every difference becomes dirty: missing members are
//!    added, extra members removed, by the normal flusher under the normal
//!    rate limit;
//! 4. record the report (`last_reconciled_ms`, `checked`, `missing`,
//!    `extra`, `repaired`) and the metrics.
//!
//! Every LaunchDarkly call of the export goes through the same [`Throttle`]
//! as the flusher's writes (and honours the shared 429 pause). A reconcile
//! runs as its own task (the operator API's, the CLI's or the interval's),
//! never inside the flush loop, so other links keep flushing meanwhile.
//!
//! Between reconciles, [`sample`] reads random members back one at a time
//! within `flush.verify_share` of the rate and repairs what differs.

use crate::clock::now_ms;
use crate::config::Settings;
use crate::launchdarkly::{Attempt, ExportError, ExportKeys, ExportStatus, LdClient, Throttle};
use crate::metrics as m;
use crate::store::{
    LaunchDarklyAnswer, LinkId, MemberExplanation, ReconcileCounts, ReconcilePhase, Store,
    StoreError,
};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

pub mod sample;

/// Keys staged per Redis call, and members compared per script call.
pub const STAGE_CHUNK: usize = 1000;

/// The staging set outlives a stalled run by at most this long.
const STAGE_TTL_MS: u64 = 60 * 60 * 1000;

/// The export's status is read at most this often ...
const POLL_MIN: Duration = Duration::from_millis(100);
/// ... backing off to this ...
const POLL_MAX: Duration = Duration::from_secs(5);
/// ... for at most this long in all.
const EXPORT_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// Attempts of one export call (429, 5xx, timeouts) before the run fails.
const MAX_TRIES: u32 = 5;

/// Why a reconcile did not finish. Nothing was marked unless the failure
/// came after the comparison started (a Redis error midway: the marks made
/// so far stand, and are correct on their own).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// No such link in Redis.
    #[error("no link {0}")]
    UnknownLink(String),
    /// The link's destination is not configured.
    #[error("link {0} names a destination that is not configured")]
    UnknownDestination(String),
    /// The link's segment has not been created yet: nothing to compare.
    #[error("link {0} has no LaunchDarkly segment yet (it was never flushed)")]
    NoSegment(String),
    /// The link's destination is in shadow mode: nothing is read from LaunchDarkly.
    #[error("link {0} is in shadow mode (its destination's mode is \"shadow\"): nothing is read from or written to LaunchDarkly; set mode = \"live\" to reconcile it")]
    ShadowMode(String),
    /// LaunchDarkly answered an export call with an error.
    #[error("LaunchDarkly {step}: {detail}")]
    LaunchDarkly {
        /// Which call.
        step: &'static str,
        /// Status and message, or the transport error.
        detail: String,
    },
    /// The export's status or file is not laid out as assumed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The export did not complete in time.
    #[error("the export did not complete within {0:?}")]
    Timeout(Duration),
    /// Redis failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ReconcileError {
    /// The `result` label of `cohort_bridge_reconcile_runs_total`.
    pub fn label(&self) -> &'static str {
        match self {
            ReconcileError::Export(_) => "bad_export",
            ReconcileError::Store(_) => "redis_error",
            ReconcileError::ShadowMode(_) => "shadow_mode",
            ReconcileError::UnknownLink(_)
            | ReconcileError::UnknownDestination(_)
            | ReconcileError::NoSegment(_) => "not_reconcilable",
            ReconcileError::LaunchDarkly { .. } | ReconcileError::Timeout(_) => {
                "launchdarkly_error"
            }
        }
    }
}

/// A finished reconcile.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Outcome {
    /// The link.
    pub link: String,
    /// When the run finished (ms).
    pub last_reconciled_ms: i64,
    /// The counts.
    #[serde(flatten)]
    pub counts: ReconcileCounts,
    /// Records in LaunchDarkly's export file.
    pub exported: u64,
}

/// Runs reconciles: what every run needs.
#[derive(Debug, Clone)]
pub struct Reconciler {
    settings: Arc<Settings>,
    store: Store,
    ld: LdClient,
    throttle: Arc<Throttle>,
}

impl Reconciler {
    /// A reconciler sending through `throttle` (the flusher's, in a bridge).
    pub fn new(
        settings: Arc<Settings>,
        store: Store,
        ld: LdClient,
        throttle: Arc<Throttle>,
    ) -> Self {
        Reconciler {
            settings,
            store,
            ld,
            throttle,
        }
    }

    /// Reconciles one link; records the report (or the error) and metrics.
    pub async fn run(&self, link: &LinkId) -> Result<Outcome, ReconcileError> {
        let result = self.reconcile(link).await;
        let now = now_ms();
        match &result {
            Ok(o) => {
                metrics::counter!(m::RECONCILE_RUNS, "result" => "ok").increment(1);
                for (kind, n) in [
                    ("checked", o.counts.checked),
                    ("missing", o.counts.missing),
                    ("extra", o.counts.extra),
                    ("repaired", o.counts.repaired),
                ] {
                    metrics::counter!(m::RECONCILE_MEMBERS, "kind" => kind).increment(n);
                }
                tracing::info!(link = %link, checked = o.counts.checked, missing = o.counts.missing, extra = o.counts.extra, repaired = o.counts.repaired, drift_missing = o.counts.drift_missing, drift_extra = o.counts.drift_extra, "Reconciled with LaunchDarkly's export.");
            }
            Err(e) => {
                metrics::counter!(m::RECONCILE_RUNS, "result" => e.label()).increment(1);
                let _ = self
                    .store
                    .record_reconcile_error(link, now, &e.to_string())
                    .await;
                tracing::warn!(link = %link, error = %e, "Reconcile failed; nothing was changed by its export.");
            }
        }
        result
    }

    async fn reconcile(&self, link: &LinkId) -> Result<Outcome, ReconcileError> {
        let name = link.to_string();
        if self.settings.mode_of(&link.destination) == crate::config::Mode::Shadow {
            return Err(ReconcileError::ShadowMode(name));
        }
        let status = self
            .store
            .link_status(link)
            .await?
            .ok_or_else(|| ReconcileError::UnknownLink(name.clone()))?;
        let dest = self
            .settings
            .destinations
            .get(&link.destination)
            .ok_or_else(|| ReconcileError::UnknownDestination(name.clone()))?;
        let segment = status
            .meta
            .get("segment_key")
            .filter(|k| {
                !k.is_empty() && status.meta.get("created").map(String::as_str) == Some("1")
            })
            .ok_or_else(|| ReconcileError::NoSegment(name.clone()))?;
        let (project, env) = (dest.project.as_str(), dest.environment.as_str());

        let href = self.export(project, env, segment).await?;
        let run = uuid::Uuid::new_v4().simple().to_string();
        let staged = self.stage(link, &run, &href).await;
        let exported = match staged {
            Ok(n) => n,
            Err(e) => {
                let _ = self.store.drop_stage(link, &run).await;
                return Err(e);
            }
        };
        let compared = self.compare(link, &run).await;
        let _ = self.store.drop_stage(link, &run).await;
        let counts = compared?;
        let at = now_ms();
        self.store.record_reconcile(link, at, &counts).await?;
        for (kind, n) in [
            ("missing", counts.drift_missing),
            ("extra", counts.drift_extra),
        ] {
            metrics::counter!(m::DRIFT_MEMBERS, "kind" => kind).increment(n);
        }
        Ok(Outcome {
            link: name,
            last_reconciled_ms: at,
            counts,
            exported,
        })
    }

    /// Explains one member (`why`), with LaunchDarkly's own answer for it
    /// when `ask_launchdarkly` (one `GET …/contexts/{key}`, through the same
    /// throttle and shared 429 pause as every LaunchDarkly call; retried a
    /// few times on a 429, 5xx or timeout). `None`: no such link.
    pub async fn explain_member(
        &self,
        link: &LinkId,
        key: &str,
        ask_launchdarkly: bool,
    ) -> Result<Option<MemberExplanation>, StoreError> {
        let history = crate::ingest::apply_params(&self.settings, 0).history;
        let Some(mut e) = self
            .store
            .explain_member(link, key, history, now_ms())
            .await?
        else {
            return Ok(None);
        };
        if ask_launchdarkly {
            e.launchdarkly = Some(self.ask_member(link, key, &e).await?);
        }
        Ok(Some(e))
    }

    async fn ask_member(
        &self,
        link: &LinkId,
        key: &str,
        e: &MemberExplanation,
    ) -> Result<LaunchDarklyAnswer, StoreError> {
        let mut answer = LaunchDarklyAnswer {
            asked_at_ms: now_ms(),
            status: None,
            included: None,
            excluded: None,
            agrees_with_bridge: None,
            error: None,
        };
        let Some(dest) = self.settings.destinations.get(&link.destination) else {
            answer.error = Some(format!(
                "destination {:?} is no longer configured",
                link.destination
            ));
            return Ok(answer);
        };
        let status = self.store.link_status(link).await?;
        let segment = status.as_ref().and_then(|s| {
            s.meta
                .get("segment_key")
                .filter(|k| !k.is_empty() && s.meta.get("created").map(String::as_str) == Some("1"))
                .cloned()
        });
        let Some(segment) = segment else {
            answer.error = Some("the link has no segment in LaunchDarkly yet".into());
            return Ok(answer);
        };
        if self.settings.mode_of(&link.destination) == crate::config::Mode::Shadow {
            answer.error =
                Some("the link's destination is in shadow mode: LaunchDarkly is not asked".into());
            return Ok(answer);
        }
        let (project, env) = (dest.project.as_str(), dest.environment.as_str());
        let mut tries = 0;
        let (attempt, state) = loop {
            tries += 1;
            let (attempt, state) = self
                .send("get_member", || {
                    self.ld.member_state(project, env, &segment, key)
                })
                .await;
            if !retryable(&attempt) || tries >= MAX_TRIES {
                break (attempt, state);
            }
        };
        answer.asked_at_ms = now_ms();
        match (&attempt, state) {
            (Attempt::Replied(r), Some(s)) if (200..300).contains(&r.status) => {
                answer.status = Some(r.status);
                answer.included = Some(s.included);
                answer.excluded = Some(s.excluded);
                answer.agrees_with_bridge = match e.launchdarkly_per_bridge.as_deref() {
                    Some("in") => Some(s.included),
                    Some("out") => Some(!s.included),
                    _ => None,
                };
            }
            (Attempt::Replied(r), _) => {
                answer.status = Some(r.status);
                answer.error = Some(format!("LaunchDarkly answered {} {}", r.status, r.message));
            }
            _ => answer.error = Some(ld_error("get_member", &attempt).to_string()),
        }
        Ok(answer)
    }

    /// Waits for the throttle (and the shared 429 pause), then records the call.
    async fn send<T, F, Fut>(&self, operation: &'static str, f: F) -> (Attempt, T)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = (Attempt, T)>,
    {
        self.throttle
            .acquire_with(|| async { self.store.rate_pause().await.ok().flatten() })
            .await;
        self.throttle.before_send().await;
        let started = std::time::Instant::now();
        let (attempt, value) = f().await;
        metrics::histogram!(m::LD_REQUEST_SECONDS, "operation" => operation)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!(m::LD_REQUESTS, "operation" => operation, "status" => attempt.status_label())
            .increment(1);
        if let Attempt::Replied(r) = &attempt {
            if r.status == 429 {
                let until = r
                    .reset_ms
                    .or(r.retry_after_s.map(|s| now_ms() + (s as i64) * 1000))
                    .unwrap_or(
                        now_ms() + self.settings.launchdarkly.rate_limited_fallback_ms as i64,
                    );
                let until = self.throttle.pause_until(until);
                let _ = self.store.share_rate_pause(until).await;
            }
        }
        (attempt, value)
    }

    /// Starts the export and polls it; the file's link.
    async fn export(
        &self,
        project: &str,
        env: &str,
        segment: &str,
    ) -> Result<String, ReconcileError> {
        let mut id = None;
        let started = tokio::time::Instant::now();
        let mut tries = 0;
        while id.is_none() {
            tries += 1;
            let (attempt, got) = self
                .send("start_export", || {
                    self.ld.start_export(project, env, segment)
                })
                .await;
            match (&attempt, got) {
                (Attempt::Replied(r), Some(got)) if (200..300).contains(&r.status) => id = Some(got),
                (Attempt::Replied(r), None) if (200..300).contains(&r.status) => {
                    return Err(ExportError::Layout(format!(
                        "LaunchDarkly answered {} to the export's creation without a Location naming the export",
                        r.status
                    ))
                    .into())
                }
                (a, _) if retryable(a) && tries < MAX_TRIES => continue,
                (a, _) => return Err(ld_error("starting the export", a)),
            }
        }
        let id = id.unwrap_or_default();
        let mut wait = POLL_MIN;
        let mut failures = 0;
        loop {
            if started.elapsed() > EXPORT_DEADLINE {
                return Err(ReconcileError::Timeout(EXPORT_DEADLINE));
            }
            let (attempt, body) = self
                .send("get_export", || {
                    self.ld.get_export(project, env, segment, &id)
                })
                .await;
            match (&attempt, body) {
                (Attempt::Replied(r), Some(body)) if (200..300).contains(&r.status) => {
                    match ExportStatus::parse(&body)? {
                        ExportStatus::Completed { href } => return Ok(href),
                        ExportStatus::Running(_) => {}
                    }
                }
                (Attempt::Replied(r), None) if (200..300).contains(&r.status) => {
                    return Err(
                        ExportError::Layout("the export's status is not JSON".into()).into(),
                    )
                }
                (a, _) if retryable(a) && failures + 1 < MAX_TRIES => failures += 1,
                (a, _) => return Err(ld_error("reading the export's status", a)),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(POLL_MAX);
        }
    }

    /// Streams the file into the run's staging set; the records read.
    async fn stage(&self, link: &LinkId, run: &str, href: &str) -> Result<u64, ReconcileError> {
        let (attempt, resp) = self
            .send("download_export", || async {
                match self.ld.download_export(href).await {
                    Ok(resp) => {
                        let reply =
                            crate::launchdarkly::Reply::status_only(resp.status().as_u16(), "");
                        (Attempt::Replied(reply), Some(resp))
                    }
                    Err(a) => (a, None),
                }
            })
            .await;
        let Some(resp) = resp else {
            if let Attempt::Replied(r) = &attempt {
                if r.message.starts_with("unexpected export layout") {
                    return Err(ExportError::Layout(r.message.clone()).into());
                }
            }
            return Err(ld_error("downloading the export file", &attempt));
        };
        let mut parser = ExportKeys::default();
        let mut keys = Vec::with_capacity(STAGE_CHUNK);
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ReconcileError::LaunchDarkly {
                step: "downloading the export file",
                detail: e.to_string(),
            })?;
            parser.feed(&chunk, &mut keys)?;
            if keys.len() >= STAGE_CHUNK {
                self.store
                    .stage_export_keys(link, run, &keys, STAGE_TTL_MS)
                    .await?;
                keys.clear();
            }
        }
        parser.finish(&mut keys)?;
        self.store
            .stage_export_keys(link, run, &keys, STAGE_TTL_MS)
            .await?;
        Ok(parser.records())
    }

    /// Both phases of the comparison, a chunk per script call.
    async fn compare(&self, link: &LinkId, run: &str) -> Result<ReconcileCounts, ReconcileError> {
        let mut total = ReconcileCounts::default();
        for phase in [ReconcilePhase::Tracked, ReconcilePhase::Untracked] {
            let mut cursor = "0".to_string();
            loop {
                let Some((next, counts)) = self
                    .store
                    .reconcile_chunk(link, run, phase, &cursor, STAGE_CHUNK, now_ms())
                    .await?
                else {
                    return Err(ReconcileError::UnknownLink(link.to_string()));
                };
                total += counts;
                if next == "0" {
                    break;
                }
                cursor = next;
                tokio::task::yield_now().await;
            }
        }
        Ok(total)
    }
}

/// Worth another try: a 429 (the throttle now holds off), a 5xx, a timeout.
fn retryable(a: &Attempt) -> bool {
    match a {
        Attempt::Replied(r) => r.status == 429 || r.status >= 500,
        Attempt::TimedOut | Attempt::Transport(_) | Attempt::NotSent(_) => true,
    }
}

fn ld_error(step: &'static str, a: &Attempt) -> ReconcileError {
    let detail = match a {
        Attempt::Replied(r) => format!("{} {}", r.status, r.message),
        Attempt::TimedOut => "timed out".into(),
        Attempt::Transport(e) | Attempt::NotSent(e) => e.clone(),
    };
    ReconcileError::LaunchDarkly { step, detail }
}
