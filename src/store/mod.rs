#![warn(missing_docs)]
//! Redis, the system of record: the only module that talks to it.
//!
//! Each operation that must be atomic is one Lua script over keys of one hash
//! slot (see [`keys`]); every other call is a plain command. A Redis error is a
//! [`StoreError`], which the HTTP layer answers with 503 and `Retry-After`.
//!
//! ## Last writer wins, and the tie rule
//! Each member's desired state is decided by its change with the highest
//! version. **When versions are equal, "out" wins**: a removal beats an
//! addition of the same version, whatever order they arrive in (two changes
//! of one direction and version are the same change). Every script applies
//! this one rule (`loses_to` in `member.lua`):
//! - `apply.lua`: an "in" whose version equals a stored "out" is stale; an
//!   "out" of equal version replaces a stored "in".
//! - `snapshot_finalize.lua`: a full snapshot is "out at its start version
//!   for every member in none of its pages", so a member desired in at
//!   exactly that version and in no page is removed; the snapshot floor
//!   (see [`snapshot`]) makes a later, not newer "in" of a member the store
//!   does not hold stale.
//! - `resync.lua` and a segment re-created after a 404 compare no versions:
//!   they re-send every member's desired state as the rule decided it.
//!
//! The result is a function of the set of changes, not of their arrival order.
//!
//! ## Where things are
//! - [`keys`]: every key, its type and what it holds.
//! - `scripts` (and `scripts/*.lua`): the Lua scripts, one per atomic step.
//! - `apply`: one push into the want hash and the links' dirty sets.
//! - [`GroupCommit`] (`group_commit`): small pushes that arrive together
//!   applied in one script call, each answered with its own outcome.
//! - [`snapshot`]: full snapshots: staging pages, finalizing, resuming.
//! - `flushing`: what the flusher asks: due links, claims, acks, dead letters.
//! - `replicas`: leases, heartbeats, the shared 429 pause, segment key owners.
//! - `batches`: Segment first-event batches applied once.
//! - `sweep`: the tombstone sweeper.
//! - `inspect`: what operators see and do (links, dead letters, redrive, resync).
//! - `health`: readiness and the memory policy.
//! - `history`: explaining one member (`why`) from its value, the cohort's
//!   change history (one record per push), the audit trail and dead letters.
//! - `member_value`: the member value encoding, read from Rust.
//! - `reconcile`: staging LaunchDarkly's export and comparing it chunk by chunk.
//! - `sample`: sampled verification: a random settled member, the
//!   compare-and-set judgement of LaunchDarkly's answer, the report.
//! - `reply`: decoding replies; [`StoreError`].
//! - `connection`: one multiplexed connection, single Redis or Cluster.

mod apply;
mod audit;
mod batches;
mod connection;
mod flushing;
mod group_commit;
mod health;
mod history;
mod inspect;
pub mod keys;
pub mod lifecycle;
mod member_value;
mod reconcile;
mod replicas;
mod reply;
mod sample;
mod scripts;
pub mod snapshot;
mod sweep;

pub use apply::{ApplyCall, ApplyOutcome, ApplyParams, HistoryParams};
pub use audit::{parse_since, AuditEntry};
pub use batches::BatchClaim;
pub use flushing::{Ack, AckedBatch, Claim, DueWork};
pub use group_commit::{GroupCommit, GroupResult};
pub use health::evicts;
pub use history::{DesiredState, LaunchDarklyAnswer, MemberChange, MemberExplanation};
pub use inspect::{DeadLetter, LinkStatus};
pub use keys::{Keys, LinkId, Partition};
pub use lifecycle::{LifecycleError, OnPush, RetireMode};
pub use member_value::MemberValue;
pub use reconcile::{ReconcileCounts, ReconcilePhase, ReconcileReport};
pub use reply::StoreError;
pub use sample::{SamplePick, SampleReport, SampleVerdict};

use crate::config::RedisConfig;
use connection::Connection;

/// The Redis-backed store. Cheap to clone (one multiplexed connection, to a
/// single Redis or to every node of a Redis Cluster).
#[derive(Clone)]
pub struct Store {
    conn: Connection,
    keys: Keys,
    /// `redis.snapshot_ttl_seconds` in ms: how long snapshot staging waits.
    snapshot_ttl_ms: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("cluster", &self.conn.is_cluster())
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects lazily: the bridge starts (and reports not-ready) while Redis is down.
    /// With `redis.cluster`, `redis.url` and `redis.cluster_urls` are seeds
    /// of a Redis Cluster.
    pub fn connect(cfg: &RedisConfig) -> Result<Store, StoreError> {
        Ok(Store {
            conn: Connection::open(cfg)?,
            keys: Keys::new(&cfg.key_prefix, cfg.partitions),
            snapshot_ttl_ms: cfg.snapshot_ttl_seconds.saturating_mul(1000).max(1),
        })
    }

    fn conn(&self) -> Connection {
        self.conn.clone()
    }
}
