//! Fault sequences: LaunchDarkly ends equal to last-writer-wins over every
//! acknowledged change, whatever fails in between.

use crate::support::fleet::Fleet;
use crate::support::stream::{dirty_backlog, segments_by_key};
use crate::support::{eventually, stack, Bridge, Emulator, WAIT, WAIT_LONG};
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn set(v: &[String]) -> BTreeSet<String> {
    v.iter().cloned().collect()
}

/// Included keys of the production segment synced from `cohort`.
async fn included(emu: &Emulator, cohort: &str) -> Option<BTreeSet<String>> {
    segments_by_key(&emu.segments().await, "production")
        .into_iter()
        .find(|(k, _)| k.ends_with(&format!("-{cohort}")) || k == cohort)
        .map(|(_, m)| m.into_iter().collect())
}

async fn push(bridge: &Bridge, cohort: &str, include: bool, version_s: i64, u: &[String]) {
    let refs: Vec<&str> = u.iter().map(String::as_str).collect();
    let id = format!("{cohort}-{version_s}-{include}");
    let (status, body) = bridge
        .amplitude(&crate::support::bridge::amplitude_body(
            cohort, include, version_s, &id, &refs,
        ))
        .await;
    assert_eq!(status, 200, "{body}");
}

fn keys_of(req: &Value) -> usize {
    let list = |k: &str| req["body"][k].as_array().map_or(0, Vec::len);
    ["included", "excluded"]
        .iter()
        .map(|side| {
            let v = &req["body"][side];
            v["add"].as_array().map_or(0, Vec::len) + v["remove"].as_array().map_or(0, Vec::len)
        })
        .sum::<usize>()
        + list("add")
        + list("remove")
}

