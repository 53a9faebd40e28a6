//! Explaining one member (`why`): its desired state, what LaunchDarkly has
//! per the bridge's record, whether a write is pending, and the story of the
//! changes that touched it.
//!
//! The story comes from three bounded records, none written per member:
//! - the cohort's change history ([`super::Keys::history`]): `apply.lua`
//!   pushes one record per push (a duplicate delivery too) in the push's own
//!   script call, listing the first `flush.history_keys_per_entry` keys with
//!   each one's outcome (accepted, stale, unchanged, cancelled, duplicate);
//! - the link's audit trail (`audit.rs`): every LaunchDarkly write, with its
//!   first 20 added and removed keys;
//! - the link's dead letters.
//!
//! What becomes of an accepted change is read off what came after it: a later
//! change that replaced it while pending (`p`, `c`) superseded it; a later
//! change that found nothing pending (`a`, `u`) means it had been written;
//! for the member's latest change, its pending flag and link state tell.
//! A member of a push whose record was truncated is matched by version (its
//! stored version and direction equal one of the push's runs) and marked
//! `listed: false`.

use super::{AuditEntry, DeadLetter, HistoryParams, LinkId, MemberValue, Store, StoreError};
use serde_json::Value;
use std::collections::HashMap;

/// What `GET /v1/operator/links/{link}/members/{key}` and `cohort-bridge why`
/// answer: why a member is (not) in the link's segment.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct MemberExplanation {
    /// The link, `<destination>:<source>:<cohort>`.
    pub link: String,
    /// The member's context key.
    pub key: String,
    /// Whether the bridge tracks the member (false: "unknown to the bridge").
    pub known: bool,
    /// The answer in one sentence.
    pub summary: String,
    /// The state the sources asked for, by last writer wins.
    pub desired: Option<DesiredState>,
    /// What LaunchDarkly has per the bridge's record: `in`, `out`,
    /// `unknown` (sent, no answer yet) or `dead_lettered`; null when unknown
    /// to the bridge.
    pub launchdarkly_per_bridge: Option<String>,
    /// LaunchDarkly's rejection, when the member is dead-lettered.
    pub dead_letter: Option<DeadLetter>,
    /// Whether the link still has to write the member.
    pub dirty: bool,
    /// When the link's next flush is due (ms), while the member is dirty.
    pub flush_due_at_ms: Option<i64>,
    /// Why the flush waits, when the link is blocked.
    pub blocked: Option<String>,
    /// The changes and writes that touched the member, newest first (as far
    /// as the bounded history reaches).
    pub changes: Vec<MemberChange>,
    /// LaunchDarkly's own answer, when asked for (`?launchdarkly=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launchdarkly: Option<LaunchDarklyAnswer>,
}

/// A member's desired state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DesiredState {
    /// `true`: in the segment.
    pub included: bool,
    /// The version (ms) of the change that decided it.
    pub version_ms: i64,
    /// That change still awaits a LaunchDarkly write (for some link).
    pub pending: bool,
}

/// One change (or LaunchDarkly write) that touched the member.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct MemberChange {
    /// When it arrived (a push) or when LaunchDarkly answered (a write), ms.
    pub at_ms: i64,
    /// `push`, `write` (from the audit trail) or `dead_letter`.
    pub kind: String,
    /// The source of a push.
    pub source: Option<String>,
    /// The push's delivery id, when it had one.
    pub delivery_id: Option<String>,
    /// The change's version (ms).
    pub version_ms: Option<i64>,
    /// `in` or `out`.
    pub change: Option<String>,
    /// `accepted` (still to be written), `written`, `superseded`,
    /// `cancelled`, `unchanged`, `stale`, `duplicate`, `skipped`,
    /// `dead_lettered`, or a write's `failed`/`shadowed`.
    pub outcome: String,
    /// Why, in words.
    pub detail: String,
    /// `false`: the push's record listed only its first keys; this change
    /// was matched by the member's version.
    pub listed: bool,
    /// A write's HTTP status (or `timeout`, `transport`, `not_sent`, `shadowed`).
    pub status: Option<String>,
    /// A write's LaunchDarkly `X-Request-Id`.
    pub request_id: Option<String>,
}

