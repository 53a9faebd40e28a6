//! The kinds of sender the bridge understands: one row per kind.
//!
//! [`for_each_source_kind!`] is the only list of `[[sources]]` kinds. Each
//! layer that needs a per-kind item expands the same list with its own
//! macro, so the items cannot drift apart:
//!
//! - here, [`SourceKind`] and its properties ([`SourceKind::as_str`],
//!   [`SourceKind::default_key_field`], [`SourceKind::version_field`],
//!   [`SourceKind::answer_style`], [`FromStr`], [`fmt::Display`]);
//! - in `sources`, one `mod <module>;` per row and the dispatch of
//!   `sources::parse` to `<module>::parse`.
//!
//! The partner endpoint's kind, [`SourceKind::Partner`], is not a row: it is
//! never named in `[[sources]]` (it is configured in `[partner]`, and its
//! bodies are read by a manifest, `sources::partner`), so the macro adds it
//! as a fixed extra variant.

use std::fmt;
use std::str::FromStr;

/// Calls `$then! { rows }` with one row per `[[sources]]` kind.
///
/// A row reads
///
/// ```text
/// /// Doc comment of the variant.
/// Variant { module: parser_module, name: "config-name", key_field: "default.key",
///           version_field: "what the version is read from", answer: Native },
/// ```
///
/// - `Variant`: the [`SourceKind`] variant;
/// - `module`: the file `src/sources/<module>.rs`, which must define
///   `pub fn parse(&Source, &Verified, Version) -> Result<Delivery, ParseError>`;
/// - `name`: the `kind = "…"` of a `[[sources]]` entry, also the kind's name
///   in logs and in `replay`'s directory lookup;
/// - `key_field`: the member field holding the LaunchDarkly context key when
///   the source sets no `key_field`;
/// - `version_field`: the body field (or header) a change's version comes
///   from, named when a version is out of range or too far in the future;
/// - `answer`: the [`AnswerStyle`] of the answers the sender is sent.
///
/// **Adding a kind** whose sender signs with an existing scheme: write
/// `src/sources/<module>.rs` and add its row here. That is all the code; the
/// fixtures, tests and docs a new source needs are listed in CONTRIBUTING.md.
macro_rules! for_each_source_kind {
    ($then:ident) => {
        $then! {
            /// Amplitude Cohort Webhooks.
            Amplitude { module: amplitude, name: "amplitude", key_field: "user_id",
                version_field: "computed_time", answer: Native },
            /// Heap segment sync (`segment.users.sync`, `segment.users.drain`).
            Heap { module: heap, name: "heap", key_field: "id",
                version_field: "the signature's timestamp (t=)", answer: Native },
            /// Segment (Twilio) Engage audiences, sent by the Webhooks destination.
            Segment { module: segment, name: "segment", key_field: "userId",
                version_field: "timestamp", answer: Native },
            /// Mixpanel cohort sync (custom webhook).
            Mixpanel { module: mixpanel, name: "mixpanel", key_field: "mixpanel_distinct_id",
                version_field: "the arrival time", answer: Mixpanel },
            /// Our own small body, signed with Standard Webhooks.
            StandardWebhooks { module: standard_webhooks, name: "standard-webhooks", key_field: "key",
                version_field: "version (or the envelope's timestamp)", answer: Native },
        }
    };
}
pub(crate) use for_each_source_kind;

/// How the answers to a sender are shaped, on success and on errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerStyle {
    /// The bridge's own: a JSON summary on success, `{"error": …}` on errors.
    Native,
    /// Mixpanel's envelope (`{"action", "status", "error"?}`), the body's
    /// `action` echoed back.
    Mixpanel,
    /// LaunchDarkly's partner endpoint: 204 on success, `{"code", "message"}`
    /// on errors.
    LaunchDarkly,
}

/// Expands the rows into [`SourceKind`] and its properties.
macro_rules! define_source_kinds {
    ($(
        $(#[$doc:meta])*
        $variant:ident { module: $module:ident, name: $name:literal, key_field: $key_field:literal,
            version_field: $version_field:literal, answer: $answer:ident },
    )*) => {
        /// The kinds of sender the bridge understands.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum SourceKind {
            $($(#[$doc])* $variant,)*
            /// LaunchDarkly partner pushes (`POST /api/v2/segment-targets/{integrationKey}`),
            /// parsed by an integration-framework manifest; configured in `[partner]`,
            /// never as a `[[sources]]` kind.
            Partner,
        }

        impl SourceKind {
            /// The kinds a `[[sources]]` entry may name, in the list's order.
            pub const CONFIGURABLE: &'static [SourceKind] = &[$(SourceKind::$variant),*];

            /// The kind's config name (`kind = "…"`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(SourceKind::$variant => $name,)*
                    SourceKind::Partner => "partner",
                }
            }

            /// The member field holding the context key when the source sets
            /// no `key_field`.
            pub fn default_key_field(self) -> &'static str {
                match self {
                    $(SourceKind::$variant => $key_field,)*
                    // The manifest's memberIdPath is the partner sources' key field.
                    SourceKind::Partner => "id",
                }
            }

            /// The body field (or header) a change's version comes from, to
            /// name it when a version is out of range or too far in the future.
            pub fn version_field(self) -> &'static str {
                match self {
                    $(SourceKind::$variant => $version_field,)*
                    SourceKind::Partner => "the arrival time",
                }
            }

            /// How the answers to this kind's sender are shaped.
            pub fn answer_style(self) -> AnswerStyle {
                match self {
                    $(SourceKind::$variant => AnswerStyle::$answer,)*
                    SourceKind::Partner => AnswerStyle::LaunchDarkly,
                }
            }
        }

        /// A `[[sources]]` kind by its config name (`partner` is not one).
        impl FromStr for SourceKind {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s {
                    $($name => Ok(SourceKind::$variant),)*
                    _ => Err(()),
                }
            }
        }
    };
}
for_each_source_kind!(define_source_kinds);

impl SourceKind {
    /// The config names of the kinds a `[[sources]]` entry may name.
    pub fn names() -> Vec<&'static str> {
        Self::CONFIGURABLE.iter().map(|k| k.as_str()).collect()
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_partner_is_not_configurable() {
        for k in SourceKind::CONFIGURABLE {
            assert_eq!(k.as_str().parse::<SourceKind>(), Ok(*k));
        }
        assert_eq!("partner".parse::<SourceKind>(), Err(()));
        assert_eq!(
            SourceKind::names(),
            [
                "amplitude",
                "heap",
                "segment",
                "mixpanel",
                "standard-webhooks"
            ]
        );
        assert_eq!(
            SourceKind::Partner.answer_style(),
            AnswerStyle::LaunchDarkly
        );
        assert_eq!(SourceKind::Mixpanel.answer_style(), AnswerStyle::Mixpanel);
    }
}