/// Item 1: a request held by a 429 pause while its partition moves to a
/// joining replica is not sent after the move (the old owner re-checks its
/// lease after the wait, before it claims, and gives the partition up only
/// once its requests there have ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_held_by_a_429_pause_is_not_sent_after_its_partition_moves() {
    let mut fleet = Fleet::new();
    fleet
        .cfg
        .set("launchdarkly", "request_timeout_ms", "1000")
        .set("flush", "lease_ttl_ms", "3000")
        .set("flush", "concurrency", "16");
    let mut fleet = fleet.start(1).await;
    let prefix = fleet.cfg.prefix.clone();
    let client = fleet.redis.client();
    let cohorts: Vec<String> = (0..8).map(|i| format!("h{i}")).collect();
    let seed = users("seed", 1);
    for (i, c) in cohorts.iter().enumerate() {
        let (s, b) = fleet
            .amplitude(0, c, true, 1_000, &format!("{c}-seed-{i}"), &seed)
            .await;
        assert_eq!(s, 200, "{b}");
    }
    for c in &cohorts {
        eventually("the seed reaches LaunchDarkly", WAIT_LONG, || async {
            (included(&fleet.emu, c).await == Some(set(&seed))).then_some(())
        })
        .await;
    }
    // A long 429 pause: every writer of the deployment holds off.
    fleet
        .emu
        .fault(json!({"kind": "rate_limited", "reset_in_ms": 8000, "route": "contexts"}))
        .await;
    let trigger = users("trigger", 1);
    let (s, b) = fleet
        .amplitude(0, "h0", true, 2_000, "h0-t", &trigger)
        .await;
    assert_eq!(s, 200, "{b}");
    eventually("the 429 was served", WAIT_LONG, || async {
        let reqs = fleet.emu.membership_requests().await;
        reqs.iter().any(|r| r["status"] == json!(429)).then_some(())
    })
    .await;
    // Adds claimed by bridge 0, held in the pause.
    let s_members = users("s", 20);
    for c in &cohorts[1..] {
        let (s, b) = fleet
            .amplitude(0, c, true, 3_000, &format!("{c}-add"), &s_members)
            .await;
        assert_eq!(s, 200, "{b}");
    }
    // A flush takes its token before it claims: bridge 0's flushes of the
    // adds wait in the pause once their links are due.
    eventually(
        "every add is due, its flush waiting in the pause",
        WAIT_LONG,
        || async {
            let mut c = client.get_multiplexed_async_connection().await.ok()?;
            let keys: Vec<String> = ::redis::cmd("KEYS")
                .arg(format!("*{prefix}*:due"))
                .query_async(&mut c)
                .await
                .ok()?;
            let now = cohort_bridge::clock::now_ms();
            let mut held = 0;
            for k in keys {
                let v: Vec<(String, i64)> = ::redis::cmd("ZRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(&mut c)
                    .await
                    .ok()?;
                held += v.iter().filter(|(_, at)| *at <= now).count();
            }
            (held >= cohorts.len() - 1).then_some(())
        },
    )
    .await;
    // Bridge 1 joins while the requests wait; the adds flip back through it.
    fleet.add().await;
    eventually("bridge 1 holds partitions", WAIT_LONG, || async {
        let holders: BTreeSet<String> = fleet.lease_holders().await.into_iter().collect();
        (holders.len() >= 2).then_some(())
    })
    .await;
    for c in &cohorts[1..] {
        let (s, b) = fleet
            .amplitude(1, c, false, 4_000, &format!("{c}-remove"), &s_members)
            .await;
        assert_eq!(s, 200, "{b}");
    }
    // Bridge 0 leaves once its flushes are over; bridge 1 finishes the rest.
    eventually("everything was flushed once", WAIT_LONG, || async {
        (dirty_backlog(&client, &prefix).await == Some(0)).then_some(())
    })
    .await;
    fleet.bridges[0].sigterm();
    fleet.bridges[0].wait_exit(WAIT_LONG).await;
    let mut want_h0 = set(&seed);
    want_h0.extend(trigger.iter().cloned());
    eventually("LaunchDarkly equals the model", WAIT_LONG, || async {
        if dirty_backlog(&client, &prefix).await != Some(0) {
            return None;
        }
        for (i, c) in cohorts.iter().enumerate() {
            let want = if i == 0 { want_h0.clone() } else { set(&seed) };
            if included(&fleet.emu, c).await != Some(want) {
                return None;
            }
        }
        Some(())
    })
    .await;
    // And it stays so: every request has ended.
    for (i, c) in cohorts.iter().enumerate().skip(1) {
        assert_eq!(
            included(&fleet.emu, c).await,
            Some(set(&seed)),
            "cohort {i}:\n{}",
            fleet.logs()
        );
    }
}

/// Item 4: a 400 for the request itself (a message naming no key) blocks
/// the link with LaunchDarkly's message: no split, nothing dead-lettered,
/// and once LaunchDarkly accepts again every member is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_level_400_blocks_the_link_instead_of_dead_lettering_it() {
    let (_redis, emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    let first = users("a", 4);
    push(&bridge, "bl", true, 1_000, &first).await;
    eventually("the segment exists", WAIT_LONG, || async {
        (included(&emu, "bl").await == Some(set(&first))).then_some(())
    })
    .await;
    emu.fault(
        json!({"kind": "status", "status": 400, "route": "contexts", "count": 1000,
        "message": "this operation only supports big segments"}),
    )
    .await;
    let more = users("b", 64);
    push(&bridge, "bl", true, 2_000, &more).await;
    eventually(
        "the refusal was retried after the block",
        WAIT_LONG,
        || async {
            let refused = emu
                .membership_requests()
                .await
                .into_iter()
                .filter(|r| r["status"] == json!(400))
                .count();
            (refused >= 3).then_some(())
        },
    )
    .await;
    emu.clear_faults().await;
    let refused: Vec<Value> = emu
        .membership_requests()
        .await
        .into_iter()
        .filter(|r| r["status"] == json!(400))
        .collect();
    for r in &refused {
        assert_eq!(keys_of(r), 64, "a body-level refusal was split: {r}");
    }
    let mut want = set(&first);
    want.extend(more.iter().cloned());
    eventually("every member reaches LaunchDarkly", WAIT_LONG, || async {
        (included(&emu, "bl").await == Some(want.clone())).then_some(())
    })
    .await;
    bridge.stop().await;
}

