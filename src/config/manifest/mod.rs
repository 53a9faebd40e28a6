//! LaunchDarkly integration-framework manifests: the request-parser model
//! of a synced-segment partner, loaded and checked at startup.
//!
//! A synced-segment partner (Segment, RudderStack, Amplitude, Hightouch, …)
//! posts to `POST /api/v2/segment-targets/{integrationKey}` a body whose shape
//! that integration's manifest describes in
//! `capabilities.syncedSegment.requestParser`: JSON Pointers (RFC 6901) to the
//! environment's client-side ID, the cohort id and name, and the members,
//! with one of three ways to say "add" or "remove" ([`Mode`]):
//!
//! 1. `memberArrayPath` + `memberArrayParser.booleanMembershipPath`: per
//!    member, a true value adds it and a false one removes it;
//! 2. `memberArrayPath` + `arrayInclusion {path, matcher}`: when the value at
//!    `path` matches the regex every member is added, otherwise removed;
//! 3. `addMemberArrayPath` + `removeMemberArrayPath`: two arrays (adds apply
//!    before removes, so a member in both ends removed).
//!
//! `memberArrayParser.cohortIdPath` / `cohortNamePath` override the cohort of
//! one member, so one body can carry several cohorts.
//!
//! The manifests of every integration in LaunchDarkly's integration-framework
//! repository (<https://github.com/launchdarkly/integration-framework>) that
//! declares `syncedSegment` are built in ([`BUILTIN`]); more are loaded from
//! `partner.manifest_dirs` ([`load_configured`]). Reading a body with a
//! manifest is `sources::partner`'s job; the facts this relies on are in
//! docs/launchdarkly.md.

mod builtin;
mod files;

pub use builtin::BUILTIN;
pub(in crate::config) use files::load_configured;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

/// `capabilities.syncedSegment.requestParser`, exactly as the schema allows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestParser {
    pub environment_id_path: String,
    pub context_kind_path: Option<String>,
    pub cohort_id_path: String,
    pub cohort_name_path: String,
    pub cohort_url_path: Option<String>,
    pub member_array_path: Option<String>,
    pub add_member_array_path: Option<String>,
    pub remove_member_array_path: Option<String>,
    pub array_inclusion: Option<ArrayInclusion>,
    pub member_array_parser: MemberArrayParser,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrayInclusion {
    pub path: String,
    pub matcher: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MemberArrayParser {
    pub member_id_path: String,
    pub boolean_membership_path: Option<String>,
    pub cohort_id_path: Option<String>,
    pub cohort_name_path: Option<String>,
}

/// How a body says add or remove.
#[derive(Debug, Clone)]
pub enum Mode {
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
    /// Where the body's values are.
    pub parser: RequestParser,
    /// How the body says add or remove.
    pub mode: Mode,
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
            parser,
            mode,
        })
    }

    /// The JSON pointer of each member's id (relative to the member).
    pub fn member_id_path(&self) -> &str {
        &self.parser.member_array_parser.member_id_path
    }
}

#[cfg(test)]
mod tests;
