//! The one ingest path: what happens to a verified, parsed request.
//!
//! The native receivers and the partner route (`http`) hand their parsed
//! request to [`Ingest::apply`]; the flusher's snapshot resumption calls
//! [`finalize_snapshot`]. Here, and only here:
//!
//! - the apply parameters are built from the settings ([`apply_params`]);
//! - a Segment batch signed over element 0 is claimed once (`batches = "first-event"`);
//! - cohorts are armed for a replace, then each push is applied on the
//!   connection that suits its size ([`Ingest::connection_for`]); a request
//!   of one small push (at most 64 changes, not a snapshot page) goes through
//!   group commit (`store::GroupCommit`, `ingest.group_commit_wait_us`):
//!   pushes arriving together share one script call, each answered with its
//!   own outcome once its changes are in Redis. Requests of several pushes,
//!   snapshot pages and the Segment first-event claim keep one call each;
//! - a snapshot page that completes its session has its finalization driven
//!   to the end (`store::snapshot`), and is reported in the [`Summary`];
//! - every change's outcome is counted (`cohort_bridge_changes_total`);
//! - the flusher is woken when a link is due at once.
//!
//! Nothing here knows HTTP: a refusal is an [`IngestError`] that the caller
//! answers in its own style.

use crate::config::{Settings, SourceKind};
use crate::metrics::{self as m, ChangeOutcome};
use crate::sources::{self, Delivery, ParseError};
use crate::store::snapshot::Finalized;
use crate::store::{ApplyOutcome, ApplyParams, BatchClaim, GroupCommit, Store, StoreError};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The 200 answer: what happened to the push's changes.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Summary {
    /// Changes newer than what was stored for their member.
    pub accepted: u64,
    /// Changes older than what was stored: no effect.
    pub stale: u64,
    /// Accepted changes LaunchDarkly already reflects: nothing to write.
    pub unchanged: u64,
    /// Earlier pending changes this push replaced before they were written.
    pub superseded: u64,
    /// Accepted changes that undid a pending change (a flip back).
    pub cancelled: u64,
    /// Members without the source's `key_field`.
    pub skipped_without_key: u64,
    /// Members whose key is too long or holds a control character.
    pub skipped_invalid_key: u64,
    /// The delivery was applied before; nothing was applied again.
    pub duplicate: bool,
    /// Only when the push was understood but carries nothing (or not
    /// everything) to apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
    /// Present when the push was a page of a full snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotSummary>,
    /// Links of the pushed cohorts retired with `on_push = "refuse"`, as
    /// `"<link> (<state>)"`: they got nothing; the cohorts' other links got the push.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused_links: Vec<String>,
    /// Links retired with `on_push = "ignore"`: they got nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored_links: Vec<String>,
    /// Some push reached a link (or the delivery had none to reject).
    #[serde(skip)]
    taken: bool,
}

/// What a snapshot page did: `complete` once every page of its session has
/// arrived; `removed` members were in no page and are now desired out.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct SnapshotSummary {
    pub session: String,
    pub page: u32,
    pub total_pages: u32,
    pub complete: bool,
    pub removed: u64,
}

impl Summary {
    fn add(&mut self, o: &ApplyOutcome) {
        self.accepted += o.accepted;
        self.stale += o.stale;
        self.unchanged += o.unchanged;
        self.superseded += o.superseded;
        self.cancelled += o.cancelled;
        self.duplicate |= o.duplicate;
        self.taken |= !o.rejected;
        self.refused_links.extend(o.refused.iter().cloned());
        self.ignored_links.extend(o.ignored.iter().cloned());
    }

    /// The 409 of a delivery that no link took while some refused it: a
    /// push is refused only when every one of its links is retired and none
    /// accepts; the links of a cohort that still accept get it (per link).
    fn refusal(&self) -> Option<IngestError> {
        (!self.taken && !self.refused_links.is_empty()).then(|| IngestError::Retired {
            links: self.refused_links.join(", "),
        })
    }

    fn duplicate() -> Summary {
        Summary {
            duplicate: true,
            ..Summary::default()
        }
    }
}

/// Why a request was not applied; both are worth retrying later.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Another request is applying the batch with this element 0.
    #[error("a batch with this element 0 is being applied by another request")]
    BatchInProgress,
    #[error("the store is unavailable: {0}")]
    Unavailable(#[from] StoreError),
    /// Every link of the pushed cohorts is retired, and some refuse pushes
    /// (`on_push = "refuse"`): nothing was applied.
    #[error("retired link {links} refuses pushes; nothing was applied")]
    Retired {
        /// The refusing links, comma separated.
        links: String,
    },
}

/// `batches = "first-event"`: a Segment batch whose signature covers only
/// element 0 is applied only if that element 0 was never applied.
#[derive(Debug, Clone)]
pub struct FirstEvent {
    /// Element 0's `messageId`.
    pub message_id: String,
    /// Element 0's cohort, when element 0 is an audience event (its push
    /// then carries the same delivery id).
    pub cohort: Option<String>,
}

