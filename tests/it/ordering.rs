//! Guarantee 4, duplicates and order (issue 3, item 5): the same delivery
//! arriving twice at once applies once; an older change arriving after a newer
//! one is stale and has no effect, also once the newer one was flushed (the
//! member's tombstone remembers it) and across a bridge restart.
//! (`pipeline::older_changes_lose_and_duplicate_deliveries_apply_once` covers
//! the sequential cases.)

use crate::accounting::{changes, unsettled};
use crate::support::bridge::amplitude_body;
use crate::support::{converge, eventually, stack, Bridge, WAIT};
use serde_json::json;

#[tokio::test]
async fn the_same_delivery_sent_twice_at_once_is_applied_once() {
    let (redis, emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    const ROUNDS: i64 = 30;
    let t = cohort_bridge::clock::now_ms() / 1000 - 60;
    for i in 0..ROUNDS {
        let (x, y) = (format!("x{i}"), format!("y{i}"));
        // Every round also flips "shared": applied twice, its second copy
        // would count as superseding the first.
        let body = amplitude_body(
            "dup",
            i % 2 == 0,
            t + i,
            &format!("dup-{i}"),
            &[&x, &y, "shared"],
        );
        let ((s1, r1), (s2, r2)) = tokio::join!(bridge.amplitude(&body), bridge.amplitude(&body));
        assert_eq!((s1, s2), (200, 200), "{r1} {r2}");
        let firsts = [&r1, &r2]
            .iter()
            .filter(|r| r["duplicate"] == false)
            .count();
        assert_eq!(firsts, 1, "round {i}: exactly one is the first: {r1} {r2}");
        // The duplicate answers with the first application's summary.
        assert_eq!(r1["accepted"], 3, "{r1}");
        assert_eq!(r2["accepted"], 3, "{r2}");
    }
    // One application per delivery: a second one would count 3 more accepted.
    assert_eq!(changes(&bridge, "accepted").await, 3 * ROUNDS as u64);
    let (_, text) = bridge.get("/metrics").await;
    let pushes = |o: &str| {
        crate::accounting::metric(&text, "cohort_bridge_requests_total", &[("outcome", o)])
    };
    assert_eq!(
        (pushes("accepted"), pushes("duplicate")),
        (ROUNDS as u64, ROUNDS as u64)
    );
    eventually("Redis settles", WAIT, || async {
        (unsettled(&redis, &cfg.prefix).await == (0, 0)).then_some(())
    })
    .await;
    let superseded = changes(&bridge, "superseded").await;
    let cancelled = changes(&bridge, "cancelled").await;
    let written = changes(&bridge, "written").await;
    let unchanged = changes(&bridge, "unchanged").await;
    assert_eq!(
        written + superseded + cancelled + unchanged,
        3 * ROUNDS as u64,
        "each accepted change has one outcome"
    );
    // Only "shared" is ever replaced before its write, at most once a round.
    assert!(superseded < ROUNDS as u64, "superseded {superseded}");
    let mut want: Vec<String> = (0..ROUNDS)
        .flat_map(|i| [format!("x{i}"), format!("y{i}")])
        .filter(|k| k[1..].parse::<i64>().is_ok_and(|i| i % 2 == 0))
        .collect();
    if (ROUNDS - 1) % 2 == 0 {
        want.push("shared".into());
    }
    let refs: Vec<&str> = want.iter().map(String::as_str).collect();
    converge(&emu, "production", "amplitude-dup", &refs).await;
    bridge.stop().await;
}

#[tokio::test]
async fn an_older_change_after_a_flushed_newer_one_is_stale_even_across_a_restart() {
    let (redis, emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    let t = cohort_bridge::clock::now_ms() / 1000 - 3600;
    bridge
        .amplitude(&amplitude_body("ord", true, t, "o1", &["stay", "gone"]))
        .await;
    converge(&emu, "production", "amplitude-ord", &["stay", "gone"]).await;
    // Newer: "gone" leaves (its tombstone stays), "stay" is confirmed.
    let (_, r) = bridge
        .amplitude(&amplitude_body("ord", false, t + 100, "o2", &["gone"]))
        .await;
    assert_eq!(r["accepted"], 1, "{r}");
    let (_, r) = bridge
        .amplitude(&amplitude_body("ord", true, t + 100, "o3", &["stay"]))
        .await;
    assert_eq!(
        (r["accepted"].clone(), r["unchanged"].clone()),
        (json!(1), json!(1)),
        "{r}"
    );
    converge(&emu, "production", "amplitude-ord", &["stay"]).await;
    eventually("the removal is acknowledged", WAIT, || async {
        (unsettled(&redis, &cfg.prefix).await == (0, 0)).then_some(())
    })
    .await;
    let tombstone = redis.want_value(&cfg.prefix, "gone").await;
    let expected = cohort_bridge::store::MemberValue {
        version_ms: (t + 100) * 1000,
        pending: false,
        desired: false,
        states: "o".into(),
    };
    assert_eq!(
        tombstone
            .as_deref()
            .and_then(cohort_bridge::store::MemberValue::parse),
        Some(expected.clone()),
        "a settled tombstone"
    );
    let requests_before = emu.membership_requests().await.len();

    // Older changes after the newer ones were flushed: stale, no effect.
    let (_, r) = bridge
        .amplitude(&amplitude_body("ord", true, t + 50, "o4", &["gone"]))
        .await;
    assert_eq!(
        (r["stale"].clone(), r["accepted"].clone()),
        (json!(1), json!(0)),
        "{r}"
    );
    let (_, r) = bridge
        .amplitude(&amplitude_body("ord", false, t + 50, "o5", &["stay"]))
        .await;
    assert_eq!(
        (r["stale"].clone(), r["accepted"].clone()),
        (json!(1), json!(0)),
        "{r}"
    );
    bridge.stop().await;

    // A new bridge on the same Redis remembers the versions and the deliveries.
    let bridge = Bridge::start(&cfg).await;
    let (_, r) = bridge
        .amplitude(&amplitude_body("ord", true, t + 99, "o6", &["gone"]))
        .await;
    assert_eq!(
        (r["stale"].clone(), r["accepted"].clone()),
        (json!(1), json!(0)),
        "{r}"
    );
    let (_, r) = bridge
        .amplitude(&amplitude_body("ord", false, t + 99, "o7", &["stay"]))
        .await;
    assert_eq!(
        (r["stale"].clone(), r["accepted"].clone()),
        (json!(1), json!(0)),
        "{r}"
    );
    let (_, r) = bridge
        .amplitude(&amplitude_body("ord", true, t, "o1", &["stay", "gone"]))
        .await;
    assert_eq!(r["duplicate"], true, "{r}");
    // A newer marker flushes; the stale changes never reach LaunchDarkly.
    bridge
        .amplitude(&amplitude_body("ord", true, t + 200, "o8", &["marker"]))
        .await;
    converge(&emu, "production", "amplitude-ord", &["marker", "stay"]).await;
    let after: Vec<_> = emu.membership_requests().await[requests_before..].to_vec();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(
        after[0]["body"]["included"],
        json!({"add": ["marker"]}),
        "{after:?}"
    );
    assert_eq!(changes(&bridge, "stale").await, 4);
    assert_eq!(
        redis
            .want_value(&cfg.prefix, "gone")
            .await
            .as_deref()
            .and_then(cohort_bridge::store::MemberValue::parse),
        Some(expected),
        "the tombstone is untouched by the stale changes"
    );
    bridge.stop().await;
}
