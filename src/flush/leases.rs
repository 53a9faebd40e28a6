//! Partition leases: exactly one flusher works a partition at a time.
//!
//! Each replica heartbeats into a registry, takes a fair share
//! (`ceil(P / live replicas)`) of the partitions with `SET NX PX`, renews
//! them, and gives up the excess when replicas join. It tracks locally how
//! long each lease is certainly still valid (measured from *before* the renew
//! was sent), so a LaunchDarkly request is only sent while the lease outlives
//! the request timeout: LaunchDarkly takes no fencing token.
//!
//! Every request is bracketed by a [`RequestGuard`] taken just before it is
//! sent (after any throttle wait). A partition given up on rebalance is first
//! *drained*: nothing new is claimed or sent there, its lease is still renewed,
//! and it is released only once its last request has ended plus the request
//! timeout (LaunchDarkly may still apply a request the client gave up on).
//! The next owner therefore cannot write a member before an older write of
//! it has landed.
//!
//! The rate split follows the heartbeats: each maintenance round hands the
//! live count to the throttle *before* it takes or gives up any partition,
//! and a replica that joins others takes no partition for `join_wait` (two
//! maintenance periods) after its first heartbeat. By then every other live
//! replica has renewed at least once, has counted the newcomer and slowed to
//! its smaller share, so the shares of the replicas that send never add up
//! to more than the deployment's rate, even while one joins.

use crate::store::{Partition, Store};
use rand::seq::SliceRandom;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;
// tokio's clock (the system's monotonic clock unless a test pauses it), so
// tests can drive lease and drain timing with `tokio::time::pause`.
use tokio::time::Instant;

/// The leases this replica holds.
#[derive(Debug)]
pub struct Leases {
    token: String,
    ttl: Duration,
    request_timeout: Duration,
    partitions: u16,
    /// How long after its first heartbeat this replica takes no partition.
    join_wait: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When this replica may first take partitions: at once if it was alone
    /// at its first heartbeat, else `join_wait` after it.
    settle_at: Option<Instant>,
    /// Partition → until when the lease is certainly valid.
    held: BTreeMap<Partition, Instant>,
    /// Held partitions being given up: no new claims or requests.
    draining: BTreeSet<Partition>,
    /// Requests in flight per partition.
    active: HashMap<Partition, usize>,
    /// When the last request of a partition ended.
    last_end: HashMap<Partition, Instant>,
}

impl State {
    fn valid(&self, partition: Partition, margin: Duration, now: Instant) -> bool {
        !self.draining.contains(&partition)
            && self.held.get(&partition).is_some_and(|u| *u > now + margin)
    }

    /// True once a draining partition may be released.
    fn quiet(&self, partition: Partition, request_timeout: Duration, now: Instant) -> bool {
        self.active.get(&partition).copied().unwrap_or(0) == 0
            && self
                .last_end
                .get(&partition)
                .is_none_or(|end| now >= *end + request_timeout)
    }
}

/// One LaunchDarkly request in flight under a partition's lease.
#[must_use]
pub struct RequestGuard<'a> {
    leases: &'a Leases,
    partition: Partition,
    settled: bool,
}

impl RequestGuard<'_> {
    /// The request got an answer LaunchDarkly will not apply later: the
    /// partition needs no extra wait before it is released.
    pub fn settled(&mut self) {
        self.settled = true;
    }
}

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        let mut s = self.leases.lock();
        if let Some(n) = s.active.get_mut(&self.partition) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.active.remove(&self.partition);
            }
        }
        if !self.settled {
            s.last_end.insert(self.partition, Instant::now());
        }
    }
}

impl Leases {
    /// No leases yet; `token` identifies this replica's leases in Redis,
    /// `ttl` is `flush.lease_ttl`, and a partition of the `partitions` is
    /// only written while its lease outlives `request_timeout`.
    pub fn new(token: String, ttl: Duration, request_timeout: Duration, partitions: u16) -> Self {
        Leases {
            token,
            ttl,
            request_timeout,
            partitions,
            join_wait: Duration::ZERO,
            state: Mutex::new(State::default()),
        }
    }

