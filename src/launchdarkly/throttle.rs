//! Keeps LaunchDarkly requests under the configured rate, and holds every
//! writer off after a 429.
//!
//! The deployment's rate is split evenly over the live replicas (each runs a
//! governor limiter with `rate / replicas` and no burst below 1,000 requests/s,
//! a burst of 10 ms of the rate from there: see [`SLACK`]), so the sum never
//! exceeds the configured rate. Every attempt, retries included, takes a
//! token, and waits at a second limiter of the same share right before it
//! is sent ([`Throttle::before_send`]), so sends stay a period apart however
//! long each took after its token. A 429's pause is kept locally and shared
//! through Redis.
//!
//! A re-split (a replica joined or died) swaps in a new limiter whose first
//! token is already spent, and a writer that got its token from the old
//! limiter waits for one of the new: across the switch, one replica's
//! requests are never closer together than the new share's period. (The
//! other half, that no replica sends before every other one has counted it,
//! is the flusher's: see `flush::leases`.)
//!
//! Every pause is clamped to `launchdarkly.max_pause_seconds` from now (one
//! absurd header cannot stall the deployment), and only ever extends. A
//! writer reads the shared pause once it holds its token
//! ([`Throttle::acquire_with`]), before it sends, so nothing goes out during
//! a pause another writer or replica learned about while it queued; the read
//! is outside the queue, so it does not hold the next writer's token back.
//!
//! Writers take tokens in the order they asked (a FIFO queue in front of the
//! limiter): a link that just sent queues behind the links already waiting,
//! so a big first sync cannot take every token from a small cohort's change.
//!
//! Background reads (sampled verification) go only when the throttle is idle:
//! nobody waits for a token and nobody asked for one in the last
//! [`IDLE_PERIODS`] periods. A link draining a backlog asks again a few
//! milliseconds after each token, so the gap between its batches is not
//! idle: a read taken there would push every later batch back a period.

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The deployment-wide rate limiter and 429 pause.
#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    replicas: AtomicU64,
    limiter: Mutex<Arc<DefaultDirectRateLimiter>>,
    /// The same share again, taken right before each send
    /// ([`Throttle::before_send`]).
    gate: Mutex<Arc<DefaultDirectRateLimiter>>,
    pause_until_ms: AtomicI64,
    /// `launchdarkly.max_pause_seconds` in ms.
    max_pause_ms: i64,
    /// Writers wait their turn here (tokio's mutex is first come, first served).
    queue: tokio::sync::Mutex<()>,
    /// Callers inside [`Throttle::acquire_with`] now (queued or waiting for
    /// a token): background readers ([`Throttle::is_idle`]) give way to them.
    waiting: AtomicUsize,
    /// When (ms) a caller last entered or left [`Throttle::acquire_with`].
    last_demand_ms: AtomicI64,
}

/// Periods of this replica's share after the last demand for a token during
/// which the throttle is not idle (see the module's docs).
pub const IDLE_PERIODS: f64 = 4.0;

/// Counts a caller in [`Throttle::acquire_with`] until it leaves (returns
/// or is cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// From this rate on, a period is a millisecond or less: the scale of timer
/// and scheduler latency.
const FAST: f64 = 1000.0;

/// How far behind its schedule a writer may fall and still catch up, at
/// [`FAST`] rates and above: the limiter's burst is the tokens of this long.
const SLACK: Duration = Duration::from_millis(10);

