//! The scale-out campaign (issue 14, item 5): a real three-primary Redis
//! Cluster, three `cohort-bridge serve` processes on it, and senders
//! spraying Amplitude pushes (several cohorts, flips, new members) across
//! all of them, from a model that knows the final desired membership.
//!
//! Mid-flush (the emulator has a write in flight for a segment whose
//! partition replica 0 leases) replica 0 is killed with `kill -9`; once the
//! others own every partition it is started again and, once it owns
//! partitions again, replica 1 is killed the same way. Then:
//!
//! - **Rate.** The emulator counts every arrival on a LaunchDarkly route
//!   (429s and retries too). Each replica runs governor (GCRA, no burst at this rate) at
//!   `R / n` where `n` is the live replicas it counts, so one replica sends
//!   at most `floor(w · R / n) + 1` requests in any window of `w` seconds
//!   (the `+ 1`: a window can start on a request). Summed over the at most
//!   three replicas that send in the window, and as long as no replica
//!   counts fewer replicas than are sending (the join wait and the re-split
//!   before any lease changes hands, `flush::leases`), that is at most
//!   `R · w + 3`. The test asserts it over every sliding window of 1 s and
//!   of 5 s, from the emulator's `/_emulator/rate` (it assumes the arrival
//!   jitter between two requests of one replica is under a tenth of a
//!   period, far above what loopback shows).
//! - **One writer per segment.** The emulator holds every membership write
//!   150 ms (a latency fault) and counts, per segment, writes that arrive
//!   while another is in flight: none may.
//! - **Convergence.** Every segment ends equal to the model.

use crate::support::bridge::AMPLITUDE_SECRET;
use crate::support::cluster::RedisCluster;
use crate::support::{eventually, BridgeProcess, Emulator, TestConfig, WAIT, WAIT_LONG};
use cohort_bridge::store::Keys;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PARTITIONS: u16 = 16;
/// The deployment's LaunchDarkly rate: divisible by 1, 2 and 3 replicas.
const RATE: u64 = 6;
const REPLICAS: usize = 3;
/// Members per cohort the senders draw from: a bounded pool keeps the
/// backlog (and so the time to converge) bounded while flips keep coming.
const POOL: usize = 30;

/// `(cohort, member)` → (version, desired in).
type Model = BTreeMap<(String, String), (i64, bool)>;

/// What every sender shares: the replicas' addresses, the model, the next
/// version (epoch seconds, one per push, so last-writer-wins is the model's
/// highest version), and the stop flag.
struct Senders {
    bases: Vec<String>,
    cohorts: Vec<String>,
    model: Mutex<Model>,
    next_version: AtomicI64,
    stop: AtomicBool,
    http: reqwest::Client,
}

impl Senders {
    /// Draws one push and records it in the model.
    fn draw(&self, rng: &mut rand::rngs::StdRng, sender: usize) -> (Value, i64) {
        let cohort = self.cohorts[rng.gen_range(0..self.cohorts.len())].clone();
        let version = self.next_version.fetch_add(1, Ordering::SeqCst);
        // Now and then a push of members never seen (a first sync's shape):
        // they wait in the links' fresh lists, not one by one in the dirty
        // sets, until a claim moves them (apply.lua, claim.lua).
        let big = rng.gen_ratio(1, 150);
        let include = big || rng.gen_bool(0.6);
        let users: Vec<String> = if big {
            eprintln!("sender {sender}: 70 new members to {cohort} (version {version})");
            (0..70)
                .map(|i| format!("{cohort}-f{version}-{i}"))
                .collect()
        } else {
            let n = rng.gen_range(1..=4);
            (0..n)
                .map(|_| format!("{cohort}-u{}", rng.gen_range(0..POOL)))
                .collect()
        };
        let mut model = self.model.lock().unwrap();
        for u in &users {
            let e = model
                .entry((cohort.clone(), u.clone()))
                .or_insert((0, false));
            if version > e.0 {
                *e = (version, include);
            }
        }
        let body = json!({
            "cohort_name": format!("Cohort {cohort}"),
            "cohort_id": cohort,
            "in_cohort": include,
            "computed_time": version.to_string(),
            "message_id": format!("s{sender}-v{version}"),
            "users": users.iter().map(|u| json!({"user_id": u})).collect::<Vec<_>>(),
        });
        (body, version)
    }