    /// Takes no partition until `wait` after the first heartbeat: long
    /// enough for every other replica to renew once and count this one.
    pub fn with_join_wait(mut self, wait: Duration) -> Self {
        self.join_wait = wait;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("leases lock")
    }

    /// The token this replica's leases hold (the fencing check of every script).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Partitions whose lease is valid for at least `margin` more (and that
    /// are not being given up).
    pub fn usable(&self, margin: Duration) -> Vec<Partition> {
        let now = Instant::now();
        let s = self.lock();
        s.held
            .keys()
            .copied()
            .filter(|partition| s.valid(*partition, margin, now))
            .collect()
    }

    /// True if the partition's lease is valid for at least `margin` more and
    /// the partition is not being given up.
    pub fn valid_for(&self, partition: Partition, margin: Duration) -> bool {
        self.lock().valid(partition, margin, Instant::now())
    }

    /// Call just before sending a request: `Some` if the lease outlives the
    /// request timeout (and the partition is not being given up); the
    /// partition is then not released before the guard is dropped plus the
    /// request timeout.
    pub fn begin_request(&self, partition: Partition) -> Option<RequestGuard<'_>> {
        let mut s = self.lock();
        if !s.valid(partition, self.request_timeout, Instant::now()) {
            return None;
        }
        *s.active.entry(partition).or_insert(0) += 1;
        Some(RequestGuard {
            leases: self,
            partition,
            settled: false,
        })
    }

    /// Partitions held and not being given up.
    pub fn count(&self) -> usize {
        let s = self.lock();
        s.held.len() - s.draining.len()
    }

    /// Renews every held lease (drained ones too).
    /// Cheap and never waits behind anything but Redis: run it on its own.
    async fn renew(&self, store: &Store) -> anyhow::Result<()> {
        let held: Vec<Partition> = self.lock().held.keys().copied().collect();
        for partition in held {
            let start = Instant::now();
            let renewed = store.renew_lease(partition, &self.token, self.ttl).await?;
            let mut s = self.lock();
            if renewed {
                if s.held.contains_key(&partition) {
                    s.held.insert(partition, start + self.ttl);
                }
            } else {
                tracing::warn!(
                    partition,
                    "Lost a partition lease; another replica holds it."
                );
                s.held.remove(&partition);
                s.draining.remove(&partition);
            }
        }
        Ok(())
    }

    /// One maintenance round: heartbeat, renew, take or give up partitions,
    /// release drained ones. Returns the number of live replicas.
    /// `split` gets the live count as soon as the heartbeat returns, before
    /// any partition is taken or released (the throttle's re-split).
    pub async fn maintain(
        &self,
        store: &Store,
        now_ms: i64,
        split: impl FnOnce(u64),
    ) -> anyhow::Result<u64> {
        let live = store.heartbeat(&self.token, now_ms, self.ttl).await?;
        split(live);
        let share = (u64::from(self.partitions)).div_ceil(live) as usize;
        self.renew(store).await?;
        let settled = {
            // Alone at the first heartbeat, nobody else has a share to cut.
            let wait = if live > 1 {
                self.join_wait
            } else {
                Duration::ZERO
            };
            let mut s = self.lock();
            let from = *s.settle_at.get_or_insert_with(|| Instant::now() + wait);
            Instant::now() >= from
        };

        let mut count = self.count();
        if count < share && settled {
            // Take back partitions still draining first: they are ours already.
            {
                let mut s = self.lock();
                while count < share {
                    let Some(partition) = s.draining.pop_first() else {
                        break;
                    };
                    count += 1;
                    tracing::info!(partition, "Keeping a partition it was giving up.");
                }
            }
            let mut free: Vec<Partition> = {
                let s = self.lock();
                (0..self.partitions)
                    .filter(|partition| !s.held.contains_key(partition))
                    .collect()
            };
            free.shuffle(&mut rand::thread_rng());
            for partition in free {
                if count >= share {
                    break;
                }
                let start = Instant::now();
                if store
                    .try_acquire_lease(partition, &self.token, self.ttl)
                    .await?
                {
                    self.lock().held.insert(partition, start + self.ttl);
                    count += 1;
                }
            }
        } else if count > share {
            let mut s = self.lock();
            let extra: Vec<Partition> = s
                .held
                .keys()
                .rev()
                .filter(|partition| !s.draining.contains(partition))
                .take(count - share)
                .copied()
                .collect();
            for partition in extra {
                tracing::info!(
                    partition,
                    "Giving up a partition once its requests have ended."
                );
                s.draining.insert(partition);
            }
        }

        let now = Instant::now();
        let release: Vec<Partition> = {
            let mut s = self.lock();
            let done: Vec<Partition> = s
                .draining
                .iter()
                .copied()
                .filter(|partition| s.quiet(*partition, self.request_timeout, now))
                .collect();
            for partition in &done {
                s.draining.remove(partition);
                s.held.remove(partition);
                s.last_end.remove(partition);
            }
            done
        };
        for partition in release {
            store
                .renew_lease(partition, &self.token, Duration::ZERO)
                .await?;
            tracing::info!(partition, "Released a partition to a new replica.");
        }
        metrics::gauge!(crate::metrics::LEASES_HELD).set(self.count() as f64);
        Ok(live)
    }

    /// Releases every lease but those in `keep` (graceful shutdown), so
    /// another replica takes over at once; the kept ones expire in their time.
    pub async fn release_all(&self, store: &Store, keep: &BTreeSet<Partition>) {
        let held: Vec<Partition> = {
            let mut s = self.lock();
            let now = Instant::now();
            // A partition whose requests may still land is kept too.
            let busy: Vec<Partition> = s
                .held
                .keys()
                .copied()
                .filter(|partition| !s.quiet(*partition, self.request_timeout, now))
                .collect();
            s.draining.clear();
            std::mem::take(&mut s.held)
                .into_keys()
                .filter(|partition| !keep.contains(partition) && !busy.contains(partition))
                .collect()
        };
        for partition in held {
            if let Err(e) = store
                .renew_lease(partition, &self.token, Duration::ZERO)
                .await
            {
                tracing::warn!(partition, error = %e, "Could not release a lease; it will expire.");
            }
        }
        let _ = store.leave(&self.token).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(30);
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

    /// Leases that hold `partition` as if it had just been acquired.
    fn holding(partition: Partition) -> Leases {
        let leases = Leases::new("t".into(), TTL, REQUEST_TIMEOUT, 4);
        leases.lock().held.insert(partition, Instant::now() + TTL);
        leases
    }

    fn quiet(leases: &Leases, partition: Partition) -> bool {
        leases
            .lock()
            .quiet(partition, REQUEST_TIMEOUT, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_usable_only_while_it_outlives_the_margin() {
        let leases = holding(2);
        let margin = Duration::from_secs(10);
        assert_eq!(leases.usable(margin), [2]);
        tokio::time::advance(TTL - margin - Duration::from_millis(1)).await;
        assert!(leases.valid_for(2, margin));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!leases.valid_for(2, margin));
        assert!(leases.usable(margin).is_empty());
        assert!(leases.valid_for(2, Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn no_request_starts_unless_the_lease_outlives_its_timeout() {
        let leases = holding(1);
        assert!(leases.begin_request(1).is_some());
        assert!(leases.begin_request(0).is_none(), "not held");
        tokio::time::advance(TTL - REQUEST_TIMEOUT).await;
        assert!(leases.begin_request(1).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_draining_partition_waits_out_the_timeout_of_its_last_unsettled_request() {
        let leases = holding(3);
        let guard = leases.begin_request(3).expect("lease valid");
        leases.lock().draining.insert(3);
        assert!(leases.begin_request(3).is_none(), "draining: nothing new");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!quiet(&leases, 3), "a request is in flight");
        drop(guard); // ended without an answer LaunchDarkly will not apply later
        tokio::time::advance(REQUEST_TIMEOUT - Duration::from_millis(1)).await;
        assert!(!quiet(&leases, 3), "the abandoned request may still land");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(quiet(&leases, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_settled_request_needs_no_wait() {
        let leases = holding(0);
        let mut guard = leases.begin_request(0).expect("lease valid");
        guard.settled();
        drop(guard);
        assert!(quiet(&leases, 0));
    }
}
