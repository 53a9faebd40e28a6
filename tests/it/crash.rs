//! Crash campaigns: the real binary killed with `kill -9` at random instants
//! while a randomized stream is pushed and flushed, and Redis killed and
//! restarted mid-stream. In both, LaunchDarkly must end equal to a
//! last-writer-wins model of every push that got a 2xx, and every 2xx must
//! account for each change it carried.
//!
//! Seeded: the seed is printed at the start; `CB_CRASH_SEED=N`
//! replays a run, `CB_SOAK=1` runs a longer campaign.

use crate::support::stream::{
    self, dirty_backlog, diverging, plan, push_until_accepted, segments_by_key, Model, Planned,
    StreamParams, Tally,
};
use crate::support::{eventually, Bridge, BridgeProcess, Emulator, RedisServer, TestConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const DEFAULT_SEED: u64 = 20_260_301;

fn seed() -> u64 {
    match std::env::var("CB_CRASH_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CB_CRASH_SEED must be an integer, not {s:?}")),
        Err(_) => DEFAULT_SEED,
    }
}

fn soak() -> bool {
    std::env::var("CB_SOAK").is_ok_and(|v| v == "1")
}

/// Senders share a queue of planned pushes; each push may only start while
/// its index is below the gate, which the test moves to place kills.
struct Feed {
    plan: Vec<Planned>,
    next: AtomicUsize,
    acked: AtomicUsize,
    model: Mutex<Model>,
    tally: Mutex<Tally>,
}

async fn sender(feed: Arc<Feed>, base: String, mut gate: watch::Receiver<usize>) {
    let http = reqwest::Client::new();
    loop {
        let i = feed.next.fetch_add(1, Ordering::SeqCst);
        let Some(p) = feed.plan.get(i) else { return };
        while i >= *gate.borrow_and_update() {
            if gate.changed().await.is_err() {
                return;
            }
        }
        let (summary, retries) =
            push_until_accepted(&http, &base, &p.body, Duration::from_secs(120)).await;
        feed.tally.lock().unwrap().add(p, &summary, retries);
        feed.model.lock().unwrap().fold(p);
        feed.acked.fetch_add(1, Ordering::SeqCst);
    }
}

/// The highest request sequence number the emulator has logged so far.
async fn last_seq(emu: &Emulator) -> u64 {
    emu.requests()
        .await
        .last()
        .and_then(|r| r["seq"].as_u64())
        .unwrap_or(0)
}

