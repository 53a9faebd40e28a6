//! Mixpanel cohort sync over HTTP: add/remove, the paged `members` replace
//! (removals only after the last page, out-of-order and repeated pages,
//! restarted sessions), resuming a finalization after a crash, and
//! Mixpanel's envelope on success and on every error.

use crate::support::native::{self, mixpanel, mixpanel_body, MIXPANEL_USER};
use crate::support::{eventually, stack, Emulator, RedisServer, TestConfig, WAIT};
use cohort_bridge::store::Keys;
use serde_json::json;
use std::collections::BTreeMap;

const COHORT: i64 = 4242;

fn keys(cfg: &TestConfig) -> (Keys, u16) {
    let k = Keys::new(&cfg.prefix, 4);
    let p = k.partition("mixpanel", &COHORT.to_string());
    (k, p)
}

/// Member → desired ('1' in, '0' out), read from the cohort's want hash.
fn desired(redis: &RedisServer, cfg: &TestConfig) -> BTreeMap<String, char> {
    let (k, p) = keys(cfg);
    let mut c = redis.client().get_connection().unwrap();
    let all: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(k.want(p, "mixpanel", &COHORT.to_string()))
        .query(&mut c)
        .unwrap();
    all.into_iter()
        .map(|(m, v)| {
            let desired = cohort_bridge::store::MemberValue::parse(&v)
                .unwrap()
                .desired;
            (m, if desired { '1' } else { '0' })
        })
        .collect()
}

fn in_members(redis: &RedisServer, cfg: &TestConfig) -> Vec<String> {
    desired(redis, cfg)
        .into_iter()
        .filter(|(_, d)| *d == '1')
        .map(|(m, _)| m)
        .collect()
}

async fn ld_has(emu: &Emulator, want: &[&str]) {
    let key = format!("mixpanel-{COHORT}");
    eventually(&format!("LaunchDarkly holds {want:?}"), WAIT, || async {
        let got = emu.members("default", "production", &key).await;
        (got == Some(want.iter().map(|s| s.to_string()).collect())).then_some(())
    })
    .await;
}

fn success(action: &str) -> serde_json::Value {
    json!({"action": action, "status": "success"})
}

#[tokio::test]
async fn paged_replace_removes_exactly_the_absent_members_and_only_after_the_last_page() {
    let (redis, emu, mut cfg) = stack();
    native::add_sources(&mut cfg);
    let bridge = native::start(&cfg).await;

    // The cohort as the bridge knows it, written to LaunchDarkly.
    let body = mixpanel_body(
        "add_members",
        COHORT,
        "sess-0",
        1,
        1,
        &["a", "b", "c", "d", "e"],
    );
    assert_eq!(
        mixpanel(&bridge, &body).await,
        (200, success("add_members"))
    );
    let body = mixpanel_body("remove_members", COHORT, "sess-0", 1, 1, &["e"]);
    assert_eq!(
        mixpanel(&bridge, &body).await,
        (200, success("remove_members"))
    );
    ld_has(&emu, &["a", "b", "c", "d"]).await;

    // A replace in two pages: {a, b, x} then {c, y}. After page 1, nothing is removed.
    let page1 = mixpanel_body("members", COHORT, "sess-1", 1, 2, &["a", "b", "x"]);
    assert_eq!(mixpanel(&bridge, &page1).await, (200, success("members")));
    assert_eq!(in_members(&redis, &cfg), ["a", "b", "c", "d", "x"]);
    // A repeated page is harmless: still nothing removed, nothing counted twice.
    assert_eq!(mixpanel(&bridge, &page1).await, (200, success("members")));
    assert_eq!(in_members(&redis, &cfg), ["a", "b", "c", "d", "x"]);
    ld_has(&emu, &["a", "b", "c", "d", "x"]).await;

    // The last page: exactly d (in no page) is removed; e stays out.
    let page2 = mixpanel_body("members", COHORT, "sess-1", 2, 2, &["c", "y"]);
    assert_eq!(mixpanel(&bridge, &page2).await, (200, success("members")));
    assert_eq!(in_members(&redis, &cfg), ["a", "b", "c", "x", "y"]);
    assert_eq!(desired(&redis, &cfg)["d"], '0');
    ld_has(&emu, &["a", "b", "c", "x", "y"]).await;

    // The finalization is done: no pending entry, no staging set left.
    let (k, p) = keys(&cfg);
    let mut c = redis.client().get_connection().unwrap();
    let pending: usize = redis::cmd("HLEN")
        .arg(k.snapshot_pending(p))
        .query(&mut c)
        .unwrap();
    assert_eq!(pending, 0);
    let staged: bool = redis::cmd("EXISTS")
        .arg(k.snapshot_members(p, "mixpanel", &COHORT.to_string(), "sess-1"))
        .query(&mut c)
        .unwrap();
    assert!(!staged);
    // The last page retried after the end changes nothing.
    assert_eq!(mixpanel(&bridge, &page2).await, (200, success("members")));
    assert_eq!(in_members(&redis, &cfg), ["a", "b", "c", "x", "y"]);
    bridge.stop().await;
}

