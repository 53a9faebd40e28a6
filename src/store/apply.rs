//! Applying one push: the atomic step behind every receiver's 2xx
//! (`apply.lua`, with `snapshot_page.lua` in front for a snapshot page).

use super::reply::{int, text};
use super::{scripts, LinkId, Partition, Store, StoreError};
use crate::sources::Push;
use redis::Value;

/// What one push did, change by change.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplyOutcome {
    /// The delivery id was seen before: nothing was applied this time.
    pub duplicate: bool,
    /// Changes newer than what was stored (each later written, superseded or cancelled).
    pub accepted: u64,
    /// Changes older than what was stored: no effect.
    pub stale: u64,
    /// Accepted changes that LaunchDarkly already reflects: nothing to write.
    pub unchanged: u64,
    /// Earlier pending changes that these replaced before they were written.
    pub superseded: u64,
    /// Accepted changes that undid a pending change (a flip back): nothing to write.
    pub cancelled: u64,
    /// A link became due at once (a full batch waits): wake the flusher.
    /// Otherwise its next poll (`flush.poll_interval_ms`) finds the work.
    #[serde(skip)]
    pub due_now: bool,
    /// Retired links (`store::lifecycle`, `on_push = "refuse"`) that got
    /// nothing from this push, each as `"<link> (<lifecycle state>)"`.
    pub refused: Vec<String>,
    /// Retired links with `on_push = "ignore"` that got nothing (each counted
    /// in its `ignored_pushes`).
    pub ignored: Vec<String>,
    /// No link took the push (each one refuses or ignores): nothing was
    /// applied and the delivery is not remembered, so a retry after
    /// `unfreeze` applies it.
    #[serde(skip)]
    pub rejected: bool,
}

/// A list of strings from the script (an empty Lua table is an empty array).
fn link_list(v: Option<&Value>) -> Result<Vec<String>, StoreError> {
    match v {
        None | Some(Value::Nil) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(text).collect(),
        Some(other) => Err(StoreError::Reply(format!("apply returned {other:?}"))),
    }
}

/// `{link, state, …}` from the script: `"<link> (<state>)"` each.
fn refused_list(v: Option<&Value>) -> Result<Vec<String>, StoreError> {
    let flat = link_list(v)?;
    Ok(flat
        .chunks(2)
        .map(|p| format!("{} ({})", p[0], p.get(1).map_or("", String::as_str)))
        .collect())
}

/// Per-push settings the apply script needs.
#[derive(Debug, Clone, Copy)]
pub struct ApplyParams {
    /// When the push is applied (ms): due times count from it.
    pub now_ms: i64,
    /// How long a delivery id is remembered (`redis.dedupe_ttl_seconds` in ms).
    pub dedupe_ttl_ms: u64,
    /// `flush.max_delay_ms`: a link is due this long after its first waiting change.
    pub max_delay_ms: u64,
    /// `launchdarkly.max_keys_per_request`: a link with this many waiting is due now.
    pub batch: usize,
    /// The change history the push's record goes to (`flush.history_*`).
    pub history: HistoryParams,
}

/// How the apply script records a push in the cohort's change history
/// (`flush.history_entries_per_cohort`, `flush.history_keys_per_entry`,
/// `flush.history_max_age_seconds`). The default records nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryParams {
    /// Records kept per cohort; 0 = no history.
    pub entries: usize,
    /// Member keys listed per record, each with its outcome.
    pub keys: usize,
    /// Records older than this (ms) are dropped.
    pub max_age_ms: u64,
}

impl HistoryParams {
    /// The script's argument: `"<entries>,<keys>,<max age ms>"`.
    fn arg(&self) -> String {
        if self.entries == 0 {
            return "0,0,0".into();
        }
        format!("{},{},{}", self.entries, self.keys, self.max_age_ms.max(1))
    }
}

