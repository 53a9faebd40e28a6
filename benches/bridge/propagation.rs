//! Figure 4a: propagation from a receiver's 2xx to LaunchDarkly's ack,
//! with pushes at half the configured LaunchDarkly rate.

use crate::harness::{latencies, percentile, trickle, warm_up, MAX_DELAY_MS};
use crate::procs::{Bridge, BridgeOpts};
use crate::report::{Report, Row};
use crate::Bench;
use serde_json::json;
use std::time::Duration;

pub async fn run(bench: &Bench, report: &mut Report) {
    // ---- Figure 4a: propagation at half the configured LaunchDarkly rate.
    eprintln!("bench: figure 4, propagation");
    bench.redis.flushall();
    bench.ctl.reset().await;
    let ld_rps = 20.0;
    let max_delay = MAX_DELAY_MS;
    let bridge = Bridge::start(
        &bench.redis,
        &bench.emu,
        BridgeOpts {
            ld_rps,
            max_delay_ms: max_delay,
        },
    )
    .await;
    let cohorts = 50;
    warm_up(&bench.http, &bench.ctl, &bridge, "prop", cohorts).await;
    let since = bench.ctl.get("/_emulator/stats").await["requests"]
        .as_u64()
        .unwrap_or(0);
    let since = bench.ctl.last_seq().await.unwrap_or(since);
    let every = Duration::from_secs_f64(2.0 / ld_rps);
    let sent = trickle(
        &bench.http,
        &bridge,
        'p',
        "prop",
        cohorts,
        every,
        bench.sz.propagation_for,
    )
    .await;
    let lat = latencies(&bench.ctl, &sent, since, Duration::from_secs(60)).await;
    drop(bridge);
    let (p50, p99) = (percentile(&lat, 50.0), percentile(&lat, 99.0));
    report.row(Row {
        figure: "4a. propagation 2xx -> LD ack at half the LD rate, p50 / p99 ms",
        value: format!("{p50} / {p99}"),
        against: format!("max_delay_ms + 250 = {}", max_delay + 250),
        ratio: format!("{:.2}", p99 as f64 / (max_delay + 250) as f64),
        target: "p99 <= max_delay_ms + 250",
        met: lat.len() == sent.len() && p99 >= 0 && p99 <= max_delay as i64 + 250,
    });
    report.section("propagation",
    json!({"ld_requests_per_second": ld_rps, "pushes_per_second": ld_rps / 2.0, "max_delay_ms": max_delay,
           "samples": lat.len(), "sent": sent.len(), "p50_ms": p50, "p99_ms": p99,
           "max_ms": lat.last().copied().unwrap_or(-1)}),
        );
}
