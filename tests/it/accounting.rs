//! Guarantee 2, every change accounted (issue 3, item 8): each accepted change
//! ends in exactly one outcome counted in `/metrics` (written, superseded,
//! cancelled by a flip back, unchanged, dead-lettered), and changes that are
//! not accepted are counted as stale or skipped without a key.

use crate::support::bridge::amplitude_body;
use crate::support::{eventually, stack, Bridge, Emulator, RedisServer, WAIT};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Sums the samples of a Prometheus counter whose labels include `labels`.
pub(crate) fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    let mut total = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        let found: BTreeMap<&str, &str> = label_text
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if labels.iter().all(|(k, v)| found.get(k) == Some(v)) {
            total += value.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    total as u64
}

/// `cohort_bridge_changes_total` by outcome.
pub(crate) async fn changes(bridge: &Bridge, outcome: &str) -> u64 {
    let (_, text) = bridge.get("/metrics").await;
    metric(
        &text,
        "cohort_bridge_changes_total",
        &[("outcome", outcome)],
    )
}

/// (members still dirty in any link, members with a pending change) in Redis.
pub(crate) async fn unsettled(redis: &RedisServer, prefix: &str) -> (u64, u64) {
    let mut c = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let dirty_keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}:*}}:dirty:*"))
        .query_async(&mut c)
        .await
        .expect("KEYS");
    let mut dirty = 0;
    for k in dirty_keys {
        let n: u64 = redis::cmd("SCARD")
            .arg(&k)
            .query_async(&mut c)
            .await
            .expect("SCARD");
        dirty += n;
    }
    dirty += crate::support::stream::fresh_backlog(&mut c, prefix)
        .await
        .expect("fresh counts");
    let want_keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}:*}}:want:*"))
        .query_async(&mut c)
        .await
        .expect("KEYS");
    let mut pending = 0;
    for k in want_keys {
        let values: Vec<String> = redis::cmd("HVALS")
            .arg(&k)
            .query_async(&mut c)
            .await
            .expect("HVALS");
        pending += values
            .iter()
            .filter(|v| cohort_bridge::store::MemberValue::parse(v).is_some_and(|m| m.pending))
            .count() as u64;
    }
    (dirty, pending)
}

/// Members of a dead-letter hash of the prefix (all links).
async fn dead_letters(redis: &RedisServer, prefix: &str) -> Vec<String> {
    let mut c = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}:*}}:dead:*"))
        .query_async(&mut c)
        .await
        .expect("KEYS");
    let mut out = Vec::new();
    for k in keys {
        let m: Vec<String> = redis::cmd("HKEYS")
            .arg(&k)
            .query_async(&mut c)
            .await
            .expect("HKEYS");
        out.extend(m);
    }
    out.sort();
    out
}

async fn members(emu: &Emulator) -> Vec<String> {
    emu.members("default", "production", "amplitude-acct")
        .await
        .unwrap_or_default()
}

/// Waits until a membership request carrying `key` was answered (or failed).
async fn sent(emu: &Emulator, key: &str, times: usize) {
    eventually(&format!("{key} sent {times} times"), WAIT, || async {
        let n = emu
            .membership_requests()
            .await
            .iter()
            .filter(|r| r["body"].to_string().contains(&format!("\"{key}\"")))
            .count();
        (n >= times).then_some(())
    })
    .await;
}

