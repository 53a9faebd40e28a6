//! `why`: the story of one member through a flip (in, then out), a stale
//! change arriving late, a duplicate delivery and a dead letter, with
//! LaunchDarkly's own answer on request; over the operator API and the
//! `cohort-bridge why` command, against a real Redis and the emulator.

use crate::support::bridge::{amplitude_body, OPERATOR_TOKEN};
use crate::support::emulator::TOKEN;
use crate::support::{eventually, stack, Bridge, WAIT};
use reqwest::Method;
use serde_json::{json, Value};

const LINK: &str = "production:amplitude:story";
const SEGMENT: &str = "amplitude-story";

async fn why(bridge: &Bridge, key: &str, ld: bool) -> (u16, Value) {
    let q = if ld { "?launchdarkly=true" } else { "" };
    bridge
        .operator(
            Method::GET,
            &format!("/links/{LINK}/members/{key}{q}"),
            Some(OPERATOR_TOKEN),
            None,
        )
        .await
}

/// The member's pushes, newest first: (delivery id, version, change, outcome).
fn pushes(v: &Value) -> Vec<(String, i64, String, String)> {
    v["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|c| c["kind"] == "push")
        .map(|c| {
            (
                c["delivery_id"].as_str().unwrap_or("").to_string(),
                c["version_ms"].as_i64().unwrap(),
                c["change"].as_str().unwrap().to_string(),
                c["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn p(d: &str, v: i64, c: &str, o: &str) -> (String, i64, String, String) {
    (d.into(), v, c.into(), o.into())
}

#[tokio::test]
async fn why_tells_a_members_story_through_a_flip_a_stale_change_a_duplicate_and_a_dead_letter() {
    let (_redis, emu, mut cfg) = stack();
    cfg.set("server", "operator_token_env", "\"OPERATOR_TOKEN\"");
    let bridge = Bridge::start(&cfg).await;
    let has = |key: &'static str| {
        let emu = &emu;
        async move {
            emu.members("default", "production", SEGMENT)
                .await
                .unwrap_or_default()
                .iter()
                .any(|m| m == key)
        }
    };

    // In, written; then out, written.
    let (s, _) = bridge
        .amplitude(&amplitude_body("story", true, 1000, "m1", &["u1", "u2"]))
        .await;
    assert_eq!(s, 200);
    eventually("u1 is in LaunchDarkly", WAIT, || async {
        has("u1").await.then_some(())
    })
    .await;
    let out = amplitude_body("story", false, 2000, "m2", &["u1"]);
    assert_eq!(bridge.amplitude(&out).await.0, 200);
    eventually("u1 left LaunchDarkly", WAIT, || async {
        (!has("u1").await).then_some(())
    })
    .await;
    // An older "in" arriving late is stale; the same delivery again is a duplicate.
    let (_, v) = bridge
        .amplitude(&amplitude_body("story", true, 1500, "m3", &["u1"]))
        .await;
    assert_eq!(v["stale"], 1, "{v}");
    let (_, v) = bridge.amplitude(&out).await;
    assert_eq!(v["duplicate"], true, "{v}");

    let (s, v) = eventually("u1's last write is recorded", WAIT, || async {
        let (s, v) = why(&bridge, "u1", false).await;
        (v["dirty"] == false && v["launchdarkly_per_bridge"] == "out").then_some((s, v))
    })
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["known"], true);
    assert_eq!(v["desired"]["included"], false, "{v}");
    assert_eq!(v["desired"]["version_ms"], 2_000_000);
    assert_eq!(v["flush_due_at_ms"], Value::Null);
    assert!(
        v.get("launchdarkly").is_none(),
        "asked only on request: {v}"
    );
    assert_eq!(
        pushes(&v),
        vec![
            p("m2", 2_000_000, "out", "duplicate"),
            p("m3", 1_500_000, "in", "stale"),
            p("m2", 2_000_000, "out", "written"),
            p("m1", 1_000_000, "in", "written"),
        ],
        "{v:#}"
    );
    // Both LaunchDarkly writes, from the audit trail, with their status.
    let writes: Vec<(&str, &str)> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "write")
        .map(|c| (c["change"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(writes, vec![("out", "204"), ("in", "204")], "{v:#}");

    // A dead letter, with LaunchDarkly's reason.
    emu.configure(json!({"reject_keys": ["bad"]})).await;
    assert_eq!(
        bridge
            .amplitude(&amplitude_body("story", true, 3000, "m4", &["bad"]))
            .await
            .0,
        200
    );
    let v = eventually("bad is dead-lettered", WAIT, || async {
        let (_, v) = why(&bridge, "bad", false).await;
        (v["launchdarkly_per_bridge"] == "dead_lettered").then_some(v)
    })
    .await;
    let reason = v["dead_letter"]["reason"].as_str().unwrap();
    assert!(reason.contains("Invalid context key"), "{v:#}");
    assert!(
        v["summary"].as_str().unwrap().contains("dead-lettered"),
        "{v:#}"
    );
    assert_eq!(pushes(&v), vec![p("m4", 3_000_000, "in", "dead_lettered")]);
    assert!(
        v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["kind"] == "dead_letter"),
        "{v:#}"
    );

    // LaunchDarkly's own answer, on request.
    let (_, v) = why(&bridge, "u1", true).await;
    let ld = &v["launchdarkly"];
    assert_eq!(
        (
            ld["status"].clone(),
            ld["included"].clone(),
            ld["agrees_with_bridge"].clone()
        ),
        (json!(200), json!(false), json!(true)),
        "{v:#}"
    );
    let (_, v) = why(&bridge, "u2", true).await;
    assert_eq!(v["launchdarkly"]["included"], true, "{v:#}");
    let asked = emu
        .requests()
        .await
        .into_iter()
        .filter(|r| r["route"] == "get_context")
        .count();
    assert_eq!(asked, 2, "one LaunchDarkly read per question asked");

    // A key the bridge never saw; an unknown link.
    let (s, v) = why(&bridge, "nobody", true).await;
    assert_eq!((s, v["known"].clone()), (200, json!(false)), "{v}");
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .starts_with("unknown to the bridge"),
        "{v}"
    );
    assert_eq!(v["launchdarkly"]["included"], false, "{v}");
    let (s, v) = bridge
        .operator(
            Method::GET,
            "/links/production:amplitude:nope/members/u1",
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (404, json!("unknown_link")),
        "{v}"
    );
    let (s, v) = bridge
        .operator(
            Method::GET,
            &format!("/links/{LINK}/members/u1?launchdarkly=maybe"),
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (400, json!("invalid_payload")),
        "{v}"
    );
    let (s, _) = bridge
        .operator(
            Method::GET,
            &format!("/links/{LINK}/members/u1"),
            None,
            None,
        )
        .await;
    assert_eq!(s, 401);

    // The command line tells the same story.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, cfg.toml()).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cohort-bridge"))
            .env("LD_API_TOKEN", TOKEN)
            .env("AMPLITUDE_SECRET", "x")
            .env("HEAP_SECRET", "x")
            .env("OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env_remove("COHORT_BRIDGE_CONFIG")
            .args(["why", LINK, "u1", "--launchdarkly", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "desired: out (version 2000000)",
        "LaunchDarkly per the bridge: out",
        "\tm3\t1500000\tin\tstale\t",
        "\tm2\t2000000\tout\tduplicate\t",
        "\tm1\t1000000\tin\twritten\t",
        "LaunchDarkly says: not included (status 200), as the bridge recorded",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    bridge.stop().await;
}
