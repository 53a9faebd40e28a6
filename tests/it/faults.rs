//! LaunchDarkly faults, one case per kind, each driven the same way: two
//! cohorts fanned out to two environments, a first push, faults queued, a
//! second push (removes and adds) sent once the first fault was served. The
//! bridge must converge to the pushes' last-writer-wins state, and the
//! emulator's statistics must show that the configured request rate was never
//! exceeded (retries included), that no request arrived before an announced
//! reset, and that every queued fault was served.

use crate::support::bridge::amplitude_body;
use crate::support::{eventually, stack, Bridge, Emulator, WAIT_LONG};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The bridge's request rate in these tests (and the emulator's `max_rps`).
const RPS: f64 = 10.0;
/// The bridge's LaunchDarkly request timeout in these tests.
const TIMEOUT_MS: u64 = 1000;
/// The bridge's wait after a 429 that gives no usable reset time.
const FALLBACK_MS: u64 = 400;

/// What the bridge must have waited after a 429 before its next request.
enum Hold {
    None,
    /// Until the reset it was told (`X-Ratelimit-Reset` or `Retry-After`),
    /// this many ms after the 429 request arrived (a lower bound of the reset).
    Announced(u64),
    /// `rate_limited_fallback_ms` after the 429's answer.
    Fallback,
}

struct Case {
    faults: Value,
    /// Fault names (as the request log shows them) that must have been served.
    served: &'static [&'static str],
    hold: Hold,
    /// Emulator configuration applied before the pushes.
    emulator: Option<Value>,
}

