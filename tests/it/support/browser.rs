//! Headless Chromium driven over WebDriver: Debian's `chromedriver`
//! (package `chromium-driver`, with `chromium`) spawned on a free port, and a
//! `fantoccini` session on it. The browser's console is read from
//! chromedriver's log endpoint (`goog:loggingPrefs`).

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A chromedriver process and one headless Chromium session.
pub struct Browser {
    child: Child,
    base: String,
    pub client: fantoccini::Client,
    http: reqwest::Client,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width` × `height`.
    /// Fails with a clear message when chromedriver is not installed.
    pub async fn start(width: u32, height: u32) -> Browser {
        let port = super::free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver is installed (Debian packages chromium and chromium-driver; \
                 scripts/test-packages.txt lists them and scripts/test.sh installs them)",
            );
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        super::eventually("chromedriver answers", super::WAIT, || async {
            let r = http.get(format!("{base}/status")).send().await.ok()?;
            let v: Value = r.json().await.ok()?;
            (v["value"]["ready"] == json!(true)).then_some(())
        })
        .await;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium_binary(),
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-extensions",
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = fantoccini::ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&base)
            .await
            .expect("a chromedriver session with headless Chromium");
        Browser {
            child,
            base,
            client,
            http,
        }
    }

    /// The browser console entries since the last call (chromedriver's
    /// `se/log` endpoint, type `browser`): (level, message).
    pub async fn console(&self) -> Vec<(String, String)> {
        let id = self
            .client
            .session_id()
            .await
            .expect("session id")
            .expect("a session");
        let v: Value = self
            .http
            .post(format!("{}/session/{id}/se/log", self.base))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .expect("chromedriver reachable")
            .json()
            .await
            .expect("log JSON");
        v["value"]
            .as_array()
            .unwrap_or_else(|| panic!("no browser log in {v}"))
            .iter()
            .map(|e| {
                (
                    e["level"].as_str().unwrap_or("").to_string(),
                    e["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Runs `script` in the page and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script {script:?} failed: {e}"))
    }

    /// Waits until `script` (an expression) is truthy in the page and returns its value.
    pub async fn until(&self, what: &str, script: &str) -> Value {
        let body = format!("return ({script});");
        super::eventually(what, super::WAIT, || async {
            let v = self.eval(&body).await;
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            truthy.then_some(v)
        })
        .await
    }

    /// Ends the session and chromedriver.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.clone().close()).await;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's Chromium binary (chromedriver finds it too, but say which).
fn chromium_binary() -> String {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if std::path::Path::new(p).exists() {
            return p.to_string();
        }
    }
    "chromium".to_string()
}
