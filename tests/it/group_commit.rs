//! Group commit (`ingest.group_commit_wait_us`, `store::GroupCommit`): small
//! pushes that arrive together share one script call, and each is still
//! answered with its own outcome, only once its own changes are in Redis.
//!
//! Groups are forced where a test needs them, without timing: `CLIENT PAUSE
//! WRITE` holds the scripts in Redis, so the pushes arriving meanwhile queue
//! behind the group in flight and form the next groups; the size histogram
//! (`cohort_bridge_group_commit_size`) shows that they did.

use crate::support::bridge::{amplitude_body, AMPLITUDE_SECRET};
use crate::support::{converge, eventually, Bridge, Emulator, RedisServer, TestConfig, WAIT};
use serde_json::Value;
use std::collections::BTreeMap;
use tokio::task::JoinHandle;

/// Group commit on, with the longest wait allowed (groups form readily).
fn group_commit(cfg: &mut TestConfig) {
    cfg.set("ingest", "group_commit_wait_us", "10000");
    cfg.set("ingest", "group_commit_max", "64");
    // A push held by CLIENT PAUSE must fail only when Redis goes away.
    cfg.set("redis", "response_timeout_ms", "60000");
}

/// POSTs an Amplitude body on its own task: (status, body); status 0 when
/// the connection failed.
fn spawn_push(bridge: &Bridge, body: Value) -> JoinHandle<(u16, Value)> {
    let http = bridge.http.clone();
    let url = format!("{}/v1/webhooks/amplitude", bridge.base);
    tokio::spawn(async move {
        let resp = http
            .post(url)
            .header("X-Cohort-Bridge-Token", AMPLITUDE_SECRET)
            .json(&body)
            .send()
            .await;
        match resp {
            Err(_) => (0, Value::Null),
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                (
                    status,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                )
            }
        }
    })
}

async fn join_all(tasks: Vec<JoinHandle<(u16, Value)>>) -> Vec<(u16, Value)> {
    let mut out = Vec::new();
    for t in tasks {
        let answer = tokio::time::timeout(WAIT, t)
            .await
            .expect("a push of a group was never answered")
            .expect("push task");
        out.push(answer);
    }
    out
}

/// The group size histogram: (groups, groups of one push, pushes).
async fn groups(bridge: &Bridge) -> (u64, u64, u64) {
    let (_, text) = bridge.get("/metrics").await;
    let name = cohort_bridge::metrics::GROUP_COMMIT_SIZE;
    let value = |prefix: String| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    (
        value(format!("{name}_count ")),
        value(format!("{name}_bucket{{le=\"1\"}} ")),
        value(format!("{name}_sum ")),
    )
}

/// Waits until `pushes` pushes in all were handed to Redis in groups, at
/// least one group holding more than one.
async fn await_grouped(bridge: &Bridge, pushes: u64) {
    eventually(
        &format!("{pushes} pushes sent to Redis, some in a group of several"),
        WAIT,
        || async {
            let (count, ones, sum) = groups(bridge).await;
            (sum >= pushes && count > ones).then_some(())
        },
    )
    .await;
}

fn pause_writes(redis: &RedisServer) {
    let mut c = redis.client().get_connection().expect("connect");
    let _: () = ::redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(60_000)
        .arg("WRITE")
        .query(&mut c)
        .expect("CLIENT PAUSE");
}

fn unpause(redis: &RedisServer) {
    let mut c = redis.client().get_connection().expect("connect");
    let _: () = ::redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(&mut c)
        .expect("CLIENT UNPAUSE");
}

fn n(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or(u64::MAX)
}

/// The model: cohort -> member -> (version, included), last writer (highest
/// version) wins.
#[derive(Default)]
struct Model(BTreeMap<String, BTreeMap<String, (i64, bool)>>);

impl Model {
    fn set(&mut self, cohort: &str, member: &str, version: i64, include: bool) {
        let e = self
            .0
            .entry(cohort.to_string())
            .or_default()
            .entry(member.to_string())
            .or_insert((version, include));
        if version > e.0 {
            *e = (version, include);
        }
    }

