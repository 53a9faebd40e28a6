//! A model-based property test of the store (issue 3, item 3).
//!
//! Random interleavings of pushes (colliding members, versions that go up and
//! down, repeated delivery ids, flips, one or two destinations per cohort),
//! claims, acknowledged writes, lost acknowledgements (LaunchDarkly applied
//! the request, or it was dropped), lease loss and 400 dead letters are run
//! against the real [`Store`] on a private `redis-server`, and against a pure
//! in-memory model plus one in-memory "LaunchDarkly" segment per link.
//!
//! After every step: Redis's want hashes decode to the model's versions and
//! desired states, and the members still pending equal the accepted changes
//! without an outcome yet. After a final drain (claim, apply, ack until
//! nothing is dirty): each link's emulated segment equals the model's
//! last-writer-wins state (dead-lettered members aside, which are checked to be
//! dead-lettered), no dirty set or due entry is left, and the outcome counters
//! add up to what was accepted.
//!
//! Three partitions (the two cohorts in different ones, each with its own
//! lease), two replicas (a lease lost mid-flush is rebalanced to the other
//! replica; only that partition's requests are orphaned), and 429 pauses
//! shared through Redis (the shared pause only ever extends) are modelled
//! too.
//!
//! Full snapshots too: pages of up to three sessions per cohort (one or two
//! pages each, any version, any order, repeated pages), interleaved with each
//! other and with pushes, and finalizations driven one session at a time or
//! to the end. The model: a page is a push of its members "in" and stages
//! them (while its session is not complete); the page that completes a
//! session raises the cohort's snapshot floor to the session's start (its
//! first page's version) and queues it (the first one pending, the others by
//! start, then id); finalizing a session is "out at its start" for every
//! member the cohort holds that is in none of its pages, by last writer wins
//! with the tie rule. A member the cohort does not hold whose change is not
//! newer than the floor is stale. The floor and whether a finalization is
//! pending are checked after every step; the drain finalizes everything first.
//!
//! `PROPTEST_CASES` sets the number of cases (default 128). A failure shrinks to
//! a short, readable list of operations.

use crate::support::RedisServer;
use cohort_bridge::config::RedisConfig;
use cohort_bridge::sources::{Change, Push, Snapshot, Version};
use cohort_bridge::store::{
    Ack, AckedBatch, ApplyOutcome, ApplyParams, Claim, Keys, LinkId, MemberValue, Store,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const SOURCE: &str = "src";
const DESTS: [&str; 2] = ["d0", "d1"];
const COHORTS: [&str; 2] = ["c0", "c1"];
const MEMBERS: [&str; 4] = ["a", "b", "c", "d"];
const NOW_MS: i64 = 1_000_000;
const LEASE_TTL: Duration = Duration::from_secs(600);
const PARTITIONS: u16 = 3;

type Fail = TestCaseError;

/// One change in a push, shown as `+b@3` (include `b` at version 3) or `-a@1`.
#[derive(Clone, Copy)]
struct Ch {
    member: u8,
    version: u8,
    include: bool,
}

impl fmt::Debug for Ch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.include { '+' } else { '-' };
        write!(
            f,
            "{sign}{}@{}",
            MEMBERS[self.member as usize], self.version
        )
    }
}

/// One step of a case. Request indexes pick among the requests in flight
/// (modulo their number); a step with nothing to act on does nothing.
#[derive(Clone)]
enum Op {
    /// A delivery of one cohort; `delivery: None` has no idempotency key.
    Push {
        cohort: u8,
        delivery: Option<u8>,
        changes: Vec<Ch>,
    },
    /// The flusher claims up to `max` dirty members of a link (`link` picks
    /// among the cohort's links) and sends them; skipped while that link has
    /// a request in flight, as the real flusher never overlaps a link.
    Claim { cohort: u8, link: u8, max: u8 },
    /// LaunchDarkly applies the request and answers; the store records it.
    Ack { req: u8 },
    /// LaunchDarkly applies the request but the answer is lost (timeout).
    Timeout { req: u8 },
    /// The request is dropped before LaunchDarkly applies it; no answer.
    Dropped { req: u8 },
    /// 400: the members picked by the bit mask `keys` (at least one) go to
    /// dead letters, the rest of the batch is written and acknowledged.
    Reject { req: u8, keys: u8 },
    /// Requests in flight land at LaunchDarkly or not (bit mask `landed`),
    /// then another flusher takes the lease: every later acknowledgement,
    /// dead letter or claim under the old token must be refused.
    /// Like `landed` above, for the requests of one partition (the one of
    /// `cohort`): its lease is lost and rebalanced to the other replica
    /// mid-flush; the other partition's lease and requests are untouched.
    LoseLease { cohort: u8, landed: u8 },
    /// A 429 pause until `secs` seconds past the case's base time is shared through Redis by
    /// one of the replicas: the shared pause must only ever extend.
    RatePause { secs: u8 },
    /// One page of a full snapshot session of a cohort: `members` in at
    /// `version`. Session `s` has `s % 2 + 1` pages (`page` is taken modulo
    /// that); sessions of one cohort overlap freely with each other and with
    /// pushes, and complete in any order.
    SnapPage {
        cohort: u8,
        session: u8,
        page: u8,
        version: u8,
        members: Vec<u8>,
    },
    /// The cohort's pending finalizations are driven: one session's worth
    /// (`all: false`, the queue's head only) or until none is left.
    Finalize { cohort: u8, all: bool },
}

