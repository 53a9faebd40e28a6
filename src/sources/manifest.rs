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

/// The built-in manifests, vendored from LaunchDarkly's integration-framework
/// repository unchanged: (integration key, manifest JSON).
pub const BUILTIN: &[(&str, &str)] = &[
    ("amplitude", include_str!("../../manifests/amplitude.json")),
    (
        "census-synced-segments",
        include_str!("../../manifests/census-synced-segments.json"),
    ),
    (
        "example-synced-segment-integration1",
        include_str!("../../manifests/example-synced-segment-integration1.json"),
    ),
    (
        "example-synced-segment-integration2",
        include_str!("../../manifests/example-synced-segment-integration2.json"),
    ),
    ("fulcrum", include_str!("../../manifests/fulcrum.json")),
    (
        "heap-inbound",
        include_str!("../../manifests/heap-inbound.json"),
    ),
    ("hightouch", include_str!("../../manifests/hightouch.json")),
    (
        "rudderstack",
        include_str!("../../manifests/rudderstack.json"),
    ),
    (
        "segment-audiences",
        include_str!("../../manifests/segment-audiences.json"),
    ),
    (
        "sumatra-synced-segments",
        include_str!("../../manifests/sumatra-synced-segments.json"),
    ),
    (
        "tealium-synced-segments",
        include_str!("../../manifests/tealium-synced-segments.json"),
    ),
    ("zeotap", include_str!("../../manifests/zeotap.json")),
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
            match pushes.iter_mut().find(|p| p.cohort_id == id) {
                Some(push) => push.changes.push(change),
                None => {
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
mod tests {
    use super::*;
    use serde_json::json;

    fn builtin(key: &str) -> Manifest {
        let (_, text) = BUILTIN.iter().find(|(k, _)| *k == key).unwrap();
        Manifest::load(key, text, None).unwrap()
    }

    fn changes(p: &Push) -> Vec<(&str, bool)> {
        p.changes
            .iter()
            .map(|c| (c.key.as_str(), c.include))
            .collect()
    }

    fn parse(m: &Manifest, body: Value) -> Result<PartnerRequest, ParseError> {
        m.parse(&serde_json::to_vec(&body).unwrap(), 42)
    }

    #[test]
    fn every_builtin_loads() {
        for (key, text) in BUILTIN {
            let m = Manifest::load(key, text, None).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(m.key, *key);
            assert!(!m.member_id_path().is_empty());
        }
        assert_eq!(BUILTIN.len(), 12);
    }

    #[test]
    fn a_present_false_removes_and_is_not_missing() {
        let m = builtin("segment-audiences");
        let r = parse(
            &m,
            json!({"environmentId": "env1", "contextKind": "user", "batch": [
                {"userId": "u1", "cohortId": "c1", "cohortName": "C", "value": false},
                {"userId": "u2", "cohortId": "c1", "cohortName": "C", "value": true},
                {"userId": 7, "cohortId": "c1", "cohortName": "C", "value": 0},
            ]}),
        )
        .unwrap();
        assert_eq!(r.environment_id, "env1");
        assert_eq!(r.parsed.pushes.len(), 1);
        assert_eq!(
            changes(&r.parsed.pushes[0]),
            vec![("u1", false), ("u2", true), ("7", false)]
        );
        assert!(r.parsed.pushes[0]
            .changes
            .iter()
            .all(|c| c.version_ms == 42));
    }

    #[test]
    fn empty_string_and_zero_are_values_for_required_fields() {
        let m = builtin("rudderstack");
        // cohortName "" and environmentId 0 are present: no "missing" error.
        let r = parse(
            &m,
            json!({"environmentId": 0, "cohortId": 5, "cohortName": "", "listData": {"add": [{"id": "a"}]}}),
        )
        .unwrap();
        assert_eq!(r.environment_id, "0");
        assert_eq!(r.parsed.pushes[0].cohort_id, "5");
        assert_eq!(r.parsed.pushes[0].cohort_name, None);
    }

    #[test]
    fn missing_membership_value_names_its_pointer() {
        let m = builtin("amplitude");
        let e = parse(
            &m,
            json!({"environmentId": "e", "batch": [{"userId": "u", "cohortId": "c", "cohortName": "n", "value": null}]}),
        )
        .unwrap_err();
        assert!(e.0.contains("\"/batch/0/value\""), "{e}");
    }

    #[test]
    fn array_inclusion_adds_on_match_and_removes_otherwise() {
        let m = builtin("hightouch");
        let body = |action: &str| {
            json!({"environmentId": "e", "cohortId": "c", "cohortName": "n", "action": action,
                   "members": [{"integration_distinct_id": "a"}, {"integration_distinct_id": 12}, {"other": 1}]})
        };
        let add = parse(&m, body("add")).unwrap();
        assert_eq!(
            changes(&add.parsed.pushes[0]),
            vec![("a", true), ("12", true)]
        );
        assert_eq!(add.parsed.skipped_without_key, 1);
        let remove = parse(&m, body("remove")).unwrap();
        assert_eq!(
            changes(&remove.parsed.pushes[0]),
            vec![("a", false), ("12", false)]
        );
        // "added" does not match ^add$.
        let other = parse(&m, body("added")).unwrap();
        assert!(other.parsed.pushes[0].changes.iter().all(|c| !c.include));
    }

    #[test]
    fn tealium_as_written_never_removes_and_an_override_fixes_it() {
        let (_, text) = BUILTIN
            .iter()
            .find(|(k, _)| *k == "tealium-synced-segments")
            .unwrap();
        let body = json!({"action": "remove_member", "parameters": {"tealium_project_id": "e",
            "tealium_cohort_id": "c", "tealium_cohort_name": "n", "members": [{"member_id": "m1"}]}});
        let as_written = Manifest::load("tealium-synced-segments", text, None).unwrap();
        assert_eq!(
            changes(&parse(&as_written, body.clone()).unwrap().parsed.pushes[0]),
            vec![("m1", true)]
        );
        let fixed = Manifest::load("tealium-synced-segments", text, Some("^add_member$")).unwrap();
        assert_eq!(
            changes(&parse(&fixed, body).unwrap().parsed.pushes[0]),
            vec![("m1", false)]
        );
    }

    #[test]
    fn add_and_remove_arrays_adds_first() {
        let m = builtin("heap-inbound");
        let r = parse(
            &m,
            json!({"parameters": {"environment_id": "e"}, "heap": {"data": {"segment": {"id": 99, "name": "S"},
                "add": [{"id": "a"}, {"id": "b"}], "remove": [{"id": "b"}]}}}),
        )
        .unwrap();
        assert_eq!(
            changes(&r.parsed.pushes[0]),
            vec![("a", true), ("b", true), ("b", false)]
        );
        assert_eq!(r.parsed.pushes[0].cohort_id, "99");
        // One array alone is enough.
        let only_remove = parse(
            &m,
            json!({"parameters": {"environment_id": "e"}, "heap": {"data": {"segment": {"id": 1, "name": "S"},
                "remove": [{"id": "b"}]}}}),
        )
        .unwrap();
        assert_eq!(changes(&only_remove.parsed.pushes[0]), vec![("b", false)]);
        let neither = parse(
            &m,
            json!({"parameters": {"environment_id": "e"}, "heap": {"data": {"segment": {"id": 1, "name": "S"}}}}),
        )
        .unwrap_err();
        assert!(neither.0.contains("/heap/data/add"), "{neither}");
    }

    #[test]
    fn per_member_cohort_overrides_make_several_pushes() {
        let m = builtin("amplitude");
        let r = parse(
            &m,
            json!({"environmentId": "e", "batch": [
                {"userId": "u1", "cohortId": "A", "cohortName": "Alpha", "cohortUrl": "https://x/A", "value": true},
                {"userId": "u2", "cohortId": "B", "cohortName": "Beta", "value": true},
                {"userId": "u3", "cohortId": "A", "cohortName": "Alpha", "value": false},
            ]}),
        )
        .unwrap();
        let p = &r.parsed.pushes;
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].cohort_id.as_str(), p[0].cohort_name.as_deref()),
            ("A", Some("Alpha"))
        );
        assert_eq!(changes(&p[0]), vec![("u1", true), ("u3", false)]);
        assert_eq!(
            (p[1].cohort_id.as_str(), p[1].cohort_name.as_deref()),
            ("B", Some("Beta"))
        );
        assert_eq!(changes(&p[1]), vec![("u2", true)]);
        assert_eq!(r.cohort_url.as_deref(), Some("https://x/A"));
        assert_eq!(r.context_kind, "user");
    }

    #[test]
    fn missing_required_paths_are_named() {
        let m = builtin("rudderstack");
        for (body, pointer) in [
            (
                json!({"cohortId": "c", "cohortName": "n", "listData": {"add": []}}),
                "/environmentId",
            ),
            (
                json!({"environmentId": "e", "cohortName": "n", "listData": {"add": []}}),
                "/cohortId",
            ),
            (
                json!({"environmentId": "e", "cohortId": "c", "cohortId2": 1}),
                "/cohortName",
            ),
        ] {
            let e = parse(&m, body).unwrap_err();
            assert!(e.0.contains(&format!("{pointer:?}")), "{pointer}: {e}");
        }
        let seg = builtin("segment-audiences");
        let e = parse(&seg, json!({"environmentId": "e", "batch": []})).unwrap_err();
        assert!(e.0.contains("\"/batch/0/cohortId\""), "{e}");
    }

    #[test]
    fn wrong_types_and_garbage_are_errors_not_panics() {
        for (key, _) in BUILTIN {
            let m = builtin(key);
            for body in [
                json!(null),
                json!([]),
                json!("x"),
                json!({"environmentId": {"a": 1}}),
                json!({"batch": "nope", "environmentId": "e"}),
            ] {
                assert!(parse(&m, body).is_err(), "{key}");
            }
            assert!(m.parse(b"{not json", 1).is_err());
            assert!(m.parse(b"", 1).is_err());
        }
    }

    /// Names the built-in manifests point at, so random bodies often reach deep paths.
    const NAMES: &[&str] = &[
        "environmentId",
        "environment_id",
        "contextKind",
        "context_kind",
        "batch",
        "userId",
        "user_id",
        "value",
        "cohortId",
        "cohort_id",
        "cohortName",
        "cohort_name",
        "cohortUrl",
        "listData",
        "included",
        "add",
        "remove",
        "action",
        "members",
        "parameters",
        "heap",
        "data",
        "segment",
        "id",
        "name",
        "customer_config",
        "fields",
        "0",
        "member_id",
        "integration_distinct_id",
        "mixpanel_distinct_id",
        "tealium_project_id",
        "integration_project_id",
        "mixpanel_project_id",
        "tealium_cohort_id",
        "integration_cohort_id",
        "mixpanel_cohort_id",
        "tealium_cohort_name",
        "integration_cohort_name",
        "mixpanel_cohort_name",
    ];

    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            prop::sample::select(vec!["", "add", "remove_member", "add_members", "x", "true"])
                .prop_map(Value::from),
            ".{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(prop::sample::select(NAMES.to_vec()), inner, 0..6)
                    .prop_map(|m| Value::Object(
                        m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                    )),
            ]
        })
    }

    proptest::proptest! {
        /// Bad input of any shape is an error or a parse, never a panic.
        #[test]
        fn any_body_parses_or_errs_without_panicking(body in any_json()) {
            let bytes = serde_json::to_vec(&body).unwrap();
            for (key, text) in BUILTIN {
                let m = Manifest::load(key, text, None).unwrap();
                if let Ok(r) = m.parse(&bytes, 1) {
                    proptest::prop_assert!(!r.parsed.pushes.is_empty());
                    for p in &r.parsed.pushes {
                        proptest::prop_assert!(!p.cohort_id.trim().is_empty());
                        proptest::prop_assert!(p.changes.iter().all(|c| !c.key.trim().is_empty()));
                    }
                }
            }
        }
    }

    #[test]
    fn invalid_manifests_are_refused() {
        let rp = |parser: Value| {
            json!({"name": "x", "capabilities": {"syncedSegment": {"requestParser": parser}}})
                .to_string()
        };
        let base = json!({"environmentIdPath": "/e", "cohortIdPath": "/c", "cohortNamePath": "/n",
                          "memberArrayParser": {"memberIdPath": "/id"}});
        // No mode at all.
        assert!(Manifest::load("x", &rp(base.clone()), None).is_err());
        // Unknown field.
        let mut b = base.clone();
        b["memberArrayPath"] = json!("/m");
        b["memberArrayParser"]["booleanMembershipPath"] = json!("/v");
        assert!(Manifest::load("x", &rp(b.clone()), None).is_ok());
        b["surprise"] = json!(1);
        assert!(Manifest::load("x", &rp(b), None).is_err());
        // Not a pointer.
        let mut b = base.clone();
        b["addMemberArrayPath"] = json!("add");
        b["removeMemberArrayPath"] = json!("/remove");
        assert!(Manifest::load("x", &rp(b), None)
            .unwrap_err()
            .contains("addMemberArrayPath"));
        // Bad regex.
        let mut b = base;
        b["memberArrayPath"] = json!("/m");
        b["arrayInclusion"] = json!({"path": "/a", "matcher": "(("});
        assert!(Manifest::load("x", &rp(b), None).is_err());
        // No syncedSegment capability.
        assert!(Manifest::load("x", r#"{"name": "census"}"#, None).is_err());
        assert!(Manifest::load("x", "not json", None).is_err());
    }
}