#[tokio::test]
async fn every_accepted_change_ends_in_exactly_one_counted_outcome() {
    let (redis, emu, mut cfg) = stack();
    let t = cohort_bridge::clock::now_ms() / 1000 - 3600;
    // Phase 1: nothing is due for ten minutes, so flips and supersedes happen
    // before any write.
    cfg.set("flush", "max_delay_ms", "600000");
    let bridge = Bridge::start(&cfg).await;
    let mut p1 = amplitude_body("acct", true, t, "p1", &["a", "b", "c", "d", "e"]);
    p1["users"]
        .as_array_mut()
        .expect("users")
        .push(json!({"user_properties": {"plan": "free"}}));
    let steps: Vec<(Value, Value)> = vec![
        // 5 accepted, 1 without a key.
        (
            p1.clone(),
            json!({"accepted": 5, "skipped_without_key": 1, "duplicate": false}),
        ),
        // a flips back before any write: its add is superseded, the remove cancelled.
        (
            amplitude_body("acct", false, t + 1, "p2", &["a"]),
            json!({"accepted": 1, "superseded": 1, "cancelled": 1}),
        ),
        // b again, newer: the first add of b is superseded, this one waits.
        (
            amplitude_body("acct", true, t + 2, "p3", &["b"]),
            json!({"accepted": 1, "superseded": 1, "cancelled": 0}),
        ),
        // Older than c's add: stale.
        (
            amplitude_body("acct", false, t - 10, "p4", &["c"]),
            json!({"accepted": 0, "stale": 1}),
        ),
        // z was never in the segment: removing it changes nothing.
        (
            amplitude_body("acct", false, t, "p5", &["z"]),
            json!({"accepted": 1, "unchanged": 1}),
        ),
        // A retried delivery counts nothing again.
        (p1, json!({"duplicate": true})),
    ];
    for (body, expect) in &steps {
        let (status, r) = bridge.amplitude(body).await;
        assert_eq!(status, 200, "{r}");
        for (k, v) in expect.as_object().expect("object") {
            assert_eq!(&r[k], v, "{k} of {body}: {r}");
        }
    }
    assert!(emu.membership_requests().await.is_empty());
    bridge.stop().await;

    // Phase 2: a bridge that flushes at once, two keys per request; the first
    // request holding `f` and the half holding it are rejected with a 400
    // naming it (a 400 naming no key would block the link): one key is
    // dead-lettered.
    cfg.set("flush", "max_delay_ms", "100")
        .set("launchdarkly", "max_keys_per_request", "2");
    let bridge = Bridge::start(&cfg).await;
    emu.configure(json!({"reject_keys": ["f"]})).await;
    let (_, r) = bridge
        .amplitude(&amplitude_body("acct", true, t + 3, "p7", &["f"]))
        .await;
    assert_eq!(r["accepted"], 1, "{r}");
    let dead = eventually("one key is dead-lettered", WAIT, || async {
        let d = dead_letters(&redis, &cfg.prefix).await;
        (d.len() == 1).then_some(d)
    })
    .await;
    emu.configure(json!({"reject_keys": []})).await;
    let mut expected: Vec<String> = ["b", "c", "d", "e", "f"]
        .iter()
        .filter(|k| **k != dead[0])
        .map(|k| k.to_string())
        .collect();
    eventually("the other keys are written", WAIT, || async {
        (members(&emu).await == expected).then_some(())
    })
    .await;

    // Phase 3: a write that times out (LaunchDarkly applies it late) is sent
    // again and counted written once.
    emu.fault(json!({"kind": "hang", "ms": 2500, "then": "apply", "route": "contexts"}))
        .await;
    bridge
        .amplitude(&amplitude_body("acct", true, t + 4, "p8", &["h"]))
        .await;
    sent(&emu, "h", 2).await;
    expected.push("h".into());
    expected.sort();
    eventually("h is written", WAIT, || async {
        (members(&emu).await == expected).then_some(())
    })
    .await;

    // Phase 4: g is superseded while its write is in flight (and times out):
    // the add counts superseded, the remove that follows counts written. The
    // retry waits a request timeout (2 s) after the timeout (2 s), which leaves
    // ample time to push the remove while the add is unresolved.
    emu.fault(json!({"kind": "hang", "ms": 2500, "then": "apply", "route": "contexts"}))
        .await;
    bridge
        .amplitude(&amplitude_body("acct", true, t + 5, "p9", &["g"]))
        .await;
    sent(&emu, "g", 1).await;
    let (_, r) = bridge
        .amplitude(&amplitude_body("acct", false, t + 6, "p10", &["g"]))
        .await;
    assert_eq!(
        (r["accepted"].clone(), r["superseded"].clone()),
        (json!(1), json!(1)),
        "{r}"
    );
    sent(&emu, "g", 2).await;

    // Drained: nothing dirty or pending, LaunchDarkly as expected.
    eventually("Redis settles", WAIT, || async {
        (unsettled(&redis, &cfg.prefix).await == (0, 0)).then_some(())
    })
    .await;
    assert_eq!(members(&emu).await, expected);
    let (_, text) = bridge.get("/metrics").await;
    let count = |outcome: &str| {
        metric(
            &text,
            "cohort_bridge_changes_total",
            &[("outcome", outcome), ("source", "amplitude")],
        )
    };
    let got: BTreeMap<&str, u64> = [
        "accepted",
        "written",
        "superseded",
        "cancelled",
        "unchanged",
        "dead_lettered",
        "stale",
        "skipped_without_key",
    ]
    .into_iter()
    .map(|o| (o, count(o)))
    .collect();
    // The identity: every accepted change has exactly one outcome.
    assert_eq!(
        got["accepted"],
        got["written"]
            + got["superseded"]
            + got["cancelled"]
            + got["unchanged"]
            + got["dead_lettered"],
        "{got:?}"
    );
    // And each outcome is what this stream must produce: 5 + a + b + z + f + h + g + g.
    let want: BTreeMap<&str, u64> = [
        ("accepted", 12),
        // b, c, d, e, f less the dead one; h once despite its re-send; g's remove.
        ("written", 6),
        // a's add, b's first add, g's add.
        ("superseded", 3),
        ("cancelled", 1),
        ("unchanged", 1),
        ("dead_lettered", 1),
        ("stale", 1),
        ("skipped_without_key", 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
    assert_eq!(
        metric(
            &text,
            "cohort_bridge_requests_total",
            &[("outcome", "duplicate")]
        ),
        1
    );
    bridge.stop().await;
}
