//! Amplitude Cohort Webhooks.
//!
//! `{"cohort_id", "cohort_name", "in_cohort", "computed_time", "message_id", "users": [...]}`:
//! one direction per request (`in_cohort` true adds every user, false removes
//! them). `message_id` de-duplicates retries; `computed_time` (epoch seconds,
//! usually a string) orders changes.

use super::member::collect_changes_raw;
use super::{ParseError, Parsed, Push};
use crate::config::Source;
use crate::verify::Verified;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

#[derive(Deserialize)]
struct Body<'a> {
    cohort_id: Option<Value>,
    cohort_name: Option<String>,
    in_cohort: Option<bool>,
    computed_time: Option<Value>,
    message_id: Option<String>,
    /// Left as raw text: only each user's key is read from it (see
    /// [`collect_changes_raw`]), so no `Value` tree is built per user.
    #[serde(borrow)]
    users: Option<&'a RawValue>,
}

/// `"1767225600"`, `1767225600`, `"1767225600.25"` or milliseconds → ms.
pub(crate) fn epoch_to_ms(v: &Value) -> Option<i64> {
    let f = match v {
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    if !f.is_finite() || !(0.0..=1e15).contains(&f) {
        return None;
    }
    Some(if f < 1e12 {
        (f * 1000.0) as i64
    } else {
        f as i64
    })
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub fn parse(source: &Source, verified: &Verified<'_>, now_ms: i64) -> Result<Parsed, ParseError> {
    let body: Body<'_> = serde_json::from_slice(verified.body()).map_err(ParseError::json)?;
    let cohort_id = body
        .cohort_id
        .as_ref()
        .and_then(id_text)
        .ok_or_else(|| ParseError("cohort_id is missing or not a string".into()))?;
    let include = body
        .in_cohort
        .ok_or_else(|| ParseError("in_cohort is missing or not a boolean".into()))?;
    let users = body
        .users
        .ok_or_else(|| ParseError("users is missing or not an array".into()))?;
    let version_ms = match &body.computed_time {
        None | Some(Value::Null) => now_ms,
        Some(v) => epoch_to_ms(v)
            .ok_or_else(|| ParseError("computed_time is not an epoch time in seconds".into()))?,
    };
    let mut skipped = 0;
    let mut changes = Vec::new();
    collect_changes_raw(
        users,
        &source.key_field,
        include,
        version_ms,
        &mut changes,
        &mut skipped,
    )
    .map_err(ParseError::json)?;
    Ok(Parsed::one(
        Push {
            cohort_id,
            cohort_name: body.cohort_name,
            delivery_id: body.message_id.filter(|m| !m.is_empty()),
            changes,
            snapshot: None,
        },
        skipped,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs() {
        assert_eq!(
            epoch_to_ms(&Value::from("1767225600")),
            Some(1_767_225_600_000)
        );
        assert_eq!(
            epoch_to_ms(&Value::from(1767225600)),
            Some(1_767_225_600_000)
        );
        assert_eq!(
            epoch_to_ms(&Value::from("1767225600.25")),
            Some(1_767_225_600_250)
        );
        assert_eq!(
            epoch_to_ms(&Value::from(1_767_225_600_000i64)),
            Some(1_767_225_600_000)
        );
        assert_eq!(epoch_to_ms(&Value::from("soon")), None);
        assert_eq!(epoch_to_ms(&Value::from(-1)), None);
        assert_eq!(epoch_to_ms(&Value::Bool(true)), None);
    }
}
