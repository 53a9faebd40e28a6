//! Shadow mode (`launchdarkly.mode = "shadow"`, or one destination's
//! `mode`): pushes are accepted and flushed as usual, but nothing reaches
//! LaunchDarkly: each write the flusher would have made is in the audit
//! trail as `shadowed` and counted in `cohort_bridge_ld_requests_total`.
//! Restarted live on the same Redis, the bridge sends the backlog of the
//! shadow period at once, coalesced (only each member's final state).

use crate::accounting::metric;
use crate::support::bridge::{amplitude_body, OPERATOR_TOKEN};
use crate::support::{converge, eventually, stack, Bridge, TestConfig, WAIT};
use cohort_bridge::config::{self, Settings};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn with_operator(cfg: &mut TestConfig) {
    cfg.set("server", "operator_token_env", "\"OPERATOR_TOKEN\"");
}

/// The settings of `cfg` with `mode = "<mode>"` added to `[destinations.<dest>]`.
fn with_destination_mode(cfg: &TestConfig, dest: &str, mode: &str) -> Settings {
    let header = format!("[destinations.{dest}]\n");
    let toml = cfg.toml();
    assert!(toml.contains(&header), "{toml}");
    let toml = toml.replace(&header, &format!("{header}mode = {mode:?}\n"));
    config::from_toml_str(&toml, &TestConfig::secrets()).expect("valid config")
}

async fn op(bridge: &Bridge, method: Method, path: &str) -> (u16, Value) {
    bridge
        .operator(method, path, Some(OPERATOR_TOKEN), None)
        .await
}