/// A limiter of `rate` per second: no burst below [`FAST`] (one token at a
/// time), a burst of [`SLACK`]'s worth of tokens from it on (10 at 1,000/s,
/// 20 at 2,000/s).
///
/// Without it a fast rate loses capacity to wake-up latency: with no burst,
/// a writer woken late for its token (timer and scheduler latency, up to a
/// millisecond or more on a busy machine) makes the next token due a full
/// period after the late one, so at a 0.5 ms period the achieved rate fell
/// to a third of the configured one (figure 4d; a 2 ms burst recovered only
/// part of it). The cost is that a window of `w` seconds may hold
/// `rate * w + burst` requests instead of `rate * w + 1`: 10 ms of the
/// rate, invisible to LaunchDarkly's per-window counts. Below [`FAST`] no
/// burst is needed, and none is allowed: two writes leaving together could
/// not see each other's 429 (`pipeline::a_429_holds_every_write_until_its_reset`).
fn limiter(rate: f64) -> (Arc<DefaultDirectRateLimiter>, NonZeroU32) {
    let period = Duration::from_secs_f64(1.0 / rate.max(1e-6));
    let tokens = if rate >= FAST {
        (rate * SLACK.as_secs_f64()).floor() as u32
    } else {
        1
    };
    let burst = NonZeroU32::new(tokens).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period)
        .expect("period is positive")
        .allow_burst(burst);
    (Arc::new(RateLimiter::direct(quota)), burst)
}

#[cfg(not(test))]
use crate::clock::now_ms;

/// The wall clock as unit tests see it: it moves with tokio's clock, so a
/// test on paused time (`tokio::time::pause`) drives pauses too. Unpaused,
/// it is the real wall clock.
#[cfg(test)]
fn now_ms() -> i64 {
    let (tokio_now, real_now) = (
        tokio::time::Instant::now().into_std(),
        std::time::Instant::now(),
    );
    let ahead = match tokio_now.checked_duration_since(real_now) {
        Some(d) => d.as_millis() as i64,
        None => -(real_now.duration_since(tokio_now).as_millis() as i64),
    };
    crate::clock::now_ms() + ahead
}

/// `launchdarkly.max_pause_seconds`' default (900 s) in ms.
const DEFAULT_MAX_PAUSE_MS: i64 = 900_000;

impl Throttle {
    /// A throttle for the deployment's `launchdarkly.requests_per_second`,
    /// as one replica's share until [`Throttle::set_replicas`] says otherwise.
    pub fn new(requests_per_second: f64) -> Self {
        Throttle {
            rate: requests_per_second,
            replicas: AtomicU64::new(1),
            limiter: Mutex::new(limiter(requests_per_second).0),
            gate: Mutex::new(limiter(requests_per_second).0),
            pause_until_ms: AtomicI64::new(0),
            max_pause_ms: DEFAULT_MAX_PAUSE_MS,
            queue: tokio::sync::Mutex::new(()),
            waiting: AtomicUsize::new(0),
            last_demand_ms: AtomicI64::new(i64::MIN / 2),
        }
    }

    /// This replica's share of the deployment's rate (requests per second):
    /// the configured rate divided by the live replicas.
    pub fn replica_rate(&self) -> f64 {
        self.rate / self.replicas.load(Ordering::SeqCst).max(1) as f64
    }

    /// Callers waiting for a token now (queued, or holding the turn).
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// True when nobody waits for a token and nobody asked for one or got
    /// one in the last [`IDLE_PERIODS`] periods of this replica's share:
    /// background work that must yield to writes (sampled verification)
    /// checks this before it asks for one.
    pub fn is_idle(&self) -> bool {
        let quiet_ms = (IDLE_PERIODS * 1000.0 / self.replica_rate().max(1e-6)).min(1e9) as i64;
        self.waiting.load(Ordering::SeqCst) == 0
            && now_ms().saturating_sub(self.last_demand_ms.load(Ordering::SeqCst)) >= quiet_ms
    }

    /// True while a caller waits in [`Throttle::acquire_with`]: a link
    /// draining a backlog hands its turn over rather than asking again.
    pub fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    fn demand(&self) {
        self.last_demand_ms.fetch_max(now_ms(), Ordering::SeqCst);
    }

