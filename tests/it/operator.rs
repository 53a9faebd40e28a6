//! The operator API and commands: poison members isolated, listed and
//! redriven; a link resynced in full; the token guarding all of it.

use crate::support::bridge::{amplitude_body, OPERATOR_TOKEN};
use crate::support::emulator::TOKEN;
use crate::support::{eventually, stack, Bridge, TestConfig, WAIT};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;

const SEGMENT: &str = "amplitude-poison";
const LINK: &str = "production:amplitude:poison";

fn with_operator(cfg: &mut TestConfig) {
    cfg.set("server", "operator_token_env", "\"OPERATOR_TOKEN\"");
}

async fn members(emu: &crate::support::Emulator, key: &str) -> BTreeSet<String> {
    emu.members("default", "production", key)
        .await
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn keys_of(v: &Value) -> BTreeSet<String> {
    v["dead_letters"]
        .as_array()
        .expect("dead_letters array")
        .iter()
        .map(|d| d["key"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn poison_members_are_isolated_listed_with_the_reason_and_redriven() {
    let (_redis, emu, mut cfg) = stack();
    with_operator(&mut cfg);
    let bridge = Bridge::start(&cfg).await;
    emu.configure(json!({"reject_keys": ["u03", "u11", "u17"]}))
        .await;
    let users: Vec<String> = (0..20).map(|i| format!("u{i:02}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let (status, _) = bridge
        .amplitude(&amplitude_body("poison", true, 1, "p1", &refs))
        .await;
    assert_eq!(status, 200);

    // Everything but the three offenders reaches LaunchDarkly.
    let good: BTreeSet<String> = users
        .iter()
        .filter(|u| !["u03", "u11", "u17"].contains(&u.as_str()))
        .cloned()
        .collect();
    eventually("the 17 good members are written", WAIT, || async {
        (members(&emu, SEGMENT).await == good).then_some(())
    })
    .await;
    let dead = eventually("three dead letters are listed", WAIT, || async {
        let (s, v) = bridge
            .operator(
                Method::GET,
                &format!("/links/{LINK}/dead-letters"),
                Some(OPERATOR_TOKEN),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        (keys_of(&v).len() == 3).then_some(v)
    })
    .await;
    assert_eq!(
        keys_of(&dead),
        BTreeSet::from(["u03".into(), "u11".into(), "u17".into()])
    );
    for d in dead["dead_letters"].as_array().unwrap() {
        let reason = d["reason"].as_str().unwrap();
        assert!(
            reason.contains("Invalid context key"),
            "LaunchDarkly's message is kept: {reason}"
        );
        assert!(d["at_ms"].as_i64().unwrap() > 0);
    }
    let (s, link) = bridge
        .operator(
            Method::GET,
            &format!("/links/{LINK}"),
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(s, 200, "{link}");
    assert_eq!(link["dead_letters"], 3);
    assert_eq!(link["dirty"], 0);
    assert_eq!(link["meta"]["segment_key"], SEGMENT);

    // LaunchDarkly accepts them now: redrive one over HTTP, the rest by command.
    emu.configure(json!({"reject_keys": []})).await;
    let (s, v) = bridge
        .operator(
            Method::POST,
            &format!("/links/{LINK}/redrive"),
            Some(OPERATOR_TOKEN),
            Some(json!({"keys": ["u11", "not-dead"]})),
        )
        .await;
    assert_eq!((s, v["redriven"].clone()), (200, json!(1)), "{v}");
    eventually("u11 is written after its redrive", WAIT, || async {
        members(&emu, SEGMENT).await.contains("u11").then_some(())
    })
    .await;
    assert!(!members(&emu, SEGMENT).await.contains("u03"));

    let settings = cfg.settings();
    let listed = cohort_bridge::operator::dead_letters(&settings, LINK)
        .await
        .unwrap();
    let listed: BTreeSet<&str> = listed
        .lines()
        .filter_map(|l| l.split('\t').next())
        .collect();
    assert_eq!(listed, BTreeSet::from(["u03", "u17"]));
    let out = cohort_bridge::operator::redrive(&settings, LINK, &[])
        .await
        .unwrap();
    assert!(out.contains("2 dead letter(s) redriven"), "{out}");
    let all: BTreeSet<String> = users.iter().cloned().collect();
    eventually(
        "every member is written after the redrive",
        WAIT,
        || async { (members(&emu, SEGMENT).await == all).then_some(()) },
    )
    .await;
    let (_, v) = bridge
        .operator(
            Method::GET,
            &format!("/links/{LINK}/dead-letters"),
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert!(keys_of(&v).is_empty(), "{v}");
    bridge.stop().await;
}

/// Changes LaunchDarkly behind the bridge's back, as drift would.
async fn ld_contexts(emu: &crate::support::Emulator, key: &str, body: Value) {
    let r = emu
        .http
        .post(format!(
            "{}/api/v2/segments/default/production/{key}/contexts",
            emu.base
        ))
        .header("Authorization", TOKEN)
        .header("LD-API-Version", "20240415")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
}

#[tokio::test]
async fn a_resync_repairs_drift_by_sending_every_tracked_member_again() {
    let (_redis, emu, mut cfg) = stack();
    with_operator(&mut cfg);
    let bridge = Bridge::start(&cfg).await;
    let key = "amplitude-drift";
    let link = "production:amplitude:drift";
    bridge
        .amplitude(&amplitude_body(
            "drift",
            true,
            1,
            "d1",
            &["a", "b", "c", "gone"],
        ))
        .await;
    bridge
        .amplitude(&amplitude_body("drift", false, 2, "d2", &["gone"]))
        .await;
    let want: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    eventually("the cohort is written", WAIT, || async {
        (members(&emu, key).await == want).then_some(())
    })
    .await;
    let before = emu.membership_requests().await.len();

    // Drift: LaunchDarkly lost "b" and regained the removed "gone".
    ld_contexts(
        &emu,
        key,
        json!({"included": {"add": ["gone"], "remove": ["b"]}}),
    )
    .await;
    assert_ne!(members(&emu, key).await, want);

    let (s, v) = bridge
        .operator(
            Method::POST,
            &format!("/links/{link}/resync"),
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["members"], 4, "three members and one tombstone: {v}");
    eventually("the resync restores the bridge's view", WAIT, || async {
        (members(&emu, key).await == want).then_some(())
    })
    .await;
    // One batch carried the whole rewrite: adds and the tombstone's remove.
    let after = emu.membership_requests().await;
    let resent = &after[before + 1..]; // after the drift request itself
    assert_eq!(resent.len(), 1, "{resent:?}");
    let body = &resent[0]["body"]["included"];
    let sorted = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .map(|a| a.iter().map(|k| k.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    assert_eq!(sorted(&body["add"]), want);
    assert_eq!(
        sorted(&body["remove"]),
        BTreeSet::from(["gone".to_string()])
    );
    let (_, status) = bridge
        .operator(
            Method::GET,
            &format!("/links/{link}"),
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(status["meta"]["resyncs"], "1", "{status}");

    // The command line does the same.
    let out = cohort_bridge::operator::resync(&cfg.settings(), link)
        .await
        .unwrap();
    assert!(out.contains("4 member(s)"), "{out}");
    let listing = cohort_bridge::operator::links(&cfg.settings())
        .await
        .unwrap();
    assert!(listing.contains(link) && listing.contains(key), "{listing}");
    bridge.stop().await;
}

#[tokio::test]
async fn the_operator_api_needs_its_token_and_answers_bad_input_with_json_errors() {
    let (_redis, _emu, mut cfg) = stack();
    // Without a token configured the operator API is off.
    let off = Bridge::start(&cfg).await;
    let (s, v) = off
        .operator(Method::GET, "/links", Some(OPERATOR_TOKEN), None)
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("operator_api_disabled"))
    );

    let (s, _) = off.get("/ops").await;
    assert_eq!(s, 404, "no page without a token configured");
    off.stop().await;

    with_operator(&mut cfg);
    let bridge = Bridge::start(&cfg).await;
    let (s, page) = bridge.get("/ops").await;
    assert_eq!(s, 200);
    assert!(page.contains("/ops/assets/ops.js") && !page.contains(OPERATOR_TOKEN));
    // The page's script (served by the bridge) calls the API and holds no token.
    let (s, script) = bridge.get("/ops/assets/ops.js").await;
    assert_eq!(s, 200);
    assert!(script.contains("/v1/operator") && !script.contains(OPERATOR_TOKEN));
    bridge
        .amplitude(&amplitude_body("ops", true, 1, "o1", &["x"]))
        .await;
    for token in [None, Some("wrong"), Some("")] {
        let (s, v) = bridge.operator(Method::GET, "/links", token, None).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{token:?}"
        );
        let (s, _) = bridge
            .operator(
                Method::POST,
                "/links/production:amplitude:ops/resync",
                token,
                None,
            )
            .await;
        assert_eq!(s, 401);
    }
    let (s, v) = bridge
        .operator(Method::GET, "/links", Some(OPERATOR_TOKEN), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["links"][0]["link"], "production:amplitude:ops", "{v}");
    assert_eq!(v["links"][0]["configured"], true);

    let t = Some(OPERATOR_TOKEN);
    let cases: Vec<(Method, &str, Option<Value>, u16, &str)> = vec![
        (
            Method::GET,
            "/links/not-a-link",
            None,
            400,
            "invalid_payload",
        ),
        (
            Method::GET,
            "/links/production:amplitude:nope",
            None,
            404,
            "unknown_link",
        ),
        (
            Method::POST,
            "/links/production:amplitude:nope/resync",
            None,
            404,
            "unknown_link",
        ),
        (
            Method::GET,
            "/links/production:amplitude:ops/dead-letters?cursor=abc",
            None,
            400,
            "invalid_payload",
        ),
        (
            Method::GET,
            "/links/production:amplitude:ops/dead-letters?bogus=1",
            None,
            400,
            "invalid_payload",
        ),
        (
            Method::POST,
            "/links/production:amplitude:ops/redrive",
            Some(json!({"keys": "x"})),
            400,
            "invalid_payload",
        ),
        (
            Method::POST,
            "/links/production:amplitude:ops/redrive",
            Some(json!([1, 2])),
            400,
            "invalid_payload",
        ),
        (Method::DELETE, "/links", None, 404, "not_found"),
    ];
    for (method, path, body, status, code) in cases {
        let (s, v) = bridge.operator(method.clone(), path, t, body).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path}: {v}"
        );
    }
    bridge.stop().await;
}

#[tokio::test]
async fn the_command_line_lists_links_and_dead_letters_and_resyncs() {
    let (_redis, emu, cfg) = stack();
    let bridge = Bridge::start(&cfg).await;
    emu.configure(json!({"reject_keys": ["bad"]})).await;
    bridge
        .amplitude(&amplitude_body("cli", true, 1, "c1", &["ok", "bad"]))
        .await;
    eventually("ok is written", WAIT, || async {
        members(&emu, "amplitude-cli")
            .await
            .contains("ok")
            .then_some(())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, cfg.toml()).unwrap();
    let run = move |args: Vec<&'static str>| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_cohort-bridge"))
                .env("LD_API_TOKEN", TOKEN)
                .env("AMPLITUDE_SECRET", "x")
                .env("HEAP_SECRET", "x")
                .env_remove("COHORT_BRIDGE_CONFIG")
                .args(&args)
                .arg("--config")
                .arg(&path)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let link = "production:amplitude:cli";
    let dead = eventually("the dead letter is listed", WAIT, || {
        let run = run.clone();
        async move {
            let (code, out, err) = run(vec!["dead-letters", "production:amplitude:cli"])
                .await
                .unwrap();
            assert_eq!(code, Some(0), "{err}");
            out.starts_with("bad\t").then_some(out)
        }
    })
    .await;
    assert!(dead.contains("Invalid context key"), "{dead}");
    let (code, out, _) = run(vec!["links"]).await.unwrap();
    assert_eq!(code, Some(0));
    let row = out.lines().find(|l| l.starts_with(link)).expect(&out);
    assert!(row.contains("amplitude-cli"), "{row}");
    emu.configure(json!({"reject_keys": []})).await;
    let (code, out, _) = run(vec!["redrive", "production:amplitude:cli"])
        .await
        .unwrap();
    assert_eq!(
        (code, out.trim()),
        (
            Some(0),
            "production:amplitude:cli: 1 dead letter(s) redriven"
        )
    );
    eventually("bad is written after the redrive", WAIT, || async {
        members(&emu, "amplitude-cli")
            .await
            .contains("bad")
            .then_some(())
    })
    .await;
    let (code, out, _) = run(vec!["resync", "production:amplitude:cli"])
        .await
        .unwrap();
    assert_eq!(
        (code, out.trim()),
        (
            Some(0),
            "production:amplitude:cli: 2 member(s) will be sent again"
        )
    );
    let (code, _, err) = run(vec!["resync", "production:amplitude:nope"])
        .await
        .unwrap();
    assert_eq!(code, Some(1));
    assert!(err.contains("no link production:amplitude:nope"), "{err}");
    bridge.stop().await;
}

#[tokio::test]
async fn a_periodic_resync_repairs_drift_without_an_operator() {
    let (_redis, emu, mut cfg) = stack();
    cfg.set("flush", "sweep_interval_seconds", "1");
    cfg.set("flush", "resync_interval_seconds", "1");
    cfg.set("flush", "lease_ttl_ms", "4000"); // upkeep, and so sweeps, every second
    let bridge = Bridge::start(&cfg).await;
    let key = "amplitude-periodic";
    bridge
        .amplitude(&amplitude_body("periodic", true, 1, "q1", &["a", "b"]))
        .await;
    let want: BTreeSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
    eventually("the cohort is written", WAIT, || async {
        (members(&emu, key).await == want).then_some(())
    })
    .await;
    ld_contexts(&emu, key, json!({"included": {"remove": ["a", "b"]}})).await;
    assert!(members(&emu, key).await.is_empty());
    eventually("the periodic resync restores the members", WAIT, || async {
        (members(&emu, key).await == want).then_some(())
    })
    .await;
    bridge.stop().await;
}
