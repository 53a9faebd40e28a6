//! Every Redis key the bridge uses, built in one place.
//!
//! All keys of one cohort and of its links share the hash tag
//! `{<prefix>:<partition>}`, so one Lua script can touch them atomically and
//! the layout runs unchanged on Redis Cluster. Source and destination ids
//! cannot contain `:` (config validation), so `<dest>:<source>:<cohort>`
//! parses back unambiguously even when the cohort id contains `:`.

use std::fmt;

/// One of the deployment's `redis.partitions` partitions: the unit of
/// leasing, and the hash tag every key of its cohorts shares.
pub type Partition = u16;

/// One cohort written into one destination: the unit of flushing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId {
    /// The destination's id (a LaunchDarkly project and environment).
    pub destination: String,
    /// The source's id.
    pub source: String,
    /// The cohort's id at the source.
    pub cohort: String,
}

impl LinkId {
    /// Parses `<dest>:<source>:<cohort>`.
    pub fn parse(s: &str) -> Option<LinkId> {
        let (destination, rest) = s.split_once(':')?;
        let (source, cohort) = rest.split_once(':')?;
        Some(LinkId {
            destination: destination.into(),
            source: source.into(),
            cohort: cohort.into(),
        })
    }
}

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.destination, self.source, self.cohort)
    }
}

/// The decimal digits of a number, written without the formatting machinery.
#[derive(Default)]
struct Digits([u8; 20]);

impl Digits {
    fn of(&mut self, mut n: usize) -> &str {
        let mut i = self.0.len();
        loop {
            i -= 1;
            self.0[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        // Only ASCII digits were written.
        std::str::from_utf8(&self.0[i..]).unwrap_or_default()
    }
}

/// Builds key names for one deployment (prefix and partition count).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    partitions: u16,
}

impl Keys {
    /// Keys under `redis.key_prefix`, spread over `redis.partitions` (at least one).
    pub fn new(prefix: &str, partitions: u16) -> Self {
        Keys {
            prefix: prefix.to_string(),
            partitions: partitions.max(1),
        }
    }

    /// How many partitions the deployment has.
    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// `partition = crc32(source ␀ cohort) mod P`: stable across processes and versions.
    pub fn partition(&self, source: &str, cohort: &str) -> Partition {
        let mut h = crc32fast::Hasher::new();
        h.update(source.as_bytes());
        h.update(&[0]);
        h.update(cohort.as_bytes());
        (h.finalize() % u32::from(self.partitions)) as Partition
    }

    fn tag(&self, partition: Partition) -> String {
        self.build(partition, &[])
    }

    /// `{<prefix>:<partition>}` followed by `parts`, built in one allocation
    /// (every push builds a dozen keys: `format!` of a `format!` cost two
    /// allocations and the formatting machinery each).
    fn build(&self, partition: Partition, parts: &[&str]) -> String {
        let mut digits = Digits::default();
        let partition = digits.of(usize::from(partition));
        let len = 3 + self.prefix.len() + partition.len();
        let mut key = String::with_capacity(len + parts.iter().map(|p| p.len()).sum::<usize>());
        key.push('{');
        key.push_str(&self.prefix);
        key.push(':');
        key.push_str(partition);
        key.push('}');
        for p in parts {
            key.push_str(p);
        }
        key
    }

    /// `{<prefix>:<partition>}<what><link>` ([`LinkId`]'s display).
    fn build_link(&self, partition: Partition, what: &str, link: &LinkId) -> String {
        self.build(
            partition,
            &[
                what,
                &link.destination,
                ":",
                &link.source,
                ":",
                &link.cohort,
            ],
        )
    }

    /// Hash: member key → `<base-36 version>!<pending><desired><link states>`
    /// (see `apply.lua`, and [`super::MemberValue`] to read one from Rust).
    pub fn want(&self, partition: Partition, source: &str, cohort: &str) -> String {
        self.build(partition, &[":want:", source, ":", cohort])
    }

    /// Hash: the cohort's name and its link slots (`slot:<destination>`).
    pub fn cohort_meta(&self, partition: Partition, source: &str, cohort: &str) -> String {
        self.build(partition, &[":cohort:", source, ":", cohort])
    }

    /// Set: every `<source>:<cohort>` of the partition (for sweeping and listing).
    pub fn cohorts(&self, partition: Partition) -> String {
        self.build(partition, &[":cohorts"])
    }

