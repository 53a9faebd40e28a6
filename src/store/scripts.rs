//! The Lua scripts, embedded from `scripts/*.lua` and called by SHA
//! (`EVALSHA`, falling back to `SCRIPT LOAD` once after a Redis restart).
//! Scripts that touch members get `member.lua`'s helpers prepended.

use redis::Script;
use std::sync::LazyLock;

pub static APPLY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("scripts/member.lua"),
        include_str!("scripts/apply.lua")
    ))
});
pub static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("scripts/member.lua"),
        include_str!("scripts/claim.lua")
    ))
});
pub static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("scripts/member.lua"),
        include_str!("scripts/ack.lua")
    ))
});
pub static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("scripts/member.lua"),
        include_str!("scripts/dead_letter.lua")
    ))
});
pub static LEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/lease.lua")));
pub static RATE_PAUSE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/rate_pause.lua")));
pub static SWEEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("scripts/member.lua"),
        include_str!("scripts/sweep.lua")
    ))
});

/// `apply.lua` preceded by `snapshot_page.lua`: a page of a full snapshot,
/// staged and applied in one script.
pub static APPLY_SNAPSHOT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("scripts/member.lua"),
        include_str!("scripts/snapshot_page.lua"),
        include_str!("scripts/apply.lua")
    ))
});
pub static SNAPSHOT_FINALIZE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("scripts/member.lua"),
        include_str!("scripts/snapshot_finalize.lua")
    ))
});
pub static REDRIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("scripts/member.lua"),
        include_str!("scripts/redrive.lua")
    ))
});
pub static RESYNC: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("scripts/member.lua"),
        include_str!("scripts/resync.lua")
    ))
});

/// Every script, for loading at startup.
pub fn all() -> [&'static Script; 11] {
    [
        &APPLY,
        &CLAIM,
        &ACK,
        &DEAD_LETTER,
        &LEASE,
        &SWEEP,
        &APPLY_SNAPSHOT,
        &SNAPSHOT_FINALIZE,
        &REDRIVE,
        &RESYNC,
        &RATE_PAUSE,
    ]
}
