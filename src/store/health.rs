//! Whether the store can take writes: readiness (`PING`, cluster state,
//! scripts loaded) and Redis's memory policy, which must not evict the
//! bridge's keys (an evicted want hash or dirty set loses accepted changes).

use super::connection::Connection;
use super::{scripts, Store, StoreError};

/// Whether a `maxmemory-policy` may evict keys.
pub fn evicts(policy: &str) -> bool {
    policy.starts_with("allkeys-") || policy.starts_with("volatile-")
}

impl Store {
    /// `PING` (in a cluster: every primary reachable and reporting
    /// `cluster_state:ok`) and `SCRIPT LOAD` of every script (in a cluster the
    /// client sends it to every node): what readiness needs.
    pub async fn ready(&self) -> Result<(), StoreError> {
        let mut c = self.conn();
        if c.is_cluster() {
            cluster_ready(&mut c).await?;
        } else {
            let _: String = redis::cmd("PING").query_async(&mut c).await?;
        }
        for s in scripts::all() {
            s.prepare_invoke().load_async(&mut c).await?;
        }
        Ok(())
    }

    /// One `PING`: whether Redis answers (the health gauge's check; cheaper
    /// than [`Store::ready`], which loads every script).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Redis's `maxmemory-policy`. In a cluster every primary is asked; the
    /// first evicting policy found (see [`evicts`]) is returned with the node
    /// that has it.
    pub async fn eviction_policy(&self) -> Result<String, StoreError> {
        let mut c = self.conn();
        let cmd = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .clone();
        let cluster = c.is_cluster();
        let mut first = None;
        for (node, reply) in c.each_primary(cmd).await? {
            let v: Vec<String> =
                redis::from_redis_value(reply?).map_err(redis::RedisError::from)?;
            let policy = v.get(1).cloned().unwrap_or_default();
            if cluster && evicts(&policy) {
                return Ok(format!("{policy} (on cluster node {node})"));
            }
            first.get_or_insert(policy);
        }
        Ok(first.unwrap_or_default())
    }
}

/// A cluster is ready when every primary of the slot map answers and
/// reports `cluster_state:ok` (with the default
/// `cluster-require-full-coverage`, a cluster missing a node refuses every
/// write). The error names each node that is not.
async fn cluster_ready(c: &mut Connection) -> Result<(), StoreError> {
    let info = redis::cmd("CLUSTER").arg("INFO").clone();
    let mut bad = Vec::new();
    for (node, reply) in c.each_primary(info).await? {
        let text = reply
            .and_then(|v| redis::from_redis_value::<String>(v).map_err(redis::RedisError::from));
        match text {
            Ok(text) => {
                let state = text
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("cluster_state:"))
                    .unwrap_or("unknown");
                if state != "ok" {
                    bad.push(format!("{node} reports cluster_state:{state}"));
                }
            }
            Err(e) => bad.push(format!("{node} unreachable: {e}")),
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Cluster(bad.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::evicts;

    #[test]
    fn only_evicting_policies_evict() {
        for p in [
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "volatile-lru",
            "volatile-ttl",
        ] {
            assert!(evicts(p), "{p}");
        }
        for p in ["noeviction", ""] {
            assert!(!evicts(p), "{p}");
        }
    }
}
