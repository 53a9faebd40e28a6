//! The audit trail: every LaunchDarkly write the flusher makes, with its
//! counts, keys, status and request id (or error), newest first, filtered by
//! time and capped per link; read through the operator API and the CLI.

use crate::support::bridge::{amplitude_body, OPERATOR_TOKEN};
use crate::support::emulator::TOKEN;
use crate::support::{eventually, stack, Bridge, TestConfig, WAIT};
use reqwest::Method;
use serde_json::{json, Value};

fn with_operator(cfg: &mut TestConfig) {
    cfg.set("server", "operator_token_env", "\"OPERATOR_TOKEN\"");
}

async fn audit(bridge: &Bridge, link: &str, query: &str) -> Vec<Value> {
    let (s, v) = bridge
        .operator(
            Method::GET,
            &format!("/links/{link}/audit{query}"),
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["link"], json!(link));
    v["entries"].as_array().expect("entries").clone()
}

/// The audit's membership writes, newest first.
async fn writes(bridge: &Bridge, link: &str, query: &str) -> Vec<Value> {
    audit(bridge, link, query)
        .await
        .into_iter()
        .filter(|e| e["operation"] == json!("update_membership"))
        .collect()
}

fn cli(cfg: &TestConfig, args: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, cfg.toml()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cohort-bridge"))
        .env("LD_API_TOKEN", TOKEN)
        .env("AMPLITUDE_SECRET", "x")
        .env("HEAP_SECRET", "x")
        .env("OPERATOR_TOKEN", OPERATOR_TOKEN)
        .env_remove("COHORT_BRIDGE_CONFIG")
        .args(args)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn each_write_is_audited_with_counts_keys_status_and_request_id() {
    let (_redis, emu, mut cfg) = stack();
    with_operator(&mut cfg);
    let bridge = Bridge::start(&cfg).await;
    let link = "production:amplitude:aud";
    let (s, _) = bridge
        .amplitude(&amplitude_body("aud", true, 1, "a1", &["u1", "u2", "u3"]))
        .await;
    assert_eq!(s, 200);
    let first = eventually("the first write is audited", WAIT, || async {
        let w = writes(&bridge, link, "").await;
        (w.len() == 1).then(|| w[0].clone())
    })
    .await;
    let (s, _) = bridge
        .amplitude(&amplitude_body("aud", false, 2, "a2", &["u2"]))
        .await;
    assert_eq!(s, 200);
    let all = eventually("the second write is audited", WAIT, || async {
        let w = writes(&bridge, link, "").await;
        (w.len() == 2).then_some(w)
    })
    .await;
    // Newest first: the removal, then the three additions.
    let (removal, addition) = (&all[0], &all[1]);
    assert_eq!(addition, &first);
    assert_eq!(addition["adds"], json!(3));
    assert_eq!(addition["removes"], json!(0));
    let mut keys: Vec<&str> = addition["add_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["u1", "u2", "u3"]);
    assert_eq!(removal["adds"], json!(0));
    assert_eq!(removal["removes"], json!(1));
    assert_eq!(removal["remove_keys"], json!(["u2"]));
    assert_eq!(removal["segment"], json!("amplitude-aud"));
    assert!(removal["at_ms"].as_i64() >= addition["at_ms"].as_i64());
    // The status and request id are LaunchDarkly's (the emulator's log).
    let sent = emu.membership_requests().await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    for (entry, req) in [(addition, &sent[0]), (removal, &sent[1])] {
        assert_eq!(
            entry["status"],
            json!(req["status"].as_u64().unwrap().to_string())
        );
        assert_eq!(
            entry["request_id"],
            json!(format!("emu-{}", req["seq"].as_u64().unwrap()))
        );
        assert_eq!(entry["message"], Value::Null);
    }
    // The segment's creation is audited too.
    let created = audit(&bridge, link, "").await;
    assert!(
        created
            .iter()
            .any(|e| e["operation"] == json!("create_segment")
                && e["status"].as_str().unwrap().starts_with('2')
                && e["request_id"].as_str().unwrap().starts_with("emu-")),
        "{created:?}"
    );

    // `since` keeps the entries at or after it (ms or RFC 3339); `limit` caps.
    let at = removal["at_ms"].as_i64().unwrap();
    let since = writes(&bridge, link, &format!("?since={at}")).await;
    assert_eq!(since, vec![removal.clone()]);
    assert!(audit(&bridge, link, "?since=2999-01-01T00:00:00Z")
        .await
        .is_empty());
    assert_eq!(
        writes(&bridge, link, "?since=2000-01-01T00:00:00Z")
            .await
            .len(),
        2
    );
    assert_eq!(audit(&bridge, link, "?limit=1").await.len(), 1);
    let (s, v) = bridge
        .operator(
            Method::GET,
            &format!("/links/{link}/audit?since=yesterday"),
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("RFC 3339"), "{v}");

    // The CLI prints the same entries, newest first.
    let cfg2 = cfg;
    let (code, out, err) = tokio::task::spawn_blocking(move || cli(&cfg2, &["audit", link]))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{err}");
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert!(rows[0].contains("update_membership"), "{out}");
    assert!(
        rows[0].contains(removal["request_id"].as_str().unwrap()),
        "{out}"
    );
    assert!(rows[0].contains("-u2"), "{out}");
    assert!(
        rows[1].contains(addition["request_id"].as_str().unwrap()),
        "{out}"
    );
}

#[tokio::test]
async fn a_failed_write_is_audited_with_its_status_and_message() {
    let (_redis, emu, mut cfg) = stack();
    with_operator(&mut cfg);
    let bridge = Bridge::start(&cfg).await;
    let link = "production:amplitude:audfail";
    emu.fault(json!({"kind": "status", "status": 500, "route": "contexts",
        "message": "emulated outage", "count": 1}))
        .await;
    let (s, _) = bridge
        .amplitude(&amplitude_body("audfail", true, 1, "f1", &["x1"]))
        .await;
    assert_eq!(s, 200);
    let w = eventually("the failure and the retry are audited", WAIT, || async {
        let w = writes(&bridge, link, "").await;
        (w.len() == 2).then_some(w)
    })
    .await;
    assert_eq!(w[1]["status"], json!("500"));
    assert!(
        w[1]["message"]
            .as_str()
            .unwrap()
            .contains("emulated outage"),
        "{}",
        w[1]
    );
    assert_eq!(w[1]["adds"], json!(1));
    assert_eq!(w[0]["status"], json!("204"));
}

#[tokio::test]
async fn the_audit_keeps_at_most_its_cap_per_link() {
    let (_redis, emu, mut cfg) = stack();
    with_operator(&mut cfg);
    cfg.set("flush", "audit_entries_per_link", "3");
    let bridge = Bridge::start(&cfg).await;
    let link = "production:amplitude:audcap";
    for i in 1..=5i64 {
        let user = format!("c{i}");
        let (s, _) = bridge
            .amplitude(&amplitude_body(
                "audcap",
                true,
                i,
                &format!("m{i}"),
                &[&user],
            ))
            .await;
        assert_eq!(s, 200);
        eventually("the write lands", WAIT, || async {
            (emu.membership_requests().await.len() == i as usize).then_some(())
        })
        .await;
    }
    let all = eventually("the newest write is audited", WAIT, || async {
        let a = audit(&bridge, link, "?limit=1000").await;
        (a.first().map(|e| e["add_keys"].clone()) == Some(json!(["c5"]))).then_some(a)
    })
    .await;
    assert_eq!(all.len(), 3, "{all:?}");
    let keys: Vec<Value> = all.iter().map(|e| e["add_keys"].clone()).collect();
    assert_eq!(keys, vec![json!(["c5"]), json!(["c4"]), json!(["c3"])]);
}
