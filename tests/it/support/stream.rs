//! A seeded, randomized stream of Amplitude pushes (adds, removes, flips,
//! duplicate deliveries, out-of-order versions), the last-writer-wins model
//! the bridge must reproduce, and a sender that retries like a real platform.

use super::bridge::AMPLITUDE_SECRET;
use super::emulator::included;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// The shape of a stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamParams {
    pub cohorts: usize,
    /// Members per cohort that pushes draw from (overlap makes flips).
    pub pool: usize,
    /// Stop planning once this many changes are planned.
    pub changes: usize,
    /// Largest push, in members.
    pub max_push: usize,
}

/// How a planned push relates to the rest of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The cohort's newest version so far.
    Fresh,
    /// Older than an earlier push of the same cohort (as if delivered late).
    OutOfOrder,
    /// The very same delivery (body and `message_id`) as an earlier push.
    Duplicate,
}

/// One push to send.
#[derive(Debug, Clone)]
pub struct Planned {
    pub cohort: String,
    pub include: bool,
    pub version_ms: i64,
    pub users: Vec<String>,
    pub kind: Kind,
    pub body: Vec<u8>,
}

/// Versions: fresh push `k` gets `base + k * STEP`; an out-of-order push `k`
/// that pretends to predate fresh push `j` gets `base + j * STEP - 1 - k`.
/// Both are unique (so no two pushes tie on a member with different values),
/// and every version is recent, well inside the tombstone retention.
const STEP: i64 = 100_000;

pub fn cohort_name(c: usize) -> String {
    format!("k{c}")
}

/// Plans a stream from the seeded generator.
pub fn plan(rng: &mut StdRng, p: StreamParams) -> Vec<Planned> {
    let base = cohort_bridge::clock::now_ms() - 86_400_000;
    let mut out: Vec<Planned> = Vec::new();
    // Per cohort: indices (into `out`) of its fresh pushes.
    let mut fresh: Vec<Vec<usize>> = vec![Vec::new(); p.cohorts];
    let mut planned = 0;
    let mut k: i64 = 0;
    while planned < p.changes {
        k += 1;
        assert!(k < STEP, "stream too long for the version scheme");
        let roll: f64 = rng.gen();
        if roll < 0.08 && !out.is_empty() {
            let i = rng.gen_range(0..out.len());
            let mut d = out[i].clone();
            d.kind = Kind::Duplicate;
            planned += d.users.len();
            out.push(d);
            continue;
        }
        let c = rng.gen_range(0..p.cohorts);
        let earlier = &fresh[c];
        let (kind, version_ms, like) = if roll < 0.22 && !earlier.is_empty() {
            // Pretend to predate one of the cohort's last few fresh pushes,
            // mostly with that push's members, so the versions really clash.
            let j = earlier[earlier.len() - 1 - rng.gen_range(0..earlier.len().min(4))];
            let fresh_k = (out[j].version_ms - base) / STEP;
            (Kind::OutOfOrder, base + fresh_k * STEP - 1 - k, Some(j))
        } else {
            (Kind::Fresh, base + k * STEP, None)
        };
        let n = if rng.gen_bool(0.6) {
            rng.gen_range(1..=40)
        } else {
            rng.gen_range(200..=p.max_push)
        };
        let mut users: Vec<String> = match like {
            Some(j) => {
                let mut u = out[j].users.clone();
                u.shuffle(rng);
                u.truncate(n);
                u
            }
            None => Vec::new(),
        };
        while users.len() < n {
            let m = format!("{}-m{}", cohort_name(c), rng.gen_range(0..p.pool));
            if !users.contains(&m) {
                users.push(m);
            }
        }
        let include = match like {
            Some(j) => !out[j].include,
            None => rng.gen_bool(0.6),
        };
        let message_id = format!("msg-{k}");
        let body = serde_json::to_vec(&json!({
            "cohort_id": cohort_name(c),
            "cohort_name": format!("Cohort {c}"),
            "in_cohort": include,
            "computed_time": version_ms.to_string(),
            "message_id": message_id,
            "users": users.iter().map(|u| json!({"user_id": u})).collect::<Vec<_>>(),
        }))
        .expect("serialize a push");
        if kind == Kind::Fresh {
            fresh[c].push(out.len());
        }
        planned += users.len();
        out.push(Planned {
            cohort: cohort_name(c),
            include,
            version_ms,
            users,
            kind,
            body,
        });
    }
    out
}

/// Last writer wins per member: the highest version's value.
#[derive(Debug, Default, Clone)]
pub struct Model {
    cohorts: BTreeMap<String, HashMap<String, (i64, bool)>>,
}

impl Model {
    /// Folds in a push that got a 2xx.
    pub fn fold(&mut self, p: &Planned) {
        let members = self.cohorts.entry(p.cohort.clone()).or_default();
        for u in &p.users {
            let e = members.entry(u.clone()).or_insert((i64::MIN, false));
            // Versions are unique per push, so `>=` only re-applies the same value.
            if p.version_ms >= e.0 {
                *e = (p.version_ms, p.include);
            }
        }
    }

    pub fn cohorts(&self) -> impl Iterator<Item = &String> {
        self.cohorts.keys()
    }

