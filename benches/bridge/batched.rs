//! Figure 1: batched ingest (1,000-member Amplitude pushes) against Redis's
//! own HSET ceiling; and figure 5b, the bridge's peak RSS during it.

use crate::harness::{amplitude, bridge_target, member};
use crate::load::{self, Mode};
use crate::procs::{Bridge, BridgeOpts, CpuMeter};
use crate::report::{fmt_n, Report, Row};
use crate::Bench;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Runs figure 1; returns its bridge (figure 2 measures the same one) and
/// the bridge's peak RSS during the load.
pub async fn run(bench: &Bench, report: &mut Report) -> (Bridge, u64) {
    // ---- Figure 1: batched ingest, and the bridge's peak RSS during it.
    let hset = bench.redis.hset_ceiling(bench.sz.hset_requests);
    let bridge = Bridge::start(
        &bench.redis,
        &bench.emu,
        BridgeOpts {
            ld_rps: 50.0,
            max_delay_ms: 1000,
        },
    )
    .await;
    // Every cohort in, then every cohort out, and again: each push changes
    // its 1,000 members (in the second round and after, it flips them back).
    let mut bodies = Vec::new();
    for include in [true, false] {
        for c in 0..bench.sz.batch_cohorts {
            let members: Vec<String> = (0..1000).map(|i| member(c, i)).collect();
            bodies.push(amplitude(
                &format!("batch{c}"),
                include,
                1_767_225_600,
                &members,
            ));
        }
    }
    let bodies = Arc::new(bodies);
    let target = bridge_target(&bridge);
    eprintln!("bench: figure 1, batched ingest");
    load::run(
        &target,
        bodies.clone(),
        bench.sz.batch_conns,
        Mode::For(Duration::from_secs(1)),
    )
    .await;
    let batch = load::run(
        &target,
        bodies,
        bench.sz.batch_conns,
        Mode::For(bench.sz.load_for),
    )
    .await;
    let peak_rss = bridge.peak_rss();
    let batch_rate = batch.accepted_per_s();
    report.row(Row {
        figure: "1. batched ingest (1,000-member Amplitude pushes), changes/s",
        value: fmt_n(batch_rate),
        against: format!("{} HSET/s (redis-benchmark -P 64)", fmt_n(hset)),
        ratio: format!("{:.2}", batch_rate / hset),
        target: ">= 500,000/s and >= 0.30",
        met: batch_rate >= 500_000.0 && batch_rate / hset >= 0.3,
    });
    report.section("batched_ingest",
        json!({"changes_per_s": batch_rate, "requests_per_s": batch.rps(), "requests": batch.requests,
               "errors": batch.errors, "connections": bench.sz.batch_conns, "seconds": batch.elapsed.as_secs_f64(),
               "ceiling_hset_per_s": hset, "ratio": batch_rate / hset}),
    );
    (bridge, peak_rss)
}

/// Figure 5b: the peak RSS that [`run`] measured.
pub fn peak_rss_row(peak_rss: u64, report: &mut Report) {
    report.row(Row {
        figure: "5b. bridge peak RSS during figure 1, MiB",
        value: format!("{:.1}", peak_rss as f64 / 1048576.0),
        against: "100 MiB".into(),
        ratio: format!("{:.2}", peak_rss as f64 / (100.0 * 1048576.0)),
        target: "<= 100 MiB",
        met: peak_rss > 0 && peak_rss <= 100 * 1048576,
    });
    report.section("bridge_peak_rss_bytes", json!(peak_rss));
}

/// Figure 1b: batched ingest of a first sync, the realistic shape of
/// figure 1. Every member of every push is new (figure 1 flips the same members
/// back and forth, so each change hits an existing field): 1,000-member
/// pushes over 50 cohorts, each body sent once, against the HSET ceiling
/// measured again beside it. The row names the cores each process used.
pub async fn first_sync(bench: &Bench, report: &mut Report) {
    eprintln!("bench: figure 1b, batched ingest of a first sync (every member new)");
    bench.redis.flushall();
    bench.ctl.reset().await;
    let hset = bench.redis.hset_ceiling(bench.sz.hset_requests);
    bench.redis.flushall();
    let bridge = Bridge::start(
        &bench.redis,
        &bench.emu,
        BridgeOpts {
            ld_rps: 50.0,
            max_delay_ms: 1000,
        },
    )
    .await;
    let cohorts = 50;
    // Enough bodies for about the load's length at figure 1's rate; each
    // sent once, so every change is a member the cohort never had.
    let bodies_n = if bench.sz.quick { 300 } else { 1500 };
    let bodies: Vec<_> = (0..bodies_n)
        .map(|b| {
            let c = b % cohorts;
            let round = b / cohorts;
            let members: Vec<String> = (0..1000).map(|i| member(c, round * 1000 + i)).collect();
            amplitude(&format!("first{c}"), true, 1_767_225_600, &members)
        })
        .collect();
    let target = bridge_target(&bridge);
    let cpu = CpuMeter::start(&[
        ("bridge", bridge.pid().to_string()),
        ("redis", bench.redis.pid().to_string()),
        ("generator", "self".to_string()),
    ]);
    let first = load::run(
        &target,
        Arc::new(bodies),
        bench.sz.batch_conns,
        Mode::EachOnce,
    )
    .await;
    let cores = cpu.cores();
    let rate = first.accepted_per_s();
    let bytes = bench.redis.used_memory();
    let cores_text = cores
        .iter()
        .map(|(n, c)| format!("{n} {c:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    // The generator is the limit when it used a whole core of its own.
    let generator_limited = cores.iter().any(|(n, c)| *n == "generator" && *c > 0.9);
    eprintln!(
        "bench: figure 1b: {} changes/s, {} errors; cores: {cores_text}{}",
        fmt_n(rate),
        first.errors,
        if generator_limited {
            " (LOAD GENERATOR WAS THE LIMIT)"
        } else {
            ""
        }
    );
    report.row(Row {
        figure: "1b. first-sync ingest (1,000 new members per push, 50 cohorts), changes/s",
        value: format!(
            "{}{}",
            fmt_n(rate),
            if generator_limited {
                " (generator-limited)"
            } else {
                ""
            }
        ),
        against: format!("{} HSET/s (redis-benchmark -P 64)", fmt_n(hset)),
        ratio: format!("{:.2}", rate / hset),
        target: ">= 0.45",
        met: first.errors == 0 && rate / hset >= 0.45,
    });
    report.section(
        "first_sync_ingest",
        json!({"changes_per_s": rate, "requests": first.requests, "errors": first.errors,
               "members": first.accepted, "seconds": first.elapsed.as_secs_f64(),
               "ceiling_hset_per_s": hset, "ratio": rate / hset,
               "redis_used_memory_bytes": bytes,
               "generator_limited": generator_limited,
               "cores": cores.iter().map(|(n, c)| (n.to_string(), json!(c))).collect::<serde_json::Map<_, _>>()}),
    );
}
