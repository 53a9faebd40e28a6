//! The Lua scripts, embedded from `scripts/*.lua` and called by SHA
//! (`EVALSHA`, falling back to `SCRIPT LOAD` once after a Redis restart).
//! Scripts that touch members get `member.lua`'s helpers prepended.

use redis::Script;
use std::sync::LazyLock;

/// A script assembled from `scripts/<file>`s, in order.
macro_rules! script {
    ($($file:literal),+) => {
        LazyLock::new(|| Script::new(concat!($(include_str!(concat!("scripts/", $file))),+)))
    };
}

/// Folds one push into the want hash and the links' dirty sets.
pub static APPLY: LazyLock<Script> = script!("member.lua", "apply.lua");
/// A group of pushes (group commit) in one call: `apply.lua` as the body of
/// a function run once per push (see `apply_many_head.lua`).
pub static APPLY_MANY: LazyLock<Script> = script!(
    "member.lua",
    "apply_many_head.lua",
    "apply.lua",
    "apply_many_tail.lua"
);
/// Hands dirty members of a link to one request.
pub static CLAIM: LazyLock<Script> = script!("member.lua", "claim.lua");
/// Records what LaunchDarkly has after a 2xx.
pub static ACK: LazyLock<Script> = script!("member.lua", "ack.lua");
/// `ACK`, then `CLAIM` of the link's next full batch, in one call.
pub static ACK_CLAIM: LazyLock<Script> = script!(
    "member.lua",
    "ack_claim_head.lua",
    "ack.lua",
    "ack_claim_mid.lua",
    "claim.lua",
    "ack_claim_tail.lua"
);
/// Sets members LaunchDarkly rejected aside.
pub static DEAD_LETTER: LazyLock<Script> = script!("member.lua", "dead_letter.lua");
/// Renews or releases a partition lease held by the caller.
pub static LEASE: LazyLock<Script> = script!("lease.lua");
/// Extends the shared 429 pause.
pub static RATE_PAUSE: LazyLock<Script> = script!("rate_pause.lua");
/// Removes one chunk of a cohort's old tombstones.
pub static SWEEP: LazyLock<Script> = script!("member.lua", "sweep.lua");
/// `apply.lua` preceded by `snapshot_page.lua`: a page of a full snapshot,
/// staged and applied in one script.
pub static APPLY_SNAPSHOT: LazyLock<Script> =
    script!("member.lua", "snapshot_page.lua", "apply.lua");
/// Works one chunk of a snapshot's finalization.
pub static SNAPSHOT_FINALIZE: LazyLock<Script> = script!("member.lua", "snapshot_finalize.lua");
/// Makes dead-lettered members of a link pending again.
pub static REDRIVE: LazyLock<Script> = script!("member.lua", "redrive.lua");
/// Marks a link's whole membership for re-sending.
pub static RESYNC: LazyLock<Script> = script!("member.lua", "resync.lua");

/// Compares a chunk of a link with LaunchDarkly's staged export.
pub static RECONCILE: LazyLock<Script> = script!("member.lua", "reconcile.lua");
/// Draws a random settled member of a link (sampled verification).
pub static SAMPLE_PICK: LazyLock<Script> = script!("member.lua", "sample_pick.lua");
/// Judges LaunchDarkly's answer for a sampled member; repairs a mismatch.
pub static SAMPLE_JUDGE: LazyLock<Script> = script!("member.lua", "sample_judge.lua");
/// Keeps a partition's dirty-since hash true and returns its oldest entry.
pub static DIRTY_SINCE: LazyLock<Script> = script!("dirty_since.lua");

/// Every script, for loading at startup.
pub fn all() -> [&'static Script; 17] {
    [
        &APPLY,
        &APPLY_MANY,
        &CLAIM,
        &ACK,
        &ACK_CLAIM,
        &DEAD_LETTER,
        &LEASE,
        &SWEEP,
        &APPLY_SNAPSHOT,
        &SNAPSHOT_FINALIZE,
        &REDRIVE,
        &RESYNC,
        &RATE_PAUSE,
        &RECONCILE,
        &DIRTY_SINCE,
        &SAMPLE_PICK,
        &SAMPLE_JUDGE,
    ]
}
