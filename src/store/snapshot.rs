//! Full snapshots: "this is the whole cohort" (Mixpanel `members`, a
//! Standard Webhooks body with `snapshot: true`).
//!
//! 1. Each page is applied like any push (its members are added at once) and,
//!    in the same script (`snapshot_page.lua` + `apply.lua`), its members are
//!    staged in a set per `(cohort, session)`, and the page is marked seen.
//!    Pages may come in any order; a repeated page changes nothing; staging
//!    expires `redis.snapshot_ttl_seconds` after the session's last activity,
//!    so an abandoned or restarted session costs nothing.
//! 2. The page that completes the session also records a **pending
//!    finalization** for the cohort, in that same script: from then on the
//!    removal is durable work, not a promise held in memory.
//! 3. The finalization walks the cohort's want hash with `HSCAN`, one short
//!    script per chunk (`snapshot_finalize.lua`), and turns every member that
//!    is desired in, in no page, and not newer than the session's first page into
//!    a normal desired-out change. Redis is never blocked for more than one
//!    chunk. The receiver that applied the last page drives it to the end;
//!    should the bridge die midway, any replica's flusher resumes the entry
//!    (see [`Store::pending_snapshots`]) from the cursor stored in it, once
//!    nobody has worked on it for a while (`flush::RESUME_ORPHANED_AFTER`).
//! 4. Sessions may overlap. A session that completes while another one of
//!    the cohort is being finalized waits in the cohort's queue
//!    ([`super::Keys::snapshot_queue`]) and is finalized right after it, by
//!    the same caller. Each finalization is "out at the session's start for
//!    every member in none of its pages", merged by last writer wins, so the
//!    result is the same for any order of completion. The newest completed
//!    session's start is the cohort's **snapshot floor**: a member the want
//!    hash does not hold that arrives not newer than the floor is stale
//!    (it was in none of that snapshot's pages).

use super::apply::cohort_links;
use super::reply::int;
use super::scripts;
use super::{ApplyOutcome, ApplyParams, Partition, Store, StoreError};
use crate::sources::Snapshot;
use futures_util::future::try_join_all;
use redis::ScriptInvocation;

/// Members examined per finalization chunk (`HSCAN COUNT`).
pub const CHUNK: usize = 500;

/// What driving one cohort's pending finalization did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Finalized {
    /// The finalization ended (or none was pending).
    pub finished: bool,
    /// The staging expired before the end: nothing more was removed.
    pub abandoned: bool,
    /// The desired-out changes this caller made: `accepted` is every member removed.
    pub outcome: ApplyOutcome,
}

impl Store {
    /// Appends `snapshot_page.lua`'s trailing KEYS and ARGV to an apply invocation.
    pub(super) fn stage_args(
        &self,
        inv: &mut ScriptInvocation<'_>,
        partition: Partition,
        source: &str,
        cohort: &str,
        snap: &Snapshot,
    ) {
        let k = &self.keys;
        inv.key(k.snapshot_members(partition, source, cohort, &snap.session))
            .key(k.snapshot_meta(partition, source, cohort, &snap.session))
            .key(k.snapshot_pending(partition))
            .key(k.snapshot_queue(partition, source, cohort))
            .arg(format!("{source}:{cohort}"))
            .arg(snap.page)
            .arg(snap.total_pages)
            .arg(snap.version.ms())
            .arg(self.snapshot_ttl_ms)
            .arg(&snap.session)
            .arg(if snap.armed_only { "1" } else { "0" });
    }

