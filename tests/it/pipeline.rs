//! End to end: pushes through HTTP, Redis, the flusher and real HTTP into the
//! LaunchDarkly emulator, including coalescing, ordering and LaunchDarkly faults.

use crate::support::bridge::{amplitude_body, heap_body};
use crate::support::{
    converge, eventually, stack, Bridge, Emulator, RedisServer, TestConfig, WAIT,
};
use serde_json::{json, Value};

/// Waits until a segment's members equal `want`.
/// Every key that appeared in any membership request.
fn keys_sent(reqs: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for r in reqs {
        for list in ["add", "remove"] {
            if let Some(a) = r["body"]["included"][list].as_array() {
                out.extend(a.iter().filter_map(|k| k.as_str().map(String::from)));
            }
        }
    }
    out
}

#[tokio::test]
async fn a_cohort_fans_out_to_every_destination_with_a_created_big_segment() {
    let (_redis, emu, mut cfg) = stack();
    cfg.amplitude_destinations = r#"["production", "staging"]"#.into();
    let bridge = Bridge::start(&cfg).await;
    let (status, resp) = bridge
        .amplitude(&amplitude_body(
            "8k2n1",
            true,
            1_767_225_600,
            "m1::enter::0",
            &["u1", "u2"],
        ))
        .await;
    assert_eq!(status, 200, "{resp}");
    converge(&emu, "production", "amplitude-8k2n1", &["u1", "u2"]).await;
    converge(&emu, "staging", "amplitude-8k2n1", &["u1", "u2"]).await;
    let seg = emu
        .segment("default", "production", "amplitude-8k2n1")
        .await
        .unwrap();
    assert_eq!(seg["unbounded"], true);
    assert_eq!(seg["unboundedContextKind"], "user");
    assert_eq!(seg["name"], "Cohort 8k2n1");
    let tags: Vec<&str> = seg["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(
        tags.contains(&"cohort-bridge") && tags.contains(&"source-amplitude"),
        "{tags:?}"
    );
    // Every request carried the raw token and the API version.
    for r in emu.requests().await {
        assert_eq!(r["authorization_ok"], true, "{r}");
        assert_eq!(r["ld_api_version"], "20240415", "{r}");
    }
    bridge.stop().await;
}

#[tokio::test]
async fn a_flip_back_before_the_flush_never_reaches_launchdarkly() {
    let (_redis, emu, mut cfg) = stack();
    // No time-based flush during the test: only a full batch (3 keys) makes a link due.
    cfg.set("flush", "max_delay_ms", "600000")
        .set("launchdarkly", "max_keys_per_request", "3");
    let bridge = Bridge::start(&cfg).await;
    let (_, r1) = bridge
        .amplitude(&amplitude_body("c", true, 100, "m1", &["flipper"]))
        .await;
    let (_, r2) = bridge
        .amplitude(&amplitude_body("c", false, 200, "m2", &["flipper"]))
        .await;
    assert_eq!(
        (
            r1["accepted"].clone(),
            r2["cancelled"].clone(),
            r2["superseded"].clone()
        ),
        (json!(1), json!(1), json!(1))
    );
    let (_, r3) = bridge
        .amplitude(&amplitude_body("c", true, 300, "m3", &["a", "b", "c"]))
        .await;
    assert_eq!(r3["accepted"], 3);
    converge(&emu, "production", "amplitude-c", &["a", "b", "c"]).await;
    let sent = keys_sent(&emu.membership_requests().await);
    assert!(
        !sent.contains(&"flipper".to_string()),
        "flipper reached LaunchDarkly: {sent:?}"
    );
    assert_eq!(emu.membership_requests().await.len(), 1);
    bridge.stop().await;
}

