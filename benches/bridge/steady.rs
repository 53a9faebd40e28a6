//! Figure 4b: propagation under steady load, the realistic shape of
//! figure 4a. Pushes of 10 new members each arrive at a fixed rate, round
//! robin over the cohorts, so every link keeps receiving changes while its
//! own flush is in flight. LaunchDarkly's configured rate is twice what the
//! load needs (one request per link per `max_delay_ms`, or one per full
//! batch), so half of it is used.
//!
//! Three shapes: 2,000 changes/s over 10 cohorts (the measurement),
//! 20,000 changes/s over 10 cohorts (full batches), and 20,000 changes/s
//! over 1,000 cohorts (a thousand links, each due every `max_delay_ms`).
//!
//! The latency of a member is from the 2xx of its push to the completion of
//! the emulator request that carried it, read from the emulator's request
//! log while the load runs (the log keeps only the last 10,000 requests).
//! The row names the cores each process used, and says when the load
//! generator could not keep the rate (then the figure measures less load
//! than it names).

use crate::harness::{amplitude, now_ms, percentile, warm_up, Control, MAX_DELAY_MS, MAX_KEYS};
use crate::procs::{Bridge, BridgeOpts, CpuMeter};
use crate::report::{fmt_n, Report, Row};
use crate::Bench;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Members per push.
const PER_PUSH: usize = 10;

/// Pushes in flight at once, at most: more means the bridge answers slower
/// than the rate asks, which the row then reports as a limit.
const MAX_IN_FLIGHT: usize = 256;

struct Shape {
    changes_per_s: u64,
    cohorts: usize,
    figure: &'static str,
}

const SHAPES: [Shape; 3] = [
    Shape {
        changes_per_s: 2_000,
        cohorts: 10,
        figure: "4b. steady propagation, 2,000 changes/s over 10 cohorts, p50 / p99 / max ms",
    },
    Shape {
        changes_per_s: 20_000,
        cohorts: 10,
        figure: "4c. steady propagation, 20,000 changes/s over 10 cohorts, p50 / p99 / max ms",
    },
    Shape {
        changes_per_s: 20_000,
        cohorts: 1_000,
        figure: "4d. steady propagation, 20,000 changes/s over 1,000 cohorts, p50 / p99 / max ms",
    },
];

/// LaunchDarkly requests per second the shape needs: each link flushes once
/// per `max_delay_ms`, or once per full batch when that comes sooner.
fn needed_rps(s: &Shape) -> f64 {
    let per_link = s.changes_per_s as f64 / s.cohorts as f64;
    let flushes = (1000.0 / MAX_DELAY_MS as f64).max(per_link / MAX_KEYS as f64);
    s.cohorts as f64 * flushes
}

pub async fn run(bench: &Bench, report: &mut Report) {
    let mut sections = Vec::new();
    // `BENCH_SHAPES=4b,4d` runs only those shapes (all by default).
    let pick = std::env::var("BENCH_SHAPES").unwrap_or_default();
    for (i, shape) in SHAPES.iter().enumerate() {
        if !pick.is_empty() && !pick.split(',').any(|p| shape.figure.starts_with(p.trim())) {
            continue;
        }
        sections.push(run_shape(bench, report, i, shape).await);
    }
    report.section("steady_propagation", json!(sections));
}

