//! What the flusher asks of the store: due links, claims, acknowledgements,
//! dead letters, failures and the link's meta hash.

use super::reply::{int, text};
use super::{scripts, LinkId, Partition, Store, StoreError};
use futures_util::future::try_join_all;
use redis::{ScriptInvocation, Value};
use std::collections::HashMap;

/// Members handed to one request: (key, desired).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "claimed members stay unknown until acknowledged"]
pub enum Claim {
    /// The caller's lease is gone: nothing was claimed.
    LeaseLost,
    /// Nothing of the link is dirty (it left the due set).
    Empty,
    /// The claimed members, now unknown for the link, with their desired state.
    Members(Vec<(String, bool)>),
}

/// What one acknowledgement records ([`Store::ack`]): a batch LaunchDarkly
/// answered 2xx for, sent under the lease `token`.
#[derive(Debug, Clone, Copy)]
pub struct AckedBatch<'a> {
    /// The flusher's lease token (the ack is refused if the lease is lost).
    pub token: &'a str,
    /// The link written.
    pub link: &'a LinkId,
    /// The members sent, with the desired state each was sent as.
    pub sent: &'a [(String, bool)],
    /// The source's configured destinations (for "written" accounting).
    pub active_destinations: &'a [String],
    /// When the answer came.
    pub now_ms: i64,
    /// `flush.max_delay_ms`: when members still dirty make the link due again.
    pub max_delay_ms: u64,
    /// `launchdarkly.max_keys_per_request`: a full batch makes the link due now.
    pub batch_size: usize,
    /// The claim filled a whole batch: more members are probably waiting.
    pub claim_was_full: bool,
    /// When the claim was drawn, if it took every member dirty then (it was
    /// not full) and this is its whole batch (not a part of a split): any
    /// member still dirty after the ack changed after that time.
    pub claimed_all_at_ms: Option<i64>,
}

/// Result of an acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// The caller's lease is gone: nothing was recorded, the batch stays unknown.
    LeaseLost,
    /// Recorded.
    Done {
        /// Pending changes that every active destination now has.
        written: u64,
        /// Members of the link still dirty (sent, then changed again).
        still_dirty: u64,
        /// When the link's oldest change not acknowledged before this write
        /// was accepted (the link's dirty-since entry), if known: the start
        /// of the batch's propagation, at most as late as its oldest change.
        accepted_since_ms: Option<i64>,
    },
}

/// What one look at the due sets found ([`Store::due_work`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DueWork {
    /// Links due by the horizon and not busy, oldest first, with their due
    /// time (which may still be ahead: see [`Store::due_work`]).
    pub due: Vec<(Partition, LinkId, i64)>,
    /// The earliest due time still ahead among links not busy, if the look
    /// saw one (it does whenever fewer than `want` links are due).
    pub next_ms: Option<i64>,
}

impl Store {
    /// One look at the partitions' due sets for the flusher's loop: the
    /// links due by `horizon_ms` (up to `want` per partition) that are not in
    /// `busy` (the flushes in flight), and the next due time after them.
    /// The horizon is now, or a little ahead when the links due soon are
    /// more than the rate can serve by their due times (the flusher's lead).
    ///
    /// One command per partition, by rank: the first `busy.len() + want`
    /// entries hold at least `want` links not busy, if the partition has that
    /// many, so either `want` of them are due or the first one not due is in
    /// the window, and with it the partition's next due time. (A busy link's
    /// due time may be past while it waits for a token; it is skipped, so the
    /// loop sleeps until the next link it can start instead of spinning.)
    pub async fn due_work(
        &self,
        partitions: &[Partition],
        horizon_ms: i64,
        busy: &[LinkId],
        want: usize,
    ) -> Result<DueWork, StoreError> {
        if partitions.is_empty() || want == 0 {
            return Ok(DueWork::default());
        }
        let last = busy.len() + want - 1;
        // Concurrently on the multiplexed connection: in a cluster the
        // partitions live on different nodes.
        let replies: Vec<Vec<(String, f64)>> = try_join_all(partitions.iter().map(|&partition| {
            let mut c = self.conn();
            let cmd = redis::cmd("ZRANGE")
                .arg(self.keys.due(partition))
                .arg(0)
                .arg(last)
                .arg("WITHSCORES")
                .clone();
            async move { cmd.query_async(&mut c).await }
        }))
        .await?;
        let mut work = DueWork::default();
        for (&partition, links) in partitions.iter().zip(replies) {
            let mut taken = 0;
            for (id, score) in links {
                let Some(l) = LinkId::parse(&id) else {
                    continue;
                };
                if busy.contains(&l) {
                    continue;
                }
                let at = score as i64;
                if at > horizon_ms {
                    work.next_ms = Some(work.next_ms.map_or(at, |n| n.min(at)));
                    break;
                }
                if taken < want {
                    work.due.push((partition, l, at));
                    taken += 1;
                }
            }
        }
        work.due.sort_by_key(|(_, _, at)| *at);
        Ok(work)
    }