/// Waits until the emulator holds a delayed membership write in flight.
async fn await_flush_in_flight(emu: &Emulator, since: u64, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let in_flight = emu.requests_since(since).await.iter().any(|r| {
            r["route"] == json!("contexts")
                && r["fault"] == json!("latency")
                && r["completed_ms"].is_null()
        });
        if in_flight {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_at_random_instants_loses_nothing_and_launchdarkly_converges() {
    let seed = seed();
    let soak = soak();
    println!("crash campaign seed = {seed} (replay with CB_CRASH_SEED={seed}); soak = {soak}");
    let (params, kills, senders) = if soak {
        let p = StreamParams {
            cohorts: 40,
            pool: 3000,
            changes: 400_000,
            max_push: 1000,
        };
        (p, 40, 6)
    } else {
        let p = StreamParams {
            cohorts: 24,
            pool: 1500,
            changes: 50_000,
            max_push: 1000,
        };
        (p, 12, 4)
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let planned = plan(&mut rng, params);
    let total = planned.len();

    let redis = RedisServer::start(); // AOF, appendfsync always
    let emu = Emulator::start();
    emu.configure(json!({"max_rps": 200.0})).await;
    let mut cfg = TestConfig::new(&redis.url(), &emu.base);
    // A short request timeout allows a short lease, so a restarted bridge
    // waits little for the leases of the process it replaces.
    cfg.set("redis", "partitions", "8")
        .set("launchdarkly", "requests_per_second", "200.0")
        .set("launchdarkly", "request_timeout_ms", "1500")
        .set("flush", "lease_ttl_ms", "3500")
        .set("flush", "concurrency", "4");
    let started = Instant::now();
    let mut bridge = BridgeProcess::start(&mut cfg).await;

    let feed = Arc::new(Feed {
        plan: planned,
        next: AtomicUsize::new(0),
        acked: AtomicUsize::new(0),
        model: Mutex::new(Model::default()),
        tally: Mutex::new(Tally::default()),
    });
    let (gate_tx, gate_rx) = watch::channel(0usize);
    let workers: Vec<_> = (0..senders)
        .map(|_| tokio::spawn(sender(feed.clone(), bridge.base.clone(), gate_rx.clone())))
        .collect();

    // Kill points: random places in the stream, in order.
    let mut points: Vec<usize> = (0..kills)
        .map(|_| rng.gen_range(total / (kills + 2)..total * 19 / 20))
        .collect();
    points.sort();
    let mut in_flight_kills = 0;
    for (n, &at) in points.iter().enumerate() {
        // Every third kill lands while a LaunchDarkly write is in flight:
        // writes are slowed (still well under the request timeout) from here on.
        let mid_flush = n % 3 == 1;
        let since = last_seq(&emu).await;
        if mid_flush {
            emu.fault(json!({"kind": "latency", "ms": 700, "route": "contexts", "count": 100000}))
                .await;
        }
        gate_tx.send_replace(at + 2 * senders);
        eventually(
            "the senders reach the kill point",
            Duration::from_secs(120),
            || {
                let started = feed.next.load(Ordering::SeqCst);
                async move { (started >= at).then_some(()) }
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..30))).await;
        if mid_flush {
            let mut seen = await_flush_in_flight(&emu, since, Duration::from_secs(5)).await;
            if !seen {
                // Nothing left to flush behind the gate: let pushes flow on.
                gate_tx.send_replace(total);
                seen = await_flush_in_flight(&emu, since, Duration::from_secs(30)).await;
            }
            assert!(seen, "no LaunchDarkly write in flight before kill {n}");
            in_flight_kills += 1;
        }
        bridge.kill9();
        if mid_flush {
            emu.clear_faults().await;
        }
        bridge.crash_and_restart().await;
    }
    gate_tx.send_replace(total);
    for w in workers {
        w.await.expect("a sender panicked");
    }
    let pushed_in = started.elapsed();
    assert_eq!(feed.acked.load(Ordering::SeqCst), total);

    let model = feed.model.lock().unwrap().clone();
    let client = redis.client();
    eventually(
        "LaunchDarkly equals the model for every cohort and nothing is left dirty",
        Duration::from_secs(180),
        || async {
            let segs = segments_by_key(&emu.segments().await, "production");
            let off = diverging(&model, &segs);
            let backlog = dirty_backlog(&client, &cfg.prefix).await?;
            (off.is_empty() && backlog == 0).then_some(())
        },
    )
    .await;
    let converged_in = started.elapsed();
    // Redis agrees with the model member by member.
    for c in model.cohorts() {
        let stored = stream::want(&client, &cfg.prefix, c).await;
        for (cohort, member, (version, include)) in model.entries().filter(|e| e.0 == c) {
            assert_eq!(
                stored.get(member),
                Some(&(version, include)),
                "{cohort}/{member} in Redis"
            );
        }
    }

    let tally = *feed.tally.lock().unwrap();
    let planned_changes: u64 = feed.plan.iter().map(|p| p.users.len() as u64).sum();
    assert_eq!(tally.pushes as usize, total);
    assert_eq!(tally.sent, planned_changes);
    assert_eq!(
        tally.accepted + tally.stale + tally.skipped,
        planned_changes
    );
    assert!(planned_changes >= 50_000 && model.cohorts().count() >= 20);
    assert!(tally.stale > 0, "the stream had no stale change: {tally:?}");
    assert!(
        tally.duplicates > 0,
        "the stream had no duplicate: {tally:?}"
    );
    assert!(in_flight_kills >= 3);
    let stats = emu.stats().await;
    assert_eq!(stats["violations"]["rate_exceeded"], 0, "{stats}");

    bridge.sigterm();
    let status = bridge.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "exit {status:?}\n{}", bridge.logs());
    println!(
        "crash campaign: seed {seed}, {total} pushes, {planned_changes} changes over {} cohorts, \
         {kills} kill -9 ({in_flight_kills} with a write in flight), {} bridge starts; \
         accepted {}, stale {}, duplicate deliveries {}, sender retries {}; \
         LaunchDarkly requests {} ({}); pushed in {:.1} s, converged after {:.1} s",
        model.cohorts().count(),
        bridge.starts,
        tally.accepted,
        tally.stale,
        tally.duplicates,
        tally.retries,
        stats["requests"],
        stats["by_status"],
        pushed_in.as_secs_f64(),
        converged_in.as_secs_f64(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_kill_9_mid_stream_loses_no_acknowledged_change() {
    let seed = seed();
    println!("redis crash seed = {seed} (replay with CB_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let params = StreamParams {
        cohorts: 8,
        pool: 400,
        changes: 8_000,
        max_push: 300,
    };
    let planned = plan(&mut rng, params);
    let total = planned.len();
    let redis = Arc::new(Mutex::new(RedisServer::start())); // appendfsync always
    let url = redis.lock().unwrap().url();
    let client = redis.lock().unwrap().client();
    let emu = Emulator::start();
    let mut cfg = TestConfig::new(&url, &emu.base);
    cfg.set("redis", "partitions", "4");
    // A claim cut short by a crash holds its link for a lease TTL: keep it short.
    cfg.set("flush", "lease_ttl_ms", "4000");
    let bridge = Bridge::start(&cfg).await;

    let feed = Arc::new(Feed {
        plan: planned,
        next: AtomicUsize::new(0),
        acked: AtomicUsize::new(0),
        model: Mutex::new(Model::default()),
        tally: Mutex::new(Tally::default()),
    });
    let (gate_tx, gate_rx) = watch::channel(0usize);
    let workers: Vec<_> = (0..3)
        .map(|_| tokio::spawn(sender(feed.clone(), bridge.base.clone(), gate_rx.clone())))
        .collect();
    let kills = 5;
    for n in 0..kills {
        let at = total * (n + 1) / (kills + 1);
        gate_tx.send_replace(at + 6);
        eventually(
            "the senders reach the kill point",
            Duration::from_secs(60),
            || {
                let started = feed.next.load(Ordering::SeqCst);
                async move { (started >= at).then_some(()) }
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..20))).await;
        // Everything acknowledged before the crash must be in Redis after it.
        let acknowledged = feed.model.lock().unwrap().clone();
        let r = redis.clone();
        tokio::task::spawn_blocking(move || r.lock().unwrap().restart())
            .await
            .expect("restart Redis");
        for c in acknowledged.cohorts() {
            let stored = stream::want(&client, &cfg.prefix, c).await;
            for (cohort, member, (version, include)) in acknowledged.entries().filter(|e| e.0 == c)
            {
                let got = stored.get(member).copied();
                let kept = got.is_some_and(|(v, d)| v > version || (v == version && d == include));
                assert!(
                    kept,
                    "acknowledged change lost in Redis crash {n}: {cohort}/{member} model ({version}, {include}), Redis {got:?}"
                );
            }
        }
    }
    gate_tx.send_replace(total);
    for w in workers {
        w.await.expect("a sender panicked");
    }
    let model = feed.model.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let segs = segments_by_key(&emu.segments().await, "production");
        let backlog = dirty_backlog(&client, &cfg.prefix).await;
        let diverging = diverging(&model, &segs);
        if diverging.is_empty() && backlog == Some(0) {
            break;
        }
        if Instant::now() > deadline {
            let state = redis_state(&client, &cfg.prefix).await;
            panic!(
                "LaunchDarkly does not equal the model 120 s after the Redis crashes: \
                 diverging cohorts {diverging:?}, dirty backlog {backlog:?}\nRedis: {state}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tally = *feed.tally.lock().unwrap();
    let planned_changes: u64 = feed.plan.iter().map(|p| p.users.len() as u64).sum();
    assert_eq!(
        tally.accepted + tally.stale + tally.skipped,
        planned_changes
    );
    println!(
        "redis crash: {total} pushes, {planned_changes} changes, {kills} Redis kill -9, sender retries {}",
        tally.retries
    );
    bridge.stop().await;
}

/// The flusher's view in Redis, for a failure message: due entries, leases,
/// and each link's meta.
async fn redis_state(client: &redis::Client, prefix: &str) -> String {
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return "unreachable".into();
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}:*}}:*"))
        .query_async(&mut c)
        .await
        .unwrap_or_default();
    let mut out = String::new();
    for k in keys {
        let dump: String = if k.ends_with(":due") {
            let v: Vec<(String, i64)> = redis::cmd("ZRANGE")
                .arg(&k)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(&mut c)
                .await
                .unwrap_or_default();
            format!("{v:?}")
        } else if k.ends_with(":lease") {
            let v: Option<String> = redis::cmd("GET")
                .arg(&k)
                .query_async(&mut c)
                .await
                .ok()
                .flatten();
            let ttl: i64 = redis::cmd("PTTL")
                .arg(&k)
                .query_async(&mut c)
                .await
                .unwrap_or(-3);
            format!("{v:?} pttl {ttl}")
        } else if k.contains(":link:") {
            let v: Vec<(String, String)> = redis::cmd("HGETALL")
                .arg(&k)
                .query_async(&mut c)
                .await
                .unwrap_or_default();
            format!("{v:?}")
        } else if k.contains(":dirty:") {
            let n: i64 = redis::cmd("SCARD")
                .arg(&k)
                .query_async(&mut c)
                .await
                .unwrap_or(-1);
            format!("{n} dirty")
        } else {
            continue;
        };
        out.push_str(&format!("\n  {k}: {dump}"));
    }
    out.push_str(&format!("\n  now {}", cohort_bridge::clock::now_ms()));
    out
}
