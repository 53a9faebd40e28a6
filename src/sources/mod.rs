//! Source kinds: each file turns a verified body into [`Push`]es.
//!
//! Adding a source is one file here plus one line in [`SourceKind`]'s table
//! (and a scheme in `verify/` if its signature is new). Parsers are lenient
//! about fields they do not use and strict about the types of those they do:
//! a wrong shape is a [`ParseError`] (400), never a panic.

mod amplitude;
mod heap;
pub mod manifest;
mod member;
mod mixpanel;
mod segment;
mod standard_webhooks;

pub use member::{collect_changes, extract_key};
pub use mixpanel::action_of as mixpanel_action;

use crate::config::Source;
use crate::verify::Verified;
use std::fmt;
use std::str::FromStr;

/// The kinds of sender the bridge understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SourceKind {
    Amplitude,
    Heap,
    /// LaunchDarkly partner pushes (`POST /api/v2/segment-targets/{integrationKey}`),
    /// parsed by an integration-framework manifest; configured in `[partner]`,
    /// never as a `[[sources]]` kind.
    Partner,
    Segment,
    Mixpanel,
    StandardWebhooks,
}

impl SourceKind {
    /// Every kind: its config name and the member field holding the key by default.
    const TABLE: &'static [(SourceKind, &'static str, &'static str)] = &[
        (SourceKind::Amplitude, "amplitude", "user_id"),
        (SourceKind::Heap, "heap", "id"),
        (SourceKind::Partner, "partner", "id"),
        (SourceKind::Segment, "segment", "userId"),
        (SourceKind::Mixpanel, "mixpanel", "mixpanel_distinct_id"),
        (SourceKind::StandardWebhooks, "standard-webhooks", "key"),
    ];

    /// The kinds a `[[sources]]` entry may name (`partner` is configured in `[partner]`).
    pub fn names() -> Vec<&'static str> {
        Self::TABLE
            .iter()
            .filter(|(k, _, _)| *k != SourceKind::Partner)
            .map(|(_, n, _)| *n)
            .collect()
    }

    pub fn as_str(self) -> &'static str {
        Self::TABLE
            .iter()
            .find(|(k, _, _)| *k == self)
            .map(|(_, n, _)| *n)
            .unwrap_or("unknown")
    }

    pub fn default_key_field(self) -> &'static str {
        Self::TABLE
            .iter()
            .find(|(k, _, _)| *k == self)
            .map(|(_, _, f)| *f)
            .unwrap_or("id")
    }
}

impl FromStr for SourceKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::TABLE
            .iter()
            .find(|(_, n, _)| *n == s)
            .map(|(k, _, _)| *k)
            .ok_or(())
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One membership change of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The LaunchDarkly context key.
    pub key: String,
    /// `true`: should be in the segment; `false`: should not.
    pub include: bool,
    /// Order of this change (ms); an older version never overrides a newer one.
    pub version_ms: i64,
}

/// The changes of one cohort carried by one delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Push {
    pub cohort_id: String,
    pub cohort_name: Option<String>,
    /// The sender's idempotency key: a retried delivery is applied once.
    pub delivery_id: Option<String>,
    pub changes: Vec<Change>,
    /// Set when this push is one page of a full snapshot of the cohort: once
    /// every page of the session has arrived, members not in any page are
    /// removed (DESIGN.md, "Full snapshots"; `store::snapshot`).
    pub snapshot: Option<Snapshot>,
}

/// One page of a full snapshot (Mixpanel `members`, a Standard Webhooks
/// body with `snapshot: true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Pages of one session are collected together; a new session starts afresh.
    pub session: String,
    /// 1-based page number.
    pub page: u32,
    /// How many pages the session has (≥ 1).
    pub total_pages: u32,
    /// The version of this page's changes. The session's first page to
    /// arrive fixes its start: members not in any page and not newer than
    /// the start are removed, at the start version.
    pub version_ms: i64,
    /// Stage this session only if the cohort was armed for a replace (Heap's
    /// `segment.users.drain`: "the next full sync replaces membership"): the
    /// first page 1 after the arming adopts its session; otherwise the pages
    /// are applied as plain changes.
    pub armed_only: bool,
}

/// What one request carried.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub pushes: Vec<Push>,
    /// Cohorts whose next full sync replaces their membership (see
    /// [`Snapshot::armed_only`]), with the cohort's name if known.
    pub arm_snapshot: Vec<(String, Option<String>)>,
    /// Members without the configured key field: counted, not stored.
    pub skipped_without_key: u64,
    /// Members whose key is longer than `max_key_bytes` or holds a control
    /// character: counted, not stored ([`drop_invalid_keys`]).
    pub skipped_invalid_key: u64,
    /// Set when the request was understood but carries nothing to apply.
    pub note: Option<&'static str>,
}

impl Parsed {
    /// A request that carried one push.
    pub fn one(push: Push, skipped_without_key: u64) -> Parsed {
        Parsed {
            pushes: vec![push],
            skipped_without_key,
            ..Parsed::default()
        }
    }
}

