//! Security hardening: far-future versions are refused, invalid member keys
//! are skipped and counted alike for every kind, configuration refuses weak
//! settings, and `/ops` cannot be framed.

use crate::support::bridge::{amplitude_body, heap_body};
use crate::support::{stack, Bridge, TestConfig};
use cohort_bridge::clock::now_ms;
use cohort_bridge::config::{self, MapSecrets};

/// A far-future `computed_time` is a 400 naming the field, and nothing is
/// stored: the same member pushed now afterwards is accepted, not stale.
#[tokio::test]
async fn a_far_future_version_is_refused_and_stores_nothing() {
    let (redis, _emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    let future_s = now_ms() / 1000 + 10 * 365 * 24 * 3600;
    let (status, body) = bridge
        .amplitude(&amplitude_body("c1", true, future_s, "m-future", &["u1"]))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("computed_time"), "{body}");
    assert_eq!(redis.want_value(&cfg.prefix, "u1").await, None);

    let now_s = now_ms() / 1000;
    let (status, body) = bridge
        .amplitude(&amplitude_body("c1", false, now_s, "m-now", &["u1"]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    assert_eq!(body["stale"], 0, "{body}");
    bridge.stop().await;
}

/// A version within `server.max_future_skew_seconds` is accepted.
#[tokio::test]
async fn a_version_within_the_skew_is_accepted() {
    let (_redis, _emu, mut cfg) = stack();
    cfg.set("server", "max_future_skew_seconds", "3600");
    let bridge = Bridge::start(&cfg).await;
    let soon_s = now_ms() / 1000 + 600;
    let (status, body) = bridge
        .amplitude(&amplitude_body("c1", true, soon_s, "m-soon", &["u1"]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    bridge.stop().await;
}

/// A 10 kB Heap member id and one with a control character are skipped and
/// counted (answer and metrics); the valid member is stored.
#[tokio::test]
async fn invalid_keys_are_skipped_and_counted_for_heap() {
    let (redis, _emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    let long = "x".repeat(10 * 1024);
    let body = heap_body(7, "task-1", 1, 1, &["ok-member", &long, "bad\nkey"], &[]);
    let (status, answer) = bridge.heap(&body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["skipped_invalid_key"], 2, "{answer}");
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert!(redis.want_value(&cfg.prefix, "ok-member").await.is_some());
    assert_eq!(redis.want_value(&cfg.prefix, &long).await, None);
    let (_, metrics) = bridge.get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("skipped_invalid_key") && l.contains("heap") && l.ends_with(" 2")),
        "{metrics}"
    );
    bridge.stop().await;
}

/// Amplitude alike, with a smaller `server.max_key_bytes`.
#[tokio::test]
async fn max_key_bytes_applies_to_amplitude() {
    let (_redis, _emu, mut cfg) = stack();
    cfg.set("server", "max_key_bytes", "8");
    let bridge = Bridge::start(&cfg).await;
    let now_s = now_ms() / 1000;
    let (status, body) = bridge
        .amplitude(&amplitude_body(
            "c1",
            true,
            now_s,
            "m1",
            &["short", "much-too-long"],
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    assert_eq!(body["skipped_invalid_key"], 1, "{body}");
    bridge.stop().await;
}

/// `/ops` cannot be framed.
#[tokio::test]
async fn ops_page_forbids_framing() {
    let (_redis, _emu, mut cfg) = stack();
    cfg.set("server", "operator_token_env", "\"OPERATOR_TOKEN\"");
    let bridge = Bridge::start(&cfg).await;
    let resp = bridge
        .http
        .get(format!("{}/ops", bridge.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let csp = resp
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    // The page's script (served by the bridge) asks before a redrive.
    let (status, script) = bridge.get("/ops/assets/ops.js").await;
    assert_eq!(status, 200);
    assert!(script.contains("\"confirm redrive\""), "redrive asks first");
    bridge.stop().await;
}

fn problems(cfg: &TestConfig, secrets: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut m = TestConfig::secrets().0;
    for (k, v) in secrets {
        m.insert(k.to_string(), v.to_string());
    }
    match config::from_toml_str(&cfg.toml(), &MapSecrets(m)) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems,
    }
}

fn has(p: &[(String, String)], key: &str) -> bool {
    p.iter().any(|(k, _)| k == key)
}

#[test]
fn a_short_operator_token_is_a_configuration_error() {
    let mut cfg = TestConfig::new("redis://127.0.0.1:1", "http://127.0.0.1:1");
    cfg.set("server", "operator_token_env", "\"SHORT_OP\"");
    let p = problems(&cfg, &[("SHORT_OP", "short")]);
    assert!(has(&p, "server.operator_token_env"), "{p:?}");
    let p = problems(&cfg, &[("SHORT_OP", "0123456789abcdef")]);
    assert!(p.is_empty(), "{p:?}");
}

#[test]
fn a_short_partner_token_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tok");
    std::fs::write(&file, "tiny\n").unwrap();
    let mut cfg = TestConfig::new("redis://127.0.0.1:1", "http://127.0.0.1:1");
    cfg.sources = format!(
        "\n[partner.environments]\n\"env1\" = \"production\"\n[[partner.tokens]]\nsecret_file = {:?}\nintegrations = [\"*\"]\n",
        file.display().to_string()
    );
    let p = problems(&cfg, &[]);
    assert!(
        p.iter()
            .any(|(k, m)| k.starts_with("partner.tokens[0]") && m.contains("16 bytes")),
        "{p:?}"
    );
}

#[test]
fn base_url_must_be_https_unless_loopback() {
    for (url, ok) in [
        ("http://127.0.0.1:9999", true),
        ("http://127.3.4.5:9999", true),
        ("http://localhost:9999", true),
        ("http://[::1]:9999", true),
        ("https://app.launchdarkly.com", true),
        ("http://app.launchdarkly.com", false),
        ("http://10.0.0.1:80", false),
        ("ftp://x", false),
    ] {
        let cfg = TestConfig::new("redis://127.0.0.1:1", url);
        let p = problems(&cfg, &[]);
        assert_eq!(!has(&p, "launchdarkly.base_url"), ok, "{url}: {p:?}");
    }
}

#[test]
fn tiny_or_huge_rates_are_configuration_errors_not_panics() {
    for rps in ["1e-300", "1e300", "0.0"] {
        let mut cfg = TestConfig::new("redis://127.0.0.1:1", "http://127.0.0.1:1");
        cfg.set("launchdarkly", "requests_per_second", rps);
        let p = problems(&cfg, &[]);
        assert!(has(&p, "launchdarkly.requests_per_second"), "{rps}: {p:?}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tok");
        std::fs::write(&file, "partner-token-long-enough\n").unwrap();
        let mut cfg = TestConfig::new("redis://127.0.0.1:1", "http://127.0.0.1:1");
        cfg.sources = format!(
            "\n[partner.environments]\n\"env1\" = \"production\"\n[[partner.tokens]]\nsecret_file = {:?}\nintegrations = [\"*\"]\nrequests_per_second = {rps}\n",
            file.display().to_string()
        );
        let p = problems(&cfg, &[]);
        assert!(
            has(&p, "partner.tokens[0].requests_per_second"),
            "{rps}: {p:?}"
        );
    }
}

#[cfg(unix)]
#[test]
fn a_secret_file_readable_by_others_gets_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ld");
    std::fs::write(&file, "api-token-from-a-file\n").unwrap();
    let mut cfg = TestConfig::new("redis://127.0.0.1:1", "http://127.0.0.1:1");
    cfg.set(
        "launchdarkly",
        "api_token_file",
        format!("{:?}", file.display().to_string()),
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = config::from_toml_str(&cfg.toml(), &TestConfig::secrets()).unwrap();
    assert!(
        s.warnings
            .iter()
            .any(|(k, m)| k == "launchdarkly.api_token_file" && m.contains("644")),
        "{:?}",
        s.warnings
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = config::from_toml_str(&cfg.toml(), &TestConfig::secrets()).unwrap();
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
}

/// `server.metrics_listen`: `/metrics` only on that listener (the main one
/// answers 404), and nothing else there.
#[tokio::test]
async fn metrics_can_be_served_on_a_separate_listener() {
    use cohort_bridge::app::Application;
    let (_redis, _emu, mut cfg) = stack();
    cfg.set("server", "metrics_listen", "\"127.0.0.1:0\"");
    let app = Application::build(cfg.settings()).expect("build");
    let main = format!("http://127.0.0.1:{}", app.port());
    let metrics = format!(
        "http://127.0.0.1:{}",
        app.metrics_port().expect("metrics port")
    );
    let handle = Application::shutdown_handle();
    let task = tokio::spawn(app.run(handle.clone()));
    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = &http;
        async move {
            let resp = http.get(url).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let (status, body) = get(format!("{metrics}/metrics")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("cohort_bridge_"), "{body}");
    assert_eq!(get(format!("{main}/metrics")).await.0, 404);
    assert_eq!(get(format!("{main}/healthz")).await.0, 200);
    assert_eq!(get(format!("{metrics}/healthz")).await.0, 404);
    handle.shutdown();
    task.await.unwrap().unwrap();
}

/// The actix-web workers of the main listener: threads named
/// `actix-server worker N` (`/proc/<pid>/task/*/comm`, truncated to 15 bytes).
fn http_workers(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the bridge's threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("actix-server wo"))
        .count()
}

/// `server.workers` sets the HTTP worker count (a container given one CPU
/// on a big host would otherwise start one worker, and one Redis
/// connection, per host core); the default is one per core.
#[tokio::test]
async fn server_workers_sets_the_http_worker_count() {
    let (_redis, _emu, mut cfg) = stack();
    for workers in [3, 1] {
        cfg.set("server", "workers", workers.to_string());
        let mut bridge = crate::support::BridgeProcess::start(&mut cfg).await;
        assert_eq!(http_workers(bridge.pid()), workers);
        bridge.sigterm();
        bridge.wait_exit(crate::support::WAIT).await;
    }
}