/// Item 4: one poison key in n costs O(log n) extra requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_poison_key_costs_logarithmic_requests() {
    let (_redis, emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    let n = 256usize;
    let members = users("p", n);
    emu.configure(json!({"reject_keys": ["p77"]})).await;
    push(&bridge, "po", true, 1_000, &members).await;
    let want: BTreeSet<String> = members.iter().filter(|m| *m != "p77").cloned().collect();
    eventually(
        "every other key reaches LaunchDarkly",
        WAIT_LONG,
        || async { (included(&emu, "po").await == Some(want.clone())).then_some(()) },
    )
    .await;
    let sent = emu.membership_requests().await.len();
    let c = 3usize;
    let bound = c * (n as f64).log2() as usize + c;
    assert!(
        sent <= bound,
        "{sent} requests for one poison key in {n} (bound {bound})"
    );
    bridge.stop().await;
}

/// Item 4: SIGTERM stops a split at its next request (it used to run on
/// until the grace period ran out and the process was killed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_a_split_at_the_next_request() {
    let mut fleet = Fleet::new();
    fleet.cfg.set("server", "shutdown_grace_seconds", "30");
    let mut fleet = fleet.start(1).await;
    let members = users("k", 64);
    // Every key is refused (each refusal names its key): a long split.
    fleet.emu.configure(json!({ "reject_keys": members })).await;
    fleet
        .emu
        .fault(json!({"kind": "latency", "ms": 150, "route": "contexts", "count": 10000}))
        .await;
    let (s, b) = fleet
        .amplitude(0, "sp", true, 1_000, "sp-1", &members)
        .await;
    assert_eq!(s, 200, "{b}");
    eventually("the split is under way", WAIT_LONG, || async {
        (fleet.emu.membership_requests().await.len() >= 3).then_some(())
    })
    .await;
    fleet.bridges[0].sigterm();
    let before = fleet.emu.membership_requests().await.len();
    fleet.bridges[0].wait_exit(WAIT_LONG).await;
    let after = fleet.emu.membership_requests().await.len();
    assert!(
        after <= before + 1,
        "{} requests after SIGTERM:\n{}",
        after - before,
        fleet.logs()
    );
}

/// Item 1: a claim that draws only members gone from the cohort sends
/// nothing (an empty batch refused with a 400 used to panic at `keys[0]`,
/// and a panicking flush cleared every link's in-flight mark).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_of_vanished_members_sends_nothing_and_does_not_panic() {
    let (redis, emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    let first = users("e", 2);
    push(&bridge, "eb", true, 1_000, &first).await;
    eventually("the segment exists", WAIT_LONG, || async {
        (included(&emu, "eb").await == Some(set(&first))).then_some(())
    })
    .await;
    let mut c = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let want: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{{{}:*}}:want:amplitude:eb", cfg.prefix))
        .query_async(&mut c)
        .await
        .expect("keys");
    let tag = want[0].split(":want:").next().expect("tag").to_string();
    let link = "production:amplitude:eb";
    emu.fault(json!({"kind": "status", "status": 400, "route": "contexts",
        "message": "the request has no changes"}))
        .await;
    let _: () = ::redis::pipe()
        .cmd("SADD")
        .arg(format!("{tag}:dirty:{link}"))
        .arg("ghost")
        .ignore()
        .cmd("ZADD")
        .arg(format!("{tag}:due"))
        .arg(0)
        .arg(link)
        .ignore()
        .query_async(&mut c)
        .await
        .expect("inject a vanished member");
    eventually("the vanished member was dropped", WAIT_LONG, || async {
        let n: i64 = ::redis::cmd("SCARD")
            .arg(format!("{tag}:dirty:{link}"))
            .query_async(&mut c.clone())
            .await
            .ok()?;
        (n == 0).then_some(())
    })
    .await;
    emu.clear_faults().await;
    let next = users("f", 3);
    push(&bridge, "eb", true, 2_000, &next).await;
    let mut all = set(&first);
    all.extend(next.iter().cloned());
    eventually(
        "the next change reaches LaunchDarkly",
        WAIT_LONG,
        || async { (included(&emu, "eb").await == Some(all.clone())).then_some(()) },
    )
    .await;
    let empty: Vec<Value> = emu
        .membership_requests()
        .await
        .into_iter()
        .filter(|r| keys_of(r) == 0)
        .collect();
    assert!(empty.is_empty(), "empty requests sent: {empty:?}");
    bridge.stop().await;
}