#[derive(Clone)]
struct Case {
    /// Per cohort: whether it fans out to `d1` as well as `d0`.
    fan_out: [bool; 2],
    ops: Vec<Op>,
}

/// One line per step, e.g. `Push { cohort: 0, delivery: Some(2), changes: [+b@3, -a@1] }`.
impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Push {
                cohort,
                delivery,
                changes,
            } => write!(
                f,
                "Push {{ cohort: {cohort}, delivery: {delivery:?}, changes: {changes:?} }}"
            ),
            Op::Claim { cohort, link, max } => {
                write!(f, "Claim {{ cohort: {cohort}, link: {link}, max: {max} }}")
            }
            Op::Ack { req } => write!(f, "Ack {{ req: {req} }}"),
            Op::Timeout { req } => write!(f, "Timeout {{ req: {req} }}"),
            Op::Dropped { req } => write!(f, "Dropped {{ req: {req} }}"),
            Op::Reject { req, keys } => write!(f, "Reject {{ req: {req}, keys: {keys:#05b} }}"),
            Op::LoseLease { cohort, landed } => {
                write!(f, "LoseLease {{ cohort: {cohort}, landed: {landed:#06b} }}")
            }
            Op::RatePause { secs } => write!(f, "RatePause {{ secs: {secs} }}"),
            Op::SnapPage {
                cohort,
                session,
                page,
                version,
                members,
            } => {
                let total = snap_total(*session);
                let names: Vec<&str> = members.iter().map(|m| MEMBERS[*m as usize]).collect();
                write!(
                    f,
                    "SnapPage {{ cohort: {cohort}, session: s{session}, page: {}/{total}, +{names:?}@{version} }}",
                    snap_page(*session, *page)
                )
            }
            Op::Finalize { cohort, all } => {
                write!(f, "Finalize {{ cohort: {cohort}, all: {all} }}")
            }
        }
    }
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fan = |c: usize| if self.fan_out[c] { "d0+d1" } else { "d0" };
        writeln!(f, "Case (c0 -> {}, c1 -> {}):", fan(0), fan(1))?;
        for (i, op) in self.ops.iter().enumerate() {
            writeln!(f, "  {i:>2}. {op:?}")?;
        }
        Ok(())
    }
}

/// The number of pages of snapshot session `s`.
fn snap_total(session: u8) -> u32 {
    u32::from(session % 2) + 1
}

/// The 1-based page number an op's `page` picks in session `s`.
fn snap_page(session: u8, page: u8) -> u32 {
    u32::from(page) % snap_total(session) + 1
}

