//! The receivers' contract: authentication, bad input of every shape,
//! unknown sources, size limits, Redis outages — and that nothing of a
//! rejected request is stored.

use crate::support::bridge::{amplitude_body, heap_body, AMPLITUDE_SECRET, HEAP_SECRET};
use crate::support::{data_keys, eventually, Bridge, RedisServer, TestConfig, WAIT};
use cohort_bridge::config::Secret;
use serde_json::{json, Value};

fn heap_vector() -> Value {
    crate::support::signature_vectors(|p| p == "heap").remove(0)
}

/// An LD URL nobody listens on: these tests only look at the receivers.
fn nowhere() -> String {
    format!("http://127.0.0.1:{}", crate::support::free_port())
}

#[tokio::test]
async fn heap_vectors_verify_over_http_and_mutations_get_401_storing_nothing() {
    let redis = RedisServer::start();
    let mut cfg = TestConfig::new(&redis.url(), &nowhere());
    // The vector was signed on 2026-01-01: a source with a wide window accepts
    // its exact bytes and header; the regular source (300 s) must not.
    cfg.sources = r#"
[[sources]]
id = "heap-vector"
kind = "heap"
destinations = ["production"]
auth = { scheme = "heap-hash", secret_env = "HEAP_VECTOR_SECRET", tolerance_seconds = 100000000 }
"#
    .into();
    let bridge = Bridge::start(&cfg).await;
    let v = heap_vector();
    let body = v["body"].as_str().unwrap().as_bytes();
    let header = v["headers"]["Heap-Hash"].as_str().unwrap().to_string();

    // Rejections first, so "nothing stored" is checked against an empty Redis.
    let secret = Secret::new(HEAP_SECRET);
    let fresh = |b: &[u8]| {
        cohort_bridge::verify::heap_sign(&secret, &cohort_bridge::clock::now_ms().to_string(), b)
    };
    let mut tampered = body.to_vec();
    let at = tampered.iter().position(|&b| b == b'1').unwrap();
    tampered[at] = b'9';
    let stale_ts = (cohort_bridge::clock::now_ms() - 301_000).to_string();
    let future_ts = (cohort_bridge::clock::now_ms() + 301_000).to_string();
    type Case<'a> = (&'a str, &'a [u8], Vec<(&'a str, String)>);
    let cases: Vec<Case<'_>> = vec![
        ("tampered body", &tampered, vec![("Heap-Hash", fresh(body))]),
        (
            "old vector timestamp",
            body,
            vec![("Heap-Hash", header.clone())],
        ),
        (
            "stale timestamp",
            body,
            vec![(
                "Heap-Hash",
                cohort_bridge::verify::heap_sign(&secret, &stale_ts, body),
            )],
        ),
        (
            "future timestamp",
            body,
            vec![(
                "Heap-Hash",
                cohort_bridge::verify::heap_sign(&secret, &future_ts, body),
            )],
        ),
        (
            "tampered timestamp",
            body,
            vec![("Heap-Hash", fresh(body).replacen("ts:1", "ts:2", 1))],
        ),
        ("missing header", body, vec![]),
        (
            "garbage header",
            body,
            vec![("Heap-Hash", "nonsense".into())],
        ),
        (
            "wrong secret",
            body,
            vec![(
                "Heap-Hash",
                cohort_bridge::verify::heap_sign(
                    &Secret::new("other"),
                    &cohort_bridge::clock::now_ms().to_string(),
                    body,
                ),
            )],
        ),
    ];
    for (what, b, headers) in cases {
        let (status, resp) = bridge.post("heap", b, &headers).await;
        assert_eq!(status, 401, "{what}: {resp}");
        assert_eq!(resp["error"]["code"], "unauthorized", "{what}");
        assert!(
            resp["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    assert!(
        data_keys(&redis, &cfg.prefix).is_empty(),
        "a rejected push stored something"
    );

    // The known-answer vector verifies with its exact header.
    let (status, resp) = bridge
        .post("heap-vector", body, &[("Heap-Hash", header)])
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["accepted"], 4, "{resp}");
    // And the regular source accepts it signed now.
    let (status, resp) = bridge
        .post("heap", body, &[("Heap-Hash", fresh(body))])
        .await;
    assert_eq!(status, 200, "{resp}");
    bridge.stop().await;
}

#[tokio::test]
async fn amplitude_wrong_or_missing_secret_is_401_and_stores_nothing() {
    let redis = RedisServer::start();
    let cfg = TestConfig::new(&redis.url(), &nowhere());
    let bridge = Bridge::start(&cfg).await;
    let body = serde_json::to_vec(&amplitude_body(
        "c1",
        true,
        1_767_225_600,
        "m1::enter::0",
        &["u1"],
    ))
    .unwrap();
    for headers in [
        vec![],
        vec![("X-Cohort-Bridge-Token", "wrong".to_string())],
        vec![("X-Cohort-Bridge-Token", format!("{AMPLITUDE_SECRET}x"))],
        vec![("Authorization", AMPLITUDE_SECRET.to_string())],
    ] {
        let (status, resp) = bridge.post("amplitude", &body, &headers).await;
        assert_eq!(status, 401, "{headers:?}: {resp}");
        assert_eq!(resp["error"]["code"], "unauthorized");
    }
    assert!(data_keys(&redis, &cfg.prefix).is_empty());
    let (status, _) = bridge
        .post(
            "amplitude",
            &body,
            &[("X-Cohort-Bridge-Token", AMPLITUDE_SECRET.to_string())],
        )
        .await;
    assert_eq!(status, 200);
    assert!(!data_keys(&redis, &cfg.prefix).is_empty());
    bridge.stop().await;
}

