//! Group commit: small pushes that arrive together go to Redis in one
//! script call (`apply_many`), each answered with its own outcome.
//!
//! A push hands its prepared [`ApplyCall`] to [`GroupCommit::apply`] and
//! waits for its own result. The first push of a group spawns the group's
//! leader task, which
//! 1. yields once, so requests this thread has already read join the group;
//! 2. sends the group at once if no group of its slot is in Redis, else waits
//!    until that one is answered, the group holds `max` pushes, or `wait`
//!    has passed since its oldest push arrived (whichever comes first;
//!    tokio's timer has millisecond granularity, so `wait` is rounded up
//!    to it);
//! 3. sends every push of the group in one `apply_many` call and hands each
//!    push its own outcome. A Redis failure fails every push of the group
//!    with the same error (answered 503 like a single push); a push whose
//!    apply raised inside the script (`apply_many_tail.lua` catches it) or
//!    whose reply is unreadable gets its own error, the others their own
//!    outcomes.
//!
//! So under light load a push waits only the one yield; under load the
//! pushes that arrive while a group is in Redis form the next group, and
//! Redis runs one script per group instead of one per push.
//!
//! Groups are per slot: on a Redis Cluster a script may only name keys of
//! one slot, so a group holds pushes of one partition; on a single Redis
//! any pushes may share a group. The leader runs as its own task (the
//! requests' futures may be dropped when a client goes away; the group is
//! sent regardless, as a single push in flight would be).

use super::apply::ApplyCall;
use super::{ApplyOutcome, Partition, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// One push waiting in a group: its call, where its answer goes, and when
/// it arrived (its group is sent at most `wait` after that).
type Waiter = (
    ApplyCall,
    oneshot::Sender<Result<ApplyOutcome, StoreError>>,
    Instant,
);

/// The group of one slot: the pushes waiting, and the groups in Redis.
#[derive(Default)]
struct Slot {
    open: Vec<Waiter>,
    in_flight: usize,
    /// A group of this slot was answered.
    idle: Arc<Notify>,
    /// The open group reached `max`.
    full: Arc<Notify>,
}

struct Inner {
    store: Store,
    wait: Duration,
    max: usize,
    /// Pushes of different partitions may share a group (not a Cluster).
    any_slot: bool,
    slots: Mutex<HashMap<Partition, Slot>>,
}

/// Groups pushes per slot and sends each group in one script call. Cheap
/// to clone; one per connection (one per HTTP worker).
#[derive(Clone)]
pub struct GroupCommit {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("wait", &self.inner.wait)
            .field("max", &self.inner.max)
            .finish_non_exhaustive()
    }
}

/// What a group hands each of its pushes.
pub type GroupResult = Result<ApplyOutcome, StoreError>;

impl GroupCommit {
    /// Groups of at most `max` pushes (at least 1), waiting at most `wait`
    /// for a group of the same slot still in Redis.
    pub fn new(store: Store, wait: Duration, max: usize) -> GroupCommit {
        let any_slot = !store.conn.is_cluster();
        GroupCommit {
            inner: Arc::new(Inner {
                store,
                wait,
                max: max.max(1),
                any_slot,
                slots: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Applies one prepared push in the next group of its slot; returns
    /// once that group is answered, with this push's own outcome.
    pub async fn apply(&self, call: ApplyCall) -> GroupResult {
        let key = if self.inner.any_slot {
            0
        } else {
            call.partition
        };
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut slots = self.inner.lock();
            let slot = slots.entry(key).or_default();
            slot.open.push((call, tx, Instant::now()));
            if slot.open.len() >= self.inner.max {
                slot.full.notify_one();
            }
            slot.open.len() == 1
        };
        if lead {
            tokio::spawn(self.inner.clone().lead(key));
        }
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Reply(
                "the group commit ended without an answer".into(),
            ))
        })
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Partition, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The leader of the open group of `key`: waits (see the module docs),
    /// then sends it.
    async fn lead(self: Arc<Self>, key: Partition) {
        tokio::task::yield_now().await;
        let group = loop {
            let (idle, full, deadline) = {
                let mut slots = self.lock();
                let slot = slots.entry(key).or_default();
                // The oldest push of the group bounds its wait (a group left
                // over from a full one keeps its pushes' arrival times).
                let deadline = slot
                    .open
                    .first()
                    .map_or_else(Instant::now, |(_, _, at)| *at + self.wait);
                if slot.in_flight == 0 || slot.open.len() >= self.max || Instant::now() >= deadline
                {
                    break self.take(slot, key);
                }
                (slot.idle.clone(), slot.full.clone(), deadline)
            };
            tokio::select! {
                _ = idle.notified() => {}
                _ = full.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        };
        if group.is_empty() {
            return;
        }
        crate::metrics::group_commit_size(group.len());
        let calls: Vec<&ApplyCall> = group.iter().map(|(c, _, _)| c).collect();
        let result = self.store.apply_many(&calls).await;
        let idle = {
            let mut slots = self.lock();
            let slot = slots.entry(key).or_default();
            slot.in_flight -= 1;
            slot.idle.clone()
        };
        idle.notify_one();
        match result {
            Ok(outcomes) => {
                for ((_, tx, _), out) in group.into_iter().zip(outcomes) {
                    let _ = tx.send(out);
                }
            }
            Err(e) => {
                for (_, tx, _) in group {
                    let _ = tx.send(Err(e.clone()));
                }
            }
        }
    }

    /// Takes at most `max` pushes of the open group as one group in flight;
    /// what is left opens the next group, with a leader of its own.
    fn take(self: &Arc<Self>, slot: &mut Slot, key: Partition) -> Vec<Waiter> {
        let rest = if slot.open.len() > self.max {
            slot.open.split_off(self.max)
        } else {
            Vec::new()
        };
        let group = std::mem::replace(&mut slot.open, rest);
        if group.is_empty() {
            return group;
        }
        slot.in_flight += 1;
        if !slot.open.is_empty() {
            tokio::spawn(self.clone().lead(key));
        }
        group
    }
}
