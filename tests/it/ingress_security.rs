//! Ingress security: forged Segment batches, the cost of unauthenticated
//! requests, body read timeouts, and request-derived values in logs.

use crate::support::alloc;
use crate::support::native;
use crate::support::stack;
use std::time::Duration;

/// CPU time (user + system) of this process so far.
#[allow(unsafe_code)] // getrusage has no safe wrapper in std
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
    type Case<'a> = (&'a str, &'a str, Vec<u8>, Vec<(&'a str, String)>);
    let cases: Vec<Case<'_>> = vec![
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

use crate::support::native::{segment_identify, SEGMENT_SECRET};
use crate::support::{converge, BridgeProcess, RedisServer};
use cohort_bridge::config::{ResolvedAuth, Secret, SegmentBatches};
use cohort_bridge::verify::{self, VerifyError};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn batched_vector() -> Value {
    crate::support::signature_vectors(|p| p == "segment-webhooks-actions (batching enabled)")
        .remove(0)
}

fn sign(bytes: &[u8]) -> String {
    verify::segment_sign(&Secret::new(SEGMENT_SECRET), bytes)
}

/// `[<element 0 exactly>, <the rest>]`, as a JavaScript sender writes it.
fn batch_of(first: &[u8], rest: &[Value]) -> Vec<u8> {
    let mut out = b"[".to_vec();
    out.extend_from_slice(first);
    for e in rest {
        out.push(b',');
        out.extend_from_slice(&serde_json::to_vec(e).unwrap());
    }
    out.push(b']');
    out
}

/// A forged event newer than every real one. (The issue's 9999-12-31 is now
/// refused on its own by `server.max_future_skew_seconds`: `hardening.rs`.)
fn forged(user: &str) -> Value {
    segment_identify("forged", user, true, "m-forged", "2026-01-01T00:00:00Z")
}

fn forged_keys(redis: &RedisServer, prefix: &str) -> Vec<String> {
    redis
        .keys(prefix)
        .into_iter()
        .filter(|k| k.contains("aud_forged"))
        .collect()
}

const FIRST_EVENT_SOURCE: &str = r#"
[[sources]]
id = "segment-first"
kind = "segment"
destinations = ["production"]
auth = { scheme = "segment-signature", secret_env = "SEGMENT_SECRET", batches = "first-event" }
"#;

/// The attack of the issue: a delivered, signed single event re-sent as
/// element 0 of a new array with a forged event after it.
#[tokio::test]
async fn a_batch_signed_over_element_0_only_is_refused_by_default_and_applies_nothing() {
    let (redis, _emu, mut cfg) = stack();
    native::add_sources(&mut cfg);
    let bridge = native::start(&cfg).await;
    let single = serde_json::to_vec(&segment_identify(
        "real",
        "u1",
        true,
        "m-real",
        "2024-05-03T19:42:50Z",
    ))
    .unwrap();
    let sig = sign(&single);
    let (status, resp) = bridge
        .post("segment", &single, &[("X-Signature", sig.clone())])
        .await;
    assert_eq!(
        (status, resp["accepted"].clone()),
        (200, json!(1)),
        "{resp}"
    );

    let attack = batch_of(&single, &[forged("attacker")]);
    let (status, resp) = bridge
        .post("segment", &attack, &[("X-Signature", sig.clone())])
        .await;
    assert_eq!(status, 401, "{resp}");
    assert_eq!(resp["error"]["code"], "unauthorized");
    let msg = resp["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("batch size to 1") && msg.contains("first-event"),
        "{msg}"
    );
    assert!(forged_keys(&redis, &cfg.prefix).is_empty());

    // A signature over the whole array is still accepted in full.
    let whole = batch_of(&single, &[forged("someone")]);
    let (status, resp) = bridge
        .post("segment", &whole, &[("X-Signature", sign(&whole))])
        .await;
    assert_eq!(status, 200, "{resp}");
    assert!(!forged_keys(&redis, &cfg.prefix).is_empty());
    bridge.stop().await;
}

#[test]
fn the_verifier_says_what_a_segment_signature_covers() {
    let v = batched_vector();
    let body = v["body"].as_str().unwrap().as_bytes();
    let sig = v["headers"]["X-Signature"].as_str().unwrap();
    let h = vec![("X-Signature".to_string(), sig.to_string())];
    let auth = |batches| ResolvedAuth::SegmentSignature {
        secrets: vec![Secret::new(v["secret"].as_str().unwrap())],
        batches,
    };
    assert_eq!(
        verify::verify(&auth(SegmentBatches::Signed), &h, body, 0).unwrap_err(),
        VerifyError::UnsignedBatch
    );
    let ok = verify::verify(&auth(SegmentBatches::FirstEvent), &h, body, 0).unwrap();
    // Segment's own code signs element 0 exactly as these bytes.
    assert_eq!(
        ok.first_event_only().unwrap(),
        v["signed_string_current"].as_str().unwrap().as_bytes()
    );
    let full = vec![(
        "X-Signature".to_string(),
        v["x_signature_if_full_body_signed"]
            .as_str()
            .unwrap()
            .to_string(),
    )];
    for b in [SegmentBatches::Signed, SegmentBatches::FirstEvent] {
        let ok = verify::verify(&auth(b), &full, body, 0).unwrap();
        assert_eq!(ok.first_event_only(), None);
    }
    // A one-element array signed over its element is covered in full.
    let first = v["signed_string_current"].as_str().unwrap().as_bytes();
    let one = batch_of(first, &[]);
    let ok = verify::verify(&auth(SegmentBatches::Signed), &h, &one, 0).unwrap();
    assert_eq!(ok.first_event_only(), None);
}

