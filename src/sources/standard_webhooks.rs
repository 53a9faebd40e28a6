//! Standard Webhooks: the way to connect anything else.
//!
//! Signed with the Standard Webhooks headers (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature`); the body is our own small format:
//!
//! ```json
//! {"cohort_id": "7khm89cz", "cohort_name": "Power users", "context_kind": "user",
//!  "add": ["user-1", "user-2"], "remove": ["user-3"], "snapshot": false,
//!  "version": 1767225600000}
//! ```
//!
//! - `cohort_id` (string or number) is required; `add` and `remove` default to
//!   empty. Their items are keys (strings or numbers), or objects whose key is
//!   at the source's `key_field` (default `key`).
//! - `context_kind`, if given, must be the context kind of every destination
//!   of the source (a mismatch is refused, not silently written elsewhere).
//! - `snapshot: true` means the body is the whole cohort: members not in
//!   `add` are removed (a one-page [`Snapshot`] whose session is the `webhook-id`).
//! - `version` orders the changes: epoch ms (or seconds, below 10^12) or an
//!   ISO 8601 string; without it, the arrival time.
//! - Adds apply before removes, so a key in both lists ends removed.
//!
//! The same fields may instead sit under `data`, in camelCase
//! (`cohortId`, `cohortName`, `contextKind`), with the event's `timestamp`
//! beside `data` as the version: the event envelope many senders emit.
//! `webhook-id` de-duplicates deliveries.

use super::amplitude::epoch_to_ms;
use super::segment::iso_to_ms;
use super::member_key::id_text;
use super::{extract_key, Change, ParseError, Delivery, Push, Snapshot, Version};
use crate::config::Source;
use crate::verify::Verified;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Fields {
    #[serde(alias = "cohortId")]
    cohort_id: Option<Value>,
    #[serde(alias = "cohortName")]
    cohort_name: Option<Value>,
    #[serde(alias = "contextKind")]
    context_kind: Option<Value>,
    add: Option<Value>,
    remove: Option<Value>,
    snapshot: Option<Value>,
    version: Option<Value>,
    /// Only read from the envelope (beside `data`).
    timestamp: Option<Value>,
    data: Option<Box<Fields>>,
}

fn version(v: &Value, field: &str) -> Result<Version, ParseError> {
    let unreadable = || ParseError::wrong_type(field, "epoch milliseconds or an ISO 8601 time");
    match v {
        Value::String(s) if s.contains('-') => {
            Version::of_field(iso_to_ms(s).ok_or_else(unreadable)?, field)
        }
        other => epoch_to_ms(other).ok_or_else(unreadable),
    }
}

fn keys(
    list: &Option<Value>,
    field: &str,
    key_field: &str,
    include: bool,
    version: Version,
    changes: &mut Vec<Change>,
    skipped: &mut u64,
) -> Result<(), ParseError> {
    let items = match list {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ParseError::wrong_type(field, "an array of keys")),
    };
    for (i, item) in items.iter().enumerate() {
        let key = match item {
            Value::String(_) | Value::Number(_) => id_text(item),
            Value::Object(_) => extract_key(item, key_field),
            _ => {
                return Err(ParseError::wrong_type(
                    format!("{field}[{i}]"),
                    format!("a key (string or number) or an object with {key_field:?}"),
                ))
            }
        };
        match key {
            Some(key) => changes.push(Change {
                key,
                include,
                version,
            }),
            None => *skipped += 1,
        }
    }
    Ok(())
}

