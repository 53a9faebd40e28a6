//! Flushing one link: make sure its segment exists ([`super::segment`]),
//! claim a batch of dirty members, send it, and record the answer; a link
//! draining a backlog goes on with its next full batch in the same task.

use super::request::{abandon, audit, defer, send_holding, take_token};
use super::segment::{ensure_segment, rename, retire_delete};
use super::FlushContext;
use crate::clock::now_ms;
use crate::config::{Mode, Source};
use crate::launchdarkly::{MembershipUpdate, Operation, Verdict};
use crate::metrics as m;
use crate::store::{Ack, AckedBatch, Claim, LinkId, Partition};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How one flush of a link ended (for the loop's bookkeeping and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flushed {
    /// Members written (0 if nothing was dirty).
    Written(usize),
    /// Stopped early; the link stays due at the recorded retry time.
    Deferred,
    /// Shadow mode: members of the write that would have been sent (audited, not sent).
    Shadowed(usize),
}

/// Flushes one batch of one link.
pub async fn flush(
    ctx: Arc<FlushContext>,
    partition: Partition,
    link: LinkId,
    due_at_ms: i64,
) -> anyhow::Result<Flushed> {
    let started_ms = now_ms();
    let settings = &ctx.settings;
    let configured = settings.source(&link.source).and_then(|s: &Arc<Source>| {
        s.destinations
            .contains(&link.destination)
            .then(|| settings.destinations.get(&link.destination))
            .flatten()
            .map(|d| (Some(s.clone()), d.clone()))
    });
    let meta = ctx.store.link_meta(partition, &link).await?;
    // A retired link (store::lifecycle): frozen, emptied and deleted links
    // are not written; a deleting one sends its DELETE; an emptying one
    // sends every member as out. Emptying and deleting need only the
    // destination (they work on a link whose source was removed).
    let lifecycle = meta.get("lifecycle").map(String::as_str).unwrap_or("");
    let emptying = lifecycle == "emptying";
    match lifecycle {
        "frozen" | "emptied" | "deleted" => {
            ctx.store.not_due(partition, &link).await?;
            return Ok(Flushed::Written(0));
        }
        "deleting" => return retire_delete(&ctx, partition, &link, &meta).await,
        _ => {}
    }
    let configured = configured.or_else(|| {
        emptying
            .then(|| settings.destinations.get(&link.destination).cloned())
            .flatten()
            .map(|d| (None, d))
    });
    let Some((source, dest)) = configured else {
        let reason = "link is not in the configuration (source or destination removed)";
        let retry = now_ms() + settings.launchdarkly.blocked_retry_ms as i64;
        ctx.store
            .record_failure(partition, &link, reason, Some(reason), retry)
            .await?;
        return Ok(Flushed::Deferred);
    };

    // A failing or blocked link keeps its backoff even when new pushes make it due sooner.
    let retry_at = meta
        .get("retry_at_ms")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    if retry_at > now_ms() {
        ctx.store.reschedule(partition, &link, retry_at).await?;
        return Ok(Flushed::Deferred);
    }
    // Shadow mode: the same lease, due set and claim, but nothing leaves for
    // LaunchDarkly (`shadow`).
    if settings.mode_of(&link.destination) == Mode::Shadow {
        return super::shadow::flush(&ctx, partition, &link, &dest, &meta).await;
    }
    let max = settings.launchdarkly.max_keys_per_request;
    let margin = settings.request_timeout() + Duration::from_millis(500);
    let mut claimed_ms = now_ms();
    let claim = |ctx: Arc<FlushContext>, link: LinkId| async move {
        let hold_until = now_ms() + ctx.settings.lease_ttl.as_millis() as i64;
        ctx.store
            .claim(partition, ctx.leases.token(), &link, max, hold_until)
            .await
    };
    // A link whose changes all flipped back before its first flush costs
    // LaunchDarkly nothing, not even the segment's creation. The claim checks
    // emptiness atomically (and takes the link off the due set); in the rare
    // case a push made it dirty meanwhile, its batch is the one sent below.
    let created = meta.get("created").map(String::as_str) == Some("1");
    if emptying && !created {
        // No segment was ever made: nothing to empty.
        ctx.store.set_lifecycle(partition, &link, "emptied").await?;
        ctx.store.not_due(partition, &link).await?;
        return Ok(Flushed::Written(0));
    }
    let mut claimed = None;
    if !created && ctx.store.dirty_len(partition, &link).await? == 0 {
        if !ctx.leases.valid_for(partition, margin) {
            return Ok(Flushed::Deferred);
        }
        match claim(ctx.clone(), link.clone()).await? {
            Claim::LeaseLost => return Ok(Flushed::Deferred),
            Claim::Empty => return Ok(Flushed::Written(0)),
            Claim::Members(m) => claimed = Some(m),
        }
    }
    let segment_key = match ensure_segment(&ctx, partition, &link, &dest, &meta).await? {
        Ok(t) => t,
        Err(done) => return Ok(done),
    };
    if created && meta.get("rename_pending").map(String::as_str) == Some("1") {
        if let Some(done) = rename(&ctx, partition, &link, &dest, &segment_key, &meta).await? {
            return Ok(done);
        }
    }

    // Once a batch is acknowledged and a full one waits, the same task goes
    // on with the link's next batch (`goes_on`, `next_turn`) instead of
    // handing it back to the flusher's loop: that costs its due-set reads and
    // the link's meta read per batch, each queued behind the pushes' scripts
    // in Redis, and a first sync's batches fell behind the rate.
    let (mut due_at_ms, mut started_ms) = (due_at_ms, started_ms);
    let mut total = 0;
    let mut turn = 0u32;
    // The next batch of a drain, claimed with the last one's ack (and the
    // link's meta read beside it): `None` when not asked for, or when less
    // than a full batch waited.
    let mut prefetched: Option<Prefetched> = None;
    loop {
        // The token for the batch's request, when it was taken before the claim.
        let mut held_token = None;
        let members = match claimed.take() {
            Some(m) => m,
            None => {
                // The token first, then the claim: the batch is drawn only when
                // its request may leave, so it carries every change that came
                // while the flush queued for the rate, and links that queued
                // together are claimed apart (their next changes, and so their
                // next due times, do not stay in step behind the queue).
                let drawn =
                    if let Some((now_meta, Some(drawn), at_ms, token_ms)) = prefetched.take() {
                        // Claimed with the last batch's ack, its token taken
                        // meanwhile. Anything to do but write hands the link
                        // back, as below.
                        claimed_ms = at_ms;
                        if !now_meta.is_ok_and(|m| goes_on(&m)) {
                            if !matches!(drawn, Claim::LeaseLost) {
                                ctx.store.reschedule(partition, &link, now_ms()).await?;
                            }
                            return Ok(Flushed::Written(total));
                        }
                        held_token = Some(token_ms);
                        if !ctx.leases.valid_for(partition, margin) {
                            return Ok(Flushed::Deferred);
                        }
                        drawn
                    } else if turn == 0 {
                        held_token = Some(take_token(&ctx, &link).await);
                        if !ctx.leases.valid_for(partition, margin) {
                            return Ok(Flushed::Deferred);
                        }
                        claimed_ms = now_ms();
                        claim(ctx.clone(), link.clone()).await?
                    } else {
                        // A later batch of a drain is full whenever it is drawn,
                        // so waiting for the token first gains it nothing: the
                        // claim, the link's meta and the token's pause read go to
                        // Redis together, one round trip per batch instead of
                        // two (each of them waits behind the pushes' scripts
                        // while a first sync is still arriving).
                        if !ctx.leases.valid_for(partition, margin) {
                            return Ok(Flushed::Deferred);
                        }
                        claimed_ms = now_ms();
                        let (token, now_meta, drawn) = tokio::join!(
                            take_token(&ctx, &link),
                            ctx.store.link_meta(partition, &link),
                            claim(ctx.clone(), link.clone())
                        );
                        held_token = Some(token);
                        let drawn = drawn?;
                        // Anything to do but write hands the link back; what was
                        // just claimed stays dirty (unknown) and the link due now
                        // (an empty claim took it off the due set, and a rename
                        // may wait), so its next flush does what its meta says.
                        if !now_meta.is_ok_and(|m| goes_on(&m)) {
                            if !matches!(drawn, Claim::LeaseLost) {
                                ctx.store.reschedule(partition, &link, now_ms()).await?;
                            }
                            return Ok(Flushed::Written(total));
                        }
                        if !ctx.leases.valid_for(partition, margin) {
                            return Ok(Flushed::Deferred);
                        }
                        drawn
                    };
                match drawn {
                    Claim::LeaseLost => return Ok(Flushed::Deferred),
                    Claim::Empty if emptying => {
                        tracing::info!(link = %link, segment = %segment_key, "Link emptied: every member was removed from the segment.");
                        ctx.store.set_lifecycle(partition, &link, "emptied").await?;
                        return Ok(Flushed::Written(0));
                    }
                    Claim::Empty => {
                        // The empty claim took the link off the due set: a
                        // rename flagged by a push meanwhile keeps it due.
                        let now_meta = ctx.store.link_meta(partition, &link).await?;
                        if now_meta.get("rename_pending").map(String::as_str) == Some("1") {
                            ctx.store.reschedule(partition, &link, now_ms()).await?;
                        }
                        return Ok(Flushed::Written(total));
                    }
                    Claim::Members(m) => m,
                }
            }
        };
        if members.is_empty() {
            // Every member drawn had vanished from the cohort (the claim dropped
            // them from the dirty set): nothing to send; look again soon.
            ctx.store.reschedule(partition, &link, now_ms()).await?;
            return Ok(Flushed::Written(total));
        }
        // An emptying link sends every member as out, whatever its desired state.
        let members = if emptying {
            members.into_iter().map(|(k, _)| (k, false)).collect()
        } else {
            members
        };
        let full = members.len() >= max;
        let mut written = 0;
        // A 400 for a batch is split in halves until the offending keys stand
        // alone; those go to dead letters, the rest are written. A refusal of the
        // whole request is not a bad key: a message that names no key of the
        // batch, or the same message for both halves of a split, blocks the link
        // with LaunchDarkly's message (nothing is dead-lettered). Splitting stops
        // at the next request once shutdown begins.
        let mut queue = vec![Part {
            batch: members,
            pair: None,
        }];
        // Per split: the message the left half was refused with, if it was.
        let mut left_refusal: Vec<Option<String>> = Vec::new();
        let mut sent_any = false;
        // Members still dirty after the last ack, and whether every request of
        // the batch was written as it was (no split, no dead letter).
        let (mut waiting_after, mut whole) = (0u64, true);
        while let Some(Part { batch, pair }) = queue.pop() {
            if batch.is_empty() {
                continue;
            }
            if sent_any && ctx.stopping() {
                tracing::info!(link = %link, "Shutting down: the rest of this batch stays dirty.");
                return Ok(Flushed::Deferred);
            }
            if !ctx.leases.valid_for(partition, margin) {
                return abandon(&ctx, partition, &link).await;
            }
            let body = MembershipUpdate::from_members(&batch);
            let held = held_token.take();
            let Some((attempt, verdict, token_at_ms)) =
                send_holding(&ctx, partition, Operation::UpdateMembership, held, || {
                    ctx.ld
                        .update_membership(&dest.project, &dest.environment, &segment_key, &body)
                })
                .await
            else {
                return abandon(&ctx, partition, &link).await;
            };
            let answered_ms = now_ms();
            let now = answered_ms;
            let acked = AckedBatch {
                token: ctx.leases.token(),
                link: &link,
                sent: &batch,
                active_destinations: source
                    .as_ref()
                    .map_or(&[][..], |s| s.destinations.as_slice()),
                now_ms: now,
                max_delay_ms: settings.flush.max_delay_ms,
                batch_size: max,
                claim_was_full: full,
                claimed_all_at_ms: (!full && pair.is_none()).then_some(claimed_ms),
            };
            // The audit entry and, on success, the ack go to Redis together: one
            // round trip, not two, between a batch's answer and the next batch
            // (`biased`: the audit's command is queued first, so it lands first).
            // A drain that may go on sends its next full batch's claim and the
            // link's meta read in the same round trip, after the ack.
            let success = verdict == Verdict::Success;
            let ask_next = success
                && full
                && whole
                && pair.is_none()
                && queue.is_empty()
                && !emptying
                && turn + 1 < MAX_TURNS
                && !ctx.stopping()
                && !ctx.throttle.has_waiters()
                && ctx.leases.valid_for(partition, margin);
            let (_, ack) = tokio::join!(
                biased;
                audit(
                    &ctx,
                    &link,
                    Operation::UpdateMembership,
                    &segment_key,
                    &batch,
                    &attempt,
                ),
                async {
                    if !success {
                        return None;
                    }
                    if !ask_next {
                        return Some(ctx.store.ack(partition, &acked).await);
                    }
                    // The ack and the next claim in one script (in that
                    // order: the claim must not draw this batch again), and
                    // the next request's token meanwhile: a 1,000-member
                    // ack and claim take milliseconds, and waiting for the
                    // token only after them made a drain's cycle longer
                    // than the rate's period. (A drain that ends here
                    // leaves that token unused.)
                    let hold_until = now_ms() + ctx.settings.lease_ttl.as_millis() as i64;
                    let (meta, both, token_ms) = tokio::join!(
                        ctx.store.link_meta(partition, &link),
                        ctx.store.ack_then_claim(partition, &acked, hold_until),
                        take_token(&ctx, &link)
                    );
                    Some(both.map(|(ack, drawn)| {
                        prefetched = Some((meta, drawn, now_ms(), token_ms));
                        ack
                    }))
                },
            );
            sent_any = true;
            match verdict {
                Verdict::Success => {
                    let ack = ack.expect("acknowledged on success")?;
                    if emptying && ack != Ack::LeaseLost {
                        let keys: Vec<String> = batch.iter().map(|(k, _)| k.clone()).collect();
                        ctx.store.settle_emptied(partition, &link, &keys).await?;
                    }
                    match ack {
                        Ack::LeaseLost => {
                            tracing::warn!(link = %link, "Lease lost before the acknowledgement; the batch stays unknown and will be re-sent.");
                            return Ok(Flushed::Deferred);
                        }
                        Ack::Done {
                            written: w,
                            accepted_since_ms,
                            still_dirty,
                        } => {
                            // Where a batch's time went, one line per batch
                            // (RUST_LOG=cohort_bridge::flush::phases=debug):
                            // due → flush started → claimed → token → answered → acked.
                            tracing::debug!(
                                target: "cohort_bridge::flush::phases",
                                link = %link,
                                due_ms = due_at_ms,
                                started_ms,
                                claimed_ms,
                                token_ms = token_at_ms,
                                answered_ms = answered_ms,
                                acked_ms = now_ms(),
                                since_ms = accepted_since_ms.unwrap_or(-1),
                                batch = batch.len(),
                                still_dirty,
                                "Batch acknowledged."
                            );
                            waiting_after = still_dirty;
                            m::changes(&link.source, m::ChangeOutcome::Written, w);
                            if let Some(since) = accepted_since_ms {
                                ctx.observations
                                    .propagated(((now - since).max(0) as f64) / 1000.0);
                            }
                            written += batch.len();
                        }
                    }
                    let failures = ctx.reset_attempts(&link);
                    if failures > 0 {
                        tracing::info!(link = %link, failures, "LaunchDarkly writes for this link work again.");
                    }
                    metrics::histogram!(m::FLUSH_LAG_SECONDS)
                        .record(((now - due_at_ms).max(0) as f64) / 1000.0);
                }
                Verdict::Rejected { message }
                    if whole_request_refused(&batch, &message, pair, &left_refusal) =>
                {
                    tracing::error!(link = %link, keys = batch.len(), %message, "LaunchDarkly refused the request itself, not a key; blocking the link.");
                    return defer(&ctx, partition, &link, Verdict::Block { reason: message }).await;
                }
                Verdict::Rejected { message } if batch.len() > 1 => {
                    whole = false;
                    if let Some((i, false)) = pair {
                        left_refusal[i] = Some(message.clone());
                    }
                    tracing::warn!(link = %link, keys = batch.len(), %message, "LaunchDarkly rejected a batch; splitting it to find the offending keys.");
                    let i = left_refusal.len();
                    left_refusal.push(None);
                    let mut left = batch;
                    let right = left.split_off(left.len() / 2);
                    queue.push(Part {
                        batch: right,
                        pair: Some((i, true)),
                    });
                    queue.push(Part {
                        batch: left,
                        pair: Some((i, false)),
                    });
                }
                Verdict::Rejected { message } => {
                    whole = false;
                    let keys: Vec<String> = batch.iter().map(|(k, _)| k.clone()).collect();
                    tracing::error!(link = %link, key = %keys.join(","), %message, "LaunchDarkly rejected a key; moved to dead letters.");
                    if let Some(n) = ctx
                        .store
                        .dead_letter(
                            partition,
                            ctx.leases.token(),
                            &link,
                            &keys,
                            &message,
                            now_ms(),
                        )
                        .await?
                    {
                        m::changes(&link.source, m::ChangeOutcome::DeadLettered, n);
                    }
                }
                Verdict::Block { reason } if reason.starts_with("404") => {
                    // The segment may have been deleted in LaunchDarkly: create it again next time.
                    // Once re-created it gets the whole membership (segment_lost).
                    ctx.store
                        .set_link_meta(partition, &link, &[("created", ""), ("segment_lost", "1")])
                        .await?;
                    return defer(&ctx, partition, &link, Verdict::Block { reason }).await;
                }
                other => return defer(&ctx, partition, &link, other).await,
            }
        }
        total += written;
        let next_turn = whole
            && !emptying
            && waiting_after >= max as u64
            && turn + 1 < MAX_TURNS
            && !ctx.stopping()
            && !ctx.throttle.has_waiters();
        if !next_turn {
            // A next batch claimed with the ack stays dirty (unknown): the
            // link is due now, so its next flush sends it.
            if let Some((_, Some(Claim::Members(_)), _, _)) = prefetched {
                ctx.store.reschedule(partition, &link, now_ms()).await?;
            }
            return Ok(Flushed::Written(total));
        }
        turn += 1;
        due_at_ms = now_ms();
        started_ms = due_at_ms;
    }
}

