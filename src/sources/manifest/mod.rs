//! LaunchDarkly integration-framework manifests as request parsers.
//!
//! A synced-segment partner (Segment, RudderStack, Amplitude, Hightouch, …)
//! posts to `POST /api/v2/segment-targets/{integrationKey}` a body whose shape
//! that integration's manifest describes in
//! `capabilities.syncedSegment.requestParser`: JSON Pointers (RFC 6901) to the
//! environment's client-side ID, the cohort id and name, and the members,
//! with one of three ways to say "add" or "remove":
//!
//! 1. `memberArrayPath` + `memberArrayParser.booleanMembershipPath`: per
//!    member, a true value adds it and a false one removes it;
//! 2. `memberArrayPath` + `arrayInclusion {path, matcher}`: when the value at
//!    `path` matches the regex every member is added, otherwise removed;
//! 3. `addMemberArrayPath` + `removeMemberArrayPath`: two arrays (adds apply
//!    before removes, so a member in both ends removed).
//!
//! `memberArrayParser.cohortIdPath` / `cohortNamePath` override the cohort of
//! one member, so one body can carry several cohorts (one [`Push`] each).
//!
//! A value that is present is a value: `false`, `0` and `""` are not
//! "missing" (LaunchDarkly's own validator gets this wrong). Only an absent
//! key or `null` is missing. A missing required value is a [`ParseError`]
//! that names the JSON pointer.
//!
//! The manifests of every integration in LaunchDarkly's integration-framework
//! repository that declares `syncedSegment` are built in ([`BUILTIN`]); more
//! can be loaded from `partner.manifest_dirs` at startup.

use super::{Change, ParseError, Parsed, Push};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

/// The built-in manifests, vendored from LaunchDarkly's integration-framework
/// repository unchanged: (integration key, manifest JSON).
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "amplitude",
        include_str!("../../../manifests/amplitude.json"),
    ),
    (
        "census-synced-segments",
        include_str!("../../../manifests/census-synced-segments.json"),
    ),
    (
        "example-synced-segment-integration1",
        include_str!("../../../manifests/example-synced-segment-integration1.json"),
    ),
    (
        "example-synced-segment-integration2",
        include_str!("../../../manifests/example-synced-segment-integration2.json"),
    ),
    ("fulcrum", include_str!("../../../manifests/fulcrum.json")),
    (
        "heap-inbound",
        include_str!("../../../manifests/heap-inbound.json"),
    ),
    (
        "hightouch",
        include_str!("../../../manifests/hightouch.json"),
    ),
    (
        "rudderstack",
        include_str!("../../../manifests/rudderstack.json"),
    ),
    (
        "segment-audiences",
        include_str!("../../../manifests/segment-audiences.json"),
    ),
    (
        "sumatra-synced-segments",
        include_str!("../../../manifests/sumatra-synced-segments.json"),
    ),
    (
        "tealium-synced-segments",
        include_str!("../../../manifests/tealium-synced-segments.json"),
    ),
    ("zeotap", include_str!("../../../manifests/zeotap.json")),
];

/// The context kind when the manifest has no `contextKindPath` or the body
/// has no value there.
pub const DEFAULT_CONTEXT_KIND: &str = "user";

/// `capabilities.syncedSegment.requestParser`, exactly as the schema allows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RequestParser {
    environment_id_path: String,
    context_kind_path: Option<String>,
    cohort_id_path: String,
    cohort_name_path: String,
    cohort_url_path: Option<String>,
    member_array_path: Option<String>,
    add_member_array_path: Option<String>,
    remove_member_array_path: Option<String>,
    array_inclusion: Option<ArrayInclusion>,
    member_array_parser: MemberArrayParser,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArrayInclusion {
    path: String,
    matcher: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MemberArrayParser {
    member_id_path: String,
    boolean_membership_path: Option<String>,
    cohort_id_path: Option<String>,
    cohort_name_path: Option<String>,
}

/// How a body says add or remove.
#[derive(Debug, Clone)]
enum Mode {
    /// One array; each member's value at `membership` says in (true) or out.
    Boolean { array: String, membership: String },
    /// One array; the value at `path` matching `matcher` adds every member.
    Inclusion {
        array: String,
        path: String,
        matcher: Regex,
    },
    /// Two arrays.
    AddRemove { add: String, remove: String },
}

/// One loaded manifest: a request parser for one integration key.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The integration key (`segment-audiences`): the URL's last segment.
    pub key: String,
    /// The manifest's `name`, for logs and docs.
    pub name: String,
    parser: RequestParser,
    mode: Mode,
}

