//! Figures 3 and 5a: a bulk sync (1,000,000 members in the full run) and
//! flips: LaunchDarkly requests against the ideal and a per-event
//! forwarder, and Redis bytes per tracked member once settled.

use crate::harness::{amplitude, backlog, bridge_target, member, post_one, wait_until, MAX_KEYS};
use crate::load::{self, Mode};
use crate::procs::{Bridge, BridgeOpts};
use crate::report::{fmt_n, Report, Row};
use crate::Bench;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(bench: &Bench, report: &mut Report) {
    // ---- Figures 3 and 5a: 1,000,000 members, LaunchDarkly requests and Redis memory.
    eprintln!("bench: figures 3 and 5, bulk sync");
    bench.redis.flushall();
    bench.ctl.reset().await;
    let bridge = Bridge::start(
        &bench.redis,
        &bench.emu,
        BridgeOpts {
            ld_rps: 100.0,
            max_delay_ms: 1000,
        },
    )
    .await;
    let base_memory = bench.redis.used_memory();
    let mut bulk = Vec::new();
    for chunk in 0..bench.sz.bulk_members / 1000 {
        for c in 0..bench.sz.bulk_cohorts {
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
    let flips = 10;
    for f in 0..flips {
        let members: Vec<String> = (0..200).map(|i| member(90_000 + f, i)).collect();
        let id = format!("flip{f}");
        post_one(
            &bench.http,
            &bridge,
            amplitude(&id, true, 1_767_225_600, &members),
        )
        .await;
        post_one(
            &bench.http,
            &bridge,
            amplitude(&id, false, 1_767_225_601, &members),
        )
        .await;
    }
    let total_members = (bench.sz.bulk_cohorts * bench.sz.bulk_members) as u64;
    let changes = pushed.accepted + (flips * 400) as u64;
    let settle = wait_until("the bulk sync to settle", Duration::from_secs(600), || {
        backlog(&bench.redis) == (0, 0)
    })
    .await;
    let creates = bench.ctl.route_count("create").await;
    let updates = bench.ctl.route_count("contexts").await;
    let mut written = 0;
    for c in 0..bench.sz.bulk_cohorts {
        written += bench.ctl.members(&format!("amp-bulk{c}")).await;
    }
    let ideal = (bench.sz.bulk_cohorts * (bench.sz.bulk_members.div_ceil(MAX_KEYS) + 1)) as u64;
    let actual = creates + updates;
    let memory = bench.redis.used_memory().saturating_sub(base_memory);
    let per_member = memory as f64 / total_members as f64;
    let encoding: String = {
        let mut c = bench.redis.conn().expect("bench.redis");
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
    report.row(Row {
        figure: "3. LaunchDarkly requests per 1,000,000 changes",
        value: format!("{per_million:.0} ({actual} for {changes} changes)"),
        against: format!("ideal {ideal}"),
        ratio: format!("{:.3}", actual as f64 / ideal as f64),
        target: "<= 1.01 x ideal",
        met: actual as f64 <= 1.01 * ideal as f64 && written as u64 == total_members,
    });
    report.row(Row {
        figure: "3b. vs a per-event forwarder (1 request per change)",
        value: format!("{actual}"),
        against: format!("{changes}"),
        ratio: format!("{:.5}", actual as f64 / changes as f64),
        target: "(report)",
        met: true,
    });
    report.row(Row {
        figure: "5a. Redis bytes per tracked member (20-char keys, settled)",
        value: format!("{per_member:.1}"),
        against: format!("{total_members} members, {} bytes", fmt_n(memory as f64)),
        ratio: format!("{:.2}", per_member / 100.0),
        target: "<= 100 bytes",
        met: per_member <= 100.0,
    });
    report.section("ld_efficiency",
    json!({"changes": changes, "creates": creates, "membership_requests": updates, "actual": actual,
           "ideal": ideal, "ratio_to_ideal": actual as f64 / ideal as f64, "per_million_changes": per_million,
           "ratio_to_per_event": actual as f64 / changes as f64, "flip_cohorts": flips,
           "members_in_ld": written, "members_expected": total_members, "settle_seconds": settle.as_secs_f64()}),
        );
    report.section(
        "redis_memory",
        json!({"members": total_members, "bytes": memory, "bytes_per_member": per_member,
           "cohorts": bench.sz.bulk_cohorts, "want_hash_encoding": encoding}),
    );
}