#[tokio::test]
async fn first_event_batches_apply_once_and_a_reused_element_0_applies_nothing() {
    let (redis, emu, mut cfg) = stack();
    native::add_sources(&mut cfg);
    cfg.sources.push_str(FIRST_EVENT_SOURCE);
    let bridge = native::start(&cfg).await;
    // Segment's own batch, signed by its code over element 0.
    let v = batched_vector();
    let body = v["body"].as_str().unwrap().as_bytes();
    let sig = v["headers"]["X-Signature"].as_str().unwrap().to_string();
    let (status, resp) = bridge
        .post("segment-first", body, &[("X-Signature", sig.clone())])
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["accepted"], 2, "{resp}");
    assert_eq!(resp["duplicate"], false, "{resp}");
    // Retried: a duplicate.
    let (status, resp) = bridge
        .post("segment-first", body, &[("X-Signature", sig.clone())])
        .await;
    assert_eq!(
        (status, resp["duplicate"].clone()),
        (200, json!(true)),
        "{resp}"
    );
    // Element 0 reused with a forged event: a duplicate, nothing applied.
    let first = v["signed_string_current"].as_str().unwrap().as_bytes();
    let attack = batch_of(first, &[forged("attacker")]);
    let (status, resp) = bridge
        .post("segment-first", &attack, &[("X-Signature", sig.clone())])
        .await;
    assert_eq!(
        (status, resp["duplicate"].clone()),
        (200, json!(true)),
        "{resp}"
    );
    assert_eq!(resp["accepted"], 0, "{resp}");
    assert!(forged_keys(&redis, &cfg.prefix).is_empty());

    // An event delivered singly first, then reused as element 0: also a duplicate.
    let single = serde_json::to_vec(&segment_identify(
        "real",
        "u1",
        true,
        "m-single",
        "2024-05-03T19:42:50Z",
    ))
    .unwrap();
    let single_sig = sign(&single);
    let (status, _) = bridge
        .post(
            "segment-first",
            &single,
            &[("X-Signature", single_sig.clone())],
        )
        .await;
    assert_eq!(status, 200);
    let attack = batch_of(&single, &[forged("attacker")]);
    let (status, resp) = bridge
        .post("segment-first", &attack, &[("X-Signature", single_sig)])
        .await;
    assert_eq!(
        (status, resp["duplicate"].clone()),
        (200, json!(true)),
        "{resp}"
    );
    assert!(forged_keys(&redis, &cfg.prefix).is_empty());

    let key = "segment-first-aud_2djnfxHHnYGVQfOAEBroQ9Ti87N";
    converge(&emu, "production", key, &["user-123"]).await;
    bridge.stop().await;
}

/// A first-event batch refused part-way (Redis down) is applied in full by
/// its retry: element 0 only counts as applied once the batch is stored.
#[tokio::test]
async fn a_first_event_batch_that_failed_is_applied_in_full_by_its_retry() {
    let (mut redis, _emu, mut cfg) = stack();
    native::add_sources(&mut cfg);
    cfg.sources.push_str(FIRST_EVENT_SOURCE);
    let bridge = native::start(&cfg).await;
    let v = batched_vector();
    let body = v["body"].as_str().unwrap().as_bytes();
    let sig = v["headers"]["X-Signature"].as_str().unwrap().to_string();
    redis.kill();
    let (status, resp) = bridge
        .post("segment-first", body, &[("X-Signature", sig.clone())])
        .await;
    assert_eq!(status, 503, "{resp}");
    redis.restart();
    let (status, resp) =
        crate::support::eventually("Redis is back", crate::support::WAIT, || async {
            let (status, resp) = bridge
                .post("segment-first", body, &[("X-Signature", sig.clone())])
                .await;
            (status != 503).then_some((status, resp))
        })
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["accepted"], 2, "{resp}");
    bridge.stop().await;
}