    /// Sorted members the model has in the cohort.
    pub fn included(&self, cohort: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .cohorts
            .get(cohort)
            .map(|m| {
                m.iter()
                    .filter(|(_, (_, inc))| *inc)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Every member the model knows: (cohort, member) → (version, included).
    pub fn entries(&self) -> impl Iterator<Item = (&String, &String, (i64, bool))> {
        self.cohorts
            .iter()
            .flat_map(|(c, m)| m.iter().map(move |(k, v)| (c, k, *v)))
    }
}

/// What a 2xx summary says about a push's changes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub pushes: u64,
    pub sent: u64,
    pub accepted: u64,
    pub stale: u64,
    pub skipped: u64,
    pub duplicates: u64,
    pub retries: u64,
}

impl Tally {
    /// Checks that the summary accounts for every change of the push.
    pub fn add(&mut self, p: &Planned, summary: &Value, retries: u64) {
        let n = |k: &str| {
            summary[k]
                .as_u64()
                .unwrap_or_else(|| panic!("{k} missing: {summary}"))
        };
        let (accepted, stale, skipped) = (n("accepted"), n("stale"), n("skipped_without_key"));
        assert_eq!(
            accepted + stale + skipped,
            p.users.len() as u64,
            "a 2xx does not account for every change of the push: {summary}"
        );
        self.pushes += 1;
        self.sent += p.users.len() as u64;
        self.accepted += accepted;
        self.stale += stale;
        self.skipped += skipped;
        self.duplicates += u64::from(summary["duplicate"] == json!(true));
        self.retries += retries;
    }
}

/// POSTs an Amplitude push until it gets a 2xx, retrying (like a real
/// platform) on refused or broken connections and on 5xx. Any 4xx is a bug.
/// Returns the summary and how many retries it took.
pub async fn push_until_accepted(
    http: &reqwest::Client,
    base: &str,
    body: &[u8],
    deadline: Duration,
) -> (Value, u64) {
    let start = Instant::now();
    let mut retries = 0;
    loop {
        let r = http
            .post(format!("{base}/v1/webhooks/amplitude"))
            .header("Content-Type", "application/json")
            .header("X-Cohort-Bridge-Token", AMPLITUDE_SECRET)
            .timeout(Duration::from_secs(30))
            .body(body.to_vec())
            .send()
            .await;
        let last = match r {
            Ok(resp) if resp.status().is_success() => match resp.json::<Value>().await {
                Ok(v) => return (v, retries),
                Err(e) => format!("body cut off: {e}"),
            },
            Ok(resp) if resp.status().is_server_error() => format!("{}", resp.status()),
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                panic!("push refused with {status}: {text}");
            }
            Err(e) => format!("transport: {e}"),
        };
        assert!(
            start.elapsed() < deadline,
            "no 2xx within {deadline:?}; last: {last}"
        );
        retries += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a cohort's `want` hash: member → (version, desired).
pub async fn want(
    redis: &redis::Client,
    prefix: &str,
    cohort: &str,
) -> HashMap<String, (i64, bool)> {
    let mut c = redis
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}:*}}:want:amplitude:{cohort}"))
        .query_async(&mut c)
        .await
        .expect("KEYS");
    let mut out = HashMap::new();
    for k in keys {
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&k)
            .query_async(&mut c)
            .await
            .expect("HGETALL");
        for (m, v) in all {
            let v = cohort_bridge::store::MemberValue::parse(&v).expect("packed member");
            out.insert(m, (v.version_ms, v.desired));
        }
    }
    out
}

/// Members still dirty for any link under `prefix` (in its dirty set or
/// counted in its fresh list).
pub async fn dirty_backlog(redis: &redis::Client, prefix: &str) -> Option<u64> {
    let mut c = redis.get_multiplexed_async_connection().await.ok()?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}:*}}:dirty:*"))
        .query_async(&mut c)
        .await
        .ok()?;
    let mut n = 0;
    for k in keys {
        let s: u64 = redis::cmd("SCARD").arg(&k).query_async(&mut c).await.ok()?;
        n += s;
    }
    Some(n + fresh_backlog(&mut c, prefix).await?)
}

/// Members waiting in the fresh lists of every link under `prefix` (the
/// link meta hashes' `fresh` counts).
pub async fn fresh_backlog(c: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Option<u64> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}:*}}:link:*"))
        .query_async(c)
        .await
        .ok()?;
    let mut n = 0;
    for k in keys {
        let f: Option<u64> = redis::cmd("HGET")
            .arg(&k)
            .arg("fresh")
            .query_async(c)
            .await
            .ok()?;
        n += f.unwrap_or(0);
    }
    Some(n)
}

/// Sorted included members of every segment in the emulator's state, by key.
pub fn segments_by_key(state: &[Value], environment: &str) -> BTreeMap<String, Vec<String>> {
    state
        .iter()
        .filter(|s| s["environment"] == json!(environment))
        .filter_map(|s| {
            let key = s["key"].as_str()?.to_string();
            let mut m: Vec<String> = included(s);
            m.sort();
            Some((key, m))
        })
        .collect()
}

/// Cohorts whose LaunchDarkly membership differs from the model.
pub fn diverging(model: &Model, segments: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    model
        .cohorts()
        .filter(|c| {
            let want = model.included(c);
            let have = segments.get(&format!("amplitude-{c}"));
            match have {
                Some(h) => *h != want,
                None => !want.is_empty(),
            }
        })
        .cloned()
        .collect()
}
