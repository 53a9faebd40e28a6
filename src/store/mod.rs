//! Redis, the system of record: the only module that talks to it.
//!
//! Each operation that must be atomic is one Lua script over keys of one hash
//! slot (see [`keys`]); every other call is a plain command. A Redis error is a
//! [`StoreError`], which the HTTP layer answers with 503 and `Retry-After`.
//!
//! ## Last writer wins, and the tie rule
//! Each member's desired state is decided by its change with the highest
//! version. **When versions are equal, "out" wins**: a removal beats an
//! addition of the same version, whatever order they arrive in (two changes
//! of one direction and version are the same change). Every script applies
//! this one rule (`loses_to` in `member.lua`):
//! - `apply.lua`: an "in" whose version equals a stored "out" is stale; an
//!   "out" of equal version replaces a stored "in".
//! - `snapshot_finalize.lua`: a full snapshot is "out at its start version
//!   for every member in none of its pages", so a member desired in at
//!   exactly that version and in no page is removed; the snapshot floor
//!   (see [`snapshot`]) makes a later, not newer "in" of a member the store
//!   does not hold stale.
//! - `resync.lua` and a segment re-created after a 404 compare no versions:
//!   they re-send every member's desired state as the rule decided it.
//!
//! The result is a function of the set of changes, not of their arrival order.

mod batches;
mod connection;
pub mod keys;
mod member;
mod operator;
mod replicas;
mod scripts;
pub mod snapshot;

pub use batches::BatchClaim;
pub use keys::{Keys, LinkId};
pub use member::MemberValue;
pub use operator::{DeadLetter, LinkStatus};

use crate::config::RedisConfig;
use crate::sources::Push;
use connection::Connection;
use futures_util::future::try_join_all;
use redis::Value;
use std::collections::HashMap;

/// Redis could not be reached or answered an error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis unavailable: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from a script: {0}")]
    Reply(String),
    /// Redis Cluster answers, but not well enough to take writes.
    #[error("cluster not ready: {0}")]
    Cluster(String),
}

/// What one push did, change by change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplyOutcome {
    /// The delivery id was seen before: nothing was applied this time.
    pub duplicate: bool,
    /// Changes newer than what was stored (each later written, superseded or cancelled).
    pub accepted: u64,
    /// Changes older than what was stored: no effect.
    pub stale: u64,
    /// Accepted changes that LaunchDarkly already reflects: nothing to write.
    pub unchanged: u64,
    /// Earlier pending changes that these replaced before they were written.
    pub superseded: u64,
    /// Accepted changes that undid a pending change (a flip back): nothing to write.
    pub cancelled: u64,
    /// A link became due at once (a full batch waits): wake the flusher.
    /// Otherwise its next poll (`flush.poll_interval_ms`) finds the work.
    #[serde(skip)]
    pub due_now: bool,
}

/// Per-push settings the apply script needs.
#[derive(Debug, Clone, Copy)]
pub struct ApplyParams {
    pub now_ms: i64,
    pub dedupe_ttl_ms: u64,
    pub max_delay_ms: u64,
    pub batch: usize,
}

/// Members handed to one request: (key, desired).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "claimed members stay unknown until acknowledged"]
pub enum Claim {
    LeaseLost,
    Empty,
    Members(Vec<(String, bool)>),
}

/// Result of an acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    LeaseLost,
    Done { written: u64, still_dirty: u64 },
}

/// The Redis-backed store. Cheap to clone (one multiplexed connection, to a
/// single Redis or to every node of a Redis Cluster).
#[derive(Clone)]
pub struct Store {
    conn: Connection,
    keys: Keys,
    /// `redis.snapshot_ttl_seconds` in ms: how long snapshot staging waits.
    snapshot_ttl_ms: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("cluster", &self.conn.is_cluster())
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

fn int(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StoreError::Reply(format!("{v:?}"))),
        other => Err(StoreError::Reply(format!("{other:?}"))),
    }
}

