//! Figure 7: the bridge on 1, 2 and 3 replicas sharing one Redis.
//!
//! - **Ingest**: figure 1's load (1,000-member pushes, 16 connections)
//!   spread evenly over the replicas, changes/s against one replica's. On
//!   this 2-core machine every replica, Redis and the generator share the
//!   same cores, so the point is no regression, not a speed-up.
//! - **The rate is shared**: while the replicas flush what the load left,
//!   the most LaunchDarkly requests the emulator saw in any 1 s window,
//!   against the configured deployment-wide rate.
//! - **Rebalance**: with `flush.lease_ttl_ms` 3000, how long until a
//!   replica that joins holds its fair share of the partitions, and until
//!   the survivor holds every partition after one is killed with SIGKILL
//!   (read from the lease keys in Redis, every 20 ms).

use crate::harness::{amplitude, backlog, bridge_target, member, wait_until};
use crate::load::{self, LoadResult, Mode};
use crate::procs::{Bridge, BridgeOpts, CpuMeter, Redis};
use crate::report::{fmt_n, Report, Row};
use crate::Bench;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LD_RPS: f64 = 50.0;
const LEASE_TTL_MS: u64 = 3000;
/// `flush.lease_ttl_ms` must exceed the request timeout by 2 s.
const EXTRA: &str = "launchdarkly.request_timeout_ms = 1000\nflush.lease_ttl_ms = 3000";

fn opts() -> BridgeOpts {
    BridgeOpts {
        ld_rps: LD_RPS,
        max_delay_ms: 1000,
    }
}

/// One replica count's ingest run.
struct Run {
    replicas: usize,
    per_s: f64,
    /// The most LaunchDarkly requests in any 1 s window.
    max_1s: u64,
    errors: u64,
    generator_limited: bool,
}

/// Partitions held per lease holder, read from Redis.
fn holders(redis: &Redis) -> HashMap<String, usize> {
    use redis::Commands;
    let mut c = redis.conn().expect("redis connection");
    let keys: Vec<String> = c
        .scan_match("*:lease")
        .map(|i| i.filter_map(Result::ok).collect())
        .unwrap_or_default();
    let mut out = HashMap::new();
    for k in keys {
        if let Ok(Some(token)) = c.get::<_, Option<String>>(&k) {
            *out.entry(token).or_insert(0) += 1;
        }
    }
    out
}