#[tokio::test]
async fn out_of_order_pages_and_a_restarted_session_are_harmless() {
    let (redis, emu, mut cfg) = stack();
    native::add_sources(&mut cfg);
    let bridge = native::start(&cfg).await;
    let body = mixpanel_body(
        "add_members",
        COHORT,
        "sess-0",
        1,
        1,
        &["old1", "old2", "keep"],
    );
    assert_eq!(mixpanel(&bridge, &body).await.0, 200);

    // Session A sends page 1 of 2, then Mixpanel restarts from the top as session B.
    let a1 = mixpanel_body("members", COHORT, "sess-A", 1, 2, &["keep", "a-only"]);
    assert_eq!(mixpanel(&bridge, &a1).await.0, 200);
    // B's pages arrive out of order: page 2 first (nothing removed yet), then page 1.
    let b2 = mixpanel_body("members", COHORT, "sess-B", 2, 2, &["b2"]);
    assert_eq!(mixpanel(&bridge, &b2).await.0, 200);
    assert_eq!(
        in_members(&redis, &cfg),
        ["a-only", "b2", "keep", "old1", "old2"]
    );
    let b1 = mixpanel_body("members", COHORT, "sess-B", 1, 2, &["keep", "b1"]);
    assert_eq!(mixpanel(&bridge, &b1).await.0, 200);
    // B is the truth: old1, old2 and A's a-only (in no page of B) are removed.
    assert_eq!(in_members(&redis, &cfg), ["b1", "b2", "keep"]);
    ld_has(&emu, &["b1", "b2", "keep"]).await;

    // Session A's staging is left to expire: it has a TTL, and no pending finalization.
    let (k, p) = keys(&cfg);
    let mut c = redis.client().get_connection().unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(k.snapshot_members(p, "mixpanel", &COHORT.to_string(), "sess-A"))
        .query(&mut c)
        .unwrap();
    assert!(ttl > 0, "abandoned staging expires (PTTL {ttl})");
    let pending: usize = redis::cmd("HLEN")
        .arg(k.snapshot_pending(p))
        .query(&mut c)
        .unwrap();
    assert_eq!(pending, 0);
    bridge.stop().await;
}