async fn run_shape(
    bench: &Bench,
    report: &mut Report,
    index: usize,
    shape: &Shape,
) -> serde_json::Value {
    eprintln!("bench: {}", shape.figure);
    bench.redis.flushall();
    bench.ctl.reset().await;
    let ld_rps = 2.0 * needed_rps(shape);
    let bridge = Bridge::start(
        &bench.redis,
        &bench.emu,
        BridgeOpts {
            ld_rps,
            max_delay_ms: MAX_DELAY_MS,
        },
    )
    .await;
    let prefix = format!("st{index}c");
    warm_up(&bench.http, &bench.ctl, &bridge, &prefix, shape.cohorts).await;
    let since = bench.ctl.last_seq().await.unwrap_or(0);

    let cpu = CpuMeter::start(&[
        ("bridge", bridge.pid().to_string()),
        ("redis", bench.redis.pid().to_string()),
        ("emulator", bench.emu.pid().to_string()),
        ("generator", "self".to_string()),
    ]);
    let done = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(HashMap::new()));
    let reader = tokio::spawn(read_log(
        Control::new(&bench.emu),
        since,
        acks.clone(),
        done.clone(),
    ));
    let load = generate(bench, &bridge, &prefix, index, shape).await;
    let cores = cpu.cores();
    // Every member sent must reach LaunchDarkly; give the tail a while.
    let expected = load.sent.lock().expect("sent").len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acks.lock().expect("acks").len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    done.store(true, Ordering::SeqCst);
    let _ = reader.await;
    let stats = bench.ctl.get("/_emulator/stats").await;
    let acks = acks.lock().expect("acks");
    drop(bridge);

    let sent = load.sent.lock().expect("sent");
    let mut lat: Vec<i64> = sent
        .iter()
        .filter_map(|(m, at)| acks.get(m).map(|done| done - at))
        .collect();
    lat.sort_unstable();
    let (p50, p99) = (percentile(&lat, 50.0), percentile(&lat, 99.0));
    let max = lat.last().copied().unwrap_or(-1);
    let ceiling = MAX_DELAY_MS as i64 + 250;
    let achieved = load.pushes as f64 * PER_PUSH as f64 / load.seconds;
    // The generator is the limit when it sent less than 95 % of the rate.
    let limited = achieved < 0.95 * shape.changes_per_s as f64;
    let cores_text = cores
        .iter()
        .map(|(n, c)| format!("{n} {c:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!(
        "bench: {}: p50 {p50} p99 {p99} max {max} ms; {} of {} members acked; {} changes/s sent{}; cores: {cores_text}",
        shape.figure,
        lat.len(),
        sent.len(),
        fmt_n(achieved),
        if limited { " (LOAD GENERATOR WAS THE LIMIT)" } else { "" },
    );
    report.row(Row {
        figure: shape.figure,
        value: format!(
            "{p50} / {p99} / {max}{}",
            if limited { " (generator-limited)" } else { "" }
        ),
        against: format!("max_delay_ms + 250 = {ceiling}"),
        ratio: format!("{:.2}", p99 as f64 / ceiling as f64),
        target: "p99 <= max_delay_ms + 250",
        met: !limited && lat.len() == sent.len() && p99 >= 0 && p99 <= ceiling,
    });
    json!({
        "figure": shape.figure,
        "changes_per_second_asked": shape.changes_per_s,
        "changes_per_second_sent": achieved,
        "generator_limited": limited,
        "cohorts": shape.cohorts,
        "members_per_push": PER_PUSH,
        "ld_requests_per_second_configured": ld_rps,
        "ld_max_requests_in_1s": stats["max_requests_in_1s"],
        "ld_rate_violations": stats["violations"]["rate_exceeded"],
        "max_delay_ms": MAX_DELAY_MS,
        "sent": sent.len(),
        "samples": lat.len(),
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": max,
        "ratio_p99_to_ceiling": p99 as f64 / ceiling as f64,
        "push_errors": load.errors,
        "cores": cores.iter().map(|(n, c)| (n.to_string(), json!(c))).collect::<serde_json::Map<_, _>>(),
    })
}

struct Load {
    sent: Arc<Mutex<HashMap<String, i64>>>,
    pushes: u64,
    errors: u64,
    seconds: f64,
}

/// Sends the shape's pushes at its rate (paced in 10 ms steps) for the
/// figure's length; returns every member that got a 2xx, with when.
async fn generate(
    bench: &Bench,
    bridge: &Bridge,
    prefix: &str,
    index: usize,
    shape: &Shape,
) -> Load {
    let pushes_per_s = shape.changes_per_s as f64 / PER_PUSH as f64;
    let sent = Arc::new(Mutex::new(HashMap::new()));
    let pushes = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let url = format!("http://127.0.0.1:{}/v1/webhooks/amp", bridge.port);
    let length = bench.sz.propagation_for;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n: u64 = 0;
    let mut tasks = tokio::task::JoinSet::new();
    while start.elapsed() < length {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * pushes_per_s) as u64;
        while n < due {
            // A full set of slots means the bridge answers slower than the
            // rate: wait (the achieved rate shows it).
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let members: Vec<String> = (0..PER_PUSH)
                .map(|j| format!("s{index}n{n:010}x{j}"))
                .collect();
            let body = amplitude(
                &format!("{prefix}{}", n as usize % shape.cohorts),
                true,
                2,
                &members,
            );
            let (http, url) = (bench.http.clone(), url.clone());
            let (sent, pushes, errors) = (sent.clone(), pushes.clone(), errors.clone());
            tasks.spawn(async move {
                let r = http
                    .post(&url)
                    .header("x-cohort-bridge-token", crate::procs::SOURCE_SECRET)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let at = now_ms();
                match r {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        let mut s = sent.lock().expect("sent");
                        for m in members {
                            s.insert(m, at);
                        }
                        pushes.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                drop(permit);
            });
            n += 1;
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let seconds = start.elapsed().as_secs_f64();
    Load {
        sent,
        pushes: pushes.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        seconds,
    }
}

/// Reads the emulator's request log until `done`: for each member added by
/// a 2xx membership request, when that request completed (into `seen`).
async fn read_log(
    ctl: Control,
    since: u64,
    seen: Arc<Mutex<HashMap<String, i64>>>,
    done: Arc<AtomicBool>,
) {
    let mut seq = since;
    loop {
        let finished = done.load(Ordering::SeqCst);
        for e in ctl.requests_since(seq).await {
            let Some(completed) = e["completed_ms"].as_i64() else {
                break; // still in flight: read it again next time
            };
            seq = e["seq"].as_u64().unwrap_or(seq);
            let ok = e["status"]
                .as_u64()
                .is_some_and(|s| (200..300).contains(&s));
            if e["route"] != "contexts" || !ok {
                continue;
            }
            let mut seen = seen.lock().expect("acks");
            for m in e["body"]["included"]["add"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(m) = m.as_str() {
                    seen.entry(m.to_string()).or_insert(completed);
                }
            }
        }
        if finished {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
