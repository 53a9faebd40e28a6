//! Segment (Twilio) Engage audiences, sent by the Webhooks destination.
//!
//! One event per request, or a JSON array of events (batched Actions
//! webhooks). Every audience event carries `context.personas`
//! (`computation_id` = the cohort, `computation_key` = its name and the
//! audience's trait key) and is either
//! - an `identify` with `traits.<computation_key>: true|false`, or
//! - a `track` named `Audience Entered` / `Audience Exited`
//!   (`properties.audience_key`, `properties.<computation_key>`).
//!
//! Each event is its own [`Push`]: its `messageId` de-duplicates it, its
//! `timestamp` (ISO 8601) orders it. Other events (page views, other track
//! events, identify calls without the audience trait) are skipped and
//! reported in the response's `note`, not refused: Segment would otherwise
//! retry them for hours.
//!
//! The key is `userId` by default (`key_field`: `anonymousId`,
//! `traits.email`, ...). Track events keep traits under `context.traits`, so a
//! `traits.<x>` path that is absent from the event is also looked up there.

use super::{extract_key, Change, ParseError, Delivery, Push, Version};
use crate::config::Source;
use crate::verify::Verified;
use serde_json::Value;

pub const SKIPPED_NOTE: &str =
    "some events are not Engage audience events (no context.personas audience, not Audience Entered/Exited, or no audience trait) and were skipped";
pub const NOTHING_NOTE: &str =
    "no Engage audience event in this request (nothing applied; other events are skipped)";

