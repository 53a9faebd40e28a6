//! Partner pushes: a body read with its integration's manifest
//! ([`crate::config::Manifest`]).
//!
//! A value that is present is a value: `false`, `0` and `""` are not
//! "missing" (LaunchDarkly's own validator gets this wrong). Only an absent
//! key or `null` is missing. A missing required value is a [`ParseError`]
//! that names the JSON pointer.

use super::member_key::id_text;
use super::{Change, Delivery, ParseError, Push, Version};
use crate::config::manifest::{Manifest, Mode};
use crate::verify::Verified;
use serde_json::Value;
use std::collections::HashMap;

/// The context kind when the manifest has no `contextKindPath` or the body
/// has no value there.
pub const DEFAULT_CONTEXT_KIND: &str = "user";

/// What one partner request carried, before it is routed to a destination.
#[derive(Debug)]
pub struct PartnerRequest {
    /// The LaunchDarkly client-side ID the sender addressed.
    pub environment_id: String,
    /// The context kind of the members (default `user`).
    pub context_kind: String,
    /// One push per cohort in the body (several with per-member overrides).
    pub parsed: Delivery,
}

/// Parses a verified body (the caller's partner token matched) with `manifest`. Every change gets `now_ms`, the arrival
/// time, as its version (partners send no time of their own). Members without an id are counted in
/// `skipped_without_key`.
pub fn parse(
    manifest: &Manifest,
    verified: &Verified<'_>,
    now_ms: i64,
) -> Result<PartnerRequest, ParseError> {
    let now = Version::of_field(now_ms, "the arrival time")?;
    let doc: Value = serde_json::from_slice(verified.body()).map_err(ParseError::json)?;
    let p = &manifest.parser;
    let environment_id = text_at(&doc, &p.environment_id_path, "environmentId")?
        .ok_or_else(|| missing(&p.environment_id_path, "environmentId"))?;
    let context_kind = match &p.context_kind_path {
        Some(path) => text_at(&doc, path, "contextKind")?,
        None => None,
    }
    .unwrap_or_else(|| DEFAULT_CONTEXT_KIND.to_string());
    let cohort_id = text_at(&doc, &p.cohort_id_path, "cohortId")?
        .ok_or_else(|| missing(&p.cohort_id_path, "cohortId"))?;
    if cohort_id.trim().is_empty() {
        return Err(ParseError::Inconsistent(format!(
            "the cohort id at {:?} is empty",
            p.cohort_id_path
        )));
    }
    let cohort_name = text_at(&doc, &p.cohort_name_path, "cohortName")?
        .ok_or_else(|| missing(&p.cohort_name_path, "cohortName"))?;

    // (member, include) in body order; adds before removes in AddRemove mode.
    let mut members: Vec<(&Value, String, bool)> = Vec::new();
    match &manifest.mode {
        Mode::Boolean { array, membership } => {
            for (i, m) in array_at(&doc, array)?.iter().enumerate() {
                let at = format!("{array}/{i}{membership}");
                let include = truthy(m.pointer(membership), &at)?;
                members.push((m, at, include));
            }
        }
        Mode::Inclusion {
            array,
            path,
            matcher,
        } => {
            let action = match present(doc.pointer(path)) {
                Some(Value::String(s)) => s.clone(),
                Some(v @ (Value::Bool(_) | Value::Number(_))) => v.to_string(),
                Some(_) => {
                    return Err(ParseError::wrong_type(
                        format!("the value at {path:?} (the action)"),
                        "a string",
                    ))
                }
                None => return Err(missing(path, "the action")),
            };
            let include = matcher.is_match(&action);
            for (i, m) in array_at(&doc, array)?.iter().enumerate() {
                members.push((m, format!("{array}/{i}"), include));
            }
        }
        Mode::AddRemove { add, remove } => {
            let adds = optional_array_at(&doc, add)?;
            let removes = optional_array_at(&doc, remove)?;
            if adds.is_none() && removes.is_none() {
                return Err(ParseError::Inconsistent(format!(
                    "neither {add:?} nor {remove:?} is present in the body (one member array is required)"
                )));
            }
            for (i, m) in adds.into_iter().flatten().enumerate() {
                members.push((m, format!("{add}/{i}"), true));
            }
            for (i, m) in removes.into_iter().flatten().enumerate() {
                members.push((m, format!("{remove}/{i}"), false));
            }
        }
    }

    let mp = &p.member_array_parser;
    let mut pushes: Vec<Push> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut skipped = 0u64;
    for (m, at, include) in members {
        let Some(key) = m.pointer(&mp.member_id_path).and_then(id_text) else {
            skipped += 1;
            continue;
        };
        let own_id = match &mp.cohort_id_path {
            Some(path) => text_at(m, path, "cohortId")
                .map_err(|e| at_member(&at, e))?
                .filter(|id| !id.trim().is_empty()),
            None => None,
        };
        let own_name = match &mp.cohort_name_path {
            Some(path) => text_at(m, path, "cohortName").map_err(|e| at_member(&at, e))?,
            None => None,
        };
        let id = own_id.unwrap_or_else(|| cohort_id.clone());
        let change = Change {
            key,
            include,
            version: now,
        };
        // Cohort id → its push: linear in the members, however many cohorts.
        match index.get(&id) {
            Some(&i) => pushes[i].changes.push(change),
            None => {
                index.insert(id.clone(), pushes.len());
                let name = if id == cohort_id {
                    own_name.unwrap_or_else(|| cohort_name.clone())
                } else {
                    own_name.unwrap_or_default()
                };
                pushes.push(Push {
                    cohort_id: id,
                    cohort_name: Some(name).filter(|n| !n.is_empty()),
                    delivery_id: None,
                    changes: vec![change],
                    snapshot: None,
                });
            }
        }
    }
    if pushes.is_empty() {
        // Nothing to apply, but the cohort is known: keep its name.
        pushes.push(Push {
            cohort_id,
            cohort_name: Some(cohort_name).filter(|n| !n.is_empty()),
            delivery_id: None,
            changes: Vec::new(),
            snapshot: None,
        });
    }
    Ok(PartnerRequest {
        environment_id,
        context_kind,
        parsed: Delivery {
            pushes,
            skipped_without_key: skipped,
            skipped_invalid_key: 0,
            note: None,
            arm_snapshot: Vec::new(),
        },
    })
}