    /// Marks up to `max` dirty members unknown and returns them with their desired state.
    pub async fn claim(
        &self,
        partition: Partition,
        token: &str,
        link: &LinkId,
        max: usize,
        hold_until_ms: i64,
    ) -> Result<Claim, StoreError> {
        self.claim_as(partition, token, link, max, hold_until_ms, ClaimKind::Send)
            .await
            .map(|c| c.unwrap_or(Claim::Empty))
    }

    /// [`Store::claim`] of a full batch only: `None` when fewer than `max`
    /// members are dirty, and then nothing is done (the link keeps its due
    /// time). A draining link sends it with the last batch's ack, one round
    /// trip for both.
    pub async fn claim_full(
        &self,
        partition: Partition,
        token: &str,
        link: &LinkId,
        max: usize,
        hold_until_ms: i64,
    ) -> Result<Option<Claim>, StoreError> {
        self.claim_as(
            partition,
            token,
            link,
            max,
            hold_until_ms,
            ClaimKind::FullOnly,
        )
        .await
    }

    /// Shadow mode's claim: the same selection under the same lease check
    /// (and the same cleanup of vanished members), but nothing is marked
    /// unknown, since nothing will be sent; the link is made due again at
    /// `next_pass_ms`. Every member stays dirty.
    pub async fn shadow_claim(
        &self,
        partition: Partition,
        token: &str,
        link: &LinkId,
        max: usize,
        next_pass_ms: i64,
    ) -> Result<Claim, StoreError> {
        self.claim_as(partition, token, link, max, next_pass_ms, ClaimKind::Shadow)
            .await
            .map(|c| c.unwrap_or(Claim::Empty))
    }

    async fn claim_as(
        &self,
        partition: Partition,
        token: &str,
        link: &LinkId,
        max: usize,
        hold_until_ms: i64,
        kind: ClaimKind,
    ) -> Result<Option<Claim>, StoreError> {
        let k = &self.keys;
        let reply: Vec<Value> = scripts::CLAIM
            .key(k.lease(partition))
            .key(k.dirty(partition, link))
            .key(k.want(partition, &link.source, &link.cohort))
            .key(k.cohort_meta(partition, &link.source, &link.cohort))
            .key(k.due(partition))
            .key(k.link_meta(partition, link))
            .key(k.fresh(partition, link))
            .arg(token)
            .arg(max)
            .arg(&link.destination)
            .arg(link.to_string())
            .arg(hold_until_ms)
            .arg(if kind == ClaimKind::Shadow { "1" } else { "0" })
            .arg(if kind == ClaimKind::FullOnly { max } else { 0 })
            .invoke_async(&mut self.conn())
            .await?;
        claim_reply(&reply)
    }

    /// Records an acknowledged write of a batch to the link (`ack.lua`).
    pub async fn ack(
        &self,
        partition: Partition,
        batch: &AckedBatch<'_>,
    ) -> Result<Ack, StoreError> {
        let inv = self.ack_invocation(&scripts::ACK, partition, batch);
        let reply: Vec<i64> = inv.invoke_async(&mut self.conn()).await?;
        ack_reply(&reply)
    }

    /// [`Store::ack`], then in the same script call [`Store::claim_full`] of
    /// the link's next batch (`batch.batch_size` members, held until
    /// `hold_until_ms`): a draining link's one round trip between two
    /// batches. The claim is `LeaseLost` when the ack was.
    pub async fn ack_then_claim(
        &self,
        partition: Partition,
        batch: &AckedBatch<'_>,
        hold_until_ms: i64,
    ) -> Result<(Ack, Option<Claim>), StoreError> {
        let mut inv = self.ack_invocation(&scripts::ACK_CLAIM, partition, batch);
        inv.arg(hold_until_ms).arg(batch.batch_size);
        let reply: Vec<Value> = inv.invoke_async(&mut self.conn()).await?;
        let [Value::Array(acked), Value::Array(claimed)] = reply.as_slice() else {
            return Err(StoreError::Reply(format!(
                "ack and claim returned {reply:?}"
            )));
        };
        let acked: Vec<i64> = acked.iter().map(int).collect::<Result<_, _>>()?;
        Ok((ack_reply(&acked)?, claim_reply(claimed)?))
    }

