//! Ingress security: forged Segment batches, the cost of unauthenticated
//! requests, body read timeouts, and request-derived values in logs.

use crate::support::alloc;
use crate::support::native;
use crate::support::stack;
use std::time::Duration;

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The worst unauthenticated request we can build per receiver kind, and
/// what serving it costs (CPU of the whole process, peak heap above the
/// baseline). Prints a table; run with `scripts/ingress-cost.sh`.
#[tokio::test]
#[ignore = "measurement; run scripts/ingress-cost.sh"]
async fn cost_of_the_worst_unauthenticated_request_per_receiver() {
    let (_redis, _emu, mut cfg) = stack();
    let mb: usize = std::env::var("CB_COST_BODY_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let size = mb << 20;
    cfg.set("server", "max_body_bytes", (size + 1024).to_string());
    native::add_sources(&mut cfg);
    let bridge = native::start(&cfg).await;
    // `[0,0,0,...]`: the most elements per byte.
    let mut numbers = Vec::with_capacity(size);
    numbers.push(b'[');
    while numbers.len() < size - 2 {
        numbers.extend_from_slice(b"0,");
    }
    numbers.extend_from_slice(b"0]");
    let mut mixpanel = b"{\"action\":".to_vec();
    mixpanel.extend_from_slice(&numbers);
    mixpanel.push(b'}');
    let entry = format!("v1,{}", "A".repeat(43) + "=");
    let many: Vec<&str> = std::iter::repeat_n(entry.as_str(), 30_000 / (entry.len() + 1)).collect();
    let many = many.join(" ");
    let now = (cohort_bridge::clock::now_ms() / 1000).to_string();
    let cases: Vec<(&str, &str, Vec<u8>, Vec<(&str, String)>)> = vec![
        (
            "amplitude (header secret)",
            "/v1/webhooks/amplitude",
            numbers.clone(),
            vec![("X-Cohort-Bridge-Token", "wrong".into())],
        ),
        (
            "heap (Heap-Hash, ts in window)",
            "/v1/webhooks/heap",
            numbers.clone(),
            vec![(
                "Heap-Hash",
                format!(
                    "ts:{},hmac:{}",
                    cohort_bridge::clock::now_ms(),
                    "A".repeat(43) + "="
                ),
            )],
        ),
        (
            "segment (X-Signature)",
            "/v1/webhooks/segment",
            numbers.clone(),
            vec![("X-Signature", "00".repeat(20))],
        ),
        (
            "mixpanel (Basic)",
            "/v1/webhooks/mixpanel",
            mixpanel,
            vec![("Authorization", "Basic bWl4cGFuZWw6d3Jvbmc=".into())],
        ),
        (
            "standard webhooks (many v1 entries)",
            "/v1/webhooks/standard-webhooks",
            numbers.clone(),
            vec![
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", now.clone()),
                ("webhook-signature", many.clone()),
            ],
        ),
        (
            "partner (no token)",
            "/api/v2/segment-targets/segment",
            numbers.clone(),
            vec![("Authorization", "wrong".into())],
        ),
    ];
    println!("| receiver | body | status | CPU ms | peak heap MiB |");
    println!("|---|---|---|---|---|");
    for (what, path, body, headers) in cases {
        let len = body.len();
        let mut req = bridge
            .http
            .post(format!("{}{path}", bridge.base))
            .header("Content-Type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let base = alloc::reset_process_peak();
        let t0 = cpu_time();
        let resp = req.send().await.expect("bridge reachable");
        let status = resp.status().as_u16();
        let _ = resp.bytes().await;
        let cpu = cpu_time() - t0;
        let peak = alloc::process_peak().saturating_sub(base);
        assert!((400..500).contains(&status), "{what}: {status}");
        println!(
            "| {what} | {:.1} MiB | {status} | {} | {:.1} |",
            len as f64 / 1048576.0,
            cpu.as_millis(),
            peak as f64 / 1048576.0
        );
    }
    bridge.stop().await;
}
