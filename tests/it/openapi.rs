//! The bridge's OpenAPI document (`GET /openapi.json`) against the bridge:
//! real answers of every kind (accepted, refused, each answer style, the
//! operator API with and without its token, the partner endpoint) are
//! validated against the schema the document gives their route and status;
//! a broken schema is caught; and schemathesis, run against the real binary,
//! finds no 5xx and no answer that breaks the document.

use crate::support::bridge::{amplitude_body, AMPLITUDE_SECRET, OPERATOR_TOKEN};
use crate::support::native::{self, mixpanel, mixpanel_body};
use crate::support::{eventually, stack, Bridge, BridgeProcess, TestConfig, WAIT};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

const PARTNER_TOKEN: &str = "partner-openapi-token";
const PARTNER_LIMITED: &str = "partner-openapi-limited";
const PARTNER_ENV: &str = "61a0c0ffee0000000000prod";

/// The operator token and a `[partner]` section whose token, `partner_token`,
/// is read from a file in `dir`.
fn configure(cfg: &mut TestConfig, dir: &Path, partner_token: &str) {
    cfg.set("server", "operator_token_env", "\"OPERATOR_TOKEN\"");
    let token = dir.join("partner-token");
    std::fs::write(&token, format!("{partner_token}\n")).unwrap();
    // One request per 1,000 s: the second is refused at once.
    let limited = dir.join("partner-limited");
    std::fs::write(&limited, format!("{PARTNER_LIMITED}\n")).unwrap();
    cfg.sources.push_str(&format!(
        r#"
[partner.environments]
{PARTNER_ENV:?} = "production"

[[partner.tokens]]
secret_file = {token:?}
integrations = ["*"]

[[partner.tokens]]
secret_file = {limited:?}
integrations = ["*"]
requests_per_second = 0.001
"#,
        token = token.display().to_string(),
        limited = limited.display().to_string(),
    ));
}

/// One answer as the client saw it.
struct Answer {
    status: u16,
    content_type: String,
    text: String,
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.expect("bridge reachable");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.text().await.unwrap_or_default();
    Answer {
        status,
        content_type,
        text,
    }
}

/// Checks an answer against the document: its status is documented for the
/// route, its content type is the documented one, and a JSON body validates
/// against the documented schema (its `$ref`s resolved in the document's
/// components). Returns what is wrong, if anything.
fn conformance(doc: &Value, method: &str, route: &str, answer: &Answer) -> Result<(), String> {
    let op = &doc["paths"][route][method];
    if op.is_null() {
        return Err(format!("{method} {route} is not in the document"));
    }
    let response = &op["responses"][answer.status.to_string()];
    if response.is_null() {
        return Err(format!(
            "{method} {route}: status {} is not documented ({})",
            answer.status, answer.text
        ));
    }
    let Some(content) = response["content"].as_object() else {
        return if answer.text.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{method} {route} {}: documented without a body, got {:?}",
                answer.status, answer.text
            ))
        };
    };
    let media = answer.content_type.split(';').next().unwrap_or("").trim();
    let Some((_, body)) = content
        .iter()
        .find(|(ct, _)| ct.split(';').next().unwrap_or("").trim() == media)
    else {
        return Err(format!(
            "{method} {route} {}: content type {:?} is not documented ({:?})",
            answer.status,
            answer.content_type,
            content.keys().collect::<Vec<_>>()
        ));
    };
    if media != "application/json" {
        return Ok(());
    }
    let instance: Value = serde_json::from_str(&answer.text)
        .map_err(|e| format!("{method} {route}: not JSON ({e}): {}", answer.text))?;
    let mut schema = body["schema"].clone();
    // `#/components/...` resolves inside the schema document itself.
    schema["components"] = doc["components"].clone();
    let validator = jsonschema::validator_for(&schema)
        .map_err(|e| format!("{method} {route}: the document's schema does not compile: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{method} {route} {}: the body breaks the schema: {}\nbody: {}",
            answer.status,
            errors.join("; "),
            answer.text
        ))
    }
}

