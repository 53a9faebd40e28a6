//! Heap segment sync (`segment.users.sync`).
//!
//! Adds and removes arrive in one body, paged; `(sync_task_id, page_number)`
//! identifies a delivery, and the signed `Heap-Hash` timestamp orders
//! changes. Like Heap's reference handler, adds are applied before removes,
//! so a member in both lists ends up removed.
//!
//! The legacy `segment.users.drain` action ("this segment is out of sync") is
//! acknowledged with 200 and changes nothing: membership stays as the bridge
//! knows it until Heap's next sync; an operator can force a rewrite with a resync.

use super::{collect_changes, ParseError, Parsed, Push};
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
    sync_task_id: Option<String>,
}

pub const DRAIN_NOTE: &str =
    "segment.users.drain acknowledged: membership is unchanged until Heap's next sync";

pub fn parse(source: &Source, verified: &Verified<'_>, now_ms: i64) -> Result<Parsed, ParseError> {
    let body: Body = serde_json::from_slice(verified.body()).map_err(ParseError::json)?;
    let action = body.action_type.as_deref().unwrap_or("");
    match action {
        "segment.users.sync" => {}
        "segment.users.drain" => {
            return Ok(Parsed {
                note: Some(DRAIN_NOTE),
                ..Parsed::default()
            })
        }
        other => {
            return Err(ParseError(format!(
                "action_type {other:?} is not supported; expected \"segment.users.sync\" or \"segment.users.drain\""
            )))
        }
    }
    let data = body
        .data
        .ok_or_else(|| ParseError("data is missing".into()))?;
    let segment = data
        .segment
        .ok_or_else(|| ParseError("data.segment is missing".into()))?;
    let cohort_id = match segment.id {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        _ => return Err(ParseError("data.segment.id is missing or not an id".into())),
    };
    let version_ms = verified.signed_at_ms().unwrap_or(now_ms);
    let delivery_id = match &data.sync_info {
        Some(SyncInfo {
            sync_task_id: Some(task),
            page_number,
        }) => Some(format!("{task}:{}", page_number.unwrap_or(1))),
        _ => body.id_token.clone(),
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
            version_ms,
            &mut changes,
            &mut skipped,
        );
    }
    Ok(Parsed {
        pushes: vec![Push {
            cohort_id,
            cohort_name: segment.name,
            delivery_id,
            changes,
            snapshot: None,
        }],
        skipped_without_key: skipped,
        note: None,
    })
}