pub fn parse(source: &Source, verified: &Verified<'_>, now: Version) -> Result<Delivery, ParseError> {
    let outer: Fields = serde_json::from_slice(verified.body()).map_err(ParseError::json)?;
    let (f, envelope_time, prefix) = match outer.data {
        Some(data) => (*data, outer.timestamp, "data."),
        None => (outer, None, ""),
    };
    let cohort_id = f
        .cohort_id
        .as_ref()
        .and_then(id_text)
        .ok_or_else(|| ParseError::missing_or_not(format!("{prefix}cohort_id"), "an id"))?;
    let cohort_name = match f.cohort_name {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(ParseError::wrong_type(
                format!("{prefix}cohort_name"),
                "a string",
            ))
        }
    };
    match &f.context_kind {
        None | Some(Value::Null) => {}
        Some(Value::String(k)) => {
            if let Some(other) = source.context_kinds.iter().find(|d| *d != k) {
                return Err(ParseError::Inconsistent(format!(
                    "{prefix}context_kind {k:?} differs from the context kind {other:?} of this source's destinations; send it to a source whose destinations use {k:?}"
                )));
            }
        }
        Some(_) => {
            return Err(ParseError::wrong_type(
                format!("{prefix}context_kind"),
                "a string",
            ))
        }
    }
    let snapshot = match f.snapshot {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(ParseError::wrong_type(
                format!("{prefix}snapshot"),
                "true or false",
            ))
        }
    };
    let version = match (&f.version, &envelope_time) {
        (Some(v), _) if !v.is_null() => version(v, &format!("{prefix}version"))?,
        (_, Some(t)) if !t.is_null() => version(t, "timestamp")?,
        _ => now,
    };
    let mut changes = Vec::new();
    let mut skipped = 0;
    let kf = &source.key_field;
    let add_field = format!("{prefix}add");
    let remove_field = format!("{prefix}remove");
    keys(
        &f.add,
        &add_field,
        kf,
        true,
        version,
        &mut changes,
        &mut skipped,
    )?;
    keys(
        &f.remove,
        &remove_field,
        kf,
        false,
        version,
        &mut changes,
        &mut skipped,
    )?;
    let mut push = Push {
        cohort_id,
        cohort_name,
        delivery_id: verified.delivery_id().map(str::to_string),
        changes,
        snapshot: None,
    };
    if snapshot {
        // Without a webhook-id (another auth scheme), each body is its own session.
        let session = (push.delivery_id.clone())
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        push.snapshot = Some(Snapshot {
            session,
            page: 1,
            total_pages: 1,
            version,
            armed_only: false,
        });
    }
    Ok(Delivery::one(push, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::test_support::{source, verified};
    use crate::config::SourceKind;
    use serde_json::json;

    fn run(b: &Value) -> Result<Delivery, ParseError> {
        let bytes = serde_json::to_vec(b).unwrap();
        parse(
            &source(SourceKind::StandardWebhooks, "key"),
            &verified(&bytes),
            Version::from_ms(5).unwrap(),
        )
    }

    fn c(k: &str, include: bool, v: i64) -> Change {
        Change {
            key: k.into(),
            include,
            version: Version::from_ms(v).unwrap(),
        }
    }

    #[test]
    fn flat_body() {
        let p = run(&json!({"cohort_id": "c1", "cohort_name": "One", "context_kind": "user",
            "add": ["a", 7, {"key": "b"}, {"other": 1}, ""], "remove": ["d"], "version": 1767225600000i64}))
        .unwrap();
        let push = &p.pushes[0];
        assert_eq!(push.cohort_id, "c1");
        assert_eq!(push.cohort_name.as_deref(), Some("One"));
        let v = 1_767_225_600_000;
        assert_eq!(
            push.changes,
            vec![
                c("a", true, v),
                c("7", true, v),
                c("b", true, v),
                c("d", false, v)
            ]
        );
        assert_eq!(p.skipped_without_key, 2);
        assert_eq!(push.snapshot, None);
        // No version: arrival time; ISO and seconds work too.
        assert_eq!(
            run(&json!({"cohort_id": 3, "add": ["a"]})).unwrap().pushes[0].changes,
            vec![c("a", true, 5)]
        );
        assert_eq!(
            run(&json!({"cohort_id": 3, "add": ["a"], "version": "2026-01-01T00:00:00Z"}))
                .unwrap()
                .pushes[0]
                .changes,
            vec![c("a", true, v)]
        );
        assert_eq!(
            run(&json!({"cohort_id": 3, "add": ["a"], "version": 1767225600}))
                .unwrap()
                .pushes[0]
                .changes,
            vec![c("a", true, v)]
        );
    }

    #[test]
    fn snapshot_is_a_one_page_session() {
        let p = run(&json!({"cohort_id": "c1", "add": ["a"], "snapshot": true})).unwrap();
        let s = p.pushes[0].snapshot.clone().unwrap();
        assert_eq!((s.page, s.total_pages), (1, 1));
    }

    #[test]
    fn event_envelope_with_camel_case_fields() {
        let p = run(&json!({"type": "segment.membership.changed", "timestamp": "2026-01-15T10:30:00.000Z",
            "data": {"cohortId": "7khm89cz", "cohortName": "Power Users (30d)", "contextKind": "user", "add": ["user-1"], "remove": ["user-3"]}}))
        .unwrap();
        let push = &p.pushes[0];
        assert_eq!(push.cohort_id, "7khm89cz");
        assert_eq!(push.cohort_name.as_deref(), Some("Power Users (30d)"));
        let v = iso_to_ms("2026-01-15T10:30:00.000Z").unwrap();
        assert_eq!(
            push.changes,
            vec![c("user-1", true, v), c("user-3", false, v)]
        );
    }

    #[test]
    fn wrong_shapes_are_errors_naming_the_field() {
        for (b, needle) in [
            (json!({"add": ["a"]}), "cohort_id is missing"),
            (json!({"data": {"add": ["a"]}}), "data.cohort_id is missing"),
            (
                json!({"cohort_id": "c", "add": "a"}),
                "add must be an array",
            ),
            (
                json!({"cohort_id": "c", "remove": [true]}),
                "remove[0] must be a key",
            ),
            (
                json!({"cohort_id": "c", "context_kind": "account"}),
                "context_kind \"account\" differs",
            ),
            (
                json!({"cohort_id": "c", "snapshot": "yes"}),
                "snapshot must be true or false",
            ),
            (
                json!({"cohort_id": "c", "version": "later"}),
                "version must be",
            ),
            (json!([]), "JSON"),
        ] {
            let err = run(&b).unwrap_err();
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
    }

    #[test]
    fn versions_out_of_range_are_refused_naming_the_field() {
        for (b, field) in [
            (json!({"cohort_id": "c", "version": "1969-12-31T23:59:59Z"}), "version"),
            (
                json!({"data": {"cohortId": "c", "version": "1900-01-01T00:00:00Z"}}),
                "data.version",
            ),
            (
                json!({"timestamp": "1969-01-01T00:00:00Z", "data": {"cohortId": "c"}}),
                "timestamp",
            ),
        ] {
            match run(&b).unwrap_err() {
                ParseError::VersionOutOfRange { field: f, ms } => {
                    assert_eq!(f, field);
                    assert!(ms < 0);
                }
                other => panic!("{other}"),
            }
        }
        // Negative or beyond 10^15 ms as numbers: not epoch milliseconds.
        for v in [json!(-1), json!(9_007_199_254_740_992i64)] {
            let err = run(&json!({"cohort_id": "c", "version": v})).unwrap_err();
            assert_eq!(
                err.to_string(),
                "version must be epoch milliseconds or an ISO 8601 time"
            );
        }
    }
}