async fn document(http: &reqwest::Client, base: &str) -> Value {
    let a = send(http.get(format!("{base}/openapi.json"))).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(
        a.content_type.starts_with("application/json"),
        "{}",
        a.content_type
    );
    serde_json::from_str(&a.text).expect("the document is JSON")
}

fn partner_body(cohort: &str, users: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "environmentId": PARTNER_ENV,
        "contextKind": "user",
        "batch": users.iter().map(|u| json!({
            "userId": u, "cohortId": cohort, "cohortName": format!("Cohort {cohort}"), "value": true
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

#[tokio::test]
async fn real_answers_of_every_route_conform_to_the_document() {
    let (_redis, emu, mut cfg) = stack();
    let dir = tempfile::tempdir().unwrap();
    configure(&mut cfg, dir.path(), PARTNER_TOKEN);
    native::add_sources(&mut cfg);
    let bridge = Bridge::start_settings(native::settings(&cfg)).await;
    let http = &bridge.http;
    let base = &bridge.base;
    let doc = document(http, base).await;
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut check = |method: &str, route: &str, want: u16, a: Answer| {
        checked += 1;
        if a.status != want {
            failures.push(format!(
                "{method} {route}: wanted {want}, got {} {}",
                a.status, a.text
            ));
        }
        if let Err(e) = conformance(&doc, method, route, &a) {
            failures.push(e);
        }
    };
    let webhook = "/v1/webhooks/{source}";
    let post = |source: &str, body: Vec<u8>, headers: &[(&str, &str)]| {
        let mut r = http
            .post(format!("{base}/v1/webhooks/{source}"))
            .header("Content-Type", "application/json")
            .body(body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        send(r)
    };
    let amp = serde_json::to_vec(&amplitude_body("oa", true, 1, "m1", &["u1", "u2"])).unwrap();

    // The native receivers.
    let token = [("X-Cohort-Bridge-Token", AMPLITUDE_SECRET)];
    check(
        "post",
        webhook,
        200,
        post("amplitude", amp.clone(), &token).await,
    );
    check(
        "post",
        webhook,
        200,
        post("amplitude", amp.clone(), &token).await,
    ); // duplicate
    let wrong = [("X-Cohort-Bridge-Token", "wrong")];
    check(
        "post",
        webhook,
        401,
        post("amplitude", amp.clone(), &wrong).await,
    );
    check(
        "post",
        webhook,
        400,
        post("amplitude", b"{not json".to_vec(), &token).await,
    );
    let bad_sig = [("Heap-Hash", "ts:1,hmac:AAAA")];
    check(
        "post",
        webhook,
        401,
        post("heap", b"{}".to_vec(), &bad_sig).await,
    );
    check(
        "post",
        webhook,
        404,
        post("no-such-source", amp.clone(), &token).await,
    );
    let big = vec![b' '; 2 * 1024 * 1024];
    check("post", webhook, 413, post("amplitude", big, &token).await);
    let sw = serde_json::to_vec(&json!({"cohort": {"id": "c"}})).unwrap();
    check(
        "post",
        webhook,
        401,
        post("standard-webhooks", sw, &[]).await,
    );
    // Mixpanel's envelope, on success and on failure.
    let body = mixpanel_body("add_members", 77, "s1", 1, 1, &["a"]);
    let (status, answer) = mixpanel(&bridge, &body).await;
    check(
        "post",
        webhook,
        200,
        Answer {
            status,
            content_type: "application/json".into(),
            text: answer.to_string(),
        },
    );
    let mp = serde_json::to_vec(&body).unwrap();
    check(
        "post",
        webhook,
        401,
        post("mixpanel", mp, &[("Authorization", "Basic AAAA")]).await,
    );

    // The partner endpoint.
    let partner = "/api/v2/segment-targets/{integration_key}";
    let push = |key: &str, body: Vec<u8>, auth: Option<&str>| {
        let mut r = http
            .post(format!("{base}/api/v2/segment-targets/{key}"))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        send(r)
    };
    let pb = partner_body("p1", &["x1", "x2"]);
    check(
        "post",
        partner,
        204,
        push("segment-audiences", pb.clone(), Some(PARTNER_TOKEN)).await,
    );
    check(
        "post",
        partner,
        401,
        push("segment-audiences", pb.clone(), None).await,
    );
    check(
        "post",
        partner,
        404,
        push("no-such-integration", pb.clone(), Some(PARTNER_TOKEN)).await,
    );
    check(
        "post",
        partner,
        400,
        push("segment-audiences", b"[]".to_vec(), Some(PARTNER_TOKEN)).await,
    );
    let first = push("segment-audiences", pb.clone(), Some(PARTNER_LIMITED)).await;
    check("post", partner, 204, first);
    let limited = http
        .post(format!("{base}/api/v2/segment-targets/segment-audiences"))
        .header("Authorization", PARTNER_LIMITED)
        .body(pb.clone())
        .send()
        .await
        .unwrap();
    for header in ["Retry-After", "X-Ratelimit-Reset"] {
        assert!(
            limited.headers().contains_key(header),
            "429 without {header}"
        );
    }
    let content_type = limited.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    let limited = Answer {
        status: limited.status().as_u16(),
        content_type,
        text: limited.text().await.unwrap(),
    };
    check("post", partner, 429, limited);

    // The operator API, once the link exists.
    let link = "production:amplitude:oa";
    let op = |method: Method, path: String, auth: Option<&str>| {
        let mut r = http.request(method, format!("{base}{path}"));
        if let Some(t) = auth {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        send(r)
    };
    eventually("the link is written", WAIT, || async {
        emu.members("default", "production", "amplitude-oa")
            .await
            .map(|_| ())
    })
    .await;
    let t = Some(OPERATOR_TOKEN);
    let links = "/v1/operator/links";
    let one = "/v1/operator/links/{link}";
    let dead = "/v1/operator/links/{link}/dead-letters";
    check("get", links, 200, op(Method::GET, links.into(), t).await);
    check("get", links, 401, op(Method::GET, links.into(), None).await);
    check(
        "get",
        links,
        401,
        op(Method::GET, links.into(), Some("wrong")).await,
    );
    check(
        "get",
        one,
        200,
        op(Method::GET, format!("{links}/{link}"), t).await,
    );
    check(
        "get",
        one,
        404,
        op(Method::GET, format!("{links}/production:amplitude:none"), t).await,
    );
    check(
        "get",
        one,
        400,
        op(Method::GET, format!("{links}/not-a-link"), t).await,
    );
    check(
        "get",
        dead,
        200,
        op(
            Method::GET,
            format!("{links}/{link}/dead-letters?count=5"),
            t,
        )
        .await,
    );
    check(
        "get",
        dead,
        400,
        op(
            Method::GET,
            format!("{links}/{link}/dead-letters?cursor=x"),
            t,
        )
        .await,
    );
    check(
        "get",
        dead,
        401,
        op(Method::GET, format!("{links}/{link}/dead-letters"), None).await,
    );
    let redrive = "/v1/operator/links/{link}/redrive";
    check(
        "post",
        redrive,
        200,
        op(Method::POST, format!("{links}/{link}/redrive"), t).await,
    );
    for body in ["null", "{\"keys\": [\"u1\"]}", "{\"keys\": null}"] {
        let r = http
            .post(format!("{base}{links}/{link}/redrive"))
            .header("Authorization", format!("Bearer {OPERATOR_TOKEN}"))
            .body(body);
        check("post", redrive, 200, send(r).await);
    }
    check(
        "post",
        redrive,
        400,
        send(
            http.post(format!("{base}{links}/{link}/redrive"))
                .header("Authorization", format!("Bearer {OPERATOR_TOKEN}"))
                .body("{\"keys\": 1}"),
        )
        .await,
    );
    let resync = "/v1/operator/links/{link}/resync";
    check(
        "post",
        resync,
        200,
        op(Method::POST, format!("{links}/{link}/resync"), t).await,
    );
    check(
        "post",
        resync,
        404,
        op(
            Method::POST,
            format!("{links}/production:amplitude:none/resync"),
            t,
        )
        .await,
    );
    check(
        "post",
        resync,
        401,
        op(Method::POST, format!("{links}/{link}/resync"), None).await,
    );
    check(
        "get",
        "/ops",
        200,
        op(Method::GET, "/ops".into(), None).await,
    );

    // Health, readiness, metrics, the document itself.
    for (route, want) in [
        ("/healthz", 200),
        ("/readyz", 200),
        ("/metrics", 200),
        ("/openapi.json", 200),
    ] {
        check(
            "get",
            route,
            want,
            send(http.get(format!("{base}{route}"))).await,
        );
    }
    assert!(checked >= 30, "{checked}");
    assert!(
        failures.is_empty(),
        "answers that break the document:\n{}",
        failures.join("\n")
    );
    bridge.stop().await;

    // Without an operator token, the operator routes answer 404 as documented.
    let (_redis, _emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    let a = send(bridge.http.get(format!("{}/ops", bridge.base))).await;
    assert_eq!(a.status, 404);
    conformance(&doc, "get", "/ops", &a).unwrap();
    let a = send(
        bridge
            .http
            .get(format!("{}/v1/operator/links", bridge.base)),
    )
    .await;
    assert_eq!(a.status, 404);
    conformance(&doc, "get", links, &a).unwrap();
    // A 503 from /readyz (shutting down is the one a test can cause
    // without breaking Redis: stop Redis instead).
    drop(_redis);
    let a = eventually("/readyz answers 503 without Redis", WAIT, || async {
        let a = send(bridge.http.get(format!("{}/readyz", bridge.base))).await;
        (a.status == 503).then_some(a)
    })
    .await;
    conformance(&doc, "get", "/readyz", &a).unwrap();
    let resp = eventually("a push answers 503 without Redis", WAIT, || async {
        let r = bridge
            .http
            .post(format!("{}/v1/webhooks/amplitude", bridge.base))
            .header("X-Cohort-Bridge-Token", AMPLITUDE_SECRET)
            .body(amp.clone())
            .send()
            .await
            .unwrap();
        (r.status() == 503).then_some(r)
    })
    .await;
    assert!(
        resp.headers().contains_key("Retry-After"),
        "503 without Retry-After"
    );
    let a = Answer {
        status: 503,
        content_type: resp.headers()["content-type"].to_str().unwrap().to_string(),
        text: resp.text().await.unwrap(),
    };
    conformance(&doc, "post", webhook, &a).unwrap();
    bridge.stop().await;
}

#[tokio::test]
async fn a_schema_that_disagrees_with_the_answers_is_caught() {
    let (_redis, _emu, mut cfg) = stack();
    let dir = tempfile::tempdir().unwrap();
    configure(&mut cfg, dir.path(), PARTNER_TOKEN);
    let bridge = Bridge::start_settings(native::settings(&cfg)).await;
    let mut doc = document(&bridge.http, &bridge.base).await;
    let (status, summary) = bridge
        .amplitude(&amplitude_body("wrong", true, 1, "w1", &["u1"]))
        .await;
    assert_eq!(status, 200);
    let answer = || Answer {
        status: 200,
        content_type: "application/json".into(),
        text: summary.to_string(),
    };
    let route = "/v1/webhooks/{source}";
    conformance(&doc, "post", route, &answer()).unwrap();
    // The document says `accepted` is a string: the real answer breaks it.
    let accepted = &mut doc["components"]["schemas"]["Summary"]["properties"]["accepted"];
    assert!(!accepted.is_null(), "Summary.accepted is in the document");
    *accepted = json!({"type": "string"});
    let err = conformance(&doc, "post", route, &answer()).unwrap_err();
    assert!(err.contains("accepted"), "{err}");
    // And a status the document does not list is reported.
    let undocumented = Answer {
        status: 418,
        ..answer()
    };
    assert!(conformance(&doc, "post", route, &undocumented).is_err());
    bridge.stop().await;
}

/// How long schemathesis may run (`--max-time`) and how many cases per
/// operation and phase it makes.
const SCHEMATHESIS_SECONDS: u64 = 45;
const SCHEMATHESIS_EXAMPLES: u32 = 40;

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let found = std::process::Command::new("schemathesis")
        .arg("--version")
        .output();
    let Ok(version) = found else {
        panic!(
            "schemathesis is not on PATH: install it with \
             `PATH=$(scripts/python-tools.sh):$PATH` (scripts/python-requirements.txt pins it; \
             scripts/test.sh does this)"
        );
    };
    assert!(version.status.success(), "schemathesis --version failed");

    let (_redis, _emu, mut cfg) = stack();
    let dir = tempfile::tempdir().unwrap();
    // The partner token is the operator's, so that the one `Authorization:
    // Bearer` header schemathesis sends authenticates both APIs.
    configure(&mut cfg, dir.path(), OPERATOR_TOKEN);
    let mut bridge = BridgeProcess::start(&mut cfg).await;
    // The link of the document's examples, so the operator routes have
    // something real to show.
    let seeded = bridge
        .http
        .post(format!("{}/v1/webhooks/amplitude", bridge.base))
        .header("X-Cohort-Bridge-Token", AMPLITUDE_SECRET)
        .json(&amplitude_body("1234", true, 1, "s1", &["u1"]))
        .send()
        .await
        .unwrap();
    assert_eq!(seeded.status().as_u16(), 200);

    let report = dir.path().join("schemathesis");
    let mut cmd = tokio::process::Command::new("schemathesis");
    cmd.args(["--no-color", "run"])
        .arg(format!("{}/openapi.json", bridge.base))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance",
            "--max-examples",
            &SCHEMATHESIS_EXAMPLES.to_string(),
            "--max-time",
            &SCHEMATHESIS_SECONDS.to_string(),
            "--request-timeout",
            "10",
            "--workers",
            "1",
            "--seed",
            "1",
            "--suppress-health-check",
            "all",
            "--generation-database",
            "none",
            "--report",
            "junit",
            "--report-dir",
        ])
        .arg(&report)
        .arg("-H")
        .arg(format!("Authorization: Bearer {OPERATOR_TOKEN}"))
        // The examples' source is `amplitude`: its shared secret.
        .arg("-H")
        .arg(format!("X-Cohort-Bridge-Token: {AMPLITUDE_SECRET}"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(SCHEMATHESIS_SECONDS * 4), cmd.output())
        .await
        .expect("schemathesis ends within its bound")
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found problems ({}):\n{stdout}\n{stderr}\nbridge log:\n{}",
        out.status,
        bridge.logs()
    );
    // What it tried, for the test's log.
    eprintln!("{stdout}");
    // It ran cases, and the bridge is alive and ready afterwards.
    assert!(stdout.contains("passed"), "{stdout}");
    assert!(
        !bridge.logs().contains("panicked"),
        "the bridge panicked:\n{}",
        bridge.logs()
    );
    bridge.wait_ready().await;
    // Its requests reached the receivers' real work: the examples' push was accepted.
    let metrics = bridge
        .http
        .get(format!("{}/metrics", bridge.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let accepted: f64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("cohort_bridge_requests_total{")
                && l.contains("source=\"amplitude\"")
                && l.contains("outcome=\"accepted\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(
        accepted >= 2.0,
        "only the seeding push was accepted:\n{metrics}"
    );
    let health = bridge
        .http
        .get(format!("{}/healthz", bridge.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}
