//! The emulator's shared state: fixed settings (tokens, schema) and one
//! mutex over everything that changes. Handlers lock it briefly and never
//! across an `.await`.

use crate::exports::Exports;
use crate::faults::FaultQueue;
use crate::journal::Journal;
use crate::ratelimit::{Budgets, FixedWindow, RateMonitor};
use crate::schema::Spec;
use crate::state::Segments;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Emulator {
    pub spec: Spec,
    pub tokens: Vec<String>,
    world: Mutex<World>,
}

/// Everything mutable, under one lock: simple and fast enough for a test
/// double that handles at most thousands of requests per second.
pub struct World {
    pub segments: Segments,
    /// Big-segment exports and how they are served.
    pub exports: Exports,
    pub faults: FaultQueue,
    pub budgets: Budgets,
    pub limiter: FixedWindow,
    pub monitor: RateMonitor,
    pub max_rps: Option<f64>,
    pub journal: Journal,
    /// Last reset instant (epoch ms) announced by a 429; requests arriving
    /// before it count as `early_after_429`.
    pub announced_reset_ms: Option<u64>,
    pub next_seq: u64,
}

impl Emulator {
    pub fn new(spec: Spec, tokens: Vec<String>, budgets: Budgets) -> Emulator {
        Emulator {
            spec,
            tokens,
            world: Mutex::new(World {
                segments: Segments::default(),
                exports: Exports::default(),
                faults: FaultQueue::default(),
                budgets,
                limiter: FixedWindow::default(),
                monitor: RateMonitor::default(),
                max_rps: None,
                journal: Journal::default(),
                announced_reset_ms: None,
                next_seq: 1,
            }),
        }
    }

    /// Locks the world. A panic while holding the lock would poison it; the
    /// data is still consistent enough for a test double, so recover it.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Exact match against a configured token: LaunchDarkly takes the raw
    /// token, so `Bearer <token>` does not match.
    pub fn token_ok(&self, header: Option<&str>) -> bool {
        header.is_some_and(|h| self.tokens.iter().any(|t| t == h))
    }
}

impl World {
    /// Clears data, faults, log and stats; keeps configuration (budgets,
    /// window, max_rps, declared projects). Sequence numbers keep growing so
    /// `?since=` stays meaningful across resets.
    pub fn reset(&mut self) {
        self.segments.clear_segments();
        self.exports.clear();
        self.faults.clear();
        self.limiter.clear();
        self.monitor.clear();
        self.journal.clear();
        self.announced_reset_ms = None;
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
