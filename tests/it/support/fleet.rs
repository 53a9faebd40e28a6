//! N `cohort-bridge serve` processes sharing one Redis and one emulator:
//! the replicas of one deployment (leases, hand-over on rebalance).

use super::bridge::{amplitude_body, TestConfig, AMPLITUDE_SECRET};
use super::{BridgeProcess, Emulator, RedisServer};
use serde_json::Value;

/// One Redis, one emulator, and the bridge processes started on them.
pub struct Fleet {
    pub redis: RedisServer,
    pub emu: Emulator,
    pub cfg: TestConfig,
    pub bridges: Vec<BridgeProcess>,
}

impl Fleet {
    /// Redis and the emulator, no bridge yet; adjust `cfg` then [`Fleet::add`].
    pub fn new() -> Fleet {
        let redis = RedisServer::start();
        let emu = Emulator::start();
        let cfg = TestConfig::new(&redis.url(), &emu.base);
        Fleet {
            redis,
            emu,
            cfg,
            bridges: Vec::new(),
        }
    }

    /// Starts `n` bridges (each ready before the next starts).
    pub async fn start(mut self, n: usize) -> Fleet {
        for _ in 0..n {
            self.add().await;
        }
        self
    }

    /// Starts one more bridge on the same Redis and emulator; returns its index.
    pub async fn add(&mut self) -> usize {
        let b = BridgeProcess::start(&mut self.cfg).await;
        self.bridges.push(b);
        self.bridges.len() - 1
    }

    /// POSTs an Amplitude push to bridge `i`; returns the status and body.
    pub async fn amplitude(
        &self,
        i: usize,
        cohort: &str,
        include: bool,
        version_s: i64,
        id: &str,
        users: &[String],
    ) -> (u16, Value) {
        let refs: Vec<&str> = users.iter().map(String::as_str).collect();
        let b = &self.bridges[i];
        let resp = b
            .http
            .post(format!("{}/v1/webhooks/amplitude", b.base))
            .header("Content-Type", "application/json")
            .header("X-Cohort-Bridge-Token", AMPLITUDE_SECRET)
            .json(&amplitude_body(cohort, include, version_s, id, &refs))
            .send()
            .await
            .expect("bridge reachable");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The lease holders' tokens, per partition key present in Redis.
    pub async fn lease_holders(&self) -> Vec<String> {
        let mut c = self
            .redis
            .client()
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("*{}*lease*", self.cfg.prefix))
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        let mut out = Vec::new();
        for k in keys {
            let v: Option<String> = ::redis::cmd("GET")
                .arg(&k)
                .query_async(&mut c)
                .await
                .ok()
                .flatten();
            out.extend(v);
        }
        out
    }

    /// Every bridge's log, for a failure message.
    pub fn logs(&self) -> String {
        self.bridges
            .iter()
            .enumerate()
            .map(|(i, b)| format!("--- bridge {i} ---\n{}", b.logs()))
            .collect()
    }
}