/// The parameters of every apply at `now_ms`, from the settings.
pub fn apply_params(settings: &Settings, now_ms: i64) -> ApplyParams {
    ApplyParams {
        now_ms,
        dedupe_ttl_ms: settings.redis.dedupe_ttl_seconds * 1000,
        max_delay_ms: settings.flush.max_delay_ms,
        batch: settings.launchdarkly.max_keys_per_request,
        history: crate::store::HistoryParams {
            entries: settings.flush.history_entries_per_cohort,
            keys: settings.flush.history_keys_per_entry,
            max_age_ms: settings.flush.history_max_age_seconds.saturating_mul(1000),
        },
    }
}

/// Counts the outcome of one apply, or of one finalization's removals.
fn count(source: &str, o: &ApplyOutcome) {
    m::changes(source, ChangeOutcome::Accepted, o.accepted);
    m::changes(source, ChangeOutcome::Stale, o.stale);
    m::changes(source, ChangeOutcome::Unchanged, o.unchanged);
    m::changes(source, ChangeOutcome::Superseded, o.superseded);
    m::changes(source, ChangeOutcome::Cancelled, o.cancelled);
}

/// How much of a snapshot finalization one call works.
#[derive(Debug, Clone, Copy)]
pub enum Finalize {
    /// All of it, now: the receiver of the page that completed the session.
    ToTheEnd,
    /// At most `chunks` chunks, and only if nobody has worked on it for
    /// `orphaned_after` (its receiver died): the flusher's resumption.
    Resume {
        chunks: usize,
        orphaned_after: Duration,
    },
}

/// Works a pending snapshot finalization of `source`'s `cohort` (members in
/// no page become desired out) and counts the removals; see `store::snapshot`.
pub async fn finalize_snapshot(
    store: &Store,
    source: &str,
    destinations: &[String],
    cohort: &str,
    params: ApplyParams,
    how: Finalize,
) -> Result<Finalized, StoreError> {
    let (max_chunks, orphaned_after) = match how {
        Finalize::ToTheEnd => (None, None),
        Finalize::Resume {
            chunks,
            orphaned_after,
        } => (Some(chunks), Some(orphaned_after)),
    };
    let fin = store
        .finalize_snapshot(
            source,
            destinations,
            cohort,
            params,
            max_chunks,
            orphaned_after,
        )
        .await?;
    count(source, &fin.outcome);
    if fin.abandoned {
        tracing::warn!(%source, %cohort, "Snapshot staging expired before its finalization ended; no further members were removed.");
    }
    Ok(fin)
}

/// The ingest path of one HTTP worker.
pub struct Ingest {
    settings: Arc<Settings>,
    /// Redis through the connection the runtime's I/O threads drive.
    store: Store,
    /// Redis through this worker's own connection, driven on the worker's
    /// thread: no hand-off between threads per round trip.
    worker_store: Store,
    /// Wakes the flusher when a link is due at once.
    wake: Arc<Notify>,
    /// Group commit on the worker's connection (`None`: `ingest.group_commit_wait_us = 0`).
    group: Option<GroupCommit>,
}

/// Pushes of at most this many changes use the worker's own connection.
const SMALL_PUSH: usize = 64;

impl Ingest {
    pub fn new(
        settings: Arc<Settings>,
        store: Store,
        worker_store: Store,
        wake: Arc<Notify>,
    ) -> Ingest {
        let cfg = &settings.ingest;
        let group = (cfg.group_commit_wait_us > 0).then(|| {
            GroupCommit::new(
                worker_store.clone(),
                Duration::from_micros(cfg.group_commit_wait_us),
                cfg.group_commit_max,
            )
        });
        Ingest {
            settings,
            store,
            worker_store,
            wake,
            group,
        }
    }

    /// Applies one push: through group commit when it is the request's only
    /// push, small and not a snapshot page; else in a call of its own.
    async fn apply_push(
        &self,
        source: &str,
        destinations: &[String],
        push: &sources::Push,
        pushes: usize,
        params: ApplyParams,
    ) -> Result<ApplyOutcome, StoreError> {
        let store = self.connection_for(push.changes.len());
        match &self.group {
            Some(group)
                if pushes == 1 && push.snapshot.is_none() && push.changes.len() <= SMALL_PUSH =>
            {
                group
                    .apply(store.apply_call(source, destinations, push, params))
                    .await
            }
            _ => store.apply(source, destinations, push, params).await,
        }
    }

    /// The connection that applies a push of `changes` changes. Small pushes
    /// are bound by the per-request round trip, which the worker's own
    /// connection makes cheapest (measured: one-member pushes +12%); big ones
    /// by encoding and sending thousands of arguments, which the runtime's
    /// I/O threads take off the worker (measured: 1,000-member pushes 10%
    /// slower on the worker's connection). See the README's Performance section.
    pub fn connection_for(&self, changes: usize) -> &Store {
        if changes <= SMALL_PUSH {
            &self.worker_store
        } else {
            &self.store
        }
    }