    /// Set: members of the link whose LaunchDarkly state differs from desired or is unknown.
    pub fn dirty(&self, partition: Partition, link: &LinkId) -> String {
        self.build_link(partition, ":dirty:", link)
    }

    /// List: the link's fresh members, one entry per push: the keys of the
    /// members the want hash did not hold that the push made dirty, joined
    /// by `\n` (`apply.lua`). They wait as the dirty set's do, without one
    /// set entry each, until `claim.lua` moves them into the dirty set; the
    /// link meta hash's `fresh` counts them.
    pub fn fresh(&self, partition: Partition, link: &LinkId) -> String {
        self.build_link(partition, ":fresh:", link)
    }

    /// Hash: segment created, LaunchDarkly key and name, last flush, last error, counters.
    pub fn link_meta(&self, partition: Partition, link: &LinkId) -> String {
        self.build_link(partition, ":link:", link)
    }

    /// Hash: member → "<ms> <reason>" for members LaunchDarkly rejected.
    pub fn dead(&self, partition: Partition, link: &LinkId) -> String {
        self.build_link(partition, ":dead:", link)
    }

    /// List, newest first, capped at `flush.audit_entries_per_link`: one
    /// JSON [`super::AuditEntry`] per LaunchDarkly write of the link.
    pub fn audit(&self, partition: Partition, link: &LinkId) -> String {
        self.build_link(partition, ":audit:", link)
    }

    /// List, newest first, capped at `flush.history_entries_per_cohort` and
    /// `flush.history_max_age_seconds` (trimmed every 16 pushes, so up to 15
    /// records more until the next trim; the key expires after the max age
    /// without a push): one record per push of the cohort, written by
    /// `apply.lua` in the push's own script call (`"<ms> <json>"`, the JSON
    /// described there; read by [`super::history`]). Per cohort, not per
    /// member: a push costs one `LPUSH`, whatever its size.
    pub fn history(&self, partition: Partition, source: &str, cohort: &str) -> String {
        self.build(partition, &[":hist:", source, ":", cohort])
    }

    /// Sorted set: link id → ms when its flush is due.
    pub fn due(&self, partition: Partition) -> String {
        self.build(partition, &[":due"])
    }

    /// Hash: link id → ms the oldest change of the link not yet acknowledged
    /// by LaunchDarkly was accepted (set by `apply.lua` when the link becomes
    /// dirty, dropped by `ack.lua` once its dirty set is empty, kept true by
    /// `dirty_since.lua`). One field per dirty link, nothing per member.
    pub fn dirty_since(&self, partition: Partition) -> String {
        self.build(partition, &[":dirty_since"])
    }

    /// String with TTL: one cohort's push of a delivery already applied,
    /// holding its summary. Per cohort, because one delivery may carry pushes
    /// of several cohorts and each is applied (and retried) on its own; the
    /// cohort's length comes first so ids containing `:` cannot collide.
    pub fn seen(&self, partition: Partition, source: &str, cohort: &str, delivery: &str) -> String {
        let mut n = Digits::default();
        let len = n.of(cohort.len());
        self.build(
            partition,
            &[":seen:", source, ":", len, ":", cohort, ":", delivery],
        )
    }

    /// String with TTL: a first-event Segment batch, by element 0's
    /// `messageId`: "pending" while it is applied, then "done"
    /// (`store::batches`). The source's length comes first so ids
    /// containing `:` cannot collide.
    pub fn batch_seen(&self, partition: Partition, source: &str, first_id: &str) -> String {
        format!(
            "{}:batch:{}:{source}:{first_id}",
            self.tag(partition),
            source.len()
        )
    }

    /// String with TTL: the token of the flusher working this partition.
    pub fn lease(&self, partition: Partition) -> String {
        self.build(partition, &[":lease"])
    }

    /// Set with TTL: every member key listed (as in) by the pages of one full
    /// snapshot session of a cohort so far. The cohort's length prefixes it so
    /// that no `(cohort, session)` pair can spell another's key. Kept until
    /// the session's finalization ends, or `snapshot_ttl_seconds` after its
    /// last page or finalization step (an abandoned session costs nothing).
    pub fn snapshot_members(
        &self,
        partition: Partition,
        source: &str,
        cohort: &str,
        session: &str,
    ) -> String {
        self.snapshot_key("members", partition, source, cohort, session)
    }

