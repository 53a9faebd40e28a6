//! One LaunchDarkly request of a flush and what its answer leads to: the
//! token of the deployment's rate, the lease check right before the request
//! leaves, the request's metrics and audit entry, and the bookkeeping of a
//! request that was not sent or failed (retry time, block, shared 429 pause).
//! Used by [`super::link`] (membership writes) and [`super::segment`]
//! (creation, rename, deletion).

use super::backoff::{full_jitter, pause_jitter};
use super::link::Flushed;
use super::FlushContext;
use crate::clock::now_ms;
use crate::launchdarkly::{classify, Attempt, Operation, Verdict};
use crate::metrics as m;
use crate::store::{LinkId, Partition};
use std::time::{Duration, Instant};

/// Sends one request after the throttle allows it, recording metrics;
/// also returns when the token was granted (ms, for the phase log).
///
/// `None`: not sent, because after the waits the partition's lease no longer
/// outlives the request timeout (or the partition is being given up). The
/// lease is checked only then, right before the request leaves, and the
/// partition is not released while the request may still land.
pub(super) async fn send<F, Fut>(
    ctx: &FlushContext,
    partition: Partition,
    op: Operation,
    f: F,
) -> Option<(Attempt, Verdict, i64)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Attempt>,
{
    send_holding(ctx, partition, op, None, f).await
}

/// Waits for a token of the deployment's rate, honouring the shared pause
/// (read before the wait and again once the token is in hand); returns
/// when it was granted (ms).
pub(super) async fn take_token(ctx: &FlushContext, link: &LinkId) -> i64 {
    tracing::debug!(target: "cohort_bridge::flush::phases", link = %link, "Waiting for a LaunchDarkly token.");
    ctx.throttle
        .acquire_with(|| async { ctx.store.rate_pause().await.ok().flatten() })
        .await;
    now_ms()
}

/// [`send`]; `held`: a token was already taken (at that ms) for this
/// request, by [`take_token`], so none is waited for here.
pub(super) async fn send_holding<F, Fut>(
    ctx: &FlushContext,
    partition: Partition,
    op: Operation,
    held: Option<i64>,
    f: F,
) -> Option<(Attempt, Verdict, i64)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Attempt>,
{
    let token_at_ms = match held {
        Some(at) => at,
        None => {
            // The shared pause is read before the wait and again once the token is in hand.
            ctx.throttle
                .acquire_with(|| async { ctx.store.rate_pause().await.ok().flatten() })
                .await;
            now_ms()
        }
    };
    // Sends a period apart, whatever each took since its token.
    ctx.throttle.before_send().await;
    let mut guard = ctx.leases.begin_request(partition)?;
    let started = Instant::now();
    ctx.observations.request_sent();
    let attempt = f().await;
    let label = match op {
        Operation::CreateSegment => "create_segment",
        Operation::UpdateMembership => "update_membership",
        Operation::GetSegment => "get_segment",
        Operation::DeleteSegment => "delete_segment",
        Operation::RenameSegment => "rename_segment",
    };
    metrics::histogram!(m::LD_REQUEST_SECONDS, "operation" => label)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(m::LD_REQUESTS, "operation" => label, "status" => attempt.status_label())
        .increment(1);
    let now = now_ms();
    // Slow down before a 429: nothing left in this window means wait for its reset.
    if let Attempt::Replied(r) = &attempt {
        if let Some(rem) = r.route_remaining {
            metrics::gauge!(m::LD_RATELIMIT_REMAINING).set(rem as f64);
        }
        if let (Some(rem), Some(reset)) = (r.remaining, r.reset_ms) {
            if rem <= 0 && reset > now {
                ctx.throttle.pause_until(reset);
            }
        }
    }
    let verdict = classify(op, &attempt, now);
    if !matches!(verdict, Verdict::Retry { in_doubt: true, .. }) {
        guard.settled();
    }
    Some((attempt, verdict, token_at_ms))
}

/// Records one write in the link's audit trail (`flush.audit_entries_per_link`);
/// a failure to record is logged, never fails the flush.
pub(super) async fn audit(
    ctx: &FlushContext,
    link: &LinkId,
    op: Operation,
    segment: &str,
    members: &[(String, bool)],
    attempt: &Attempt,
) {
    let cap = ctx.settings.flush.audit_entries_per_link;
    if cap == 0 {
        return;
    }
    let label = match op {
        Operation::CreateSegment => "create_segment",
        Operation::RenameSegment => "rename",
        _ => "update_membership",
    };
    let mut entry = crate::store::AuditEntry::for_batch(now_ms(), label, segment, members);
    entry.status = attempt.status_label();
    match attempt {
        Attempt::Replied(r) => {
            entry.request_id = r.request_id.clone();
            if !(200..300).contains(&r.status) && !r.message.is_empty() {
                entry.message = Some(r.message.clone());
            }
        }
        Attempt::TimedOut => entry.message = Some("no answer within the request timeout".into()),
        Attempt::Transport(e) | Attempt::NotSent(e) => entry.message = Some(e.clone()),
    }
    if let Err(e) = ctx.store.record_audit(link, &entry, cap).await {
        tracing::warn!(link = %link, error = %e, "Could not record a LaunchDarkly write in the audit trail.");
    }
}