/// What one partner request carried, before it is routed to a destination.
#[derive(Debug)]
pub struct PartnerRequest {
    /// The LaunchDarkly client-side ID the sender addressed.
    pub environment_id: String,
    /// The context kind of the members (default `user`).
    pub context_kind: String,
    /// The cohort's page at the sender, when the manifest has `cohortUrlPath`.
    pub cohort_url: Option<String>,
    /// One push per cohort in the body (several with per-member overrides).
    pub parsed: Parsed,
}

fn check_pointer(what: &str, p: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('/') {
        Ok(())
    } else {
        Err(format!(
            "{what} {p:?} is not a JSON pointer (it must be empty or start with '/')"
        ))
    }
}

impl Manifest {
    /// Loads a manifest's JSON text. `matcher_override` replaces
    /// `arrayInclusion.matcher` (for manifests whose matcher is wrong, such as
    /// tealium's). Errors say what is wrong, for the caller to name the file.
    pub fn load(key: &str, text: &str, matcher_override: Option<&str>) -> Result<Manifest, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let name = doc
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(key)
            .to_string();
        let rp = doc
            .pointer("/capabilities/syncedSegment/requestParser")
            .ok_or("has no capabilities.syncedSegment.requestParser")?;
        let parser: RequestParser = serde_json::from_value(rp.clone())
            .map_err(|e| format!("capabilities.syncedSegment.requestParser: {e}"))?;
        let m = &parser.member_array_parser;
        for (what, p) in [
            ("environmentIdPath", Some(&parser.environment_id_path)),
            ("contextKindPath", parser.context_kind_path.as_ref()),
            ("cohortIdPath", Some(&parser.cohort_id_path)),
            ("cohortNamePath", Some(&parser.cohort_name_path)),
            ("cohortUrlPath", parser.cohort_url_path.as_ref()),
            ("memberArrayPath", parser.member_array_path.as_ref()),
            ("addMemberArrayPath", parser.add_member_array_path.as_ref()),
            (
                "removeMemberArrayPath",
                parser.remove_member_array_path.as_ref(),
            ),
            (
                "arrayInclusion.path",
                parser.array_inclusion.as_ref().map(|a| &a.path),
            ),
            ("memberArrayParser.memberIdPath", Some(&m.member_id_path)),
            (
                "memberArrayParser.booleanMembershipPath",
                m.boolean_membership_path.as_ref(),
            ),
            ("memberArrayParser.cohortIdPath", m.cohort_id_path.as_ref()),
            (
                "memberArrayParser.cohortNamePath",
                m.cohort_name_path.as_ref(),
            ),
        ] {
            if let Some(p) = p {
                check_pointer(what, p)?;
            }
        }
        let mode = match (
            &parser.member_array_path,
            &m.boolean_membership_path,
            &parser.array_inclusion,
            &parser.add_member_array_path,
            &parser.remove_member_array_path,
        ) {
            (Some(array), Some(membership), None, None, None) => Mode::Boolean {
                array: array.clone(),
                membership: membership.clone(),
            },
            (Some(array), None, Some(inc), None, None) => {
                let pattern = matcher_override.unwrap_or(&inc.matcher);
                let matcher = Regex::new(pattern).map_err(|e| {
                    format!("arrayInclusion.matcher {pattern:?} is not a regex: {e}")
                })?;
                Mode::Inclusion {
                    array: array.clone(),
                    path: inc.path.clone(),
                    matcher,
                }
            }
            (None, None, None, Some(add), Some(remove)) => Mode::AddRemove {
                add: add.clone(),
                remove: remove.clone(),
            },
            _ => {
                return Err(
                    "the request parser must use exactly one of: memberArrayPath with \
                     memberArrayParser.booleanMembershipPath; memberArrayPath with arrayInclusion; \
                     addMemberArrayPath with removeMemberArrayPath"
                        .into(),
                )
            }
        };
        if matcher_override.is_some() && !matches!(mode, Mode::Inclusion { .. }) {
            return Err(
                "a matcher override is configured, but the manifest has no arrayInclusion".into(),
            );
        }
        Ok(Manifest {
            key: key.to_string(),
            name,
            parser,
            mode,
        })
    }

    /// The JSON pointer of each member's id (relative to the member).
    pub fn member_id_path(&self) -> &str {
        &self.parser.member_array_parser.member_id_path
    }

    /// The regex deciding add or remove, for manifests using `arrayInclusion`.
    pub fn matcher(&self) -> Option<&str> {
        match &self.mode {
            Mode::Inclusion { matcher, .. } => Some(matcher.as_str()),
            _ => None,
        }
    }

    /// Parses a body. Every change gets `now_ms` as its version (partners
    /// send no time of their own). Members without an id are counted in
    /// `skipped_without_key`.
    pub fn parse(&self, body: &[u8], now_ms: i64) -> Result<PartnerRequest, ParseError> {
        let doc: Value = serde_json::from_slice(body).map_err(ParseError::json)?;
        let p = &self.parser;
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
            return Err(ParseError(format!(
                "the cohort id at {:?} is empty",
                p.cohort_id_path
            )));
        }
        let cohort_name = text_at(&doc, &p.cohort_name_path, "cohortName")?
            .ok_or_else(|| missing(&p.cohort_name_path, "cohortName"))?;
        let cohort_url = match &p.cohort_url_path {
            Some(path) => text_at(&doc, path, "cohortUrl")?,
            None => None,
        };

        // (member, include) in body order; adds before removes in AddRemove mode.
        let mut members: Vec<(&Value, String, bool)> = Vec::new();
        match &self.mode {
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
                        return Err(ParseError(format!(
                            "the value at {path:?} (the action) must be a string"
                        )))
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
                    return Err(ParseError(format!(
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
            let Some(key) = member_id(m.pointer(&mp.member_id_path)) else {
                skipped += 1;
                continue;
            };
            let own_id = match &mp.cohort_id_path {
                Some(path) => text_at(m, path, "cohortId")
                    .map_err(|e| ParseError(format!("{at}: {}", e.0)))?
                    .filter(|id| !id.trim().is_empty()),
                None => None,
            };
            let own_name = match &mp.cohort_name_path {
                Some(path) => text_at(m, path, "cohortName")
                    .map_err(|e| ParseError(format!("{at}: {}", e.0)))?,
                None => None,
            };
            let id = own_id.unwrap_or_else(|| cohort_id.clone());
            let change = Change {
                key,
                include,
                version_ms: now_ms,
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
                    })
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
            cohort_url,
            parsed: Parsed {
                pushes,
                skipped_without_key: skipped,
                skipped_invalid_key: 0,
                note: None,
                arm_snapshot: Vec::new(),
            },
        })
    }
}

fn missing(pointer: &str, what: &str) -> ParseError {
    ParseError(format!(
        "required value {pointer:?} ({what}) is missing from the body"
    ))
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
        Some(_) => Err(ParseError(format!(
            "the value at {pointer:?} ({what}) must be a string"
        ))),
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
        Some(_) => Err(ParseError(format!(
            "the value at {pointer:?} must be an array of members"
        ))),
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
            _ => Err(ParseError(format!(
                "the membership value at {at:?} must be true or false, not {s:?}"
            ))),
        },
        Some(_) => Err(ParseError(format!(
            "the membership value at {at:?} must be true or false"
        ))),
        None => Err(missing(at, "membership")),
    }
}

/// A member id: a non-blank string, or a number as its decimal text.
fn member_id(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