/// LaunchDarkly's own answer for the member (`GET …/contexts/{key}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct LaunchDarklyAnswer {
    /// When it was asked (ms).
    pub asked_at_ms: i64,
    /// The HTTP status, when LaunchDarkly answered.
    pub status: Option<u16>,
    /// On the segment's included list.
    pub included: Option<bool>,
    /// On the segment's excluded list (the bridge never writes it).
    pub excluded: Option<bool>,
    /// Whether LaunchDarkly agrees with the bridge's record (`in`/`out`).
    pub agrees_with_bridge: Option<bool>,
    /// Why there is no answer (no segment yet, LaunchDarkly's error).
    pub error: Option<String>,
}

/// One record of the cohort's history, decoded.
#[derive(Debug, Clone, PartialEq)]
struct PushRecord {
    at_ms: i64,
    delivery: String,
    /// (version, desired '1'/'0') per run.
    runs: Vec<(i64, bool)>,
    /// applied, stale, unchanged, superseded, cancelled, duplicate.
    counts: Vec<u64>,
    keys: Vec<String>,
    outcomes: Vec<char>,
    /// 1-based run of each listed key (empty: all in run 1).
    run_of: Vec<usize>,
}

impl PushRecord {
    fn parse(raw: &str) -> Option<PushRecord> {
        let (at, json) = raw.split_once(' ')?;
        let v: Value = serde_json::from_str(json).ok()?;
        // cjson writes an empty Lua table as `{}`: read it as an empty list.
        let list = |name: &str| v.get(name).and_then(Value::as_array).cloned();
        let runs = list("r")
            .unwrap_or_default()
            .iter()
            .filter_map(|r| {
                let version = r.get(0)?.as_str()?.parse().ok()?;
                Some((version, r.get(1)?.as_str()? == "1"))
            })
            .collect();
        Some(PushRecord {
            at_ms: at.parse().ok()?,
            delivery: v.get("d")?.as_str()?.to_string(),
            runs,
            counts: list("n")
                .unwrap_or_default()
                .iter()
                .map(|n| n.as_u64().unwrap_or(0))
                .collect(),
            keys: list("k")
                .unwrap_or_default()
                .iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect(),
            outcomes: v.get("o")?.as_str()?.chars().collect(),
            run_of: list("i")
                .unwrap_or_default()
                .iter()
                .map(|i| i.as_u64().unwrap_or(1) as usize)
                .collect(),
        })
    }

    fn count(&self, i: usize) -> u64 {
        self.counts.get(i).copied().unwrap_or(0)
    }

    fn duplicate(&self) -> bool {
        self.count(5) == 1
    }

    /// Fewer keys listed than the push had changes.
    fn truncated(&self) -> bool {
        !self.duplicate() && (self.keys.len() as u64) < self.count(0) + self.count(1)
    }
}

/// What the explanation is read from: one pipeline over the link's hash tag.
#[derive(Debug, Default)]
pub(super) struct Raw {
    value: Option<String>,
    slot: Option<usize>,
    dirty: bool,
    due_ms: Option<i64>,
    dead: Option<String>,
    meta: HashMap<String, String>,
    history: Vec<String>,
    audit: Vec<String>,
}

/// A push event of the member before its outcome is settled.
struct PushEvent {
    at_ms: i64,
    delivery: String,
    version: i64,
    included: bool,
    code: char,
    listed: bool,
}

fn word(included: bool) -> &'static str {
    if included {
        "in"
    } else {
        "out"
    }
}

