//! End-to-end tests of the `ld-emulator` binary over real HTTP: spawn it on
//! a free port, drive the LaunchDarkly routes and the `/_emulator` control
//! API, and check behaviour clients depend on.

use crate::support::emulator::{Emulator, TOKEN};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A running emulator (killed when dropped) with helpers for raw LaunchDarkly calls.
struct Emu {
    _process: Emulator,
    base: String,
    http: reqwest::Client,
}

impl Emu {
    fn start() -> Emu {
        let process = Emulator::start_with(&["--token", "second-token"]);
        Emu {
            base: process.base.clone(),
            http: process.http.clone(),
            _process: process,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn ld_post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("Authorization", TOKEN)
            .header("LD-API-Version", "20240415")
            .json(&body)
            .send()
            .await
            .expect("send")
    }

    async fn ld_get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("Authorization", TOKEN)
            .send()
            .await
            .expect("send")
    }

    async fn control(&self, path: &str, body: Option<Value>) -> Value {
        let req = match body {
            Some(b) => self.http.post(self.url(path)).json(&b),
            None => self.http.get(self.url(path)),
        };
        let resp = req.send().await.expect("control send");
        assert!(
            resp.status().is_success(),
            "control {path}: {}",
            resp.status()
        );
        resp.json().await.expect("control json")
    }

    async fn create_big(&self, key: &str) {
        let resp = self
            .ld_post(
                "/api/v2/segments/proj/prod",
                json!({"key": key, "name": key, "unbounded": true, "unboundedContextKind": "user"}),
            )
            .await;
        assert_eq!(resp.status(), 201);
    }

    async fn included(&self, key: &str) -> Value {
        self.control(&format!("/_emulator/segments/proj/prod/{key}"), None)
            .await["included"]
            .clone()
    }