/// An ISO 8601 / RFC 3339 timestamp (`2024-05-03T19:42:50.066Z`) in ms.
pub(crate) fn iso_to_ms(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

pub fn parse(source: &Source, verified: &Verified<'_>, now: Version) -> Result<Delivery, ParseError> {
    let body: Value = serde_json::from_slice(verified.body()).map_err(ParseError::json)?;
    let (events, batched) = match body {
        Value::Array(events) => (events, true),
        one @ Value::Object(_) => (vec![one], false),
        _ => {
            return Err(ParseError::wrong_type(
                "body",
                "one Segment event (an object) or an array of events",
            ))
        }
    };
    let mut out = Delivery::default();
    let mut skipped_events = 0;
    for (i, event) in events.iter().enumerate() {
        let at = |error: ParseError| match batched {
            true => ParseError::InEvent {
                index: i,
                error: Box::new(error),
            },
            false => error,
        };
        match event_change(source, event, now).map_err(at)? {
            Some((push, key_missing)) => {
                out.skipped_without_key += u64::from(key_missing);
                out.pushes.push(push);
            }
            None => skipped_events += 1,
        }
    }
    if out.pushes.is_empty() {
        out.note = Some(NOTHING_NOTE);
    } else if skipped_events > 0 {
        out.note = Some(SKIPPED_NOTE);
    }
    Ok(out)
}

/// One event → its push (and whether its key was missing), or `None` when
/// it is not an audience event.
fn event_change(
    source: &Source,
    event: &Value,
    now: Version,
) -> Result<Option<(Push, bool)>, ParseError> {
    let Value::Object(obj) = event else {
        return Err(ParseError::wrong_type("an event", "a JSON object"));
    };
    let Some(personas) = event.pointer("/context/personas") else {
        return Ok(None);
    };
    if let Some(class) = personas.get("computation_class") {
        if class.as_str() != Some("audience") {
            return Ok(None);
        }
    }
    let audience_key = match personas.get("computation_key") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(k)) if !k.trim().is_empty() => k.as_str(),
        Some(_) => {
            return Err(ParseError::wrong_type(
                "context.personas.computation_key",
                "a string",
            ))
        }
    };
    let include = match obj.get("type").and_then(Value::as_str) {
        Some("identify") => match event.get("traits").and_then(|t| t.get(audience_key)) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ParseError::wrong_type(
                    format!("traits.{audience_key}"),
                    "true or false",
                ))
            }
        },
        Some("track") => match obj.get("event").and_then(Value::as_str) {
            Some("Audience Entered") => true,
            Some("Audience Exited") => false,
            _ => return Ok(None),
        },
        Some(_) => return Ok(None),
        None => return Err(ParseError::missing_or_not("type", "a string")),
    };
    if let Some(k) = event.pointer("/properties/audience_key") {
        if k.as_str() != Some(audience_key) {
            return Err(ParseError::Inconsistent(format!(
                "properties.audience_key {k} differs from context.personas.computation_key {audience_key:?}"
            )));
        }
    }
    let cohort_id = match personas.get("computation_id") {
        Some(Value::String(id)) if !id.trim().is_empty() => id.clone(),
        _ => {
            return Err(ParseError::missing_or_not(
                "context.personas.computation_id",
                "a string",
            ))
        }
    };
    let version = match obj.get("timestamp") {
        None | Some(Value::Null) => now,
        Some(Value::String(s)) => {
            let ms = iso_to_ms(s).ok_or_else(|| ParseError::Unreadable {
                field: format!("timestamp {s:?}"),
                expected: "an ISO 8601 time",
            })?;
            Version::of_field(ms, "timestamp")?
        }
        Some(_) => return Err(ParseError::wrong_type("timestamp", "an ISO 8601 string")),
    };
    let delivery_id = match obj.get("messageId") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) if !m.is_empty() => Some(m.clone()),
        Some(_) => return Err(ParseError::wrong_type("messageId", "a non-empty string")),
    };
    let key = extract_key(event, &source.key_field).or_else(|| {
        source
            .key_field
            .starts_with("traits.")
            .then(|| extract_key(event, &format!("context.{}", source.key_field)))
            .flatten()
    });
    let key_missing = key.is_none();
    let changes = key
        .map(|key| Change {
            key,
            include,
            version,
        })
        .into_iter()
        .collect();
    Ok(Some((
        Push {
            cohort_id,
            cohort_name: Some(audience_key.to_string()),
            delivery_id,
            changes,
            snapshot: None,
        },
        key_missing,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::test_support::{source, verified};
    use serde_json::json;

    fn personas() -> Value {
        json!({"computation_class": "audience", "computation_id": "aud_1", "computation_key": "power_users", "namespace": "spa_1", "space_id": "spa_1"})
    }

    fn identify(user: &str, value: Value, msg: &str) -> Value {
        json!({"type": "identify", "userId": user, "messageId": msg, "timestamp": "2024-05-03T19:42:50.066Z",
               "context": {"personas": personas()}, "traits": {"power_users": value, "email": format!("{user}@example.com")}})
    }

    fn track(user: &str, event: &str, msg: &str) -> Value {
        json!({"type": "track", "event": event, "userId": user, "messageId": msg, "timestamp": "2024-05-03T19:43:00Z",
               "context": {"personas": personas(), "traits": {"email": format!("{user}@example.com")}},
               "properties": {"audience_key": "power_users", "power_users": event == "Audience Entered"}})
    }

    fn run(key_field: &str, body: &Value) -> Result<Delivery, ParseError> {
        let bytes = serde_json::to_vec(body).unwrap();
        parse(
            &source(crate::config::SourceKind::Segment, key_field),
            &verified(&bytes),
            Version::from_ms(7).unwrap(),
        )
    }

    #[test]
    fn iso_times() {
        assert_eq!(
            iso_to_ms("2024-05-03T19:42:50.066Z"),
            Some(1_714_765_370_066)
        );
        assert_eq!(
            iso_to_ms("2024-05-03T19:42:50.066179717Z"),
            Some(1_714_765_370_066)
        );
        assert_eq!(
            iso_to_ms("2024-05-03T21:42:50+02:00"),
            Some(1_714_765_370_000)
        );
        assert_eq!(iso_to_ms("yesterday"), None);
    }

    #[test]
    fn identify_and_track_events_become_one_push_each() {
        let body = json!([
            identify("u1", json!(true), "m1"),
            identify("u2", json!(false), "m2"),
            track("u3", "Audience Entered", "m3"),
            track("u4", "Audience Exited", "m4"),
        ]);
        let p = run("userId", &body).unwrap();
        assert_eq!(p.note, None);
        let got: Vec<_> = p
            .pushes
            .iter()
            .map(|p| {
                (
                    p.cohort_id.as_str(),
                    p.cohort_name.as_deref(),
                    p.delivery_id.as_deref(),
                    p.changes.clone(),
                )
            })
            .collect();
        let c = |k: &str, include, v| Change {
            key: k.into(),
            include,
            version: Version::from_ms(v).unwrap(),
        };
        assert_eq!(
            got,
            vec![
                (
                    "aud_1",
                    Some("power_users"),
                    Some("m1"),
                    vec![c("u1", true, 1_714_765_370_066)]
                ),
                (
                    "aud_1",
                    Some("power_users"),
                    Some("m2"),
                    vec![c("u2", false, 1_714_765_370_066)]
                ),
                (
                    "aud_1",
                    Some("power_users"),
                    Some("m3"),
                    vec![c("u3", true, 1_714_765_380_000)]
                ),
                (
                    "aud_1",
                    Some("power_users"),
                    Some("m4"),
                    vec![c("u4", false, 1_714_765_380_000)]
                ),
            ]
        );
    }

    #[test]
    fn key_field_reaches_traits_and_context_traits() {
        let body = json!([
            identify("u1", json!(true), "m1"),
            track("u3", "Audience Entered", "m3")
        ]);
        let p = run("traits.email", &body).unwrap();
        let keys: Vec<_> = p.pushes.iter().map(|p| p.changes[0].key.clone()).collect();
        assert_eq!(keys, ["u1@example.com", "u3@example.com"]);
        let p = run("anonymousId", &body).unwrap();
        assert_eq!(p.skipped_without_key, 2);
        assert!(p.pushes.iter().all(|p| p.changes.is_empty()));
    }

    #[test]
    fn other_events_are_skipped_with_a_note() {
        let mut no_trait = identify("u1", json!(true), "m1");
        no_trait["traits"] = json!({"email": "x"});
        let page = json!({"type": "page", "userId": "u1", "context": {"personas": personas()}});
        let other_track = track("u1", "Order Completed", "m9");
        let no_personas =
            json!({"type": "identify", "userId": "u1", "traits": {"power_users": true}});
        let p = run("userId", &json!([no_trait, page, other_track, no_personas])).unwrap();
        assert!(p.pushes.is_empty());
        assert_eq!(p.note, Some(NOTHING_NOTE));
        let p = run("userId", &json!([identify("u1", json!(true), "m1"), page])).unwrap();
        assert_eq!(p.pushes.len(), 1);
        assert_eq!(p.note, Some(SKIPPED_NOTE));
    }

    #[test]
    fn wrong_shapes_are_errors_naming_the_field() {
        for (body, needle) in [
            (json!("text"), "one Segment event"),
            (json!([1]), "event 0: an event must be a JSON object"),
            (
                identify("u1", json!("yes"), "m"),
                "traits.power_users must be true or false",
            ),
            (
                {
                    let mut e = identify("u1", json!(true), "m");
                    e["timestamp"] = json!("not a time");
                    e
                },
                "timestamp",
            ),
            (
                {
                    let mut e = identify("u1", json!(true), "m");
                    e["context"]["personas"]["computation_id"] = json!(5);
                    e
                },
                "computation_id",
            ),
            (
                {
                    let mut e = track("u1", "Audience Entered", "m");
                    e["properties"]["audience_key"] = json!("other");
                    e
                },
                "audience_key",
            ),
        ] {
            let err = run("userId", &body).unwrap_err();
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
        let err = parse(
            &source(crate::config::SourceKind::Segment, "userId"),
            &verified(b"{not json"),
            Version::from_ms(0).unwrap(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("JSON"));
    }

    #[test]
    fn timestamps_before_1970_are_refused_naming_the_field() {
        let mut e = identify("u1", json!(true), "m");
        e["timestamp"] = json!("1969-12-31T23:59:59Z");
        let err = run("userId", &e).unwrap_err();
        assert_eq!(
            err,
            ParseError::VersionOutOfRange {
                field: "timestamp".into(),
                ms: -1000
            }
        );
        let err = run("userId", &json!([e])).unwrap_err();
        assert!(err.to_string().starts_with("event 0: timestamp is -1000 ms"), "{err}");
    }
}
