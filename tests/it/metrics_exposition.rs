//! `/metrics` explains itself: every metric the bridge exports has HELP text
//! and the exposition passes `promtool check metrics` (Debian's
//! `prometheus` package; `.ci/run` installs it).

use crate::support::bridge::amplitude_body;
use crate::support::{converge, eventually, stack, Bridge, WAIT};
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
    let text = eventually("the flush lag is recorded", WAIT, || async {
        let (_, text) = bridge.get("/metrics").await;
        text.contains(&lag_count).then_some(text)
    })
    .await;
    for name in [
        cohort_bridge::metrics::REQUESTS,
        cohort_bridge::metrics::CHANGES,
        cohort_bridge::metrics::LD_REQUESTS,
        cohort_bridge::metrics::LD_REQUEST_SECONDS,
        cohort_bridge::metrics::FLUSH_LAG_SECONDS,
        cohort_bridge::metrics::LEASES_HELD,
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP line for {name} in:\n{text}"
        );
    }
    let (ok, printed) = promtool_check(&text);
    assert!(
        ok && printed.trim().is_empty(),
        "promtool check metrics: {printed}\n{text}"
    );
}
