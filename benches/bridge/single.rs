//! Figure 2: single-change ingest (one new member per Amplitude push)
//! against a bare actix-web endpoint on the same machine, with group commit
//! off (`ingest.group_commit_wait_us = 0`) and on; and figure 2b, the p99
//! latency of a one-member push at half the rate each achieved (open loop).

use crate::harness::{amplitude, percentile};
use crate::load::{self, LoadResult, Mode, Target};
use crate::procs::{self, Bridge, BridgeOpts, CpuMeter};
use crate::report::{fmt_n, Report, Row};
use crate::Bench;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// The group commit wait of the "on" runs (µs).
const GROUP_WAIT_US: u64 = 500;

/// One-member pushes, each adding a member its cohort never had (1,000
/// cohorts round-robin); `tag` keeps the runs' members apart.
fn singles(tag: &str, n: usize) -> Arc<Vec<Bytes>> {
    Arc::new(
        (0..n)
            .map(|i| {
                amplitude(
                    &format!("one{}", i % 1000),
                    true,
                    1_767_225_600,
                    &[format!("{tag}{i:019}")],
                )
            })
            .collect(),
    )
}

/// The load average (`/proc/loadavg`'s first three fields).
fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What one configuration measured.
struct Measured {
    name: &'static str,
    load: LoadResult,
    /// Cores used during the closed-loop load, per process.
    cores: Vec<(&'static str, f64)>,
    /// Open loop at half `load.rps()`: latencies (µs), sends that started
    /// more than 1 ms late, and the rate achieved.
    p50_us: i64,
    p99_us: i64,
    late: usize,
    half_rate: f64,
    /// Open loop at the first configuration's half rate.
    same_rate: f64,
    same_p50_us: i64,
    same_p99_us: i64,
    /// Redis commands per request: (name, calls, CPU µs).
    commands: Vec<(String, f64, f64)>,
    loadavg: String,
}

/// Runs figure 2 (figure 1's bridge is dropped: each configuration gets a
/// bridge of its own), then the bare ceiling.
pub async fn run(bench: &Bench, bridge: Bridge, report: &mut Report) {
    drop(bridge);
    eprintln!("bench: figure 2, single-change ingest");
    // Enough new members for the load's length at well above the rates seen.
    let n = if bench.sz.quick { 200_000 } else { 600_000 };
    let mut runs = Vec::new();
    for (name, wait_us) in [("off", 0), ("on", GROUP_WAIT_US)] {
        // Each configuration starts from an empty Redis (the earlier runs'
        // members would otherwise make the later runs' hashes bigger).
        bench.redis.flushall();
        let bridge = Bridge::start_with(
            &bench.redis,
            &bench.emu,
            BridgeOpts {
                ld_rps: 50.0,
                max_delay_ms: 1000,
            },
            // BENCH_SINGLE_EXTRA: more settings for both (e.g.
            // `flush.history_entries_per_cohort = 0`, to see what one costs).
            &format!(
                "ingest.group_commit_wait_us = {wait_us}\n{}",
                std::env::var("BENCH_SINGLE_EXTRA").unwrap_or_default()
            ),
        )
        .await;
        runs.push(measure(bench, &bridge, name, n).await);
        drop(bridge);
    }
    let bare = load::BareServer::start();
    let bare_target = Target {
        port: bare.port,
        path: "/v1/webhooks/amp".into(),
        token: Some(procs::SOURCE_SECRET.into()),
    };
    let bodies = singles("bare", 1000);
    let conns = bench.sz.single_conns;
    load::run(
        &bare_target,
        bodies.clone(),
        conns,
        Mode::For(Duration::from_secs(1)),
    )
    .await;
    let ceiling: LoadResult =
        load::run(&bare_target, bodies, conns, Mode::For(bench.sz.load_for)).await;
    let ceiling_loadavg = uptime();
    bare.stop().await;
    let mut section = serde_json::Map::new();
    for m in &runs {
        let ratio = m.load.rps() / ceiling.rps();
        let cores_text = m
            .cores
            .iter()
            .map(|(n, c)| format!("{n} {c:.2}"))
            .collect::<Vec<_>>()
            .join(", ");
        // CPU per request: where the time goes.
        let per_req = |who: &str| {
            m.cores
                .iter()
                .find(|(n, _)| *n == who)
                .map_or(0.0, |(_, c)| c * 1e6 / m.load.rps())
        };
        let generator_limited = m.cores.iter().any(|(n, c)| *n == "generator" && *c > 0.9);
        eprintln!(
            "bench: figure 2, group commit {}: {} req/s ({} errors), ratio {ratio:.2}; cores: {cores_text}; \
             CPU µs/request: bridge {:.1}, redis {:.1}, generator {:.1}; p50/p99 at {} req/s: {} / {} µs \
             ({} sends > 1 ms late); p50/p99 at {} req/s: {} / {} µs; load {}{}\n  redis per request (calls, µs): {}",
            m.name,
            fmt_n(m.load.rps()),
            m.load.errors,
            per_req("bridge"),
            per_req("redis"),
            per_req("generator"),
            fmt_n(m.half_rate),
            m.p50_us,
            m.p99_us,
            m.late,
            fmt_n(m.same_rate),
            m.same_p50_us,
            m.same_p99_us,
            m.loadavg,
            if generator_limited {
                " (LOAD GENERATOR WAS THE LIMIT)"
            } else {
                ""
            },
            m.commands
                .iter()
                .take(12)
                .map(|(n, c, us)| format!("{n} {c:.2} {us:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        report.row(Row {
            figure: if m.name == "off" {
                "2. single-change ingest (one new member per push), group commit off, req/s"
            } else {
                "2. single-change ingest (one new member per push), group commit on (500 µs), req/s"
            },
            value: format!(
                "{}; p99 {:.2} ms at half rate",
                fmt_n(m.load.rps()),
                m.p99_us as f64 / 1000.0
            ),
            against: format!("{} req/s (bare actix-web endpoint)", fmt_n(ceiling.rps())),
            ratio: format!("{ratio:.2}"),
            target: ">= 0.30",
            met: m.load.errors == 0 && ratio >= 0.3,
        });
        section.insert(
            m.name.to_string(),
            json!({"requests_per_s": m.load.rps(), "errors": m.load.errors,
                   "accepted_per_s": m.load.accepted_per_s(), "ratio": ratio,
                   "cores": m.cores.iter().map(|(n, c)| (n.to_string(), json!(c))).collect::<serde_json::Map<_, _>>(),
                   "cpu_us_per_request": {"bridge": per_req("bridge"), "redis": per_req("redis"), "generator": per_req("generator")},
                   "generator_limited": generator_limited,
                   "half_rate_requests_per_s": m.half_rate, "half_rate_p50_us": m.p50_us,
                   "half_rate_p99_us": m.p99_us, "half_rate_late_sends": m.late,
                   "same_rate_requests_per_s": m.same_rate, "same_rate_p50_us": m.same_p50_us,
                   "same_rate_p99_us": m.same_p99_us,
                   "redis_per_request": m.commands.iter().map(|(n, c, us)| (n.clone(), json!({"calls": c, "usec": us}))).collect::<serde_json::Map<_, _>>(),
                   "loadavg": m.loadavg}),
        );
    }
    section.insert("connections".into(), json!(conns));
    section.insert("ceiling_requests_per_s".into(), json!(ceiling.rps()));
    section.insert("ceiling_loadavg".into(), json!(ceiling_loadavg));
    report.section("single_ingest", serde_json::Value::Object(section));
}

/// Closed loop (the figure), then open loop at half the achieved rate.
async fn measure(bench: &Bench, bridge: &Bridge, name: &'static str, n: usize) -> Measured {
    let target = crate::harness::bridge_target(bridge);
    let conns = bench.sz.single_conns;
    let warm = singles(&format!("w{name}"), 20_000);
    load::run(&target, warm, conns, Mode::For(Duration::from_secs(1))).await;
    let bodies = singles(&format!("s{name}"), n);
    let cpu = CpuMeter::start(&[
        ("bridge", bridge.pid().to_string()),
        ("redis", bench.redis.pid().to_string()),
        ("generator", "self".to_string()),
    ]);
    let loadavg = uptime();
    let mut redis = bench.redis.conn().expect("redis connection");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut redis)
        .expect("CONFIG RESETSTAT");
    let result = load::run(&target, bodies, conns, Mode::For(bench.sz.load_for)).await;
    let cores = cpu.cores();
    let commands = commandstats(&mut redis, result.requests);
    let half_rate = result.rps() / 2.0;
    let open = singles(&format!("h{name}"), n);
    let (mut lat, late) = open_loop(&target, open, conns, half_rate, bench.sz.load_for).await;
    lat.sort_unstable();
    // The same rate for every configuration too (figure 2's first one's
    // half rate), so their latencies compare at one load.
    let same_rate = *SAME_RATE.get_or_init(|| half_rate);
    let again = singles(&format!("r{name}"), n);
    let (mut same, _) = open_loop(&target, again, conns, same_rate, bench.sz.load_for).await;
    same.sort_unstable();
    Measured {
        name,
        load: result,
        cores,
        p50_us: percentile(&lat, 50.0),
        p99_us: percentile(&lat, 99.0),
        late,
        half_rate,
        same_rate,
        same_p50_us: percentile(&same, 50.0),
        same_p99_us: percentile(&same, 99.0),
        commands,
        loadavg,
    }
}

/// The first configuration's half rate (see [`measure`]).
static SAME_RATE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

/// Redis's `INFO commandstats` since the reset: per command (the scripts'
/// own calls included), calls and CPU µs per request, costliest first.
fn commandstats(redis: &mut redis::Connection, requests: u64) -> Vec<(String, f64, f64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(redis)
        .unwrap_or_default();
    let per = requests.max(1) as f64;
    let mut out: Vec<(String, f64, f64)> = info
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |k: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            Some((name.to_string(), field("calls") / per, field("usec") / per))
        })
        .collect();
    out.sort_by(|a, b| b.2.total_cmp(&a.2));
    out
}

