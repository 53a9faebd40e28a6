//! A link's segment in LaunchDarkly: its key claimed for the link, created
//! on the first flush (or adopted), renamed when the cohort's name changes,
//! and deleted when the link is retired with `--delete`. The membership
//! writes themselves are [`super::link`]'s.

use super::link::Flushed;
use super::request::{abandon, audit, block, defer, send};
use super::FlushContext;
use crate::clock::now_ms;
use crate::config::Destination;
use crate::launchdarkly::{carries_mark, ownership_mark, Attempt, NewSegment, Operation, Verdict};
use crate::naming::{render, slug, TemplateVars};
use crate::store::{LinkId, Partition};
use std::collections::HashMap;

/// Claims the segment key for the link (one link per project, environment
/// and key); `Some(flushed)` when another link holds it and this one is blocked.
pub(super) async fn claim_key(
    ctx: &FlushContext,
    partition: Partition,
    link: &LinkId,
    dest: &Destination,
    key: &str,
) -> anyhow::Result<Option<Flushed>> {
    let owner = ctx
        .store
        .claim_segment_key(&dest.project, &dest.environment, key, &link.to_string())
        .await?;
    match owner {
        None => Ok(None),
        Some(owner) => {
            let reason = format!(
                "segment_key_conflict (segment {key:?} in {}/{} belongs to link {owner}; give one of them its own segment_key)",
                dest.project, dest.environment
            );
            Ok(Some(block(ctx, partition, link, reason).await?))
        }
    }
}

/// The key and name the link's segment gets when it is created, from the
/// destination's templates and the cohort's name as last pushed.
pub(super) async fn segment_identity(
    ctx: &FlushContext,
    partition: Partition,
    link: &LinkId,
    dest: &Destination,
) -> anyhow::Result<(String, String)> {
    let cohort_name = cohort_name(ctx, partition, link).await?;
    let vars = template_vars(link, dest, &cohort_name);
    Ok((
        slug(&render(&dest.segment_key, &vars)),
        render(&dest.segment_name, &vars),
    ))
}

/// The cohort's name as last pushed, or its id when it never had one.
async fn cohort_name(
    ctx: &FlushContext,
    partition: Partition,
    link: &LinkId,
) -> anyhow::Result<String> {
    Ok(ctx
        .store
        .cohort_name(partition, &link.source, &link.cohort)
        .await?
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| link.cohort.clone()))
}

/// What the destination's `segment_key` and `segment_name` templates see.
fn template_vars<'a>(
    link: &'a LinkId,
    dest: &'a Destination,
    cohort_name: &'a str,
) -> TemplateVars<'a> {
    TemplateVars {
        source: &link.source,
        cohort_id: &link.cohort,
        cohort_name,
        destination: &dest.name,
    }
}

