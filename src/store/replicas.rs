//! What replicas share: partition leases, the heartbeat registry (the rate
//! is split over live replicas), and a 429 pause every writer honours.

use super::{scripts, Partition, Store, StoreError};
use std::time::Duration;

impl Store {
    /// `SET lease token NX PX ttl`; a lease that already holds the caller's
    /// token is the caller's (renewed). That happens when the reply to an
    /// earlier acquisition was lost (a Redis restart, a timeout): without this
    /// the partition stayed unflushed until the lease expired.
    pub async fn try_acquire_lease(
        &self,
        partition: Partition,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let r: Option<String> = redis::cmd("SET")
            .arg(self.keys.lease(partition))
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut self.conn())
            .await?;
        if r.is_some() {
            return Ok(true);
        }
        self.renew_lease(partition, token, ttl).await
    }

    /// Renews (ttl > 0) or releases (ttl = 0) a lease the caller holds.
    pub async fn renew_lease(
        &self,
        partition: Partition,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let r: i64 = scripts::LEASE
            .key(self.keys.lease(partition))
            .arg(token)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(r == 1)
    }

    /// Registers this replica's heartbeat; returns how many replicas are alive.
    pub async fn heartbeat(
        &self,
        replica: &str,
        now_ms: i64,
        ttl: Duration,
    ) -> Result<u64, StoreError> {
        let key = self.keys.replicas();
        let (live,): (u64,) = redis::pipe()
            .cmd("ZADD")
            .arg(&key)
            .arg(now_ms)
            .arg(replica)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now_ms - ttl.as_millis() as i64)
            .ignore()
            .cmd("ZCARD")
            .arg(&key)
            .query_async(&mut self.conn())
            .await?;
        Ok(live.max(1))
    }

    /// The replicas that heartbeat within `ttl` of `now_ms`, with their last
    /// heartbeat (ms), newest first.
    pub async fn live_replicas(
        &self,
        now_ms: i64,
        ttl: Duration,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let live: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.keys.replicas())
            .arg("+inf")
            .arg(now_ms - ttl.as_millis() as i64)
            .arg("BYSCORE")
            .arg("REV")
            .arg("WITHSCORES")
            .query_async(&mut self.conn())
            .await?;
        Ok(live.into_iter().map(|(r, at)| (r, at as i64)).collect())
    }

    /// Who holds each partition's lease (a replica's token), partition by
    /// partition; `None` for a partition no replica holds.
    pub async fn lease_holders(&self) -> Result<Vec<Option<String>>, StoreError> {
        // One GET per partition: in a cluster the leases live on different nodes.
        let holders = futures_util::future::try_join_all((0..self.keys.partitions()).map(|p| {
            let mut c = self.conn();
            let cmd = redis::cmd("GET").arg(self.keys.lease(p)).clone();
            async move { cmd.query_async::<Option<String>>(&mut c).await }
        }))
        .await?;
        Ok(holders)
    }

    /// Removes this replica from the registry (graceful shutdown).
    pub async fn leave(&self, replica: &str) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("ZREM")
            .arg(self.keys.replicas())
            .arg(replica)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Shares a 429 pause with every replica (expires a minute after it
    /// ends). Only ever extends: a shorter pause than the one stored changes
    /// nothing (`rate_pause.lua`). Returns the pause now in force.
    pub async fn share_rate_pause(&self, until_ms: i64) -> Result<i64, StoreError> {
        let until = until_ms.max(0);
        let kept: String = scripts::RATE_PAUSE
            .key(self.keys.rate_pause())
            .arg(until)
            .arg(until.saturating_add(60_000))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(kept.parse().unwrap_or(until))
    }

    /// Claims a LaunchDarkly segment key (in one project and environment)
    /// for `link`: `None` if the link holds it now (newly or already),
    /// `Some(owner)` if another link does.
    pub async fn claim_segment_key(
        &self,
        project: &str,
        environment: &str,
        key: &str,
        link: &str,
    ) -> Result<Option<String>, StoreError> {
        let owner_key = self.keys.segment_owner(project, environment, key);
        let set: Option<String> = redis::cmd("SET")
            .arg(&owner_key)
            .arg(link)
            .arg("NX")
            .query_async(&mut self.conn())
            .await?;
        if set.is_some() {
            return Ok(None);
        }
        let owner: Option<String> = redis::cmd("GET")
            .arg(&owner_key)
            .query_async(&mut self.conn())
            .await?;
        Ok(owner.filter(|o| o != link))
    }

    /// The pause another replica announced, if any.
    pub async fn rate_pause(&self) -> Result<Option<i64>, StoreError> {
        let v: Option<i64> = redis::cmd("GET")
            .arg(self.keys.rate_pause())
            .query_async(&mut self.conn())
            .await?;
        Ok(v)
    }
}