fn change() -> impl Strategy<Value = Ch> {
    (0..MEMBERS.len() as u8, 0u8..6, any::<bool>()).prop_map(|(member, version, include)| Ch {
        member,
        version,
        include,
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..2, prop::option::weighted(0.7, 0u8..3), prop::collection::vec(change(), 1..4))
            .prop_map(|(cohort, delivery, changes)| Op::Push { cohort, delivery, changes }),
        4 => (0u8..2, 0u8..2, 1u8..4).prop_map(|(cohort, link, max)| Op::Claim { cohort, link, max }),
        3 => (0u8..4).prop_map(|req| Op::Ack { req }),
        1 => (0u8..4).prop_map(|req| Op::Timeout { req }),
        1 => (0u8..4).prop_map(|req| Op::Dropped { req }),
        1 => (0u8..4, 1u8..8).prop_map(|(req, keys)| Op::Reject { req, keys }),
        1 => (0u8..2, 0u8..16).prop_map(|(cohort, landed)| Op::LoseLease { cohort, landed }),
        1 => (0u8..30).prop_map(|secs| Op::RatePause { secs }),
        3 => (0u8..2, 0u8..3, 0u8..2, 0u8..6, prop::collection::vec(0..MEMBERS.len() as u8, 0..3))
            .prop_map(|(cohort, session, page, version, members)| Op::SnapPage {
                cohort,
                session,
                page,
                version,
                members,
            }),
        2 => (0u8..2, any::<bool>()).prop_map(|(cohort, all)| Op::Finalize { cohort, all }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (any::<[bool; 2]>(), prop::collection::vec(op(), 1..40))
        .prop_map(|(fan_out, ops)| Case { fan_out, ops })
}

/// A request sent to LaunchDarkly whose answer has not been handled yet.
struct Req {
    cohort: usize,
    link: LinkId,
    members: Vec<(String, bool)>,
    token: String,
    /// Its lease was lost: LaunchDarkly's side is settled, only the refused
    /// acknowledgement is left.
    orphan: bool,
}

/// Outcome counters, as the bridge's metrics would count them.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    accepted: u64,
    stale: u64,
    unchanged: u64,
    superseded: u64,
    cancelled: u64,
    written: u64,
    dead_lettered: u64,
}

impl Counts {
    fn resolved(&self) -> u64 {
        self.written + self.superseded + self.cancelled + self.unchanged + self.dead_lettered
    }
}

/// The pure model: last writer wins per member, deliveries applied once.
#[derive(Default)]
struct Model {
    /// Per cohort: member → (version, desired).
    members: [BTreeMap<String, (i64, bool)>; 2],
    /// (cohort, delivery id) → the outcome of its first application.
    seen: HashMap<(usize, u8), ApplyOutcome>,
    /// (link, member) pairs LaunchDarkly rejected: never written again.
    dead: BTreeSet<(String, String)>,
    /// Per cohort: snapshot session → its staging.
    sessions: [BTreeMap<u8, Session>; 2],
    /// Per cohort: completed sessions not finalized yet, the one being
    /// finalized first (the store's pending entry), then the cohort's queue
    /// in the order the store takes it (start version, then session id).
    completed: [Vec<u8>; 2],
    /// Per cohort: the snapshot floor, the start of the newest completed
    /// session. A member the cohort does not hold whose change is not newer
    /// is stale: it was in none of that snapshot's pages.
    floor: [Option<i64>; 2],
}

/// A snapshot session of the model.
#[derive(Default)]
struct Session {
    /// The version of its first page to arrive.
    start: i64,
    pages: BTreeSet<u32>,
    /// Every member of any of its pages: the snapshot says nothing of them.
    staged: BTreeSet<String>,
    /// Every page arrived: later pages are plain changes.
    done: bool,
}

struct Harness {
    store: Store,
    keys: Keys,
    raw: redis::aio::MultiplexedConnection,
    prefix: String,
    fan_out: [bool; 2],
    /// Per partition: the token of the replica holding its lease.
    tokens: Vec<String>,
    leases_taken: u32,
    /// The longest 429 pause shared so far (the shared pause's model).
    pause: Option<i64>,
    /// Wall-clock ms at the case's start: pauses lie after it (the key
    /// expires a minute after its pause ends).
    pause_base: i64,
    inflight: Vec<Req>,
    /// The emulated LaunchDarkly: link → included members.
    ld: BTreeMap<String, BTreeSet<String>>,
    model: Model,
    counts: Counts,
}

fn fail(e: impl fmt::Display) -> Fail {
    TestCaseError::fail(e.to_string())
}

fn params() -> ApplyParams {
    ApplyParams {
        now_ms: NOW_MS,
        dedupe_ttl_ms: 3_600_000,
        max_delay_ms: 1_000,
        batch: 3,
        // The history on, as by default: its record rides in every apply.
        history: cohort_bridge::store::HistoryParams {
            entries: 50,
            keys: 64,
            max_age_ms: 86_400_000,
        },
    }
}

/// The state of a member in a 0-based link slot; slots past the end read as 'o'.
fn slot_state(m: &MemberValue, slot: usize) -> char {
    m.states.chars().nth(slot).unwrap_or('o')
}

impl Harness {
    fn dests(&self, cohort: usize) -> Vec<String> {
        let n = if self.fan_out[cohort] { 2 } else { 1 };
        DESTS[..n].iter().map(|d| d.to_string()).collect()
    }

    fn link(&self, cohort: usize, dest: &str) -> LinkId {
        LinkId {
            destination: dest.into(),
            source: SOURCE.into(),
            cohort: COHORTS[cohort].into(),
        }
    }

    fn links(&self, cohort: usize) -> Vec<LinkId> {
        self.dests(cohort)
            .iter()
            .map(|d| self.link(cohort, d))
            .collect()
    }

    fn p(&self, cohort: usize) -> u16 {
        self.keys.partition(SOURCE, COHORTS[cohort])
    }

    fn land(&mut self, link: &LinkId, members: &[(String, bool)]) {
        let seg = self.ld.entry(link.to_string()).or_default();
        for (m, include) in members {
            if *include {
                seg.insert(m.clone());
            } else {
                seg.remove(m);
            }
        }
    }

    /// Every key of this case and its serialized value: equal snapshots mean
    /// a refused call changed nothing.
    async fn snapshot(&mut self) -> Result<BTreeMap<String, Vec<u8>>, Fail> {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{}:*", self.prefix))
            .query_async(&mut self.raw)
            .await
            .map_err(fail)?;
        let mut out = BTreeMap::new();
        for k in keys {
            let v: Option<Vec<u8>> = redis::cmd("DUMP")
                .arg(&k)
                .query_async(&mut self.raw)
                .await
                .map_err(fail)?;
            out.insert(k, v.unwrap_or_default());
        }
        Ok(out)
    }

    async fn want(&mut self, cohort: usize) -> Result<BTreeMap<String, MemberValue>, Fail> {
        let p = self.p(cohort);
        let raw: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.want(p, SOURCE, COHORTS[cohort]))
            .query_async(&mut self.raw)
            .await
            .map_err(fail)?;
        raw.into_iter()
            .map(|(m, v)| match MemberValue::parse(&v) {
                Some(d) => Ok((m, d)),
                None => Err(fail(format!("undecodable want value {m:?} = {v:?}"))),
            })
            .collect()
    }

    /// The 0-based slot of a destination in a cohort's member states.
    async fn slot(&mut self, cohort: usize, dest: &str) -> Result<Option<usize>, Fail> {
        let p = self.p(cohort);
        let s: Option<usize> = redis::cmd("HGET")
            .arg(self.keys.cohort_meta(p, SOURCE, COHORTS[cohort]))
            .arg(format!("slot:{dest}"))
            .query_async(&mut self.raw)
            .await
            .map_err(fail)?;
        Ok(s)
    }

    async fn push(
        &mut self,
        cohort: usize,
        delivery: Option<u8>,
        changes: &[Ch],
        snapshot: Option<Snapshot>,
    ) -> Result<(), Fail> {
        let push = Push {
            cohort_id: COHORTS[cohort].into(),
            cohort_name: Some(format!("Cohort {cohort}")),
            delivery_id: delivery.map(|d| format!("delivery-{d}")),
            changes: changes
                .iter()
                .map(|c| Change {
                    key: MEMBERS[c.member as usize].into(),
                    include: c.include,
                    version: Version::from_ms(i64::from(c.version)).unwrap(),
                })
                .collect(),
            snapshot: snapshot.clone(),
        };
        let out = self
            .store
            .apply(SOURCE, &self.dests(cohort), &push, params())
            .await
            .map_err(fail)?;
        if let Some(first) = delivery.and_then(|d| self.model.seen.get(&(cohort, d))) {
            // A duplicate reports the first delivery's counts and makes nothing due.
            let want = ApplyOutcome {
                duplicate: true,
                due_now: false,
                ..first.clone()
            };
            prop_assert_eq!(out, want, "a repeated delivery must be applied once");
            return Ok(());
        }
        let (mut accepted, mut stale) = (0, 0);
        let floor = self.model.floor[cohort];
        let state = &mut self.model.members[cohort];
        for c in changes {
            let m = MEMBERS[c.member as usize].to_string();
            let v = i64::from(c.version);
            match state.get(&m) {
                // The tie rule (store docs): at equal versions "out" wins.
                Some((stored, d)) if v < *stored || (v == *stored && !*d && c.include) => {
                    stale += 1;
                }
                // Not held, and not newer than the newest completed
                // snapshot: in none of its pages, so that snapshot's
                // implied "out" wins (the tie included).
                None if floor.is_some_and(|f| v <= f) => stale += 1,
                _ => {
                    accepted += 1;
                    state.insert(m, (v, c.include));
                }
            }
        }
        prop_assert!(!out.duplicate, "a first delivery was taken for a duplicate");
        prop_assert_eq!(
            (out.accepted, out.stale),
            (accepted, stale),
            "accepted, stale"
        );
        if let Some(d) = delivery {
            self.model.seen.insert((cohort, d), out.clone());
        }
        if let Some(snap) = snapshot {
            self.stage(cohort, &snap, changes);
        }
        let c = &mut self.counts;
        c.accepted += out.accepted;
        c.stale += out.stale;
        c.unchanged += out.unchanged;
        c.superseded += out.superseded;
        c.cancelled += out.cancelled;
        Ok(())
    }

    /// The model of a page's staging (after the page was applied as a push):
    /// a session not complete yet records the page and its members; the page
    /// that completes it queues its finalization and raises the floor.
    fn stage(&mut self, cohort: usize, snap: &Snapshot, changes: &[Ch]) {
        let id: u8 = snap.session[1..].parse().expect("session s<n>");
        let model = &mut self.model;
        let fresh = !model.sessions[cohort].contains_key(&id);
        let session = model.sessions[cohort].entry(id).or_default();
        if session.done {
            return;
        }
        if fresh {
            session.start = snap.version.ms();
        }
        session.pages.insert(snap.page);
        for c in changes {
            // Staged whether or not the change itself was stale.
            session
                .staged
                .insert(MEMBERS[c.member as usize].to_string());
        }
        if session.pages.len() as u32 >= snap.total_pages {
            session.done = true;
            let start = session.start;
            model.floor[cohort] = Some(model.floor[cohort].map_or(start, |f| f.max(start)));
            let completed = &mut model.completed[cohort];
            completed.push(id);
            let starts = &model.sessions[cohort];
            if completed.len() > 1 {
                // The queue: by start, then by session id (ZPOPMIN).
                completed[1..].sort_by_key(|s| (starts[s].start, format!("s{s}")));
            }
        }
    }

    /// The model of one session's finalization: "out at its start" for every
    /// member the cohort holds and none of its pages listed, merged by last
    /// writer wins (the tie rule: "out" wins). Returns the members removed
    /// (desired in before).
    fn finalize_model(&mut self, cohort: usize) -> Option<u64> {
        let completed = &mut self.model.completed[cohort];
        if completed.is_empty() {
            return None;
        }
        let id = completed.remove(0);
        let session = &self.model.sessions[cohort][&id];
        let start = session.start;
        let mut removed = 0;
        for (m, (version, desired)) in self.model.members[cohort].iter_mut() {
            if session.staged.contains(m) || *version > start {
                continue;
            }
            if *desired {
                removed += 1;
            }
            *version = start;
            *desired = false;
        }
        Some(removed)
    }

    async fn finalize(&mut self, cohort: usize, all: bool) -> Result<(), Fail> {
        let done = self
            .store
            .finalize_snapshot(
                SOURCE,
                &self.dests(cohort),
                COHORTS[cohort],
                params(),
                if all { None } else { Some(1) },
                None,
            )
            .await
            .map_err(fail)?;
        let mut removed = 0;
        let mut sessions = 0;
        while let Some(n) = self.finalize_model(cohort) {
            removed += n;
            sessions += 1;
            if !all {
                break;
            }
        }
        prop_assert!(!done.abandoned, "a finalization was abandoned: {:?}", done);
        // One chunk is a whole session here (a few members, CHUNK of 500):
        // one session's call ends unfinished when another one is queued.
        let finished = all || self.model.completed[cohort].is_empty();
        prop_assert_eq!(
            (done.finished, done.outcome.accepted),
            (finished, removed),
            "finalization of {} session(s) of cohort {}: finished, removed ({:?})",
            sessions,
            cohort,
            done
        );
        let o = done.outcome;
        let c = &mut self.counts;
        c.accepted += o.accepted;
        c.stale += o.stale;
        c.unchanged += o.unchanged;
        c.superseded += o.superseded;
        c.cancelled += o.cancelled;
        Ok(())
    }

    /// Claims and sends a batch; returns whether anything was claimed.
    async fn claim(&mut self, cohort: usize, link: LinkId, max: usize) -> Result<bool, Fail> {
        if self.inflight.iter().any(|r| !r.orphan && r.link == link) {
            return Ok(false);
        }
        let p = self.p(cohort);
        let claim = self
            .store
            .claim(p, &self.tokens[p as usize], &link, max, NOW_MS + 30_000)
            .await
            .map_err(fail)?;
        let members = match claim {
            Claim::Members(m) => m,
            Claim::Empty => return Ok(false),
            Claim::LeaseLost => return Err(fail("claim refused under the held lease")),
        };
        prop_assert!(
            !members.is_empty() && members.len() <= max,
            "claimed {members:?}"
        );
        for (m, desired) in &members {
            let model = self.model.members[cohort].get(m).map(|(_, d)| *d);
            prop_assert_eq!(
                Some(*desired),
                model,
                "claimed {} with a desired state the model does not have",
                m
            );
            prop_assert!(
                !self.model.dead.contains(&(link.to_string(), m.clone())),
                "claimed dead-lettered member {m}"
            );
        }
        self.inflight.push(Req {
            cohort,
            link,
            members,
            token: self.tokens[p as usize].clone(),
            orphan: false,
        });
        Ok(true)
    }

    fn take(&mut self, req: u8) -> Option<Req> {
        if self.inflight.is_empty() {
            return None;
        }
        let i = req as usize % self.inflight.len();
        Some(self.inflight.remove(i))
    }

    async fn ack(&mut self, r: &Req, members: &[(String, bool)]) -> Result<(), Fail> {
        let p = self.p(r.cohort);
        let before = if r.orphan {
            Some(self.snapshot().await?)
        } else {
            None
        };
        let dests = self.dests(r.cohort);
        let acked = AckedBatch {
            token: &r.token,
            link: &r.link,
            sent: members,
            active_destinations: &dests,
            now_ms: NOW_MS,
            max_delay_ms: 1_000,
            batch_size: 3,
            claim_was_full: false,
            claimed_all_at_ms: None,
        };
        let ack = self.store.ack(p, &acked).await.map_err(fail)?;
        match (ack, before) {
            (Ack::Done { written, .. }, None) => self.counts.written += written,
            (Ack::LeaseLost, Some(before)) => {
                let after = self.snapshot().await?;
                prop_assert!(before == after, "a refused acknowledgement changed Redis");
            }
            (other, before) => {
                return Err(fail(format!(
                    "ack answered {other:?} (lease lost before: {})",
                    before.is_some()
                )))
            }
        }
        Ok(())
    }

    async fn dead_letter(&mut self, r: &Req, keys: &[String]) -> Result<(), Fail> {
        let p = self.p(r.cohort);
        let before = self.snapshot().await?;
        let n = self
            .store
            .dead_letter(
                p,
                &r.token,
                &r.link,
                keys,
                "400 Invalid context key",
                NOW_MS,
            )
            .await
            .map_err(fail)?;
        match n {
            Some(n) if !r.orphan => {
                self.counts.dead_lettered += n;
                for k in keys {
                    self.model.dead.insert((r.link.to_string(), k.clone()));
                }
            }
            None if r.orphan => {
                let after = self.snapshot().await?;
                prop_assert!(before == after, "a refused dead letter changed Redis");
            }
            other => {
                return Err(fail(format!(
                    "dead_letter answered {other:?} (orphan: {})",
                    r.orphan
                )))
            }
        }
        Ok(())
    }

    async fn step(&mut self, op: &Op) -> Result<(), Fail> {
        match op {
            Op::Push {
                cohort,
                delivery,
                changes,
            } => {
                self.push(*cohort as usize, *delivery, changes, None)
                    .await?;
            }
            Op::SnapPage {
                cohort,
                session,
                page,
                version,
                members,
            } => {
                let changes: Vec<Ch> = members
                    .iter()
                    .map(|&member| Ch {
                        member,
                        version: *version,
                        include: true,
                    })
                    .collect();
                let snap = Snapshot {
                    session: format!("s{session}"),
                    page: snap_page(*session, *page),
                    total_pages: snap_total(*session),
                    version: Version::from_ms(i64::from(*version)).unwrap(),
                    armed_only: false,
                };
                self.push(*cohort as usize, None, &changes, Some(snap))
                    .await?;
            }
            Op::Finalize { cohort, all } => self.finalize(*cohort as usize, *all).await?,
            Op::Claim { cohort, link, max } => {
                let cohort = *cohort as usize;
                let links = self.links(cohort);
                let link = links[*link as usize % links.len()].clone();
                self.claim(cohort, link, *max as usize).await?;
            }
            Op::Ack { req } => {
                if let Some(r) = self.take(*req) {
                    if !r.orphan {
                        self.land(&r.link, &r.members);
                    }
                    self.ack(&r, &r.members).await?;
                }
            }
            Op::Timeout { req } => {
                if let Some(r) = self.take(*req) {
                    if !r.orphan {
                        self.land(&r.link, &r.members);
                    }
                }
            }
            Op::Dropped { req } => {
                self.take(*req);
            }
            Op::Reject { req, keys } => {
                if let Some(r) = self.take(*req) {
                    let (mut dead, mut rest) = (Vec::new(), Vec::new());
                    for (i, m) in r.members.iter().enumerate() {
                        if keys & (1 << (i % 8)) != 0 {
                            dead.push(m.0.clone());
                        } else {
                            rest.push(m.clone());
                        }
                    }
                    if dead.is_empty() {
                        dead.push(rest.remove(0).0);
                    }
                    self.dead_letter(&r, &dead).await?;
                    if !rest.is_empty() {
                        if !r.orphan {
                            self.land(&r.link, &rest);
                        }
                        self.ack(&r, &rest).await?;
                    }
                }
            }
            Op::LoseLease { cohort, landed } => {
                let p = self.p(*cohort as usize);
                let mut landing = Vec::new();
                for (i, r) in self.inflight.iter_mut().enumerate() {
                    if self.keys.partition(SOURCE, COHORTS[r.cohort]) != p {
                        continue;
                    }
                    if !r.orphan && landed & (1 << (i % 8)) != 0 {
                        landing.push((r.link.clone(), r.members.clone()));
                    }
                    r.orphan = true;
                }
                for (link, members) in landing {
                    self.land(&link, &members);
                }
                let released = self
                    .store
                    .renew_lease(p, &self.tokens[p as usize], Duration::ZERO)
                    .await
                    .map_err(fail)?;
                prop_assert!(released, "the lease was not held");
                self.leases_taken += 1;
                // Rebalanced to the other replica.
                let replica = if self.leases_taken % 2 == 1 { "b" } else { "a" };
                let old = std::mem::replace(
                    &mut self.tokens[p as usize],
                    format!("replica-{replica}-{}", self.leases_taken),
                );
                let got = self
                    .store
                    .try_acquire_lease(p, &self.tokens[p as usize], LEASE_TTL)
                    .await
                    .map_err(fail)?;
                prop_assert!(got, "the new flusher could not take the free lease");
                // The old flusher can no longer claim.
                let before = self.snapshot().await?;
                let link = self.link(*cohort as usize, DESTS[0]);
                let c = self
                    .store
                    .claim(p, &old, &link, 3, NOW_MS + 30_000)
                    .await
                    .map_err(fail)?;
                prop_assert_eq!(c, Claim::LeaseLost);
                let after = self.snapshot().await?;
                prop_assert!(before == after, "a refused claim changed Redis");
            }
            Op::RatePause { secs } => {
                let until = self.pause_base + i64::from(*secs) * 1000;
                let kept = self.store.share_rate_pause(until).await.map_err(fail)?;
                let model = self.pause.map_or(until, |p| p.max(until));
                self.pause = Some(model);
                prop_assert_eq!(kept, model, "the shared pause only extends");
                let read = self.store.rate_pause().await.map_err(fail)?;
                prop_assert_eq!(read, Some(model), "the shared pause read back");
            }
        }
        Ok(())
    }

    /// Checked after every step: Redis holds the model's versions and desired
    /// states, and every accepted change without an outcome is still pending.
    async fn check_invariants(&mut self) -> Result<(), Fail> {
        let mut pending = 0;
        for cohort in 0..2 {
            let want = self.want(cohort).await?;
            let model = &self.model.members[cohort];
            prop_assert_eq!(
                want.keys().collect::<Vec<_>>(),
                model.keys().collect::<Vec<_>>(),
                "members of cohort {}",
                cohort
            );
            for (m, w) in &want {
                let (version, desired) = model[m];
                prop_assert_eq!(
                    (w.version_ms, w.desired),
                    (version, desired),
                    "member {} of cohort {}",
                    m,
                    cohort
                );
                pending += u64::from(w.pending);
            }
            // The snapshot floor and whether a finalization is pending.
            let p = self.p(cohort);
            let meta =
                self.keys
                    .cohort_meta(p, SOURCE, self.link(cohort, DESTS[0]).cohort.as_str());
            let floor: Option<i64> = redis::cmd("HGET")
                .arg(meta)
                .arg("snapshot_floor")
                .query_async(&mut self.raw)
                .await
                .map_err(fail)?;
            prop_assert_eq!(
                floor,
                self.model.floor[cohort],
                "snapshot floor of cohort {}",
                cohort
            );
            let pending_snaps = self.store.pending_snapshots(&[p]).await.map_err(fail)?;
            prop_assert_eq!(
                !pending_snaps.is_empty(),
                !self.model.completed[cohort].is_empty(),
                "a finalization pending for cohort {} ({:?})",
                cohort,
                pending_snaps
            );
        }
        let c = self.counts;
        prop_assert_eq!(
            c.accepted,
            c.resolved() + pending,
            "accepted = written + superseded + cancelled + unchanged + dead-lettered + pending ({:?}, {} pending)",
            c,
            pending
        );
        Ok(())
    }

    /// Settles every request in flight, then claims, applies and acknowledges
    /// every link until nothing is dirty.
    async fn drain(&mut self) -> Result<(), Fail> {
        for cohort in 0..2 {
            self.finalize(cohort, true).await?;
        }
        while let Some(r) = self.take(0) {
            if !r.orphan {
                self.land(&r.link, &r.members);
            }
            self.ack(&r, &r.members).await?;
        }
        for cohort in 0..2 {
            for link in self.links(cohort) {
                let mut rounds = 0;
                while self.claim(cohort, link.clone(), 3).await? {
                    rounds += 1;
                    prop_assert!(rounds <= 20, "link {} never drains", link);
                    if let Some(r) = self.take(0) {
                        self.land(&r.link, &r.members);
                        self.ack(&r, &r.members).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// After the drain: LaunchDarkly, Redis and the counters agree with the model.
    async fn check_final(&mut self) -> Result<(), Fail> {
        self.check_invariants().await?;
        let c = self.counts;
        prop_assert_eq!(
            c.accepted,
            c.resolved(),
            "every accepted change has an outcome: {:?}",
            c
        );
        for cohort in 0..2 {
            let want = self.want(cohort).await?;
            let p = self.p(cohort);
            for link in self.links(cohort) {
                let slot = self.slot(cohort, &link.destination).await?;
                let seg = self.ld.get(&link.to_string()).cloned().unwrap_or_default();
                for (m, (_, desired)) in &self.model.members[cohort] {
                    let w = &want[m];
                    prop_assert!(!w.pending, "{} still pending after the drain", m);
                    let state = slot.map(|s| slot_state(w, s)).unwrap_or('o');
                    if self.model.dead.contains(&(link.to_string(), m.clone())) {
                        prop_assert_eq!(state, 'd', "dead-lettered {} in {}", m, link);
                    } else {
                        prop_assert_eq!(
                            seg.contains(m),
                            *desired,
                            "LaunchDarkly membership of {} in {}",
                            m,
                            link
                        );
                        prop_assert_eq!(
                            state,
                            if *desired { 'i' } else { 'o' },
                            "recorded state of {} in {}",
                            m,
                            link
                        );
                    }
                }
                for m in &seg {
                    prop_assert!(
                        self.model.members[cohort].contains_key(m),
                        "LaunchDarkly has {} that was never pushed",
                        m
                    );
                }
                let dirty: u64 = redis::cmd("SCARD")
                    .arg(self.keys.dirty(p, &link))
                    .query_async(&mut self.raw)
                    .await
                    .map_err(fail)?;
                prop_assert_eq!(dirty, 0, "dirty members left in {}", link);
                let dead: BTreeSet<String> = redis::cmd("HKEYS")
                    .arg(self.keys.dead(p, &link))
                    .query_async(&mut self.raw)
                    .await
                    .map_err(fail)?;
                let modelled: BTreeSet<String> = self
                    .model
                    .dead
                    .iter()
                    .filter(|(l, _)| *l == link.to_string())
                    .map(|(_, m)| m.clone())
                    .collect();
                prop_assert_eq!(dead, modelled, "dead letters of {}", link);
            }
            let due: u64 = redis::cmd("ZCARD")
                .arg(self.keys.due(p))
                .query_async(&mut self.raw)
                .await
                .map_err(fail)?;
            prop_assert_eq!(due, 0, "links still due after the drain");
        }
        Ok(())
    }
}

static CASE: AtomicU32 = AtomicU32::new(0);

async fn run_case(url: &str, case: Case) -> Result<(), Fail> {
    let prefix = format!("model{}", CASE.fetch_add(1, Ordering::SeqCst));
    let cfg = RedisConfig {
        url: url.to_string(),
        key_prefix: prefix.clone(),
        // Three partitions: c0 and c1 land in different ones (1 and 0),
        // each with its own lease and due set.
        partitions: PARTITIONS,
        ..RedisConfig::default()
    };
    let store = Store::connect(&cfg).map_err(fail)?;
    let raw = redis::Client::open(url)
        .map_err(fail)?
        .get_multiplexed_async_connection()
        .await
        .map_err(fail)?;
    let mut h = Harness {
        keys: Keys::new(&prefix, PARTITIONS),
        store,
        raw,
        prefix,
        fan_out: case.fan_out,
        tokens: (0..PARTITIONS).map(|p| format!("replica-a-p{p}")).collect(),
        leases_taken: 0,
        pause: None,
        pause_base: cohort_bridge::clock::now_ms() + 60_000,
        inflight: Vec::new(),
        ld: BTreeMap::new(),
        model: Model::default(),
        counts: Counts::default(),
    };
    for p in 0..PARTITIONS {
        let got = h
            .store
            .try_acquire_lease(p, &h.tokens[p as usize], LEASE_TTL)
            .await
            .map_err(fail)?;
        prop_assert!(got, "the first lease of partition {}", p);
    }
    prop_assert!(h.p(0) != h.p(1), "the cohorts share a partition");
    for op in &case.ops {
        h.step(op).await?;
        h.check_invariants().await?;
    }
    h.drain().await?;
    h.check_final().await
}

#[test]
fn the_store_agrees_with_a_pure_model_under_random_interleavings() {
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    let url = redis.url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case(), |case| rt.block_on(run_case(&url, case)));
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[tokio::test]
async fn a_lease_whose_acquisition_reply_was_lost_is_still_acquired_by_its_holder() {
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    let cfg = RedisConfig {
        url: redis.url(),
        key_prefix: "lease".into(),
        partitions: 1,
        ..RedisConfig::default()
    };
    let store = Store::connect(&cfg).expect("store");
    let key = Keys::new("lease", 1).lease(0);
    // The SET went through but its reply never arrived (e.g. Redis restarted).
    let mut c = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("mine")
        .arg("PX")
        .arg(600_000)
        .query_async(&mut c)
        .await
        .expect("SET");
    assert!(store
        .try_acquire_lease(0, "mine", LEASE_TTL)
        .await
        .expect("acquire"));
    assert!(!store
        .try_acquire_lease(0, "theirs", LEASE_TTL)
        .await
        .expect("acquire"));
    let holder: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut c)
        .await
        .expect("GET");
    assert_eq!(holder, "mine");
}
