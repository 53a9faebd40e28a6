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
