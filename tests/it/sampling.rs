//! Sampled verification (`flush.verify_share`): between reconciles the
//! bridge reads random settled members back from LaunchDarkly; drift planted
//! in the emulator behind its back is found, counted and repaired by the
//! normal flusher, end to end over HTTP with a real Redis.

use crate::support::bridge::{amplitude_body, OPERATOR_TOKEN};
use crate::support::{eventually, stack, Bridge, Emulator, WAIT};
use reqwest::Method;
use serde_json::Value;
use std::collections::BTreeSet;

const PROJECT: &str = "default";
const ENV: &str = "production";

async fn members(emu: &Emulator, segment: &str) -> BTreeSet<String> {
    emu.members(PROJECT, ENV, segment)
        .await
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

async fn link(bridge: &Bridge, link: &str) -> Value {
    let (s, v) = bridge
        .operator(
            Method::GET,
            &format!("/links/{link}"),
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

#[tokio::test]
async fn sampled_verification_finds_and_repairs_a_planted_mismatch() {
    let (_redis, emu, mut cfg) = stack();
    cfg.set("server", "operator_token_env", "\"OPERATOR_TOKEN\"");
    // The whole rate: four members are each read many times a second.
    cfg.set("flush", "verify_share", "1.0");
    let bridge = Bridge::start(&cfg).await;
    let cohort = "sampled";
    let segment = format!("amplitude-{cohort}");
    let id = format!("production:amplitude:{cohort}");
    for (n, is_in, keys) in [
        (1, true, &["u1", "u2", "u3", "u4"][..]),
        (2, false, &["u4"][..]),
    ] {
        let body = amplitude_body(cohort, is_in, n, &format!("{cohort}-{n}"), keys);
        let (s, v) = bridge.amplitude(&body).await;
        assert_eq!(s, 200, "{v}");
    }
    let want = set(&["u1", "u2", "u3"]);
    eventually("LaunchDarkly has u1..u3", WAIT, || async {
        (members(&emu, &segment).await == want).then_some(())
    })
    .await;
    eventually("nothing is dirty", WAIT, || async {
        (link(&bridge, &id).await["dirty"] == 0).then_some(())
    })
    .await;
    let before = link(&bridge, &id).await["verified"].clone();
    let mismatched_before = before["mismatched"].as_u64().unwrap_or(0);

    // Drift: u2 (recorded in) removed, u4 (recorded out) added.
    emu.drift(PROJECT, ENV, &segment, &["u4"], &["u2"]).await;
    assert_eq!(members(&emu, &segment).await, set(&["u1", "u3", "u4"]));

    let report = eventually("the sampler finds both and repairs them", WAIT, || async {
        let r = link(&bridge, &id).await["verified"].clone();
        let found = r["mismatched"].as_u64().unwrap_or(0) >= mismatched_before + 2;
        (found && members(&emu, &segment).await == want).then_some(r)
    })
    .await;
    assert!(report["checked"].as_u64().unwrap() >= 2, "{report}");
    assert!(report["repaired"].as_u64().unwrap() >= 2, "{report}");
    assert!(report["missing"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["extra"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["last_ms"].as_i64().unwrap() > 0, "{report}");

    // The repair went through the normal flusher: LaunchDarkly was written
    // u2 back in and u4 back out.
    let writes = emu.membership_requests().await;
    let sent = |list: &str, key: &str| {
        writes
            .iter()
            .filter(|r| r["body"]["included"][list].to_string().contains(key))
            .count()
    };
    assert!(sent("add", "u2") >= 2, "{writes:?}");
    assert!(sent("remove", "u4") >= 1, "{writes:?}");

    let (_, metrics) = bridge.get("/metrics").await;
    for line in [
        "cohort_bridge_verify_checks_total{result=\"mismatch\"}",
        "cohort_bridge_verify_checks_total{result=\"match\"}",
        "cohort_bridge_drift_members_total{kind=\"missing\"}",
        "cohort_bridge_drift_members_total{kind=\"extra\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    bridge.stop().await;
}

#[tokio::test]
async fn sampled_reads_stay_within_their_share_of_the_rate() {
    let (_redis, emu, mut cfg) = stack();
    // 20 requests/s, a quarter of it for sampling: at most 5 reads a second.
    cfg.set("launchdarkly", "requests_per_second", "20.0");
    cfg.set("flush", "verify_share", "0.25");
    let bridge = Bridge::start(&cfg).await;
    let body = amplitude_body("budget", true, 1, "budget-1", &["a", "b", "c"]);
    let (s, v) = bridge.amplitude(&body).await;
    assert_eq!(s, 200, "{v}");
    let reads = eventually("the sampler has read 15 times", WAIT, || async {
        let r: Vec<u64> = emu
            .requests()
            .await
            .into_iter()
            .filter(|r| r["route"] == "get_context")
            .filter_map(|r| r["received_ms"].as_u64())
            .collect();
        (r.len() >= 15).then_some(r)
    })
    .await;
    // The most reads in any one second: the sampler's limiter grants one
    // token per 200 ms (5 per second, burst 1); one more for arrival jitter.
    let mut sorted = reads.clone();
    sorted.sort_unstable();
    let (mut most, mut lo) = (0, 0);
    for hi in 0..sorted.len() {
        while sorted[hi] - sorted[lo] >= 1000 {
            lo += 1;
        }
        most = most.max(hi - lo + 1);
    }
    assert!(most <= 7, "{most} reads in one second: {sorted:?}");
    bridge.stop().await;
}

/// A link draining a backlog keeps the throttle busy, also while its request
/// is out: the sampler reads no member between the drain's first and last
/// write (a read there would push every later batch back one period), and
/// reads again once the drain is over.
#[tokio::test]
async fn sampled_reads_wait_until_a_backlog_is_drained() {
    let (_redis, emu, mut cfg) = stack();
    // The whole rate for the sampler, and a slow rate: 200 ms a token.
    cfg.set("flush", "verify_share", "1.0");
    cfg.set("launchdarkly", "requests_per_second", "5.0");
    // Each membership write takes 300 ms: no writer waits for a token then.
    emu.fault(serde_json::json!({"kind": "latency", "ms": 300, "route": "contexts", "count": 100}))
        .await;
    let bridge = Bridge::start(&cfg).await;
    // A settled cohort first, so the sampler is busy reading (it rests for
    // a while when it finds nothing to read).
    let (s, v) = bridge
        .amplitude(&amplitude_body(
            "settled",
            true,
            1,
            "settled-1",
            &["s1", "s2"],
        ))
        .await;
    assert_eq!(s, 200, "{v}");
    eventually("the sampler reads the settled cohort", WAIT, || async {
        let log = emu.requests().await;
        log.iter()
            .any(|r| r["route"] == "get_context")
            .then_some(())
    })
    .await;
    let cohort = "drain";
    let segment = format!("amplitude-{cohort}");
    let keys: Vec<String> = (0..4000).map(|i| format!("d{i:05}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let body = amplitude_body(cohort, true, 1, "drain-1", &keys);
    let (s, v) = bridge.amplitude(&body).await;
    assert_eq!(s, 200, "{v}");
    eventually("LaunchDarkly has all 4,000 members", WAIT, || async {
        (members(&emu, &segment).await.len() == 4000).then_some(())
    })
    .await;
    let is_drain_write = |r: &Value| {
        r["route"] == "contexts"
            && r["path"]
                .as_str()
                .is_some_and(|p| p.contains("/amplitude-drain/"))
    };
    let log = eventually("a sampled read once the drain is over", WAIT, || async {
        let log = emu.requests().await;
        let last = log
            .iter()
            .filter(|r| is_drain_write(r))
            .filter_map(|r| r["seq"].as_u64())
            .max()?;
        log.iter()
            .any(|r| r["route"] == "get_context" && r["seq"].as_u64() > Some(last))
            .then_some(log)
    })
    .await;
    let writes: Vec<u64> = log
        .iter()
        .filter(|r| is_drain_write(r))
        .filter_map(|r| r["seq"].as_u64())
        .collect();
    assert_eq!(writes.len(), 4, "four full batches");
    let (first, last) = (writes[0], writes[writes.len() - 1]);
    let during: Vec<&Value> = log
        .iter()
        .filter(|r| r["route"] == "get_context")
        .filter(|r| r["seq"].as_u64().is_some_and(|s| first < s && s < last))
        .collect();
    assert!(
        during.is_empty(),
        "sampled reads between the drain's writes: {during:?}"
    );
}
