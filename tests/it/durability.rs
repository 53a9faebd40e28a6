//! What Redis keeps: accepted changes across a Redis crash (AOF), tombstones
//! for late older events, and their removal after the retention window.

use crate::support::bridge::amplitude_body;
use crate::support::{
    converge, eventually, stack, Bridge, Emulator, RedisServer, TestConfig, WAIT,
};

#[tokio::test]
async fn an_acknowledged_push_survives_a_redis_crash_and_still_reaches_launchdarkly() {
    let mut redis = RedisServer::start(); // appendonly yes, appendfsync always
    let emu = Emulator::start();
    let mut cfg = TestConfig::new(&redis.url(), &emu.base);
    cfg.set("flush", "max_delay_ms", "1500");
    let bridge = Bridge::start(&cfg).await;
    let (status, _) = bridge
        .amplitude(&amplitude_body(
            "aof",
            true,
            1,
            "aof1",
            &["durable-1", "durable-2"],
        ))
        .await;
    assert_eq!(status, 200);
    // Crash Redis right after the 2xx, before the flush is due.
    redis.restart();
    assert!(
        redis.want_value(&cfg.prefix, "durable-1").await.is_some(),
        "lost in the crash"
    );
    converge(
        &emu,
        "production",
        "amplitude-aof",
        &["durable-1", "durable-2"],
    )
    .await;
    bridge.stop().await;
}

#[tokio::test]
async fn tombstones_reject_late_older_events_then_are_swept_after_retention() {
    let (redis, emu, mut cfg) = stack();
    cfg.set("redis", "tombstone_retention_seconds", "86400")
        .set("flush", "sweep_interval_seconds", "1")
        .set("flush", "lease_ttl_ms", "4000");
    let bridge = Bridge::start(&cfg).await;
    let now_s = cohort_bridge::clock::now_ms() / 1000;
    bridge
        .amplitude(&amplitude_body(
            "tomb",
            true,
            now_s - 20,
            "t1",
            &["gone", "keeper"],
        ))
        .await;
    bridge
        .amplitude(&amplitude_body("tomb", false, now_s - 10, "t2", &["gone"]))
        .await;
    converge(&emu, "production", "amplitude-tomb", &["keeper"]).await;
    // Within retention the removed member is a tombstone: a late, older enter is stale.
    let (_, late) = bridge
        .amplitude(&amplitude_body("tomb", true, now_s - 15, "t3", &["gone"]))
        .await;
    assert_eq!(late["stale"], 1, "{late}");
    assert!(redis.want_value(&cfg.prefix, "gone").await.is_some());
    bridge.stop().await;

    // The same data under a 1 s retention: the tombstone (version 10 s old) is
    // swept; the member still in the segment is not.
    let mut short = TestConfig::new(&redis.url(), &emu.base);
    short
        .set("redis", "key_prefix", format!("{:?}", cfg.prefix))
        .set("redis", "tombstone_retention_seconds", "1")
        .set("flush", "sweep_interval_seconds", "1")
        .set("flush", "lease_ttl_ms", "4000");
    let bridge = Bridge::start(&short).await;
    eventually("the tombstone is swept", WAIT, || async {
        redis
            .want_value(&cfg.prefix, "gone")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        redis.want_value(&cfg.prefix, "keeper").await.is_some(),
        "a member still in was swept"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn metrics_report_pushes_changes_requests_backlog_and_latency() {
    let (_redis, emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    bridge
        .amplitude(&amplitude_body("met", true, 1, "met1", &["m1", "m2"]))
        .await;
    eventually("written", WAIT, || async {
        (emu.members("default", "production", "amplitude-met")
            .await
            .map(|m| m.len())
            == Some(2))
        .then_some(())
    })
    .await;
    // The emulator applies the write before the bridge acknowledges it: wait for the ack's count.
    let (status, text) = eventually(
        "the written changes and the backlog gauge are exported",
        WAIT,
        || async {
            let (s, t) = bridge.get("/metrics").await;
            (t.contains("cohort_bridge_dirty_backlog") && t.contains("outcome=\"written\""))
                .then_some((s, t))
        },
    )
    .await;
    assert_eq!(status, 200);
    for needle in [
        "cohort_bridge_requests_total{",
        "outcome=\"accepted\"",
        "cohort_bridge_changes_total{",
        "outcome=\"written\"",
        "cohort_bridge_ld_requests_total{",
        "status=\"204\"",
        "status=\"201\"",
        "cohort_bridge_ld_request_seconds_bucket",
        "cohort_bridge_flush_lag_seconds_bucket",
        "cohort_bridge_leases_held",
    ] {
        assert!(
            text.contains(needle),
            "{needle} missing from /metrics:\n{text}"
        );
    }
    bridge.stop().await;
}