    /// Arms a cohort: its next full sync (the next session whose page 1
    /// arrives, see `Snapshot::armed_only`) replaces its membership.
    pub async fn arm_snapshot(
        &self,
        source: &str,
        cohort: &str,
        name: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let partition = self.keys.partition(source, cohort);
        let meta = self.keys.cohort_meta(partition, source, cohort);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&meta)
            .arg("snapshot_armed")
            .arg(now_ms)
            .ignore()
            .cmd("HDEL")
            .arg(&meta)
            .arg("snapshot_session")
            .ignore();
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            pipe.cmd("HSET").arg(&meta).arg("name").arg(n).ignore();
        }
        let () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// The session of the cohort's pending finalization, if any.
    async fn pending_session(
        &self,
        partition: Partition,
        source: &str,
        cohort: &str,
    ) -> Result<Option<String>, StoreError> {
        let entry: Option<String> = redis::cmd("HGET")
            .arg(self.keys.snapshot_pending(partition))
            .arg(format!("{source}:{cohort}"))
            .query_async(&mut self.conn())
            .await?;
        Ok(entry.and_then(|e| e.splitn(4, '|').nth(3).map(str::to_string)))
    }

    /// Works off the cohort's pending finalization, a chunk at a time, up to
    /// `max_chunks` chunks (`None`: to the end). With `orphaned_after` set,
    /// only an entry nobody has worked on for that long is taken over (a
    /// flusher resuming after a crash). Safe to run from several callers at
    /// once: each chunk continues from the cursor stored in Redis.
    pub async fn finalize_snapshot(
        &self,
        source: &str,
        destinations: &[String],
        cohort: &str,
        params: ApplyParams,
        max_chunks: Option<usize>,
        orphaned_after: Option<std::time::Duration>,
    ) -> Result<Finalized, StoreError> {
        let k = &self.keys;
        let partition = k.partition(source, cohort);
        let links = cohort_links(source, cohort, destinations);
        let mut done = Finalized::default();
        let mut chunks = 0;
        let Some(mut session) = self.pending_session(partition, source, cohort).await? else {
            done.finished = true;
            return Ok(done);
        };
        loop {
            if max_chunks.is_some_and(|m| chunks >= m) {
                return Ok(done);
            }
            // Only the first chunk checks that the entry is orphaned: later
            // ones find it freshly worked on by this very caller.
            let min_idle = match orphaned_after {
                Some(d) if chunks == 0 => d.as_millis() as u64,
                _ => 0,
            };
            chunks += 1;
            let mut inv = scripts::SNAPSHOT_FINALIZE.prepare_invoke();
            inv.key(k.snapshot_pending(partition))
                .key(k.want(partition, source, cohort))
                .key(k.snapshot_members(partition, source, cohort, &session))
                .key(k.snapshot_meta(partition, source, cohort, &session))
                .key(k.cohort_meta(partition, source, cohort))
                .key(k.due(partition))
                .key(k.snapshot_queue(partition, source, cohort));
            for l in &links {
                inv.key(k.dirty(partition, l));
            }
            inv.arg(format!("{source}:{cohort}"))
                .arg(&session)
                .arg(CHUNK)
                .arg(crate::clock::now_ms().max(params.now_ms))
                .arg(params.max_delay_ms)
                .arg(params.batch)
                .arg(self.snapshot_ttl_ms)
                .arg(min_idle)
                .arg(links.len());
            for d in destinations {
                inv.arg(d);
            }
            for l in &links {
                inv.arg(l.to_string());
            }
            let reply: Vec<redis::Value> = inv.invoke_async(&mut self.conn()).await?;
            let n: Vec<i64> = reply.iter().map(int).collect::<Result<_, _>>()?;
            let [status, removed, superseded, cancelled, unchanged] = n[..] else {
                return Err(StoreError::Reply(format!(
                    "snapshot_finalize returned {n:?}"
                )));
            };
            let o = &mut done.outcome;
            o.accepted += removed as u64;
            o.superseded += superseded as u64;
            o.cancelled += cancelled as u64;
            o.unchanged += unchanged as u64;
            match status {
                0 => {
                    done.finished = true;
                    return Ok(done);
                }
                1 => {}
                2 => match self.pending_session(partition, source, cohort).await? {
                    Some(s) => session = s,
                    None => {
                        done.finished = true;
                        return Ok(done);
                    }
                },
                3 => {
                    done.finished = true;
                    done.abandoned = true;
                    return Ok(done);
                }
                4 => return Ok(done),
                other => {
                    return Err(StoreError::Reply(format!(
                        "snapshot_finalize returned status {other}"
                    )))
                }
            }
        }
    }

    /// Whether every page of the session has arrived (staging meta `done`);
    /// `None` when the session is not staged (an unarmed Heap sync, or
    /// staging that expired).
    pub async fn snapshot_complete(
        &self,
        source: &str,
        cohort: &str,
        session: &str,
    ) -> Result<Option<bool>, StoreError> {
        let partition = self.keys.partition(source, cohort);
        let (exists, done): (bool, Option<String>) = redis::pipe()
            .cmd("EXISTS")
            .arg(self.keys.snapshot_meta(partition, source, cohort, session))
            .cmd("HGET")
            .arg(self.keys.snapshot_meta(partition, source, cohort, session))
            .arg("done")
            .query_async(&mut self.conn())
            .await?;
        Ok(exists.then_some(done.as_deref() == Some("1")))
    }

    /// Every `(source, cohort)` with a pending finalization in the partitions.
    pub async fn pending_snapshots(
        &self,
        partitions: &[Partition],
    ) -> Result<Vec<(String, String)>, StoreError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        // One command per partition (in a cluster they live on different nodes).
        let replies: Vec<Vec<String>> = try_join_all(partitions.iter().map(|&partition| {
            let mut c = self.conn();
            let cmd = redis::cmd("HKEYS")
                .arg(self.keys.snapshot_pending(partition))
                .clone();
            async move { cmd.query_async(&mut c).await }
        }))
        .await?;
        Ok(replies
            .into_iter()
            .flatten()
            .filter_map(|r| {
                r.split_once(':')
                    .map(|(s, c)| (s.to_string(), c.to_string()))
            })
            .collect())
    }
}