    async fn converged(&self, emu: &Emulator) {
        for (cohort, members) in &self.0 {
            let want: Vec<&str> = members
                .iter()
                .filter(|(_, (_, inc))| *inc)
                .map(|(m, _)| m.as_str())
                .collect();
            converge(emu, "production", &format!("amplitude-{cohort}"), &want).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_single_pushes_share_groups_and_each_gets_its_own_outcome() {
    let redis = RedisServer::start();
    let emu = Emulator::start();
    let mut cfg = TestConfig::new(&redis.url(), &emu.base);
    group_commit(&mut cfg);
    let bridge = Bridge::start(&cfg).await;
    let mut model = Model::default();

    // A member already at a high version: older changes to it are stale.
    let (status, body) = bridge
        .amplitude(&amplitude_body("gc2", true, 5000, "old-seed", &["old"]))
        .await;
    assert_eq!((status, n(&body, "accepted")), (200, 1), "{body}");
    model.set("gc2", "old", 5000, true);

    // Hold the first group in Redis so that what follows forms groups.
    pause_writes(&redis);
    let opener = spawn_push(&bridge, amplitude_body("gc5", true, 1, "open", &["opener"]));
    model.set("gc5", "opener", 1, true);
    opener_sent(&bridge).await;

    let mut tasks = Vec::new();
    // New members of six cohorts: each accepted.
    let mut new = Vec::new();
    for i in 0..120 {
        let cohort = format!("gc{}", i % 6);
        let member = format!("n{i}");
        model.set(&cohort, &member, 1000, true);
        new.push(tasks.len());
        tasks.push(spawn_push(
            &bridge,
            amplitude_body(&cohort, true, 1000, &format!("new-{i}"), &[&member]),
        ));
    }
    // One member flipped 40 times, each push its own version: the highest
    // version wins, whatever order the group applies them in.
    let mut flips = Vec::new();
    for v in 2000..2040_i64 {
        let include = v % 3 != 0;
        model.set("gc0", "flip", v, include);
        flips.push((tasks.len(), v));
        tasks.push(spawn_push(
            &bridge,
            amplitude_body("gc0", include, v, &format!("flip-{v}"), &["flip"]),
        ));
    }
    // One delivery sent 20 times: applied once, the rest duplicates.
    let mut dups = Vec::new();
    model.set("gc1", "dup", 3000, true);
    for _ in 0..20 {
        dups.push(tasks.len());
        tasks.push(spawn_push(
            &bridge,
            amplitude_body("gc1", true, 3000, "dup-1", &["dup"]),
        ));
    }
    // Stale changes, and pushes with a key LaunchDarkly cannot take beside a
    // good one: neither fails its group-mates.
    let mut stale = Vec::new();
    for v in 10..20_i64 {
        stale.push(tasks.len());
        tasks.push(spawn_push(
            &bridge,
            amplitude_body("gc2", false, v, &format!("stale-{v}"), &["old"]),
        ));
    }
    let mut bad = Vec::new();
    for i in 0..10 {
        let good = format!("g{i}");
        model.set("gc3", &good, 4000, true);
        bad.push(tasks.len());
        tasks.push(spawn_push(
            &bridge,
            amplitude_body(
                "gc3",
                true,
                4000,
                &format!("bad-{i}"),
                &["bad\u{1}key", &good],
            ),
        ));
    }
    let sent = tasks.len() as u64;
    // Every push is in a group in Redis (held by the pause), some groups
    // hold several: then let Redis run them.
    await_grouped(&bridge, 2 + sent).await;
    unpause(&redis);
    let (status, body) = opener.await.expect("opener");
    assert_eq!((status, n(&body, "accepted")), (200, 1), "{body}");
    let answers = join_all(tasks).await;

    for &i in &new {
        let (status, body) = &answers[i];
        assert_eq!(*status, 200, "{body}");
        assert_eq!(n(body, "accepted"), 1, "a new member: {body}");
        assert_eq!(body["duplicate"], false, "{body}");
    }
    let top = flips.iter().map(|(_, v)| *v).max().unwrap();
    for &(i, v) in &flips {
        let (status, body) = &answers[i];
        assert_eq!(*status, 200, "{body}");
        assert_eq!(
            n(body, "accepted") + n(body, "stale"),
            1,
            "flip {v}: {body}"
        );
        if v == top {
            assert_eq!(
                n(body, "accepted"),
                1,
                "the newest flip is never stale: {body}"
            );
        }
    }
    let firsts: Vec<&Value> = dups
        .iter()
        .map(|&i| &answers[i])
        .inspect(|(status, body)| assert_eq!(*status, 200, "{body}"))
        .map(|(_, body)| body)
        .filter(|body| body["duplicate"] == false)
        .collect();
    assert_eq!(firsts.len(), 1, "one delivery applied once: {firsts:?}");
    assert_eq!(n(firsts[0], "accepted"), 1, "{}", firsts[0]);
    for &i in &stale {
        let (status, body) = &answers[i];
        assert_eq!(*status, 200, "{body}");
        assert_eq!(
            (n(body, "accepted"), n(body, "stale")),
            (0, 1),
            "older than the stored version: {body}"
        );
    }
    for &i in &bad {
        let (status, body) = &answers[i];
        assert_eq!(*status, 200, "{body}");
        assert_eq!(
            (n(body, "accepted"), n(body, "skipped_invalid_key")),
            (1, 1),
            "{body}"
        );
    }
    // Every single push went through group commit (the seed alone, the
    // opener, then the held ones).
    let (count, ones, pushes) = groups(&bridge).await;
    println!("group commit: {pushes} pushes in {count} groups ({ones} of one push)");
    assert_eq!(pushes, 2 + sent, "pushes through group commit");
    model.converged(&emu).await;
    bridge.stop().await;
}

/// The opener's group is in Redis: one push counted by the histogram
/// beyond the seed's.
async fn opener_sent(bridge: &Bridge) {
    eventually("the opener's group is sent", WAIT, || async {
        (groups(bridge).await.2 >= 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_under_a_group_fails_every_push_of_it_and_loses_no_answered_change() {
    let mut redis = RedisServer::start(); // appendfsync always
    let emu = Emulator::start();
    let mut cfg = TestConfig::new(&redis.url(), &emu.base);
    group_commit(&mut cfg);
    let bridge = Bridge::start(&cfg).await;
    let mut model = Model::default();
    let (status, body) = bridge
        .amplitude(&amplitude_body("kc0", true, 1, "before", &["before"]))
        .await;
    assert_eq!(status, 200, "{body}");
    model.set("kc0", "before", 1, true);

    pause_writes(&redis);
    let bodies: Vec<Value> = (0..40)
        .map(|i| {
            amplitude_body(
                &format!("kc{}", i % 4),
                true,
                10,
                &format!("k-{i}"),
                &[&format!("k{i}")],
            )
        })
        .collect();
    let tasks: Vec<_> = bodies
        .iter()
        .map(|b| spawn_push(&bridge, b.clone()))
        .collect();
    // Every push is in Redis in a group, some of several; none is answered.
    await_grouped(&bridge, 1 + bodies.len() as u64).await;
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "a push was answered before its group left Redis"
    );
    redis.kill();
    let answers = join_all(tasks).await;
    for (status, body) in &answers {
        assert!(
            *status == 503 || *status == 0,
            "a push of a group cut by the crash must fail, got {status}: {body}"
        );
        if *status == 503 {
            assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
        }
    }
    redis.restart();
    // What was answered before the crash is still there; the failed pushes,
    // sent again, are applied (the bridge reconnects).
    for (i, b) in bodies.iter().enumerate() {
        let b = b.clone();
        let body = eventually("a retried push is accepted", WAIT, || {
            let b = b.clone();
            let bridge = &bridge;
            async move {
                let (status, body) = bridge.amplitude(&b).await;
                (status == 200).then_some(body)
            }
        })
        .await;
        assert_eq!(n(&body, "accepted"), 1, "{body}");
        model.set(&format!("kc{}", i % 4), &format!("k{i}"), 10, true);
    }
    model.converged(&emu).await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_whose_script_fails_fails_alone_in_its_group() {
    let redis = RedisServer::start();
    let emu = Emulator::start();
    let mut cfg = TestConfig::new(&redis.url(), &emu.base);
    group_commit(&mut cfg);
    let bridge = Bridge::start(&cfg).await;
    let mut model = Model::default();
    let (status, body) = bridge
        .amplitude(&amplitude_body("broken", true, 1, "seed", &["seed"]))
        .await;
    assert_eq!(status, 200, "{body}");
    // Break the cohort: its want hash becomes a string, so its apply
    // raises WRONGTYPE inside the script.
    {
        let mut c = redis.client().get_connection().expect("connect");
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("*{}*want*broken*", cfg.prefix))
            .query(&mut c)
            .expect("KEYS");
        assert_eq!(keys.len(), 1, "the want hash of the cohort: {keys:?}");
        let _: () = ::redis::cmd("SET")
            .arg(&keys[0])
            .arg("not a hash")
            .query(&mut c)
            .expect("SET");
    }
    // The opener's group is held in Redis; the broken push and the others
    // queue behind it and share groups.
    pause_writes(&redis);
    let opener = spawn_push(
        &bridge,
        amplitude_body("fine0", true, 1, "open", &["opener"]),
    );
    model.set("fine0", "opener", 1, true);
    opener_sent(&bridge).await;
    let mut tasks = Vec::new();
    for i in 0..30 {
        if i == 10 {
            tasks.push(spawn_push(
                &bridge,
                amplitude_body("broken", true, 2, "broken-1", &["b1"]),
            ));
        }
        let cohort = format!("fine{}", i % 3);
        let member = format!("f{i}");
        model.set(&cohort, &member, 5, true);
        tasks.push(spawn_push(
            &bridge,
            amplitude_body(&cohort, true, 5, &format!("fine-{i}"), &[&member]),
        ));
    }
    await_grouped(&bridge, 2 + tasks.len() as u64).await;
    unpause(&redis);
    assert_eq!(opener.await.expect("opener").0, 200);
    let answers = join_all(tasks).await;
    for (i, (status, body)) in answers.iter().enumerate() {
        if i == 10 {
            assert_eq!(*status, 503, "the broken cohort's push: {body}");
            assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
        } else {
            assert_eq!(*status, 200, "a group-mate of the broken push: {body}");
            assert_eq!(n(body, "accepted"), 1, "{body}");
        }
    }
    model.converged(&emu).await;
    bridge.stop().await;
}