/// Builds the explanation (pure: a table test drives it).
fn explain(link: &LinkId, key: &str, raw: Raw) -> MemberExplanation {
    let member = raw.value.as_deref().and_then(MemberValue::parse);
    let slot = raw.slot.unwrap_or(0);
    let state = member
        .as_ref()
        .map(|m| m.states.chars().nth(slot).unwrap_or('o'));
    let dead_letter = raw.dead.as_deref().map(|v| {
        let (at, reason) = v.split_once(' ').unwrap_or((v, ""));
        DeadLetter {
            key: key.to_string(),
            at_ms: at.parse().unwrap_or(0),
            reason: reason.to_string(),
        }
    });
    let records: Vec<PushRecord> = raw
        .history
        .iter()
        .filter_map(|r| PushRecord::parse(r))
        .collect();

    // The member's pushes, oldest first.
    let mut pushes = Vec::new();
    for r in records.iter().rev() {
        let mut listed = false;
        for (pos, k) in r.keys.iter().enumerate() {
            if k != key {
                continue;
            }
            listed = true;
            let run = r.run_of.get(pos).copied().unwrap_or(1);
            let (version, included) = r
                .runs
                .get(run.saturating_sub(1))
                .copied()
                .unwrap_or((0, false));
            pushes.push(PushEvent {
                at_ms: r.at_ms,
                delivery: r.delivery.clone(),
                version,
                included,
                code: r.outcomes.get(pos).copied().unwrap_or('?'),
                listed: true,
            });
        }
        // Not listed in a truncated record: the push that set the member's
        // stored value if one of its runs has that version and direction.
        if let (false, true, Some(m)) = (listed, r.truncated(), member.as_ref()) {
            if r.runs
                .iter()
                .any(|&(v, inc)| v == m.version_ms && inc == m.desired)
                && !pushes.iter().any(|p| p.listed && p.version == m.version_ms)
            {
                pushes.push(PushEvent {
                    at_ms: r.at_ms,
                    delivery: r.delivery.clone(),
                    version: m.version_ms,
                    included: m.desired,
                    code: 'a',
                    listed: false,
                });
            }
        }
    }

    // The member's acknowledged writes (time, direction), oldest first, from
    // the audit trail (which lists a write's first keys).
    let mut writes: Vec<(i64, bool)> = raw
        .audit
        .iter()
        .filter_map(|s| serde_json::from_str::<AuditEntry>(s).ok())
        .filter(|e| e.status.starts_with('2'))
        .filter_map(|e| {
            if e.add_keys.iter().any(|k| k == key) {
                Some((e.at_ms, true))
            } else if e.remove_keys.iter().any(|k| k == key) {
                Some((e.at_ms, false))
            } else {
                None
            }
        })
        .collect();
    writes.sort_by_key(|w| w.0);
    // Whether `p` went out even though `q` replaced it while pending: a
    // write in p's direction came after p and before any write the other
    // way, and before q arrived or (q being the other way) at any time, as
    // a write in flight when q arrived does.
    let written_before_replaced = |p: &PushEvent, q: &PushEvent| {
        writes
            .iter()
            .filter(|w| w.0 >= p.at_ms)
            .take_while(|w| w.1 == p.included)
            .any(|w| w.0 <= q.at_ms || q.included != p.included)
    };
    let is_accepted = |c: char| matches!(c, 'a' | 'p' | 'c' | 'u');
    let mut changes: Vec<(i64, usize, MemberChange)> = Vec::new();
    for (i, p) in pushes.iter().enumerate() {
        let next = pushes[i + 1..].iter().find(|q| is_accepted(q.code));
        let (outcome, detail) = match p.code {
            's' => ("stale", format!(
                "older than the change already stored (last writer wins{})",
                member.as_ref().map(|m| format!("; stored version {}", m.version_ms)).unwrap_or_default()
            )),
            'd' => ("duplicate", "this delivery id was applied before: nothing was applied again".to_string()),
            'c' => ("cancelled", "undid a change not yet written (a flip back): nothing to write".to_string()),
            'u' => ("unchanged", "LaunchDarkly already had it per the bridge's record: nothing to write".to_string()),
            _ => match next {
                Some(q) if matches!(q.code, 'p' | 'c') && written_before_replaced(p, q) => (
                    "written",
                    "written to LaunchDarkly (the next change arrived while its write was in flight)".to_string(),
                ),
                Some(q) if matches!(q.code, 'p' | 'c') => (
                    "superseded",
                    format!("replaced before it was written by the change of version {} ({})", q.version, word(q.included)),
                ),
                Some(q) => match &dead_letter {
                    Some(d) if d.at_ms >= p.at_ms && d.at_ms <= q.at_ms => {
                        ("dead_lettered", format!("LaunchDarkly rejected it: {}", d.reason))
                    }
                    _ => ("written", "written to LaunchDarkly before the next change arrived".to_string()),
                },
                None => match (&member, state) {
                    (Some(m), _) if m.version_ms != p.version => (
                        "accepted",
                        "later changes are past the history's reach".to_string(),
                    ),
                    (Some(_), Some('d')) => match &dead_letter {
                        Some(d) if d.at_ms < p.at_ms => (
                            "skipped",
                            format!("the member is dead-lettered on this link since {} ms: not sent until redriven", d.at_ms),
                        ),
                        Some(d) => ("dead_lettered", format!("LaunchDarkly rejected it: {}", d.reason)),
                        None => ("dead_lettered", "LaunchDarkly rejected it".to_string()),
                    },
                    (Some(m), _) if m.pending || raw.dirty => (
                        "accepted",
                        match raw.due_ms {
                            Some(due) => format!("waiting for its flush, due at {due} ms"),
                            None => "waiting for its flush".to_string(),
                        },
                    ),
                    (Some(_), _) => ("written", "acknowledged by LaunchDarkly".to_string()),
                    (None, _) => ("accepted", "the member is no longer tracked (its tombstone was swept)".to_string()),
                },
            },
        };
        let mut detail = detail;
        if p.code == 'p' {
            detail = format!("{detail}; it replaced a change still waiting to be written");
        }
        if !p.listed {
            detail = format!(
                "{detail}; matched by version (the push's record lists only its first keys)"
            );
        }
        changes.push((
            p.at_ms,
            i,
            MemberChange {
                at_ms: p.at_ms,
                kind: "push".into(),
                source: Some(link.source.clone()),
                delivery_id: (!p.delivery.is_empty()).then(|| p.delivery.clone()),
                version_ms: Some(p.version),
                change: Some(word(p.included).into()),
                outcome: outcome.into(),
                detail,
                listed: p.listed,
                status: None,
                request_id: None,
            },
        ));
    }
    let base = changes.len();
    for (j, e) in raw
        .audit
        .iter()
        .filter_map(|s| serde_json::from_str::<AuditEntry>(s).ok())
        .enumerate()
    {
        let included = if e.add_keys.iter().any(|k| k == key) {
            true
        } else if e.remove_keys.iter().any(|k| k == key) {
            false
        } else {
            continue;
        };
        let ok = e.status.starts_with('2');
        let outcome = match e.status.as_str() {
            "shadowed" => "shadowed",
            _ if ok => "written",
            _ => "failed",
        };
        let detail = match (&e.message, ok) {
            (Some(m), false) => format!("{} of {} keys: {m}", e.operation, e.adds + e.removes),
            _ => format!(
                "{} of segment {} ({} added, {} removed)",
                e.operation, e.segment, e.adds, e.removes
            ),
        };
        // The audit list is newest first: older entries sort lower.
        changes.push((
            e.at_ms,
            base + raw.audit.len() - j,
            MemberChange {
                at_ms: e.at_ms,
                kind: "write".into(),
                source: None,
                delivery_id: None,
                version_ms: None,
                change: Some(word(included).into()),
                outcome: outcome.into(),
                detail,
                listed: true,
                status: Some(e.status.clone()),
                request_id: e.request_id.clone(),
            },
        ));
    }
    if let Some(d) = &dead_letter {
        changes.push((
            d.at_ms,
            usize::MAX,
            MemberChange {
                at_ms: d.at_ms,
                kind: "dead_letter".into(),
                source: None,
                delivery_id: None,
                version_ms: None,
                change: member.as_ref().map(|m| word(m.desired).into()),
                outcome: "dead_lettered".into(),
                detail: format!(
                    "LaunchDarkly rejected the member: {}; redrive to send it again",
                    d.reason
                ),
                listed: true,
                status: None,
                request_id: None,
            },
        ));
    }
    changes.sort_by_key(|c| std::cmp::Reverse((c.0, c.1)));
    let changes: Vec<MemberChange> = changes.into_iter().map(|c| c.2).collect();

    let per_bridge = state.map(|c| {
        match c {
            'i' => "in",
            'u' => "unknown",
            'd' => "dead_lettered",
            _ => "out",
        }
        .to_string()
    });
    let blocked = raw.meta.get("blocked").filter(|b| !b.is_empty()).cloned();
    let flush_due_at_ms = raw.due_ms.filter(|_| raw.dirty);
    let summary = match &member {
        None => format!(
            "unknown to the bridge: no push of cohort {} named {key:?} (or it left and its tombstone was swept)",
            link.cohort
        ),
        Some(m) => {
            let want = format!("desired {} (version {})", word(m.desired), m.version_ms);
            let has = match state {
                Some('i') => "LaunchDarkly has it in".to_string(),
                Some('u') => "LaunchDarkly's state is unknown (a write was sent, no answer recorded yet)".to_string(),
                Some('d') => format!(
                    "dead-lettered: LaunchDarkly rejected it ({}); not sent until redriven",
                    dead_letter.as_ref().map(|d| d.reason.as_str()).unwrap_or("no reason kept")
                ),
                _ => "LaunchDarkly has it out (or was never sent it)".to_string(),
            };
            let next = match (raw.dirty, &blocked, flush_due_at_ms) {
                (false, _, _) => "nothing to write".to_string(),
                (true, Some(b), _) => format!("a write is pending, but the link is blocked: {b}"),
                (true, None, Some(due)) => format!("a write is pending, due at {due} ms"),
                (true, None, None) => "a write is pending".to_string(),
            };
            format!("{want}; {has}; {next}")
        }
    };
    MemberExplanation {
        link: link.to_string(),
        key: key.to_string(),
        known: member.is_some(),
        summary,
        desired: member.as_ref().map(|m| DesiredState {
            included: m.desired,
            version_ms: m.version_ms,
            pending: m.pending,
        }),
        launchdarkly_per_bridge: per_bridge,
        dead_letter,
        dirty: raw.dirty,
        flush_due_at_ms,
        blocked,
        changes,
        launchdarkly: None,
    }
}

