//! LaunchDarkly's partner endpoint, `POST /api/v2/segment-targets/{integrationKey}`:
//! every built-in manifest end to end, the three add/remove modes, per-member
//! cohort overrides, tokens (401/403, rotation), environments, manifests
//! added from a directory, and bad input that never stores anything.

use crate::support::emulator::included;
use crate::support::{
    data_keys, eventually, stack, Bridge, Emulator, RedisServer, TestConfig, WAIT,
};
use cohort_bridge::config::{self, MapSecrets};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use tempfile::TempDir;

const PROD: &str = "61a0c0ffee0000000000prod";
const STAGING: &str = "61a0c0ffee00000000stage1";
const TOKEN_OLD: &str = "partner-token-old";
const TOKEN_NEW: &str = "partner-token-new";
const TOKEN_SEGMENT_ONLY: &str = "partner-token-segment-only";

/// Token files, a manifest directory, and the `[partner]` section using them.
struct PartnerFiles {
    dir: TempDir,
}

impl PartnerFiles {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, value) in [
            ("old", TOKEN_OLD),
            ("new", TOKEN_NEW),
            ("segment-only", TOKEN_SEGMENT_ONLY),
        ] {
            std::fs::write(dir.path().join(name), format!("{value}\n")).unwrap();
        }
        std::fs::create_dir(dir.path().join("manifests")).unwrap();
        PartnerFiles { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The `[partner]` TOML (appended after the test config's sources).
    fn toml(&self, extra: &str) -> String {
        format!(
            r#"
[destinations.prod_accounts]
project = "default"
environment = "production"
context_kind = "account"

[partner]
manifest_dirs = [{dir:?}]
{extra}

[partner.environments]
{PROD:?} = ["production", "prod_accounts"]
{STAGING:?} = "staging"

[[partner.tokens]]
secret_file = [{old:?}, {new:?}]
integrations = ["*"]

[[partner.tokens]]
secret_file = {seg:?}
integrations = ["segment-audiences"]
"#,
            dir = self.path("manifests"),
            old = self.path("old"),
            new = self.path("new"),
            seg = self.path("segment-only"),
        )
    }
}

/// A stack whose bridge has the `[partner]` section.
fn partner_stack(extra: &str) -> (RedisServer, Emulator, TestConfig, PartnerFiles) {
    let (redis, emu, mut cfg) = stack();
    let files = PartnerFiles::new();
    cfg.sources = files.toml(extra);
    (redis, emu, cfg, files)
}

async fn post(bridge: &Bridge, key: &str, body: &[u8], auth: Option<&str>) -> (u16, Value) {
    let mut req = bridge
        .http
        .post(format!("{}/api/v2/segment-targets/{key}", bridge.base))
        .header("Content-Type", "application/json")
        .body(body.to_vec());
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let resp = req.send().await.expect("bridge reachable");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post_json(bridge: &Bridge, key: &str, body: &Value) -> (u16, Value) {
    post(
        bridge,
        key,
        &serde_json::to_vec(body).unwrap(),
        Some(TOKEN_OLD),
    )
    .await
}

fn members(v: &[&str], id_field: &str) -> Vec<Value> {
    v.iter().map(|m| json!({ id_field: m })).collect()
}

/// The bodies each integration's sender posts to add `add` and then remove
/// `remove` from cohort `cohort` (shapes from the senders table of docs/launchdarkly.md
/// and each manifest's request parser).
fn bodies(key: &str, env: &str, cohort: &str, add: &[&str], remove: &[&str]) -> Vec<Value> {
    let name = format!("{key} cohort {cohort}");
    let batch = |id: &str, cid: &str, cname: &str, value: &str| -> Vec<Value> {
        add.iter()
            .map(|m| (m, true))
            .chain(remove.iter().map(|m| (m, false)))
            .map(|(m, v)| json!({id: m, cid: cohort, cname: name, value: v}))
            .collect()
    };
    let inclusion = |action_add: &str, action_remove: &str, f: &dyn Fn(&str, &[&str]) -> Value| {
        vec![f(action_add, add), f(action_remove, remove)]
    };
    match key {
        "amplitude" => vec![
            json!({"environmentId": env, "batch": batch("userId", "cohortId", "cohortName", "value")
            .into_iter().map(|mut m| { m["cohortUrl"] = json!(format!("https://app.amplitude.com/cohort/{cohort}")); m }).collect::<Vec<_>>()}),
        ],
        "census-synced-segments" => vec![json!({"environment_id": env, "context_kind": "user",
            "batch": batch("user_id", "cohort_id", "cohort_name", "value")})],
        "segment-audiences" => vec![json!({"environmentId": env, "contextKind": "user",
            "batch": batch("userId", "cohortId", "cohortName", "value")})],
        "example-synced-segment-integration1" => vec![json!({
            "customer_config": {"fields": [{"value": {"id": env}}]},
            "data": {"segment": {"id": cohort, "name": name},
                     "add": members(add, "id"), "remove": members(remove, "id")}})],
        "heap-inbound" => vec![json!({"parameters": {"environment_id": env},
            "heap": {"action_type": "segment.users.sync",
                     "data": {"segment": {"id": cohort, "name": name},
                              "add": members(add, "id"), "remove": members(remove, "id")}}})],
        "rudderstack" => vec![
            json!({"environmentId": env, "cohortId": cohort, "cohortName": name,
            "contextKind": "user", "listData": {"add": members(add, "id"), "remove": members(remove, "id")}}),
        ],
        "fulcrum" | "sumatra-synced-segments" => {
            vec![json!({"environmentId": env, "contextKind": "user",
            "cohortId": cohort, "cohortName": name, "cohortUrl": "https://example.com/c",
            "included": {"add": members(add, "id"), "remove": members(remove, "id")}})]
        }
        "hightouch" => inclusion("add", "remove", &|action, m| {
            json!({"environmentId": env,
            "cohortId": cohort, "cohortName": name, "contextKind": "user", "action": action,
            "members": members(m, "integration_distinct_id")})
        }),
        "example-synced-segment-integration2" => {
            inclusion("add_members", "remove_members", &|action, m| {
                json!({
            "action": action, "contextKind": "user",
            "parameters": {"mixpanel_project_id": env, "mixpanel_cohort_id": cohort,
                           "mixpanel_cohort_name": name, "members": members(m, "mixpanel_distinct_id")}})
            })
        }
        "zeotap" => inclusion("add_members", "remove_members", &|action, m| {
            json!({"action": action,
            "parameters": {"integration_project_id": env, "integration_cohort_id": cohort,
                "integration_cohort_name": name,
                // Numeric ids: the member key is their decimal text.
                "members": m.iter().map(|x| json!({"integration_distinct_id": x.parse::<i64>().unwrap()})).collect::<Vec<_>>()}})
        }),
        "tealium-synced-segments" => inclusion("add_member", "remove_member", &|action, m| {
            json!({
            "action": action,
            "parameters": {"tealium_project_id": env, "tealium_cohort_id": cohort,
                           "tealium_cohort_name": name, "members": members(m, "member_id")}})
        }),
        other => panic!("no payload for {other}"),
    }
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

async fn segment_members(emu: &Emulator) -> BTreeMap<String, Vec<String>> {
    let mut got = BTreeMap::new();
    for seg in emu.segments().await {
        let key = format!(
            "{}/{}",
            seg["environment"].as_str().unwrap_or_default(),
            seg["key"].as_str().unwrap_or_default()
        );
        let mut m: Vec<String> = included(&seg);
        m.sort();
        got.insert(key, m);
    }
    got
}

#[tokio::test]
async fn every_builtin_manifest_reaches_launchdarkly() {
    let (_redis, emu, cfg, _files) = partner_stack("");
    let bridge = Bridge::start(&cfg).await;
    let mut want = BTreeMap::new();
    for (key, _) in config::manifest::BUILTIN {
        let cohort = format!("c-{key}");
        for body in bodies(key, PROD, &cohort, &["101", "102", "103"], &["103"]) {
            let (status, resp) = post_json(&bridge, key, &body).await;
            assert_eq!(status, 204, "{key}: {resp}");
            assert_eq!(resp, Value::String(String::new()), "{key}: 204 has no body");
        }
        // Tealium's matcher, as written, matches remove_member too: it never removes.
        let expected = if *key == "tealium-synced-segments" {
            sorted(&["101", "102", "103"])
        } else {
            sorted(&["101", "102"])
        };
        want.insert(format!("production/partner-{key}-c-{key}"), expected);
    }
    eventually(
        "every integration's segment in LaunchDarkly",
        WAIT,
        || async { (segment_members(&emu).await == want).then_some(()) },
    )
    .await;
    let seg = emu
        .segment("default", "production", "partner-rudderstack-c-rudderstack")
        .await
        .unwrap();
    assert_eq!(seg["name"], "rudderstack cohort c-rudderstack");
    assert_eq!(seg["unboundedContextKind"], "user");
    bridge.stop().await;
}

#[tokio::test]
async fn segment_and_rudderstack_pushes_route_by_environment_and_context_kind() {
    let (_redis, emu, cfg, _files) = partner_stack("");
    let bridge = Bridge::start(&cfg).await;
    // Segment "LaunchDarkly Audiences", to staging, one request per audience.
    let seg = json!({"environmentId": STAGING, "contextKind": "user", "batch": [
        {"userId": "u-1", "cohortName": "High LTV", "cohortId": "aud_1", "value": true},
        {"userId": "u-2", "cohortName": "High LTV", "cohortId": "aud_1", "value": true},
        {"anonymousId": "anon", "cohortName": "High LTV", "cohortId": "aud_1", "value": true},
    ]});
    let (status, resp) = post(
        &bridge,
        "segment-audiences",
        &serde_json::to_vec(&seg).unwrap(),
        Some(TOKEN_SEGMENT_ONLY),
    )
    .await;
    assert_eq!(status, 204, "{resp}");
    // RudderStack, account contexts in production: the account destination.
    let rs = json!({"environmentId": PROD, "cohortId": "rs-9", "cohortName": "Enterprise accounts",
        "contextKind": "account", "listData": {"add": [{"id": "acct-1"}, {"id": "acct-2"}], "remove": [{"id": "acct-3"}]}});
    let (status, resp) = post_json(&bridge, "rudderstack", &rs).await;
    assert_eq!(status, 204, "{resp}");
    let want = BTreeMap::from([
        (
            "staging/partner-segment-audiences-aud_1".to_string(),
            sorted(&["u-1", "u-2"]),
        ),
        (
            "production/partner-rudderstack-rs-9".to_string(),
            sorted(&["acct-1", "acct-2"]),
        ),
    ]);
    eventually("both segments", WAIT, || async {
        (segment_members(&emu).await == want).then_some(())
    })
    .await;
    let acct = emu
        .segment("default", "production", "partner-rudderstack-rs-9")
        .await
        .unwrap();
    assert_eq!(acct["unboundedContextKind"], "account");
    let (_, metrics) = bridge.get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cohort_bridge_changes_total")
                && l.contains("source=\"partner-segment-audiences\"")
                && l.contains("outcome=\"skipped_without_key\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn per_member_cohort_overrides_write_several_segments() {
    let (_redis, emu, cfg, _files) = partner_stack("");
    let bridge = Bridge::start(&cfg).await;
    let body = json!({"environmentId": PROD, "batch": [
        {"userId": "a", "cohortId": "c1", "cohortName": "One", "value": true},
        {"userId": "b", "cohortId": "c2", "cohortName": "Two", "value": true},
        {"userId": "c", "cohortId": "c2", "cohortName": "Two", "value": true},
    ]});
    let (status, resp) = post_json(&bridge, "amplitude", &body).await;
    assert_eq!(status, 204, "{resp}");
    let want = BTreeMap::from([
        (
            "production/partner-amplitude-c1".to_string(),
            sorted(&["a"]),
        ),
        (
            "production/partner-amplitude-c2".to_string(),
            sorted(&["b", "c"]),
        ),
    ]);
    eventually("two segments", WAIT, || async {
        (segment_members(&emu).await == want).then_some(())
    })
    .await;
    let two = emu
        .segment("default", "production", "partner-amplitude-c2")
        .await
        .unwrap();
    assert_eq!(two["name"], "Two");
    bridge.stop().await;
}

/// One refused request: (what, integration key, body, Authorization,
/// status, code, text the message names).
type Refusal<'a> = (
    &'a str,
    &'a str,
    Vec<u8>,
    Option<&'a str>,
    u16,
    &'a str,
    &'a str,
);

/// A body the partner route accepts (RudderStack's shape).
fn good_body() -> Value {
    json!({"environmentId": PROD, "cohortId": "c", "cohortName": "n", "contextKind": "user",
        "listData": {"add": [{"id": "m"}]}})
}

/// The good body, changed by `f`.
fn good_with(f: &dyn Fn(&mut Value)) -> Vec<u8> {
    let mut b = good_body();
    f(&mut b);
    serde_json::to_vec(&b).unwrap()
}

/// Sends every refusal to a bridge taking bodies of at most 4 KiB: each gets
/// its status and code, LaunchDarkly style, with a message naming the
/// problem, and none of them stores anything.
async fn assert_refused(cases: Vec<Refusal<'_>>) {
    let (redis, _emu, mut cfg, _files) = partner_stack("");
    cfg.set("server", "max_body_bytes", "4096");
    let bridge = Bridge::start(&cfg).await;
    for (what, key, body, auth, status, code, needle) in cases {
        let (got, resp) = post(&bridge, key, &body, auth).await;
        assert_eq!(got, status, "{what}: {resp}");
        assert_eq!(resp["code"], code, "{what}: {resp}");
        let message = resp["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty() && message.contains(needle),
            "{what}: {resp}"
        );
    }
    assert!(
        data_keys(&redis, &cfg.prefix).is_empty(),
        "a rejected push stored something: {:?}",
        data_keys(&redis, &cfg.prefix)
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_401() {
    let good = serde_json::to_vec(&good_body()).unwrap();
    assert_refused(vec![
        (
            "no token",
            "rudderstack",
            good.clone(),
            None,
            401,
            "unauthorized",
            "",
        ),
        (
            "wrong token",
            "rudderstack",
            good.clone(),
            Some("nope"),
            401,
            "unauthorized",
            "",
        ),
        (
            "token with Bearer but wrong",
            "rudderstack",
            good.clone(),
            Some("Bearer nope"),
            401,
            "unauthorized",
            "",
        ),
        (
            "unknown integration, bad token",
            "no-such-integration",
            good,
            None,
            401,
            "unauthorized",
            "",
        ),
    ])
    .await;
}

#[tokio::test]
async fn an_unknown_integration_is_404_and_one_outside_the_token_403() {
    let good = serde_json::to_vec(&good_body()).unwrap();
    assert_refused(vec![
        (
            "unknown integration",
            "no-such-integration",
            good.clone(),
            Some(TOKEN_OLD),
            404,
            "not_found",
            "no-such-integration",
        ),
        (
            "token limited to segment-audiences",
            "rudderstack",
            good,
            Some(TOKEN_SEGMENT_ONLY),
            403,
            "forbidden",
            "rudderstack",
        ),
    ])
    .await;
}

#[tokio::test]
async fn a_body_the_manifest_cannot_read_is_400_naming_the_field() {
    assert_refused(vec![
        (
            "missing cohortId",
            "rudderstack",
            good_with(&|b| {
                b.as_object_mut().unwrap().remove("cohortId");
            }),
            Some(TOKEN_OLD),
            400,
            "invalid_request",
            "\"/cohortId\"",
        ),
        (
            "missing environmentId",
            "rudderstack",
            good_with(&|b| b["environmentId"] = Value::Null),
            Some(TOKEN_OLD),
            400,
            "invalid_request",
            "\"/environmentId\"",
        ),
        (
            "no member arrays",
            "rudderstack",
            good_with(&|b| b["listData"] = json!({})),
            Some(TOKEN_OLD),
            400,
            "invalid_request",
            "/listData/add",
        ),
        (
            "members not an array",
            "rudderstack",
            good_with(&|b| b["listData"]["add"] = json!({"id": "m"})),
            Some(TOKEN_OLD),
            400,
            "invalid_request",
            "/listData/add",
        ),
        (
            "membership not a boolean",
            "segment-audiences",
            serde_json::to_vec(&json!({"environmentId": PROD,
            "batch": [{"userId": "u", "cohortId": "c", "cohortName": "n", "value": {"x": 1}}]}))
            .unwrap(),
            Some(TOKEN_OLD),
            400,
            "invalid_request",
            "/batch/0/value",
        ),
    ])
    .await;
}

#[tokio::test]
async fn an_unknown_environment_or_a_context_kind_mismatch_is_400() {
    assert_refused(vec![
        (
            "unknown environmentId",
            "rudderstack",
            good_with(&|b| b["environmentId"] = json!("other-env")),
            Some(TOKEN_OLD),
            400,
            "invalid_request",
            "other-env",
        ),
        (
            "context kind mismatch",
            "rudderstack",
            good_with(&|b| {
                b["environmentId"] = json!(STAGING);
                b["contextKind"] = json!("device");
            }),
            Some(TOKEN_OLD),
            400,
            "invalid_request",
            "device",
        ),
    ])
    .await;
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_400() {
    assert_refused(vec![
        (
            "not json",
            "rudderstack",
            b"{\"environmentId\": ".to_vec(),
            Some(TOKEN_OLD),
            400,
            "invalid_request",
            "",
        ),
        (
            "empty body",
            "rudderstack",
            Vec::new(),
            Some(TOKEN_OLD),
            400,
            "invalid_request",
            "",
        ),
        (
            "array body",
            "rudderstack",
            b"[1,2]".to_vec(),
            Some(TOKEN_OLD),
            400,
            "invalid_request",
            "",
        ),
        (
            "not utf-8",
            "rudderstack",
            vec![0xff, 0xfe, 0x00],
            Some(TOKEN_OLD),
            400,
            "invalid_request",
            "",
        ),
    ])
    .await;
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_413() {
    assert_refused(vec![(
        "too large",
        "rudderstack",
        good_with(&|b| {
            b["listData"]["add"] = json!((0..2000).map(|i| json!({"id": i})).collect::<Vec<_>>());
        }),
        Some(TOKEN_OLD),
        413,
        "payload_too_large",
        "",
    )])
    .await;
}

#[tokio::test]
async fn both_secrets_of_a_rotated_token_work_raw_or_with_bearer() {
    let (redis, _emu, mut cfg, _files) = partner_stack("");
    cfg.set("server", "max_body_bytes", "4096");
    let bridge = Bridge::start(&cfg).await;
    let good = serde_json::to_vec(&good_body()).unwrap();
    for auth in [
        TOKEN_OLD.to_string(),
        TOKEN_NEW.to_string(),
        format!("Bearer {TOKEN_NEW}"),
    ] {
        let (status, resp) = post(&bridge, "rudderstack", &good, Some(&auth)).await;
        assert_eq!(status, 204, "{auth}: {resp}");
    }
    assert!(!data_keys(&redis, &cfg.prefix).is_empty());
    bridge.stop().await;
}

#[tokio::test]
async fn redis_down_is_503_with_retry_after() {
    let (mut redis, _emu, cfg, _files) = partner_stack("");
    let bridge = Bridge::start(&cfg).await;
    redis.kill();
    let body = json!({"environmentId": PROD, "cohortId": "c", "cohortName": "n",
        "listData": {"add": [{"id": "m"}]}});
    let resp = bridge
        .http
        .post(format!(
            "{}/api/v2/segment-targets/rudderstack",
            bridge.base
        ))
        .header("Authorization", TOKEN_OLD)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "service_unavailable");
    bridge.stop().await;
}

#[tokio::test]
async fn a_token_past_its_rate_gets_429_with_the_reset_and_nothing_is_stored() {
    let (redis, emu, mut cfg, files) = partner_stack("");
    // A third token, limited to one request per 100 s: the second is refused.
    std::fs::write(files.dir.path().join("limited"), "partner-token-limited\n").unwrap();
    cfg.sources.push_str(&format!(
        "\n[[partner.tokens]]\nsecret_file = {:?}\nintegrations = [\"rudderstack\"]\nrequests_per_second = 0.01\n",
        files.path("limited")
    ));
    let bridge = Bridge::start(&cfg).await;
    let body = |cohort: &str| {
        serde_json::to_vec(
            &json!({"environmentId": PROD, "cohortId": cohort, "cohortName": "n",
            "contextKind": "user", "listData": {"add": [{"id": "m1"}]}}),
        )
        .unwrap()
    };
    let (status, v) = post(
        &bridge,
        "rudderstack",
        &body("first"),
        Some("partner-token-limited"),
    )
    .await;
    assert_eq!(status, 204, "{v}");
    let resp = bridge
        .http
        .post(format!(
            "{}/api/v2/segment-targets/rudderstack",
            bridge.base
        ))
        .header("Authorization", "partner-token-limited")
        .body(body("second"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=100).contains(&retry), "Retry-After {retry}");
    let reset: i64 = resp.headers()["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        reset > cohort_bridge::clock::now_ms(),
        "the reset is in the future"
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "rate_limited", "{v}");
    // Another token is not limited by it.
    let (status, _) = post(&bridge, "rudderstack", &body("third"), Some(TOKEN_OLD)).await;
    assert_eq!(status, 204);
    eventually("the accepted cohorts reach LaunchDarkly", WAIT, || async {
        let keys: Vec<String> = emu
            .segments()
            .await
            .iter()
            .filter_map(|s| s["key"].as_str().map(str::to_string))
            .collect();
        (keys.len() == 2).then_some(keys)
    })
    .await;
    let stored: Vec<String> = redis
        .keys(&cfg.prefix)
        .into_iter()
        .filter(|k| k.contains(":want:"))
        .collect();
    assert_eq!(
        stored.len(),
        2,
        "the refused push stored nothing: {stored:?}"
    );
    assert!(stored.iter().all(|k| !k.ends_with(":second")), "{stored:?}");
    bridge.stop().await;
}

#[tokio::test]
async fn a_manifest_from_manifest_dirs_works_without_a_rebuild() {
    let (_redis, emu, cfg, files) = partner_stack("");
    // A partner LaunchDarkly does not know: its own shape, arrayInclusion mode.
    std::fs::write(
        files.dir.path().join("manifests/acme-cdp.json"),
        json!({"name": "Acme CDP", "capabilities": {"syncedSegment": {"requestParser": {
            "environmentIdPath": "/ld/clientSideId",
            "cohortIdPath": "/audience/key",
            "cohortNamePath": "/audience/title",
            "arrayInclusion": {"path": "/op", "matcher": "^(enter|join)$"},
            "memberArrayPath": "/profiles",
            "memberArrayParser": {"memberIdPath": "/ids/0"}}}}})
        .to_string(),
    )
    .unwrap();
    // Not a synced-segment manifest: ignored.
    std::fs::write(
        files.dir.path().join("manifests/notes.json"),
        r#"{"name": "x"}"#,
    )
    .unwrap();
    let bridge = Bridge::start(&cfg).await;
    for (op, ids) in [("enter", vec!["p1", "p2"]), ("leave", vec!["p2"])] {
        let body = json!({"ld": {"clientSideId": PROD}, "audience": {"key": "vip", "title": "VIPs"},
            "op": op, "profiles": ids.iter().map(|i| json!({"ids": [i]})).collect::<Vec<_>>()});
        let (status, resp) = post_json(&bridge, "acme-cdp", &body).await;
        assert_eq!(status, 204, "{resp}");
    }
    let (status, _) = post_json(&bridge, "notes", &json!({})).await;
    assert_eq!(status, 404);
    let want = BTreeMap::from([(
        "production/partner-acme-cdp-vip".to_string(),
        sorted(&["p1"]),
    )]);
    eventually("the acme segment", WAIT, || async {
        (segment_members(&emu).await == want).then_some(())
    })
    .await;
    bridge.stop().await;
}

#[tokio::test]
async fn the_tealium_matcher_can_be_overridden() {
    let (_redis, emu, cfg, _files) = partner_stack(
        r#"array_inclusion_matchers = { "tealium-synced-segments" = "^add_member$" }"#,
    );
    let bridge = Bridge::start(&cfg).await;
    for body in bodies("tealium-synced-segments", PROD, "t1", &["a", "b"], &["b"]) {
        let (status, resp) = post_json(&bridge, "tealium-synced-segments", &body).await;
        assert_eq!(status, 204, "{resp}");
    }
    let want = BTreeMap::from([(
        "production/partner-tealium-synced-segments-t1".to_string(),
        sorted(&["a"]),
    )]);
    eventually("tealium removes", WAIT, || async {
        (segment_members(&emu).await == want).then_some(())
    })
    .await;
    bridge.stop().await;
}

#[test]
fn configuration_problems_name_their_keys() {
    let files = PartnerFiles::new();
    let cfg = TestConfig::new("redis://127.0.0.1:1", "http://127.0.0.1:1");
    let check = |partner: &str, sources: &str| -> Vec<(String, String)> {
        let text = format!("{}\n{sources}\n{partner}", cfg.toml());
        let mut secrets = TestConfig::secrets().0;
        secrets.insert("P_TOKEN".into(), "t".into());
        match config::from_toml_str(&text, &MapSecrets(secrets)) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems,
        }
    };
    let has = |problems: &[(String, String)], key: &str, needle: &str| {
        problems.iter().any(|(k, m)| k == key && m.contains(needle))
    };

    let ok = check(&files.toml(""), "");
    assert!(ok.is_empty(), "{ok:?}");

    let p = check(
        r#"
[partner]
environments = { "e1" = "nowhere" }
array_inclusion_matchers = { "rudderstack" = "^add$", "nope" = "x" }
[[partner.tokens]]
secret_env = "MISSING_TOKEN"
integrations = ["rudderstack", "no-such"]
[[partner.tokens]]
secret_env = "P_TOKEN"
integrations = []
requests_per_second = 0
"#,
        "",
    );
    assert!(
        has(&p, "partner.tokens[1].requests_per_second", "positive"),
        "{p:?}"
    );
    assert!(
        has(
            &p,
            "partner.environments.e1",
            "unknown destination \"nowhere\""
        ),
        "{p:?}"
    );
    assert!(
        has(&p, "partner.tokens[0].secret_env", "MISSING_TOKEN"),
        "{p:?}"
    );
    assert!(
        has(&p, "partner.tokens[0].integrations[1]", "no-such"),
        "{p:?}"
    );
    assert!(
        has(&p, "partner.tokens[1].integrations", "[\"*\"]"),
        "{p:?}"
    );
    assert!(
        has(
            &p,
            "partner.array_inclusion_matchers.nope",
            "unknown integration"
        ),
        "{p:?}"
    );
    assert!(
        has(
            &p,
            "partner.array_inclusion_matchers.rudderstack",
            "no arrayInclusion"
        ),
        "{p:?}"
    );

    // Two destinations of one context kind for one environment are ambiguous.
    let p = check(
        "[partner]\nenvironments = { \"e1\" = [\"production\", \"staging\"] }\n",
        "",
    );
    assert!(
        has(&p, "partner.environments.e1", "both have context kind"),
        "{p:?}"
    );

    // A derived source id may not collide with a configured source.
    let p = check(
        "",
        r#"[[sources]]
id = "partner-rudderstack"
kind = "amplitude"
destinations = ["production"]
auth = { scheme = "header", header = "X-T", secret_env = "P_TOKEN" }
"#,
    );
    assert!(has(&p, "sources[2].id", "reserved"), "{p:?}");

    // `partner` is not a [[sources]] kind.
    let p = check(
        "",
        r#"[[sources]]
id = "p"
kind = "partner"
destinations = ["production"]
auth = { scheme = "header", header = "X-T", secret_env = "P_TOKEN" }
"#,
    );
    assert!(has(&p, "sources[2].kind", "unknown kind"), "{p:?}");

    // An invalid manifest in a directory is named by file.
    let bad = files.dir.path().join("manifests/broken.json");
    std::fs::write(
        &bad,
        r#"{"capabilities": {"syncedSegment": {"requestParser": {"environmentIdPath": "/e"}}}}"#,
    )
    .unwrap();
    let p = check(&files.toml(""), "");
    assert!(has(&p, "partner.manifest_dirs[0]", "broken.json"), "{p:?}");
    std::fs::write(&bad, "{not json").unwrap();
    let p = check(&files.toml(""), "");
    assert!(has(&p, "partner.manifest_dirs[0]", "broken.json"), "{p:?}");
}

/// A token listing `environments` may write only those: another is a 403
/// with a JSON error, and nothing is stored.
#[tokio::test]
async fn a_token_limited_to_staging_cannot_write_production() {
    let (redis, emu, mut cfg, files) = partner_stack("");
    std::fs::write(
        files.dir.path().join("staging"),
        "partner-token-staging-only\n",
    )
    .unwrap();
    cfg.sources.push_str(&format!(
        "\n[[partner.tokens]]\nsecret_file = {:?}\nintegrations = [\"*\"]\nenvironments = [{STAGING:?}]\n",
        files.path("staging")
    ));
    let bridge = Bridge::start(&cfg).await;
    let body = |env: &str, member: &str| {
        serde_json::to_vec(
            &json!({"environmentId": env, "cohortId": "c-env", "cohortName": "n",
            "contextKind": "user", "listData": {"add": [{"id": member}]}}),
        )
        .unwrap()
    };
    let token = Some("partner-token-staging-only");
    let (status, answer) = post(&bridge, "rudderstack", &body(PROD, "prod-member"), token).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["code"], "forbidden", "{answer}");
    assert_eq!(redis.want_value(&cfg.prefix, "prod-member").await, None);
    let (status, answer) = post(
        &bridge,
        "rudderstack",
        &body(STAGING, "stage-member"),
        token,
    )
    .await;
    assert_eq!(status, 204, "{answer}");
    assert!(redis
        .want_value(&cfg.prefix, "stage-member")
        .await
        .is_some());
    drop(emu);
    bridge.stop().await;
}

/// More distinct cohorts than `partner.max_cohorts_per_request` is a 400
/// and nothing is stored; as many as the limit is accepted.
#[tokio::test]
async fn too_many_cohorts_in_one_body_is_a_400() {
    let (redis, _emu, cfg, _files) = partner_stack("max_cohorts_per_request = 2");
    let bridge = Bridge::start(&cfg).await;
    let member =
        |u: &str, c: &str| json!({"userId": u, "cohortId": c, "cohortName": c, "value": true});
    let body = json!({"environmentId": PROD, "batch": [
        member("a", "c1"), member("b", "c2"), member("c", "c3"),
    ]});
    let (status, resp) = post_json(&bridge, "amplitude", &body).await;
    assert_eq!(status, 400, "{resp}");
    assert!(
        resp["message"]
            .as_str()
            .unwrap_or_default()
            .contains("max_cohorts_per_request"),
        "{resp}"
    );
    assert!(data_keys(&redis, &cfg.prefix).is_empty());
    let body = json!({"environmentId": PROD, "batch": [member("a", "c1"), member("b", "c2")]});
    let (status, resp) = post_json(&bridge, "amplitude", &body).await;
    assert_eq!(status, 204, "{resp}");
    bridge.stop().await;
}

/// Every kind not covered in hardening.rs (Segment, Mixpanel, Standard
/// Webhooks, the partner endpoint) skips a key one byte over
/// `server.max_key_bytes` (default 1,024) and one with a control character:
/// counted in the answer (partner: `X-Skipped-Invalid-Key`) and the metrics,
/// and never sent to LaunchDarkly, which gets only the good key.
#[tokio::test]
async fn invalid_member_keys_are_skipped_for_every_kind() {
    use crate::support::native;
    let (_redis, emu, mut cfg, _files) = partner_stack("");
    native::add_sources(&mut cfg);
    let bridge = native::start(&cfg).await;
    let keys = |kind: &str| {
        let good = format!("{kind}-good");
        let long = format!("{kind}-{}", "x".repeat(1025 - kind.len() - 1));
        assert_eq!(long.len(), 1025);
        [good, long, format!("{kind}-bad\u{7}key")]
    };
    let ts = "2026-01-01T00:00:00Z";
    let mut good = Vec::new();
    for source in [
        "segment",
        "mixpanel",
        "standard-webhooks",
        "partner-segment-audiences",
    ] {
        let k = keys(source);
        let m: Vec<&str> = k.iter().map(String::as_str).collect();
        let skipped = match source {
            "segment" => {
                let batch: Vec<Value> = m
                    .iter()
                    .enumerate()
                    .map(|(i, u)| native::segment_identify("vips", u, true, &format!("m{i}"), ts))
                    .collect();
                let (status, body) =
                    native::segment(&bridge, &serde_json::to_vec(&batch).unwrap()).await;
                assert_eq!(status, 200, "{body}");
                body["skipped_invalid_key"].as_u64()
            }
            "mixpanel" => {
                let body = native::mixpanel_body("add_members", 7, "s1", 1, 1, &m);
                let (status, body) = native::mixpanel(&bridge, &body).await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["status"], "success", "{body}");
                // Mixpanel's envelope has no counts: the metric carries it.
                assert_eq!(body.get("skipped_invalid_key"), None, "{body}");
                Some(2)
            }
            "standard-webhooks" => {
                let body = json!({"cohort_id": "beta", "add": m, "version": 1_000});
                let (status, body) = native::standard_webhooks(&bridge, "msg-1", &body).await;
                assert_eq!(status, 200, "{body}");
                body["skipped_invalid_key"].as_u64()
            }
            _ => {
                let body = &bodies("segment-audiences", PROD, "aud_1", &m, &[])[0];
                let resp = bridge
                    .http
                    .post(format!(
                        "{}/api/v2/segment-targets/segment-audiences",
                        bridge.base
                    ))
                    .header("Authorization", TOKEN_OLD)
                    .json(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 204);
                let header = resp.headers().get("X-Skipped-Invalid-Key");
                header.and_then(|v| v.to_str().ok()?.parse().ok())
            }
        };
        assert_eq!(skipped, Some(2), "{source}: the answer's count");
        good.push(k[0].clone());
    }
    let (_, metrics) = bridge.get("/metrics").await;
    for source in [
        "segment",
        "mixpanel",
        "standard-webhooks",
        "partner-segment-audiences",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("cohort_bridge_changes_total")
                    && l.contains(&format!("source=\"{source}\""))
                    && l.contains("outcome=\"skipped_invalid_key\"")
                    && l.ends_with(" 2")),
            "{source}: {metrics}"
        );
    }
    good.sort();
    let included = || async {
        let mut all: Vec<String> = segment_members(&emu)
            .await
            .into_values()
            .flatten()
            .collect();
        all.sort();
        all
    };
    eventually("the good keys in LaunchDarkly", WAIT, || async {
        (included().await == good).then_some(())
    })
    .await;
    let sent = serde_json::to_string(&emu.membership_requests().await).unwrap();
    assert!(
        !sent.contains("xxxxxxxx") && !sent.contains("bad"),
        "{sent}"
    );
    bridge.stop().await;
}

/// A body above 64 KiB is parsed on the blocking pool; its answer is the
/// same as a small body's: 204 with the invalid-key count, and the same 400.
#[tokio::test]
async fn a_big_partner_body_gets_the_same_answer_as_a_small_one() {
    let (_redis, _emu, cfg, _files) = partner_stack("");
    let bridge = Bridge::start(&cfg).await;
    let answer = |body: Value| {
        let bridge = &bridge;
        async move {
            let bytes = serde_json::to_vec(&body).unwrap();
            let resp = bridge
                .http
                .post(format!(
                    "{}/api/v2/segment-targets/segment-audiences",
                    bridge.base
                ))
                .header("Authorization", TOKEN_OLD)
                .header("Content-Type", "application/json")
                .body(bytes.clone())
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let skipped = resp
                .headers()
                .get("X-Skipped-Invalid-Key")
                .map(|v| v.to_str().unwrap().to_string());
            (bytes.len(), status, skipped, resp.text().await.unwrap())
        }
    };
    let mut errors = Vec::new();
    for (size, n) in [("small", 3), ("big", 4000)] {
        let ids: Vec<String> = (0..n).map(|i| format!("{size}-member-{i}")).collect();
        let mut m: Vec<&str> = ids.iter().map(String::as_str).collect();
        m.push("bad\nkey");
        let good = bodies("segment-audiences", PROD, &format!("aud-{size}"), &m, &[]).remove(0);
        let (len, status, skipped, text) = answer(good.clone()).await;
        assert_eq!(len > 64 * 1024, size == "big", "{size}: {len} bytes");
        assert_eq!(
            (status, skipped.as_deref(), text.as_str()),
            (204, Some("1"), ""),
            "{size}"
        );
        let mut bad = good;
        bad.as_object_mut().unwrap().remove("environmentId");
        let (_, status, _, text) = answer(bad).await;
        assert_eq!(status, 400, "{size}: {text}");
        let err: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(err["code"], "invalid_request", "{size}: {err}");
        errors.push(err);
    }
    assert_eq!(errors[0], errors[1]);
    bridge.stop().await;
}