fn users(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

async fn push(
    bridge: &Bridge,
    cohort: &str,
    include: bool,
    version_s: i64,
    id: &str,
    u: &[String],
) {
    let refs: Vec<&str> = u.iter().map(String::as_str).collect();
    let (status, body) = bridge
        .amplitude(&amplitude_body(cohort, include, version_s, id, &refs))
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn members(emu: &Emulator, env: &str, key: &str) -> Option<BTreeSet<String>> {
    emu.members("default", env, key)
        .await
        .map(|m| m.into_iter().collect())
}

async fn run(case: Case) {
    let (_redis, emu, mut cfg) = stack();
    let mut emu_cfg = json!({"max_rps": RPS});
    if let Some(extra) = case.emulator {
        for (k, v) in extra.as_object().expect("object") {
            emu_cfg[k] = v.clone();
        }
    }
    emu.configure(emu_cfg).await;
    cfg.amplitude_destinations = r#"["production", "staging"]"#.into();
    cfg.set("launchdarkly", "requests_per_second", format!("{RPS:.1}"))
        .set("launchdarkly", "request_timeout_ms", TIMEOUT_MS.to_string())
        .set(
            "launchdarkly",
            "rate_limited_fallback_ms",
            FALLBACK_MS.to_string(),
        )
        .set("launchdarkly", "max_keys_per_request", "50");
    let bridge = Bridge::start(&cfg).await;
    emu.fault(case.faults.clone()).await;

    // Round one: adds to two cohorts.
    let a1 = users("a", 0..120);
    let b1 = users("b", 0..60);
    push(&bridge, "fa", true, 1_000, "fa1", &a1).await;
    push(&bridge, "fb", true, 1_000, "fb1", &b1).await;
    // Round two, once the first fault was served: some of round one's members
    // leave (they may sit in a request whose outcome is unknown), others join.
    eventually("a membership write was answered", WAIT_LONG, || async {
        let reqs = emu.membership_requests().await;
        let served = |name: &str| reqs.iter().any(|r| r["fault"] == json!(name));
        (!reqs.is_empty() && case.served.first().is_none_or(|f| served(f))).then_some(())
    })
    .await;
    let a_out = users("a", 0..30);
    let a_in = users("a", 200..215);
    let b_out = users("b", 50..60);
    push(&bridge, "fa", false, 2_000, "fa2", &a_out).await;
    push(&bridge, "fa", true, 2_000, "fa3", &a_in).await;
    push(&bridge, "fb", false, 2_000, "fb2", &b_out).await;
    // A late, older change: stale, no effect.
    push(&bridge, "fb", true, 1_500, "fb3", &b_out).await;

    let want_a: BTreeSet<String> = a1
        .iter()
        .filter(|u| !a_out.contains(u))
        .chain(a_in.iter())
        .cloned()
        .collect();
    let want_b: BTreeSet<String> = b1.iter().filter(|u| !b_out.contains(u)).cloned().collect();
    eventually(
        "both cohorts converge in both environments",
        WAIT_LONG,
        || async {
            for env in ["production", "staging"] {
                if members(&emu, env, "amplitude-fa").await.as_ref() != Some(&want_a)
                    || members(&emu, env, "amplitude-fb").await.as_ref() != Some(&want_b)
                {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;

    let stats = emu.stats().await;
    assert_eq!(stats["violations"]["rate_exceeded"], 0, "{stats}");
    assert_eq!(stats["violations"]["early_after_429"], 0, "{stats}");
    assert!(
        stats["max_requests_in_1s"].as_u64().unwrap() <= RPS as u64 + 1,
        "{stats}"
    );
    assert_eq!(
        stats["faults_pending"], 0,
        "every fault was served: {stats}"
    );
    let reqs = emu.requests().await;
    for name in case.served {
        assert!(
            reqs.iter().any(|r| r["fault"] == json!(name)),
            "fault {name} never served"
        );
    }
    // After a 429, nothing arrives before the wait it asked for.
    for limited in reqs.iter().filter(|r| r["status"] == 429) {
        let received = limited["received_ms"].as_u64().unwrap();
        let completed = limited["completed_ms"].as_u64().unwrap();
        let not_before = match case.hold {
            Hold::None => continue,
            Hold::Announced(ms) => received + ms,
            Hold::Fallback => completed + FALLBACK_MS,
        };
        assert!(not_before > received, "{limited}");
        for r in reqs
            .iter()
            .filter(|r| r["received_ms"].as_u64().unwrap() > completed)
        {
            assert!(
                r["received_ms"].as_u64().unwrap() >= not_before,
                "a request {} ms before the 429's wait ended: {r}",
                not_before - r["received_ms"].as_u64().unwrap()
            );
        }
    }
    bridge.stop().await;
}

#[tokio::test]
async fn rate_limited_with_a_reset_in_the_future() {
    run(Case {
        faults: json!({"kind": "rate_limited", "reset_in_ms": 1200, "route": "contexts", "count": 2}),
        served: &["rate_limited"],
        hold: Hold::Announced(1200),
        emulator: None,
    })
    .await;
}

#[tokio::test]
async fn rate_limited_with_a_reset_in_the_past() {
    run(Case {
        faults: json!({"kind": "rate_limited", "reset_in_ms": -5000, "route": "contexts", "count": 2}),
        served: &["rate_limited"],
        hold: Hold::Fallback,
        emulator: None,
    })
    .await;
}

#[tokio::test]
async fn rate_limited_without_a_reset() {
    run(Case {
        faults: json!({"kind": "rate_limited", "reset": "missing", "route": "contexts", "count": 2}),
        served: &["rate_limited"],
        hold: Hold::Fallback,
        emulator: None,
    })
    .await;
}

#[tokio::test]
async fn rate_limited_with_retry_after_only() {
    run(Case {
        faults: json!({"kind": "rate_limited", "reset": "missing", "retry_after_s": 1, "route": "contexts", "count": 2}),
        served: &["rate_limited"],
        hold: Hold::Announced(1000),
        emulator: None,
    })
    .await;
}

#[tokio::test]
async fn launchdarkly_budget_exhausted_mid_window() {
    // LaunchDarkly's own budget is below the configured rate: the bridge must
    // hold off at "remaining 0" (or on the 429) until the window resets.
    run(Case {
        faults: json!([]),
        served: &[],
        hold: Hold::None,
        emulator: Some(json!({"rate_limit_global": 3, "window_ms": 1000})),
    })
    .await;
}

#[tokio::test]
async fn server_errors() {
    run(Case {
        faults: json!([
            {"kind": "status", "status": 500, "route": "contexts", "count": 2},
            {"kind": "status", "status": 503, "route": "create", "count": 1},
            {"kind": "status", "status": 502, "route": "contexts", "count": 1},
            {"kind": "status", "status": 504, "route": "contexts", "count": 1}
        ]),
        served: &["status"],
        hold: Hold::None,
        emulator: None,
    })
    .await;
}

#[tokio::test]
async fn slower_than_the_client_timeout_then_applied() {
    // LaunchDarkly answers (and applies) after the bridge gave up: the retry
    // must not be overtaken by the late apply of the older request.
    run(Case {
        faults: json!([
            {"kind": "hang", "ms": TIMEOUT_MS + 300, "then": "apply", "route": "contexts", "count": 2},
            {"kind": "latency", "ms": TIMEOUT_MS + 300, "route": "contexts", "count": 1}
        ]),
        served: &["hang", "latency"],
        hold: Hold::None,
        emulator: None,
    })
    .await;
}

#[tokio::test]
async fn connections_reset_before_and_after_applying() {
    run(Case {
        faults: json!([
            {"kind": "reset_connection", "then": "drop", "route": "contexts", "count": 2},
            {"kind": "reset_connection", "then": "apply", "route": "contexts", "count": 2}
        ]),
        served: &["reset_connection"],
        hold: Hold::None,
        emulator: None,
    })
    .await;
}

#[tokio::test]
async fn hung_requests() {
    run(Case {
        faults: json!([
            {"kind": "hang", "route": "contexts", "count": 2},
            {"kind": "hang", "ms": TIMEOUT_MS * 3, "then": "drop", "route": "contexts", "count": 1},
            {"kind": "hang", "route": "create", "count": 1}
        ]),
        served: &["hang"],
        hold: Hold::None,
        emulator: None,
    })
    .await;
}
