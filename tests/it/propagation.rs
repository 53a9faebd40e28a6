//! Propagation under steady load (issue 14 §1): what a flush does while
//! changes keep arriving for its link.
//!
//! - A flush takes its LaunchDarkly token before it claims its batch, so the
//!   batch carries every change that came while it queued for the rate.
//! - While a link's flush is in flight, the flusher sleeps until the next
//!   link it can start; it does not spin on the in-flight one, even when that
//!   one's due time has passed (a push came during its request).

use crate::support::bridge::{amplitude_body, AMPLITUDE_SECRET};
use crate::support::{converge, eventually, stack, Bridge, BridgeProcess, RedisServer, WAIT};
use serde_json::{json, Value};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

async fn push(http: &reqwest::Client, base: &str, body: &Value) -> u16 {
    http.post(format!("{base}/v1/webhooks/amplitude"))
        .header("X-Cohort-Bridge-Token", AMPLITUDE_SECRET)
        .json(body)
        .send()
        .await
        .expect("bridge reachable")
        .status()
        .as_u16()
}

async fn redis_conn(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection")
}

/// The highest sequence number in the emulator's request log.
async fn last_seq(emu: &crate::support::Emulator) -> u64 {
    emu.requests()
        .await
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Keys added by each membership request logged after `since`, in order.
async fn adds_since(emu: &crate::support::Emulator, since: u64) -> Vec<Vec<String>> {
    emu.requests_since(since)
        .await
        .iter()
        .filter(|r| r["route"] == json!("contexts"))
        .map(|r| {
            let mut keys: Vec<String> = r["body"]["included"]["add"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect();
            keys.sort();
            keys
        })
        .collect()
}

const WAITING: &str = "Waiting for a LaunchDarkly token.";

#[tokio::test]
async fn a_batch_is_claimed_after_its_token_so_it_carries_the_changes_that_came_meanwhile() {
    let (redis, emu, mut cfg) = stack();
    let bridge =
        BridgeProcess::start_logging(&mut cfg, "info,cohort_bridge::flush::phases=debug").await;
    let (http, base) = (bridge.http.clone(), bridge.base.clone());
    let body = |v: i64, id: &str, users: &[&str]| amplitude_body("tok", true, v, id, users);
    assert_eq!(push(&http, &base, &body(100, "t0", &["a0"])).await, 200);
    // The segment exists: the flush under test is a plain membership write.
    converge(&emu, "production", "amplitude-tok", &["a0"]).await;

    // Every writer holds off (as after a 429 seen by another replica): the
    // next flush of the link waits for its token.
    let pause = 5_000;
    let mut c = redis_conn(&redis).await;
    let _: () = redis::cmd("SET")
        .arg(format!("{}:ld:pause_until", cfg.prefix))
        .arg(now_ms() + pause)
        .query_async(&mut c)
        .await
        .expect("SET the shared pause");
    let since = last_seq(&emu).await;
    let waiting = |logs: String| logs.matches(WAITING).count();
    let before = waiting(bridge.logs());
    assert_eq!(push(&http, &base, &body(200, "t1", &["a1"])).await, 200);
    eventually("the link's flush waits for its token", WAIT, || {
        let n = waiting(bridge.logs());
        async move { (n > before).then_some(()) }
    })
    .await;
    // This change comes while the flush waits: it is in the batch sent.
    assert_eq!(push(&http, &base, &body(300, "t2", &["a2"])).await, 200);
    converge(&emu, "production", "amplitude-tok", &["a0", "a1", "a2"]).await;
    let adds = adds_since(&emu, since).await;
    assert_eq!(
        adds.first().cloned(),
        Some(vec!["a1".to_string(), "a2".to_string()]),
        "the first request after the wait carries both changes (requests: {adds:?})"
    );
    assert_eq!(adds.len(), 1, "one request for both: {adds:?}");
}

/// `cmdstat_zrange` calls so far (each pass of the flusher's loop reads the
/// due set of every partition with `ZRANGE`, twice).
async fn zrange_calls(redis: &RedisServer) -> u64 {
    let mut c = redis_conn(redis).await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_zrange:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_flusher_sleeps_while_an_overdue_link_is_in_flight() {
    let (redis, emu, mut cfg) = stack();
    // The loop wakes for due times, finished flushes, full batches and its
    // poll (once a second here).
    cfg.set("flush", "poll_interval_ms", "1000")
        .set("flush", "max_delay_ms", "50");
    let bridge = Bridge::start(&cfg).await;
    let body = |v: i64, id: &str, users: &[&str]| amplitude_body("spin", true, v, id, users);
    let (status, _) = bridge.amplitude(&body(100, "s0", &["b0"])).await;
    assert_eq!(status, 200);
    converge(&emu, "production", "amplitude-spin", &["b0"]).await;

    // The next write is held by LaunchDarkly for a while.
    let since = last_seq(&emu).await;
    emu.fault(json!({"kind": "latency", "ms": 3000, "route": "contexts", "count": 1}))
        .await;
    let (status, _) = bridge.amplitude(&body(200, "s1", &["b1"])).await;
    assert_eq!(status, 200);
    let in_flight = || async {
        emu.requests_since(since).await.iter().any(|r| {
            r["route"] == json!("contexts")
                && r["fault"] == json!("latency")
                && r["completed_ms"].is_null()
        })
    };
    eventually("the write is in flight", WAIT, || async {
        in_flight().await.then_some(())
    })
    .await;
    // A push during the request makes the link due again 50 ms later,
    // while its flush is still in flight.
    let (status, _) = bridge.amplitude(&body(300, "s2", &["b2"])).await;
    assert_eq!(status, 200);
    let calls_before = zrange_calls(&redis).await;
    eventually("the held write is answered", WAIT, || async {
        (!in_flight().await).then_some(())
    })
    .await;
    let calls = zrange_calls(&redis).await - calls_before;
    converge(&emu, "production", "amplitude-spin", &["b0", "b1", "b2"]).await;
    // The held request lasts about 3 s: a loop that spins on the overdue
    // in-flight link reads the 4 due sets thousands of times meanwhile; one
    // that sleeps reads them a few times (the lease and gauge tasks read
    // other sorted sets now and then).
    assert!(
        calls < 100,
        "the flusher read due sets {calls} times while one overdue link was in flight"
    );
}

#[tokio::test]
async fn a_link_that_keeps_changing_during_its_flushes_does_not_look_ever_more_behind() {
    let (_redis, emu, mut cfg) = stack();
    let max_delay = 1_000;
    cfg.set("flush", "max_delay_ms", "1000").set(
        "server",
        "operator_token_env",
        "\"OPERATOR_TOKEN\"",
    );
    let bridge = Bridge::start(&cfg).await;
    let body = |v: i64, id: &str, users: &[&str]| amplitude_body("drift", true, v, id, users);
    let (status, _) = bridge.amplitude(&body(100, "d0", &["c0"])).await;
    assert_eq!(status, 200);
    converge(&emu, "production", "amplitude-drift", &["c0"]).await;

    // LaunchDarkly holds the next two writes, so each push below lands while
    // a write of the link is in flight.
    let since = last_seq(&emu).await;
    emu.fault(json!({"kind": "latency", "ms": 1200, "route": "contexts", "count": 2}))
        .await;
    let held = || async {
        emu.requests_since(since)
            .await
            .iter()
            .filter(|r| r["route"] == json!("contexts") && r["fault"] == json!("latency"))
            .map(|r| r["completed_ms"].is_null())
            .collect::<Vec<bool>>()
    };
    let t0 = now_ms();
    let (status, _) = bridge.amplitude(&body(200, "d1", &["c1"])).await;
    assert_eq!(status, 200);
    eventually("the first write is in flight", WAIT, || async {
        (held().await == [true]).then_some(())
    })
    .await;
    // c2 comes while c1's write flies: after c1's ack the link is still
    // dirty, but only with changes accepted after c1's claim, which came at
    // least max_delay after c1 (the link was due then).
    let (status, _) = bridge.amplitude(&body(300, "d2", &["c2"])).await;
    assert_eq!(status, 200);
    eventually(
        "c1 is acknowledged and c2's write is in flight",
        WAIT,
        || async { (held().await == [false, true]).then_some(()) },
    )
    .await;
    let (status, view) = bridge
        .operator(
            reqwest::Method::GET,
            "/links/production:amplitude:drift",
            Some(crate::support::bridge::OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{view}");
    let dirty_since = view["status"]["dirty_since_ms"]
        .as_i64()
        .or_else(|| view["dirty_since_ms"].as_i64())
        .unwrap_or_else(|| panic!("the link is dirty: {view}"));
    assert!(
        dirty_since >= t0 + max_delay,
        "the link's oldest unacknowledged change is c2, accepted after c1's claim (at least {} ms), not c1 itself: dirty since {dirty_since}, c1 pushed at {t0}",
        max_delay
    );
    converge(&emu, "production", "amplitude-drift", &["c0", "c1", "c2"]).await;
}

#[tokio::test]
async fn links_due_together_start_early_enough_for_the_rate_to_serve_them_by_their_due_times() {
    let (_redis, emu, mut cfg) = stack();
    // Ten links due within a few ms of each other, one token per 100 ms:
    // taken at their due time, the last token would come 900 ms late.
    let (rate, max_delay, links) = (10.0, 1_000, 10);
    cfg.set("launchdarkly", "requests_per_second", "10.0")
        .set("flush", "max_delay_ms", "1000")
        .set("flush", "concurrency", "10");
    let period = (1000.0 / rate) as u64;
    let bridge = Bridge::start(&cfg).await;
    let cohort = |i: usize| format!("lead{i}");
    let push_all = |version: i64, member: &'static str| {
        let bridge = &bridge;
        async move {
            let pushes = (0..links).map(|i| async move {
                let body = amplitude_body(
                    &cohort(i),
                    true,
                    version,
                    &format!("{member}{i}"),
                    &[member],
                );
                bridge.amplitude(&body).await.0
            });
            futures_util::future::join_all(pushes).await
        }
    };
    // The segments exist first, so the round below is membership writes only.
    assert!(push_all(100, "m0").await.iter().all(|s| *s == 200));
    for i in 0..links {
        converge(
            &emu,
            "production",
            &format!("amplitude-{}", cohort(i)),
            &["m0"],
        )
        .await;
    }
    let since = last_seq(&emu).await;
    let pushed_from = now_ms();
    assert!(push_all(200, "m1").await.iter().all(|s| *s == 200));
    let pushed_by = now_ms();
    for i in 0..links {
        converge(
            &emu,
            "production",
            &format!("amplitude-{}", cohort(i)),
            &["m0", "m1"],
        )
        .await;
    }
    let mut received: Vec<i64> = emu
        .requests_since(since)
        .await
        .iter()
        .filter(|r| r["route"] == json!("contexts"))
        .filter_map(|r| r["received_ms"].as_i64())
        .collect();
    received.sort();
    assert_eq!(received.len(), links, "one write per link: {received:?}");
    let due_by = pushed_by + max_delay;
    // The writes are spaced by the rate and the last one leaves by the last
    // due time (plus half a period of slack for the loop and the wire),
    // instead of (links - 1) periods after it.
    let last = *received.last().unwrap();
    assert!(
        last <= due_by + (period / 2) as i64,
        "the last write left {} ms after the links were due (pushed {pushed_from}..{pushed_by}); writes at {:?}",
        last - due_by,
        received.iter().map(|r| r - pushed_from).collect::<Vec<_>>()
    );
    // And nothing was flushed for no reason: the first write is no earlier
    // than the rate requires to serve all ten by their due times.
    let first = received[0];
    assert!(
        first >= pushed_from + max_delay - (links as i64 - 1) * period as i64 - (period / 2) as i64,
        "writes at {:?}",
        received.iter().map(|r| r - pushed_from).collect::<Vec<_>>()
    );
}

/// A big first sync's batches follow one another in one flush of its link
/// (no round through the due set per batch), but never ahead of another
/// link: a small cohort's change that becomes due mid-drain is written
/// before the drain's last batch, and the big cohort still arrives whole.
#[tokio::test]
async fn a_small_change_is_written_in_the_middle_of_a_big_drain() {
    let (_redis, emu, mut cfg) = stack();
    // 200 ms a token: the 8 big batches take well over a second.
    cfg.set("launchdarkly", "requests_per_second", "5.0")
        .set("flush", "max_delay_ms", "50");
    let bridge = Bridge::start(&cfg).await;
    let keys: Vec<String> = (0..8000).map(|i| format!("b{i:05}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let (s, v) = bridge
        .amplitude(&amplitude_body("big", true, 1, "big-1", &keys))
        .await;
    assert_eq!(s, 200, "{v}");
    eventually("the big drain's first write", WAIT, || async {
        (!emu.membership_requests().await.is_empty()).then_some(())
    })
    .await;
    let (s, v) = bridge
        .amplitude(&amplitude_body("small", true, 1, "small-1", &["s1"]))
        .await;
    assert_eq!(s, 200, "{v}");
    eventually("both cohorts in LaunchDarkly", WAIT, || async {
        let big = emu.members("default", "production", "amplitude-big").await;
        let small = emu
            .members("default", "production", "amplitude-small")
            .await;
        (big.is_some_and(|m| m.len() == 8000) && small.is_some_and(|m| m == ["s1"])).then_some(())
    })
    .await;
    let writes = emu.membership_requests().await;
    let path_of = |r: &Value| r["path"].as_str().unwrap_or("").to_string();
    let small = writes
        .iter()
        .position(|r| path_of(r).contains("/amplitude-small/"))
        .expect("the small write");
    let last_big = writes
        .iter()
        .rposition(|r| path_of(r).contains("/amplitude-big/"))
        .expect("a big write");
    assert_eq!(
        writes.len(),
        9,
        "8 full batches and one small write: {:?}",
        writes.iter().map(path_of).collect::<Vec<_>>()
    );
    assert!(
        small < last_big,
        "the small write waited for the whole drain: {:?}",
        writes.iter().map(path_of).collect::<Vec<_>>()
    );
}

/// A drain's later batches are claimed while their token is waited for; a
/// rename that arrives mid-drain hands the link back to the loop (the
/// segment is renamed), and the batch claimed meanwhile is neither lost nor
/// sent twice: every member is written exactly once, in full batches.
#[tokio::test]
async fn a_rename_in_the_middle_of_a_drain_hands_the_link_back_and_loses_no_batch() {
    let (_redis, emu, mut cfg) = stack();
    cfg.set("launchdarkly", "requests_per_second", "5.0")
        .set("flush", "max_delay_ms", "50");
    let bridge = Bridge::start(&cfg).await;
    let keys: Vec<String> = (0..6000).map(|i| format!("r{i:05}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let (s, v) = bridge
        .amplitude(&amplitude_body("drain", true, 1, "drain-1", &keys))
        .await;
    assert_eq!(s, 200, "{v}");
    eventually("the drain's second write", WAIT, || async {
        (emu.membership_requests().await.len() >= 2).then_some(())
    })
    .await;
    let mut renamed = amplitude_body("drain", true, 2, "drain-2", &["r99999"]);
    renamed["cohort_name"] = json!("Renamed mid-drain");
    let (s, v) = bridge.amplitude(&renamed).await;
    assert_eq!(s, 200, "{v}");
    eventually("renamed, and every member written", WAIT, || async {
        let members = emu
            .members("default", "production", "amplitude-drain")
            .await;
        let name = emu
            .segment("default", "production", "amplitude-drain")
            .await
            .and_then(|s| s["name"].as_str().map(str::to_string));
        (members.is_some_and(|m| m.len() == 6001) && name.as_deref() == Some("Renamed mid-drain"))
            .then_some(())
    })
    .await;
    let writes = emu.membership_requests().await;
    let sizes: Vec<usize> = writes
        .iter()
        .map(|r| r["body"]["included"]["add"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(
        sizes.iter().sum::<usize>(),
        6001,
        "every member written once: {sizes:?}"
    );
    assert_eq!(
        sizes.len(),
        7,
        "six full batches and the last member: {sizes:?}"
    );
}