    /// Re-splits the rate when the number of live replicas changes.
    pub fn set_replicas(&self, n: u64) {
        let n = n.max(1);
        if self.replicas.swap(n, Ordering::SeqCst) != n {
            // A fresh limiter would hand out its burst at once, right after
            // the old one's last: spend it, so the first request at the new
            // share is one new period after the switch (never closer to the
            // previous request than the new spacing).
            let (fresh, burst) = limiter(self.rate / n as f64);
            let _ = fresh.check_n(burst);
            *self.limiter.lock().expect("limiter lock") = fresh;
            let (gate, burst) = limiter(self.rate / n as f64);
            let _ = gate.check_n(burst);
            *self.gate.lock().expect("gate lock") = gate;
        }
    }

    /// Waits until this replica's last send is a period of its share ago
    /// (a second limiter of the same share): call it right before a request
    /// goes out, after [`Throttle::acquire_with`]. Tokens are spaced, but
    /// what follows a token takes its own time (the shared pause's Redis
    /// read, a drain's ack and claim running beside its token): a send held
    /// back 40 ms, then the next one sent on time, put two requests 20 ms
    /// closer than the period, and the emulator counted 52-53 in one second
    /// at 50/s over two or three replicas. In the usual case the gate is
    /// open already.
    pub async fn before_send(&self) {
        let g = self.gate.lock().expect("gate lock").clone();
        g.until_ready().await;
    }

    /// Sets the longest pause (`launchdarkly.max_pause_seconds`).
    pub fn with_max_pause(mut self, max: Duration) -> Self {
        self.max_pause_ms = i64::try_from(max.as_millis()).unwrap_or(i64::MAX).max(1);
        self
    }

    /// `until_ms`, cut to at most `max_pause_seconds` from now.
    pub fn clamp(&self, until_ms: i64) -> i64 {
        until_ms.min(now_ms().saturating_add(self.max_pause_ms))
    }

    /// Holds every writer off until `until_ms`, clamped (see [`Throttle::clamp`]);
    /// keeps the later of two pauses. Returns the clamped time.
    pub fn pause_until(&self, until_ms: i64) -> i64 {
        let until = self.clamp(until_ms);
        self.pause_until_ms.fetch_max(until, Ordering::SeqCst);
        until
    }

    /// Until when (Unix ms) every writer holds off; 0 when never paused.
    pub fn paused_until(&self) -> i64 {
        self.pause_until_ms.load(Ordering::SeqCst)
    }

    /// Waits for any pause to end and for a token. Call before every attempt.
    pub async fn acquire(&self) {
        self.acquire_with(|| std::future::ready(None)).await;
    }

