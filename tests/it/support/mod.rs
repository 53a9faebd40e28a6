//! Test helpers: a private `redis-server`, the LaunchDarkly emulator binary,
//! and the bridge itself, in-process on port 0.

pub mod bridge;
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

use std::future::Future;
use std::time::{Duration, Instant};

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