    /// Delivers one push: to replica `first`, else the next ones, until one
    /// answers 200 (the same message id each time, so a replica that died
    /// after applying it makes the retry a duplicate, applied once).
    async fn deliver(&self, body: &Value, first: usize) {
        eventually("a replica accepts the push", WAIT_LONG, || async {
            for k in 0..self.bases.len() {
                let base = &self.bases[(first + k) % self.bases.len()];
                let r = self
                    .http
                    .post(format!("{base}/v1/webhooks/amplitude"))
                    .header("X-Cohort-Bridge-Token", AMPLITUDE_SECRET)
                    .json(body)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status() == 200) {
                    return Some(());
                }
            }
            None
        })
        .await;
    }

    async fn run(self: Arc<Self>, sender: usize) -> u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(sender as u64 + 14);
        // Pacing (not synchronisation): about 20 pushes a second per sender.
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut sent = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            tick.tick().await;
            let (body, version) = self.draw(&mut rng, sender);
            self.deliver(&body, (sender + version as usize) % self.bases.len())
                .await;
            sent += 1;
        }
        sent
    }

    /// The model's included members per cohort, sorted.
    fn desired(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> =
            self.cohorts.iter().map(|c| (c.clone(), vec![])).collect();
        for ((c, u), (_, include)) in self.model.lock().unwrap().iter() {
            if *include {
                out.get_mut(c).unwrap().push(u.clone());
            }
        }
        for v in out.values_mut() {
            v.sort();
        }
        out
    }
}

/// Two cohorts on each of the three nodes.
fn cohorts_on_every_node(cluster: &RedisCluster, keys: &Keys) -> Vec<String> {
    let mut count = [0usize; 3];
    let mut out = Vec::new();
    for i in 0.. {
        if count.iter().all(|c| *c >= 2) {
            break;
        }
        let cohort = format!("k{i}");
        let p = keys.partition("amplitude", &cohort);
        let node = cluster.node_of(&keys.want(p, "amplitude", &cohort));
        if count[node] < 2 {
            count[node] += 1;
            out.push(cohort);
        }
    }
    out
}

/// Each partition's lease holder (its token, `<hostname>-<uuid>`), read from
/// the node that serves the lease key.
async fn lease_holders(cluster: &RedisCluster, keys: &Keys) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        let key = keys.lease(p);
        let node = &cluster.nodes[cluster.node_of(&key)];
        let holder = async {
            let mut c = node
                .client()
                .get_multiplexed_async_connection()
                .await
                .ok()?;
            ::redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<String>>(&mut c)
                .await
                .ok()
                .flatten()
        }
        .await;
        out.push(holder);
    }
    out
}

fn replica_name(i: usize) -> String {
    format!("replica-{i}")
}

fn held_by(holder: &Option<String>, replica: usize) -> bool {
    holder
        .as_deref()
        .is_some_and(|h| h.starts_with(&format!("{}-", replica_name(replica))))
}

/// Waits until the emulator has a write in flight for a segment whose
/// partition replica `victim` leases; returns that segment.
async fn write_in_flight_of(
    emu: &Emulator,
    cluster: &RedisCluster,
    keys: &Keys,
    cohorts: &[String],
    victim: usize,
) -> String {
    eventually(
        &format!("replica {victim} has a write in flight"),
        WAIT,
        || async {
            let holders = lease_holders(cluster, keys).await;
            let writes = emu.writes().await;
            let in_flight = writes["in_flight"].as_object()?.clone();
            cohorts.iter().find_map(|c| {
                let segment = format!("default/production/amplitude-{c}");
                let p = keys.partition("amplitude", c);
                (in_flight.contains_key(&segment) && held_by(&holders[p as usize], victim))
                    .then_some(segment)
            })
        },
    )
    .await
}