#[tokio::test]
async fn twenty_five_hundred_adds_take_three_membership_requests() {
    let (_redis, emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    let users: Vec<String> = (0..2500).map(|i| format!("user-{i:05}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let (status, resp) = bridge
        .amplitude(&amplitude_body(
            "big",
            true,
            1_767_225_600,
            "big::enter::0",
            &refs,
        ))
        .await;
    assert_eq!((status, resp["accepted"].clone()), (200, json!(2500)));
    converge(&emu, "production", "amplitude-big", &refs).await;
    let reqs = emu.membership_requests().await;
    assert_eq!(reqs.len(), 3, "membership requests: {}", reqs.len());
    let creates = emu
        .requests()
        .await
        .into_iter()
        .filter(|r| r["route"] == "create")
        .count();
    assert_eq!(creates, 1);
    bridge.stop().await;
}

#[tokio::test]
async fn older_changes_lose_and_duplicate_deliveries_apply_once() {
    let (_redis, emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    let enter_old = amplitude_body("ord", true, 1_000, "e1::enter::0", &["u1", "u2"]);
    let exit_new = amplitude_body("ord", false, 2_000, "x1::exit::0", &["u1"]);
    // The newer exit arrives first, then the older enter: u1 stays out.
    let (_, r) = bridge.amplitude(&exit_new).await;
    assert_eq!(r["accepted"], 1);
    let (_, r) = bridge.amplitude(&enter_old).await;
    assert_eq!(
        (r["stale"].clone(), r["accepted"].clone()),
        (json!(1), json!(1)),
        "{r}"
    );
    converge(&emu, "production", "amplitude-ord", &["u2"]).await;

    // A retried delivery (same message_id) is applied once, even after a newer change.
    let (_, r) = bridge
        .amplitude(&amplitude_body("ord", false, 3_000, "x2::exit::0", &["u2"]))
        .await;
    assert_eq!(r["accepted"], 1);
    let (_, dup) = bridge.amplitude(&enter_old).await;
    assert_eq!(dup["duplicate"], true, "{dup}");
    // And an older change after the newer one was flushed is still stale.
    converge(&emu, "production", "amplitude-ord", &[]).await;
    let (_, r) = bridge
        .amplitude(&amplitude_body("ord", true, 2_500, "e3::enter::0", &["u2"]))
        .await;
    assert_eq!(r["stale"], 1, "{r}");
    // Heap: the same (sync_task_id, page) twice is one delivery.
    let body = heap_body(9, "task-9", 1, 1, &["h1@x.com"], &[]);
    assert_eq!(bridge.heap(&body).await.1["duplicate"], false);
    assert_eq!(bridge.heap(&body).await.1["duplicate"], true);
    converge(&emu, "production", "heap-9", &["h1@x.com"]).await;
    converge(&emu, "production", "amplitude-ord", &[]).await;
    bridge.stop().await;
}

#[tokio::test]
async fn a_429_holds_every_write_until_its_reset() {
    let (_redis, emu, mut cfg) = stack();
    cfg.amplitude_destinations = r#"["production", "staging"]"#.into();
    let bridge = Bridge::start(&cfg).await;
    emu.fault(json!({"kind": "rate_limited", "reset_in_ms": 1500, "route": "any"}))
        .await;
    bridge
        .amplitude(&amplitude_body("rl", true, 1, "rl1", &["u1", "u2"]))
        .await;
    converge(&emu, "production", "amplitude-rl", &["u1", "u2"]).await;
    converge(&emu, "staging", "amplitude-rl", &["u1", "u2"]).await;
    let reqs = emu.requests().await;
    let limited = reqs
        .iter()
        .find(|r| r["status"] == 429)
        .expect("the fault was served");
    let reset = limited["received_ms"].as_u64().unwrap() + 1500;
    for r in reqs
        .iter()
        .filter(|r| r["seq"].as_u64() > limited["seq"].as_u64())
    {
        assert!(
            r["received_ms"].as_u64().unwrap() >= reset,
            "request before the reset: {r}"
        );
    }
    assert_eq!(emu.stats().await["violations"]["early_after_429"], 0);
    bridge.stop().await;
}

#[tokio::test]
async fn server_errors_are_retried_until_written() {
    let (_redis, emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    emu.fault(json!({"kind": "status", "status": 500, "count": 2, "route": "contexts"}))
        .await;
    emu.fault(json!({"kind": "status", "status": 503, "count": 1, "route": "create"}))
        .await;
    bridge
        .heap(&heap_body(5, "t5", 1, 1, &["a@x.com", "b@x.com"], &[]))
        .await;
    converge(&emu, "production", "heap-5", &["a@x.com", "b@x.com"]).await;
    let statuses: Vec<Value> = emu
        .requests()
        .await
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        vec![json!(503), json!(201), json!(500), json!(500), json!(204)]
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_403_blocks_the_link_keeps_its_data_and_it_flushes_once_accepted() {
    let (redis, emu, mut cfg) = stack();
    cfg.set("launchdarkly", "blocked_retry_ms", "1500");
    let bridge = Bridge::start(&cfg).await;
    emu.fault(json!({"kind": "status", "status": 403, "count": 1, "route": "contexts"}))
        .await;
    bridge
        .amplitude(&amplitude_body("blk", true, 1, "b1", &["u1"]))
        .await;
    // The link reports why it is blocked, and the member is kept (dirty) meanwhile.
    let client = redis.client();
    let blocked = eventually("the link is reported blocked", WAIT, || {
        let client = client.clone();
        let prefix = cfg.prefix.clone();
        async move {
            let mut c = client.get_multiplexed_async_connection().await.ok()?;
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{{{prefix}:*}}:link:*"))
                .query_async(&mut c)
                .await
                .ok()?;
            let meta: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
                .arg(keys.first()?)
                .query_async(&mut c)
                .await
                .ok()?;
            meta.get("blocked").filter(|b| !b.is_empty()).cloned()
        }
    })
    .await;
    assert!(blocked.starts_with("403"), "{blocked}");
    assert_eq!(
        emu.members("default", "production", "amplitude-blk").await,
        Some(vec![])
    );
    // A new push does not cut the blocked link's wait short.
    bridge
        .amplitude(&amplitude_body("blk", true, 2, "b2", &["u2"]))
        .await;
    converge(&emu, "production", "amplitude-blk", &["u1", "u2"]).await;
    let reqs = emu.membership_requests().await;
    let forbidden = reqs.iter().find(|r| r["status"] == 403).unwrap()["completed_ms"]
        .as_u64()
        .unwrap();
    let next = reqs.iter().find(|r| r["status"] == 204).unwrap()["received_ms"]
        .as_u64()
        .unwrap();
    assert!(
        next >= forbidden + 1500,
        "retried {} ms after the 403, before blocked_retry_ms",
        next - forbidden
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_timed_out_write_then_a_flip_back_ends_with_the_flip_back() {
    let (_redis, emu, mut cfg) = stack();
    cfg.set("launchdarkly", "request_timeout_ms", "1000");
    let bridge = Bridge::start(&cfg).await;
    // The add hangs past the client's timeout, then LaunchDarkly applies it anyway.
    emu.fault(json!({"kind": "hang", "ms": 1400, "then": "apply", "route": "contexts"}))
        .await;
    bridge
        .amplitude(&amplitude_body("to", true, 100, "to1", &["u1"]))
        .await;
    eventually("the add is in flight", WAIT, || async {
        (!emu.membership_requests().await.is_empty()).then_some(())
    })
    .await;
    // The member flips back while the outcome of the add is unknown.
    let (_, r) = bridge
        .amplitude(&amplitude_body("to", false, 200, "to2", &["u1"]))
        .await;
    assert_eq!(r["accepted"], 1, "{r}");
    eventually(
        "the hung add was applied and a later remove followed",
        WAIT,
        || async {
            let reqs = emu.membership_requests().await;
            let add = reqs.iter().position(|r| {
                r["applied"] == true && r["body"]["included"]["add"] == json!(["u1"])
            })?;
            reqs[add + 1..]
                .iter()
                .any(|r| r["status"] == 204 && r["body"]["included"]["remove"] == json!(["u1"]))
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        emu.members("default", "production", "amplitude-to").await,
        Some(vec![])
    );
    bridge.stop().await;
}

#[tokio::test]
async fn launchdarkly_never_sees_more_than_the_configured_rate_retries_included() {
    let redis = RedisServer::start();
    let emu = Emulator::start();
    emu.configure(json!({"max_rps": 5.0})).await;
    let mut cfg = TestConfig::new(&redis.url(), &emu.base);
    cfg.set("launchdarkly", "requests_per_second", "5.0")
        .set("launchdarkly", "max_keys_per_request", "2")
        .set("flush", "concurrency", "8");
    let bridge = Bridge::start(&cfg).await;
    // Retries take tokens too.
    emu.fault(json!({"kind": "status", "status": 502, "count": 3, "route": "contexts"}))
        .await;
    for c in 0..4 {
        let users: Vec<String> = (0..4).map(|i| format!("c{c}-u{i}")).collect();
        let refs: Vec<&str> = users.iter().map(String::as_str).collect();
        bridge
            .amplitude(&amplitude_body(
                &format!("rate{c}"),
                true,
                1,
                &format!("r{c}"),
                &refs,
            ))
            .await;
    }
    for c in 0..4 {
        let users: Vec<String> = (0..4).map(|i| format!("c{c}-u{i}")).collect();
        let refs: Vec<&str> = users.iter().map(String::as_str).collect();
        converge(&emu, "production", &format!("amplitude-rate{c}"), &refs).await;
    }
    let stats = emu.stats().await;
    // 4 creates + 8 writes + 3 retried failures, at 5/s with no burst.
    assert!(stats["requests"].as_u64().unwrap() >= 15, "{stats}");
    assert_eq!(stats["violations"]["rate_exceeded"], 0, "{stats}");
    assert!(
        stats["max_requests_in_1s"].as_u64().unwrap() <= 6,
        "{stats}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_connection_dropped_mid_request_is_retried_with_the_current_state() {
    let (_redis, emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    // LaunchDarkly applies the write, then the connection drops: the bridge cannot know.
    emu.fault(json!({"kind": "reset_connection", "then": "apply", "route": "contexts"}))
        .await;
    bridge
        .amplitude(&amplitude_body("rst", true, 1, "rst1", &["u1", "u2"]))
        .await;
    converge(&emu, "production", "amplitude-rst", &["u1", "u2"]).await;
    eventually(
        "the write is re-sent after the dropped connection",
        WAIT,
        || async {
            let statuses: Vec<Value> = emu
                .membership_requests()
                .await
                .iter()
                .map(|r| r["status"].clone())
                .collect();
            (statuses == vec![Value::Null, json!(204)]).then_some(())
        },
    )
    .await;
    bridge.stop().await;
}

#[tokio::test]
async fn a_rejected_batch_is_split_and_only_the_rejected_key_is_dead_lettered() {
    let (redis, emu, mut cfg) = stack();
    // Lease upkeep (which refreshes the backlog gauge) every second.
    cfg.set("flush", "lease_ttl_ms", "4000");
    let bridge = Bridge::start(&cfg).await;
    // The batch of two is rejected naming the bad key (a refusal naming no
    // key blocks the link instead), then the half holding it alone.
    emu.configure(json!({"reject_keys": ["bad"]})).await;
    bridge
        .amplitude(&amplitude_body("poison", true, 1, "p1", &["good", "bad"]))
        .await;
    let written = eventually("one key is written", WAIT, || async {
        emu.members("default", "production", "amplitude-poison")
            .await
            .filter(|m| m.len() == 1)
    })
    .await;
    let mut c = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Either half may go first: wait for the dead letter too.
    let dead_keys: Vec<String> = eventually("the bad key is dead-lettered", WAIT, || {
        let mut c = c.clone();
        let pattern = format!("{{{}:*}}:dead:*", cfg.prefix);
        async move {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut c)
                .await
                .ok()?;
            (!keys.is_empty()).then_some(keys)
        }
    })
    .await;
    assert_eq!(dead_keys.len(), 1, "{dead_keys:?}");
    let dead: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&dead_keys[0])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (key, reason) = dead.iter().next().unwrap();
    assert!(
        !written.contains(key),
        "the dead-lettered key was also written"
    );
    assert!(reason.contains("Invalid context key"), "{reason}");
    let mut statuses: Vec<u64> = emu
        .membership_requests()
        .await
        .iter()
        .filter_map(|r| r["status"].as_u64())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, vec![204, 400, 400]);
    // Nothing stays dirty: the link is settled.
    // The gauge is refreshed every few seconds: wait for it to reach zero.
    eventually("the backlog gauge reaches zero", WAIT, || async {
        let (_, m) = bridge.get("/metrics").await;
        m.lines()
            .any(|l| l == "cohort_bridge_dirty_backlog 0")
            .then_some(())
    })
    .await;
    let (_, metrics) = bridge.get("/metrics").await;
    assert!(metrics.contains("outcome=\"dead_lettered\""), "{metrics}");
    bridge.stop().await;
}
