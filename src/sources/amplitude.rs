//! Amplitude Cohort Webhooks.
//!
//! `{"cohort_id", "cohort_name", "in_cohort", "computed_time", "message_id", "users": [...]}`:
//! one direction per request (`in_cohort` true adds every user, false removes
//! them). `message_id` de-duplicates retries; `computed_time` (epoch seconds,
//! usually a string) orders changes.

use super::member_key::{collect_changes_raw, id_text};
use super::{ParseError, Delivery, Push, Version};
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
/// At most 10^15 ms (year 33658), so always a [`Version`].
pub(crate) fn epoch_to_ms(v: &Value) -> Option<Version> {
    let f = match v {
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    if !f.is_finite() || !(0.0..=1e15).contains(&f) {
        return None;
    }
    Version::from_ms(if f < 1e12 {
        (f * 1000.0) as i64
    } else {
        f as i64
    })
}

pub fn parse(source: &Source, verified: &Verified<'_>, now: Version) -> Result<Delivery, ParseError> {
    let body: Body<'_> = serde_json::from_slice(verified.body()).map_err(ParseError::json)?;
    let cohort_id = body
        .cohort_id
        .as_ref()
        .and_then(id_text)
        .ok_or_else(|| ParseError::missing_or_not("cohort_id", "a string"))?;
    let include = body
        .in_cohort
        .ok_or_else(|| ParseError::missing_or_not("in_cohort", "a boolean"))?;
    let users = body
        .users
        .ok_or_else(|| ParseError::missing_or_not("users", "an array"))?;
    let version = match &body.computed_time {
        None | Some(Value::Null) => now,
        Some(v) => epoch_to_ms(v).ok_or(ParseError::Unreadable {
            field: "computed_time".into(),
            expected: "an epoch time in seconds",
        })?,
    };
    let mut skipped = 0;
    let mut changes = Vec::new();
    collect_changes_raw(
        users,
        &source.key_field,
        include,
        version,
        &mut changes,
        &mut skipped,
    )
    .map_err(ParseError::json)?;
    Ok(Delivery::one(
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
    use crate::config::SourceKind;
    use crate::sources::test_support::{source, verified};
    use serde_json::json;

    fn ms(v: &Value) -> Option<i64> {
        epoch_to_ms(v).map(Version::ms)
    }

    #[test]
    fn epochs() {
        assert_eq!(
            ms(&Value::from("1767225600")),
            Some(1_767_225_600_000)
        );
        assert_eq!(
            ms(&Value::from(1767225600)),
            Some(1_767_225_600_000)
        );
        assert_eq!(
            ms(&Value::from("1767225600.25")),
            Some(1_767_225_600_250)
        );
        assert_eq!(
            ms(&Value::from(1_767_225_600_000i64)),
            Some(1_767_225_600_000)
        );
        assert_eq!(ms(&Value::from("soon")), None);
        assert_eq!(ms(&Value::from(-1)), None);
        assert_eq!(ms(&Value::Bool(true)), None);
    }

    #[test]
    fn computed_time_out_of_range_is_refused_naming_it() {
        for t in [json!(-1), json!("-1767225600"), json!(9_007_199_254_740_992i64), json!(1e16)] {
            let body = json!({"cohort_id": "c", "in_cohort": true, "computed_time": t, "users": []});
            let bytes = serde_json::to_vec(&body).unwrap();
            let now = Version::from_ms(1).unwrap();
            let err = parse(&source(SourceKind::Amplitude, "user_id"), &verified(&bytes), now)
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                "computed_time is not an epoch time in seconds"
            );
        }
    }
}
