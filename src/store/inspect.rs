//! What operators see and do: links and their status, dead letters, redrive
//! and resync (served by `http::operator_api` and the `operator` commands).

use super::{scripts, LinkId, Partition, Store, StoreError};
use std::collections::HashMap;

/// What an operator sees of one link.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct LinkStatus {
    /// The partition holding the link's keys.
    #[schema(value_type = u16)]
    pub partition: Partition,
    /// The link meta hash: segment key and name, created, last flush, last
    /// error, blocked reason, retry time and counters.
    pub meta: HashMap<String, String>,
    /// Members waiting for LaunchDarkly (or in doubt).
    pub dirty: u64,
    /// Members set aside after LaunchDarkly rejected them.
    pub dead_letters: u64,
    /// When the link's next flush is due, if it is waiting.
    pub due_at_ms: Option<i64>,
    /// Members the cohort tracks (in, and tombstones of removed ones).
    pub tracked_members: u64,
    /// The link's last reconcile with LaunchDarkly's export, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<super::ReconcileReport>,
    /// The link's sampled verification so far (read-backs of random
    /// members between reconciles), once it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<super::SampleReport>,
    /// When the link's oldest change not yet acknowledged by LaunchDarkly
    /// was accepted (ms), if it has one.
    pub dirty_since_ms: Option<i64>,
}

/// A member LaunchDarkly rejected (400) for a link, set aside until redriven.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The member's key.
    pub key: String,
    /// When it was rejected (ms).
    pub at_ms: i64,
    /// LaunchDarkly's message.
    pub reason: String,
}

impl DeadLetter {
    fn decode(key: &str, value: &str) -> DeadLetter {
        let (at, reason) = value.split_once(' ').unwrap_or((value, ""));
        DeadLetter {
            key: key.to_string(),
            at_ms: at.parse().unwrap_or(0),
            reason: reason.to_string(),
        }
    }
}

/// The replies of [`Store::link_status`]'s pipeline: slot, meta, dirty
/// count, dead letters, due time, tracked members, dirty-since, reconcile
/// report, sampling report.
type StatusReply = (
    Option<String>,
    HashMap<String, String>,
    u64,
    u64,
    Option<f64>,
    u64,
    Option<i64>,
    HashMap<String, String>,
    HashMap<String, String>,
);

impl Store {
    /// Every link the store knows: each cohort with each destination it was
    /// ever linked to (from the cohort's slot assignments), partition by partition.
    pub async fn links(&self) -> Result<Vec<LinkId>, StoreError> {
        let mut out = Vec::new();
        for partition in 0..self.keys.partitions() {
            out.extend(self.links_in(partition).await?);
        }
        out.sort_by(|a, b| {
            (&a.destination, &a.source, &a.cohort).cmp(&(&b.destination, &b.source, &b.cohort))
        });
        Ok(out)
    }