#[tokio::test]
async fn a_finalization_left_pending_by_a_crash_is_resumed_by_a_starting_bridge() {
    let (redis, emu, mut cfg) = stack();
    native::add_sources(&mut cfg);
    let bridge = native::start(&cfg).await;
    let body = mixpanel_body("add_members", COHORT, "sess-0", 1, 1, &["a", "b", "c", "d"]);
    assert_eq!(mixpanel(&bridge, &body).await.0, 200);
    ld_has(&emu, &["a", "b", "c", "d"]).await;
    bridge.stop().await;

    // What a bridge that applied the last page of {a, b} and died before the
    // first chunk a minute ago leaves in Redis (snapshot_page.lua's writes), plus one
    // pending entry whose staging has expired (must be dropped, removing nothing).
    let (k, p) = keys(&cfg);
    let cohort = COHORT.to_string();
    let start = cohort_bridge::clock::now_ms();
    let mut c = redis.client().get_connection().unwrap();
    let () = redis::pipe()
        .cmd("SADD")
        .arg(k.snapshot_members(p, "mixpanel", &cohort, "crashed"))
        .arg("a")
        .arg("b")
        .ignore()
        .cmd("HSET")
        .arg(k.snapshot_meta(p, "mixpanel", &cohort, "crashed"))
        .arg("start")
        .arg(start)
        .arg("total")
        .arg(1)
        .arg("seen")
        .arg(1)
        .arg("page:1")
        .arg(1)
        .arg("has_members")
        .arg(1)
        .arg("done")
        .arg(1)
        .ignore()
        .cmd("HSET")
        .arg(k.snapshot_pending(p))
        .arg(format!("mixpanel:{cohort}"))
        .arg(format!("{start}|0|{}|crashed", start - 60_000))
        .ignore()
        .query(&mut c)
        .unwrap();
    let other = "777";
    let po = k.partition("mixpanel", other);
    let body = mixpanel_body("add_members", 777, "sess-9", 1, 1, &["z"]);
    let bridge = native::start(&cfg).await;
    assert_eq!(mixpanel(&bridge, &body).await.0, 200);
    let () = redis::cmd("HSET")
        .arg(k.snapshot_pending(po))
        .arg(format!("mixpanel:{other}"))
        .arg(format!("{start}|0|{}|expired", start - 60_000))
        .query(&mut c)
        .unwrap();

    // No push to this bridge touches cohort 4242: its flusher finds the entry.
    ld_has(&emu, &["a", "b"]).await;
    assert_eq!(in_members(&redis, &cfg), ["a", "b"]);
    eventually("both pending entries are gone", WAIT, || async {
        let mut c = redis.client().get_connection().unwrap();
        let a: usize = redis::cmd("HLEN")
            .arg(k.snapshot_pending(p))
            .query(&mut c)
            .unwrap();
        let b: usize = redis::cmd("HLEN")
            .arg(k.snapshot_pending(po))
            .query(&mut c)
            .unwrap();
        (a + b == 0).then_some(())
    })
    .await;
    let z: Option<String> = redis::cmd("HGET")
        .arg(k.want(po, "mixpanel", other))
        .arg("z")
        .query(&mut c)
        .unwrap();
    let z = z.unwrap();
    assert!(
        cohort_bridge::store::MemberValue::parse(&z)
            .unwrap()
            .desired,
        "expired staging removed nothing"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn mixpanel_errors_keep_their_status_and_use_the_envelope_storing_nothing() {
    let (mut redis, _emu, mut cfg) = stack();
    native::add_sources(&mut cfg);
    cfg.set("server", "max_body_bytes", "4096");
    let bridge = native::start(&cfg).await;
    let good = mixpanel_body("add_members", COHORT, "s", 1, 1, &["a"]);
    let bytes = serde_json::to_vec(&good).unwrap();

    let wrong = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{MIXPANEL_USER}:wrong"),
    );
    let (status, resp) = bridge
        .post(
            "mixpanel",
            &bytes,
            &[("Authorization", format!("Basic {wrong}"))],
        )
        .await;
    assert_eq!(status, 401);
    // Refused before its body is read (or parsed): no action to echo.
    assert_eq!(resp["action"], "");
    assert_eq!(resp["status"], "failure");
    assert_eq!(resp["error"]["code"], 401);
    assert!(resp["error"]["message"]
        .as_str()
        .unwrap()
        .contains("credentials"));
    let (status, resp) = bridge.post("mixpanel", &bytes, &[]).await;
    assert_eq!((status, resp["status"].clone()), (401, json!("failure")));

    for (body, needle) in [
        (
            json!({"action": "members", "parameters": {"mixpanel_cohort_id": 1, "members": []}}),
            "mixpanel_session_id is required",
        ),
        (
            json!({"action": "drop_table", "parameters": {}}),
            "action must be one of",
        ),
        (
            mixpanel_body("members", COHORT, "s", 3, 2, &["a"]),
            "exceeds total_pages",
        ),
    ] {
        let (status, resp) = mixpanel(&bridge, &body).await;
        assert_eq!(status, 400, "{resp}");
        assert_eq!(resp["status"], "failure");
        assert_eq!(resp["error"]["code"], 400);
        let msg = resp["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg} lacks {needle}");
        let echoed = body["action"]
            .as_str()
            .filter(|a| *a != "drop_table")
            .unwrap_or("");
        assert_eq!(resp["action"], echoed);
    }
    let big: Vec<String> = (0..400).map(|i| format!("member-{i}")).collect();
    let big: Vec<&str> = big.iter().map(String::as_str).collect();
    let (status, resp) = mixpanel(
        &bridge,
        &mixpanel_body("add_members", COHORT, "s", 1, 1, &big),
    )
    .await;
    assert_eq!(
        (status, resp["status"].clone()),
        (413, json!("failure")),
        "{resp}"
    );
    assert_eq!(resp["error"]["code"], 413);
    let data: Vec<String> = redis
        .keys(&cfg.prefix)
        .into_iter()
        .filter(|k| !k.ends_with(":lease") && !k.ends_with(":replicas"))
        .collect();
    assert!(data.is_empty(), "{data:?}");

    // Redis down: 503 with Retry-After, still in the envelope.
    redis.kill();
    let creds = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{MIXPANEL_USER}:{}", native::MIXPANEL_PASSWORD),
    );
    let resp = bridge
        .http
        .post(format!("{}/v1/webhooks/mixpanel", bridge.base))
        .header("Authorization", format!("Basic {creds}"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "failure");
    assert_eq!(body["action"], "add_members");
    assert_eq!(body["error"]["code"], 503);
    bridge.stop().await;
}