    /// Hash with TTL: the snapshot session's progress: `start` (version of its
    /// first page), `total` pages, `page:<n>` per page seen, `seen` (distinct
    /// pages), `has_members`, and `done` once every page arrived.
    pub fn snapshot_meta(
        &self,
        partition: Partition,
        source: &str,
        cohort: &str,
        session: &str,
    ) -> String {
        self.snapshot_key("meta", partition, source, cohort, session)
    }

    /// `<tag>:snap:<what>:<source>:<len(cohort)>:<cohort>:<session>`: the
    /// keys of one snapshot session.
    fn snapshot_key(
        &self,
        what: &str,
        partition: Partition,
        source: &str,
        cohort: &str,
        session: &str,
    ) -> String {
        format!(
            "{}:snap:{what}:{source}:{}:{cohort}:{session}",
            self.tag(partition),
            cohort.len()
        )
    }

    /// Hash: the partition's pending snapshot finalizations, `<source>:<cohort>`
    /// → `<start version>|<HSCAN cursor>|<last worked on (ms)>|<session>`. Recorded by the script that
    /// applies a session's last page; worked off a chunk at a time by the
    /// receiver, or after a crash by any replica's flusher (`store::snapshot`).
    pub fn snapshot_pending(&self, partition: Partition) -> String {
        format!("{}:snap:pending", self.tag(partition))
    }

    /// Sorted set: the cohort's completed snapshot sessions waiting for
    /// their finalization (session → start version) while another session's
    /// finalization holds the cohort's pending entry. Overlapping sessions
    /// are each finalized, one after the other, in any order.
    pub fn snapshot_queue(&self, partition: Partition, source: &str, cohort: &str) -> String {
        format!(
            "{}:snap:queue:{source}:{}:{cohort}",
            self.tag(partition),
            cohort.len()
        )
    }

    /// Set with TTL: the context keys one reconcile run read from
    /// LaunchDarkly's export of the link's segment, staged in chunks and
    /// taken apart again by `reconcile.lua`. Shares the link's hash tag, so
    /// the script sees it with the want hash and dirty set (Redis Cluster).
    /// The run id (no `:`) comes first, the link last.
    pub fn reconcile_stage(&self, partition: Partition, link: &LinkId, run: &str) -> String {
        format!("{}:rec:stage:{run}:{link}", self.tag(partition))
    }

    /// Hash: the link's last reconcile: `last_reconciled_ms`, `checked`,
    /// `missing`, `extra`, `repaired`, `drift_missing`, `drift_extra`; and `last_error`,
    /// `last_error_ms` of the last run that failed.
    pub fn reconcile_report(&self, partition: Partition, link: &LinkId) -> String {
        format!("{}:rec:report:{link}", self.tag(partition))
    }

    /// Hash: the link's sampled verification so far (`sample_judge.lua`):
    /// `checked`, `mismatched`, `missing`, `extra`, `repaired`, `changed` (touched between the
    /// read and LaunchDarkly's answer, not judged), `failed` (404, 5xx,
    /// timeout: never judged) and `last_ms`.
    pub fn sample_report(&self, partition: Partition, link: &LinkId) -> String {
        format!("{}:sample:{link}", self.tag(partition))
    }

    /// Sorted set (not partitioned): replica id → last heartbeat (ms).
    pub fn replicas(&self) -> String {
        format!("{}:replicas", self.prefix)
    }

    /// String (not partitioned): the link that owns a LaunchDarkly segment
    /// key in one project and environment (`SET NX` by its first flush).
    /// Project and environment keys cannot contain `:`; the key is last.
    pub fn segment_owner(&self, project: &str, environment: &str, key: &str) -> String {
        format!("{}:ld:owner:{project}:{environment}:{key}", self.prefix)
    }