    /// The checks every parsed request passes before it is applied, whatever
    /// its route: nothing of a request with a version more than
    /// `server.max_future_skew_seconds` ahead is stored (a 400), and member
    /// keys LaunchDarkly cannot take are skipped and counted.
    pub fn admit(
        &self,
        kind: SourceKind,
        delivery: &mut Delivery,
        now_ms: i64,
    ) -> Result<(), ParseError> {
        let server = &self.settings.server;
        let skew_ms = (server.max_future_skew_seconds as i64).saturating_mul(1000);
        sources::check_future_versions(kind, delivery, now_ms, skew_ms)?;
        sources::drop_invalid_keys(delivery, server.max_key_bytes);
        Ok(())
    }

    /// Applies a parsed request of `source` to Redis for `destinations`:
    /// on `Ok`, every accepted change is stored. `first_event`: see [`FirstEvent`].
    pub async fn apply(
        &self,
        source: &str,
        destinations: &[String],
        parsed: &Delivery,
        first_event: Option<&FirstEvent>,
        now_ms: i64,
    ) -> Result<Summary, IngestError> {
        let Some(first) = first_event else {
            let summary = self.apply_all(source, destinations, parsed, now_ms).await?;
            return match summary.refusal() {
                Some(e) => Err(e),
                None => Ok(summary),
            };
        };
        let store = &self.store;
        let id = first.message_id.as_str();
        let ttl = self.settings.redis.dedupe_ttl_seconds * 1000;
        match store.claim_batch(source, id).await? {
            BatchClaim::Done => return Ok(Summary::duplicate()),
            BatchClaim::InProgress => return Err(IngestError::BatchInProgress),
            BatchClaim::Retry => {}
            BatchClaim::New => {
                let seen = match &first.cohort {
                    Some(c) => store.delivery_seen(source, c, id).await,
                    None => Ok(false),
                };
                match seen {
                    Ok(true) => {
                        store.finish_batch(source, id, true, ttl).await?;
                        return Ok(Summary::duplicate());
                    }
                    Ok(false) => {}
                    Err(e) => {
                        let _ = store.finish_batch(source, id, false, ttl).await;
                        return Err(e.into());
                    }
                }
            }
        }
        let result = self
            .apply_all(source, destinations, parsed, now_ms)
            .await
            .map_err(IngestError::from)
            .and_then(|summary| match summary.refusal() {
                Some(e) => Err(e),
                None => Ok(summary),
            });
        // A refused batch is not done: it may be sent again after unfreeze.
        let marked = store.finish_batch(source, id, result.is_ok(), ttl).await;
        result.and_then(|summary| marked.map(|()| summary).map_err(IngestError::from))
    }

    /// Arms, applies every push, finalizes completed snapshots, counts, wakes.
    async fn apply_all(
        &self,
        source: &str,
        destinations: &[String],
        parsed: &Delivery,
        now_ms: i64,
    ) -> Result<Summary, StoreError> {
        let params = apply_params(&self.settings, now_ms);
        let mut summary = Summary {
            skipped_without_key: parsed.skipped_without_key,
            skipped_invalid_key: parsed.skipped_invalid_key,
            note: parsed.note,
            taken: parsed.pushes.is_empty(),
            ..Summary::default()
        };
        for (cohort, name) in &parsed.arm_snapshot {
            self.store
                .arm_snapshot(source, cohort, name.as_deref(), now_ms)
                .await?;
            tracing::info!(%source, cohort = ?cohort, "Cohort armed: its next full sync replaces its membership.");
        }
        // The flusher polls every `flush.poll_interval_ms`; wake it only when a
        // link is due at once (a full batch, a snapshot's removals).
        let mut wake = false;
        for push in &parsed.pushes {
            let out = self
                .apply_push(source, destinations, push, parsed.pushes.len(), params)
                .await?;
            if !out.duplicate {
                count(source, &out);
            }
            summary.add(&out);
            wake |= out.due_now;
            if let Some(snap) = &push.snapshot {
                wake = true;
                // Also after a duplicate: a retried last page resumes a finalization cut short.
                let fin = finalize_snapshot(
                    &self.store,
                    source,
                    destinations,
                    &push.cohort_id,
                    params,
                    Finalize::ToTheEnd,
                )
                .await?;
                let complete = self
                    .store
                    .snapshot_complete(source, &push.cohort_id, &snap.session)
                    .await?;
                // A Heap sync is only a snapshot after a drain armed its segment.
                if complete.is_some() || !snap.armed_only {
                    summary.snapshot = Some(SnapshotSummary {
                        session: snap.session.clone(),
                        page: snap.page,
                        total_pages: snap.total_pages,
                        complete: complete.unwrap_or(false),
                        removed: fin.outcome.accepted,
                    });
                }
            }
        }
        if !summary.duplicate {
            m::changes(
                source,
                ChangeOutcome::SkippedWithoutKey,
                summary.skipped_without_key,
            );
            m::changes(
                source,
                ChangeOutcome::SkippedInvalidKey,
                summary.skipped_invalid_key,
            );
        }
        if wake {
            self.wake.notify_one();
        }
        if !summary.taken && summary.refused_links.is_empty() {
            tracing::debug!(%source, links = summary.ignored_links.len(), "Push ignored: its links are retired.");
            summary.note = Some("ignored: the cohort's links are retired");
        }
        Ok(summary)
    }
}