#[tokio::test]
async fn bad_input_of_any_shape_is_a_clear_4xx_and_the_server_stays_up() {
    let redis = RedisServer::start();
    let cfg = TestConfig::new(&redis.url(), &nowhere());
    let bridge = Bridge::start(&cfg).await;
    let auth = [("X-Cohort-Bridge-Token", AMPLITUDE_SECRET.to_string())];
    let bad_bodies: Vec<&[u8]> = vec![
        b"",
        b"{",
        b"not json",
        b"[]",
        b"null",
        b"42",
        b"\xff\xfe\x00",
        br#"{"cohort_id": "c1"}"#,
        br#"{"cohort_id": "c1", "in_cohort": "yes", "users": []}"#,
        br#"{"cohort_id": "c1", "in_cohort": true, "users": {}}"#,
        br#"{"cohort_id": "c1", "in_cohort": true}"#,
        br#"{"cohort_id": {}, "in_cohort": true, "users": []}"#,
        br#"{"cohort_id": "", "in_cohort": true, "users": []}"#,
        br#"{"cohort_id": "c1", "in_cohort": true, "users": [], "computed_time": "yesterday"}"#,
        br#"{"cohort_id": "c1", "in_cohort": true, "users": [], "computed_time": true}"#,
        br#"{"cohort_id": "c1", "in_cohort": true, "users": [], "message_id": 7}"#,
    ];
    for b in &bad_bodies {
        let (status, resp) = bridge.post("amplitude", b, &auth).await;
        assert_eq!(status, 400, "{}: {resp}", String::from_utf8_lossy(b));
        assert_eq!(resp["error"]["code"], "invalid_payload");
        assert!(resp["error"]["message"]
            .as_str()
            .is_some_and(|m| m.len() > 5));
    }
    // Heap shapes, correctly signed.
    for b in [
        br#"{"action_type": "segment.users.explode"}"#.to_vec(),
        br#"{"action_type": "segment.users.sync"}"#.to_vec(),
        br#"{"action_type": "segment.users.sync", "data": {"segment": {"name": "x"}}}"#.to_vec(),
        br#"{"action_type": "segment.users.sync", "data": {"segment": {"id": 1}, "add": "u1"}}"#.to_vec(),
        br#"{"action_type": "segment.users.sync", "data": {"segment": {"id": 1}, "sync_info": {"page_number": -1}}}"#.to_vec(),
    ] {
        let (status, resp) = bridge.heap(&b).await;
        assert_eq!(status, 400, "{}: {resp}", String::from_utf8_lossy(&b));
    }
    assert!(
        data_keys(&redis, &cfg.prefix).is_empty(),
        "a rejected push stored something"
    );

    // Unknown source: 404 before the body is read.
    let (status, resp) = bridge.post("nope", b"{}", &auth).await;
    assert_eq!(
        (status, resp["error"]["code"].clone()),
        (404, json!("unknown_source"))
    );
    // Unknown route and method: JSON 404 too.
    let (status, body) = bridge.get("/v1/nothing").await;
    assert_eq!(status, 404);
    assert!(body.contains("not_found"));

    // Oversized, declared and streamed (chunked, no Content-Length).
    let big = vec![b' '; 1024 * 1024 + 1];
    let (status, resp) = bridge.post("amplitude", &big, &auth).await;
    assert_eq!(
        (status, resp["error"]["code"].clone()),
        (413, json!("payload_too_large"))
    );
    let stream =
        futures_util::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024])));
    let resp = bridge
        .http
        .post(format!("{}/v1/webhooks/amplitude", bridge.base))
        .header("X-Cohort-Bridge-Token", AMPLITUDE_SECRET)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    // The server may answer 413 or close the connection once the limit is passed.
    if let Ok(r) = resp {
        assert_eq!(r.status().as_u16(), 413);
    }

    // Still up and answering.
    assert_eq!(bridge.get("/healthz").await.0, 200);
    let (status, resp) = bridge
        .amplitude(&amplitude_body("c1", true, 1_767_225_600, "m-ok", &["u1"]))
        .await;
    assert_eq!(status, 200, "{resp}");
    bridge.stop().await;
}

