//! What the emulator observed: the request log and the counters behind
//! `/_emulator/stats` (per route/status, violations, concurrency), every
//! arrival's time (behind `/_emulator/rate`), and the writes in flight per
//! segment (behind `/_emulator/writes`), which is how a multi-replica test
//! sees whether two replicas ever wrote one segment at the same time.

use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};

/// Overlapping writes kept in detail (the count goes on past it).
const MAX_OVERLAPS_KEPT: usize = 100;

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
    /// Arrival time (epoch ms) of every request on a LaunchDarkly route,
    /// answered or not (429s and 401s too): what a rate limit counts.
    /// 8 bytes a request, never trimmed (unlike the log) so a whole run's
    /// rate can be checked.
    pub arrivals: Vec<u64>,
    pub writes: SegmentWrites,
}

/// Writes (create, membership update, patch, delete) in flight per
/// segment, from arrival until the answer (or the dropped connection, or
/// the end of an injected latency): one segment must never have two.
#[derive(Debug, Default)]
pub struct SegmentWrites {
    /// `project/environment/key` → writes in flight now.
    in_flight: BTreeMap<String, u64>,
    /// Writes that arrived while another write of their segment was in flight.
    pub overlaps: u64,
    /// The most writes one segment had in flight at once.
    pub max_per_segment: u64,
    /// The first overlapping writes: segment, sequence number, how many were
    /// in flight including this one.
    pub overlapping: Vec<Value>,
}

impl SegmentWrites {
    /// A write of `segment` arrived (request `seq`).
    pub fn begin(&mut self, segment: &str, seq: u64) {
        let n = self.in_flight.entry(segment.to_string()).or_insert(0);
        *n += 1;
        let n = *n;
        self.max_per_segment = self.max_per_segment.max(n);
        if n > 1 {
            self.overlaps += 1;
            if self.overlapping.len() < MAX_OVERLAPS_KEPT {
                self.overlapping
                    .push(json!({"segment": segment, "seq": seq, "in_flight": n}));
            }
        }
    }

    /// A write of `segment` ended (answered, dropped or abandoned).
    pub fn end(&mut self, segment: &str) {
        if let Some(n) = self.in_flight.get_mut(segment) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(segment);
            }
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "in_flight": self.in_flight,
            "overlaps": self.overlaps,
            "max_per_segment": self.max_per_segment,
            "overlapping": self.overlapping,
        })
    }

    /// Forgets the counts; writes still in flight stay tracked so their end
    /// is not mistaken for another's.
    fn clear(&mut self) {
        let in_flight = std::mem::take(&mut self.in_flight);
        *self = SegmentWrites::default();
        self.max_per_segment = in_flight.values().copied().max().unwrap_or(0);
        self.in_flight = in_flight;
    }
}

/// Arrival counts per whole epoch second and the most arrivals in any
/// window of `window_ms` (half-open: `[t, t + window_ms)`), over the sorted
/// arrival times.
pub fn rate_json(arrivals: &[u64], window_ms: u64) -> Value {
    let mut sorted = arrivals.to_vec();
    sorted.sort_unstable();
    let mut per_second: BTreeMap<u64, u64> = BTreeMap::new();
    for t in &sorted {
        *per_second.entry(t / 1000).or_insert(0) += 1;
    }
    let (mut max, mut at, mut lo) = (0u64, None, 0usize);
    for (hi, t) in sorted.iter().enumerate() {
        while *t - sorted[lo] >= window_ms.max(1) {
            lo += 1;
        }
        let n = (hi - lo + 1) as u64;
        if n > max {
            (max, at) = (n, Some(sorted[lo]));
        }
    }
    json!({
        "requests": sorted.len(),
        "first_ms": sorted.first(),
        "last_ms": sorted.last(),
        "per_second": per_second.iter().map(|(s, n)| json!([s, n])).collect::<Vec<_>>(),
        "window_ms": window_ms,
        "max_in_window": max,
        "max_window_start_ms": at,
    })
}

impl Journal {
    /// Records an arrival; the entry is completed later by `finish`.
    pub fn start(&mut self, entry: LogEntry) {
        self.requests += 1;
        *self.by_route.entry(entry.route).or_insert(0) += 1;
        self.in_flight += 1;
        self.max_in_flight = self.max_in_flight.max(self.in_flight);
        self.arrivals.push(entry.received_ms);
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
        let mut writes = std::mem::take(&mut self.writes);
        writes.clear();
        *self = Journal::default();
        self.in_flight = in_flight;
        self.max_in_flight = in_flight;
        self.writes = writes;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_writes_of_one_segment_at_once_are_an_overlap_others_are_not() {
        let mut w = SegmentWrites::default();
        w.begin("p/e/a", 1);
        w.begin("p/e/b", 2); // another segment: fine
        w.end("p/e/a");
        w.begin("p/e/a", 3); // after the first ended: fine
        assert_eq!((w.overlaps, w.max_per_segment), (0, 1));
        w.begin("p/e/a", 4);
        assert_eq!((w.overlaps, w.max_per_segment), (1, 2));
        assert_eq!(w.overlapping[0]["seq"], 4);
        w.end("p/e/a");
        w.end("p/e/a");
        assert_eq!(w.json()["in_flight"], json!({"p/e/b": 1}));
    }

    #[test]
    fn the_window_maximum_counts_a_half_open_window() {
        // 1000 ms apart: never two in one 1000 ms window.
        let v = rate_json(&[0, 1000, 2000], 1000);
        assert_eq!(v["max_in_window"], 1);
        let v = rate_json(&[2000, 0, 999, 1000], 1000);
        assert_eq!(v["max_in_window"], 2);
        assert_eq!(v["per_second"], json!([[0, 2], [1, 1], [2, 1]]));
        assert_eq!(rate_json(&[], 1000)["max_in_window"], 0);
    }
}