/// Waits until `n` replicas hold every one of the 64 partitions, none more
/// than its fair share; returns how long that took.
async fn balanced(redis: &Redis, n: usize) -> Duration {
    const PARTITIONS: usize = 64;
    let fair = PARTITIONS.div_ceil(n);
    let start = Instant::now();
    loop {
        let h = holders(redis);
        let total: usize = h.values().sum();
        if h.len() == n && total == PARTITIONS && h.values().all(|c| *c <= fair) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "leases did not settle on {n} replica(s): {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Figure 1's bodies: every cohort in, then out (each push changes 1,000 members).
fn bodies(cohorts: usize) -> Arc<Vec<hyper::body::Bytes>> {
    let mut bodies = Vec::new();
    for include in [true, false] {
        for c in 0..cohorts {
            let members: Vec<String> = (0..1000).map(|i| member(c, i)).collect();
            bodies.push(amplitude(
                &format!("scale{c}"),
                include,
                1_767_225_600,
                &members,
            ));
        }
    }
    Arc::new(bodies)
}

/// The load spread over `bridges`, the connections shared evenly (the
/// first replicas get one more when they do not divide).
async fn spread(
    bridges: &[Bridge],
    bodies: Arc<Vec<hyper::body::Bytes>>,
    conns: usize,
    d: Duration,
) -> LoadResult {
    let n = bridges.len();
    let runs = bridges.iter().enumerate().map(|(i, b)| {
        let per = (conns / n + usize::from(i < conns % n)).max(1);
        let (target, bodies) = (bridge_target(b), bodies.clone());
        tokio::spawn(async move { load::run(&target, bodies, per, Mode::For(d)).await })
    });
    let mut sum = LoadResult::default();
    for r in runs.collect::<Vec<_>>() {
        let r = r.await.expect("load");
        sum.requests += r.requests;
        sum.accepted += r.accepted;
        sum.errors += r.errors;
        sum.elapsed = sum.elapsed.max(r.elapsed);
    }
    sum
}

pub async fn run(bench: &Bench, report: &mut Report) {
    eprintln!("bench: figure 7, 1, 2 and 3 replicas on one Redis");
    let cohorts = if bench.sz.quick { 50 } else { 200 };
    let mut rates = Vec::new();
    let mut sections = Vec::new();
    for n in 1..=3usize {
        bench.redis.flushall();
        bench.ctl.reset().await;
        let mut bridges = Vec::new();
        for _ in 0..n {
            bridges.push(Bridge::start_with(&bench.redis, &bench.emu, opts(), EXTRA).await);
        }
        balanced(&bench.redis, n).await;
        let warm = spread(
            &bridges,
            bodies(cohorts),
            bench.sz.batch_conns,
            Duration::from_secs(1),
        )
        .await;
        let mut procs: Vec<(&'static str, String)> = vec![
            ("redis", bench.redis.pid().to_string()),
            ("generator", "self".to_string()),
        ];
        for (i, b) in bridges.iter().enumerate() {
            procs.push((["bridge-1", "bridge-2", "bridge-3"][i], b.pid().to_string()));
        }
        let cpu = CpuMeter::start(&procs);
        let load = spread(
            &bridges,
            bodies(cohorts),
            bench.sz.batch_conns,
            bench.sz.load_for,
        )
        .await;
        let cores = cpu.cores();
        wait_until(
            "the replicas to flush the backlog",
            Duration::from_secs(300),
            || backlog(&bench.redis) == (0, 0),
        )
        .await;
        let rate = bench.ctl.get("/_emulator/rate?window_ms=1000").await;
        let max_1s = rate["max_in_window"].as_u64().unwrap_or(0);
        // LaunchDarkly's own window is 10 s: the sum over it, against 10 x the rate.
        let rate_10s = bench.ctl.get("/_emulator/rate?window_ms=10000").await;
        let max_10s = rate_10s["max_in_window"].as_u64().unwrap_or(0);
        let per_s = load.accepted_per_s();
        let cores_text = cores
            .iter()
            .map(|(n, c)| format!("{n} {c:.2}"))
            .collect::<Vec<_>>()
            .join(", ");
        let generator_limited = cores.iter().any(|(n, c)| *n == "generator" && *c > 0.9);
        eprintln!(
            "bench: figure 7, {n} replica(s): {} changes/s ({} errors, {} warm-up), LD at most {max_1s} in 1 s and {max_10s} in 10 s of {} requests; cores: {cores_text}{}",
            fmt_n(per_s),
            load.errors,
            warm.requests,
            rate["requests"],
            if generator_limited { " (LOAD GENERATOR WAS THE LIMIT)" } else { "" }
        );
        rates.push(Run {
            replicas: n,
            per_s,
            max_1s,
            errors: load.errors,
            generator_limited,
        });
        sections.push(json!({"replicas": n, "changes_per_s": per_s, "errors": load.errors,
            "ld_max_requests_in_1s": max_1s, "ld_max_requests_in_10s": max_10s, "ld_requests": rate["requests"], "generator_limited": generator_limited,
            "cores": cores.iter().map(|(n, c)| (n.to_string(), json!(c))).collect::<serde_json::Map<_, _>>()}));
    }
    let one = rates[0].per_s.max(1.0);
    for r in &rates[1..] {
        report.row(Row {
            figure: if r.replicas == 2 {
                "7a. ingest on 2 replicas (one Redis), changes/s"
            } else {
                "7b. ingest on 3 replicas (one Redis), changes/s"
            },
            value: format!(
                "{}{}",
                fmt_n(r.per_s),
                if r.generator_limited {
                    " (generator-limited)"
                } else {
                    ""
                }
            ),
            against: format!("1 replica: {}", fmt_n(one)),
            ratio: format!("{:.2}", r.per_s / one),
            target: ">= 0.90 (no regression; 2 cores)",
            met: r.errors == 0 && r.per_s / one >= 0.9,
        });
    }
    let max_1s = rates.iter().map(|r| r.max_1s).max().unwrap_or(0);
    report.row(Row {
        figure: "7c. LD requests in any 1 s, summed over 1-3 replicas",
        value: format!("{max_1s}"),
        against: format!("configured {LD_RPS:.0}/s for the deployment"),
        ratio: format!("{:.2}", max_1s as f64 / LD_RPS),
        target: "<= the configured rate (+1 burst)",
        met: max_1s as f64 <= LD_RPS + 1.0,
    });

    // Rebalance: one replica holds everything; a second joins; then dies.
    bench.redis.flushall();
    bench.ctl.reset().await;
    let first = Bridge::start_with(&bench.redis, &bench.emu, opts(), EXTRA).await;
    balanced(&bench.redis, 1).await;
    let joined = Instant::now();
    let second = Bridge::start_with(&bench.redis, &bench.emu, opts(), EXTRA).await;
    let ready = joined.elapsed();
    let join = ready + balanced(&bench.redis, 2).await;
    let killed = Instant::now();
    drop(second); // SIGKILL: its leases expire, they are not given up
    balanced(&bench.redis, 1).await;
    let death = killed.elapsed();
    drop(first);
    eprintln!(
        "bench: figure 7d: join {} ms (ready after {} ms), death {} ms, lease_ttl_ms {LEASE_TTL_MS}",
        join.as_millis(),
        ready.as_millis(),
        death.as_millis()
    );
    report.row(Row {
        figure: "7d. rebalance when a replica joins (spawn -> fair share), ms",
        value: format!("{}", join.as_millis()),
        against: format!("lease_ttl_ms {LEASE_TTL_MS}"),
        ratio: format!("{:.2}", join.as_millis() as f64 / LEASE_TTL_MS as f64),
        target: "(report)",
        met: true,
    });
    report.row(Row {
        figure: "7e. rebalance when a replica dies (SIGKILL -> all partitions held), ms",
        value: format!("{}", death.as_millis()),
        against: format!("lease_ttl_ms {LEASE_TTL_MS}"),
        ratio: format!("{:.2}", death.as_millis() as f64 / LEASE_TTL_MS as f64),
        target: "(report; bounded by the lease)",
        met: true,
    });
    report.section(
        "scale",
        json!({"replicas": sections, "lease_ttl_ms": LEASE_TTL_MS,
               "join_ms": join.as_millis() as u64, "join_ready_ms": ready.as_millis() as u64,
               "death_ms": death.as_millis() as u64}),
    );
}
