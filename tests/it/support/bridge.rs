//! The bridge in-process on port 0, configured from real TOML text.

use cohort_bridge::app::{Application, ShutdownHandle};
use cohort_bridge::config::{self, MapSecrets, Settings};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};

pub const AMPLITUDE_SECRET: &str = "amp-shared-secret";
pub const HEAP_SECRET: &str = "heap_test_webhook_secret";
pub const OPERATOR_TOKEN: &str = "operator-test-token";

static PREFIX: AtomicU32 = AtomicU32::new(0);

/// Builds a test configuration: Amplitude and Heap sources, production and
/// staging destinations, and per-key overrides set by each test.
pub struct TestConfig {
    pub prefix: String,
    /// (section, key) → TOML value, replacing or adding to the defaults.
    values: BTreeMap<(&'static str, &'static str), String>,
    /// Extra TOML appended after the built-in sources (more `[[sources]]`).
    pub sources: String,
    pub amplitude_destinations: String,
}

impl TestConfig {
    pub fn new(redis_url: &str, ld_url: &str) -> Self {
        let prefix = format!("t{}", PREFIX.fetch_add(1, Ordering::SeqCst));
        let mut c = TestConfig {
            prefix: prefix.clone(),
            values: BTreeMap::new(),
            sources: String::new(),
            amplitude_destinations: r#"["production"]"#.into(),
        };
        let q = |s: &str| format!("{s:?}");
        for (section, key, value) in [
            ("server", "listen", q("127.0.0.1:0")),
            ("server", "max_body_bytes", "1048576".into()),
            ("server", "shutdown_grace_seconds", "5".into()),
            ("redis", "url", q(redis_url)),
            ("redis", "key_prefix", q(&prefix)),
            ("redis", "partitions", "4".into()),
            ("launchdarkly", "base_url", q(ld_url)),
            ("launchdarkly", "api_token_env", q("LD_API_TOKEN")),
            ("launchdarkly", "requests_per_second", "200.0".into()),
            ("launchdarkly", "request_timeout_ms", "2000".into()),
            ("launchdarkly", "backoff_base_ms", "20".into()),
            ("launchdarkly", "backoff_max_ms", "200".into()),
            ("launchdarkly", "blocked_retry_ms", "300".into()),
            ("launchdarkly", "rate_limited_fallback_ms", "200".into()),
            ("flush", "max_delay_ms", "100".into()),
            ("flush", "poll_interval_ms", "20".into()),
            // Sampled verification off: its reads would break the exact
            // LaunchDarkly request counts many tests assert (tests/it/sampling.rs
            // turns it on).
            ("flush", "verify_share", "0".into()),
        ] {
            c.values.insert((section, key), value);
        }
        c
    }

    /// Sets `[section] key = value` (value is TOML text: `"1000"`, `"\"x\""`).
    pub fn set(
        &mut self,
        section: &'static str,
        key: &'static str,
        value: impl Into<String>,
    ) -> &mut Self {
        self.values.insert((section, key), value.into());
        self
    }

    pub fn toml(&self) -> String {
        let mut out = String::new();
        for section in ["server", "redis", "launchdarkly", "flush", "ingest"] {
            out.push_str(&format!("[{section}]\n"));
            for ((s, k), v) in &self.values {
                if *s == section {
                    out.push_str(&format!("{k} = {v}\n"));
                }
            }
            out.push('\n');
        }
        out.push_str(&format!(
            r#"
[destinations.production]
project = "default"
environment = "production"
context_kind = "user"

[destinations.staging]
project = "default"
environment = "staging"
context_kind = "user"

[[sources]]
id = "amplitude"
kind = "amplitude"
destinations = {amp}
auth = {{ scheme = "header", header = "X-Cohort-Bridge-Token", secret_env = "AMPLITUDE_SECRET" }}

[[sources]]
id = "heap"
kind = "heap"
destinations = ["production"]
auth = {{ scheme = "heap-hash", secret_env = "HEAP_SECRET", tolerance_seconds = 300 }}
{sources}
"#,
            amp = self.amplitude_destinations,
            sources = self.sources,
        ));
        out
    }