    /// `ack.lua`'s keys and arguments, on `script` (it or `ACK_CLAIM`).
    fn ack_invocation<'s>(
        &self,
        script: &'s redis::Script,
        partition: Partition,
        batch: &AckedBatch<'_>,
    ) -> ScriptInvocation<'s> {
        let link = batch.link;
        let mut inv = script.prepare_invoke();
        self.claimed_link_keys(&mut inv, partition, link);
        let k = &self.keys;
        inv.key(k.due(partition))
            .key(k.link_meta(partition, link))
            .key(k.dirty_since(partition))
            .key(k.fresh(partition, link))
            .arg(batch.token)
            .arg(batch.now_ms)
            .arg(&link.destination)
            .arg(link.to_string())
            .arg(batch.max_delay_ms)
            .arg(batch.batch_size)
            .arg(if batch.claim_was_full { "1" } else { "0" })
            .arg(batch.claimed_all_at_ms.unwrap_or(-1))
            .arg(batch.active_destinations.len());
        for d in batch.active_destinations {
            inv.arg(d);
        }
        for (m, include) in batch.sent {
            inv.arg(m).arg(if *include { "1" } else { "0" });
        }
        inv
    }

    /// KEYS[1..4] of the scripts that settle claimed members (`ack.lua`,
    /// `dead_letter.lua`): the partition lease, the cohort's want hash, the
    /// link's dirty set and the cohort meta hash.
    fn claimed_link_keys(
        &self,
        inv: &mut ScriptInvocation<'_>,
        partition: Partition,
        link: &LinkId,
    ) {
        let k = &self.keys;
        inv.key(k.lease(partition))
            .key(k.want(partition, &link.source, &link.cohort))
            .key(k.dirty(partition, link))
            .key(k.cohort_meta(partition, &link.source, &link.cohort));
    }

    /// Moves members LaunchDarkly rejected to the link's dead letters.
    /// Returns how many pending changes ended there, or `None` if the lease was lost.
    pub async fn dead_letter(
        &self,
        partition: Partition,
        token: &str,
        link: &LinkId,
        members: &[String],
        reason: &str,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        let mut inv = scripts::DEAD_LETTER.prepare_invoke();
        self.claimed_link_keys(&mut inv, partition, link);
        let k = &self.keys;
        inv.key(k.dead(partition, link))
            .key(k.link_meta(partition, link))
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
        partition: Partition,
        link: &LinkId,
        error: &str,
        blocked: Option<&str>,
        retry_at_ms: i64,
    ) -> Result<(), StoreError> {
        let k = &self.keys;
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(k.link_meta(partition, link))
            .arg("last_error")
            .arg(error)
            .arg("blocked")
            .arg(blocked.unwrap_or(""))
            .arg("retry_at_ms")
            .arg(retry_at_ms)
            .ignore()
            .cmd("HINCRBY")
            .arg(k.link_meta(partition, link))
            .arg("failures")
            .arg(1)
            .ignore()
            .cmd("ZADD")
            .arg(k.due(partition))
            .arg(retry_at_ms)
            .arg(link.to_string())
            .ignore();
        let () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// The link's meta hash (segment created, key, counters, errors).
    pub async fn link_meta(
        &self,
        partition: Partition,
        link: &LinkId,
    ) -> Result<HashMap<String, String>, StoreError> {
        Ok(redis::cmd("HGETALL")
            .arg(self.keys.link_meta(partition, link))
            .query_async(&mut self.conn())
            .await?)
    }

    /// Makes the link due at `at_ms` (e.g. not before its recorded retry time).
    pub async fn reschedule(
        &self,
        partition: Partition,
        link: &LinkId,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("ZADD")
            .arg(self.keys.due(partition))
            .arg(at_ms)
            .arg(link.to_string())
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Sets fields of the link's meta hash.
    pub async fn set_link_meta(
        &self,
        partition: Partition,
        link: &LinkId,
        fields: &[(&str, &str)],
    ) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.keys.link_meta(partition, link));
        for (f, v) in fields {
            cmd.arg(*f).arg(*v);
        }
        let _: i64 = cmd.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// The cohort's name as last pushed.
    pub async fn cohort_name(
        &self,
        partition: Partition,
        source: &str,
        cohort: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(redis::cmd("HGET")
            .arg(self.keys.cohort_meta(partition, source, cohort))
            .arg("name")
            .query_async(&mut self.conn())
            .await?)
    }

    /// Members of one link waiting for LaunchDarkly (its dirty set's size
    /// and its fresh count).
    pub async fn dirty_len(&self, partition: Partition, link: &LinkId) -> Result<u64, StoreError> {
        let (dirty, fresh): (u64, Option<u64>) = redis::pipe()
            .cmd("SCARD")
            .arg(self.keys.dirty(partition, link))
            .cmd("HGET")
            .arg(self.keys.link_meta(partition, link))
            .arg("fresh")
            .query_async(&mut self.conn())
            .await?;
        Ok(dirty + fresh.unwrap_or(0))
    }

    /// When the oldest change of these partitions not yet acknowledged by
    /// LaunchDarkly was accepted (`None`: every link is clean). Also keeps
    /// each partition's dirty-since hash true (`dirty_since.lua`).
    pub async fn oldest_dirty(
        &self,
        partitions: &[Partition],
        now_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let mut oldest: Option<i64> = None;
        for &partition in partitions {
            let since_key = self.keys.dirty_since(partition);
            let (due, tracked): (Vec<String>, Vec<String>) = redis::pipe()
                .cmd("ZRANGE")
                .arg(self.keys.due(partition))
                .arg(0)
                .arg(-1)
                .cmd("HKEYS")
                .arg(&since_key)
                .query_async(&mut self.conn())
                .await?;
            let links: std::collections::BTreeSet<LinkId> = due
                .iter()
                .chain(&tracked)
                .filter_map(|l| LinkId::parse(l))
                .collect();
            if links.is_empty() {
                continue;
            }
            let mut inv = scripts::DIRTY_SINCE.prepare_invoke();
            inv.key(&since_key).arg(now_ms);
            for l in &links {
                inv.key(self.keys.dirty(partition, l))
                    .key(self.keys.link_meta(partition, l))
                    .arg(l.to_string());
            }
            let at: i64 = inv.invoke_async(&mut self.conn()).await?;
            if at >= 0 {
                oldest = Some(oldest.map_or(at, |o| o.min(at)));
            }
        }
        Ok(oldest)
    }

    /// Members of the link still waiting for LaunchDarkly, summed over due links.
    pub async fn backlog(&self, partitions: &[Partition]) -> Result<u64, StoreError> {
        let mut total = 0;
        for &partition in partitions {
            let links: Vec<String> = redis::cmd("ZRANGE")
                .arg(self.keys.due(partition))
                .arg(0)
                .arg(-1)
                .query_async(&mut self.conn())
                .await?;
            if links.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for l in links.iter().filter_map(|l| LinkId::parse(l)) {
                pipe.cmd("SCARD").arg(self.keys.dirty(partition, &l));
                pipe.cmd("HGET")
                    .arg(self.keys.link_meta(partition, &l))
                    .arg("fresh");
            }
            let counts: Vec<Option<u64>> = pipe.query_async(&mut self.conn()).await?;
            total += counts.iter().flatten().sum::<u64>();
        }
        Ok(total)
    }
}