/// The body does not have the shape its source kind sends (answered 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub(crate) fn json(err: serde_json::Error) -> Self {
        ParseError(format!("body is not the expected JSON: {err}"))
    }
}

impl SourceKind {
    /// The body field (or header) a change's version comes from, to name it
    /// when a version is too far in the future.
    pub fn version_field(self) -> &'static str {
        match self {
            SourceKind::Amplitude => "computed_time",
            SourceKind::Heap => "the signature's timestamp (t=)",
            SourceKind::Partner => "the arrival time",
            SourceKind::Segment => "timestamp",
            SourceKind::Mixpanel => "the arrival time",
            SourceKind::StandardWebhooks => "version (or the envelope's timestamp)",
        }
    }
}

/// Refuses a request any of whose versions is more than `max_skew_ms` ahead
/// of `now_ms`: a far-future version would pin a member forever (an older
/// version never overrides a newer one). Nothing of such a request is stored.
pub fn check_future_versions(
    kind: SourceKind,
    parsed: &Parsed,
    now_ms: i64,
    max_skew_ms: i64,
) -> Result<(), ParseError> {
    let limit = now_ms.saturating_add(max_skew_ms);
    let newest = parsed
        .pushes
        .iter()
        .flat_map(|p| {
            p.changes
                .iter()
                .map(|c| c.version_ms)
                .chain(p.snapshot.as_ref().map(|s| s.version_ms))
        })
        .max();
    match newest {
        Some(v) if v > limit => Err(ParseError(format!(
            "{} is {} s in the future (more than the {} s server.max_future_skew_seconds allows)",
            kind.version_field(),
            (v - now_ms) / 1000,
            max_skew_ms / 1000
        ))),
        _ => Ok(()),
    }
}

/// Whether a member key may be sent to LaunchDarkly: at most `max_bytes`
/// bytes and no control character.
pub fn valid_key(key: &str, max_bytes: usize) -> bool {
    key.len() <= max_bytes && !key.chars().any(char::is_control)
}

/// Removes the changes whose key is not [`valid_key`], counting them in
/// `skipped_invalid_key`; the same for every source kind.
pub fn drop_invalid_keys(parsed: &mut Parsed, max_bytes: usize) {
    let mut dropped = 0u64;
    for push in &mut parsed.pushes {
        let before = push.changes.len();
        push.changes.retain(|c| valid_key(&c.key, max_bytes));
        dropped += (before - push.changes.len()) as u64;
    }
    parsed.skipped_invalid_key += dropped;
}

/// Parses a verified body with the source's kind. `now_ms` is the version of
/// changes whose sender gives no time of its own.
pub fn parse(source: &Source, verified: &Verified<'_>, now_ms: i64) -> Result<Parsed, ParseError> {
    match source.kind {
        SourceKind::Amplitude => amplitude::parse(source, verified, now_ms),
        SourceKind::Heap => heap::parse(source, verified, now_ms),
        SourceKind::Partner => Err(ParseError(
            "partner pushes are received at POST /api/v2/segment-targets/{integrationKey}".into(),
        )),
        SourceKind::Segment => segment::parse(source, verified, now_ms),
        SourceKind::Mixpanel => mixpanel::parse(source, verified, now_ms),
        SourceKind::StandardWebhooks => standard_webhooks::parse(source, verified, now_ms),
    }
}

/// Builders for the parsers' unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::SourceKind;
    use crate::config::{ResolvedAuth, Source};
    use crate::verify::{self, Verified};

    pub fn source(kind: SourceKind, key_field: &str) -> Source {
        Source {
            id: "src".into(),
            kind,
            destinations: vec!["production".into()],
            key_field: key_field.into(),
            auth: ResolvedAuth::None,
            context_kinds: vec!["user".into()],
        }
    }

    /// A body verified without authentication (`scheme = "none"`).
    pub fn verified(body: &[u8]) -> Verified<'_> {
        match verify::verify(&ResolvedAuth::None, &Vec::new(), body, 0) {
            Ok(v) => v,
            Err(e) => panic!("scheme none verifies: {e}"),
        }
    }
}

// TEMP(merge): provided by config::kinds
/// How a receiver answers a source's requests (success and errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerStyle {
    /// `{"error": {"code", "message"}}`; the summary on success.
    Native,
    /// Mixpanel's envelope: `{"action", "status", "error"?: {"message", "code"}}`.
    Mixpanel,
    /// LaunchDarkly's: `{"code", "message"}`; 204 on success.
    LaunchDarkly,
}

// TEMP(merge): provided by config::kinds
impl SourceKind {
    /// The body style of this kind's answers.
    pub fn answer_style(self) -> AnswerStyle {
        match self {
            SourceKind::Mixpanel => AnswerStyle::Mixpanel,
            SourceKind::Partner => AnswerStyle::LaunchDarkly,
            _ => AnswerStyle::Native,
        }
    }
}

// TEMP(merge): provided by config::kinds
/// What the answer echoes of a verified body (Mixpanel's `action`).
pub fn echo_action(kind: SourceKind, body: &[u8]) -> Option<&'static str> {
    match kind {
        SourceKind::Mixpanel => mixpanel_action(body),
        _ => None,
    }
}
