//! What the benchmark-driven optimizations must not change: a cohort whose
//! changes all flipped back costs LaunchDarkly nothing (not even its
//! segment's creation), and member values in the earlier decimal format are
//! still read after the switch to base-36 versions.

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

#[tokio::test]
async fn member_values_in_the_earlier_decimal_format_are_still_read() {
    let (redis, emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    let (_, r) = bridge
        .amplitude(&amplitude_body("legacy", true, 1000, "l1", &["old"]))
        .await;
    assert_eq!(r["accepted"], 1);
    eventually("the member reaches LaunchDarkly", WAIT, || async {
        (emu.members("default", "production", "amplitude-legacy")
            .await
            == Some(vec!["old".to_string()]))
        .then_some(())
    })
    .await;
    // Rewrite the stored value as an earlier release wrote it: decimal ms, '|'.
    let mut c = redis_conn(&redis).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{}:*}}:want:amplitude:legacy", cfg.prefix))
        .query_async(&mut c)
        .await
        .expect("KEYS");
    let key = keys.first().expect("the cohort's want hash");
    let value: String = redis::cmd("HGET")
        .arg(key)
        .arg("old")
        .query_async(&mut c)
        .await
        .expect("HGET");
    let (version, rest) = value.split_once('!').expect("base-36 version");
    assert_eq!(i64::from_str_radix(version, 36), Ok(1_000_000), "{value}");
    let legacy = format!("1000000|{rest}");
    let _: i64 = redis::cmd("HSET")
        .arg(key)
        .arg("old")
        .arg(&legacy)
        .query_async(&mut c)
        .await
        .expect("HSET");
    // An older change is still recognised as stale, a newer one applies.
    let (_, r) = bridge
        .amplitude(&amplitude_body("legacy", false, 999, "l2", &["old"]))
        .await;
    assert_eq!(
        (r["stale"].clone(), r["accepted"].clone()),
        (json!(1), json!(0))
    );
    let (_, r) = bridge
        .amplitude(&amplitude_body("legacy", false, 1001, "l3", &["old"]))
        .await;
    assert_eq!(r["accepted"], 1);
    eventually("the removal reaches LaunchDarkly", WAIT, || async {
        (emu.members("default", "production", "amplitude-legacy")
            .await
            == Some(vec![]))
        .then_some(())
    })
    .await;
    bridge.stop().await;
}
