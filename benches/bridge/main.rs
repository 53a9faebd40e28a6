//! `cargo bench --bench bridge`: the bridge's figures against their ceilings,
//! measured in one run on this machine (see README, "Performance").
//!
//! Starts its own `redis-server` (AOF, `appendfsync everysec`), the
//! LaunchDarkly emulator and the release `cohort-bridge` as child processes,
//! drives them with a Rust load generator (pre-built bodies, keep-alive
//! connections), prints a table and writes `target/bench/report.json`.
//!
//! `BENCH_QUICK=1` (or `-- --quick`) runs smaller sizes for a smoke run.

mod load;
mod procs;

use hyper::body::Bytes;
use load::{LoadResult, Mode, Target};
use procs::{Bridge, BridgeOpts, Emulator, Redis};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

const MAX_KEYS: usize = 1000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A 20-character member key.
fn member(cohort: usize, i: usize) -> String {
    format!("m{cohort:05}x{i:07}abcdef")
}

/// An Amplitude Cohort Webhooks body (the shape Amplitude sends).
fn amplitude(cohort: &str, include: bool, time_s: u64, members: &[String]) -> Bytes {
    let mut s = String::with_capacity(64 + members.len() * 48);
    s.push_str(&format!(
        r#"{{"cohort_id":"{cohort}","cohort_name":"Bench {cohort}","in_cohort":{include},"computed_time":"{time_s}","users":["#
    ));
    for (i, m) in members.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(r#"{"user_id":""#);
        s.push_str(m);
        s.push_str(r#"","user_properties":{}}"#);
    }
    s.push_str("]}");
    Bytes::from(s)
}

fn bridge_target(b: &Bridge) -> Target {
    Target {
        port: b.port,
        path: "/v1/webhooks/amp".into(),
        token: Some(procs::SOURCE_SECRET.into()),
    }
}

/// The emulator's control API.
struct Control {
    http: reqwest::Client,
    base: String,
}

impl Control {
    fn new(emu: &Emulator) -> Control {
        Control {
            http: reqwest::Client::new(),
            base: emu.url.clone(),
        }
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("emulator control")
            .json()
            .await
            .expect("emulator JSON")
    }

    async fn post(&self, path: &str, body: Value) {
        self.http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("emulator control");
    }

    async fn reset(&self) {
        self.post("/_emulator/reset", json!({})).await;
    }

    async fn route_count(&self, route: &str) -> u64 {
        self.get("/_emulator/stats").await["by_route"][route]
            .as_u64()
            .unwrap_or(0)
    }

    async fn requests_since(&self, seq: u64) -> Vec<Value> {
        self.get(&format!("/_emulator/requests?since={seq}"))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn members(&self, key: &str) -> usize {
        self.get(&format!("/_emulator/segments/default/production/{key}"))
            .await["included"]
            .as_array()
            .map_or(0, Vec::len)
    }
}

/// One POST; returns the wall-clock ms at which its 2xx arrived.
async fn post_one(http: &reqwest::Client, b: &Bridge, body: Bytes) -> Option<i64> {
    let r = http
        .post(format!("http://127.0.0.1:{}/v1/webhooks/amp", b.port))
        .header("x-cohort-bridge-token", procs::SOURCE_SECRET)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .ok()?;
    let ok = r.status().is_success();
    let at = now_ms();
    let _ = r.bytes().await;
    ok.then_some(at)
}

/// Members still dirty across every link, and links still due.
fn backlog(redis: &Redis) -> (u64, u64) {
    use redis::Commands;
    let mut c = redis.conn().expect("redis connection");
    let dirty: Vec<String> = c
        .scan_match("*:dirty:*")
        .map(|i| i.filter_map(Result::ok).collect())
        .unwrap_or_default();
    let due: Vec<String> = c
        .scan_match("*:due")
        .map(|i| i.filter_map(Result::ok).collect())
        .unwrap_or_default();
    let members: u64 = dirty
        .iter()
        .map(|k| c.scard::<_, u64>(k).unwrap_or(0))
        .sum();
    let links: u64 = due.iter().map(|k| c.zcard::<_, u64>(k).unwrap_or(0)).sum();
    (members, links)
}

async fn wait_until<F: FnMut() -> bool>(what: &str, limit: Duration, mut f: F) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Latencies from each member's 2xx to the completion of the emulator
/// request that carried it, read from the emulator's request log.
async fn latencies(
    ctl: &Control,
    sent: &HashMap<String, i64>,
    since: u64,
    limit: Duration,
) -> Vec<i64> {
    let mut seen: HashMap<String, i64> = HashMap::new();
    let mut seq = since;
    let start = Instant::now();
    while seen.len() < sent.len() && start.elapsed() < limit {
        for e in ctl.requests_since(seq).await {
            let Some(done) = e["completed_ms"].as_i64() else {
                // Still in flight: read it again next time.
                break;
            };
            seq = e["seq"].as_u64().unwrap_or(seq);
            let ok = e["status"]
                .as_u64()
                .is_some_and(|s| (200..300).contains(&s));
            if e["route"] != "contexts" || !ok {
                continue;
            }
            for m in e["body"]["included"]["add"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(m) = m.as_str().filter(|m| sent.contains_key(*m)) {
                    seen.entry(m.to_string()).or_insert(done);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut out: Vec<i64> = sent
        .iter()
        .filter_map(|(m, at)| seen.get(m).map(|done| done - at))
        .collect();
    out.sort_unstable();
    out
}

struct Row {
    figure: &'static str,
    value: String,
    against: String,
    ratio: String,
    target: &'static str,
    met: bool,
}

fn fmt_n(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let sz = Sizes::new(quick);
    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    let mut report = serde_json::Map::new();
    let redis = Redis::start();
    let emu = Emulator::start();
    let ctl = Control::new(&emu);
    eprintln!(
        "bench: {} run; redis :{}, emulator {}",
        if quick { "quick" } else { "full" },
        redis.port,
        emu.url
    );

    // ---- Figure 1: batched ingest, and the bridge's peak RSS during it.
    let hset = redis.hset_ceiling(sz.hset_requests);
    let bridge = Bridge::start(
        &redis,
        &emu,
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
        for c in 0..sz.batch_cohorts {
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
        sz.batch_conns,
        Mode::For(Duration::from_secs(1)),
    )
    .await;
    let batch = load::run(&target, bodies, sz.batch_conns, Mode::For(sz.load_for)).await;
    let peak_rss = bridge.peak_rss();
    let batch_rate = batch.accepted_per_s();
    rows.push(Row {
        figure: "1. batched ingest (1,000-member Amplitude pushes), changes/s",
        value: fmt_n(batch_rate),
        against: format!("{} HSET/s (redis-benchmark -P 64)", fmt_n(hset)),
        ratio: format!("{:.2}", batch_rate / hset),
        target: ">= 500,000/s and >= 0.30",
        met: batch_rate >= 500_000.0 && batch_rate / hset >= 0.3,
    });
    report.insert(
        "batched_ingest".into(),
        json!({"changes_per_s": batch_rate, "requests_per_s": batch.rps(), "requests": batch.requests,
               "errors": batch.errors, "connections": sz.batch_conns, "seconds": batch.elapsed.as_secs_f64(),
               "ceiling_hset_per_s": hset, "ratio": batch_rate / hset}),
    );

    // ---- Figure 2: single-change ingest against a bare actix-web endpoint.
    eprintln!("bench: figure 2, single-change ingest");
    let singles: Vec<Bytes> = (0..1000)
        .map(|c| {
            amplitude(
                &format!("one{c}"),
                true,
                1_767_225_600,
                &[format!("s{c:019}")],
            )
        })
        .collect();
    let singles = Arc::new(singles);
    load::run(
        &target,
        singles.clone(),
        sz.single_conns,
        Mode::For(Duration::from_secs(1)),
    )
    .await;
    let single = load::run(
        &target,
        singles.clone(),
        sz.single_conns,
        Mode::For(sz.load_for),
    )
    .await;
    drop(bridge);
    let bare = load::BareServer::start();
    let bare_target = Target {
        port: bare.port,
        path: "/v1/webhooks/amp".into(),
        token: Some(procs::SOURCE_SECRET.into()),
    };
    load::run(
        &bare_target,
        singles.clone(),
        sz.single_conns,
        Mode::For(Duration::from_secs(1)),
    )
    .await;
    let ceiling: LoadResult = load::run(
        &bare_target,
        singles,
        sz.single_conns,
        Mode::For(sz.load_for),
    )
    .await;
    bare.stop().await;
    rows.push(Row {
        figure: "2. single-change ingest (one-member Amplitude pushes), req/s",
        value: fmt_n(single.rps()),
        against: format!("{} req/s (bare actix-web endpoint)", fmt_n(ceiling.rps())),
        ratio: format!("{:.2}", single.rps() / ceiling.rps()),
        target: ">= 0.30",
        met: single.rps() / ceiling.rps() >= 0.3,
    });
    report.insert(
        "single_ingest".into(),
        json!({"requests_per_s": single.rps(), "errors": single.errors, "connections": sz.single_conns,
               "ceiling_requests_per_s": ceiling.rps(), "ratio": single.rps() / ceiling.rps()}),
    );
    rows.push(Row {
        figure: "5b. bridge peak RSS during figure 1, MiB",
        value: format!("{:.1}", peak_rss as f64 / 1048576.0),
        against: "100 MiB".into(),
        ratio: format!("{:.2}", peak_rss as f64 / (100.0 * 1048576.0)),
        target: "<= 100 MiB",
        met: peak_rss > 0 && peak_rss <= 100 * 1048576,
    });
    report.insert("bridge_peak_rss_bytes".into(), json!(peak_rss));

    // `BENCH_ONLY=ingest` stops after figures 1 and 2 (for profiling ingest).
    let ingest_only = std::env::var("BENCH_ONLY").is_ok_and(|v| v == "ingest");
    if !ingest_only {
        // ---- Figures 3 and 5a: 1,000,000 members, LaunchDarkly requests and Redis memory.
        eprintln!("bench: figures 3 and 5, bulk sync");
        redis.flushall();
        ctl.reset().await;
        let bridge = Bridge::start(
            &redis,
            &emu,
            BridgeOpts {
                ld_rps: 100.0,
                max_delay_ms: 1000,
            },
        )
        .await;
        let base_memory = redis.used_memory();
        let mut bulk = Vec::new();
        for chunk in 0..sz.bulk_members / 1000 {
            for c in 0..sz.bulk_cohorts {
                let members: Vec<String> = (chunk * 1000..(chunk + 1) * 1000)
                    .map(|i| member(c, i))
                    .collect();
                bulk.push(amplitude(
                    &format!("bulk{c}"),
                    true,
                    1_767_225_600,
                    &members,
                ));
            }
        }
        let target = bridge_target(&bridge);
        let pushed = load::run(&target, Arc::new(bulk), 8, Mode::EachOnce).await;
        // Flips: added and removed again before their flush is due.
        let http = reqwest::Client::new();
        let flips = 10;
        for f in 0..flips {
            let members: Vec<String> = (0..200).map(|i| member(90_000 + f, i)).collect();
            let id = format!("flip{f}");
            post_one(
                &http,
                &bridge,
                amplitude(&id, true, 1_767_225_600, &members),
            )
            .await;
            post_one(
                &http,
                &bridge,
                amplitude(&id, false, 1_767_225_601, &members),
            )
            .await;
        }
        let total_members = (sz.bulk_cohorts * sz.bulk_members) as u64;
        let changes = pushed.accepted + (flips * 400) as u64;
        let settle = wait_until("the bulk sync to settle", Duration::from_secs(600), || {
            backlog(&redis) == (0, 0)
        })
        .await;
        let creates = ctl.route_count("create").await;
        let updates = ctl.route_count("contexts").await;
        let mut written = 0;
        for c in 0..sz.bulk_cohorts {
            written += ctl.members(&format!("amp-bulk{c}")).await;
        }
        let ideal = (sz.bulk_cohorts * (sz.bulk_members.div_ceil(MAX_KEYS) + 1)) as u64;
        let actual = creates + updates;
        let memory = redis.used_memory().saturating_sub(base_memory);
        let per_member = memory as f64 / total_members as f64;
        let encoding: String = {
            let mut c = redis.conn().expect("redis");
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("*:want:amp:bulk0")
                .query(&mut c)
                .unwrap_or_default();
            keys.first()
                .and_then(|k| {
                    redis::cmd("OBJECT")
                        .arg("ENCODING")
                        .arg(k)
                        .query(&mut c)
                        .ok()
                })
                .unwrap_or_default()
        };
        drop(bridge);
        let per_million = actual as f64 * 1e6 / changes as f64;
        rows.push(Row {
            figure: "3. LaunchDarkly requests per 1,000,000 changes",
            value: format!("{per_million:.0} ({actual} for {changes} changes)"),
            against: format!("ideal {ideal}"),
            ratio: format!("{:.3}", actual as f64 / ideal as f64),
            target: "<= 1.01 x ideal",
            met: actual as f64 <= 1.01 * ideal as f64 && written as u64 == total_members,
        });
        rows.push(Row {
            figure: "3b. vs a per-event forwarder (1 request per change)",
            value: format!("{actual}"),
            against: format!("{changes}"),
            ratio: format!("{:.5}", actual as f64 / changes as f64),
            target: "(report)",
            met: true,
        });
        rows.push(Row {
            figure: "5a. Redis bytes per tracked member (20-char keys, settled)",
            value: format!("{per_member:.1}"),
            against: format!("{total_members} members, {} bytes", fmt_n(memory as f64)),
            ratio: format!("{:.2}", per_member / 100.0),
            target: "<= 100 bytes",
            met: per_member <= 100.0,
        });
        report.insert(
        "ld_efficiency".into(),
        json!({"changes": changes, "creates": creates, "membership_requests": updates, "actual": actual,
               "ideal": ideal, "ratio_to_ideal": actual as f64 / ideal as f64, "per_million_changes": per_million,
               "ratio_to_per_event": actual as f64 / changes as f64, "flip_cohorts": flips,
               "members_in_ld": written, "members_expected": total_members, "settle_seconds": settle.as_secs_f64()}),
    );
        report.insert(
            "redis_memory".into(),
            json!({"members": total_members, "bytes": memory, "bytes_per_member": per_member,
               "cohorts": sz.bulk_cohorts, "want_hash_encoding": encoding}),
        );

        // ---- Figure 4a: propagation at half the configured LaunchDarkly rate.
        eprintln!("bench: figure 4, propagation");
        redis.flushall();
        ctl.reset().await;
        let ld_rps = 20.0;
        let max_delay = 1000;
        let bridge = Bridge::start(
            &redis,
            &emu,
            BridgeOpts {
                ld_rps,
                max_delay_ms: max_delay,
            },
        )
        .await;
        let cohorts = 50;
        for c in 0..cohorts {
            post_one(
                &http,
                &bridge,
                amplitude(&format!("prop{c}"), true, 1, &[member(c, 9_999_999)]),
            )
            .await;
        }
        let mut warm = 0;
        let start = Instant::now();
        while warm < cohorts as u64 && start.elapsed() < Duration::from_secs(60) {
            warm = ctl.route_count("contexts").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let since = ctl.get("/_emulator/stats").await["requests"]
            .as_u64()
            .unwrap_or(0);
        let since = ctl
            .requests_since(0)
            .await
            .last()
            .and_then(|e| e["seq"].as_u64())
            .unwrap_or(since);
        let mut sent = HashMap::new();
        let every = Duration::from_secs_f64(2.0 / ld_rps);
        let mut tick = tokio::time::interval(every);
        let start = Instant::now();
        let mut n = 0usize;
        while start.elapsed() < sz.propagation_for {
            tick.tick().await;
            let m = format!("p{n:019}");
            let body = amplitude(
                &format!("prop{}", n % cohorts),
                true,
                2,
                std::slice::from_ref(&m),
            );
            if let Some(at) = post_one(&http, &bridge, body).await {
                sent.insert(m, at);
            }
            n += 1;
        }
        let lat = latencies(&ctl, &sent, since, Duration::from_secs(60)).await;
        drop(bridge);
        let (p50, p99) = (percentile(&lat, 50.0), percentile(&lat, 99.0));
        rows.push(Row {
            figure: "4a. propagation 2xx -> LD ack at half the LD rate, p50 / p99 ms",
            value: format!("{p50} / {p99}"),
            against: format!("max_delay_ms + 250 = {}", max_delay + 250),
            ratio: format!("{:.2}", p99 as f64 / (max_delay + 250) as f64),
            target: "p99 <= max_delay_ms + 250",
            met: lat.len() == sent.len() && p99 >= 0 && p99 <= max_delay as i64 + 250,
        });
        report.insert(
        "propagation".into(),
        json!({"ld_requests_per_second": ld_rps, "pushes_per_second": ld_rps / 2.0, "max_delay_ms": max_delay,
               "samples": lat.len(), "sent": sent.len(), "p50_ms": p50, "p99_ms": p99,
               "max_ms": lat.last().copied().unwrap_or(-1)}),
    );

        // ---- Figure 4b: fairness while a large first sync drains at 10 requests/s.
        eprintln!("bench: figure 4, fairness");
        redis.flushall();
        ctl.reset().await;
        ctl.post("/_emulator/config", json!({"max_rps": 10.0}))
            .await;
        let bridge = Bridge::start(
            &redis,
            &emu,
            BridgeOpts {
                ld_rps: 10.0,
                max_delay_ms: max_delay,
            },
        )
        .await;
        let smalls = 10;
        for c in 0..smalls {
            post_one(
                &http,
                &bridge,
                amplitude(&format!("small{c}"), true, 1, &[member(c, 9_999_999)]),
            )
            .await;
        }
        let start = Instant::now();
        let mut warm = 0;
        while warm < smalls as u64 && start.elapsed() < Duration::from_secs(60) {
            warm = ctl.route_count("contexts").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The emulator's own round trip, as the harness sees it.
        let mut rtts = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            ctl.get("/_emulator/config").await;
            rtts.push(t.elapsed().as_millis() as i64);
        }
        rtts.sort_unstable();
        let rtt = percentile(&rtts, 50.0);
        let since = ctl
            .requests_since(0)
            .await
            .last()
            .and_then(|e| e["seq"].as_u64())
            .unwrap_or(0);
        let mut big = Vec::new();
        for chunk in 0..sz.fairness_members / 1000 {
            let members: Vec<String> = (chunk * 1000..(chunk + 1) * 1000)
                .map(|i| member(50_000, i))
                .collect();
            big.push(amplitude("big", true, 1_767_225_600, &members));
        }
        let target = bridge_target(&bridge);
        let big_push = load::run(&target, Arc::new(big), 8, Mode::EachOnce).await;
        let mut sent = HashMap::new();
        let start = Instant::now();
        let mut n = 0usize;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        while start.elapsed() < sz.fairness_for {
            tick.tick().await;
            let m = format!("f{n:019}");
            let body = amplitude(
                &format!("small{}", n % smalls),
                true,
                2,
                std::slice::from_ref(&m),
            );
            if let Some(at) = post_one(&http, &bridge, body).await {
                sent.insert(m, at);
            }
            n += 1;
        }
        let lat = latencies(&ctl, &sent, since, Duration::from_secs(60)).await;
        let (still_dirty, _) = backlog(&redis);
        let big_rate = ctl.get("/_emulator/stats").await["max_requests_in_1s"]
            .as_u64()
            .unwrap_or(0);
        let violations = ctl.get("/_emulator/stats").await["violations"]["rate_exceeded"]
            .as_u64()
            .unwrap_or(0);
        drop(bridge);
        let (fp50, fp99) = (percentile(&lat, 50.0), percentile(&lat, 99.0));
        let bound = 2 * max_delay as i64 + rtt;
        rows.push(Row {
            figure: "4b. fairness: one-member change during a big drain at 10 req/s, p50 / p99 ms",
            value: format!("{fp50} / {fp99}"),
            against: format!("2 x max_delay_ms + RTT = {bound}"),
            ratio: format!("{:.2}", fp99 as f64 / bound as f64),
            target: "p99 <= 2 x max_delay_ms + RTT",
            met: lat.len() == sent.len() && fp99 >= 0 && fp99 <= bound && still_dirty > 0,
        });
        report.insert(
        "fairness".into(),
        json!({"big_members": big_push.accepted, "ld_requests_per_second": 10.0, "samples": lat.len(), "sent": sent.len(),
               "p50_ms": fp50, "p99_ms": fp99, "max_ms": lat.last().copied().unwrap_or(-1), "emulator_rtt_ms": rtt,
               "bound_ms": bound, "big_still_dirty_at_end": still_dirty, "emulator_max_requests_in_1s": big_rate,
               "emulator_rate_violations": violations}),
    );
    }

    // ---- The table.
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "cohort-bridge bench ({} run, {:.0} s; {cores} cores, {cpu})",
        if sz.quick { "quick" } else { "full" },
        started.elapsed().as_secs_f64()
    );
    println!("| figure | value | against | ratio | target | met |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.figure,
            r.value,
            r.against,
            r.ratio,
            r.target,
            if r.met { "yes" } else { "NO" }
        );
    }
    report.insert(
        "machine".into(),
        json!({"cores": cores, "cpu": cpu, "quick": sz.quick, "seconds": started.elapsed().as_secs_f64()}),
    );
    report.insert(
        "table".into(),
        Value::Array(
            rows.iter()
                .map(|r| json!({"figure": r.figure, "value": r.value, "against": r.against, "ratio": r.ratio, "target": r.target, "met": r.met}))
                .collect(),
        ),
    );
    let dir = procs::report_dir();
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(if sz.quick {
        "report-quick.json"
    } else {
        "report.json"
    });
    match std::fs::write(
        &path,
        serde_json::to_string_pretty(&Value::Object(report)).unwrap_or_default(),
    ) {
        Ok(()) => println!("\nreport: {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}