    /// [`Throttle::acquire`], also honouring a shared pause: `shared` reads
    /// it (e.g. from Redis) once the token is in hand, so a pause learned
    /// elsewhere while this writer queued holds it off too (it then waits for
    /// the pause and a fresh token). A failed read (`None`) leaves the local
    /// pause as it is.
    pub async fn acquire_with<F, Fut>(&self, mut shared: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<i64>>,
    {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        self.demand();
        let _waiting = Waiting(&self.waiting);
        loop {
            self.token().await;
            // A 429 may have arrived, here or at another replica, while we
            // queued. The shared pause is read once the token is in hand and
            // outside the queue, so the writers behind us take their tokens
            // while this read is on the wire (a read per token inside the
            // queue capped every replica near one token per Redis round
            // trip). A pause found here is kept locally, so the queue holds
            // everyone off, and this writer queues again for a fresh token.
            if let Some(u) = shared().await {
                self.pause_until(u);
            }
            if self.paused_until() <= now_ms() {
                self.demand();
                return;
            }
        }
    }

    /// Waits for the turn in the queue, for any local pause to end, and for
    /// a token of the current share.
    async fn token(&self) {
        let _turn = self.queue.lock().await;
        loop {
            let wait = self.paused_until().saturating_sub(now_ms());
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                continue;
            }
            let l = self.limiter.lock().expect("limiter lock").clone();
            l.until_ready().await;
            // The rate was re-split while we waited: a token of the old share
            // does not count, wait for one of the new share.
            if Arc::ptr_eq(&l, &self.limiter.lock().expect("limiter lock")) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spacing_follows_the_rate() {
        let t = Throttle::new(20.0);
        let start = std::time::Instant::now();
        for _ in 0..5 {
            t.acquire().await;
        }
        // 5 tokens at 20/s with no burst: at least 4 periods of 50 ms.
        assert!(
            start.elapsed() >= Duration::from_millis(190),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn sends_are_a_period_apart_even_when_their_tokens_were_taken_early() {
        let t = Throttle::new(10.0); // one token per 100 ms
        t.acquire().await;
        t.acquire().await;
        // Both writers send late (their tokens 100 ms apart, both past),
        // one right after the other: the second waits out a period.
        tokio::time::sleep(Duration::from_millis(150)).await;
        t.before_send().await;
        let first = std::time::Instant::now();
        t.before_send().await;
        assert!(
            first.elapsed() >= Duration::from_millis(90),
            "{:?}",
            first.elapsed()
        );
    }

    #[tokio::test]
    async fn writers_get_tokens_in_the_order_they_asked() {
        let t = Arc::new(Throttle::new(5.0)); // one token per 200 ms
        t.acquire().await; // spend the first: the next ones wait
        let order = Arc::new(Mutex::new(Vec::new()));
        let spawn = |name: &'static str| {
            let (t, order) = (t.clone(), order.clone());
            tokio::spawn(async move {
                t.acquire().await;
                order.lock().unwrap().push(name);
            })
        };
        // "big" takes the turn and waits for the token; "small" queues behind
        // it; then "big" asks again and must queue behind "small".
        let big = spawn("big");
        for _ in 0..1000 {
            if t.queue.try_lock().is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(
            t.queue.try_lock().is_err(),
            "the first writer holds the turn"
        );
        let small = spawn("small");
        for _ in 0..10 {
            tokio::task::yield_now().await; // let "small" reach the queue
        }
        let big_again = spawn("big again");
        for h in [big, small, big_again] {
            h.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["big", "small", "big again"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_throttle_is_idle_only_while_nobody_waits_for_a_token() {
        let t = Arc::new(Throttle::new(1.0)); // one token per second
        assert!(t.is_idle());
        t.acquire().await; // the first token: the next one waits a second
                           // A writer that just got its token may ask again at once (a link
                           // draining a backlog): not idle for IDLE_PERIODS periods.
        assert!(!t.is_idle(), "a token was just taken");
        tokio::time::advance(Duration::from_millis(3_900)).await;
        assert!(!t.is_idle(), "still within IDLE_PERIODS periods");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(t.is_idle(), "IDLE_PERIODS periods without demand");
        let writer = tokio::spawn({
            let t = t.clone();
            async move { t.acquire().await }
        });
        for _ in 0..1000 {
            if !t.is_idle() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(!t.is_idle(), "a writer waits for its token");
        writer.await.unwrap();
        tokio::time::advance(Duration::from_millis(4_100)).await;
        assert!(t.is_idle());
        assert_eq!(t.replica_rate(), 1.0);
        t.set_replicas(4);
        assert_eq!(t.replica_rate(), 0.25);
    }

    #[tokio::test]
    async fn pauses_are_clamped_and_never_wrap() {
        let t = Throttle::new(1000.0).with_max_pause(Duration::from_secs(900));
        let before = now_ms();
        let until = t.pause_until(i64::MAX);
        assert!(until <= now_ms() + 900_000 && until >= before + 900_000);
        assert_eq!(t.paused_until(), until);
        // A shorter pause never shortens the clamped one.
        t.pause_until(before + 10);
        assert_eq!(t.paused_until(), until);
    }

    /// Virtual time since `start` (the test runs on paused time).
    fn waited(start: tokio::time::Instant) -> Duration {
        tokio::time::Instant::now() - start
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_rereads_the_shared_pause_once_it_has_its_token() {
        let t = Throttle::new(1000.0);
        // The shared pause appears (another replica's 429) while the writer
        // queues; it reads it once it holds its token, waits it out and
        // takes a fresh token.
        let reads = std::sync::atomic::AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let learned = now_ms() + 20_000;
        t.acquire_with(|| {
            reads.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Some(learned))
        })
        .await;
        assert!(now_ms() >= learned, "sent during the shared pause");
        assert!(
            waited(start) >= Duration::from_secs(20),
            "{:?}",
            waited(start)
        );
        assert!(reads.load(Ordering::SeqCst) >= 2);
    }

    #[tokio::test]
    async fn a_slow_shared_read_does_not_hold_the_next_writer_back() {
        let t = Arc::new(Throttle::new(1000.0));
        let reading = Arc::new(tokio::sync::Notify::new());
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let released = Arc::new(tokio::sync::Mutex::new(Some(released)));
        let slow = {
            let (t, reading) = (t.clone(), reading.clone());
            tokio::spawn(async move {
                t.acquire_with(|| {
                    let (reading, released) = (reading.clone(), released.clone());
                    async move {
                        reading.notify_one();
                        if let Some(r) = released.lock().await.take() {
                            let _ = r.await;
                        }
                        None
                    }
                })
                .await;
            })
        };
        reading.notified().await;
        // The first writer's read of the shared pause hangs (a slow Redis);
        // the next writer still gets its token. (The bound only turns a
        // hang into a failure.)
        let next = tokio::time::timeout(Duration::from_secs(30), t.acquire()).await;
        assert!(next.is_ok(), "the next writer waited for another's read");
        release.send(()).unwrap();
        slow.await.unwrap();
    }

    // governor runs on the real clock, so these two run in real time and
    // check only the spacing the limiter promises (a lower bound).
    #[tokio::test]
    async fn a_re_split_never_sends_closer_than_the_new_period() {
        let t = Throttle::new(10.0); // 100 ms apart
        t.acquire().await;
        let start = std::time::Instant::now();
        // Three replicas now: 300 ms apart. The new limiter's free token is
        // spent, so the next request waits a whole new period.
        t.set_replicas(3);
        t.acquire().await;
        assert!(
            start.elapsed() >= Duration::from_millis(299),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn a_writer_waiting_on_the_old_share_waits_for_the_new_one() {
        let t = Arc::new(Throttle::new(10.0));
        t.acquire().await; // the next token of the old share is 100 ms away
        let start = std::time::Instant::now();
        let writer = {
            let t = t.clone();
            tokio::spawn(async move { t.acquire().await })
        };
        // Once the writer holds the turn it waits on the old limiter.
        while t.queue.try_lock().is_ok() {
            tokio::task::yield_now().await;
        }
        t.set_replicas(2); // 200 ms apart, counted from the switch
        writer.await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(199),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pause_holds_acquire_until_it_ends() {
        let t = Throttle::new(1000.0);
        let start = tokio::time::Instant::now();
        let until = now_ms() + 60_000;
        t.pause_until(until);
        t.pause_until(until - 30_000); // an earlier pause never shortens a later one
        t.acquire().await;
        assert!(now_ms() >= until);
        let w = waited(start);
        assert!(
            w >= Duration::from_secs(60) && w < Duration::from_secs(61),
            "{w:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_past_max_pause_holds_writers_only_that_long() {
        let t = Throttle::new(1000.0).with_max_pause(Duration::from_secs(30));
        let start = tokio::time::Instant::now();
        t.pause_until(now_ms() + 3_600_000); // an absurd Retry-After
        t.acquire().await;
        let w = waited(start);
        assert!(
            w >= Duration::from_secs(30) && w < Duration::from_secs(31),
            "{w:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_pause_ends_writers_go_at_once() {
        let t = Throttle::new(1000.0);
        t.pause_until(now_ms() + 5_000);
        t.acquire().await;
        let start = tokio::time::Instant::now();
        t.acquire_with(|| std::future::ready(Some(0))).await; // an old shared pause
        assert!(
            waited(start) < Duration::from_secs(1),
            "{:?}",
            waited(start)
        );
    }
}
