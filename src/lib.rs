//! # cohort-bridge
//!
//! Keeps LaunchDarkly big segments in step with the cohorts that analytics
//! platforms compute. The path of one change:
//!
//! ```text
//! analytics platform ──POST /v1/webhooks/{source}──▶ http
//!     │ raw bytes + headers (≤ server.max_body_bytes, else 413)
//!     ▼
//! verify      per-source scheme on the raw bytes, constant time → Verified (else 401)
//!     ▼
//! sources     kind-specific parser → Push { cohort, delivery id, changes[version, in/out], snapshot? } (else 400)
//!     ▼
//! ingest      the one ingest path (the partner route's too): apply parameters, batch claim,
//!             snapshot arm/finalize, outcome counts, wakes the flusher
//!     ▼
//! store       one Lua script per push, one round trip, one hash slot:
//!             dedupe → last-writer-wins → per-link dirty sets → due index (else 503)
//!     ▼       200 only now: every accepted change is in Redis
//! flush       partition leases; links oldest-due first; claim ≤ N dirty members (marked unknown)
//!     ▼
//! launchdarkly create the segment once; POST …/contexts; governor rate + 429 pause + retries
//!     ▼       2xx
//! store.ack   record what LaunchDarkly now has; members whose desired state moved stay dirty
//! ```
//!
//! ## What a 2xx from a receiver means
//! Every change the response counts as `accepted` is in Redis (durable as
//! Redis's AOF setting makes it) and will reach every destination of its
//! source, unless a newer change to the same member supersedes it first.
//! Changes counted `stale` were older than what was stored; `skipped_without_key`
//! members had no value at the source's `key_field`. A `duplicate` delivery
//! was applied before and is not applied again.
//!
//! ## Modules
//! - [`config`]: the TOML file, environment overrides, validation, secrets.
//! - [`app`]: the composition root, [`app::Application`] (store, flusher, servers, shutdown).
//! - [`http`]: routes, handlers, error responses.
//! - [`ingest`]: what happens to a verified, parsed request, for every
//!   receiver and for the flusher's snapshot resumption.
//! - [`verify`]: one file per authentication scheme (partner tokens too).
//! - [`sources`]: one file per sender kind.
//! - [`store`]: Redis keys, Lua scripts, the store API.
//! - [`flush`]: leases, the flush loop, one link's flush.
//! - [`launchdarkly`]: client, response classification, throttle.
//! - [`replay`]: sends recorded pushes as their source would.
//! - [`operator`]: operator commands (links, dead letters, redrive, resync);
//!   the same calls are served over HTTP by [`http::operator_api`].

pub mod app;
pub mod clock;
pub mod config;
pub mod flush;
pub mod http;
pub mod ingest;
pub mod launchdarkly;
#[cfg(test)]
mod layering;
pub mod metrics;
pub mod naming;
pub mod operator;
pub mod reconcile;
pub mod replay;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod verify;
