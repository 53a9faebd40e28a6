//! First-event Segment batches (`batches = "first-event"`): a batch whose
//! signature covers only element 0 is applied once, the first time that
//! element 0 is seen.
//!
//! One marker per (source, element 0's `messageId`). Before any push of the
//! batch is applied the receiver claims it atomically (one small script:
//! absent or "partial" → "pending", short TTL). A new claim whose element 0
//! was already applied on its own (its per-delivery seen key exists: sent
//! singly, or in a batch signed in full) is a duplicate. The marker becomes
//! "done" (dedupe TTL) only after every push of the batch is in Redis; if
//! applying fails (503) it becomes "partial", so a retry applies everything
//! (each push is still de-duplicated by apply.lua). A second batch with the
//! same element 0 — a retry, or a forged batch reusing a captured element 0
//! — finds the marker: "done" answers a duplicate that applies nothing;
//! "pending" (being applied right now) answers 503 so the sender retries.
//! The claim is a separate command rather than part of apply.lua because a
//! batch's pushes live in different cohorts, hence different partitions
//! (and, in a cluster, slots) than the marker.

use super::{Store, StoreError};

/// How long a claim survives a bridge that died while applying its batch.
const PENDING_TTL_MS: u64 = 120_000;

/// Absent or "partial" (an attempt failed part-way) → "pending", ours.
const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if not v or v == 'partial' then
  redis.call('SET', KEYS[1], 'pending', 'PX', ARGV[1])
  return v or 'new'
end
return v
";

/// What claiming a batch found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchClaim {
    /// Ours, never tried before: apply the batch unless its element 0 was
    /// applied on its own; then [`Store::finish_batch`].
    New,
    /// Ours, after an attempt that failed part-way: apply it all again.
    Retry,
    /// Applied before: a duplicate.
    Done,
    /// Another request is applying it now.
    InProgress,
}

impl Store {
    fn batch_key(&self, source: &str, first_id: &str) -> String {
        let partition = self.keys.partition(source, first_id);
        self.keys.batch_seen(partition, source, first_id)
    }

    /// Claims the batch whose element 0 has `first_id` (see the module docs).
    pub async fn claim_batch(
        &self,
        source: &str,
        first_id: &str,
    ) -> Result<BatchClaim, StoreError> {
        let key = self.batch_key(source, first_id);
        let mut c = self.conn();
        let v: String = redis::Script::new(CLAIM)
            .key(&key)
            .arg(PENDING_TTL_MS)
            .invoke_async(&mut c)
            .await?;
        Ok(match v.as_str() {
            "new" => BatchClaim::New,
            "partial" => BatchClaim::Retry,
            "done" => BatchClaim::Done,
            _ => BatchClaim::InProgress,
        })
    }

    /// Whether a push of `delivery` was applied to `cohort` (its seen key).
    pub async fn delivery_seen(
        &self,
        source: &str,
        cohort: &str,
        delivery: &str,
    ) -> Result<bool, StoreError> {
        let k = &self.keys;
        let key = k.seen(k.partition(source, cohort), source, cohort, delivery);
        let mut c = self.conn();
        let n: i64 = redis::cmd("EXISTS").arg(&key).query_async(&mut c).await?;
        Ok(n > 0)
    }

    /// Ends a claim: `done` once every push of the batch is in Redis (later
    /// copies are duplicates), else "partial" (a retry applies it all).
    pub async fn finish_batch(
        &self,
        source: &str,
        first_id: &str,
        done: bool,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let key = self.batch_key(source, first_id);
        let mut c = self.conn();
        let () = redis::cmd("SET")
            .arg(&key)
            .arg(if done { "done" } else { "partial" })
            .arg("PX")
            .arg(ttl_ms.max(1))
            .query_async(&mut c)
            .await?;
        Ok(())
    }
}
