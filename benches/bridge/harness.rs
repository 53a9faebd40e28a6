//! What every figure uses: request bodies, the emulator's control API,
//! Redis's backlog, and latencies read from the emulator's request log.

use crate::load::Target;
use crate::procs::{self, Bridge, Emulator, Redis};
use hyper::body::Bytes;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Keys per LaunchDarkly request: the bridge's default `max_keys_per_request`.
pub const MAX_KEYS: usize = 1000;

/// `flush.max_delay_ms` of the propagation and fairness figures.
pub const MAX_DELAY_MS: u64 = 1000;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A 20-character member key.
pub fn member(cohort: usize, i: usize) -> String {
    format!("m{cohort:05}x{i:07}abcdef")
}

/// An Amplitude Cohort Webhooks body (the shape Amplitude sends).
pub fn amplitude(cohort: &str, include: bool, time_s: u64, members: &[String]) -> Bytes {
    let mut s = String::with_capacity(64 + members.len() * 48);
    s.push_str(&format!(
        r#"{{"cohort_id":"{cohort}","cohort_name":"Bench {cohort}","in_cohort":{include},"computed_time":"{time_s}","users":["#
    ));
    for (i, m) in members.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(r#"{"user_id":""#);
        s.push_str(m);
        s.push_str(r#"","user_properties":{}}"#);
    }
    s.push_str("]}");
    Bytes::from(s)
}

pub fn bridge_target(b: &Bridge) -> Target {
    Target {
        port: b.port,
        path: "/v1/webhooks/amp".into(),
        token: Some(procs::SOURCE_SECRET.into()),
    }
}

/// The emulator's control API.
pub struct Control {
    http: reqwest::Client,
    base: String,
}

impl Control {
    pub fn new(emu: &Emulator) -> Control {
        Control {
            http: reqwest::Client::new(),
            base: emu.url.clone(),
        }
    }

    pub async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("emulator control")
            .json()
            .await
            .expect("emulator JSON")
    }

    pub async fn post(&self, path: &str, body: Value) {
        self.http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("emulator control");
    }

    pub async fn reset(&self) {
        self.post("/_emulator/reset", json!({})).await;
    }

    pub async fn route_count(&self, route: &str) -> u64 {
        self.get("/_emulator/stats").await["by_route"][route]
            .as_u64()
            .unwrap_or(0)
    }

    pub async fn requests_since(&self, seq: u64) -> Vec<Value> {
        self.get(&format!("/_emulator/requests?since={seq}"))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The sequence number of the last request in the emulator's log.
    pub async fn last_seq(&self) -> Option<u64> {
        self.requests_since(0)
            .await
            .last()
            .and_then(|e| e["seq"].as_u64())
    }

    pub async fn members(&self, key: &str) -> usize {
        self.get(&format!("/_emulator/segments/default/production/{key}"))
            .await["included"]
            .as_array()
            .map_or(0, Vec::len)
    }
}

/// One POST; returns the wall-clock ms at which its 2xx arrived.
pub async fn post_one(http: &reqwest::Client, b: &Bridge, body: Bytes) -> Option<i64> {
    let r = http
        .post(format!("http://127.0.0.1:{}/v1/webhooks/amp", b.port))
        .header("x-cohort-bridge-token", procs::SOURCE_SECRET)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .ok()?;
    let ok = r.status().is_success();
    let at = now_ms();
    let _ = r.bytes().await;
    ok.then_some(at)
}

/// Members still dirty across every link, and links still due.
pub fn backlog(redis: &Redis) -> (u64, u64) {
    use redis::Commands;
    let mut c = redis.conn().expect("redis connection");
    let dirty: Vec<String> = c
        .scan_match("*:dirty:*")
        .map(|i| i.filter_map(Result::ok).collect())
        .unwrap_or_default();
    let due: Vec<String> = c
        .scan_match("*:due")
        .map(|i| i.filter_map(Result::ok).collect())
        .unwrap_or_default();
    // Members waiting in the links' fresh lists (a big push's never-seen
    // members, before a claim moves them into the dirty set) count too.
    let link_metas: Vec<String> = c
        .scan_match("*:link:*")
        .map(|i| i.filter_map(Result::ok).collect())
        .unwrap_or_default();
    let members: u64 = dirty
        .iter()
        .map(|k| c.scard::<_, u64>(k).unwrap_or(0))
        .sum::<u64>()
        + link_metas
            .iter()
            .map(|k| {
                c.hget::<_, _, Option<u64>>(k, "fresh")
                    .ok()
                    .flatten()
                    .unwrap_or(0)
            })
            .sum::<u64>();
    let links: u64 = due.iter().map(|k| c.zcard::<_, u64>(k).unwrap_or(0)).sum();
    (members, links)
}

pub async fn wait_until<F: FnMut() -> bool>(what: &str, limit: Duration, mut f: F) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

pub fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Latencies from each member's 2xx to the completion of the emulator
/// request that carried it, read from the emulator's request log.
pub async fn latencies(
    ctl: &Control,
    sent: &HashMap<String, i64>,
    since: u64,
    limit: Duration,
) -> Vec<i64> {
    let mut seen: HashMap<String, i64> = HashMap::new();
    let mut seq = since;
    let start = Instant::now();
    while seen.len() < sent.len() && start.elapsed() < limit {
        for e in ctl.requests_since(seq).await {
            let Some(done) = e["completed_ms"].as_i64() else {
                // Still in flight: read it again next time.
                break;
            };
            seq = e["seq"].as_u64().unwrap_or(seq);
            let ok = e["status"]
                .as_u64()
                .is_some_and(|s| (200..300).contains(&s));
            if e["route"] != "contexts" || !ok {
                continue;
            }
            for m in e["body"]["included"]["add"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(m) = m.as_str().filter(|m| sent.contains_key(*m)) {
                    seen.entry(m.to_string()).or_insert(done);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut out: Vec<i64> = sent
        .iter()
        .filter_map(|(m, at)| seen.get(m).map(|done| done - at))
        .collect();
    out.sort_unstable();
    out
}

/// One-member pushes, one every `every` for `length`, round-robin over the
/// cohorts `<cohort_prefix>0..cohorts`, each adding a new member
/// `<member_prefix><n>`: the members that got a 2xx, with when it arrived.
pub async fn trickle(
    http: &reqwest::Client,
    bridge: &Bridge,
    member_prefix: char,
    cohort_prefix: &str,
    cohorts: usize,
    every: Duration,
    length: Duration,
) -> HashMap<String, i64> {
    let mut sent = HashMap::new();
    let mut tick = tokio::time::interval(every);
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < length {
        tick.tick().await;
        let m = format!("{member_prefix}{n:019}");
        let body = amplitude(
            &format!("{cohort_prefix}{}", n % cohorts),
            true,
            2,
            std::slice::from_ref(&m),
        );
        if let Some(at) = post_one(http, bridge, body).await {
            sent.insert(m, at);
        }
        n += 1;
    }
    sent
}

/// One member into each of the cohorts `<cohort_prefix>0..cohorts`, then waits
/// (at most 60 s) until the emulator has seen as many membership requests:
/// every segment exists and the flusher has had its first turn at each.
pub async fn warm_up(
    http: &reqwest::Client,
    ctl: &Control,
    bridge: &Bridge,
    cohort_prefix: &str,
    cohorts: usize,
) {
    for c in 0..cohorts {
        post_one(
            http,
            bridge,
            amplitude(
                &format!("{cohort_prefix}{c}"),
                true,
                1,
                &[member(c, 9_999_999)],
            ),
        )
        .await;
    }
    let mut warm = 0;
    let start = Instant::now();
    while warm < cohorts as u64 && start.elapsed() < Duration::from_secs(60) {
        warm = ctl.route_count("contexts").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
