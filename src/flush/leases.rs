//! Partition leases: exactly one flusher works a partition at a time.
//!
//! Each replica heartbeats into a registry, takes a fair share
//! (`ceil(P / live replicas)`) of the partitions with `SET NX PX`, renews
//! them, and gives up the excess when replicas join. It tracks locally how
//! long each lease is certainly still valid (measured from *before* the renew
//! was sent), so a LaunchDarkly request is only sent while the lease outlives
//! the request timeout: LaunchDarkly takes no fencing token.

use crate::store::Store;
use rand::seq::SliceRandom;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The leases this replica holds.
#[derive(Debug)]
pub struct Leases {
    token: String,
    ttl: Duration,
    partitions: u16,
    held: Mutex<BTreeMap<u16, Instant>>,
}

impl Leases {
    pub fn new(token: String, ttl: Duration, partitions: u16) -> Self {
        Leases {
            token,
            ttl,
            partitions,
            held: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Partitions whose lease is valid for at least `margin` more.
    pub fn usable(&self, margin: Duration) -> Vec<u16> {
        let now = Instant::now();
        self.held
            .lock()
            .expect("leases lock")
            .iter()
            .filter(|(_, until)| **until > now + margin)
            .map(|(p, _)| *p)
            .collect()
    }

    /// True if the partition's lease is valid for at least `margin` more.
    pub fn valid_for(&self, p: u16, margin: Duration) -> bool {
        self.held
            .lock()
            .expect("leases lock")
            .get(&p)
            .is_some_and(|until| *until > Instant::now() + margin)
    }

    pub fn count(&self) -> usize {
        self.held.lock().expect("leases lock").len()
    }

    /// One maintenance round: heartbeat, renew, take or give up partitions.
    /// Returns the number of live replicas.
    pub async fn maintain(&self, store: &Store, now_ms: i64) -> anyhow::Result<u64> {
        let live = store.heartbeat(&self.token, now_ms, self.ttl).await?;
        let share = (u64::from(self.partitions)).div_ceil(live) as usize;

        let held: Vec<u16> = self
            .held
            .lock()
            .expect("leases lock")
            .keys()
            .copied()
            .collect();
        for p in held {
            let start = Instant::now();
            if store.renew_lease(p, &self.token, self.ttl).await? {
                self.held
                    .lock()
                    .expect("leases lock")
                    .insert(p, start + self.ttl);
            } else {
                tracing::warn!(
                    partition = p,
                    "Lost a partition lease; another replica holds it."
                );
                self.held.lock().expect("leases lock").remove(&p);
            }
        }

        let mut count = self.count();
        if count < share {
            let mut free: Vec<u16> = (0..self.partitions)
                .filter(|p| !self.held.lock().expect("leases lock").contains_key(p))
                .collect();
            free.shuffle(&mut rand::thread_rng());
            for p in free {
                if count >= share {
                    break;
                }
                let start = Instant::now();
                if store.try_acquire_lease(p, &self.token, self.ttl).await? {
                    self.held
                        .lock()
                        .expect("leases lock")
                        .insert(p, start + self.ttl);
                    count += 1;
                }
            }
        } else if count > share {
            let extra: Vec<u16> = self
                .held
                .lock()
                .expect("leases lock")
                .keys()
                .rev()
                .take(count - share)
                .copied()
                .collect();
            for p in extra {
                self.held.lock().expect("leases lock").remove(&p);
                store.renew_lease(p, &self.token, Duration::ZERO).await?;
            }
        }
        metrics::gauge!(crate::metrics::LEASES_HELD).set(self.count() as f64);
        Ok(live)
    }

    /// Releases every lease but those in `keep` (graceful shutdown), so
    /// another replica takes over at once; the kept ones expire in their time.
    pub async fn release_all(&self, store: &Store, keep: &BTreeSet<u16>) {
        let held: Vec<u16> = std::mem::take(&mut *self.held.lock().expect("leases lock"))
            .into_keys()
            .filter(|p| !keep.contains(p))
            .collect();
        for p in held {
            if let Err(e) = store.renew_lease(p, &self.token, Duration::ZERO).await {
                tracing::warn!(partition = p, error = %e, "Could not release a lease; it will expire.");
            }
        }
        let _ = store.leave(&self.token).await;
    }
}