/// The replies of [`Store::explain_member`]'s pipeline.
type ExplainReply = (
    Option<String>,
    Option<String>,
    bool,
    Option<f64>,
    Option<String>,
    HashMap<String, String>,
    Vec<String>,
    Vec<String>,
);

impl Store {
    /// Why `key` is (not) in the link's segment; `None` if the cohort was
    /// never linked to that destination. One pipeline of reads over the
    /// link's hash tag (Redis Cluster: one slot).
    ///
    /// `history` is the settings the pushes were recorded with: the
    /// script trims the cohort's list only every few pushes (`apply.lua`,
    /// `HIST_SLACK`), so only its first `entries` records are read, and
    /// those older than `max_age_ms` before `now_ms` are skipped.
    pub async fn explain_member(
        &self,
        link: &LinkId,
        key: &str,
        history: HistoryParams,
        now_ms: i64,
    ) -> Result<Option<MemberExplanation>, StoreError> {
        let partition = self.keys.partition(&link.source, &link.cohort);
        let (value, slot, dirty, due, dead, meta, recorded, audit): ExplainReply = redis::pipe()
            .cmd("HGET")
            .arg(self.keys.want(partition, &link.source, &link.cohort))
            .arg(key)
            .cmd("HGET")
            .arg(self.keys.cohort_meta(partition, &link.source, &link.cohort))
            .arg(format!("slot:{}", link.destination))
            .cmd("SISMEMBER")
            .arg(self.keys.dirty(partition, link))
            .arg(key)
            .cmd("ZSCORE")
            .arg(self.keys.due(partition))
            .arg(link.to_string())
            .cmd("HGET")
            .arg(self.keys.dead(partition, link))
            .arg(key)
            .cmd("HGETALL")
            .arg(self.keys.link_meta(partition, link))
            .cmd("LRANGE")
            .arg(self.keys.history(partition, &link.source, &link.cohort))
            .arg(0)
            .arg(history.entries as i64 - 1)
            .cmd("LRANGE")
            .arg(self.keys.audit(partition, link))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await?;
        let Some(slot) = slot.and_then(|s| s.parse::<usize>().ok()) else {
            return Ok(None);
        };
        // A fresh member (apply.lua) waits in the link's fresh list, not yet
        // in its dirty set: with fresh members waiting, one whose state
        // still needs a write is one of them.
        let fresh = meta
            .get("fresh")
            .is_some_and(|f| f.parse::<u64>().is_ok_and(|f| f > 0));
        let dirty = dirty
            || (fresh
                && value
                    .as_deref()
                    .and_then(MemberValue::parse)
                    .is_some_and(|v| v.needs_write(slot)));
        let oldest = now_ms.saturating_sub(history.max_age_ms.min(i64::MAX as u64) as i64);
        let history = within_age(recorded, history, oldest);
        let raw = Raw {
            value,
            slot: Some(slot),
            dirty,
            due_ms: due.map(|d| d as i64),
            dead,
            meta,
            history,
            audit,
        };
        Ok(Some(explain(link, key, raw)))
    }
}

/// The records of `recorded` no older than `oldest` (ms); all of them when
/// the history has no age limit (`max_age_ms` 0, as with history off).
fn within_age(recorded: Vec<String>, history: HistoryParams, oldest: i64) -> Vec<String> {
    if history.max_age_ms == 0 {
        return recorded;
    }
    recorded
        .into_iter()
        .filter(|r| {
            r.split_once(' ')
                .and_then(|(at, _)| at.parse::<i64>().ok())
                .is_none_or(|at| at >= oldest)
        })
        .collect()
}

#[cfg(test)]
mod tests;
