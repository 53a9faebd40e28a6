//! What the benchmark-driven optimizations must not change: a cohort whose
//! changes all flipped back costs LaunchDarkly nothing (not even its
//! segment's creation).

use crate::support::bridge::amplitude_body;
use crate::support::{eventually, stack, Bridge, RedisServer, WAIT};
use serde_json::json;

async fn redis_conn(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection")
}

/// Every link id still in a due set of the test's prefix.
async fn due_links(redis: &RedisServer, prefix: &str) -> Vec<String> {
    let mut c = redis_conn(redis).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}:*}}:due"))
        .query_async(&mut c)
        .await
        .expect("KEYS");
    let mut out = Vec::new();
    for k in keys {
        let links: Vec<String> = redis::cmd("ZRANGE")
            .arg(&k)
            .arg(0)
            .arg(-1)
            .query_async(&mut c)
            .await
            .expect("ZRANGE");
        out.extend(links);
    }
    out
}

#[tokio::test]
async fn a_cohort_whose_changes_all_flipped_back_gets_no_segment_and_no_request() {
    let (redis, emu, mut cfg) = stack();
    cfg.set("flush", "max_delay_ms", "200");
    let bridge = Bridge::start(&cfg).await;
    let (_, r1) = bridge
        .amplitude(&amplitude_body("flip", true, 100, "f1", &["x", "y"]))
        .await;
    let (_, r2) = bridge
        .amplitude(&amplitude_body("flip", false, 200, "f2", &["x", "y"]))
        .await;
    assert_eq!(
        (r1["accepted"].clone(), r2["cancelled"].clone()),
        (json!(2), json!(2))
    );
    // The flip link was due; wait until the flusher has taken it off.
    eventually("the flipped link leaves the due set", WAIT, || async {
        (!due_links(&redis, &cfg.prefix)
            .await
            .iter()
            .any(|l| l.contains("flip")))
        .then_some(())
    })
    .await;
    // A control cohort pushed afterwards does reach LaunchDarkly.
    bridge
        .amplitude(&amplitude_body("control", true, 300, "c1", &["z"]))
        .await;
    eventually("the control cohort reaches LaunchDarkly", WAIT, || async {
        (emu.members("default", "production", "amplitude-control")
            .await
            == Some(vec!["z".to_string()]))
        .then_some(())
    })
    .await;
    assert_eq!(
        emu.segment("default", "production", "amplitude-flip").await,
        None
    );
    let touching_flip: Vec<_> = emu
        .requests()
        .await
        .into_iter()
        .filter(|r| r.to_string().contains("flip"))
        .collect();
    assert!(touching_flip.is_empty(), "{touching_flip:?}");
    bridge.stop().await;
}
