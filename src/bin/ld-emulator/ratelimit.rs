//! Rate limiting as LaunchDarkly advertises it (fixed windows, a global and a
//! per-route budget, `X-Ratelimit-*` headers), plus the `max_rps` monitor
//! that tests use to catch a client sending faster than it was told to.

use crate::faults::Route;
use std::collections::{HashMap, VecDeque};

/// Budgets; changeable at runtime through `/_emulator/config`.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    pub global: u64,
    pub route: u64,
    pub window_ms: u64,
}

/// What the limiter says about one request; becomes the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub global_remaining: u64,
    pub route_remaining: u64,
    /// Unix epoch ms at which the current window ends.
    pub reset_ms: u64,
    /// Which budget, if any, is exhausted (the request was not counted).
    pub limited: Option<Limiter>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limiter {
    Global,
    Route,
}

/// Fixed windows aligned to multiples of `window_ms` since the Unix epoch,
/// so every client sees the same reset instant within a window.
#[derive(Debug, Default)]
pub struct FixedWindow {
    window_id: u64,
    global_used: u64,
    route_used: HashMap<Route, u64>,
}

impl FixedWindow {
    fn roll(&mut self, budgets: &Budgets, now_ms: u64) -> u64 {
        let window_ms = budgets.window_ms.max(1);
        let id = now_ms / window_ms;
        if id != self.window_id {
            self.window_id = id;
            self.global_used = 0;
            self.route_used.clear();
        }
        (id + 1) * window_ms
    }

    /// Counts a request against both budgets unless one is exhausted.
    pub fn admit(&mut self, budgets: &Budgets, route: Route, now_ms: u64) -> RateDecision {
        let reset_ms = self.roll(budgets, now_ms);
        let route_used = self.route_used.get(&route).copied().unwrap_or(0);
        let limited = if self.global_used >= budgets.global {
            Some(Limiter::Global)
        } else if route_used >= budgets.route {
            Some(Limiter::Route)
        } else {
            None
        };
        if limited.is_none() {
            self.global_used += 1;
            *self.route_used.entry(route).or_insert(0) += 1;
        }
        self.peek_at(budgets, route, reset_ms, limited)
    }

    /// Current headers without counting the request (for responses that
    /// never reached the limiter: 401s, injected faults).
    pub fn peek(&mut self, budgets: &Budgets, route: Route, now_ms: u64) -> RateDecision {
        let reset_ms = self.roll(budgets, now_ms);
        self.peek_at(budgets, route, reset_ms, None)
    }

    fn peek_at(
        &self,
        budgets: &Budgets,
        route: Route,
        reset_ms: u64,
        limited: Option<Limiter>,
    ) -> RateDecision {
        let route_used = self.route_used.get(&route).copied().unwrap_or(0);
        RateDecision {
            global_remaining: budgets.global.saturating_sub(self.global_used),
            route_remaining: budgets.route.saturating_sub(route_used),
            reset_ms,
            limited,
        }
    }

    pub fn clear(&mut self) {
        *self = FixedWindow::default();
    }
}

/// Sliding one-second window over request arrivals.
#[derive(Debug, Default)]
pub struct RateMonitor {
    arrivals: VecDeque<u64>,
    pub max_in_1s: u64,
}

impl RateMonitor {
    /// Records an arrival; returns how many requests arrived in the last
    /// second including this one.
    pub fn record(&mut self, now_ms: u64) -> u64 {
        while self.arrivals.front().is_some_and(|&t| t + 1000 <= now_ms) {
            self.arrivals.pop_front();
        }
        self.arrivals.push_back(now_ms);
        let n = self.arrivals.len() as u64;
        self.max_in_1s = self.max_in_1s.max(n);
        n
    }

    pub fn clear(&mut self) {
        *self = RateMonitor::default();
    }
}

/// Requests allowed in any one-second window before `rate_exceeded` counts:
/// ceil(max_rps) + 1, the +1 tolerating a request on the window boundary.
pub fn allowed_per_second(max_rps: f64) -> u64 {
    (max_rps.max(0.0)).ceil() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_per_window() {
        let b = Budgets {
            global: 3,
            route: 2,
            window_ms: 1000,
        };
        let mut w = FixedWindow::default();
        let v = w.admit(&b, Route::Contexts, 5_000);
        assert_eq!(
            (v.global_remaining, v.route_remaining, v.reset_ms),
            (2, 1, 6_000)
        );
        assert_eq!(w.admit(&b, Route::Contexts, 5_001).limited, None);
        assert_eq!(
            w.admit(&b, Route::Contexts, 5_002).limited,
            Some(Limiter::Route)
        );
        assert_eq!(w.admit(&b, Route::Get, 5_003).limited, None);
        assert_eq!(
            w.admit(&b, Route::Get, 5_004).limited,
            Some(Limiter::Global)
        );
        assert_eq!(w.admit(&b, Route::Get, 6_000).limited, None);
    }

    #[test]
    fn monitor_counts_sliding_second() {
        let mut m = RateMonitor::default();
        assert_eq!(m.record(0), 1);
        assert_eq!(m.record(500), 2);
        assert_eq!(m.record(999), 3);
        assert_eq!(m.record(1000), 3);
        assert_eq!(m.max_in_1s, 3);
        assert_eq!(allowed_per_second(5.0), 6);
        assert_eq!(allowed_per_second(0.5), 2);
    }
}
