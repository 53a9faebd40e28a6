//! Capped exponential backoff with full jitter, and jitter for 429 pauses.

use rand::Rng;
use std::time::Duration;

/// Delay before retry number `attempt` (0-based): uniform in
/// `[0, min(cap, base * 2^attempt)]`, so many replicas never retry in step.
pub fn full_jitter(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let ceiling = base
        .checked_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX))
        .unwrap_or(cap)
        .min(cap);
    let ms = ceiling.as_millis() as u64;
    Duration::from_millis(rand::thread_rng().gen_range(0..=ms))
}

/// A small random addition to a 429 pause, so writers do not all resume at once.
pub fn pause_jitter() -> Duration {
    Duration::from_millis(rand::thread_rng().gen_range(50..=250))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_the_cap_and_grows() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        for attempt in 0..40 {
            let d = full_jitter(base, cap, attempt);
            let ceiling = (100u64 << attempt.min(30)).min(5000);
            assert!(d.as_millis() as u64 <= ceiling, "{attempt}: {d:?}");
        }
        let big: u64 = (0..200)
            .map(|_| full_jitter(base, cap, 10).as_millis() as u64)
            .max()
            .unwrap();
        assert!(big > 1000, "jitter reaches into the grown range: {big}");
    }
}