/// The link's audit trail, newest first.
async fn audit(bridge: &Bridge, link: &str) -> Vec<Value> {
    let (s, v) = op(
        bridge,
        Method::GET,
        &format!("/links/{link}/audit?limit=1000"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["entries"].as_array().expect("entries").clone()
}

async fn push(bridge: &Bridge, cohort: &str, enter: bool, version: i64, users: &[&str]) {
    let id = format!("{cohort}-{version}");
    let (s, v) = bridge
        .amplitude(&amplitude_body(cohort, enter, version, &id, users))
        .await;
    assert_eq!(s, 200, "{v}");
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    k.sort();
    k
}

async fn shadowed_metric(bridge: &Bridge, operation: &str) -> u64 {
    let (_, text) = bridge.get("/metrics").await;
    metric(
        &text,
        "cohort_bridge_ld_requests_total",
        &[("operation", operation), ("status", "shadowed")],
    )
}

/// Waits until the link has nothing dirty (every change acknowledged).
async fn settled(bridge: &Bridge, link: &str) {
    eventually(&format!("{link} has nothing dirty"), WAIT, || async {
        let (_, v) = op(bridge, Method::GET, &format!("/links/{link}")).await;
        (v["dirty"] == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn shadow_mode_makes_no_launchdarkly_request_then_live_mode_converges() {
    let (redis, emu, mut cfg) = stack();
    with_operator(&mut cfg);
    cfg.set("launchdarkly", "mode", "\"shadow\"");
    cfg.set("launchdarkly", "max_keys_per_request", "2");
    let bridge = Bridge::start(&cfg).await;
    let cohort = "sh";
    let link = "production:amplitude:sh";
    let segment = "amplitude-sh";

    push(
        &bridge,
        cohort,
        true,
        1,
        &["u1", "u2", "u3", "u4", "u5", "u6"],
    )
    .await;
    let write = eventually("a shadowed write is audited", WAIT, || async {
        audit(&bridge, link)
            .await
            .into_iter()
            .find(|e| e["operation"] == json!("update_membership"))
    })
    .await;
    assert_eq!(write["status"], json!("shadowed"), "{write}");
    assert_eq!(write["segment"], json!(segment), "{write}");
    // The write a live flush would send first: one batch of the six adds.
    assert_eq!((&write["adds"], &write["removes"]), (&json!(2), &json!(0)));
    let all: BTreeSet<String> = ["u1", "u2", "u3", "u4", "u5", "u6"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for k in keys(&write["add_keys"]) {
        assert!(all.contains(&k), "{write}");
    }
    let note = write["message"].as_str().unwrap_or_default();
    assert!(note.contains("6 members pending"), "{write}");
    assert!(note.contains("3 request(s)"), "{write}");
    let entries = audit(&bridge, link).await;
    assert!(
        entries
            .iter()
            .any(|e| e["operation"] == json!("create_segment")
                && e["status"] == json!("shadowed")
                && e["segment"] == json!(segment)),
        "{entries:?}"
    );
    assert!(shadowed_metric(&bridge, "update_membership").await >= 1);
    assert!(shadowed_metric(&bridge, "create_segment").await >= 1);

    // Flips during the shadow period: u2 leaves (never written, so it costs
    // nothing), u1 leaves and comes back, u3 too.
    push(&bridge, cohort, false, 2, &["u1", "u2"]).await;
    push(&bridge, cohort, true, 3, &["u1"]).await;
    push(&bridge, cohort, false, 4, &["u3"]).await;
    push(&bridge, cohort, true, 5, &["u3"]).await;

    let (s, v) = op(&bridge, Method::GET, &format!("/links/{link}")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["mode"], json!("shadow"), "{v}");
    assert_eq!(v["dirty"], json!(5), "{v}");
    let (s, v) = op(&bridge, Method::GET, "/links").await;
    assert_eq!(s, 200, "{v}");
    assert!(v.to_string().contains("\"mode\":\"shadow\""), "{v}");

    // Not one request of any kind reached LaunchDarkly.
    assert_eq!(emu.requests().await, Vec::<Value>::new());
    assert_eq!(emu.segments().await, Vec::<Value>::new());
    bridge.stop().await;

    // Live, on the same Redis: only the final state, in full batches.
    cfg.set("launchdarkly", "mode", "\"live\"");
    let bridge = Bridge::start(&cfg).await;
    let want = ["u1", "u3", "u4", "u5", "u6"];
    converge(&emu, "production", segment, &want).await;
    settled(&bridge, link).await;
    let requests = emu.requests().await;
    let creates = requests
        .iter()
        .filter(|r| r["route"] != json!("contexts"))
        .count();
    let writes = emu.membership_requests().await;
    // One creation, then ceil(5 / 2) = 3 membership writes.
    assert_eq!((creates, writes.len()), (1, 3), "{requests:?}");
    let mut sent = Vec::new();
    for w in &writes {
        let body = &w["body"];
        assert_eq!(
            keys(&body["included"]["remove"]),
            Vec::<String>::new(),
            "{w}"
        );
        sent.extend(keys(&body["included"]["add"]));
    }
    sent.sort();
    assert_eq!(sent, want, "each member once, with its final state");
    let (_, v) = op(&bridge, Method::GET, &format!("/links/{link}")).await;
    assert_eq!(v["mode"], json!("live"), "{v}");
    bridge.stop().await;
    drop(redis);
}

#[tokio::test]
async fn shadow_after_live_audits_removals_and_reads_nothing() {
    let (_redis, emu, mut cfg) = stack();
    with_operator(&mut cfg);
    let bridge = Bridge::start(&cfg).await;
    let cohort = "back";
    let link = "production:amplitude:back";
    let segment = "amplitude-back";
    push(&bridge, cohort, true, 1, &["u1", "u2"]).await;
    converge(&emu, "production", segment, &["u1", "u2"]).await;
    settled(&bridge, link).await;
    bridge.stop().await;
    let seen = emu.requests().await.len();

    cfg.set("launchdarkly", "mode", "\"shadow\"");
    // Sampled verification at its most: a shadow destination is not read back either.
    cfg.set("flush", "verify_share", "1.0");
    let bridge = Bridge::start(&cfg).await;
    push(&bridge, cohort, false, 2, &["u2"]).await;
    push(&bridge, cohort, true, 3, &["u3"]).await;
    let write = eventually(
        "the shadowed write names u3 in and u2 out",
        WAIT,
        || async {
            audit(&bridge, link).await.into_iter().find(|e| {
                e["status"] == json!("shadowed")
                    && keys(&e["add_keys"]) == ["u3"]
                    && keys(&e["remove_keys"]) == ["u2"]
            })
        },
    )
    .await;
    assert_eq!(write["operation"], json!("update_membership"), "{write}");
    // The segment exists: its creation is not audited again.
    assert!(!audit(&bridge, link)
        .await
        .iter()
        .any(|e| e["operation"] == json!("create_segment") && e["status"] == json!("shadowed")),);
    // A reconcile would read LaunchDarkly: refused.
    let (s, v) = op(&bridge, Method::POST, &format!("/links/{link}/reconcile")).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], json!("shadow_mode"), "{v}");
    // Nor does explaining a member ask LaunchDarkly.
    let (s, v) = op(
        &bridge,
        Method::GET,
        &format!("/links/{link}/members/u1?launchdarkly=true"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        emu.requests().await.len(),
        seen,
        "nothing was sent in shadow mode"
    );
    assert_eq!(
        emu.members("default", "production", segment).await,
        Some(vec!["u1".to_string(), "u2".to_string()])
    );
    bridge.stop().await;

    cfg.set("launchdarkly", "mode", "\"live\"");
    cfg.set("flush", "verify_share", "0");
    let bridge = Bridge::start(&cfg).await;
    converge(&emu, "production", segment, &["u1", "u3"]).await;
    bridge.stop().await;
}

#[tokio::test]
async fn one_destination_goes_live_while_the_other_stays_in_shadow() {
    let (_redis, emu, mut cfg) = stack();
    with_operator(&mut cfg);
    cfg.amplitude_destinations = r#"["production", "staging"]"#.into();
    cfg.set("launchdarkly", "mode", "\"shadow\"");
    let bridge = Bridge::start_settings(with_destination_mode(&cfg, "staging", "live")).await;
    push(&bridge, "two", true, 1, &["u1", "u2"]).await;
    converge(&emu, "staging", "amplitude-two", &["u1", "u2"]).await;
    let shadowed = eventually("production's write is shadowed", WAIT, || async {
        audit(&bridge, "production:amplitude:two")
            .await
            .into_iter()
            .find(|e| e["operation"] == json!("update_membership"))
    })
    .await;
    assert_eq!(shadowed["status"], json!("shadowed"), "{shadowed}");
    assert_eq!(keys(&shadowed["add_keys"]), ["u1", "u2"]);
    let live = audit(&bridge, "staging:amplitude:two").await;
    assert!(
        live.iter().all(|e| e["status"] != json!("shadowed")),
        "{live:?}"
    );
    // Every request went to staging.
    let requests = emu.requests().await;
    assert!(!requests.is_empty());
    for r in &requests {
        let path = r["path"].as_str().unwrap_or_default();
        assert!(path.contains("/default/staging"), "{r}");
    }
    assert_eq!(
        emu.segment("default", "production", "amplitude-two").await,
        None
    );
    let modes = |v: &Value| v["mode"].clone();
    let (_, p) = op(&bridge, Method::GET, "/links/production:amplitude:two").await;
    let (_, s) = op(&bridge, Method::GET, "/links/staging:amplitude:two").await;
    assert_eq!((modes(&p), modes(&s)), (json!("shadow"), json!("live")));
    bridge.stop().await;
}
