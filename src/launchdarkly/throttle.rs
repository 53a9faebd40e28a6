//! Keeps LaunchDarkly requests under the configured rate, and holds every
//! writer off after a 429.
//!
//! The deployment's rate is split evenly over the live replicas (each runs a
//! governor limiter with `rate / replicas` and no burst), so the sum never
//! exceeds the configured rate. Every attempt, retries included, takes a
//! token. A 429's pause is kept locally and shared through Redis.
//!
//! Writers take tokens in the order they asked (a FIFO queue in front of the
//! limiter): a link that just sent queues behind the links already waiting,
//! so a big first sync cannot take every token from a small cohort's change.

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The deployment-wide rate limiter and 429 pause.
#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    replicas: AtomicU64,
    limiter: Mutex<Arc<DefaultDirectRateLimiter>>,
    pause_until_ms: AtomicI64,
    /// Writers wait their turn here (tokio's mutex is first come, first served).
    queue: tokio::sync::Mutex<()>,
}

fn limiter(rate: f64) -> Arc<DefaultDirectRateLimiter> {
    let period = Duration::from_secs_f64(1.0 / rate.max(1e-6));
    let quota = Quota::with_period(period)
        .expect("period is positive")
        .allow_burst(NonZeroU32::MIN);
    Arc::new(RateLimiter::direct(quota))
}

use crate::clock::now_ms;

impl Throttle {
    pub fn new(requests_per_second: f64) -> Self {
        Throttle {
            rate: requests_per_second,
            replicas: AtomicU64::new(1),
            limiter: Mutex::new(limiter(requests_per_second)),
            pause_until_ms: AtomicI64::new(0),
            queue: tokio::sync::Mutex::new(()),
        }
    }

    /// Re-splits the rate when the number of live replicas changes.
    pub fn set_replicas(&self, n: u64) {
        let n = n.max(1);
        if self.replicas.swap(n, Ordering::SeqCst) != n {
            *self.limiter.lock().expect("limiter lock") = limiter(self.rate / n as f64);
        }
    }

    /// Holds every writer off until `until_ms` (keeps the later of two pauses).
    pub fn pause_until(&self, until_ms: i64) {
        self.pause_until_ms.fetch_max(until_ms, Ordering::SeqCst);
    }

    pub fn paused_until(&self) -> i64 {
        self.pause_until_ms.load(Ordering::SeqCst)
    }

    /// Waits for any pause to end and for a token. Call before every attempt.
    pub async fn acquire(&self) {
        let _turn = self.queue.lock().await;
        loop {
            let wait = self.paused_until() - now_ms();
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                continue;
            }
            let l = self.limiter.lock().expect("limiter lock").clone();
            l.until_ready().await;
            // A 429 may have arrived while we waited for the token.
            if self.paused_until() <= now_ms() {
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

    #[tokio::test]
    async fn pause_holds_acquire_until_it_ends() {
        let t = Throttle::new(1000.0);
        let until = now_ms() + 150;
        t.pause_until(until);
        t.pause_until(until - 100); // an earlier pause never shortens a later one
        t.acquire().await;
        assert!(now_ms() >= until);
    }
}
