//! Figure 4b: fairness: how long a one-member change waits while a large
//! first sync drains at 10 LaunchDarkly requests per second.

use crate::harness::{
    amplitude, backlog, bridge_target, latencies, member, percentile, trickle, warm_up,
    MAX_DELAY_MS,
};
use crate::load::{self, Mode};
use crate::procs::{Bridge, BridgeOpts};
use crate::report::{Report, Row};
use crate::Bench;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub async fn run(bench: &Bench, report: &mut Report) {
    // ---- Figure 4b: fairness while a large first sync drains at 10 requests/s.
    let max_delay = MAX_DELAY_MS;
    eprintln!("bench: figure 4, fairness");
    bench.redis.flushall();
    bench.ctl.reset().await;
    bench
        .ctl
        .post("/_emulator/config", json!({"max_rps": 10.0}))
        .await;
    let bridge = Bridge::start(
        &bench.redis,
        &bench.emu,
        BridgeOpts {
            ld_rps: 10.0,
            max_delay_ms: max_delay,
        },
    )
    .await;
    let smalls = 10;
    warm_up(&bench.http, &bench.ctl, &bridge, "small", smalls).await;
    // The emulator's own round trip, as the harness sees it.
    let mut rtts = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        bench.ctl.get("/_emulator/config").await;
        rtts.push(t.elapsed().as_millis() as i64);
    }
    rtts.sort_unstable();
    let rtt = percentile(&rtts, 50.0);
    let since = bench.ctl.last_seq().await.unwrap_or(0);
    let mut big = Vec::new();
    for chunk in 0..bench.sz.fairness_members / 1000 {
        let members: Vec<String> = (chunk * 1000..(chunk + 1) * 1000)
            .map(|i| member(50_000, i))
            .collect();
        big.push(amplitude("big", true, 1_767_225_600, &members));
    }
    let target = bridge_target(&bridge);
    let big_push = load::run(&target, Arc::new(big), 8, Mode::EachOnce).await;
    let sent = trickle(
        &bench.http,
        &bridge,
        'f',
        "small",
        smalls,
        Duration::from_millis(250),
        bench.sz.fairness_for,
    )
    .await;
    let lat = latencies(&bench.ctl, &sent, since, Duration::from_secs(60)).await;
    let (still_dirty, _) = backlog(&bench.redis);
    let big_rate = bench.ctl.get("/_emulator/stats").await["max_requests_in_1s"]
        .as_u64()
        .unwrap_or(0);
    let violations = bench.ctl.get("/_emulator/stats").await["violations"]["rate_exceeded"]
        .as_u64()
        .unwrap_or(0);
    drop(bridge);
    let (fp50, fp99) = (percentile(&lat, 50.0), percentile(&lat, 99.0));
    let bound = 2 * max_delay as i64 + rtt;
    report.row(Row {
        figure: "4b. fairness: one-member change during a big drain at 10 req/s, p50 / p99 ms",
        value: format!("{fp50} / {fp99}"),
        against: format!("2 x max_delay_ms + RTT = {bound}"),
        ratio: format!("{:.2}", fp99 as f64 / bound as f64),
        target: "p99 <= 2 x max_delay_ms + RTT",
        met: lat.len() == sent.len() && fp99 >= 0 && fp99 <= bound && still_dirty > 0,
    });
    report.section("fairness",
    json!({"big_members": big_push.accepted, "ld_requests_per_second": 10.0, "samples": lat.len(), "sent": sent.len(),
           "p50_ms": fp50, "p99_ms": fp99, "max_ms": lat.last().copied().unwrap_or(-1), "emulator_rtt_ms": rtt,
           "bound_ms": bound, "big_still_dirty_at_end": still_dirty, "emulator_max_requests_in_1s": big_rate,
           "emulator_rate_violations": violations}),
        );
}
