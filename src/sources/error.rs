//! [`ParseError`]: why a verified body was refused (answered 400).
//!
//! Every variant names the field (or JSON pointer) at fault; the `Display`
//! text is the 400 body's message, so it is part of the interface.

/// The body does not have the shape its source kind sends (answered 400).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// Not JSON, or not the JSON shape the kind sends (serde's message).
    #[error("body is not the expected JSON: {0}")]
    NotJson(String),
    /// A required field is absent.
    #[error("{field} is missing")]
    Missing { field: String },
    /// A required field is absent or not of its type (`expected`: "a string").
    #[error("{field} is missing or not {expected}")]
    MissingOrNot {
        field: String,
        expected: &'static str,
    },
    /// A required value at a JSON pointer is absent (partner manifests).
    #[error("required value {pointer:?} ({what}) is missing from the body")]
    MissingValue { pointer: String, what: &'static str },
    /// A field holds a value of the wrong type or shape.
    #[error("{field} must be {expected}")]
    WrongType { field: String, expected: String },
    /// A field's value cannot be read as what it stands for (a time, …).
    #[error("{field} is not {expected}")]
    Unreadable {
        field: String,
        expected: &'static str,
    },
    /// A number too large for what it counts.
    #[error("{field} is too large")]
    TooLarge { field: String },
    /// The body asks for something the bridge does not do (an action, an
    /// event type it does not know).
    #[error("{0}")]
    Unsupported(String),
    /// Fields that contradict each other or the source's configuration.
    #[error("{0}")]
    Inconsistent(String),
    /// A version outside `0 ≤ ms < 2^53` (see [`super::Version`]).
    #[error("{field} is {ms} ms since 1970, outside the versions the bridge keeps (0 to 9007199254740991)")]
    VersionOutOfRange { field: String, ms: i64 },
    /// A version further ahead of now than `server.max_future_skew_seconds`.
    #[error("{field} is {ahead_s} s in the future (more than the {max_s} s server.max_future_skew_seconds allows)")]
    FutureVersion {
        field: &'static str,
        ahead_s: i64,
        max_s: i64,
    },
    /// What is wrong with event `index` of a batch.
    #[error("event {index}: {error}")]
    InEvent {
        index: usize,
        error: Box<ParseError>,
    },
    /// What is wrong with the member at `at` (a JSON pointer).
    #[error("{at}: {error}")]
    AtMember { at: String, error: Box<ParseError> },
}

impl ParseError {
    pub(crate) fn json(err: serde_json::Error) -> Self {
        ParseError::NotJson(err.to_string())
    }

    pub(crate) fn missing(field: impl Into<String>) -> Self {
        ParseError::Missing {
            field: field.into(),
        }
    }

    pub(crate) fn missing_or_not(field: impl Into<String>, expected: &'static str) -> Self {
        ParseError::MissingOrNot {
            field: field.into(),
            expected,
        }
    }

    pub(crate) fn wrong_type(field: impl Into<String>, expected: impl Into<String>) -> Self {
        ParseError::WrongType {
            field: field.into(),
            expected: expected.into(),
        }
    }
}
