//! Figure 6: a 1,000,000-member first sync end to end (100,000 in a quick
//! run). One cohort, every member new, pushed as 1,000-member pages by 8
//! connections; LaunchDarkly at 50 requests/s.
//!
//! The clock runs from the first push sent (harness wall clock) to the
//! `completed_ms` of the last membership request in the emulator's log. The
//! run is over when every push is answered, no member is dirty in Redis and
//! the emulator has nothing in flight (polled every 10 ms); the emulator's
//! segment is then checked to hold every member.
//!
//! The ideal is what LaunchDarkly's rate allows: one creation plus
//! ⌈members / `max_keys_per_request`⌉ membership requests, at 50/s. The
//! request log also says where any extra time went: the delay to the first
//! request, the gaps between requests (ideally 1/50 s), and batches that were
//! not full.

use crate::harness::{amplitude, backlog, bridge_target, member, now_ms, MAX_KEYS};
use crate::load::{self, Mode};
use crate::procs::{Bridge, BridgeOpts, CpuMeter};
use crate::report::{fmt_n, Report, Row};
use crate::Bench;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LD_RPS: f64 = 50.0;

/// What the emulator's request log says about the sync, in ms since the
/// first push.
#[derive(Debug, Default)]
struct Timeline {
    /// Arrival of the first LaunchDarkly request.
    first_ms: i64,
    /// Arrival of the last request, and the completion of the last membership request.
    last_arrival_ms: i64,
    last_ms: i64,
    /// Requests in the log.
    requests: u64,
    /// Membership requests, and those that carried fewer than `MAX_KEYS` members.
    writes: u64,
    partial: u64,
    /// Requests on other routes than creation and membership (e.g. sampled reads).
    other: u64,
    /// Non-2xx answers.
    failed: u64,
    /// Largest gap between two consecutive request arrivals, ms.
    max_gap_ms: i64,
    /// Requests that arrived while pushes were still being sent, and the
    /// arrival of the last of them.
    during_ingest: u64,
    last_during_ms: i64,
}

impl Timeline {
    /// Mean ms between arrivals from `from_ms` to `to_ms` over `requests` (ideally one period).
    fn spacing(from_ms: i64, to_ms: i64, requests: u64) -> f64 {
        (to_ms - from_ms) as f64 / requests.saturating_sub(1).max(1) as f64
    }
}

/// The request log read against the first push (`start_ms`) and the end of
/// the pushes (`ingest_ms` after it).
fn timeline(log: &[Value], start_ms: i64, ingest_ms: i64) -> Timeline {
    let mut t = Timeline {
        first_ms: i64::MAX,
        ..Timeline::default()
    };
    let mut prev: Option<i64> = None;
    for e in log {
        let at = e["received_ms"].as_i64().unwrap_or(0) - start_ms;
        t.first_ms = t.first_ms.min(at);
        if let Some(p) = prev {
            t.max_gap_ms = t.max_gap_ms.max(at - p);
        }
        prev = Some(at);
        t.last_arrival_ms = at;
        t.requests += 1;
        if at <= ingest_ms {
            t.during_ingest += 1;
            t.last_during_ms = at;
        }
        if !e["status"]
            .as_u64()
            .is_some_and(|s| (200..300).contains(&s))
        {
            t.failed += 1;
        }
        match e["route"].as_str() {
            Some("contexts") => {
                t.writes += 1;
                let adds = e["body"]["included"]["add"].as_array().map_or(0, Vec::len);
                if adds < MAX_KEYS {
                    t.partial += 1;
                }
                let done = e["completed_ms"].as_i64().unwrap_or(0) - start_ms;
                t.last_ms = t.last_ms.max(done);
            }
            Some("create") => {}
            _ => t.other += 1,
        }
    }
    t
}

