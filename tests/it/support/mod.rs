//! Test helpers: a private `redis-server`, the LaunchDarkly emulator binary,
//! and the bridge itself, in-process on port 0.

pub mod bridge;
pub mod browser;
pub mod cluster;
pub mod emulator;
pub mod fleet;
pub mod native;
pub mod process;
pub mod redis;
pub mod stream;

pub use bridge::{Bridge, TestConfig};
pub use emulator::Emulator;
pub use process::BridgeProcess;
pub use redis::RedisServer;

use serde_json::Value;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long a test waits for what should happen within a few flushes: a
/// change reaching LaunchDarkly, a process becoming ready, Redis coming back.
pub const WAIT: Duration = Duration::from_secs(30);

/// How long a test waits through injected faults: retries with backoff,
/// 429 pauses, lost leases, a client's read of a server that may never answer.
pub const WAIT_LONG: Duration = Duration::from_secs(60);

/// The usual test stack: a private Redis, the emulator, and a bridge
/// configuration pointing at both (start the bridge with `Bridge::start`).
pub fn stack() -> (RedisServer, Emulator, TestConfig) {
    let redis = RedisServer::start();
    let emu = Emulator::start();
    let cfg = TestConfig::new(&redis.url(), &emu.base);
    (redis, emu, cfg)
}

/// Awaits a condition by polling it, failing with `what` after `timeout`.
pub async fn eventually<F, Fut, T>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the emulator's segment `key` (project `default`, environment
/// `env`) exists and includes exactly `want`.
pub async fn converge(emu: &Emulator, env: &str, key: &str, want: &[&str]) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    eventually(&format!("{env}/{key} == {want:?}"), WAIT, || async {
        (emu.members("default", env, key).await.as_ref() == Some(&want)).then_some(())
    })
    .await;
}

/// Every key under `prefix` that holds data (not the flusher's leases nor
/// the replica heartbeats, which exist without any push).
pub fn data_keys(redis: &RedisServer, prefix: &str) -> Vec<String> {
    redis
        .keys(prefix)
        .into_iter()
        .filter(|k| !k.ends_with(":lease") && !k.ends_with(":replicas"))
        .collect()
}

/// The known-answer vectors of `reference/signature-vectors.json` whose
/// `platform` passes `keep`.
pub fn signature_vectors(keep: impl Fn(&str) -> bool) -> Vec<Value> {
    let all: Value =
        serde_json::from_str(include_str!("../../../reference/signature-vectors.json")).unwrap();
    all["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| keep(v["platform"].as_str().unwrap()))
        .cloned()
        .collect()
}

/// A free TCP port on 127.0.0.1 (the OS picks it; we release it at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub mod alloc;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;
