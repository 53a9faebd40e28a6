//! What the emulator observed: the request log and the counters behind
//! `/_emulator/stats` (per route/status, violations, concurrency).

use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};

/// Oldest entries are dropped past this many, so long benchmarks don't grow
/// memory without bound (entries keep whole bodies, up to ~20 KB for a
/// 1,000-key batch).
const MAX_LOG_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub route: &'static str,
    pub received_ms: u64,
    pub completed_ms: Option<u64>,
    /// `None` while in flight and when the connection was dropped.
    pub status: Option<u16>,
    pub ld_api_version: Option<String>,
    pub authorization_ok: bool,
    pub body: Value,
    pub applied: bool,
    pub fault: Option<&'static str>,
}

#[derive(Debug, Default)]
pub struct Journal {
    log: VecDeque<LogEntry>,
    pub requests: u64,
    pub by_route: BTreeMap<&'static str, u64>,
    /// Keyed by status code, or "dropped" for connections closed unanswered.
    pub by_status: BTreeMap<String, u64>,
    pub rate_exceeded: u64,
    pub early_after_429: u64,
    pub in_flight: u64,
    pub max_in_flight: u64,
}

impl Journal {
    /// Records an arrival; the entry is completed later by `finish`.
    pub fn start(&mut self, entry: LogEntry) {
        self.requests += 1;
        *self.by_route.entry(entry.route).or_insert(0) += 1;
        self.in_flight += 1;
        self.max_in_flight = self.max_in_flight.max(self.in_flight);
        if self.log.len() >= MAX_LOG_ENTRIES {
            self.log.pop_front();
        }
        self.log.push_back(entry);
    }

    /// Completes the entry for `seq` (status `None` = dropped connection).
    pub fn finish(&mut self, seq: u64, outcome: Outcome) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let key = outcome
            .status
            .map_or_else(|| "dropped".to_string(), |s| s.to_string());
        *self.by_status.entry(key).or_insert(0) += 1;
        // Entries are in seq order, so binary search finds ours (if it was
        // not cleared by a reset or trimmed meanwhile).
        if let Ok(i) = self.log.binary_search_by_key(&seq, |e| e.seq) {
            if let Some(e) = self.log.get_mut(i) {
                e.completed_ms = Some(outcome.completed_ms);
                e.status = outcome.status;
                e.applied = outcome.applied;
                e.authorization_ok = outcome.authorization_ok;
            }
        }
    }

    pub fn entries_since(&self, since: u64) -> Vec<&LogEntry> {
        self.log.iter().filter(|e| e.seq > since).collect()
    }

    /// Clears log and counters; in-flight requests keep being counted.
    pub fn clear(&mut self) {
        let in_flight = self.in_flight;
        *self = Journal::default();
        self.in_flight = in_flight;
        self.max_in_flight = in_flight;
    }

    pub fn stats_json(&self, max_requests_in_1s: u64) -> Value {
        json!({
            "requests": self.requests,
            "by_route": self.by_route,
            "by_status": self.by_status,
            "violations": {
                "rate_exceeded": self.rate_exceeded,
                "early_after_429": self.early_after_429,
            },
            "max_requests_in_1s": max_requests_in_1s,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        })
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub completed_ms: u64,
    pub status: Option<u16>,
    pub applied: bool,
    pub authorization_ok: bool,
}
