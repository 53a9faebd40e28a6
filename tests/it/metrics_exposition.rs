//! `/metrics` explains itself: every metric the bridge exports has HELP text
//! and the exposition passes `promtool check metrics` (Debian's
//! `prometheus` package; `.ci/run` installs it). The operations gauges mean
//! what they say: the oldest unacknowledged change ages while LaunchDarkly
//! refuses, a 401 shows as a blocked link, and both clear once it accepts.

use crate::support::bridge::amplitude_body;
use crate::support::{converge, eventually, stack, Bridge, WAIT};
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `promtool check metrics` on `text`: (success, what it printed).
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package prometheus; .ci/run installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_has_help_and_promtool_accepts_the_exposition() {
    let (_redis, emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    // One 401 first, so the blocked counter has a sample too; the link is
    // retried after `blocked_retry_ms` and written.
    emu.fault(json!({"kind": "status", "status": 401, "route": "contexts"}))
        .await;
    let (status, resp) = bridge
        .amplitude(&amplitude_body(
            "promtool",
            true,
            1_767_225_600,
            "p1::enter::0",
            &["u1", "u2"],
        ))
        .await;
    assert_eq!(status, 200, "{resp}");
    // Once the segment is written, the LaunchDarkly and flush histograms have samples.
    converge(&emu, "production", "amplitude-promtool", &["u1", "u2"]).await;
    // The flush records its lag just after the acknowledged write: wait for
    // that sample rather than for the emulator alone.
    let lag_count = format!("{}_count", cohort_bridge::metrics::FLUSH_LAG_SECONDS);
    let propagation_count = format!("{}_count", cohort_bridge::metrics::PROPAGATION_SECONDS);
    let text = eventually(
        "the flush lag and propagation are recorded",
        WAIT,
        || async {
            let (_, text) = bridge.get("/metrics").await;
            (text.contains(&lag_count) && text.contains(&propagation_count)).then_some(text)
        },
    )
    .await;
    // Every name of the contract (src/metrics.rs's table), with HELP and a sample.
    for name in cohort_bridge::metrics::ALL {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP line for {name} in:\n{text}"
        );
        assert!(
            text.lines()
                .any(|l| !l.starts_with('#') && l.starts_with(name)),
            "no sample of {name} in:\n{text}"
        );
    }
    assert_eq!(
        gauge(&text, cohort_bridge::metrics::PARTITIONS),
        Some(4.0),
        "the configured partitions"
    );
    assert_eq!(
        gauge(&text, cohort_bridge::metrics::LD_BUDGET_LIMIT_RPS),
        Some(200.0),
        "the configured rate"
    );
    assert_eq!(gauge(&text, cohort_bridge::metrics::REDIS_UP), Some(1.0));
    let (ok, printed) = promtool_check(&text);
    assert!(
        ok && printed.trim().is_empty(),
        "promtool check metrics: {printed}\n{text}"
    );
}

/// The value of an unlabelled sample `name value` in a scrape.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

async fn scrape_gauge(bridge: &Bridge, name: &str) -> f64 {
    let (_, text) = bridge.get("/metrics").await;
    gauge(&text, name).unwrap_or_else(|| panic!("no sample of {name} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_change_ages_and_the_link_shows_blocked_while_launchdarkly_refuses() {
    use cohort_bridge::metrics::{
        LD_BUDGET_RPS, LD_RATELIMIT_REMAINING, LINKS_BLOCKED_NOW, OLDEST_DIRTY_AGE_SECONDS,
        PROPAGATION_SECONDS,
    };
    let (_redis, emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    // Nothing pending, nothing blocked: both read 0 once the first check ran.
    eventually("Redis is checked", WAIT, || async {
        (scrape_gauge(&bridge, cohort_bridge::metrics::REDIS_UP).await == 1.0).then_some(())
    })
    .await;
    assert_eq!(scrape_gauge(&bridge, OLDEST_DIRTY_AGE_SECONDS).await, 0.0);
    assert_eq!(scrape_gauge(&bridge, LINKS_BLOCKED_NOW).await, 0.0);

    // LaunchDarkly answers 401 to every write: the link is blocked and its
    // change waits, older at each check.
    emu.fault(json!({"kind": "status", "status": 401, "route": "contexts", "count": 100000}))
        .await;
    let (status, resp) = bridge
        .amplitude(&amplitude_body("aging", true, 1_767_225_600, "a1", &["u1"]))
        .await;
    assert_eq!(status, 200, "{resp}");
    eventually("the link is counted blocked", WAIT, || async {
        (scrape_gauge(&bridge, LINKS_BLOCKED_NOW).await == 1.0).then_some(())
    })
    .await;
    let first = eventually("the oldest change has an age", WAIT, || async {
        let age = scrape_gauge(&bridge, OLDEST_DIRTY_AGE_SECONDS).await;
        (age > 0.0).then_some(age)
    })
    .await;
    eventually("the oldest change keeps ageing", WAIT, || async {
        (scrape_gauge(&bridge, OLDEST_DIRTY_AGE_SECONDS).await > first).then_some(())
    })
    .await;
    // The requests were sent: the budget in use is not zero.
    assert!(scrape_gauge(&bridge, LD_BUDGET_RPS).await > 0.0);

    // LaunchDarkly accepts again: written, unblocked, nothing pending, and
    // the write's propagation is recorded (at least as long as it waited).
    emu.clear_faults().await;
    converge(&emu, "production", "amplitude-aging", &["u1"]).await;
    eventually("the link is no longer blocked", WAIT, || async {
        (scrape_gauge(&bridge, LINKS_BLOCKED_NOW).await == 0.0).then_some(())
    })
    .await;
    eventually("no change is pending", WAIT, || async {
        (scrape_gauge(&bridge, OLDEST_DIRTY_AGE_SECONDS).await == 0.0).then_some(())
    })
    .await;
    let (_, text) = bridge.get("/metrics").await;
    let count = gauge(&text, &format!("{PROPAGATION_SECONDS}_count"));
    let sum = gauge(&text, &format!("{PROPAGATION_SECONDS}_sum"));
    assert_eq!(count, Some(1.0), "one batch acknowledged:\n{text}");
    assert!(
        sum.unwrap() >= first,
        "propagation counts from the 2xx, through the refusals: {sum:?} < {first}"
    );
    // The emulator reports its route budget's remaining count on each answer.
    let remaining = gauge(&text, LD_RATELIMIT_REMAINING).unwrap();
    assert!(remaining.is_finite() && remaining >= 0.0, "{remaining}");
}