#[tokio::test]
async fn members_without_a_key_are_skipped_and_counted() {
    let redis = RedisServer::start();
    let cfg = TestConfig::new(&redis.url(), &nowhere());
    let bridge = Bridge::start(&cfg).await;
    let body = json!({
        "cohort_id": "c1", "cohort_name": "C", "in_cohort": true, "computed_time": "1767225600",
        "message_id": "m1::enter::0",
        "users": [{"user_id": "u1"}, {"user_properties": {"plan": "pro"}}, {"user_id": null}, {"user_id": ""}, "scalar"]
    });
    let (status, resp) = bridge.amplitude(&body).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            resp["accepted"].clone(),
            resp["skipped_without_key"].clone()
        ),
        (json!(1), json!(4))
    );
    let (_, metrics) = bridge.get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cohort_bridge_changes_total")
                && l.contains("outcome=\"skipped_without_key\"")
                && l.contains("source=\"amplitude\"")),
        "{metrics}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_heap_drain_makes_the_next_full_sync_replace_membership() {
    let (_redis, emu, cfg) = crate::support::stack();
    let bridge = Bridge::start(&cfg).await;
    let members = || async {
        let mut m = emu
            .members("default", "production", "heap-7")
            .await
            .unwrap_or_default();
        m.sort();
        m
    };
    let wait_for = |want: &'static [&'static str]| {
        let members = &members;
        async move {
            eventually(
                &format!("LaunchDarkly holds {want:?}"),
                WAIT,
                || async move { (members().await == want).then_some(()) },
            )
            .await;
        }
    };
    let ok = |(status, resp): (u16, Value)| {
        assert_eq!(status, 200, "{resp}");
        resp
    };
    ok(bridge
        .heap(&heap_body(7, "t1", 1, 1, &["a", "b", "c"], &[]))
        .await);
    wait_for(&["a", "b", "c"]).await;
    // Without a drain a sync is a diff: it removes nothing it does not list.
    ok(bridge.heap(&heap_body(7, "t2", 1, 2, &["d"], &[])).await);
    ok(bridge.heap(&heap_body(7, "t2", 2, 2, &[], &[])).await);
    wait_for(&["a", "b", "c", "d"]).await;

    let drain = br#"{"action_type":"segment.users.drain","data":{"segment":{"id":7,"name":"S"}}}"#;
    let resp = ok(bridge.heap(drain).await);
    assert!(resp["note"].as_str().unwrap().contains("drain"), "{resp}");
    assert_eq!(resp["accepted"], 0);

    // The next full sync: nothing is removed before its last page ...
    let resp = ok(bridge
        .heap(&heap_body(7, "t3", 1, 2, &["a", "e"], &[]))
        .await);
    assert_eq!(resp["snapshot"]["complete"], false, "{resp}");
    wait_for(&["a", "b", "c", "d", "e"]).await;
    // ... then every member it did not list leaves.
    let resp = ok(bridge.heap(&heap_body(7, "t3", 2, 2, &["c"], &[])).await);
    assert_eq!(resp["snapshot"]["complete"], true, "{resp}");
    assert_eq!(resp["snapshot"]["removed"], 2, "b and d: {resp}");
    wait_for(&["a", "c", "e"]).await;
    // The arming is spent: the sync after it is a diff again.
    let resp = ok(bridge.heap(&heap_body(7, "t4", 1, 1, &["f"], &[])).await);
    assert!(resp.get("snapshot").is_none(), "{resp}");
    wait_for(&["a", "c", "e", "f"]).await;

    // A drain for a malformed segment is a 400 that stores nothing new.
    let (status, resp) = bridge
        .heap(br#"{"action_type":"segment.users.drain","data":{}}"#)
        .await;
    assert_eq!(status, 400, "{resp}");
    bridge.stop().await;
}

#[tokio::test]
async fn redis_down_is_503_with_retry_after_and_the_same_push_succeeds_after() {
    let mut redis = RedisServer::start();
    let cfg = TestConfig::new(&redis.url(), &nowhere());
    let bridge = Bridge::start(&cfg).await;
    let body = heap_body(42, "task-1", 1, 1, &["a@x.com"], &[]);
    redis.kill();
    let resp = bridge
        .http
        .post(format!("{}/v1/webhooks/heap", bridge.base))
        .header(
            "Heap-Hash",
            cohort_bridge::verify::heap_sign(
                &Secret::new(HEAP_SECRET),
                &cohort_bridge::clock::now_ms().to_string(),
                &body,
            ),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "store_unavailable");
    let (status, _) = bridge.get("/readyz").await;
    assert_eq!(status, 503);

    redis.restart();
    let (status, resp) = eventually("the push succeeds once Redis is back", WAIT, || async {
        let r = bridge.heap(&body).await;
        (r.0 == 200).then_some(r)
    })
    .await;
    assert_eq!(status, 200);
    assert_eq!(resp["accepted"], 1, "{resp}");
    assert_eq!(bridge.get("/readyz").await.0, 200);
    bridge.stop().await;
}

#[tokio::test]
async fn an_evicting_redis_fails_readiness_with_what_to_change() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let cfg = TestConfig::new(&redis.url(), &nowhere());
    let bridge = Bridge::start(&cfg).await;
    let (status, body) = bridge.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("allkeys-lru") && body.contains("noeviction"),
        "{body}"
    );
    bridge.stop().await;
}