/// The link's meta as re-read, the next full batch's claim (`None`: less
/// than a full batch was dirty, nothing was claimed), when it was claimed,
/// and when the next request's token was taken.
type Prefetched = (
    Result<HashMap<String, String>, crate::store::StoreError>,
    Option<Claim>,
    i64,
    i64,
);

/// Most batches one flush of a link sends in a row (see `goes_on`) before
/// the link goes back to the flusher's loop and its due set.
const MAX_TURNS: u32 = 100;

/// Whether a link whose batch was just acknowledged goes on to its next
/// batch in the same flush, judged on its meta as re-read: only a plain
/// write does (its segment exists; it is not retired, backing off or
/// blocked, and no rename waits). The flush also stops there when another
/// writer waits for a LaunchDarkly token, when the batch was not written
/// whole, when less than a full batch is dirty, on shutdown and once the
/// lease is too short.
fn goes_on(meta: &HashMap<String, String>) -> bool {
    let get = |k: &str| meta.get(k).map(String::as_str).unwrap_or("");
    get("lifecycle").is_empty()
        && get("created") == "1"
        && get("rename_pending") != "1"
        && get("blocked").is_empty()
        && get("retry_at_ms")
            .parse::<i64>()
            .map_or(true, |at| at <= now_ms())
}

/// One piece of a claimed batch; `pair` is (split index, is the right half).
struct Part {
    batch: Vec<(String, bool)>,
    pair: Option<(usize, bool)>,
}

/// A 400/413/422 refuses the request itself, not one of its keys, when the
/// message names none of the batch's keys, or when it is the right half of a
/// split and repeats the message the left half got.
fn whole_request_refused(
    batch: &[(String, bool)],
    message: &str,
    pair: Option<(usize, bool)>,
    left_refusal: &[Option<String>],
) -> bool {
    if !batch.iter().any(|(k, _)| message.contains(k.as_str())) {
        return true;
    }
    matches!(pair, Some((i, true)) if left_refusal.get(i).and_then(Option::as_deref) == Some(message))
}

#[cfg(test)]
mod tests;
