//! The `ld-emulator` binary, spawned on a free port, and its control API.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub const TOKEN: &str = "api-test-token";

pub struct Emulator {
    child: Child,
    pub base: String,
    pub http: reqwest::Client,
}

impl Emulator {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts with extra command-line arguments (more tokens, rate budgets).
    pub fn start_with(extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ld-emulator"))
            .args(["--listen", "127.0.0.1:0", "--token", TOKEN])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ld-emulator");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let base = line
            .trim()
            .strip_prefix("ld-emulator listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from ld-emulator: {line:?}"))
            .to_string();
        Emulator {
            child,
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("emulator reachable")
            .json()
            .await
            .expect("emulator JSON")
    }

    async fn post(&self, path: &str, body: Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("emulator reachable");
        assert!(
            r.status().is_success(),
            "emulator control {path}: {}",
            r.status()
        );
    }

    /// Every segment, as `GET /_emulator/state` returns them.
    pub async fn segments(&self) -> Vec<Value> {
        self.get("/_emulator/state")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// A segment by project, environment and key.
    pub async fn segment(&self, project: &str, env: &str, key: &str) -> Option<Value> {
        self.segments().await.into_iter().find(|s| {
            s["project"] == json!(project)
                && s["environment"] == json!(env)
                && s["key"] == json!(key)
        })
    }

    /// Sorted included keys of a segment (None if it does not exist).
    pub async fn members(&self, project: &str, env: &str, key: &str) -> Option<Vec<String>> {
        self.segment(project, env, key).await.map(|s| included(&s))
    }

    /// Deletes a segment (as someone might in LaunchDarkly's UI).
    pub async fn delete_segment(&self, project: &str, env: &str, key: &str) {
        let r = self
            .http
            .delete(format!(
                "{}/_emulator/segments/{project}/{env}/{key}",
                self.base
            ))
            .send()
            .await
            .expect("emulator reachable");
        assert!(r.status().is_success(), "delete segment: {}", r.status());
    }

    /// Creates a segment through the LaunchDarkly API, as a person would by hand.
    pub async fn create_segment_by_hand(&self, project: &str, env: &str, key: &str) {
        let r = self
            .http
            .post(format!("{}/api/v2/segments/{project}/{env}", self.base))
            .header("Authorization", TOKEN)
            .header("LD-API-Version", "20240415")
            .json(&json!({"key": key, "name": "made by hand", "unbounded": true, "unboundedContextKind": "user"}))
            .send()
            .await
            .expect("emulator reachable");
        assert_eq!(r.status().as_u16(), 201, "create by hand");
    }

    /// Adds and removes included members behind the bridge's back (drift).
    pub async fn drift(&self, project: &str, env: &str, key: &str, add: &[&str], remove: &[&str]) {
        self.post(
            &format!("/_emulator/segments/{project}/{env}/{key}/members"),
            json!({"add": add, "remove": remove}),
        )
        .await;
    }

    pub async fn fault(&self, fault: Value) {
        self.post("/_emulator/faults", fault).await;
    }

    pub async fn configure(&self, cfg: Value) {
        self.post("/_emulator/config", cfg).await;
    }

    pub async fn requests(&self) -> Vec<Value> {
        self.get("/_emulator/requests")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Membership-update requests (`…/contexts`) in arrival order.
    pub async fn membership_requests(&self) -> Vec<Value> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r["route"] == json!("contexts"))
            .collect()
    }

    /// Request-log entries with a sequence number above `seq`.
    pub async fn requests_since(&self, seq: u64) -> Vec<Value> {
        self.get(&format!("/_emulator/requests?since={seq}"))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Drops every pending fault.
    pub async fn clear_faults(&self) {
        let r = self
            .http
            .delete(format!("{}/_emulator/faults", self.base))
            .send()
            .await
            .expect("emulator reachable");
        assert!(r.status().is_success(), "clear faults: {}", r.status());
    }

    pub async fn stats(&self) -> Value {
        self.get("/_emulator/stats").await
    }

    /// `GET /_emulator/rate`: arrivals per epoch second and the most in any
    /// window of `window_ms`.
    pub async fn rate(&self, window_ms: u64) -> Value {
        self.get(&format!("/_emulator/rate?window_ms={window_ms}"))
            .await
    }

    /// `GET /_emulator/writes`: writes in flight per segment and overlaps.
    pub async fn writes(&self) -> Value {
        self.get("/_emulator/writes").await
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The included members of a segment as the control API reports it, in its order.
pub fn included(segment: &Value) -> Vec<String> {
    segment["included"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
