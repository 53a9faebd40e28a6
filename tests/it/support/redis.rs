//! A private `redis-server` on a free port in a temp dir, with AOF, that a
//! test can kill and restart on the same port and data directory.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// The raw want-hash value of a member under key prefix `prefix`, from
    /// whichever cohort holds it (decode it with `store::MemberValue`).
    pub async fn want_value(&self, prefix: &str, member: &str) -> Option<String> {
        let mut c = self
            .client()
            .get_multiplexed_async_connection()
            .await
            .ok()?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{prefix}:*}}:want:*"))
            .query_async(&mut c)
            .await
            .ok()?;
        for k in keys {
            let v: Option<String> = redis::cmd("HGET")
                .arg(&k)
                .arg(member)
                .query_async(&mut c)
                .await
                .ok()?;
            if v.is_some() {
                return v;
            }
        }
        None
    }

    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts with extra `redis-server` arguments (e.g. `--maxmemory-policy allkeys-lru`).
    pub fn start_with(extra: &[&str]) -> Self {
        let mut r = RedisServer {
            child: None,
            port: super::free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        self.wait_until_up();
    }

    fn wait_until_up(&self) {
        let start = Instant::now();
        let client = ::redis::Client::open(self.url()).expect("url");
        loop {
            if let Ok(mut c) = client.get_connection() {
                if ::redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `kill -9`: whatever was not fsynced is lost, exactly as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and data directory (AOF is replayed).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn client(&self) -> ::redis::Client {
        ::redis::Client::open(self.url()).expect("url")
    }

    /// Every key with the given prefix.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut c = self.client().get_connection().expect("connect");
        ::redis::cmd("KEYS")
            .arg(format!("*{prefix}*"))
            .query(&mut c)
            .expect("KEYS")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
