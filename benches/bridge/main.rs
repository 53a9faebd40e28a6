//! `cargo bench --bench bridge`: the bridge's figures against their ceilings,
//! measured in one run on this machine (see README, "Performance").
//!
//! Starts its own `redis-server` (AOF, `appendfsync everysec`), the
//! LaunchDarkly emulator and the release `cohort-bridge` as child processes,
//! drives them with a Rust load generator (pre-built bodies, keep-alive
//! connections), prints a table and writes `target/bench/report.json`.
//!
//! `BENCH_QUICK=1` (or `-- --quick`) runs smaller sizes for a smoke run.

mod batched;
mod bulk;
mod endtoend;
mod fairness;
mod harness;
mod load;
mod procs;
mod propagation;
mod report;
mod scale;
mod single;
mod steady;

use harness::Control;
use procs::{Emulator, Redis};
use report::Report;
use std::time::{Duration, Instant};

/// Sizes of one run.
struct Sizes {
    quick: bool,
    /// Figure 1: cohorts of 1,000 members, connections, seconds.
    batch_cohorts: usize,
    batch_conns: usize,
    /// Figures 1 and 2: how long each load runs.
    load_for: Duration,
    single_conns: usize,
    /// `redis-benchmark -n`.
    hset_requests: u64,
    /// Figures 3 and 5: cohorts × members per cohort (1,000,000 in the full run).
    bulk_cohorts: usize,
    bulk_members: usize,
    /// Figure 4: how long the steady load and the fairness sampling run.
    propagation_for: Duration,
    fairness_members: usize,
    fairness_for: Duration,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                quick,
                batch_cohorts: 50,
                batch_conns: 16,
                load_for: Duration::from_secs(3),
                single_conns: 32,
                hset_requests: 500_000,
                bulk_cohorts: 20,
                bulk_members: 5_000,
                propagation_for: Duration::from_secs(5),
                fairness_members: 100_000,
                fairness_for: Duration::from_secs(6),
            }
        } else {
            Sizes {
                quick,
                batch_cohorts: 200,
                batch_conns: 16,
                load_for: Duration::from_secs(10),
                single_conns: 32,
                hset_requests: 2_000_000,
                bulk_cohorts: 100,
                bulk_members: 10_000,
                propagation_for: Duration::from_secs(20),
                fairness_members: 1_000_000,
                fairness_for: Duration::from_secs(30),
            }
        }
    }
}

/// What every figure runs against: one Redis, one emulator, one HTTP client.
struct Bench {
    sz: Sizes,
    redis: Redis,
    emu: Emulator,
    ctl: Control,
    http: reqwest::Client,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let sz = Sizes::new(quick);
    let started = Instant::now();
    let mut report = Report::default();
    let redis = Redis::start();
    let emu = Emulator::start();
    let ctl = Control::new(&emu);
    eprintln!(
        "bench: {} run; redis :{}, emulator {}",
        if quick { "quick" } else { "full" },
        redis.port,
        emu.url
    );
    let bench = Bench {
        sz,
        redis,
        emu,
        ctl,
        http: reqwest::Client::new(),
    };

    // `BENCH_ONLY=steady` runs only figure 4b's steady shapes (for the
    // propagation work); `BENCH_ONLY=first-sync` only figure 1b.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    // `BENCH_ONLY=propagation`: figure 4a, then 4b-4d.
    if only == "propagation" {
        propagation::run(&bench, &mut report).await;
        steady::run(&bench, &mut report).await;
        report.finish(bench.sz.quick, started);
        return;
    }
    if only == "steady" {
        steady::run(&bench, &mut report).await;
        report.finish(bench.sz.quick, started);
        return;
    }
    // `BENCH_ONLY=bulk`: figures 3 and 5a only (LaunchDarkly requests, Redis bytes per member).
    if only == "bulk" {
        bulk::run(&bench, &mut report).await;
        report.finish(bench.sz.quick, started);
        return;
    }
    // `BENCH_ONLY=single`: figure 2 alone (group commit off and on).
    if only == "single" {
        let opts = procs::BridgeOpts {
            ld_rps: 50.0,
            max_delay_ms: 1000,
        };
        let bridge = procs::Bridge::start(&bench.redis, &bench.emu, opts).await;
        single::run(&bench, bridge, &mut report).await;
        report.finish(bench.sz.quick, started);
        return;
    }
    // `BENCH_ONLY=end-to-end` runs only figure 6, `BENCH_ONLY=scale` only figure 7.
    if only == "end-to-end" {
        endtoend::run(&bench, &mut report).await;
        report.finish(bench.sz.quick, started);
        return;
    }
    if only == "scale" {
        scale::run(&bench, &mut report).await;
        report.finish(bench.sz.quick, started);
        return;
    }
    if only == "first-sync" {
        batched::first_sync(&bench, &mut report).await;
        report.finish(bench.sz.quick, started);
        return;
    }
    let (bridge, peak_rss) = batched::run(&bench, &mut report).await;
    single::run(&bench, bridge, &mut report).await;
    batched::peak_rss_row(peak_rss, &mut report);
    // `BENCH_ONLY=ingest` stops after figures 1 and 2 (for profiling ingest).
    let ingest_only = only == "ingest";
    batched::first_sync(&bench, &mut report).await;
    if !ingest_only {
        bulk::run(&bench, &mut report).await;
        propagation::run(&bench, &mut report).await;
        steady::run(&bench, &mut report).await;
        fairness::run(&bench, &mut report).await;
        endtoend::run(&bench, &mut report).await;
        scale::run(&bench, &mut report).await;
    }
    report.finish(bench.sz.quick, started);
}
