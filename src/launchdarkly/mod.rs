#![warn(missing_docs)]
//! LaunchDarkly's REST API, as the flusher uses it: create a big segment once,
//! then `POST …/contexts` with `included.add` / `included.remove`; and, to
//! reconcile, read a segment back through a big-segment export ([`ExportStatus`], [`ExportKeys`]).
//!
//! [`classify`] is the one pure function that decides what every response
//! means; [`Throttle`] keeps the whole deployment under the configured rate.

mod classify;
mod client;
mod export;
mod throttle;

pub use classify::{classify, Attempt, Operation, Reply, Verdict};
pub use client::{
    carries_mark, ownership_mark, LdClient, MemberState, MembershipUpdate, NewSegment,
};
pub use export::{ExportError, ExportKeys, ExportStatus};
pub use throttle::Throttle;
