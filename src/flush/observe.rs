//! What the flusher observes for operators: the gauges of the LaunchDarkly
//! budget, the backlog, the oldest unacknowledged change, blocked links and
//! Redis health, and a 15-minute in-memory series (one [`Sample`] every
//! [`SAMPLE_EVERY`], [`SAMPLES`] kept) that `GET /v1/operator/overview`
//! serves to the `/ops` page.
//!
//! The series is this replica's own: nothing of it is written to Redis, and
//! it starts empty when the process starts.

use super::FlushContext;
use crate::clock::now_ms;
use crate::metrics as m;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// One point of the series every this often.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Points kept: 15 minutes.
pub const SAMPLES: usize = 90;
/// The request rate is measured over this window.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Propagation samples kept per point (beyond it, later ones are dropped).
const WINDOW_CAP: usize = 4096;

/// One point of the series: the figures of one [`SAMPLE_EVERY`] window.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Sample {
    /// End of the window (ms).
    pub at_ms: i64,
    /// LaunchDarkly requests/s this replica sent over the window.
    pub ld_requests_per_second: f64,
    /// The rate this replica works under (the configured rate divided by
    /// the live replicas).
    pub budget_requests_per_second: f64,
    /// Median propagation (s) of the batches acknowledged in the window.
    pub propagation_p50_seconds: Option<f64>,
    /// 99th percentile of the same.
    pub propagation_p99_seconds: Option<f64>,
    /// Acknowledged batches in the window.
    pub propagation_samples: usize,
    /// Members of this replica's partitions waiting for LaunchDarkly.
    pub backlog: u64,
    /// Age (s) of the oldest unacknowledged change of this replica's partitions.
    pub oldest_dirty_age_seconds: f64,
    /// Whether Redis answered the last health check.
    pub redis_up: bool,
    /// True for the window still running (the last point of an answer).
    pub partial: bool,
}

/// Redis as the last health check saw it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RedisHealth {
    /// Redis answered `PING`.
    pub up: bool,
    /// When it was checked (ms; 0 before the first check).
    pub checked_ms: i64,
    /// How long `PING` took (ms).
    pub latency_ms: Option<f64>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// The flusher's observations, shared with the operator API.
#[derive(Debug)]
pub struct Observations {
    token: String,
    limit_rps: f64,
    replicas: AtomicU64,
    ld_requests: AtomicU64,
    window: Mutex<Vec<f64>>,
    window_start: Mutex<(Instant, u64)>,
    rate_points: Mutex<VecDeque<(Instant, u64)>>,
    series: Mutex<VecDeque<Sample>>,
    backlog: AtomicU64,
    oldest_age_ms: AtomicI64,
    redis_up: AtomicBool,
    redis: Mutex<RedisHealth>,
}

impl Observations {
    /// Nothing observed yet; `token` names this replica, `limit_rps` is the
    /// configured LaunchDarkly rate, `partitions` the configured count (its
    /// gauge, with the budget limit, is set here: they never change).
    pub fn new(token: String, limit_rps: f64, partitions: u16) -> Self {
        metrics::gauge!(m::LD_BUDGET_LIMIT_RPS).set(limit_rps);
        metrics::gauge!(m::PARTITIONS).set(f64::from(partitions));
        metrics::gauge!(m::LD_BUDGET_RPS).set(0.0);
        metrics::gauge!(m::OLDEST_DIRTY_AGE_SECONDS).set(0.0);
        metrics::gauge!(m::LINKS_BLOCKED_NOW).set(0.0);
        metrics::gauge!(m::REDIS_UP).set(0.0);
        metrics::gauge!(m::DIRTY_BACKLOG).set(0.0);
        metrics::gauge!(m::LEASES_HELD).set(0.0);
        // Unknown until LaunchDarkly reports it (NaN compares false in any rule).
        metrics::gauge!(m::LD_RATELIMIT_REMAINING).set(f64::NAN);
        let now = Instant::now();
        Observations {
            token,
            limit_rps,
            replicas: AtomicU64::new(1),
            ld_requests: AtomicU64::new(0),
            window: Mutex::new(Vec::new()),
            window_start: Mutex::new((now, 0)),
            rate_points: Mutex::new(VecDeque::from([(now, 0)])),
            series: Mutex::new(VecDeque::with_capacity(SAMPLES)),
            backlog: AtomicU64::new(0),
            oldest_age_ms: AtomicI64::new(0),
            redis_up: AtomicBool::new(false),
            redis: Mutex::new(RedisHealth {
                up: false,
                checked_ms: 0,
                latency_ms: None,
                error: None,
            }),
        }
    }