    /// String (not partitioned): ms until which every writer holds off after a 429.
    pub fn rate_pause(&self) -> String {
        format!("{}:ld:pause_until", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_ids_round_trip_with_colons_in_cohorts() {
        let l = LinkId {
            destination: "prod".into(),
            source: "amp".into(),
            cohort: "a:b:c".into(),
        };
        assert_eq!(LinkId::parse(&l.to_string()), Some(l));
        assert_eq!(LinkId::parse("nocolon"), None);
    }

    #[test]
    fn keys_of_a_cohort_share_one_hash_tag() {
        let k = Keys::new("cb", 64);
        let partition = k.partition("amp", "c1");
        assert!(partition < 64);
        assert_eq!(partition, k.partition("amp", "c1"));
        let l = LinkId {
            destination: "prod".into(),
            source: "amp".into(),
            cohort: "c1".into(),
        };
        let tag = format!("{{cb:{partition}}}");
        for key in [
            k.want(partition, "amp", "c1"),
            k.cohort_meta(partition, "amp", "c1"),
            k.cohorts(partition),
            k.dirty(partition, &l),
            k.fresh(partition, &l),
            k.link_meta(partition, &l),
            k.due(partition),
            k.dirty_since(partition),
            k.history(partition, "amp", "c1"),
            k.seen(partition, "amp", "c1", "m1"),
            k.lease(partition),
            k.dead(partition, &l),
            k.snapshot_members(partition, "amp", "c1", "s1"),
            k.snapshot_meta(partition, "amp", "c1", "s1"),
            k.snapshot_pending(partition),
            k.snapshot_queue(partition, "amp", "c1"),
            k.reconcile_stage(partition, &l, "run"),
            k.reconcile_report(partition, &l),
            k.sample_report(partition, &l),
        ] {
            assert!(key.starts_with(&tag), "{key}");
        }
    }

    #[test]
    fn keys_are_spelled_as_before_the_one_allocation_builder() {
        for (prefix, partition, cohort) in [
            ("cb", 0, "c1"),
            ("cohort-bridge", 65535, "a:b"),
            ("", 7, ""),
        ] {
            let k = Keys::new(prefix, u16::MAX);
            let tag = format!("{{{prefix}:{partition}}}");
            let l = LinkId {
                destination: "prod".into(),
                source: "amp".into(),
                cohort: cohort.into(),
            };
            let n = cohort.len();
            assert_eq!(k.tag(partition), tag);
            assert_eq!(
                k.want(partition, "amp", cohort),
                format!("{tag}:want:amp:{cohort}")
            );
            assert_eq!(
                k.cohort_meta(partition, "amp", cohort),
                format!("{tag}:cohort:amp:{cohort}")
            );
            assert_eq!(k.cohorts(partition), format!("{tag}:cohorts"));
            assert_eq!(k.dirty(partition, &l), format!("{tag}:dirty:{l}"));
            assert_eq!(k.fresh(partition, &l), format!("{tag}:fresh:{l}"));
            assert_eq!(k.link_meta(partition, &l), format!("{tag}:link:{l}"));
            assert_eq!(k.dead(partition, &l), format!("{tag}:dead:{l}"));
            assert_eq!(k.audit(partition, &l), format!("{tag}:audit:{l}"));
            assert_eq!(
                k.history(partition, "amp", cohort),
                format!("{tag}:hist:amp:{cohort}")
            );
            assert_eq!(k.due(partition), format!("{tag}:due"));
            assert_eq!(k.dirty_since(partition), format!("{tag}:dirty_since"));
            assert_eq!(
                k.seen(partition, "amp", cohort, "m-1"),
                format!("{tag}:seen:amp:{n}:{cohort}:m-1")
            );
            assert_eq!(k.lease(partition), format!("{tag}:lease"));
        }
        let mut d = Digits::default();
        assert_eq!(d.of(0), "0");
        assert_eq!(d.of(10), "10");
        assert_eq!(d.of(usize::MAX), usize::MAX.to_string());
    }

    #[test]
    fn snapshot_keys_of_different_sessions_never_collide() {
        let k = Keys::new("cb", 4);
        assert_ne!(
            k.snapshot_members(0, "s", "a:b", "c"),
            k.snapshot_members(0, "s", "a", "b:c")
        );
        assert_ne!(
            k.snapshot_members(0, "s", "a", "b"),
            k.snapshot_meta(0, "s", "a", "b")
        );
    }

    #[test]
    fn seen_keys_are_per_cohort_and_unambiguous() {
        let k = Keys::new("cb", 1);
        assert_ne!(k.seen(0, "s", "c0", "d"), k.seen(0, "s", "c1", "d"));
        assert_ne!(k.seen(0, "s", "a:b", "c"), k.seen(0, "s", "a", "b:c"));
    }

    #[test]
    fn partitions_spread() {
        let k = Keys::new("cb", 8);
        let mut seen = [0u32; 8];
        for i in 0..800 {
            seen[k.partition("s", &format!("c{i}")) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 50), "{seen:?}");
    }
}
