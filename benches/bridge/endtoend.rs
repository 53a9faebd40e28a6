//! Figure 6: a 1,000,000-member first sync end to end (20,000 in a quick
//! run). One cohort, every member new, pushed as 1,000-member pages by 8
//! connections; LaunchDarkly at 50 requests/s. The clock runs from the first
//! push sent to the moment the emulator has answered as many membership
//! requests as the sync needs (polled every 10 ms), and the emulator's
//! segment is then checked to hold every member.
//!
//! The ideal is what LaunchDarkly's rate allows: one creation plus
//! ⌈members / `max_keys_per_request`⌉ membership requests, at 50/s.

use crate::harness::{amplitude, bridge_target, member, MAX_KEYS};
use crate::load::{self, Mode};
use crate::procs::{Bridge, BridgeOpts, CpuMeter};
use crate::report::{fmt_n, Report, Row};
use crate::Bench;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub async fn run(bench: &Bench, report: &mut Report) {
    let members = if bench.sz.quick { 20_000 } else { 1_000_000 };
    eprintln!(
        "bench: figure 6, a {}-member first sync end to end",
        fmt_n(members as f64)
    );
    bench.redis.flushall();
    bench.ctl.reset().await;
    let ld_rps = 50.0;
    let bridge = Bridge::start(
        &bench.redis,
        &bench.emu,
        BridgeOpts {
            ld_rps,
            max_delay_ms: 1000,
        },
    )
    .await;
    let cohort = "e2e";
    let bodies: Vec<_> = (0..members / 1000)
        .map(|page| {
            let keys: Vec<String> = (page * 1000..(page + 1) * 1000)
                .map(|i| member(7, i))
                .collect();
            amplitude(cohort, true, 1_767_225_600, &keys)
        })
        .collect();
    let writes = members.div_ceil(MAX_KEYS) as u64;
    let ideal = Duration::from_secs_f64((writes + 1) as f64 / ld_rps);
    let target = bridge_target(&bridge);
    let cpu = CpuMeter::start(&[
        ("bridge", bridge.pid().to_string()),
        ("redis", bench.redis.pid().to_string()),
        ("emulator", bench.emu.pid().to_string()),
        ("generator", "self".to_string()),
    ]);
    let start = Instant::now();
    let pushing = tokio::spawn(async move { load::run(&target, Arc::new(bodies), 8, Mode::EachOnce).await });
    // Done when the emulator has had every membership request and answered
    // them all (nothing in flight): a poll every 10 ms.
    let limit = ideal * 10 + Duration::from_secs(60);
    let mut done = None;
    while start.elapsed() < limit {
        let stats = bench.ctl.get("/_emulator/stats").await;
        let arrived = stats["by_route"]["contexts"].as_u64().unwrap_or(0);
        if arrived >= writes && stats["in_flight"].as_u64() == Some(0) {
            done = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cores = cpu.cores();
    let pushed = pushing.await.expect("load generator");
    let ingest = pushed.elapsed;
    let held = bench.ctl.members(&format!("amp-{cohort}")).await;
    let stats = bench.ctl.get("/_emulator/stats").await;
    let (creates, updates) = (
        stats["by_route"]["create"].as_u64().unwrap_or(0),
        stats["by_route"]["contexts"].as_u64().unwrap_or(0),
    );
    let rate = bench.ctl.get("/_emulator/rate?window_ms=1000").await;
    drop(bridge);
    let elapsed = done.unwrap_or(limit);
    let ratio = elapsed.as_secs_f64() / ideal.as_secs_f64();
    let cores_text = cores
        .iter()
        .map(|(n, c)| format!("{n} {c:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!(
        "bench: figure 6: {:.2} s (ideal {:.2} s), ingest {:.2} s, {} of {} members in LaunchDarkly, \
         {creates} creation(s) and {updates} membership requests, at most {} in any second; cores: {cores_text}",
        elapsed.as_secs_f64(),
        ideal.as_secs_f64(),
        ingest.as_secs_f64(),
        held,
        members,
        rate["max_in_window"],
    );
    report.row(Row {
        figure: if bench.sz.quick {
            "6. first sync end to end (20,000 members, LD 50/s), s"
        } else {
            "6. first sync end to end (1,000,000 members, LD 50/s), s"
        },
        value: format!("{:.2}", elapsed.as_secs_f64()),
        against: format!(
            "ideal ({writes} + 1 requests) / 50/s = {:.2}",
            ideal.as_secs_f64()
        ),
        ratio: format!("{ratio:.3}"),
        target: "<= 1.05 x ideal",
        met: done.is_some() && held == members && pushed.errors == 0 && ratio <= 1.05,
    });
    report.section(
        "first_sync_end_to_end",
        json!({"members": members, "ld_requests_per_second": ld_rps, "seconds": elapsed.as_secs_f64(),
               "ideal_seconds": ideal.as_secs_f64(), "ratio": ratio, "ingest_seconds": ingest.as_secs_f64(),
               "push_errors": pushed.errors, "members_in_ld": held, "creates": creates,
               "membership_requests": updates, "max_requests_in_1s": rate["max_in_window"],
               "cores": cores.iter().map(|(n, c)| (n.to_string(), json!(c))).collect::<serde_json::Map<_, _>>()}),
    );
}