    async fn violations(&self, name: &str) -> u64 {
        self.control("/_emulator/stats", None).await["violations"][name]
            .as_u64()
            .expect("violation count")
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

#[tokio::test]
async fn auth_takes_the_raw_token_only() {
    let emu = Emu::start();
    let body = json!({"key": "s", "name": "S"});
    for auth in [Some(format!("Bearer {TOKEN}")), Some("wrong".into()), None] {
        let mut req = emu
            .http
            .post(emu.url("/api/v2/segments/proj/prod"))
            .json(&body);
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.expect("send");
        assert_eq!(resp.status(), 401, "auth {auth:?}");
        assert!(resp.headers().contains_key("x-ratelimit-reset"));
        let err: Value = resp.json().await.expect("json");
        assert_eq!(
            err,
            json!({"code": "unauthorized", "message": "Invalid access token"})
        );
    }
    let resp = emu
        .http
        .post(emu.url("/api/v2/segments/proj/prod"))
        .header("Authorization", "second-token")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 201);
    let log = emu.control("/_emulator/requests", None).await;
    assert_eq!(log.as_array().map(Vec::len), Some(4));
    assert_eq!(log[0]["authorization_ok"], json!(false));
    assert_eq!(log[3]["authorization_ok"], json!(true));
}

#[tokio::test]
async fn create_then_conflict_and_get() {
    let emu = Emu::start();
    let resp = emu
        .ld_post(
            "/api/v2/segments/proj/prod",
            json!({"key": "big", "name": "Big", "tags": ["t"], "unbounded": true, "unboundedContextKind": "user"}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    for h in [
        "x-ratelimit-global-remaining",
        "x-ratelimit-route-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(resp.headers().contains_key(h), "missing {h}");
    }
    let seg: Value = resp.json().await.expect("json");
    assert_eq!(seg["generation"], json!(1));
    assert_eq!(seg["_unboundedMetadata"]["includedCount"], json!(0));
    let again = emu
        .ld_post(
            "/api/v2/segments/proj/prod",
            json!({"key": "big", "name": "Big"}),
        )
        .await;
    assert_eq!(again.status(), 409);
    let err: Value = again.json().await.expect("json");
    assert_eq!(err["code"], json!("optimistic_locking_error"));
    assert_eq!(
        emu.ld_get("/api/v2/segments/proj/prod/big").await.status(),
        200
    );
    assert_eq!(
        emu.ld_get("/api/v2/segments/proj/prod/none").await.status(),
        404
    );
}

#[tokio::test]
async fn contexts_add_and_remove_show_in_state() {
    let emu = Emu::start();
    emu.create_big("seg").await;
    let path = "/api/v2/segments/proj/prod/seg/contexts";
    let resp = emu
        .ld_post(
            path,
            json!({"included": {"add": ["c", "a", "b"]}, "excluded": {"add": ["x"]}}),
        )
        .await;
    assert_eq!(resp.status(), 204);
    let resp = emu
        .ld_post(path, json!({"included": {"remove": ["b"]}}))
        .await;
    assert_eq!(resp.status(), 204);
    assert_eq!(emu.included("seg").await, json!(["a", "c"]));
    let state = emu.control("/_emulator/state", None).await;
    assert_eq!(state[0]["excluded"], json!(["x"]));
    let target: Value = emu
        .ld_get("/api/v2/segments/proj/prod/seg/contexts/a")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        target,
        json!({"userKey": "a", "included": true, "excluded": false})
    );
    let seg: Value = emu
        .ld_get("/api/v2/segments/proj/prod/seg")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(seg["_unboundedMetadata"]["includedCount"], json!(2));
}

#[tokio::test]
async fn unknown_field_and_wrong_type_are_400s_naming_the_path() {
    let emu = Emu::start();
    emu.create_big("seg").await;
    let path = "/api/v2/segments/proj/prod/seg/contexts";
    let resp = emu.ld_post(path, json!({"include": {"add": ["a"]}})).await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.expect("json");
    assert_eq!(err["code"], json!("invalid_request"));
    let message = err["message"].as_str().unwrap_or_default();
    assert!(message.contains("unknown field \"include\""), "{message}");
    let resp = emu
        .ld_post(path, json!({"included": {"add": ["a", "b", 7]}}))
        .await;
    let err: Value = resp.json().await.expect("json");
    let message = err["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("included.add[2]: expected string, got number"),
        "{message}"
    );
    assert_eq!(emu.included("seg").await, json!([]));
}

#[tokio::test]
async fn status_fault_is_consumed_once() {
    let emu = Emu::start();
    emu.control(
        "/_emulator/faults",
        Some(json!({"kind": "status", "status": 500, "route": "create"})),
    )
    .await;
    // A GET does not match a create-only fault.
    assert_eq!(
        emu.ld_get("/api/v2/segments/proj/prod/x").await.status(),
        404
    );
    let body = json!({"key": "s", "name": "S", "unbounded": true});
    let first = emu
        .ld_post("/api/v2/segments/proj/prod", body.clone())
        .await;
    assert_eq!(first.status(), 500);
    let err: Value = first.json().await.expect("json");
    assert_eq!(err["code"], json!("internal_server_error"));
    assert_eq!(
        emu.ld_post("/api/v2/segments/proj/prod", body)
            .await
            .status(),
        201
    );
    let stats = emu.control("/_emulator/stats", None).await;
    assert_eq!(stats["by_status"]["500"], json!(1));
}

#[tokio::test]
async fn rate_limited_fault_announces_a_future_reset() {
    let emu = Emu::start();
    emu.control(
        "/_emulator/faults",
        Some(json!({"kind": "rate_limited", "reset_in_ms": 2000})),
    )
    .await;
    let before = now_ms();
    let resp = emu.ld_get("/api/v2/segments/proj/prod/x").await;
    assert_eq!(resp.status(), 429);
    let reset: u64 = resp
        .headers()
        .get("x-ratelimit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("X-Ratelimit-Reset header");
    assert!(
        reset > before + 1000,
        "reset {reset} not in the future of {before}"
    );
    let err: Value = resp.json().await.expect("json");
    assert_eq!(err["code"], json!("rate_limited"));
}

#[tokio::test]
async fn reset_connection_gives_a_transport_error() {
    let emu = Emu::start();
    emu.create_big("seg").await;
    emu.control(
        "/_emulator/faults",
        Some(json!([{"kind": "reset_connection"}, {"kind": "reset_connection", "then": "apply"}])),
    )
    .await;
    let path = emu.url("/api/v2/segments/proj/prod/seg/contexts");
    for key in ["dropped", "applied"] {
        let result = emu
            .http
            .post(&path)
            .header("Authorization", TOKEN)
            .json(&json!({"included": {"add": [key]}}))
            .send()
            .await;
        let err = result.expect_err("expected a transport error, got a response");
        assert!(err.status().is_none());
    }
    assert_eq!(emu.included("seg").await, json!(["applied"]));
}

#[tokio::test]
async fn hang_then_apply_changes_state_after_client_timeout() {
    let emu = Emu::start();
    emu.create_big("seg").await;
    emu.control(
        "/_emulator/faults",
        Some(json!({"kind": "hang", "ms": 700, "then": "apply"})),
    )
    .await;
    let result = emu
        .http
        .post(emu.url("/api/v2/segments/proj/prod/seg/contexts"))
        .header("Authorization", TOKEN)
        .timeout(Duration::from_millis(150))
        .json(&json!({"included": {"add": ["late"]}}))
        .send()
        .await;
    assert!(result.expect_err("client should time out").is_timeout());
    assert_eq!(emu.included("seg").await, json!([]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while emu.included("seg").await != json!(["late"]) {
        assert!(Instant::now() < deadline, "hung request was never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn requests_before_an_announced_reset_count_as_early() {
    let emu = Emu::start();
    emu.control(
        "/_emulator/faults",
        Some(json!({"kind": "rate_limited", "reset_in_ms": 600})),
    )
    .await;
    let path = "/api/v2/segments/proj/prod/x";
    assert_eq!(emu.ld_get(path).await.status(), 429);
    assert_eq!(emu.violations("early_after_429").await, 0);
    emu.ld_get(path).await;
    assert_eq!(emu.violations("early_after_429").await, 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    emu.ld_get(path).await;
    assert_eq!(emu.violations("early_after_429").await, 1);
    // A reset announced in the past makes nothing early.
    emu.control(
        "/_emulator/faults",
        Some(json!({"kind": "rate_limited", "reset_in_ms": -1000})),
    )
    .await;
    assert_eq!(emu.ld_get(path).await.status(), 429);
    emu.ld_get(path).await;
    assert_eq!(emu.violations("early_after_429").await, 1);
}

impl Emu {
    async fn ld(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("Authorization", TOKEN)
            .header("LD-API-Version", "20240415")
    }
}

#[tokio::test]
async fn listing_paginates_with_limit_and_offset() {
    let emu = Emu::start();
    for i in 0..25 {
        emu.create_big(&format!("s{i:02}")).await;
    }
    let page: Value = emu
        .ld_get("/api/v2/segments/proj/prod")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["totalCount"], 25);
    let keys: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 20, "default limit is 20");
    assert_eq!((keys[0], keys[19]), ("s00", "s19"));
    assert!(page["_links"]["next"]["href"]
        .as_str()
        .unwrap()
        .ends_with("offset=20"));
    let last: Value = emu
        .ld_get("/api/v2/segments/proj/prod?limit=10&offset=20")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(last["items"].as_array().unwrap().len(), 5);
    assert_eq!(last["items"][0]["key"], "s20");
    assert!(last["_links"].get("next").is_none());
    for bad in ["limit=0", "limit=x", "offset=-1", "filter=query:x"] {
        let r = emu
            .ld_get(&format!("/api/v2/segments/proj/prod?{bad}"))
            .await;
        assert_eq!(r.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn patch_renames_by_json_patch_or_semantic_patch_and_delete_answers_204() {
    let emu = Emu::start();
    emu.create_big("seg").await;
    let path = "/api/v2/segments/proj/prod/seg";
    let bodies = [
        (
            "application/json",
            json!([{"op": "replace", "path": "/name", "value": "One"}]),
            "One",
        ),
        (
            "application/json",
            json!({"comment": "why", "patch": [{"op": "replace", "path": "/name", "value": "Two"}]}),
            "Two",
        ),
        (
            "application/json; domain-model=launchdarkly.semanticpatch",
            json!({"environmentKey": "prod", "instructions": [{"kind": "updateName", "value": "Three"}]}),
            "Three",
        ),
    ];
    for (ct, body, name) in bodies {
        let r = emu
            .ld(reqwest::Method::PATCH, path)
            .await
            .header("Content-Type", ct)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{body}");
        let seg: Value = r.json().await.unwrap();
        assert_eq!(seg["name"], name);
    }
    let seg: Value = emu.ld_get(path).await.json().await.unwrap();
    assert_eq!(seg["name"], "Three");
    assert_eq!(seg["version"], 4);
    for (ct, body) in [
        (
            "application/json",
            json!([{"op": "replace", "path": "/tags", "value": []}]),
        ),
        ("application/json", json!([{"path": "/name", "value": "x"}])),
        ("application/json", json!({"patch": [], "extra": 1})),
        (
            "application/json; domain-model=launchdarkly.semanticpatch",
            json!({"instructions": [{"kind": "updateName", "value": "x"}]}),
        ),
        ("text/plain", json!([])),
    ] {
        let r = emu
            .ld(reqwest::Method::PATCH, path)
            .await
            .header("Content-Type", ct)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{ct} {body}");
    }
    let r = emu
        .ld(reqwest::Method::DELETE, path)
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(emu.ld_get(path).await.status(), 404);
    let r = emu
        .ld(reqwest::Method::DELETE, path)
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn an_export_completes_after_the_configured_polls_and_serves_its_file() {
    let emu = Emu::start();
    emu.control("/_emulator/config", Some(json!({"export_polls": 2})))
        .await;
    emu.create_big("big").await;
    let r = emu
        .ld_post(
            "/api/v2/segments/proj/prod/big/contexts",
            json!({"included": {"add": ["a", "b,c", "d"]}}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let r = emu
        .ld(
            reqwest::Method::POST,
            "/api/v2/segments/proj/prod/big/exports",
        )
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    // A member added after the export started is not in it.
    emu.ld_post(
        "/api/v2/segments/proj/prod/big/contexts",
        json!({"included": {"add": ["late"]}}),
    )
    .await;
    let mut statuses = Vec::new();
    let export = loop {
        let v: Value = emu.ld_get(&location).await.json().await.unwrap();
        statuses.push(v["status"].as_str().unwrap().to_string());
        if v["status"] == "completed" {
            break v;
        }
        assert!(v["_links"].get("file").is_none(), "{v}");
        assert_eq!(emu.ld_get(&format!("{location}/file")).await.status(), 404);
    };
    assert_eq!(statuses, ["in_progress", "in_progress", "completed"]);
    let file = emu
        .ld_get(export["_links"]["file"]["href"].as_str().unwrap())
        .await;
    assert_eq!(file.headers()["content-type"], "text/csv");
    assert_eq!(file.text().await.unwrap(), "a\r\n\"b,c\"\r\nd\r\n");
    assert_eq!(
        emu.ld_get("/api/v2/segments/proj/prod/big/exports/nope")
            .await
            .status(),
        404
    );
    // Exports are for big segments only.
    emu.ld_post(
        "/api/v2/segments/proj/prod",
        json!({"key": "small", "name": "s"}),
    )
    .await;
    let r = emu
        .ld(
            reqwest::Method::POST,
            "/api/v2/segments/proj/prod/small/exports",
        )
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn drift_and_a_different_export_layout_are_set_through_the_control_api() {
    let emu = Emu::start();
    emu.create_big("big").await;
    emu.control(
        "/_emulator/segments/proj/prod/big/members",
        Some(json!({"add": ["x", "y"]})),
    )
    .await;
    emu.control(
        "/_emulator/segments/proj/prod/big/members",
        Some(json!({"remove": ["x"]})),
    )
    .await;
    assert_eq!(emu.included("big").await, json!(["y"]));
    emu.control(
        "/_emulator/config",
        Some(json!({"export_layout": "two_columns"})),
    )
    .await;
    let r = emu
        .ld(
            reqwest::Method::POST,
            "/api/v2/segments/proj/prod/big/exports",
        )
        .await
        .send()
        .await
        .unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let v: Value = emu.ld_get(&location).await.json().await.unwrap();
    let file = emu
        .ld_get(v["_links"]["file"]["href"].as_str().unwrap())
        .await;
    assert_eq!(
        file.text().await.unwrap(),
        "contextKey,contextKind\r\ny,user\r\n"
    );
    let bad = emu
        .http
        .post(emu.url("/_emulator/config"))
        .json(&json!({"export_layout": "xml"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

/// LaunchDarkly's own Python client (`launchdarkly-api`, pinned in
/// `scripts/python-requirements.txt`) pages through the listing and reads an
/// export back: the emulator answers what the real client expects.
#[tokio::test]
async fn launchdarkly_python_client_lists_segments_and_reads_an_export() {
    let python = which("python").or_else(|| which("python3"));
    let Some(python) = python.filter(|p| has_launchdarkly_api(p)) else {
        panic!(
            "no python with launchdarkly_api on PATH: run `PATH=$(scripts/python-tools.sh):$PATH cargo nextest run ...` (scripts/test.sh does)"
        );
    };
    let emu = Emu::start();
    for key in ["a", "b", "c", "d", "e"] {
        emu.create_big(key).await;
    }
    emu.control("/_emulator/config", Some(json!({"export_polls": 1})))
        .await;
    emu.ld_post(
        "/api/v2/segments/proj/prod/c/contexts",
        json!({"included": {"add": ["u1", "u2"]}}),
    )
    .await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/ld_client_reads_back.py"
    );
    let out = tokio::process::Command::new(&python)
        .args([script, &emu.base, TOKEN, "proj", "prod", "c"])
        .output()
        .await
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("script prints JSON");
    assert_eq!(v["keys"], json!(["a", "b", "c", "d", "e"]), "{v}");
    assert_eq!(v["total"], 5);
    assert_eq!(v["statuses"], json!(["in_progress", "completed"]));
    assert_eq!(v["segment_key"], "c");
    assert_eq!(v["content_type"], "text/csv");
    assert_eq!(v["lines"], json!(["u1", "u2"]));
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn has_launchdarkly_api(python: &std::path::Path) -> bool {
    std::process::Command::new(python)
        .args(["-c", "import launchdarkly_api"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The campaign test's overlap detector works: a write held open (a hang
/// until the client leaves) and a second write to the same segment are one
/// overlap; a write to another segment at the same time, and a write after
/// the first has ended, are none.
#[tokio::test]
async fn two_concurrent_writes_to_one_segment_are_detected() {
    let emu = Emu::start();
    emu.create_big("seg").await;
    emu.create_big("other").await;
    emu.control(
        "/_emulator/faults",
        Some(json!({"kind": "hang", "route": "contexts"})),
    )
    .await;
    let held = {
        let (http, url) = (
            emu.http.clone(),
            emu.url("/api/v2/segments/proj/prod/seg/contexts"),
        );
        tokio::spawn(async move {
            let _ = http
                .post(url)
                .header("Authorization", TOKEN)
                .header("LD-API-Version", "20240415")
                .json(&json!({"included": {"add": ["first"]}}))
                .send()
                .await;
        })
    };
    // Await the held write's arrival (an event, not a sleep).
    let deadline = Instant::now() + Duration::from_secs(10);
    while emu.control("/_emulator/writes", None).await["in_flight"]["proj/prod/seg"] != 1 {
        assert!(Instant::now() < deadline, "the held write never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let other = emu
        .ld_post(
            "/api/v2/segments/proj/prod/other/contexts",
            json!({"included": {"add": ["x"]}}),
        )
        .await;
    assert_eq!(other.status(), 204);
    let w = emu.control("/_emulator/writes", None).await;
    assert_eq!(w["overlaps"], 0, "another segment is no overlap: {w}");
    let second = emu
        .ld_post(
            "/api/v2/segments/proj/prod/seg/contexts",
            json!({"included": {"add": ["second"]}}),
        )
        .await;
    assert_eq!(second.status(), 204);
    let w = emu.control("/_emulator/writes", None).await;
    assert_eq!(
        (w["overlaps"].clone(), w["max_per_segment"].clone()),
        (json!(1), json!(2)),
        "{w}"
    );
    assert_eq!(w["overlapping"][0]["segment"], "proj/prod/seg", "{w}");
    // The client gives up: the held write ends, and the next is no overlap.
    held.abort();
    while emu.control("/_emulator/writes", None).await["in_flight"] != json!({}) {
        assert!(Instant::now() < deadline, "the held write never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let third = emu
        .ld_post(
            "/api/v2/segments/proj/prod/seg/contexts",
            json!({"included": {"add": ["third"]}}),
        )
        .await;
    assert_eq!(third.status(), 204);
    assert_eq!(emu.control("/_emulator/writes", None).await["overlaps"], 1);
    // Every arrival is counted per second, whatever its answer.
    let rate = emu.control("/_emulator/rate?window_ms=60000", None).await;
    assert_eq!(rate["requests"], 6, "{rate}");
    assert_eq!(rate["max_in_window"], 6, "{rate}");
}