fn missing(pointer: &str, what: &'static str) -> ParseError {
    ParseError::MissingValue {
        pointer: pointer.into(),
        what,
    }
}

fn at_member(at: &str, error: ParseError) -> ParseError {
    ParseError::AtMember {
        at: at.into(),
        error: Box::new(error),
    }
}

/// `null` counts as absent; every other value, `false`, `0` and `""` included, is present.
fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

/// A string, or a number as its decimal text; `None` when absent.
fn text_at(doc: &Value, pointer: &str, what: &str) -> Result<Option<String>, ParseError> {
    match present(doc.pointer(pointer)) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(ParseError::wrong_type(
            format!("the value at {pointer:?} ({what})"),
            "a string",
        )),
    }
}

fn array_at<'a>(doc: &'a Value, pointer: &str) -> Result<&'a Vec<Value>, ParseError> {
    optional_array_at(doc, pointer)?.ok_or_else(|| missing(pointer, "the member array"))
}

fn optional_array_at<'a>(
    doc: &'a Value,
    pointer: &str,
) -> Result<Option<&'a Vec<Value>>, ParseError> {
    match present(doc.pointer(pointer)) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(ParseError::wrong_type(
            format!("the value at {pointer:?}"),
            "an array of members",
        )),
    }
}

/// A member's membership value: booleans as they are, `0`/`""`/`"false"` out,
/// other numbers and `"true"`/`"1"` in. Absent or `null` is an error naming
/// where it was expected.
fn truthy(v: Option<&Value>, at: &str) -> Result<bool, ParseError> {
    match present(v) {
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Number(n)) => Ok(n.as_f64().is_some_and(|f| f != 0.0)),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" | "" => Ok(false),
            _ => Err(ParseError::wrong_type(
                format!("the membership value at {at:?}"),
                format!("true or false, not {s:?}"),
            )),
        },
        Some(_) => Err(ParseError::wrong_type(
            format!("the membership value at {at:?}"),
            "true or false",
        )),
        None => Err(missing(at, "membership")),
    }
}

#[cfg(test)]
mod tests;