/// Waits until every partition is leased by one of `owners`.
async fn all_partitions_held_by(cluster: &RedisCluster, keys: &Keys, owners: &[usize]) {
    eventually(
        &format!("replicas {owners:?} lease every partition"),
        WAIT,
        || async {
            let holders = lease_holders(cluster, keys).await;
            holders
                .iter()
                .all(|h| owners.iter().any(|o| held_by(h, *o)))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_three_replicas_on_a_cluster_survive_kills_within_the_rate_and_one_writer_per_segment(
) {
    let cluster = RedisCluster::start();
    let emu = Emulator::start();
    // Every membership write takes 150 ms: two replicas writing one segment
    // would overlap at the emulator.
    emu.fault(json!({"kind": "latency", "ms": 150, "route": "contexts", "count": 1_000_000}))
        .await;
    let mut cfg = TestConfig::new(&cluster.url(), &emu.base);
    cfg.set("redis", "cluster", "true")
        .set("redis", "cluster_urls", cluster.other_urls_toml())
        .set("redis", "partitions", PARTITIONS.to_string())
        .set("launchdarkly", "requests_per_second", format!("{RATE}.0"))
        .set("launchdarkly", "max_keys_per_request", "10")
        .set("launchdarkly", "request_timeout_ms", "1000")
        .set("flush", "lease_ttl_ms", "3000");
    let keys = Keys::new(&cfg.prefix, PARTITIONS);
    let cohorts = cohorts_on_every_node(&cluster, &keys);

    let mut bridges = Vec::new();
    for i in 0..REPLICAS {
        bridges.push(BridgeProcess::start_as(&mut cfg, &replica_name(i)).await);
    }
    let logs = |bridges: &[BridgeProcess]| -> String {
        bridges
            .iter()
            .enumerate()
            .map(|(i, b)| format!("--- replica {i} ---\n{}", b.logs()))
            .collect()
    };
    let now_s = cohort_bridge::clock::now_ms() / 1000;
    let senders = Arc::new(Senders {
        bases: bridges.iter().map(|b| b.base.clone()).collect(),
        cohorts: cohorts.clone(),
        model: Mutex::new(Model::new()),
        // An hour ago and counting up one second per push: well inside the
        // allowed skew for the few thousand pushes of a run.
        next_version: AtomicI64::new(now_s - 3_600),
        stop: AtomicBool::new(false),
        http: reqwest::Client::new(),
    });
    let tasks: Vec<_> = (0..REPLICAS)
        .map(|i| tokio::spawn(senders.clone().run(i)))
        .collect();

    // Every replica gets its share of the partitions.
    all_partitions_held_by(&cluster, &keys, &[0, 1, 2]).await;
    eventually("every replica leases partitions", WAIT, || async {
        let holders = lease_holders(&cluster, &keys).await;
        (0..REPLICAS)
            .all(|r| holders.iter().any(|h| held_by(h, r)))
            .then_some(())
    })
    .await;

    // Replica 0 dies mid-flush, the others take its partitions over, it
    // comes back and gets a share again.
    let segment = write_in_flight_of(&emu, &cluster, &keys, &cohorts, 0).await;
    bridges[0].kill9();
    eprintln!("killed replica 0 with a write to {segment} in flight");
    all_partitions_held_by(&cluster, &keys, &[1, 2]).await;
    bridges[0].restart().await;
    eventually(
        "the restarted replica 0 leases partitions",
        WAIT,
        || async {
            let holders = lease_holders(&cluster, &keys).await;
            holders.iter().any(|h| held_by(h, 0)).then_some(())
        },
    )
    .await;

    // Then replica 1 dies mid-flush; 0 and 2 end up with everything.
    let segment = write_in_flight_of(&emu, &cluster, &keys, &cohorts, 1).await;
    bridges[1].kill9();
    eprintln!("killed replica 1 with a write to {segment} in flight");
    all_partitions_held_by(&cluster, &keys, &[0, 2]).await;

    senders.stop.store(true, Ordering::SeqCst);
    let mut pushes = 0;
    for t in tasks {
        pushes += t.await.expect("sender");
    }

    // LaunchDarkly ends equal to the model.
    let desired = senders.desired();
    for (cohort, want) in &desired {
        let key = format!("amplitude-{cohort}");
        let what = format!("production/{key} equals the model");
        eventually(&what, WAIT_LONG, || async {
            (emu.members("default", "production", &key).await.as_ref() == Some(want)).then_some(())
        })
        .await;
    }

    // No two writes of one segment were ever in flight at once.
    let writes = emu.writes().await;
    assert_eq!(
        writes["overlaps"],
        0,
        "two replicas wrote one segment at once: {writes}\n{}",
        logs(&bridges)
    );
    // The rate, summed over every replica, retries included.
    let one = emu.rate(1_000).await;
    let five = emu.rate(5_000).await;
    eprintln!(
        "campaign: {pushes} pushes, {} LaunchDarkly requests, at most {} in 1 s and {} in 5 s; per second: {}",
        one["requests"], one["max_in_window"], five["max_in_window"], one["per_second"]
    );
    let bound = |w: u64| RATE * w + REPLICAS as u64;
    assert!(
        one["max_in_window"].as_u64().unwrap() <= bound(1),
        "more than {} requests in one second: {one}",
        bound(1)
    );
    assert!(
        five["max_in_window"].as_u64().unwrap() <= bound(5),
        "more than {} requests in five seconds: {five}",
        bound(5)
    );
}
