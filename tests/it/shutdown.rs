//! Graceful shutdown of the real binary (SIGTERM): a request half-sent across
//! the signal completes and is durable, the listener refuses new connections,
//! a LaunchDarkly write in flight finishes within the grace period or is
//! abandoned safely, and a restarted bridge carries on.

use crate::support::bridge::{amplitude_body, AMPLITUDE_SECRET};
use crate::support::stream::{dirty_backlog, want};
use crate::support::{eventually, stack, BridgeProcess, Emulator, WAIT};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits until the emulator holds a membership write in flight; returns it.
async fn write_in_flight(emu: &Emulator) -> Value {
    eventually("a LaunchDarkly write is in flight", WAIT, || async {
        emu.membership_requests()
            .await
            .into_iter()
            .find(|r| r["completed_ms"].is_null())
    })
    .await
}

/// Reads one HTTP/1.1 response (the server closes the connection after it).
async fn read_response(conn: &mut TcpStream) -> (u16, Value) {
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, conn.read_to_end(&mut raw))
        .await
        .expect("the response within the timeout")
        .expect("read the response");
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.into())),
    )
}

/// Opens a connection that the bridge has certainly accepted and served (a
/// keep-alive `GET /healthz` answered on it), then writes the headers and
/// half the body of a push on it. Returns the connection and the rest.
async fn half_sent_push(port: u16, body: &[u8]) -> (TcpStream, Vec<u8>) {
    let mut conn = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
        let n = conn.read(&mut buf).await.expect("read /healthz");
        assert!(n > 0, "closed before /healthz answered");
        seen.extend_from_slice(&buf[..n]);
    }
    // The /healthz body is small and arrives with the headers.
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
    let head = format!(
        "POST /v1/webhooks/amplitude HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n\
         X-Cohort-Bridge-Token: {AMPLITUDE_SECRET}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let half = body.len() / 2;
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body[..half]).await.unwrap();
    conn.flush().await.unwrap();
    (conn, body[half..].to_vec())
}

async fn refuses_connections(port: u16) {
    eventually("the listener refuses new connections", WAIT, || async {
        TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_completes_a_half_sent_push_and_the_flush_in_flight_then_a_restart_carries_on() {
    let (redis, emu, mut cfg) = stack();
    cfg.set("server", "shutdown_grace_seconds", "10").set(
        "launchdarkly",
        "request_timeout_ms",
        "3000",
    );
    let mut bridge = BridgeProcess::start(&mut cfg).await;
    // The first membership write takes 1.5 s: it is in flight at the SIGTERM.
    emu.fault(json!({"kind": "latency", "ms": 1500, "route": "contexts", "count": 1}))
        .await;
    let first = serde_json::to_vec(&amplitude_body("sd", true, 100, "sd1", &["u1", "u2"])).unwrap();
    let r = bridge
        .http
        .post(format!("{}/v1/webhooks/amplitude", bridge.base))
        .header("X-Cohort-Bridge-Token", AMPLITUDE_SECRET)
        .body(first)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let second =
        serde_json::to_vec(&amplitude_body("sd", true, 200, "sd2", &["h1", "h2", "h3"])).unwrap();
    let (mut conn, rest) = half_sent_push(bridge.port, &second).await;
    let inflight = write_in_flight(&emu).await;
    assert_eq!(inflight["fault"], "latency");

    bridge.sigterm();
    refuses_connections(bridge.port).await;
    // The push that was being read completes, and is durable.
    conn.write_all(&rest).await.unwrap();
    let (status, summary) = read_response(&mut conn).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["accepted"], 3, "{summary}");
    let exit = bridge.wait_exit(WAIT).await;
    assert!(exit.success(), "exit {exit:?}\n{}", bridge.logs());
    assert!(bridge.logs().contains("Shutting down"), "{}", bridge.logs());

    let client = redis.client();
    let stored = want(&client, &cfg.prefix, "sd").await;
    for m in ["h1", "h2", "h3"] {
        assert_eq!(
            stored.get(m).map(|s| s.1),
            Some(true),
            "{m} in Redis after the shutdown"
        );
    }
    // The write in flight finished and was acknowledged before the exit:
    // only the half-sent push's members are still waiting.
    let write = emu
        .membership_requests()
        .await
        .into_iter()
        .find(|r| r["seq"] == inflight["seq"])
        .unwrap();
    assert_eq!(write["status"], 204, "{write}");
    assert_eq!(dirty_backlog(&client, &cfg.prefix).await, Some(3));

    bridge.restart().await;
    eventually("a restarted bridge carries on", WAIT, || async {
        (emu.members("default", "production", "amplitude-sd").await
            == Some(
                vec!["h1", "h2", "h3", "u1", "u2"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
            ))
        .then_some(())
    })
    .await;
    bridge.sigterm();
    assert!(bridge.wait_exit(WAIT).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_abandoned_at_the_end_of_the_grace_period_cannot_overwrite_a_newer_write() {
    let (_redis, emu, mut cfg) = stack();
    // The add is in flight longer than the grace period, and LaunchDarkly
    // applies it after the bridge has gone (as it may: the body was sent).
    cfg.set("server", "shutdown_grace_seconds", "1")
        .set("launchdarkly", "request_timeout_ms", "4000")
        .set("flush", "lease_ttl_ms", "6500");
    let mut bridge = BridgeProcess::start(&mut cfg).await;
    emu.fault(json!({"kind": "latency", "ms": 2500, "route": "contexts", "count": 1}))
        .await;
    let push = |body: Value| {
        let http = bridge.http.clone();
        let url = format!("{}/v1/webhooks/amplitude", bridge.base);
        async move {
            let r = http
                .post(url)
                .header("X-Cohort-Bridge-Token", AMPLITUDE_SECRET)
                .body(serde_json::to_vec(&body).unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    push(amplitude_body("ab", true, 100, "ab1", &["u1"])).await;
    let add = write_in_flight(&emu).await;
    assert_eq!(add["body"]["included"]["add"], json!(["u1"]));
    // The member leaves while the add is in flight.
    let r = push(amplitude_body("ab", false, 200, "ab2", &["u1"])).await;
    assert_eq!(r["accepted"], 1, "{r}");

    bridge.sigterm();
    let exit = bridge.wait_exit(WAIT).await;
    assert!(exit.success(), "exit {exit:?}\n{}", bridge.logs());
    assert!(bridge.logs().contains("abandoned"), "{}", bridge.logs());
    bridge.restart().await;
    eventually(
        "the abandoned add landed, and the remove was written after it",
        WAIT,
        || async {
            let reqs = emu.membership_requests().await;
            let landed = reqs
                .iter()
                .find(|r| r["seq"] == add["seq"] && r["applied"] == true)?;
            let at = landed["completed_ms"].as_u64()?;
            reqs.iter()
                .any(|r| {
                    r["status"] == 204
                        && r["received_ms"].as_u64() >= Some(at)
                        && r["body"]["included"]["remove"] == json!(["u1"])
                })
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        emu.members("default", "production", "amplitude-ab").await,
        Some(vec![])
    );
    bridge.sigterm();
    assert!(bridge.wait_exit(WAIT).await.success());
}