/// Item 7: lease renewal goes on while a long sweep runs (it used to wait
/// for the sweep, in the same loop, and a big enough cohort stopped all
/// flushing once the leases ran out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_renewed_while_a_long_sweep_runs() {
    let mut fleet = Fleet::new();
    fleet
        .cfg
        .set("launchdarkly", "request_timeout_ms", "400")
        .set("flush", "lease_ttl_ms", "2400")
        .set("flush", "sweep_interval_seconds", "1");
    let fleet = fleet.start(1).await;
    let seed = users("big", 1);
    let (s, b) = fleet.amplitude(0, "big", true, 1_000, "big-1", &seed).await;
    assert_eq!(s, 200, "{b}");
    eventually("the segment exists", WAIT_LONG, || async {
        (included(&fleet.emu, "big").await == Some(set(&seed))).then_some(())
    })
    .await;
    // A large cohort, written straight into Redis: a copy of the member's
    // entry under three million names (the sweep scans them all, removes
    // none), so that the sweep outlasts several lease periods even on a quiet,
    // fast machine (with one million it could end within one).
    let mut c = fleet
        .redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    // Writing 10,000 fields at a time while the bridge's scripts run can take
    // longer than the client's default response timeout on a busy machine.
    c.set_response_timeout(WAIT);
    let want: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{{{}:*}}:want:amplitude:big", fleet.cfg.prefix))
        .query_async(&mut c)
        .await
        .expect("keys");
    let want = want[0].clone();
    let tag = want.split(":want:").next().expect("tag").to_string();
    let value: String = ::redis::cmd("HGET")
        .arg(&want)
        .arg("big0")
        .query_async(&mut c)
        .await
        .expect("member");
    for chunk in 0..300 {
        let mut cmd = ::redis::cmd("HSET");
        cmd.arg(&want);
        for i in 0..10_000 {
            cmd.arg(format!("x{chunk}-{i}")).arg(&value);
        }
        let _: i64 = cmd.query_async(&mut c).await.expect("hset");
    }
    let count = |what: &str| fleet.bridges[0].logs().matches(what).count();
    let started = count("Sweep started.");
    eventually("a sweep of the large cohort starts", WAIT_LONG, || async {
        (count("Sweep started.") > started).then_some(())
    })
    .await;
    // The sweep under way is number `sweeping`; it must not be over yet when
    // the lease is seen renewed.
    let sweeping = count("Sweep started.");
    let pttl = |c: ::redis::aio::MultiplexedConnection| {
        let key = format!("{tag}:lease");
        async move {
            let mut c = c;
            ::redis::cmd("PTTL")
                .arg(key)
                .query_async::<i64>(&mut c)
                .await
                .unwrap_or(-1)
        }
    };
    let mut last = pttl(c.clone()).await;
    eventually("the lease is renewed", WAIT_LONG, || {
        let c = c.clone();
        let prev = last;
        let fut = pttl(c);
        async move {
            let now = fut.await;
            (now > prev).then_some(now)
        }
    })
    .await;
    last = pttl(c.clone()).await;
    let finished = count("Sweep finished.");
    assert!(
        finished < sweeping,
        "the lease was renewed only after sweep {sweeping} ended ({finished} finished, pttl {last})"
    );
}