/// The head of the push's history record (see apply.lua): `{"d":…,"r":…,
/// "k":…,` and `"i":…,` with several runs; the script appends the counts
/// and the outcomes. Empty when history is off.
fn history_head(push: &Push, history: HistoryParams) -> String {
    if history.entries == 0 {
        return String::new();
    }
    let runs: Vec<&[crate::sources::Change]> = push
        .changes
        .chunk_by(|a, b| a.version == b.version && a.include == b.include)
        .collect();
    let listed = push.changes.len().min(history.keys);
    let mut head = String::with_capacity(64 + 24 * listed);
    head.push_str("{\"d\":");
    head.push_str(&json_text(push.delivery_id.as_deref().unwrap_or("")));
    head.push_str(",\"r\":[");
    for (i, run) in runs.iter().enumerate() {
        if i > 0 {
            head.push(',');
        }
        let desired = if run[0].include { "1" } else { "0" };
        head.push_str(&format!("[\"{}\",\"{desired}\"]", run[0].version.ms()));
    }
    head.push_str("],\"k\":[");
    for (i, c) in push.changes.iter().take(listed).enumerate() {
        if i > 0 {
            head.push(',');
        }
        head.push_str(&json_text(&c.key));
    }
    head.push_str("],");
    if runs.len() > 1 {
        head.push_str("\"i\":[");
        let mut i = 0;
        'runs: for (r, run) in runs.iter().enumerate() {
            for _ in run.iter() {
                if i == listed {
                    break 'runs;
                }
                if i > 0 {
                    head.push(',');
                }
                head.push_str(&(r + 1).to_string());
                i += 1;
            }
        }
        head.push_str("],");
    }
    head
}

