//! Operator commands on the command line (`links`, `dead-letters`, `redrive`,
//! `resync`, `reconcile`, `why`): the same store calls as the operator API, straight against
//! Redis, so they work while no bridge is running. Each returns the text to print.

use crate::clock::now_ms;
use crate::config::Settings;
use crate::store::{LinkId, Store};
use anyhow::{anyhow, Context};
use std::fmt::Write;

fn store(settings: &Settings) -> anyhow::Result<Store> {
    Store::connect(&settings.redis).context("connecting to Redis")
}

fn link(raw: &str) -> anyhow::Result<LinkId> {
    LinkId::parse(raw).ok_or_else(|| {
        anyhow!("{raw:?} is not a link id: expected <destination>:<source>:<cohort>")
    })
}

/// One line per link: id, segment, backlog, dead letters, last flush, error.
pub async fn links(settings: &Settings) -> anyhow::Result<String> {
    let store = store(settings)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:<30} {:>8} {:>6} {:>14}  last error",
        "link", "segment", "backlog", "dead", "last flush ms"
    );
    for l in store.links().await? {
        let Some(s) = store.link_status(&l).await? else {
            continue;
        };
        let get = |k: &str| s.meta.get(k).map(String::as_str).unwrap_or("");
        let error = match (get("blocked"), get("last_error")) {
            ("", e) => e.to_string(),
            (b, _) => format!("blocked: {b}"),
        };
        let _ = writeln!(
            out,
            "{:<40} {:<30} {:>8} {:>6} {:>14}  {}",
            l.to_string(),
            get("segment_key"),
            s.dirty,
            s.dead_letters,
            get("last_flush_ms"),
            error
        );
        if let Some(r) = s.reconcile {
            let _ = writeln!(out, "  {}", reconcile_line(&r));
        }
        if let Some(v) = s.verified {
            let _ = writeln!(out, "  {}", verified_line(&v));
        }
    }
    Ok(out)
}

/// Sampled verification's report (`flush.verify_share`), under the link.
fn verified_line(v: &crate::store::SampleReport) -> String {
    format!(
        "sampled at {} ms: checked {}, missing {}, extra {}, repaired {}, changed {}, failed {}",
        v.last_ms, v.checked, v.missing, v.extra, v.repaired, v.changed, v.failed
    )
}

fn reconcile_line(r: &crate::store::ReconcileReport) -> String {
    format!(
        "reconciled at {} ms: checked {}, missing {}, extra {}, repaired {}",
        r.last_reconciled_ms, r.checked, r.missing, r.extra, r.repaired
    )
}

/// Reconciles a link with LaunchDarkly's export (see `reconcile`): from this
/// process, under `launchdarkly.requests_per_second` and the shared 429
/// pause. The differences are marked dirty; a running bridge flushes them.
pub async fn reconcile(settings: &Settings, raw_link: &str) -> anyhow::Result<String> {
    use crate::launchdarkly::{LdClient, Throttle};
    let store = store(settings)?;
    let l = link(raw_link)?;
    let ld = LdClient::new(&settings.launchdarkly, &settings.ld_token)?;
    let throttle = std::sync::Arc::new(Throttle::new(settings.launchdarkly.requests_per_second));
    let settings = std::sync::Arc::new(settings.clone());
    let o = crate::reconcile::Reconciler::new(settings, store, ld, throttle)
        .run(&l)
        .await?;
    let report = crate::store::ReconcileReport {
        last_reconciled_ms: o.last_reconciled_ms,
        checked: o.counts.checked,
        missing: o.counts.missing,
        extra: o.counts.extra,
        repaired: o.counts.repaired,
    };
    Ok(format!("{l}: {}\n", reconcile_line(&report)))
}

/// Why a member is (not) in the link's segment (see `store::history`): as
/// text, or as the operator API's JSON with `json`. With `ask_launchdarkly`,
/// LaunchDarkly's own answer too, read from this process under
/// `launchdarkly.requests_per_second` and the shared 429 pause.
pub async fn why(
    settings: &Settings,
    raw_link: &str,
    key: &str,
    ask_launchdarkly: bool,
    json: bool,
) -> anyhow::Result<String> {
    use crate::launchdarkly::{LdClient, Throttle};
    let store = store(settings)?;
    let l = link(raw_link)?;
    let ld = LdClient::new(&settings.launchdarkly, &settings.ld_token)?;
    let throttle = std::sync::Arc::new(Throttle::new(settings.launchdarkly.requests_per_second));
    let settings = std::sync::Arc::new(settings.clone());
    let e = crate::reconcile::Reconciler::new(settings, store, ld, throttle)
        .explain_member(&l, key, ask_launchdarkly)
        .await?
        .ok_or_else(|| anyhow!("no link {l}: the cohort was never pushed for that destination"))?;
    if json {
        return Ok(format!("{}\n", serde_json::to_string_pretty(&e)?));
    }
    let mut out = String::new();
    let _ = writeln!(out, "{l} {key:?}: {}", e.summary);
    if let Some(d) = &e.desired {
        let _ = writeln!(
            out,
            "desired: {} (version {}){}",
            if d.included { "in" } else { "out" },
            d.version_ms,
            if d.pending { ", not yet written" } else { "" }
        );
    }
    if let Some(s) = &e.launchdarkly_per_bridge {
        let _ = writeln!(out, "LaunchDarkly per the bridge: {s}");
    }
    if let Some(d) = &e.dead_letter {
        let _ = writeln!(out, "dead letter: at {} ms: {}", d.at_ms, d.reason);
    }
    let _ = writeln!(
        out,
        "dirty: {}{}",
        if e.dirty { "yes" } else { "no" },
        e.flush_due_at_ms
            .map(|d| format!(", flush due at {d} ms"))
            .unwrap_or_default()
    );
    if let Some(b) = &e.blocked {
        let _ = writeln!(out, "blocked: {b}");
    }
    let _ = writeln!(out, "changes, newest first:");
    let _ = writeln!(
        out,
        "  at_ms\tkind\tdelivery\tversion\tchange\toutcome\tdetail"
    );
    for c in &e.changes {
        let _ = writeln!(
            out,
            "  {}\t{}\t{}\t{}\t{}\t{}\t{}",
            c.at_ms,
            c.kind,
            c.delivery_id
                .as_deref()
                .or(c.request_id.as_deref())
                .unwrap_or("-"),
            c.version_ms
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            c.change.as_deref().unwrap_or("-"),
            c.outcome,
            c.detail
        );
    }
    if e.changes.is_empty() {
        let _ = writeln!(out, "  (none in the history)");
    }
    if let Some(a) = &e.launchdarkly {
        match (a.included, &a.error) {
            (Some(inc), _) => {
                let _ = writeln!(
                    out,
                    "LaunchDarkly says: {} (status {}){}",
                    if inc { "included" } else { "not included" },
                    a.status.unwrap_or(0),
                    match a.agrees_with_bridge {
                        Some(true) => ", as the bridge recorded",
                        Some(false) => ", NOT as the bridge recorded",
                        None => "",
                    }
                );
            }
            (None, err) => {
                let _ = writeln!(
                    out,
                    "LaunchDarkly says: no answer: {}",
                    err.as_deref().unwrap_or("unknown")
                );
            }
        }
    }
    Ok(out)
}

