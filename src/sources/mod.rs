//! Source kinds: each file turns a verified body into a [`Delivery`], what
//! one request carried (a [`Push`] per cohort, each change at a [`Version`]).
//!
//! - One file per `[[sources]]` kind (`amplitude.rs`, `heap.rs`, `segment.rs`,
//!   `mixpanel.rs`, `standard_webhooks.rs`). Their `mod` lines and the
//!   dispatch of [`parse`] are generated from the kinds' rows
//!   (`config::for_each_source_kind!`, in `src/config/kinds.rs`).
//! - [`partner`]: partner bodies, read with their integration's manifest
//!   (`config::manifest`) instead of a kind's file.
//! - `member_key.rs`: the context key of a member object ([`extract_key`]).
//! - [`Version`] refuses versions a Lua double cannot hold; [`ParseError`]
//!   says what was wrong (the 400's message).
//!
//! Parsers are lenient about fields they do not use and strict about the
//! types of those they do: a wrong shape is a [`ParseError`] (400), never a
//! panic. What each platform sends is in docs/sources.md.
//!
//! ## How to add a source
//! 1. If its sender signs in a way `verify` does not know, add the scheme
//!    first (see the `verify` module docs).
//! 2. Write `src/sources/<module>.rs`: a module doc saying what the sender
//!    posts, and `pub fn parse(source: &Source, verified: &Verified<'_>, now:
//!    Version) -> Result<Delivery, ParseError>` (`now` is the version of
//!    changes whose sender gives no time; times from the body become a
//!    [`Version`] with [`Version::of_field`]).
//! 3. Add its row to `for_each_source_kind!` in `src/config/kinds.rs`: the
//!    variant, the module, the config name, the default key field, the
//!    version's field and the [`AnswerStyle`].
//!
//! That is all the code: the `mod` line, the dispatch, `kind = "…"` in the
//! configuration and the list of known kinds in its errors follow from the
//! row. The fixtures, tests and docs a source needs are in CONTRIBUTING.md.

mod error;
mod member_key;
pub mod partner;
mod version;

pub use error::ParseError;
pub use member_key::{collect_changes, extract_key};
pub use version::Version;

use crate::config::{AnswerStyle, Source, SourceKind};
use crate::verify::Verified;

/// Expands the kinds' rows (`config::for_each_source_kind!`) into one
/// `mod <module>;` per kind and the dispatch of [`parse`].
macro_rules! define_parsers {
    ($(
        $(#[$doc:meta])*
        $variant:ident { module: $module:ident, $($column:ident: $value:tt),* },
    )*) => {
        $(mod $module;)*

        /// Parses a verified body with the source's kind. `now_ms` is the
        /// version of changes whose sender gives no time of its own.
        pub fn parse(
            source: &Source,
            verified: &Verified<'_>,
            now_ms: i64,
        ) -> Result<Delivery, ParseError> {
            let now = Version::of_field(now_ms, ARRIVAL)?;
            match source.kind {
                $(SourceKind::$variant => $module::parse(source, verified, now),)*
                // Partner sources are never looked up by the webhook route: their
                // bodies are read by their manifest (the partner route).
                SourceKind::Partner => Err(ParseError::Unsupported(
                    "partner pushes are received at POST /api/v2/segment-targets/{integrationKey}".into(),
                )),
            }
        }
    };
}
crate::config::for_each_source_kind!(define_parsers);

/// The version of changes whose sender gives no time of its own, named in errors.
const ARRIVAL: &str = "the arrival time";

/// What the answer echoes of a body the sender's envelope repeats back
/// (Mixpanel's `action`, when it is one Mixpanel sends); `None` for kinds
/// whose answers echo nothing. Read only from a verified body.
pub fn echo_action(kind: SourceKind, body: &[u8]) -> Option<&'static str> {
    match kind.answer_style() {
        AnswerStyle::Mixpanel => mixpanel::action_of(body),
        AnswerStyle::Native | AnswerStyle::LaunchDarkly => None,
    }
}

/// One membership change of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The LaunchDarkly context key.
    pub key: String,
    /// `true`: should be in the segment; `false`: should not.
    pub include: bool,
    /// Order of this change; an older version never overrides a newer one.
    pub version: Version,
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
    /// removed (docs/design.md, "Full snapshots"; `store::snapshot`).
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
    pub version: Version,
    /// Stage this session only if the cohort was armed for a replace (Heap's
    /// `segment.users.drain`: "the next full sync replaces membership"): the
    /// first page 1 after the arming adopts its session; otherwise the pages
    /// are applied as plain changes.
    pub armed_only: bool,
}

/// What one request (one delivery from the sender) carried: the [`Push`] of
/// each cohort it names, and what was counted or noted on the way.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delivery {
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

impl Delivery {
    /// A request that carried one push.
    pub fn one(push: Push, skipped_without_key: u64) -> Delivery {
        Delivery {
            pushes: vec![push],
            skipped_without_key,
            ..Delivery::default()
        }
    }
}

/// Refuses a request any of whose versions is more than `max_skew_ms` ahead
/// of `now_ms`: a far-future version would pin a member forever (an older
/// version never overrides a newer one). Nothing of such a request is stored.
pub fn check_future_versions(
    kind: SourceKind,
    parsed: &Delivery,
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
                .map(|c| c.version.ms())
                .chain(p.snapshot.as_ref().map(|s| s.version.ms()))
        })
        .max();
    match newest {
        Some(v) if v > limit => Err(ParseError::FutureVersion {
            field: kind.version_field(),
            ahead_s: (v - now_ms) / 1000,
            max_s: max_skew_ms / 1000,
        }),
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
pub fn drop_invalid_keys(parsed: &mut Delivery, max_bytes: usize) {
    let mut dropped = 0u64;
    for push in &mut parsed.pushes {
        let before = push.changes.len();
        push.changes.retain(|c| valid_key(&c.key, max_bytes));
        dropped += (before - push.changes.len()) as u64;
    }
    parsed.skipped_invalid_key += dropped;
}

/// Builders for the parsers' unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::config::{ResolvedAuth, Source, SourceKind};
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