/// `s` as a JSON string.
fn json_text(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The links of one cohort: one per destination of its source.
pub(super) fn cohort_links(source: &str, cohort: &str, destinations: &[String]) -> Vec<LinkId> {
    destinations
        .iter()
        .map(|d| LinkId {
            destination: d.clone(),
            source: source.into(),
            cohort: cohort.into(),
        })
        .collect()
}

/// One push's keys and arguments for `apply.lua`, built by the caller's
/// task ([`Store::apply_call`]) so that a group commit only concatenates them.
#[derive(Debug, Clone)]
pub struct ApplyCall {
    /// The partition of the push's keys (one hash slot).
    pub partition: Partition,
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
}

impl ApplyCall {
    fn key(&mut self, k: String) -> &mut Self {
        self.keys.push(k);
        self
    }

    fn arg<T: redis::ToRedisArgs>(&mut self, a: T) -> &mut Self {
        a.write_redis_args(&mut self.args);
        self
    }
}

/// What `apply.lua` answered for one push.
fn outcome(reply: &[Value]) -> Result<ApplyOutcome, StoreError> {
    let first = reply.first().map(int).transpose()?.unwrap_or(-1);
    if first == -1 {
        // apply_many: this push's apply raised an error (the others went on).
        let msg = reply.get(1).map(text).transpose()?.unwrap_or_default();
        return Err(StoreError::Reply(format!("apply failed: {msg}")));
    }
    if first == 1 {
        let prior = reply.get(1).map(text).transpose()?.unwrap_or_default();
        let n: Vec<u64> = prior.split(',').filter_map(|x| x.parse().ok()).collect();
        let get = |i: usize| n.get(i).copied().unwrap_or(0);
        return Ok(ApplyOutcome {
            duplicate: true,
            accepted: get(0),
            stale: get(1),
            unchanged: get(2),
            superseded: get(3),
            cancelled: get(4),
            due_now: false,
            ..ApplyOutcome::default()
        });
    }
    if first == 2 {
        return Ok(ApplyOutcome {
            refused: refused_list(reply.get(1))?,
            ignored: link_list(reply.get(2))?,
            rejected: true,
            ..ApplyOutcome::default()
        });
    }
    if reply.len() != 9 {
        return Err(StoreError::Reply(format!("apply returned {reply:?}")));
    }
    let n: Vec<i64> = reply[..7].iter().map(int).collect::<Result<_, _>>()?;
    Ok(ApplyOutcome {
        duplicate: false,
        accepted: n[1] as u64,
        stale: n[2] as u64,
        unchanged: n[3] as u64,
        superseded: n[4] as u64,
        cancelled: n[5] as u64,
        due_now: n[6] == 1,
        refused: refused_list(reply.get(7))?,
        ignored: link_list(reply.get(8))?,
        rejected: false,
    })
}

impl Store {
    /// The keys and arguments of `apply.lua` for one push (without a
    /// snapshot page's staging arguments).
    pub fn apply_call(
        &self,
        source: &str,
        destinations: &[String],
        push: &Push,
        params: ApplyParams,
    ) -> ApplyCall {
        let k = &self.keys;
        let partition = k.partition(source, &push.cohort_id);
        let cohort = push.cohort_id.as_str();
        let links = cohort_links(source, cohort, destinations);
        let seen_ttl = if push.delivery_id.is_some() {
            params.dedupe_ttl_ms
        } else {
            0
        };
        let mut call = ApplyCall {
            partition,
            keys: Vec::with_capacity(6 + 3 * links.len()),
            args: Vec::with_capacity(12 + 2 * links.len() + push.changes.len()),
        };
        call.key(k.want(partition, source, cohort))
            .key(k.cohort_meta(partition, source, cohort))
            .key(k.due(partition))
            .key(k.cohorts(partition))
            .key(k.seen(
                partition,
                source,
                cohort,
                push.delivery_id.as_deref().unwrap_or("-"),
            ));
        for l in &links {
            call.key(k.dirty(partition, l));
        }
        call.key(k.dirty_since(partition));
        // The links' meta hashes: apply.lua reads their lifecycle there.
        for l in &links {
            call.key(k.link_meta(partition, l));
        }
        call.key(k.history(partition, source, cohort));
        for l in &links {
            call.key(k.fresh(partition, l));
        }
        call.arg(params.now_ms)
            .arg(seen_ttl)
            // The due time of a link's first waiting change, as text (see apply.lua).
            .arg(params.now_ms.saturating_add(params.max_delay_ms as i64))
            .arg(params.batch)
            .arg(push.cohort_name.as_deref().unwrap_or(""))
            .arg(format!("{source}:{cohort}"))
            .arg(links.len());
        for d in destinations {
            call.arg(d);
        }
        for l in &links {
            call.arg(l.to_string());
        }
        call.arg(params.history.arg())
            .arg(history_head(push, params.history));
        // Runs of changes sharing a version and a direction (see apply.lua):
        // a push's changes usually form one or two runs, so each member costs
        // one argument instead of three.
        for run in push
            .changes
            .chunk_by(|a, b| a.version == b.version && a.include == b.include)
        {
            call.arg(run[0].version.base36())
                .arg(if run[0].include { "1" } else { "0" })
                .arg(run.len());
            for c in run {
                call.arg(&c.key);
            }
        }
        call
    }

    /// Applies one push (one cohort) to every link of the source, atomically.
    pub async fn apply(
        &self,
        source: &str,
        destinations: &[String],
        push: &Push,
        params: ApplyParams,
    ) -> Result<ApplyOutcome, StoreError> {
        let call = self.apply_call(source, destinations, push, params);
        // A snapshot page runs snapshot_page.lua first, in the same script.
        let mut inv = match push.snapshot {
            Some(_) => scripts::APPLY_SNAPSHOT.prepare_invoke(),
            None => scripts::APPLY.prepare_invoke(),
        };
        for key in &call.keys {
            inv.key(key);
        }
        for a in &call.args {
            inv.arg(a.as_slice());
        }
        if let Some(snap) = &push.snapshot {
            let cohort = push.cohort_id.as_str();
            self.stage_args(&mut inv, call.partition, source, cohort, snap);
        }
        let reply: Vec<Value> = inv.invoke_async(&mut self.conn()).await?;
        outcome(&reply)
    }

    /// Applies a group of pushes in one script call (`apply_many`: each push
    /// exactly as [`Store::apply`] would, in order). On a Redis Cluster every
    /// call must be of one partition (one slot). `Err`: Redis failed, for
    /// every push of the group; otherwise each push's own outcome (a reply
    /// that cannot be read stays that push's error).
    pub async fn apply_many(
        &self,
        calls: &[&ApplyCall],
    ) -> Result<Vec<Result<ApplyOutcome, StoreError>>, StoreError> {
        let mut inv = scripts::APPLY_MANY.prepare_invoke();
        inv.arg(calls.len());
        for c in calls {
            inv.arg(c.keys.len()).arg(c.args.len());
        }
        for c in calls {
            for key in &c.keys {
                inv.key(key);
            }
            for a in &c.args {
                inv.arg(a.as_slice());
            }
        }
        let reply: Vec<Value> = inv.invoke_async(&mut self.conn()).await?;
        if reply.len() != calls.len() {
            return Err(StoreError::Reply(format!(
                "apply_many returned {} results for {} pushes",
                reply.len(),
                calls.len()
            )));
        }
        Ok(reply
            .iter()
            .map(|r| match r {
                Value::Array(items) => outcome(items),
                other => Err(StoreError::Reply(format!("apply_many returned {other:?}"))),
            })
            .collect())
    }
}