/// Every dead letter of a link: key, when, LaunchDarkly's message.
pub async fn dead_letters(settings: &Settings, raw_link: &str) -> anyhow::Result<String> {
    let store = store(settings)?;
    let l = link(raw_link)?;
    let mut out = String::new();
    let mut cursor = "0".to_string();
    loop {
        let (next, letters) = store.dead_letters(&l, &cursor, 500).await?;
        for d in letters {
            let _ = writeln!(out, "{}\t{}\t{}", d.key, d.at_ms, d.reason);
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    Ok(out)
}

/// The link's audit trail, newest first: time (ms), operation, status,
/// adds, removes, request id or message, and the keys kept.
pub async fn audit(
    settings: &Settings,
    raw_link: &str,
    since: Option<&str>,
    limit: usize,
) -> anyhow::Result<String> {
    let store = store(settings)?;
    let l = link(raw_link)?;
    let since = match since {
        None => None,
        Some(raw) => Some(crate::store::parse_since(raw).ok_or_else(|| {
            anyhow!("--since {raw:?} is neither Unix milliseconds nor an RFC 3339 time")
        })?),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "at_ms\toperation\tstatus\tadds\tremoves\trequest_id/message\tkeys"
    );
    for e in store.audit(&l, since, limit.max(1)).await? {
        let id = e
            .request_id
            .clone()
            .or(e.message.clone())
            .unwrap_or_default();
        let keys: Vec<String> = e
            .add_keys
            .iter()
            .map(|k| format!("+{k}"))
            .chain(e.remove_keys.iter().map(|k| format!("-{k}")))
            .collect();
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            e.at_ms,
            e.operation,
            e.status,
            e.adds,
            e.removes,
            id,
            keys.join(",")
        );
    }
    Ok(out)
}

/// Sends the named dead letters (all when `keys` is empty) again.
pub async fn redrive(
    settings: &Settings,
    raw_link: &str,
    keys: &[String],
) -> anyhow::Result<String> {
    let store = store(settings)?;
    let l = link(raw_link)?;
    let keys = (!keys.is_empty()).then_some(keys);
    let n = store.redrive(&l, keys, now_ms()).await?;
    Ok(format!("{l}: {n} dead letter(s) redriven\n"))
}

/// Retires a link (`store::lifecycle`); a running bridge carries it out.
pub async fn retire(
    settings: &Settings,
    raw_link: &str,
    mode: crate::store::RetireMode,
    on_push: Option<&str>,
) -> anyhow::Result<String> {
    use crate::store::OnPush;
    let on_push = match on_push {
        None => mode.default_on_push(),
        Some("accept") => OnPush::Accept,
        Some("refuse") => OnPush::Refuse,
        Some("ignore") => OnPush::Ignore,
        Some(other) => {
            return Err(anyhow!(
                "--on-push {other:?} is not one of accept, refuse, ignore"
            ))
        }
    };
    let store = store(settings)?;
    let l = link(raw_link)?;
    let state = store.retire(&l, mode, on_push, now_ms()).await?;
    Ok(format!(
        "{l}: {state} (later pushes: {})\n",
        on_push.as_str()
    ))
}

/// Resumes a frozen link.
pub async fn unfreeze(settings: &Settings, raw_link: &str) -> anyhow::Result<String> {
    let store = store(settings)?;
    let l = link(raw_link)?;
    store.unfreeze(&l, now_ms()).await?;
    Ok(format!("{l}: active again; its backlog will be sent\n"))
}

/// Marks every member of the link for rewriting.
pub async fn resync(settings: &Settings, raw_link: &str) -> anyhow::Result<String> {
    let store = store(settings)?;
    let l = link(raw_link)?;
    match store.resync(&l, now_ms(), 1000).await? {
        Some(n) => Ok(format!("{l}: {n} member(s) will be sent again\n")),
        None => Err(anyhow!(
            "no link {l}: the cohort was never pushed for that destination"
        )),
    }
}
