//! The real `cohort-bridge serve` binary as a child process, from a TOML
//! file, on a fixed port so it can be killed (`kill -9`), stopped (SIGTERM)
//! and started again at the same address.

use super::bridge::{TestConfig, AMPLITUDE_SECRET, HEAP_SECRET, OPERATOR_TOKEN};
use super::emulator::TOKEN;
use super::{eventually, free_port};
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// One `cohort-bridge serve` process (restartable).
pub struct BridgeProcess {
    child: Option<Child>,
    pub port: u16,
    pub base: String,
    _dir: tempfile::TempDir,
    config: PathBuf,
    log: PathBuf,
    pub http: reqwest::Client,
    /// How many times the binary was started.
    pub starts: u32,
    /// `HOSTNAME` for the process: its lease tokens start with it.
    hostname: Option<String>,
    /// `RUST_LOG` for the process (`info` unless set).
    rust_log: String,
}

impl BridgeProcess {
    /// Writes the configuration (listening on a fixed free port) and starts
    /// the binary, without waiting for it to be ready.
    pub fn spawn(cfg: &mut TestConfig) -> BridgeProcess {
        Self::spawn_with(cfg, None, "info")
    }

    fn spawn_with(cfg: &mut TestConfig, hostname: Option<String>, rust_log: &str) -> BridgeProcess {
        let port = free_port();
        cfg.set("server", "listen", format!("\"127.0.0.1:{port}\""));
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("bridge.toml");
        std::fs::write(&config, cfg.toml()).expect("write the config");
        let log = dir.path().join("bridge.log");
        let mut b = BridgeProcess {
            child: None,
            port,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
            config,
            log,
            http: reqwest::Client::new(),
            starts: 0,
            hostname,
            rust_log: rust_log.to_string(),
        };
        b.launch();
        b
    }

    /// [`BridgeProcess::start`] with `HOSTNAME` set, so the replica's lease
    /// tokens in Redis (`<hostname>-<uuid>`) say which process holds them.
    pub async fn start_as(cfg: &mut TestConfig, hostname: &str) -> BridgeProcess {
        let mut b = Self::spawn_with(cfg, Some(hostname.to_string()), "info");
        b.wait_ready().await;
        b
    }

    /// [`BridgeProcess::start`] with `RUST_LOG=filter` (e.g. to read a
    /// debug target from [`BridgeProcess::logs`]).
    pub async fn start_logging(cfg: &mut TestConfig, filter: &str) -> BridgeProcess {
        let mut b = Self::spawn_with(cfg, None, filter);
        b.wait_ready().await;
        b
    }

    /// Starts the binary and waits until `/readyz` answers 200.
    pub async fn start(cfg: &mut TestConfig) -> BridgeProcess {
        let mut b = Self::spawn(cfg);
        b.wait_ready().await;
        b
    }

    fn launch(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the bridge log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cohort-bridge"));
        if let Some(h) = &self.hostname {
            cmd.env("HOSTNAME", h);
        }
        let child = cmd
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("LD_API_TOKEN", TOKEN)
            .env("AMPLITUDE_SECRET", AMPLITUDE_SECRET)
            .env("HEAP_SECRET", HEAP_SECRET)
            .env("OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env_remove("COHORT_BRIDGE_CONFIG")
            .env("RUST_LOG", &self.rust_log)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn cohort-bridge");
        self.child = Some(child);
        self.starts += 1;
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("the bridge runs")
    }

    /// Waits for `/readyz` to answer 200; fails with the bridge's logs if
    /// it exits first or takes too long.
    pub async fn wait_ready(&mut self) {
        let url = format!("{}/readyz", self.base);
        let start = std::time::Instant::now();
        loop {
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "the bridge exited ({status}) before it was ready:\n{}",
                    self.logs()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the bridge was not ready within 30 s:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `kill -9`, then reaps the process.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM (graceful shutdown); see [`BridgeProcess::wait_exit`].
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit and returns its status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let status = eventually("the bridge exits", timeout, || {
            let s = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            async move { s }
        })
        .await;
        self.child = None;
        status
    }

    /// `kill -9` and start again on the same port, configuration and log.
    pub async fn crash_and_restart(&mut self) {
        self.kill9();
        self.launch();
        self.wait_ready().await;
    }

    /// Starts again after an exit (same port, configuration and log).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the bridge still runs");
        self.launch();
        self.wait_ready().await;
    }

    /// Everything the bridge logged, across restarts.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
