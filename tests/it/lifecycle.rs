//! A cohort's life: a link retired with `--empty`, `--delete` or
//! `--freeze` (then unfrozen), what its later pushes get (a 409, or
//! ignored), and a link whose source left the configuration (orphaned,
//! its data kept). Real Redis, the emulator and the bridge over HTTP.

use crate::support::bridge::{amplitude_body, OPERATOR_TOKEN};
use crate::support::{eventually, stack, Bridge, Emulator, WAIT};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;

const PROJECT: &str = "default";
const ENV: &str = "production";

async fn op(bridge: &Bridge, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    bridge
        .operator(method, path, Some(OPERATOR_TOKEN), body)
        .await
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

async fn members(emu: &Emulator, segment: &str) -> Option<BTreeSet<String>> {
    emu.members(PROJECT, ENV, segment)
        .await
        .map(|m| m.into_iter().collect())
}

/// Pushes `users` into `cohort` and waits until LaunchDarkly has them.
async fn converged(bridge: &Bridge, emu: &Emulator, cohort: &str, users: &[&str]) -> String {
    let segment = format!("amplitude-{cohort}");
    let (s, v) = bridge
        .amplitude(&amplitude_body(
            cohort,
            true,
            1,
            &format!("{cohort}-1"),
            users,
        ))
        .await;
    assert_eq!(s, 200, "{v}");
    let want = set(users);
    eventually("LaunchDarkly has the members", WAIT, || async {
        (members(emu, &segment).await == Some(want.clone())).then_some(())
    })
    .await;
    segment
}

async fn lifecycle(bridge: &Bridge, link: &str) -> Value {
    let (s, v) = op(bridge, Method::GET, &format!("/links/{link}"), None).await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn wait_state(bridge: &Bridge, link: &str, state: &str) -> Value {
    eventually(&format!("the link is {state}"), WAIT, || async {
        let v = lifecycle(bridge, link).await;
        (v["lifecycle"] == json!(state)).then_some(v)
    })
    .await
}

fn started(cfg: &mut crate::support::TestConfig) {
    cfg.set("server", "operator_token_env", "\"OPERATOR_TOKEN\"");
}

#[tokio::test]
async fn empty_removes_every_member_and_keeps_the_segment_then_refuses_pushes() {
    let (_redis, emu, mut cfg) = stack();
    started(&mut cfg);
    let bridge = Bridge::start(&cfg).await;
    let segment = converged(&bridge, &emu, "em", &["u1", "u2", "u3"]).await;
    let link = "production:amplitude:em";
    assert_eq!(lifecycle(&bridge, link).await["lifecycle"], json!("active"));

    let (s, v) = op(
        &bridge,
        Method::POST,
        &format!("/links/{link}/retire"),
        Some(json!({"mode": "empty"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (&v["lifecycle"], &v["on_push"]),
        (&json!("emptying"), &json!("refuse"))
    );
    wait_state(&bridge, link, "emptied").await;
    assert_eq!(
        members(&emu, &segment).await,
        Some(BTreeSet::new()),
        "the segment still exists, empty"
    );

    // A later push of the cohort is refused, naming the link and its state.
    let (s, v) = bridge
        .amplitude(&amplitude_body("em", true, 5, "em-5", &["u9"]))
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], json!("link_retired"), "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(link) && msg.contains("emptied"), "{v}");
    assert_eq!(members(&emu, &segment).await, Some(BTreeSet::new()));
}

#[tokio::test]
async fn delete_deletes_the_segment_and_ignored_pushes_are_counted() {
    let (_redis, emu, mut cfg) = stack();
    started(&mut cfg);
    let bridge = Bridge::start(&cfg).await;
    let segment = converged(&bridge, &emu, "del", &["u1", "u2"]).await;
    let link = "production:amplitude:del";

    let (s, v) = op(
        &bridge,
        Method::POST,
        &format!("/links/{link}/retire"),
        Some(json!({"mode": "delete", "on_push": "ignore"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    wait_state(&bridge, link, "deleted").await;
    assert!(
        emu.segment(PROJECT, ENV, &segment).await.is_none(),
        "the segment is gone"
    );

    let (s, v) = bridge
        .amplitude(&amplitude_body("del", true, 5, "del-5", &["u9"]))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["accepted"], json!(0), "{v}");
    let v = lifecycle(&bridge, link).await;
    assert_eq!(v["meta"]["ignored_pushes"], json!("1"), "{v}");
    assert_eq!(v["dirty"], json!(0), "{v}");
    assert!(
        emu.segment(PROJECT, ENV, &segment).await.is_none(),
        "not re-created"
    );

    // Retiring it again is a conflict, in JSON.
    let (s, v) = op(
        &bridge,
        Method::POST,
        &format!("/links/{link}/retire"),
        Some(json!({"mode": "empty"})),
    )
    .await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (409, &json!("link_retired")),
        "{v}"
    );
}

#[tokio::test]
async fn freeze_stops_every_write_and_unfreeze_sends_the_backlog() {
    let (_redis, emu, mut cfg) = stack();
    started(&mut cfg);
    let bridge = Bridge::start(&cfg).await;
    let segment = converged(&bridge, &emu, "fr", &["u1"]).await;
    let link = "production:amplitude:fr";

    let (s, v) = op(
        &bridge,
        Method::POST,
        &format!("/links/{link}/retire"),
        Some(json!({"mode": "freeze"})),
    )
    .await;
    assert_eq!((s, &v["on_push"]), (200, &json!("accept")), "{v}");
    let before = emu.membership_requests().await.len();
    let (s, v) = bridge
        .amplitude(&amplitude_body("fr", true, 5, "fr-5", &["u2", "u3"]))
        .await;
    assert_eq!(s, 200, "{v}");
    // The push is kept as a backlog; the flusher takes the link off its due set.
    eventually(
        "the frozen link's backlog is kept, not due",
        WAIT,
        || async {
            let v = lifecycle(&bridge, link).await;
            (v["dirty"] == json!(2) && v["due_at_ms"].is_null()).then_some(())
        },
    )
    .await;
    assert_eq!(
        emu.membership_requests().await.len(),
        before,
        "nothing written while frozen"
    );
    assert_eq!(members(&emu, &segment).await, Some(set(&["u1"])));

    let (s, v) = op(
        &bridge,
        Method::POST,
        &format!("/links/{link}/unfreeze"),
        None,
    )
    .await;
    assert_eq!((s, &v["lifecycle"]), (200, &json!("active")), "{v}");
    eventually("the backlog reaches LaunchDarkly", WAIT, || async {
        (members(&emu, &segment).await == Some(set(&["u1", "u2", "u3"]))).then_some(())
    })
    .await;
    let (s, v) = op(
        &bridge,
        Method::POST,
        &format!("/links/{link}/unfreeze"),
        None,
    )
    .await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (409, &json!("link_retired")),
        "{v}"
    );
}

#[tokio::test]
async fn a_link_whose_source_left_the_config_is_orphaned_and_keeps_its_data() {
    let (_redis, emu, mut cfg) = stack();
    started(&mut cfg);
    let bridge = Bridge::start(&cfg).await;
    let segment = converged(&bridge, &emu, "orph", &["u1", "u2"]).await;
    let link = "production:amplitude:orph";
    bridge.stop().await;

    // The source now feeds only staging: its production link is orphaned.
    cfg.amplitude_destinations = r#"["staging"]"#.into();
    let bridge = Bridge::start(&cfg).await;
    let v = lifecycle(&bridge, link).await;
    assert_eq!(
        (&v["lifecycle"], &v["configured"]),
        (&json!("orphaned"), &json!(false)),
        "{v}"
    );
    assert_eq!(v["tracked_members"], json!(2), "{v}");
    let (_, list) = op(&bridge, Method::GET, "/links", None).await;
    let listed = list["links"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["link"] == json!(link)).cloned());
    assert_eq!(
        listed.map(|x| x["lifecycle"].clone()),
        Some(json!("orphaned")),
        "{list}"
    );

    // The destination is still configured: the operator can empty it.
    let (s, v) = op(
        &bridge,
        Method::POST,
        &format!("/links/{link}/retire"),
        Some(json!({"mode": "empty"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    wait_state(&bridge, link, "emptied").await;
    assert_eq!(members(&emu, &segment).await, Some(BTreeSet::new()));
}

/// A push of a cohort with two links, one of them retired: per link. The
/// retired link gets nothing and is named in the 200's `refused_links`; the
/// other link gets the push. Only when no link takes a push is it a 409.
#[tokio::test]
async fn a_push_reaches_the_links_that_accept_it_and_skips_the_retired_one() {
    let (_redis, emu, mut cfg) = stack();
    started(&mut cfg);
    cfg.amplitude_destinations = r#"["production", "staging"]"#.into();
    let bridge = Bridge::start(&cfg).await;
    let segment = converged(&bridge, &emu, "two", &["u1"]).await;
    let prod = "production:amplitude:two";
    let staging = "staging:amplitude:two";
    eventually("staging has u1", WAIT, || async {
        (emu.members(PROJECT, "staging", &segment).await == Some(vec!["u1".to_string()]))
            .then_some(())
    })
    .await;
    let (s, v) = op(
        &bridge,
        Method::POST,
        &format!("/links/{prod}/retire"),
        Some(json!({"mode": "freeze", "on_push": "refuse"})),
    )
    .await;
    assert_eq!((s, &v["on_push"]), (200, &json!("refuse")), "{v}");

    let (s, v) = bridge
        .amplitude(&amplitude_body("two", true, 5, "two-5", &["u2"]))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["accepted"], json!(1), "{v}");
    assert_eq!(
        v["refused_links"],
        json!([format!("{prod} (frozen)")]),
        "{v}"
    );
    eventually("staging gets the push", WAIT, || async {
        let m: Option<BTreeSet<String>> = emu
            .members(PROJECT, "staging", &segment)
            .await
            .map(|m| m.into_iter().collect());
        (m == Some(set(&["u1", "u2"]))).then_some(())
    })
    .await;
    let v = lifecycle(&bridge, prod).await;
    assert_eq!(v["dirty"], json!(0), "the refusing link got nothing: {v}");

    // Once the other link ignores pushes too, no link takes one: a 409.
    let (s, v) = op(
        &bridge,
        Method::POST,
        &format!("/links/{staging}/retire"),
        Some(json!({"mode": "freeze", "on_push": "ignore"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = bridge
        .amplitude(&amplitude_body("two", true, 6, "two-6", &["u3"]))
        .await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (409, &json!("link_retired")),
        "{v}"
    );
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(prod) && !msg.contains(staging), "{v}");
    assert_eq!(lifecycle(&bridge, staging).await["dirty"], json!(0));
}

/// An Amplitude push of `users` into `cohort` under the name `name`.
async fn push_named(bridge: &Bridge, cohort: &str, name: &str, t: i64, users: &[&str]) {
    let mut body = amplitude_body(cohort, true, t, &format!("{cohort}-{t}"), users);
    body["cohort_name"] = json!(name);
    let (s, v) = bridge.amplitude(&body).await;
    assert_eq!(s, 200, "{v}");
}

/// The emulator's `PATCH` requests (renames), in arrival order.
async fn patches(emu: &Emulator) -> Vec<Value> {
    emu.requests()
        .await
        .into_iter()
        .filter(|r| r["route"] == json!("patch"))
        .collect()
}

async fn segment_name(emu: &Emulator, segment: &str) -> Option<String> {
    emu.segment(PROJECT, ENV, segment)
        .await
        .and_then(|s| s["name"].as_str().map(str::to_string))
}

async fn audit_operations(bridge: &Bridge, link: &str) -> Vec<Value> {
    let (s, v) = op(bridge, Method::GET, &format!("/links/{link}/audit"), None).await;
    assert_eq!(s, 200, "{v}");
    v["entries"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn rename_reaches_launchdarkly_once_per_change_of_name() {
    let (_redis, emu, mut cfg) = stack();
    started(&mut cfg);
    let bridge = Bridge::start(&cfg).await;
    let segment = converged(&bridge, &emu, "rn", &["u1"]).await;
    let link = "production:amplitude:rn";
    assert_eq!(
        segment_name(&emu, &segment).await.as_deref(),
        Some("Cohort rn")
    );

    // The same name again: no PATCH.
    push_named(&bridge, "rn", "Cohort rn", 2, &["u2"]).await;
    eventually("u2 written", WAIT, || async {
        (members(&emu, &segment).await == Some(set(&["u1", "u2"]))).then_some(())
    })
    .await;
    assert!(patches(&emu).await.is_empty(), "same name, no PATCH");

    // A new name: the segment follows, with one PATCH, even when the new name
    // comes with many pushes (before and after the PATCH).
    for t in 3..6 {
        push_named(&bridge, "rn", "Power users", t, &[&format!("a{t}")]).await;
    }
    eventually("the segment is renamed", WAIT, || async {
        (segment_name(&emu, &segment).await.as_deref() == Some("Power users")).then_some(())
    })
    .await;
    for t in 6..10 {
        push_named(&bridge, "rn", "Power users", t, &[&format!("a{t}")]).await;
    }
    eventually("the later pushes are written", WAIT, || async {
        let m = members(&emu, &segment).await.unwrap_or_default();
        m.contains("a9").then_some(())
    })
    .await;
    let p = patches(&emu).await;
    assert_eq!(p.len(), 1, "one PATCH per change of name: {p:?}");
    let renames: Vec<Value> = audit_operations(&bridge, link)
        .await
        .into_iter()
        .filter(|e| e["operation"] == json!("rename"))
        .collect();
    assert_eq!(renames.len(), 1, "{renames:?}");
    assert_eq!(renames[0]["status"], json!("200"), "{renames:?}");
    let v = lifecycle(&bridge, link).await;
    assert_eq!(v["meta"]["segment_name"], json!("Power users"), "{v}");
}

#[tokio::test]
async fn rename_after_a_500_is_retried_and_a_400_is_reported() {
    let (_redis, emu, mut cfg) = stack();
    started(&mut cfg);
    let bridge = Bridge::start(&cfg).await;
    let segment = converged(&bridge, &emu, "rr", &["u1"]).await;
    let link = "production:amplitude:rr";

    emu.fault(json!({"kind": "status", "status": 500, "route": "patch", "count": 1}))
        .await;
    push_named(&bridge, "rr", "Renamed", 2, &["u1"]).await;
    eventually("the rename lands after the 500", WAIT, || async {
        (segment_name(&emu, &segment).await.as_deref() == Some("Renamed")).then_some(())
    })
    .await;
    let statuses: Vec<Value> = patches(&emu)
        .await
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(statuses, vec![json!(500), json!(200)], "retried once");

    // A 400 is final: the link's last error and the audit trail say so,
    // nothing is retried, and the name stays.
    emu.fault(
        json!({"kind": "status", "status": 400, "route": "patch", "count": 1,
        "message": "name not allowed"}),
    )
    .await;
    push_named(&bridge, "rr", "Refused name", 3, &["u3"]).await;
    let v = eventually("the 400 is on the link", WAIT, || async {
        let v = lifecycle(&bridge, link).await;
        v["meta"]["rename_error"]
            .as_str()
            .is_some_and(|e| e.contains("rename") && e.contains("400"))
            .then_some(v)
    })
    .await;
    eventually("the members still flow", WAIT, || async {
        (members(&emu, &segment).await == Some(set(&["u1", "u3"]))).then_some(())
    })
    .await;
    assert_eq!(patches(&emu).await.len(), 3, "the 400 is not retried: {v}");
    assert_eq!(
        segment_name(&emu, &segment).await.as_deref(),
        Some("Renamed")
    );
    let audited = audit_operations(&bridge, link).await;
    assert!(
        audited
            .iter()
            .any(|e| e["operation"] == json!("rename") && e["status"] == json!("400")),
        "{audited:?}"
    );
}