    /// The links of one partition.
    pub async fn links_in(&self, partition: Partition) -> Result<Vec<LinkId>, StoreError> {
        let mut out = Vec::new();
        {
            let cohorts = self.cohorts(partition).await?;
            if cohorts.is_empty() {
                return Ok(out);
            }
            let mut pipe = redis::pipe();
            let mut refs = Vec::with_capacity(cohorts.len());
            for c in &cohorts {
                let Some((source, cohort)) = c.split_once(':') else {
                    continue;
                };
                pipe.cmd("HKEYS")
                    .arg(self.keys.cohort_meta(partition, source, cohort));
                refs.push((source, cohort));
            }
            let fields: Vec<Vec<String>> = pipe.query_async(&mut self.conn()).await?;
            for ((source, cohort), fields) in refs.into_iter().zip(fields) {
                for f in fields {
                    if let Some(dest) = f.strip_prefix("slot:") {
                        out.push(LinkId {
                            destination: dest.to_string(),
                            source: source.to_string(),
                            cohort: cohort.to_string(),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// What an operator sees of one link; `None` if the cohort was never linked
    /// to that destination.
    pub async fn link_status(&self, link: &LinkId) -> Result<Option<LinkStatus>, StoreError> {
        let partition = self.keys.partition(&link.source, &link.cohort);
        let (slot, meta, dirty, dead, due, tracked, since, report, sampled): StatusReply =
            redis::pipe()
                .cmd("HGET")
                .arg(self.keys.cohort_meta(partition, &link.source, &link.cohort))
                .arg(format!("slot:{}", link.destination))
                .cmd("HGETALL")
                .arg(self.keys.link_meta(partition, link))
                .cmd("SCARD")
                .arg(self.keys.dirty(partition, link))
                .cmd("HLEN")
                .arg(self.keys.dead(partition, link))
                .cmd("ZSCORE")
                .arg(self.keys.due(partition))
                .arg(link.to_string())
                .cmd("HLEN")
                .arg(self.keys.want(partition, &link.source, &link.cohort))
                .cmd("HGET")
                .arg(self.keys.dirty_since(partition))
                .arg(link.to_string())
                .cmd("HGETALL")
                .arg(self.keys.reconcile_report(partition, link))
                .cmd("HGETALL")
                .arg(self.keys.sample_report(partition, link))
                .query_async(&mut self.conn())
                .await?;
        if slot.is_none() {
            return Ok(None);
        }
        // The fresh members (apply.lua) wait as the dirty set's do.
        let dirty = dirty
            + meta
                .get("fresh")
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        Ok(Some(LinkStatus {
            partition,
            meta,
            dirty,
            dead_letters: dead,
            due_at_ms: due.map(|d| d as i64),
            tracked_members: tracked,
            reconcile: super::ReconcileReport::decode(&report),
            verified: super::SampleReport::decode(&sampled),
            // Only while something is dirty: an entry outliving its dirty
            // set is dropped by the flusher's next `oldest_dirty`.
            dirty_since_ms: since.filter(|_| dirty > 0),
        }))
    }

    /// How many links of these partitions are blocked now (their meta hash
    /// holds a `blocked` reason).
    pub async fn blocked_links(&self, partitions: &[Partition]) -> Result<u64, StoreError> {
        let mut n = 0;
        for &partition in partitions {
            let links = self.links_in(partition).await?;
            if links.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for l in &links {
                pipe.cmd("HGET")
                    .arg(self.keys.link_meta(partition, l))
                    .arg("blocked");
            }
            let reasons: Vec<Option<String>> = pipe.query_async(&mut self.conn()).await?;
            n += reasons
                .iter()
                .filter(|r| r.as_deref().is_some_and(|r| !r.is_empty()))
                .count() as u64;
        }
        Ok(n)
    }

    /// One page of the link's dead letters, from `cursor` ("0" starts; the
    /// returned cursor is "0" when there is no more).
    pub async fn dead_letters(
        &self,
        link: &LinkId,
        cursor: &str,
        count: usize,
    ) -> Result<(String, Vec<DeadLetter>), StoreError> {
        let partition = self.keys.partition(&link.source, &link.cohort);
        let (next, flat): (String, Vec<String>) = redis::cmd("HSCAN")
            .arg(self.keys.dead(partition, link))
            .arg(cursor)
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut self.conn())
            .await?;
        let letters = flat
            .chunks_exact(2)
            .map(|kv| DeadLetter::decode(&kv[0], &kv[1]))
            .collect();
        Ok((next, letters))
    }

    /// Sends the named dead-lettered members again (all of them when `keys`
    /// is `None`); returns how many left the dead letters.
    pub async fn redrive(
        &self,
        link: &LinkId,
        keys: Option<&[String]>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        match keys {
            Some(keys) => {
                for chunk in keys.chunks(500) {
                    total += self.redrive_chunk(link, chunk, now_ms).await?;
                }
            }
            None => loop {
                // Redriven members leave the hash, so always read its start.
                let (_, letters) = self.dead_letters(link, "0", 500).await?;
                if letters.is_empty() {
                    break;
                }
                let keys: Vec<String> = letters.into_iter().map(|l| l.key).collect();
                let n = self.redrive_chunk(link, &keys, now_ms).await?;
                total += n;
                if n == 0 {
                    // Dead letters of members that no longer exist: drop them.
                    let partition = self.keys.partition(&link.source, &link.cohort);
                    let _: i64 = redis::cmd("HDEL")
                        .arg(self.keys.dead(partition, link))
                        .arg(&keys)
                        .query_async(&mut self.conn())
                        .await?;
                }
            },
        }
        Ok(total)
    }

    async fn redrive_chunk(
        &self,
        link: &LinkId,
        keys: &[String],
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let partition = self.keys.partition(&link.source, &link.cohort);
        let mut inv = scripts::REDRIVE.prepare_invoke();
        inv.key(self.keys.want(partition, &link.source, &link.cohort))
            .key(self.keys.cohort_meta(partition, &link.source, &link.cohort))
            .key(self.keys.dirty(partition, link))
            .key(self.keys.dead(partition, link))
            .key(self.keys.due(partition))
            .key(self.keys.link_meta(partition, link))
            .arg(&link.destination)
            .arg(link.to_string())
            .arg(now_ms);
        for k in keys {
            inv.arg(k);
        }
        Ok(inv.invoke_async(&mut self.conn()).await?)
    }

    /// Marks every member of the link's cohort for rewriting, in chunks of
    /// `chunk` (one short script each). `None` if the cohort was never linked
    /// to that destination; else how many members will be sent again.
    pub async fn resync(
        &self,
        link: &LinkId,
        now_ms: i64,
        chunk: usize,
    ) -> Result<Option<u64>, StoreError> {
        let partition = self.keys.partition(&link.source, &link.cohort);
        let mut cursor = "0".to_string();
        let mut total = 0;
        loop {
            let (next, marked): (String, u64) = scripts::RESYNC
                .key(self.keys.want(partition, &link.source, &link.cohort))
                .key(self.keys.cohort_meta(partition, &link.source, &link.cohort))
                .key(self.keys.dirty(partition, link))
                .key(self.keys.due(partition))
                .key(self.keys.link_meta(partition, link))
                .arg(&link.destination)
                .arg(link.to_string())
                .arg(now_ms)
                .arg(&cursor)
                .arg(chunk.max(1))
                .invoke_async(&mut self.conn())
                .await?;
            if next == "-1" {
                return Ok(None);
            }
            total += marked;
            if next == "0" {
                return Ok(Some(total));
            }
            cursor = next;
        }
    }
}
