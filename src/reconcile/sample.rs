//! Sampled verification: between reconciles, read random members back from
//! LaunchDarkly and repair any that differ from what the bridge recorded.
//!
//! The path of one check:
//!
//! 1. wait for the sampler's own token: a governor limiter at
//!    `flush.verify_share` × this replica's share of
//!    `launchdarkly.requests_per_second`, so sampling never takes more than
//!    its share; then wait until no write waits for a throttle token (flush
//!    work goes first);
//! 2. draw a random settled member of the link (`sample_pick.lua`:
//!    `HRANDFIELD` on the cohort's want hash; in or out, not dirty, not in
//!    doubt, not dead-lettered) with its stored value;
//! 3. `GET …/{segment}/contexts/{key}` through the flusher's [`Throttle`]
//!    and the shared 429 pause, like every LaunchDarkly call;
//! 4. judge the answer in Redis (`sample_judge.lua`), compare-and-set: only
//!    if the member's stored value is still the one read in step 2. A
//!    mismatch becomes dirty (state unknown) and the normal flusher rewrites
//!    it; a member that changed meanwhile is counted `changed`, not judged. A
//!    404, 5xx, 429 or timeout is counted and never repairs anything.
//!
//! The flusher runs one [`Sampler`] per replica over the links of the
//! partitions it holds leases on (so replicas never read the same link and
//! their samplers' rates add up to the configured share), one link after
//! the other, so a small cohort is checked as often as a big one.

use super::Reconciler;
use crate::clock::now_ms;
use crate::launchdarkly::Attempt;
use crate::metrics as m;
use crate::store::{LinkId, SampleVerdict, StoreError};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one check found (the `result` label of
/// `cohort_bridge_verify_checks_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleResult {
    /// LaunchDarkly holds what the bridge recorded.
    Match,
    /// It does not: the member is marked for a rewrite.
    Mismatch,
    /// The member changed between the read and the answer: not judged.
    Changed,
    /// 404: no such segment (or route); nothing judged.
    NotFound,
    /// Another status (5xx, 429, 4xx) or an unreadable body; nothing judged.
    Error,
    /// No answer (timeout, transport error); nothing judged.
    Timeout,
}

impl SampleResult {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            SampleResult::Match => "match",
            SampleResult::Mismatch => "mismatch",
            SampleResult::Changed => "changed",
            SampleResult::NotFound => "not_found",
            SampleResult::Error => "error",
            SampleResult::Timeout => "timeout",
        }
    }
}

/// Reads random members back within its share of the rate.
#[derive(Debug)]
pub struct Sampler {
    reconciler: Reconciler,
    share: f64,
    /// The limiter and the rate it was built for (rebuilt when the number
    /// of live replicas, hence this replica's rate, changes).
    limiter: Mutex<(f64, Arc<DefaultDirectRateLimiter>)>,
}

fn limiter(rate: f64) -> Arc<DefaultDirectRateLimiter> {
    let period = Duration::from_secs_f64(1.0 / rate.max(1e-6));
    let quota = Quota::with_period(period)
        .expect("period is positive")
        .allow_burst(NonZeroU32::MIN);
    Arc::new(RateLimiter::direct(quota))
}

/// Whether sampled verification reads a destination's links back: not in
/// shadow mode, where the bridge writes nothing to LaunchDarkly, so there is
/// nothing to verify (and reading would spend the budget of a live one).
pub fn samples_destination(settings: &crate::config::Settings, destination: &str) -> bool {
    settings.mode_of(destination) == crate::config::Mode::Live
}

impl Sampler {
    /// A sampler sharing the reconciler's client and throttle; `None` when
    /// `flush.verify_share` is 0 (off).
    pub fn new(reconciler: Reconciler) -> Option<Sampler> {
        let share = reconciler.settings.flush.verify_share;
        if share <= 0.0 {
            return None;
        }
        let rate = share * reconciler.throttle.replica_rate();
        Some(Sampler {
            reconciler,
            share,
            limiter: Mutex::new((rate, limiter(rate))),
        })
    }

    /// The sampler's rate now: its share of this replica's rate.
    pub fn rate(&self) -> f64 {
        self.share * self.reconciler.throttle.replica_rate()
    }

    /// Waits for the sampler's own token, then until no write waits for a
    /// throttle token (checked every `poll`).
    pub async fn wait_turn(&self, poll: Duration) {
        let rate = self.rate();
        let l = {
            let mut guard = self.limiter.lock().expect("sampler limiter lock");
            if guard.0 != rate {
                *guard = (rate, limiter(rate));
            }
            guard.1.clone()
        };
        l.until_ready().await;
        while !self.reconciler.throttle.is_idle() {
            tokio::time::sleep(poll).await;
        }
    }

    /// Whether a link can be sampled: its segment exists and it is not
    /// blocked (a blocked link's reads would fail the same way).
    async fn segment_of(&self, link: &LinkId) -> Result<Option<String>, StoreError> {
        let Some(status) = self.reconciler.store.link_status(link).await? else {
            return Ok(None);
        };
        let get = |k: &str| status.meta.get(k).map(String::as_str).unwrap_or("");
        if get("created") != "1" || get("segment_key").is_empty() || !get("blocked").is_empty() {
            return Ok(None);
        }
        Ok(Some(get("segment_key").to_string()))
    }

    /// Checks one random member of the link (call after [`Sampler::wait_turn`]):
    /// `None` if nothing was read (no segment yet, blocked, no settled member).
    pub async fn check(&self, link: &LinkId) -> Result<Option<SampleResult>, StoreError> {
        let r = &self.reconciler;
        let Some(dest) = r.settings.destinations.get(&link.destination) else {
            return Ok(None);
        };
        if !samples_destination(&r.settings, &link.destination) {
            return Ok(None);
        }
        let Some(segment) = self.segment_of(link).await? else {
            return Ok(None);
        };
        let Some(pick) = r.store.sample_pick(link).await? else {
            return Ok(None);
        };
        let (project, env) = (dest.project.as_str(), dest.environment.as_str());
        let (attempt, state) = r
            .send("get_member", || {
                r.ld.member_state(project, env, &segment, &pick.member)
            })
            .await;
        let now = now_ms();
        let result = match (&attempt, state) {
            (Attempt::Replied(reply), Some(state)) if (200..300).contains(&reply.status) => match r
                .store
                .sample_judge(link, &pick, state.included, now)
                .await?
            {
                SampleVerdict::Match => SampleResult::Match,
                SampleVerdict::Changed => SampleResult::Changed,
                drift @ (SampleVerdict::Missing | SampleVerdict::Extra) => {
                    let kind = if drift == SampleVerdict::Missing {
                        "missing"
                    } else {
                        "extra"
                    };
                    metrics::counter!(m::DRIFT_MEMBERS, "kind" => kind).increment(1);
                    tracing::info!(link = %link, member = %pick.member, kind, "Sampled verification found drift; the member is marked for a rewrite.");
                    SampleResult::Mismatch
                }
            },
            (Attempt::Replied(reply), _) if reply.status == 404 => SampleResult::NotFound,
            (Attempt::Replied(_), _) => SampleResult::Error,
            (Attempt::TimedOut | Attempt::Transport(_), _) => SampleResult::Timeout,
            (Attempt::NotSent(_), _) => SampleResult::Error,
        };
        if matches!(
            result,
            SampleResult::NotFound | SampleResult::Error | SampleResult::Timeout
        ) {
            r.store.sample_failed(link, now).await?;
        }
        metrics::counter!(m::VERIFY_CHECKS, "result" => result.label()).increment(1);
        Ok(Some(result))
    }
}