/// Sends `bodies` in order at `rate` per second for `length` over
/// `connections` keep-alive connections: request i is due at start + i/rate
/// and sent by the first free connection. Returns each 2xx's latency (µs,
/// from its send) and how many sends started more than 1 ms after their due
/// time (the connections were all busy, or the timer was late).
async fn open_loop(
    target: &Target,
    bodies: Arc<Vec<Bytes>>,
    connections: usize,
    rate: f64,
    length: Duration,
) -> (Vec<i64>, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let late = Arc::new(AtomicUsize::new(0));
    let lat = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let total = ((rate * length.as_secs_f64()) as usize).min(bodies.len());
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (target, bodies, next) = (target.clone(), bodies.clone(), next.clone());
        let (late, lat) = (late.clone(), lat.clone());
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(("127.0.0.1", target.port))
                .await
                .expect("connect");
            let _ = stream.set_nodelay(true);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                let sent = Instant::now();
                if sent.duration_since(due) > Duration::from_millis(1) {
                    late.fetch_add(1, Ordering::Relaxed);
                }
                let mut req = Request::post(target.path.as_str())
                    .header("host", "127.0.0.1")
                    .header("content-type", "application/json");
                if let Some(t) = &target.token {
                    req = req.header("x-cohort-bridge-token", t.as_str());
                }
                let req = req.body(Full::new(bodies[i].clone())).expect("request");
                let Ok(resp) = sender.send_request(req).await else {
                    break;
                };
                let ok = resp.status().is_success();
                let _ = resp.into_body().collect().await;
                if ok {
                    mine.push(sent.elapsed().as_micros() as i64);
                }
            }
            lat.lock().unwrap().extend(mine);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let out = std::mem::take(&mut *lat.lock().unwrap());
    (out, late.load(Ordering::Relaxed))
}