/// Sends the request head (and `body`), then waits for the answer without
/// ever sending the rest of the declared body.
async fn raw_request(base: &str, head: &str, body: &[u8]) -> String {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::new();
    // The answer's head and small JSON body arrive together or in a few reads.
    let read = async {
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&out);
            if text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
                break;
            }
        }
    };
    // A generous bound of the client's own, far above any server timeout in
    // these tests: a server that never answers fails the test, not hangs it.
    if tokio::time::timeout(crate::support::WAIT_LONG, read)
        .await
        .is_err()
    {
        return format!(
            "no answer within 60 s; received so far: {:?}",
            String::from_utf8_lossy(&out)
        );
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn header_credentials_are_refused_before_the_body_and_a_slow_body_gets_408() {
    let (_redis, _emu, mut cfg) = stack();
    cfg.set("server", "body_read_timeout_ms", "300");
    cfg.set("server", "operator_token_env", "\"OPERATOR_TOKEN\"");
    let bridge = native::start(&cfg).await;
    // Wrong secret: 401 although the declared body never arrives.
    let head = "POST /v1/webhooks/amplitude HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Cohort-Bridge-Token: wrong\r\nContent-Length: 100000\r\n\r\n";
    let resp = raw_request(&bridge.base, head, b"{").await;
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    // The operator API likewise.
    let head = "POST /v1/operator/links/production:amplitude:c1/redrive HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nContent-Length: 100000\r\n\r\n";
    let resp = raw_request(&bridge.base, head, b"{").await;
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    // Right secret, body too slow: 408 with a JSON error.
    let head = format!("POST /v1/webhooks/amplitude HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Cohort-Bridge-Token: {}\r\nContent-Length: 100000\r\n\r\n", crate::support::bridge::AMPLITUDE_SECRET);
    let resp = raw_request(&bridge.base, &head, b"{").await;
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(resp.contains("\"body_timeout\""), "{resp}");
    bridge.stop().await;
}

fn sw_headers(id: &str, ts: &str, sig: &str) -> Vec<(String, String)> {
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), ts.into()),
        ("webhook-signature".into(), sig.into()),
    ]
}

#[test]
fn standard_webhooks_checks_the_window_first_and_only_a_few_entries() {
    let secret = Secret::new(native::SW_NEW);
    let auth = ResolvedAuth::StandardWebhooks {
        secrets: vec![secret.clone()],
        tolerance: Duration::from_secs(300),
    };
    let body = b"{\"a\":1}";
    let ts = "1767225600";
    let now = 1_767_225_600_000;
    let good = verify::standard_webhooks_sign(&secret, "msg_1", ts, body);
    assert!(verify::verify(&auth, &sw_headers("msg_1", ts, &good), body, now).is_ok());
    // Stale and unsigned: refused for its window (no MAC was worth computing).
    let junk = format!("v1,{}=", "A".repeat(43));
    assert!(matches!(
        verify::verify(
            &auth,
            &sw_headers("msg_1", ts, &junk),
            body,
            now + 3_600_000
        ),
        Err(VerifyError::OutsideWindow(_))
    ));
    // The right signature after 8 well-formed entries is not looked at.
    let many = format!("{} {good}", [junk.as_str(); 8].join(" "));
    assert_eq!(
        verify::verify(&auth, &sw_headers("msg_1", ts, &many), body, now).unwrap_err(),
        VerifyError::BadSignature
    );
    // Entries of the wrong length do not count toward the 8.
    let short = vec!["v1,AAAA"; 5000].join(" ");
    let mixed = format!("{short} {good}");
    assert!(verify::verify(&auth, &sw_headers("msg_1", ts, &mixed), body, now).is_ok());
}

/// Refusing an unauthenticated body allocates about the body, not a
/// multiple per element (the old Segment split and Mixpanel action did).
#[test]
fn refusing_a_big_array_allocates_next_to_nothing() {
    let mut numbers = b"[".to_vec();
    while numbers.len() < 1 << 20 {
        numbers.extend_from_slice(b"0,");
    }
    numbers.extend_from_slice(b"0]");
    let auth = ResolvedAuth::SegmentSignature {
        secrets: vec![Secret::new(SEGMENT_SECRET)],
        batches: SegmentBatches::FirstEvent,
    };
    let h = vec![("X-Signature".to_string(), "00".repeat(20))];
    let (r, peak) = alloc::thread_peak(|| verify::verify(&auth, &h, &numbers, 0).map(|_| ()));
    assert_eq!(r, Err(VerifyError::BadSignature));
    assert!(peak < 64 * 1024, "segment verify allocated {peak} bytes");
    let mut mixpanel = b"{\"action\":".to_vec();
    mixpanel.extend_from_slice(&numbers);
    mixpanel.push(b'}');
    let (a, peak) = alloc::thread_peak(|| {
        cohort_bridge::sources::echo_action(cohort_bridge::config::SourceKind::Mixpanel, &mixpanel)
    });
    assert_eq!(a, None);
    assert!(peak < 64 * 1024, "mixpanel action allocated {peak} bytes");
}

#[tokio::test]
async fn request_derived_values_cannot_forge_log_lines() {
    let (_redis, _emu, mut cfg) = stack();
    let mut bridge = BridgeProcess::start(&mut cfg).await;
    let resp = bridge
        .http
        .post(format!(
            "{}/api/v2/segment-targets/x%0aFORGED%20ERROR%20line%0d%1b[31m",
            bridge.base
        ))
        .header("Authorization", "no-such-token")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let logs = bridge.logs();
    assert!(logs.contains("FORGED ERROR line"), "{logs}");
    for line in logs.lines() {
        assert!(!line.starts_with("FORGED"), "forged line: {line:?}\n{logs}");
        assert!(!line.contains('\r') && !line.contains('\u{1b}'), "{line:?}");
    }
    bridge.kill9();
}