    pub fn secrets() -> MapSecrets {
        let mut m = HashMap::new();
        m.insert(
            "LD_API_TOKEN".to_string(),
            super::emulator::TOKEN.to_string(),
        );
        m.insert("AMPLITUDE_SECRET".to_string(), AMPLITUDE_SECRET.to_string());
        m.insert("HEAP_SECRET".to_string(), HEAP_SECRET.to_string());
        m.insert("HEAP_VECTOR_SECRET".to_string(), HEAP_SECRET.to_string());
        m.insert("OPERATOR_TOKEN".to_string(), OPERATOR_TOKEN.to_string());
        MapSecrets(m)
    }

    pub fn settings(&self) -> Settings {
        match config::from_toml_str(&self.toml(), &Self::secrets()) {
            Ok(s) => s,
            Err(e) => panic!("test config invalid: {e}\n{}", self.toml()),
        }
    }
}

/// A running bridge.
pub struct Bridge {
    pub base: String,
    handle: ShutdownHandle,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub http: reqwest::Client,
}

impl Bridge {
    pub async fn start(cfg: &TestConfig) -> Bridge {
        Self::start_settings(cfg.settings()).await
    }

    pub async fn start_settings(settings: Settings) -> Bridge {
        let app = Application::build(settings).expect("build the bridge");
        let base = format!("http://127.0.0.1:{}", app.port());
        let handle = Application::shutdown_handle();
        let task = tokio::spawn(app.run(handle.clone()));
        Bridge {
            base,
            handle,
            task: Some(task),
            http: reqwest::Client::new(),
        }
    }

    /// POSTs raw bytes to a receiver with the given headers.
    pub async fn post(
        &self,
        source: &str,
        body: &[u8],
        headers: &[(&str, String)],
    ) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/webhooks/{source}", self.base))
            .header("Content-Type", "application/json")
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let resp = req.send().await.expect("bridge reachable");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    /// POSTs an Amplitude body with the right secret.
    pub async fn amplitude(&self, body: &Value) -> (u16, Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        self.post(
            "amplitude",
            &bytes,
            &[("X-Cohort-Bridge-Token", AMPLITUDE_SECRET.to_string())],
        )
        .await
    }

    /// POSTs a Heap body signed now.
    pub async fn heap(&self, body: &[u8]) -> (u16, Value) {
        let ts = cohort_bridge::clock::now_ms().to_string();
        let secret = config::Secret::new(HEAP_SECRET);
        let header = cohort_bridge::verify::heap_sign(&secret, &ts, body);
        self.post("heap", body, &[("Heap-Hash", header)]).await
    }

    /// Calls the operator API with the operator token (`token: None` sends none).
    pub async fn operator(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/v1/operator{path}", self.base));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("bridge reachable");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("bridge reachable");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// Graceful shutdown; waits for it to complete.
    pub async fn stop(mut self) {
        self.handle.shutdown();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// An Amplitude Cohort Webhooks body.
pub fn amplitude_body(
    cohort: &str,
    enter: bool,
    computed_time: i64,
    message_id: &str,
    users: &[&str],
) -> Value {
    serde_json::json!({
        "cohort_name": format!("Cohort {cohort}"),
        "cohort_id": cohort,
        "in_cohort": enter,
        "computed_time": computed_time.to_string(),
        "message_id": message_id,
        "users": users.iter().map(|u| serde_json::json!({"user_id": u, "user_properties": {"plan": "pro"}})).collect::<Vec<_>>(),
    })
}

/// A Heap `segment.users.sync` body.
pub fn heap_body(
    segment: i64,
    task: &str,
    page: u32,
    pages: u32,
    add: &[&str],
    remove: &[&str],
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id_token": uuid::Uuid::new_v4().to_string(),
        "action_type": "segment.users.sync",
        "customer_config": {"fields": []},
        "data": {
            "segment": {"id": segment, "name": format!("Segment {segment}")},
            "sync_info": {"page_number": page, "total_pages": pages, "sync_task_id": task},
            "add": add.iter().map(|a| serde_json::json!({"id": a})).collect::<Vec<_>>(),
            "remove": remove.iter().map(|a| serde_json::json!({"id": a})).collect::<Vec<_>>(),
        }
    }))
    .unwrap()
}