fn text(v: &Value) -> Result<String, StoreError> {
    match v {
        Value::BulkString(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Ok(s.clone()),
        other => Err(StoreError::Reply(format!("{other:?}"))),
    }
}

impl Store {
    /// Connects lazily: the bridge starts (and reports not-ready) while Redis is down.
    /// With `redis.cluster`, `redis.url` and `redis.cluster_urls` are seeds
    /// of a Redis Cluster.
    pub fn connect(cfg: &RedisConfig) -> Result<Store, StoreError> {
        Ok(Store {
            conn: Connection::open(cfg)?,
            keys: Keys::new(&cfg.key_prefix, cfg.partitions),
            snapshot_ttl_ms: cfg.snapshot_ttl_seconds.saturating_mul(1000).max(1),
        })
    }

    fn conn(&self) -> Connection {
        self.conn.clone()
    }

    /// Whether the store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

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

    /// Redis's `maxmemory-policy`. In a cluster every primary is asked; the
    /// first evicting policy found is returned with the node that has it.
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
            if cluster && crate::http::ops::evicts(&policy) {
                return Ok(format!("{policy} (on cluster node {node})"));
            }
            first.get_or_insert(policy);
        }
        Ok(first.unwrap_or_default())
    }

    /// Applies one push (one cohort) to every link of the source, atomically.
    pub async fn apply(
        &self,
        source: &str,
        destinations: &[String],
        push: &Push,
        params: ApplyParams,
    ) -> Result<ApplyOutcome, StoreError> {
        let k = &self.keys;
        let p = k.partition(source, &push.cohort_id);
        let cohort = push.cohort_id.as_str();
        let links: Vec<LinkId> = destinations
            .iter()
            .map(|d| LinkId {
                destination: d.clone(),
                source: source.into(),
                cohort: cohort.into(),
            })
            .collect();
        let seen_ttl = if push.delivery_id.is_some() {
            params.dedupe_ttl_ms
        } else {
            0
        };
        // A snapshot page runs snapshot_page.lua first, in the same script.
        let mut inv = match push.snapshot {
            Some(_) => scripts::APPLY_SNAPSHOT.prepare_invoke(),
            None => scripts::APPLY.prepare_invoke(),
        };
        inv.key(k.want(p, source, cohort))
            .key(k.cohort_meta(p, source, cohort))
            .key(k.due(p))
            .key(k.cohorts(p))
            .key(k.seen(
                p,
                source,
                cohort,
                push.delivery_id.as_deref().unwrap_or("-"),
            ));
        for l in &links {
            inv.key(k.dirty(p, l));
        }
        inv.arg(params.now_ms)
            .arg(seen_ttl)
            .arg(params.max_delay_ms)
            .arg(params.batch)
            .arg(push.cohort_name.as_deref().unwrap_or(""))
            .arg(format!("{source}:{cohort}"))
            .arg(links.len());
        for d in destinations {
            inv.arg(d);
        }
        for l in &links {
            inv.arg(l.to_string());
        }
        // Runs of changes sharing a version and a direction (see apply.lua):
        // a push's changes usually form one or two runs, so each member costs
        // one argument instead of three.
        for run in push
            .changes
            .chunk_by(|a, b| a.version == b.version && a.include == b.include)
        {
            inv.arg(run[0].version.ms())
                .arg(if run[0].include { "1" } else { "0" })
                .arg(run.len());
            for c in run {
                inv.arg(&c.key);
            }
        }
        if let Some(snap) = &push.snapshot {
            self.stage_args(&mut inv, p, source, cohort, snap);
        }
        let reply: Vec<Value> = inv.invoke_async(&mut self.conn()).await?;
        let first = reply.first().map(int).transpose()?.unwrap_or(-1);
        if first == 1 {
            let prior = reply.get(1).map(text).transpose()?.unwrap_or_default();
            let n: Vec<u64> = prior.split(',').filter_map(|x| x.parse().ok()).collect();
            let get = |i: usize| n.get(i).copied().unwrap_or(0);
            return Ok(ApplyOutcome {
                duplicate: true,
                accepted: get(0),
                stale: get(1),
                unchanged: get(2),
                superseded: get(3),
                cancelled: get(4),
                due_now: false,
            });
        }
        let n: Vec<i64> = reply.iter().map(int).collect::<Result<_, _>>()?;
        if n.len() != 7 {
            return Err(StoreError::Reply(format!("apply returned {n:?}")));
        }
        Ok(ApplyOutcome {
            duplicate: false,
            accepted: n[1] as u64,
            stale: n[2] as u64,
            unchanged: n[3] as u64,
            superseded: n[4] as u64,
            cancelled: n[5] as u64,
            due_now: n[6] == 1,
        })
    }

    /// Links due by `now_ms` in the given partitions, oldest first, with their due time.
    pub async fn due_links(
        &self,
        partitions: &[u16],
        now_ms: i64,
        per_partition: usize,
    ) -> Result<Vec<(u16, LinkId, i64)>, StoreError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        // One command per partition, concurrently on the multiplexed
        // connection: in a cluster the partitions live on different nodes.
        let replies: Vec<Vec<(String, f64)>> = try_join_all(partitions.iter().map(|&p| {
            let mut c = self.conn();
            let cmd = redis::cmd("ZRANGE")
                .arg(self.keys.due(p))
                .arg("-inf")
                .arg(now_ms)
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(0)
                .arg(per_partition)
                .arg("WITHSCORES")
                .clone();
            async move { cmd.query_async(&mut c).await }
        }))
        .await?;
        let mut out = Vec::new();
        for (&p, links) in partitions.iter().zip(replies) {
            for (id, score) in links {
                if let Some(l) = LinkId::parse(&id) {
                    out.push((p, l, score as i64));
                }
            }
        }
        out.sort_by_key(|(_, _, at)| *at);
        Ok(out)
    }

    /// The earliest due time across the partitions, if any link is waiting.
    pub async fn next_due(&self, partitions: &[u16]) -> Result<Option<i64>, StoreError> {
        if partitions.is_empty() {
            return Ok(None);
        }
        let replies: Vec<Vec<(String, f64)>> = try_join_all(partitions.iter().map(|&p| {
            let mut c = self.conn();
            let cmd = redis::cmd("ZRANGE")
                .arg(self.keys.due(p))
                .arg(0)
                .arg(0)
                .arg("WITHSCORES")
                .clone();
            async move { cmd.query_async(&mut c).await }
        }))
        .await?;
        Ok(replies.into_iter().flatten().map(|(_, s)| s as i64).min())
    }

    /// Marks up to `max` dirty members unknown and returns them with their desired state.
    pub async fn claim(
        &self,
        p: u16,
        token: &str,
        link: &LinkId,
        max: usize,
        hold_until_ms: i64,
    ) -> Result<Claim, StoreError> {
        let k = &self.keys;
        let reply: Vec<Value> = scripts::CLAIM
            .key(k.lease(p))
            .key(k.dirty(p, link))
            .key(k.want(p, &link.source, &link.cohort))
            .key(k.cohort_meta(p, &link.source, &link.cohort))
            .key(k.due(p))
            .arg(token)
            .arg(max)
            .arg(&link.destination)
            .arg(link.to_string())
            .arg(hold_until_ms)
            .invoke_async(&mut self.conn())
            .await?;
        match reply.first().map(int).transpose()? {
            Some(-1) => Ok(Claim::LeaseLost),
            Some(0) => Ok(Claim::Empty),
            Some(1) => {
                let mut members = Vec::with_capacity(reply.len() / 2);
                for pair in reply[1..].chunks(2) {
                    if let [m, d] = pair {
                        members.push((text(m)?, text(d)? == "1"));
                    }
                }
                Ok(Claim::Members(members))
            }
            other => Err(StoreError::Reply(format!("claim returned {other:?}"))),
        }
    }

    /// Records an acknowledged write of `sent` to the link.
    #[allow(clippy::too_many_arguments)]
    pub async fn ack(
        &self,
        p: u16,
        token: &str,
        link: &LinkId,
        sent: &[(String, bool)],
        active_destinations: &[String],
        now_ms: i64,
        max_delay_ms: u64,
        batch: usize,
        claim_was_full: bool,
    ) -> Result<Ack, StoreError> {
        let k = &self.keys;
        let mut inv = scripts::ACK.prepare_invoke();
        inv.key(k.lease(p))
            .key(k.want(p, &link.source, &link.cohort))
            .key(k.dirty(p, link))
            .key(k.cohort_meta(p, &link.source, &link.cohort))
            .key(k.due(p))
            .key(k.link_meta(p, link))
            .arg(token)
            .arg(now_ms)
            .arg(&link.destination)
            .arg(link.to_string())
            .arg(max_delay_ms)
            .arg(batch)
            .arg(if claim_was_full { "1" } else { "0" })
            .arg(active_destinations.len());
        for d in active_destinations {
            inv.arg(d);
        }
        for (m, include) in sent {
            inv.arg(m).arg(if *include { "1" } else { "0" });
        }
        let reply: Vec<i64> = inv.invoke_async(&mut self.conn()).await?;
        match reply.as_slice() {
            [-1] => Ok(Ack::LeaseLost),
            [w, r] => Ok(Ack::Done {
                written: *w as u64,
                still_dirty: *r as u64,
            }),
            other => Err(StoreError::Reply(format!("ack returned {other:?}"))),
        }
    }

    /// Moves members LaunchDarkly rejected to the link's dead letters.
    /// Returns how many pending changes ended there, or `None` if the lease was lost.
    pub async fn dead_letter(
        &self,
        p: u16,
        token: &str,
        link: &LinkId,
        members: &[String],
        reason: &str,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        let k = &self.keys;
        let mut inv = scripts::DEAD_LETTER.prepare_invoke();
        inv.key(k.lease(p))
            .key(k.want(p, &link.source, &link.cohort))
            .key(k.dirty(p, link))
            .key(k.cohort_meta(p, &link.source, &link.cohort))
            .key(k.dead(p, link))
            .key(k.link_meta(p, link))
            .arg(token)
            .arg(&link.destination)
            .arg(now_ms)
            .arg(reason);
        for m in members {
            inv.arg(m);
        }
        let r: i64 = inv.invoke_async(&mut self.conn()).await?;
        Ok((r >= 0).then_some(r as u64))
    }

    /// Records a failed attempt and when to try the link again. New pushes
    /// make a link due sooner, so the flusher also honours `retry_at_ms`.
    pub async fn record_failure(
        &self,
        p: u16,
        link: &LinkId,
        error: &str,
        blocked: Option<&str>,
        retry_at_ms: i64,
    ) -> Result<(), StoreError> {
        let k = &self.keys;
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(k.link_meta(p, link))
            .arg("last_error")
            .arg(error)
            .arg("blocked")
            .arg(blocked.unwrap_or(""))
            .arg("retry_at_ms")
            .arg(retry_at_ms)
            .ignore()
            .cmd("HINCRBY")
            .arg(k.link_meta(p, link))
            .arg("failures")
            .arg(1)
            .ignore()
            .cmd("ZADD")
            .arg(k.due(p))
            .arg(retry_at_ms)
            .arg(link.to_string())
            .ignore();
        let () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// The link's meta hash (segment created, key, counters, errors).
    pub async fn link_meta(
        &self,
        p: u16,
        link: &LinkId,
    ) -> Result<HashMap<String, String>, StoreError> {
        Ok(redis::cmd("HGETALL")
            .arg(self.keys.link_meta(p, link))
            .query_async(&mut self.conn())
            .await?)
    }

    /// Makes the link due at `at_ms` (e.g. not before its recorded retry time).
    pub async fn reschedule(&self, p: u16, link: &LinkId, at_ms: i64) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("ZADD")
            .arg(self.keys.due(p))
            .arg(at_ms)
            .arg(link.to_string())
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Sets fields of the link's meta hash.
    pub async fn set_link_meta(
        &self,
        p: u16,
        link: &LinkId,
        fields: &[(&str, &str)],
    ) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.keys.link_meta(p, link));
        for (f, v) in fields {
            cmd.arg(*f).arg(*v);
        }
        let _: i64 = cmd.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// The cohort's name as last pushed.
    pub async fn cohort_name(
        &self,
        p: u16,
        source: &str,
        cohort: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(redis::cmd("HGET")
            .arg(self.keys.cohort_meta(p, source, cohort))
            .arg("name")
            .query_async(&mut self.conn())
            .await?)
    }

    /// Members of one link waiting for LaunchDarkly (its dirty set's size).
    pub async fn dirty_len(&self, p: u16, link: &LinkId) -> Result<u64, StoreError> {
        Ok(redis::cmd("SCARD")
            .arg(self.keys.dirty(p, link))
            .query_async(&mut self.conn())
            .await?)
    }

    /// Members of the link still waiting for LaunchDarkly, summed over due links.
    pub async fn backlog(&self, partitions: &[u16]) -> Result<u64, StoreError> {
        let mut total = 0;
        for &p in partitions {
            let links: Vec<String> = redis::cmd("ZRANGE")
                .arg(self.keys.due(p))
                .arg(0)
                .arg(-1)
                .query_async(&mut self.conn())
                .await?;
            if links.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for l in links.iter().filter_map(|l| LinkId::parse(l)) {
                pipe.cmd("SCARD").arg(self.keys.dirty(p, &l));
            }
            let counts: Vec<u64> = pipe.query_async(&mut self.conn()).await?;
            total += counts.iter().sum::<u64>();
        }
        Ok(total)
    }

    /// Sweeps one chunk of a cohort's tombstones (see `sweep.lua`).
    pub async fn sweep_chunk(
        &self,
        p: u16,
        token: &str,
        source_cohort: &str,
        cursor: &str,
        cutoff_ms: i64,
    ) -> Result<Option<(String, u64)>, StoreError> {
        let (source, cohort) = source_cohort.split_once(':').unwrap_or((source_cohort, ""));
        let (next, removed): (String, u64) = scripts::SWEEP
            .key(self.keys.want(p, source, cohort))
            .key(self.keys.lease(p))
            .arg(cursor)
            .arg(500)
            .arg(cutoff_ms)
            .arg(token)
            .invoke_async(&mut self.conn())
            .await?;
        Ok((next != "-1").then_some((next, removed)))
    }

    /// Every `<source>:<cohort>` of a partition.
    pub async fn cohorts(&self, p: u16) -> Result<Vec<String>, StoreError> {
        Ok(redis::cmd("SMEMBERS")
            .arg(self.keys.cohorts(p))
            .query_async(&mut self.conn())
            .await?)
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