/// A request was not sent because the lease would not outlive it: the
/// claimed members stay unknown and dirty; make the link due again now
/// (whoever holds the partition next sends them) instead of at the claim's
/// hold time.
pub(super) async fn abandon(
    ctx: &FlushContext,
    partition: Partition,
    link: &LinkId,
) -> anyhow::Result<Flushed> {
    tracing::info!(link = %link, partition, "Lease too short for another request (or the partition is being handed over); the flush stops before sending.");
    ctx.store.reschedule(partition, link, now_ms()).await?;
    Ok(Flushed::Deferred)
}

/// Handles every verdict but success: schedules the retry and records why.
pub(super) async fn defer(
    ctx: &FlushContext,
    partition: Partition,
    link: &LinkId,
    verdict: Verdict,
) -> anyhow::Result<Flushed> {
    let now = now_ms();
    let lcfg = &ctx.settings.launchdarkly;
    let attempt = ctx.bump_attempts(link);
    let (error, blocked, retry_at) = match verdict {
        Verdict::RateLimited { until_ms } => {
            let until = until_ms
                .unwrap_or(now.saturating_add(lcfg.rate_limited_fallback_ms as i64))
                .saturating_add(pause_jitter().as_millis() as i64);
            // Clamped to launchdarkly.max_pause_seconds before it is shared.
            let until = ctx.throttle.pause_until(until);
            if let Err(e) = ctx.store.share_rate_pause(until).await {
                tracing::warn!(error = %e, "Could not share a rate-limit pause through Redis.");
            }
            tracing::info!(link = %link, resume_in_ms = until - now, "LaunchDarkly rate limit: every writer holds off.");
            ("429 rate limited".to_string(), None, until)
        }
        Verdict::Retry { reason, in_doubt } => {
            let mut delay = full_jitter(
                Duration::from_millis(lcfg.backoff_base_ms),
                Duration::from_millis(lcfg.backoff_max_ms),
                attempt,
            );
            // LaunchDarkly may still apply a request we gave up on; let it land
            // before anything newer is sent for this link, so the newer write wins.
            if in_doubt {
                delay = delay.max(ctx.settings.request_timeout());
            }
            // One warning per failing stretch (and at attempts 2, 4, 8, …), not one per retry.
            let retry_in_ms = delay.as_millis() as u64;
            if (attempt + 1).is_power_of_two() {
                tracing::warn!(link = %link, %reason, failures = attempt + 1, retry_in_ms, "LaunchDarkly write failed; will retry.");
            } else {
                tracing::debug!(link = %link, %reason, failures = attempt + 1, retry_in_ms, "LaunchDarkly write failed again; will retry.");
            }
            (reason, None, now + delay.as_millis() as i64)
        }
        Verdict::Block { reason } => {
            tracing::error!(link = %link, %reason, "Link blocked; its changes are kept and retried later.");
            metrics::counter!(m::LINKS_BLOCKED, "reason" => reason.split(' ').next().unwrap_or("").to_string()).increment(1);
            (
                reason.clone(),
                Some(reason),
                now + lcfg.blocked_retry_ms as i64,
            )
        }
        Verdict::Rejected { message } => {
            let reason = format!("segment creation rejected: {message}");
            tracing::error!(link = %link, %reason, "Link blocked.");
            (
                reason.clone(),
                Some(reason),
                now + lcfg.blocked_retry_ms as i64,
            )
        }
        Verdict::Success | Verdict::AlreadyExists => unreachable!("success is not deferred"),
    };
    ctx.store
        .record_failure(partition, link, &error, blocked.as_deref(), retry_at)
        .await?;
    Ok(Flushed::Deferred)
}

/// Blocks the link with `reason` (its first word is the metric's label):
/// nothing is written; its changes wait.
pub(super) async fn block(
    ctx: &FlushContext,
    partition: Partition,
    link: &LinkId,
    reason: String,
) -> anyhow::Result<Flushed> {
    defer(ctx, partition, link, Verdict::Block { reason }).await
}
