//! Figure 2: single-change ingest (one-member Amplitude pushes) against a
//! bare actix-web endpoint on the same machine.

use crate::harness::{amplitude, bridge_target};
use crate::load::{self, LoadResult, Mode, Target};
use crate::procs::{self, Bridge};
use crate::report::{fmt_n, Report, Row};
use crate::Bench;
use hyper::body::Bytes;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Runs figure 2 on figure 1's bridge, then stops it.
pub async fn run(bench: &Bench, bridge: Bridge, report: &mut Report) {
    let target = bridge_target(&bridge);
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
        bench.sz.single_conns,
        Mode::For(Duration::from_secs(1)),
    )
    .await;
    let single = load::run(
        &target,
        singles.clone(),
        bench.sz.single_conns,
        Mode::For(bench.sz.load_for),
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
        bench.sz.single_conns,
        Mode::For(Duration::from_secs(1)),
    )
    .await;
    let ceiling: LoadResult = load::run(
        &bare_target,
        singles,
        bench.sz.single_conns,
        Mode::For(bench.sz.load_for),
    )
    .await;
    bare.stop().await;
    report.row(Row {
        figure: "2. single-change ingest (one-member Amplitude pushes), req/s",
        value: fmt_n(single.rps()),
        against: format!("{} req/s (bare actix-web endpoint)", fmt_n(ceiling.rps())),
        ratio: format!("{:.2}", single.rps() / ceiling.rps()),
        target: ">= 0.30",
        met: single.rps() / ceiling.rps() >= 0.3,
    });
    report.section("single_ingest",
        json!({"requests_per_s": single.rps(), "errors": single.errors, "connections": bench.sz.single_conns,
               "ceiling_requests_per_s": ceiling.rps(), "ratio": single.rps() / ceiling.rps()}),
    );
}