/// Creates the segment on the link's first flush; returns its key
/// (`Err(flushed)` when the flush ends here).
///
/// The key is claimed for the link first. On a 409 the existing segment is
/// adopted only if it carries this link's mark (`ownership_mark`) or the
/// destination sets `adopt_existing_segments`. A segment re-created after it
/// was lost (a 404) gets the link's whole membership again (a resync).
pub(super) async fn ensure_segment(
    ctx: &FlushContext,
    partition: Partition,
    link: &LinkId,
    dest: &Destination,
    meta: &HashMap<String, String>,
) -> anyhow::Result<Result<String, Flushed>> {
    if meta.get("created").map(String::as_str) == Some("1") {
        if let Some(key) = meta.get("segment_key").filter(|k| !k.is_empty()) {
            // Links created before keys were claimed claim theirs once.
            if meta.get("segment_claimed").map(String::as_str) != Some("1") {
                if let Some(done) = claim_key(ctx, partition, link, dest, key).await? {
                    return Ok(Err(done));
                }
                ctx.store
                    .set_link_meta(partition, link, &[("segment_claimed", "1")])
                    .await?;
            }
            return Ok(Ok(key.clone()));
        }
    }
    let (key, name) = segment_identity(ctx, partition, link, dest).await?;
    if let Some(done) = claim_key(ctx, partition, link, dest, &key).await? {
        return Ok(Err(done));
    }
    let mut tags = dest.tags.clone();
    tags.push(slug(&format!("source-{}", link.source)));
    let link_text = link.to_string();
    let body = NewSegment {
        key: &key,
        name: &name,
        description: format!(
            "Synced by cohort-bridge from source {} cohort {}\n{}",
            link.source,
            link.cohort,
            ownership_mark(&link_text)
        ),
        tags: &tags,
        unbounded: true,
        unbounded_context_kind: &dest.context_kind,
    };
    let Some((attempt, verdict, _)) = send(ctx, partition, Operation::CreateSegment, || {
        ctx.ld
            .create_segment(&dest.project, &dest.environment, &body)
    })
    .await
    else {
        return Ok(Err(abandon(ctx, partition, link).await?));
    };
    audit(ctx, link, Operation::CreateSegment, &key, &[], &attempt).await;
    match verdict {
        Verdict::Success => {}
        Verdict::AlreadyExists => {
            let mut found = None;
            let Some((_, verdict, _)) = send(ctx, partition, Operation::GetSegment, || async {
                let (attempt, json) = ctx
                    .ld
                    .get_segment(&dest.project, &dest.environment, &key)
                    .await;
                found = json;
                attempt
            })
            .await
            else {
                return Ok(Err(abandon(ctx, partition, link).await?));
            };
            match (verdict, found) {
                (Verdict::Success, Some(seg)) => {
                    if !carries_mark(&seg, &link_text) && !dest.adopt_existing_segments {
                        let reason = format!(
                            "segment_exists_unowned (segment {key:?} in {}/{} exists without this link's mark; set adopt_existing_segments = true to adopt it)",
                            dest.project, dest.environment
                        );
                        return Ok(Err(block(ctx, partition, link, reason).await?));
                    }
                    tracing::info!(link = %link, segment = %key, "Adopting the existing segment.");
                }
                (Verdict::Success, None) => {
                    let reason = "segment lookup after a 409 returned no segment".to_string();
                    let v = Verdict::Retry {
                        reason,
                        in_doubt: false,
                    };
                    return Ok(Err(defer(ctx, partition, link, v).await?));
                }
                (other, _) => return Ok(Err(defer(ctx, partition, link, other).await?)),
            }
        }
        other => return Ok(Err(defer(ctx, partition, link, other).await?)),
    }
    // A segment lost in LaunchDarkly (404) and now made again holds none of
    // the members recorded as written: send the whole membership again.
    if meta.get("segment_lost").map(String::as_str) == Some("1") {
        let marked = ctx.store.resync(link, now_ms(), 1000).await?;
        tracing::warn!(link = %link, segment = %key, members = ?marked, "Segment re-created after it was lost; resending the link's whole membership.");
    }
    let created = now_ms().to_string();
    ctx.store
        .set_link_meta(
            partition,
            link,
            &[
                ("created", "1"),
                ("segment_key", &key),
                ("segment_name", &name),
                ("created_ms", &created),
                ("segment_claimed", "1"),
                ("segment_lost", ""),
            ],
        )
        .await?;
    tracing::info!(link = %link, segment = %key, project = %dest.project, environment = %dest.environment, "Segment ready.");
    Ok(Ok(key))
}

