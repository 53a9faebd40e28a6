//! Heap segment sync (`segment.users.sync`).
//!
//! Adds and removes arrive in one body, paged; `(sync_task_id, page_number)`
//! identifies a delivery, and the signed `Heap-Hash` timestamp orders
//! changes. Like Heap's reference handler, adds are applied before removes,
//! so a member in both lists ends up removed.
//!
//! The legacy `segment.users.drain` action ("this segment is out of sync")
//! arms the segment: Heap's next full sync (the next `sync_task_id` whose page
//! 1 arrives) is staged as a full snapshot, and once all its pages are in,
//! members it did not list are removed (`store::snapshot`). Until then nothing
//! changes. Without a drain, syncs are diffs and remove only what they list.

use super::{collect_changes, ParseError, Delivery, Push, Snapshot, Version};
use crate::config::Source;
use crate::verify::Verified;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Body {
    id_token: Option<String>,
    action_type: Option<String>,
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    segment: Option<Segment>,
    sync_info: Option<SyncInfo>,
    add: Option<Vec<Value>>,
    remove: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct Segment {
    id: Option<Value>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct SyncInfo {
    page_number: Option<u64>,
    total_pages: Option<u64>,
    sync_task_id: Option<String>,
}

pub const DRAIN_NOTE: &str =
    "segment.users.drain acknowledged: Heap's next full sync of this segment replaces its membership";

/// Heap segment ids are int64; a non-empty string is accepted too.
fn segment_id(id: Option<Value>) -> Result<String, ParseError> {
    match id {
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        _ => Err(ParseError::missing_or_not("data.segment.id", "an id")),
    }
}

fn too_large(field: &str) -> ParseError {
    ParseError::TooLarge {
        field: field.into(),
    }
}

pub fn parse(source: &Source, verified: &Verified<'_>, now: Version) -> Result<Delivery, ParseError> {
    let body: Body = serde_json::from_slice(verified.body()).map_err(ParseError::json)?;
    let action = body.action_type.as_deref().unwrap_or("");
    match action {
        "segment.users.sync" => {}
        "segment.users.drain" => {
            let segment = body
                .data
                .and_then(|d| d.segment)
                .ok_or_else(|| ParseError::missing("data.segment"))?;
            return Ok(Delivery {
                arm_snapshot: vec![(segment_id(segment.id)?, segment.name)],
                note: Some(DRAIN_NOTE),
                ..Delivery::default()
            });
        }
        other => {
            return Err(ParseError::Unsupported(format!(
                "action_type {other:?} is not supported; expected \"segment.users.sync\" or \"segment.users.drain\""
            )))
        }
    }
    let data = body.data.ok_or_else(|| ParseError::missing("data"))?;
    let segment = data
        .segment
        .ok_or_else(|| ParseError::missing("data.segment"))?;
    let cohort_id = segment_id(segment.id)?;
    let version = match verified.signed_at_ms() {
        Some(ms) => Version::of_field(ms, "the signature's timestamp (t=)")?,
        None => now,
    };
    let delivery_id = match &data.sync_info {
        Some(SyncInfo {
            sync_task_id: Some(task),
            page_number,
            ..
        }) => Some(format!("{task}:{}", page_number.unwrap_or(1))),
        _ => body.id_token.clone(),
    };
    // Every paged sync may be the full sync a drain asked for: the store
    // stages it only if the segment was armed by a drain (`armed_only`).
    let snapshot = match &data.sync_info {
        Some(SyncInfo {
            sync_task_id: Some(task),
            page_number,
            total_pages,
        }) => {
            let page = page_number.unwrap_or(1).max(1);
            let total = total_pages.unwrap_or(1).max(page);
            Some(Snapshot {
                session: task.clone(),
                page: u32::try_from(page).map_err(|_| too_large("data.sync_info.page_number"))?,
                total_pages: u32::try_from(total)
                    .map_err(|_| too_large("data.sync_info.total_pages"))?,
                version,
                armed_only: true,
            })
        }
        _ => None,
    };
    let (adds, removes) = (
        data.add.unwrap_or_default(),
        data.remove.unwrap_or_default(),
    );
    let mut changes = Vec::with_capacity(adds.len() + removes.len());
    let mut skipped = 0;
    for (list, include) in [(&adds, true), (&removes, false)] {
        collect_changes(
            list,
            &source.key_field,
            include,
            version,
            &mut changes,
            &mut skipped,
        );
    }
    Ok(Delivery::one(
        Push {
            cohort_id,
            cohort_name: segment.name,
            delivery_id,
            changes,
            snapshot,
        },
        skipped,
    ))
}