pub async fn run(bench: &Bench, report: &mut Report) {
    let members = if bench.sz.quick { 100_000 } else { 1_000_000 };
    eprintln!(
        "bench: figure 6, a {}-member first sync end to end",
        fmt_n(members as f64)
    );
    bench.redis.flushall();
    bench.ctl.reset().await;
    let bridge = Bridge::start(
        &bench.redis,
        &bench.emu,
        BridgeOpts {
            ld_rps: LD_RPS,
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
    let ideal = Duration::from_secs_f64((writes + 1) as f64 / LD_RPS);
    let target = bridge_target(&bridge);
    let cpu = CpuMeter::start(&[
        ("bridge", bridge.pid().to_string()),
        ("redis", bench.redis.pid().to_string()),
        ("emulator", bench.emu.pid().to_string()),
        ("generator", "self".to_string()),
    ]);
    let start_ms = now_ms();
    let start = Instant::now();
    let pushing =
        tokio::spawn(async move { load::run(&target, Arc::new(bodies), 8, Mode::EachOnce).await });
    // Over when every push is answered, nothing is dirty in Redis (a member
    // claimed for a request stays dirty until its ack) and the emulator has
    // nothing in flight.
    let limit = ideal * 10 + Duration::from_secs(60);
    let mut finished = false;
    while start.elapsed() < limit {
        if pushing.is_finished() && backlog(&bench.redis).0 == 0 {
            let stats = bench.ctl.get("/_emulator/stats").await;
            if stats["in_flight"].as_u64() == Some(0) {
                finished = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cores = cpu.cores();
    let pushed = pushing.await.expect("load generator");
    let held = bench.ctl.members(&format!("amp-{cohort}")).await;
    let log = bench.ctl.requests_since(0).await;
    let t = timeline(&log, start_ms, pushed.elapsed.as_millis() as i64);
    let stats = bench.ctl.get("/_emulator/stats").await;
    let creates = stats["by_route"]["create"].as_u64().unwrap_or(0);
    let rate = bench.ctl.get("/_emulator/rate?window_ms=1000").await;
    drop(bridge);
    let elapsed = if finished {
        Duration::from_millis(t.last_ms.max(0) as u64)
    } else {
        limit
    };
    let ratio = elapsed.as_secs_f64() / ideal.as_secs_f64();
    // From the first request's arrival to the last's, per interval (ideally
    // one period), overall, while the pushes ran and after them.
    let spacing_ms = Timeline::spacing(t.first_ms, t.last_arrival_ms, t.requests);
    let during_ms = Timeline::spacing(t.first_ms, t.last_during_ms, t.during_ingest);
    let after_ms = Timeline::spacing(
        t.last_during_ms,
        t.last_arrival_ms,
        t.requests - t.during_ingest + 1,
    );
    let cores_text = cores
        .iter()
        .map(|(n, c)| format!("{n} {c:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!(
        "bench: figure 6: {:.2} s (ideal {:.2} s, ratio {ratio:.3}); ingest {:.2} s ({} changes/s, {} errors); \
         {held} of {members} members in LaunchDarkly; {creates} creation(s), {} membership requests ({} not full), \
         {} other, {} failed; first request at {} ms, {spacing_ms:.1} ms per request after it (ideal {:.1}; \
         {during_ms:.1} over the {} during ingest, {after_ms:.1} after), \
         largest gap {} ms, at most {} in any 1 s; cores: {cores_text}",
        elapsed.as_secs_f64(),
        ideal.as_secs_f64(),
        pushed.elapsed.as_secs_f64(),
        fmt_n(pushed.accepted_per_s()),
        pushed.errors,
        t.writes,
        t.partial,
        t.other,
        t.failed,
        t.first_ms,
        1000.0 / LD_RPS,
        t.during_ingest,
        t.max_gap_ms,
        rate["max_in_window"],
    );
    report.row(Row {
        figure: if bench.sz.quick {
            "6. first sync end to end (100,000 members, LD 50/s), s"
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
        met: finished && held == members && pushed.errors == 0 && ratio <= 1.05,
    });
    report.section(
        "first_sync_end_to_end",
        json!({"members": members, "ld_requests_per_second": LD_RPS, "seconds": elapsed.as_secs_f64(),
               "ideal_seconds": ideal.as_secs_f64(), "ratio": ratio,
               "ingest_seconds": pushed.elapsed.as_secs_f64(), "push_errors": pushed.errors,
               "members_in_ld": held, "creates": creates, "membership_requests": t.writes,
               "partial_batches": t.partial, "other_requests": t.other, "failed_requests": t.failed,
               "first_request_ms": t.first_ms, "ms_per_request": spacing_ms,
               "requests_during_ingest": t.during_ingest, "ms_per_request_during_ingest": during_ms,
               "ms_per_request_after_ingest": after_ms, "max_gap_ms": t.max_gap_ms,
               "max_requests_in_1s": rate["max_in_window"],
               "cores": cores.iter().map(|(n, c)| (n.to_string(), json!(c))).collect::<serde_json::Map<_, _>>()}),
    );
}
