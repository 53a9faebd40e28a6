//! Shadow mode (`launchdarkly.mode` or a destination's `mode` = `"shadow"`):
//! a link goes through the flusher like any other (its partition's lease,
//! the due set, the claim script), but where a live flush would call
//! LaunchDarkly, this records the write it would have made in the audit
//! trail (status `shadowed`) and counts it in
//! `cohort_bridge_ld_requests_total{status="shadowed"}`. No request of any
//! kind leaves: no segment creation, no membership write, no read.
//!
//! Nothing is acknowledged, so every change stays dirty and keeps coalescing
//! in Redis. The shadow claim does not mark members unknown (nothing is in
//! doubt when nothing was sent), so a member that flips back during the
//! shadow period still leaves the dirty set and costs LaunchDarkly nothing
//! once the destination goes live.
//!
//! Pacing: a shadow link is made due again `flush.shadow_interval_ms` later
//! (and the time is kept in its meta as `shadow_until_ms`, because a push
//! pulls a link's due time forward). Its backlog never shrinks, so at the
//! normal `max_delay_ms` cadence every push would re-audit the same backlog
//! and fill the audit trail with near-duplicates. A pass is one Redis script
//! and one audit write, so it never holds a partition from live links.
//!
//! Going live: at its first lease of each partition, a live flusher makes
//! every link parked by shadow mode due at once (`unpark`), so the whole
//! backlog goes out as one coalesced series of batches of
//! `max_keys_per_request`.

use super::link::Flushed;
use super::segment::{claim_key, segment_identity};
use super::FlushContext;
use crate::clock::now_ms;
use crate::config::{Destination, Mode};
use crate::metrics as m;
use crate::store::{AuditEntry, Claim, LinkId, Partition};
use std::collections::HashMap;
use std::time::Duration;

/// The link meta field holding when a shadow link's next pass is due (ms).
pub(super) const SHADOW_UNTIL: &str = "shadow_until_ms";
/// The link meta field recording that the shadowed segment creation was audited.
const SHADOW_CREATE_AUDITED: &str = "shadow_create_ms";

/// One shadow pass of a link: audits the write a live flush would send now.
pub(super) async fn flush(
    ctx: &FlushContext,
    partition: Partition,
    link: &LinkId,
    dest: &Destination,
    meta: &HashMap<String, String>,
) -> anyhow::Result<Flushed> {
    let now = now_ms();
    let until = meta
        .get(SHADOW_UNTIL)
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    if until > now {
        // A push pulled the link forward; its next pass stays where it was.
        ctx.store.reschedule(partition, link, until).await?;
        return Ok(Flushed::Deferred);
    }
    let settings = &ctx.settings;
    let margin = settings.request_timeout() + Duration::from_millis(500);
    if !ctx.leases.valid_for(partition, margin) {
        return Ok(Flushed::Deferred);
    }
    let created = meta.get("created").map(String::as_str) == Some("1");
    let segment = match meta.get("segment_key").filter(|k| created && !k.is_empty()) {
        Some(key) => key.clone(),
        None => {
            // The key is claimed in Redis as a live flush would, so a key
            // conflict shows up during the trial, not on the day it goes live.
            let (key, _) = segment_identity(ctx, partition, link, dest).await?;
            if let Some(done) = claim_key(ctx, partition, link, dest, &key).await? {
                return Ok(done);
            }
            key
        }
    };
    let max = settings.launchdarkly.max_keys_per_request;
    let next = now.saturating_add(settings.flush.shadow_interval_ms as i64);
    let members = match ctx
        .store
        .shadow_claim(partition, ctx.leases.token(), link, max, next)
        .await?
    {
        Claim::LeaseLost => return Ok(Flushed::Deferred),
        Claim::Empty => return Ok(Flushed::Shadowed(0)),
        Claim::Members(m) => m,
    };
    let next_text = next.to_string();
    ctx.store
        .set_link_meta(partition, link, &[(SHADOW_UNTIL, &next_text)])
        .await?;
    if members.is_empty() {
        return Ok(Flushed::Shadowed(0));
    }
    let pending = ctx.store.dirty_len(partition, link).await?;
    if !created && meta.get(SHADOW_CREATE_AUDITED).is_none_or(|v| v.is_empty()) {
        record(ctx, link, "create_segment", &segment, &[], None).await;
        ctx.store
            .set_link_meta(
                partition,
                link,
                &[(SHADOW_CREATE_AUDITED, &now.to_string())],
            )
            .await?;
    }
    let requests = pending.div_ceil(max.max(1) as u64);
    let note = format!(
        "shadow mode: not sent; {pending} members pending in all, {requests} request(s) of up to {max} when live"
    );
    record(
        ctx,
        link,
        "update_membership",
        &segment,
        &members,
        Some(note),
    )
    .await;
    tracing::debug!(link = %link, segment = %segment, keys = members.len(), pending, "Shadow mode: write audited, not sent.");
    Ok(Flushed::Shadowed(members.len()))
}

/// Audits and counts one write that was not sent.
async fn record(
    ctx: &FlushContext,
    link: &LinkId,
    operation: &'static str,
    segment: &str,
    members: &[(String, bool)],
    message: Option<String>,
) {
    metrics::counter!(m::LD_REQUESTS, "operation" => operation, "status" => "shadowed")
        .increment(1);
    let cap = ctx.settings.flush.audit_entries_per_link;
    if cap == 0 {
        return;
    }
    let mut entry = AuditEntry::for_batch(now_ms(), operation, segment, members);
    entry.status = "shadowed".into();
    entry.message = message;
    if let Err(e) = ctx.store.record_audit(link, &entry, cap).await {
        tracing::warn!(link = %link, error = %e, "Could not record a shadowed write in the audit trail.");
    }
}

/// Makes every live link of `partition` that shadow mode parked due now, so
/// the backlog of the shadow period is sent at once; returns how many.
pub(super) async fn unpark(ctx: &FlushContext, partition: Partition) -> anyhow::Result<usize> {
    let mut n = 0;
    for link in ctx.store.links_in(partition).await? {
        if ctx.settings.mode_of(&link.destination) != Mode::Live {
            continue;
        }
        let meta = ctx.store.link_meta(partition, &link).await?;
        if meta.get(SHADOW_UNTIL).is_none_or(|v| v.is_empty()) {
            continue;
        }
        ctx.store.reschedule(partition, &link, now_ms()).await?;
        ctx.store
            .set_link_meta(
                partition,
                &link,
                &[(SHADOW_UNTIL, ""), (SHADOW_CREATE_AUDITED, "")],
            )
            .await?;
        n += 1;
    }
    Ok(n)
}