/// Which claim `claim.lua` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClaimKind {
    /// Members for a request: marked unknown.
    Send,
    /// Shadow mode: read, not marked.
    Shadow,
    /// A request's full batch, or nothing.
    FullOnly,
}

/// What `ack.lua` answered.
fn ack_reply(reply: &[i64]) -> Result<Ack, StoreError> {
    match reply {
        [-1] => Ok(Ack::LeaseLost),
        [w, r, since] => Ok(Ack::Done {
            written: *w as u64,
            still_dirty: *r as u64,
            accepted_since_ms: (*since >= 0).then_some(*since),
        }),
        other => Err(StoreError::Reply(format!("ack returned {other:?}"))),
    }
}

/// What `claim.lua` answered (`None`: fewer dirty than a full-batch claim
/// asked for).
fn claim_reply(reply: &[Value]) -> Result<Option<Claim>, StoreError> {
    match reply.first().map(int).transpose()? {
        Some(-2) => Ok(None),
        Some(-1) => Ok(Some(Claim::LeaseLost)),
        Some(0) => Ok(Some(Claim::Empty)),
        Some(1) => {
            let mut members = Vec::with_capacity(reply.len() / 2);
            for pair in reply[1..].chunks(2) {
                if let [m, d] = pair {
                    members.push((text(m)?, text(d)? == "1"));
                }
            }
            Ok(Some(Claim::Members(members)))
        }
        other => Err(StoreError::Reply(format!("claim returned {other:?}"))),
    }
}