/// The cohort was renamed (`apply.lua` set `rename_pending`): the
/// segment's name follows, rendered from the destination's `segment_name` as
/// at creation, with one `PATCH` under the throttle and the shared 429 pause.
/// No `PATCH` when the rendered name is the segment's already (the same name
/// pushed again, or a template without `{cohort_name}`). A 429 or 5xx keeps
/// the rename pending and retries it (`Some`: the flush ends here); a 4xx is
/// final: it is recorded as the link's last error (until the next successful
/// write clears it), in `rename_error` (until a rename succeeds) and in the
/// audit trail, and the flush goes on with the membership.
pub(super) async fn rename(
    ctx: &FlushContext,
    partition: Partition,
    link: &LinkId,
    dest: &Destination,
    segment_key: &str,
    meta: &HashMap<String, String>,
) -> anyhow::Result<Option<Flushed>> {
    let cohort_name = cohort_name(ctx, partition, link).await?;
    let name = render(&dest.segment_name, &template_vars(link, dest, &cohort_name));
    if meta.get("segment_name") == Some(&name) {
        ctx.store
            .set_link_meta(partition, link, &[("rename_pending", "")])
            .await?;
        return Ok(None);
    }
    let Some((attempt, verdict, _)) = send(ctx, partition, Operation::RenameSegment, || {
        ctx.ld
            .rename_segment(&dest.project, &dest.environment, segment_key, &name)
    })
    .await
    else {
        return Ok(Some(abandon(ctx, partition, link).await?));
    };
    let mut entry = crate::store::AuditEntry::for_batch(now_ms(), "rename", segment_key, &[]);
    entry.status = attempt.status_label();
    entry.message = Some(format!("name {name:?}"));
    if let Attempt::Replied(r) = &attempt {
        entry.request_id = r.request_id.clone();
        if !(200..300).contains(&r.status) && !r.message.is_empty() {
            entry.message = Some(format!("name {name:?}: {}", r.message));
        }
    }
    let cap = ctx.settings.flush.audit_entries_per_link;
    if cap > 0 {
        if let Err(e) = ctx.store.record_audit(link, &entry, cap).await {
            tracing::warn!(link = %link, error = %e, "Could not record a LaunchDarkly write in the audit trail.");
        }
    }
    match verdict {
        Verdict::Success => {
            tracing::info!(link = %link, segment = %segment_key, %name, "Segment renamed after its cohort.");
            ctx.store
                .set_link_meta(
                    partition,
                    link,
                    &[("segment_name", &name), ("rename_error", "")],
                )
                .await?;
            settle_rename(ctx, partition, link, &cohort_name).await?;
            Ok(None)
        }
        Verdict::Rejected { message } | Verdict::Block { reason: message } => {
            let error = format!("rename to {name:?} refused: {message}");
            tracing::error!(link = %link, segment = %segment_key, %error, "LaunchDarkly refused the segment's new name; not retried.");
            ctx.store
                .set_link_meta(
                    partition,
                    link,
                    &[("last_error", &error), ("rename_error", &error)],
                )
                .await?;
            settle_rename(ctx, partition, link, &cohort_name).await?;
            Ok(None)
        }
        other => Ok(Some(defer(ctx, partition, link, other).await?)),
    }
}

/// Clears `rename_pending` unless a push renamed the cohort again while the
/// `PATCH` was out (then the next flush sends the newer name).
async fn settle_rename(
    ctx: &FlushContext,
    partition: Partition,
    link: &LinkId,
    sent_for: &str,
) -> anyhow::Result<()> {
    let now = ctx
        .store
        .cohort_name(partition, &link.source, &link.cohort)
        .await?
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| link.cohort.clone());
    if now == sent_for {
        ctx.store
            .set_link_meta(partition, link, &[("rename_pending", "")])
            .await?;
    }
    Ok(())
}

/// A link retired with `--delete`: deletes its segment in LaunchDarkly
/// (through the throttle, like every write), then writes nothing more. A
/// segment never created, or already gone (404), is deleted too.
pub(super) async fn retire_delete(
    ctx: &FlushContext,
    partition: Partition,
    link: &LinkId,
    meta: &HashMap<String, String>,
) -> anyhow::Result<Flushed> {
    let key = meta
        .get("segment_key")
        .filter(|k| !k.is_empty() && meta.get("created").map(String::as_str) == Some("1"));
    if let Some(key) = key {
        let Some(dest) = ctx.settings.destinations.get(&link.destination).cloned() else {
            let reason = "destination removed from the configuration: the segment cannot be deleted (retire --freeze, or configure the destination again)".to_string();
            return block(ctx, partition, link, reason).await;
        };
        let Some((attempt, verdict, _)) = send(ctx, partition, Operation::DeleteSegment, || {
            ctx.ld.delete_segment(&dest.project, &dest.environment, key)
        })
        .await
        else {
            return abandon(ctx, partition, link).await;
        };
        let gone = matches!(&attempt, Attempt::Replied(r) if r.status == 404);
        if verdict != Verdict::Success && !gone {
            return defer(ctx, partition, link, verdict).await;
        }
        tracing::info!(link = %link, segment = %key, "Segment deleted in LaunchDarkly; the link is retired.");
    }
    ctx.store.set_lifecycle(partition, link, "deleted").await?;
    ctx.store.not_due(partition, link).await?;
    Ok(Flushed::Written(0))
}