    /// This replica's id (its lease token).
    pub fn replica(&self) -> &str {
        &self.token
    }

    /// The configured LaunchDarkly rate (requests/s, the deployment's).
    pub fn limit_rps(&self) -> f64 {
        self.limit_rps
    }

    /// Live replicas as the last heartbeat counted them.
    pub fn replicas(&self) -> u64 {
        self.replicas.load(Ordering::Relaxed).max(1)
    }

    /// The rate this replica works under.
    pub fn share_rps(&self) -> f64 {
        self.limit_rps / self.replicas() as f64
    }

    pub(super) fn set_replicas(&self, n: u64) {
        self.replicas.store(n.max(1), Ordering::Relaxed);
    }

    /// One LaunchDarkly request was sent.
    pub(super) fn request_sent(&self) {
        self.ld_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A batch was acknowledged `seconds` after its oldest change's 2xx.
    pub(super) fn propagated(&self, seconds: f64) {
        metrics::histogram!(m::PROPAGATION_SECONDS).record(seconds);
        let mut w = self.window.lock().expect("window lock");
        if w.len() < WINDOW_CAP {
            w.push(seconds);
        }
    }

    /// Redis as the last health check saw it.
    pub fn redis_health(&self) -> RedisHealth {
        self.redis.lock().expect("redis lock").clone()
    }

    /// The kept points, oldest first, and the window still running.
    pub fn series(&self) -> Vec<Sample> {
        let mut out: Vec<Sample> = self
            .series
            .lock()
            .expect("series lock")
            .iter()
            .cloned()
            .collect();
        out.push(self.current(false));
        out
    }

    /// The figures of the running window; `close` starts a new one.
    fn current(&self, close: bool) -> Sample {
        let now = Instant::now();
        let count = self.ld_requests.load(Ordering::Relaxed);
        let mut props = {
            let mut w = self.window.lock().expect("window lock");
            if close {
                std::mem::take(&mut *w)
            } else {
                w.clone()
            }
        };
        let (started, at_start) = {
            let mut s = self.window_start.lock().expect("window lock");
            let old = *s;
            if close {
                *s = (now, count);
            }
            old
        };
        let secs = now.duration_since(started).as_secs_f64();
        let rate = if secs > 0.0 {
            (count - at_start) as f64 / secs
        } else {
            0.0
        };
        props.sort_by(f64::total_cmp);
        Sample {
            at_ms: now_ms(),
            ld_requests_per_second: rate,
            budget_requests_per_second: self.share_rps(),
            propagation_p50_seconds: quantile(&props, 0.5),
            propagation_p99_seconds: quantile(&props, 0.99),
            propagation_samples: props.len(),
            backlog: self.backlog.load(Ordering::Relaxed),
            oldest_dirty_age_seconds: self.oldest_age_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            redis_up: self.redis_up.load(Ordering::Relaxed),
            partial: !close,
        }
    }

    /// Closes the running window into the series (the oldest point goes
    /// once [`SAMPLES`] are kept).
    fn close_window(&self) {
        let sample = self.current(true);
        let mut s = self.series.lock().expect("series lock");
        if s.len() == SAMPLES {
            s.pop_front();
        }
        s.push_back(sample);
    }

    /// Updates the request-rate gauge: requests over the last [`RATE_WINDOW`].
    fn rate_tick(&self) {
        let now = Instant::now();
        let count = self.ld_requests.load(Ordering::Relaxed);
        let mut points = self.rate_points.lock().expect("rate lock");
        points.push_back((now, count));
        while points.len() > 2 && now.duration_since(points[1].0) >= RATE_WINDOW {
            points.pop_front();
        }
        let (t0, c0) = points[0];
        let secs = now.duration_since(t0).as_secs_f64().max(1.0);
        metrics::gauge!(m::LD_BUDGET_RPS).set((count - c0) as f64 / secs);
    }
}

/// The `q` quantile of sorted values (nearest rank), `None` when empty.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Reads what the gauges need from Redis: `PING`, then (if it answered) the
/// backlog, the oldest unacknowledged change and the blocked links of the
/// partitions this replica holds.
async fn check_store(ctx: &FlushContext) {
    let obs = &ctx.observations;
    let started = Instant::now();
    let ping = ctx.store.ping().await;
    let up = ping.is_ok();
    obs.redis_up.store(up, Ordering::Relaxed);
    metrics::gauge!(m::REDIS_UP).set(if up { 1.0 } else { 0.0 });
    *obs.redis.lock().expect("redis lock") = RedisHealth {
        up,
        checked_ms: now_ms(),
        latency_ms: up.then(|| started.elapsed().as_secs_f64() * 1000.0),
        error: ping.err().map(|e| e.to_string()),
    };
    if !up {
        return;
    }
    let held = ctx.leases.usable(Duration::ZERO);
    if let Ok(n) = ctx.store.backlog(&held).await {
        obs.backlog.store(n, Ordering::Relaxed);
        metrics::gauge!(m::DIRTY_BACKLOG).set(n as f64);
    }
    let now = now_ms();
    if let Ok(oldest) = ctx.store.oldest_dirty(&held, now).await {
        let age = oldest.map_or(0, |at| (now - at).max(0));
        obs.oldest_age_ms.store(age, Ordering::Relaxed);
        metrics::gauge!(m::OLDEST_DIRTY_AGE_SECONDS).set(age as f64 / 1000.0);
    }
    if let Ok(n) = ctx.store.blocked_links(&held).await {
        metrics::gauge!(m::LINKS_BLOCKED_NOW).set(n as f64);
    }
}

/// The observer's task: the rate gauge every second, the store's figures
/// every `check_every`, a point of the series every [`SAMPLE_EVERY`].
pub(super) async fn observe(
    ctx: Arc<FlushContext>,
    check_every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let tick = Duration::from_secs(1).min(check_every);
    let mut last_check: Option<Instant> = None;
    let mut last_sample = Instant::now();
    loop {
        ctx.observations.rate_tick();
        if last_check.is_none_or(|t| t.elapsed() >= check_every) {
            last_check = Some(Instant::now());
            check_store(&ctx).await;
        }
        if last_sample.elapsed() >= SAMPLE_EVERY {
            last_sample = Instant::now();
            ctx.observations.close_window();
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&[3.0], 0.99), Some(3.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn the_series_keeps_fifteen_minutes_and_the_running_window() {
        let obs = Observations::new("r".into(), 10.0, 4);
        for _ in 0..SAMPLES + 5 {
            obs.close_window();
        }
        let s = obs.series();
        assert_eq!(s.len(), SAMPLES + 1);
        assert!(s[..SAMPLES].iter().all(|p| !p.partial));
        assert!(s[SAMPLES].partial);
    }

    #[test]
    fn a_window_reports_its_propagation_and_starts_afresh() {
        let obs = Observations::new("r".into(), 10.0, 4);
        obs.set_replicas(2);
        for s in [0.2, 0.4, 3.0] {
            obs.propagated(s);
        }
        let live = obs.series().pop().unwrap();
        assert_eq!(live.propagation_p50_seconds, Some(0.4));
        assert_eq!(live.propagation_p99_seconds, Some(3.0));
        assert_eq!(live.budget_requests_per_second, 5.0);
        obs.close_window();
        let s = obs.series();
        assert_eq!(s[0].propagation_samples, 3);
        assert_eq!(s[1].propagation_samples, 0);
        assert_eq!(s[1].propagation_p99_seconds, None);
    }
}
