//! Reconcile: drift planted in the emulator behind the bridge's back (a
//! member removed, a tombstoned member and a never-written one added) is
//! found through a big-segment export and repaired by the normal flusher,
//! through the operator API, the CLI and the interval; an export file in
//! another layout fails the run and changes nothing.

use crate::support::bridge::{amplitude_body, OPERATOR_TOKEN};
use crate::support::emulator::TOKEN;
use crate::support::{eventually, stack, Bridge, Emulator, TestConfig, WAIT};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;

const PROJECT: &str = "default";
const ENV: &str = "production";

fn with_operator(cfg: &mut TestConfig) {
    cfg.set("server", "operator_token_env", "\"OPERATOR_TOKEN\"");
}

async fn members(emu: &Emulator, segment: &str) -> BTreeSet<String> {
    emu.members(PROJECT, ENV, segment)
        .await
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// An operator API call with the token.
async fn op(bridge: &Bridge, method: Method, path: &str) -> (u16, Value) {
    bridge
        .operator(method, path, Some(OPERATOR_TOKEN), None)
        .await
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

/// Pushes u1..u5 in, then u5 out, and waits until LaunchDarkly has u1..u4;
/// then plants drift: u2 removed, u5 (a tombstone) and x9 (never written)
/// added. Returns the segment key.
async fn converged_then_drifted(bridge: &Bridge, emu: &Emulator, cohort: &str) -> String {
    let segment = format!("amplitude-{cohort}");
    let (s, _) = bridge
        .amplitude(&amplitude_body(
            cohort,
            true,
            1,
            &format!("{cohort}-1"),
            &["u1", "u2", "u3", "u4", "u5"],
        ))
        .await;
    assert_eq!(s, 200);
    let (s, _) = bridge
        .amplitude(&amplitude_body(
            cohort,
            false,
            2,
            &format!("{cohort}-2"),
            &["u5"],
        ))
        .await;
    assert_eq!(s, 200);
    let want = set(&["u1", "u2", "u3", "u4"]);
    eventually("LaunchDarkly has u1..u4", WAIT, || async {
        (members(emu, &segment).await == want).then_some(())
    })
    .await;
    let link = format!("production:amplitude:{cohort}");
    eventually("nothing is dirty", WAIT, || async {
        let (_, v) = op(bridge, Method::GET, &format!("/links/{link}")).await;
        (v["dirty"] == 0).then_some(())
    })
    .await;
    emu.drift(PROJECT, ENV, &segment, &["u5", "x9"], &["u2"])
        .await;
    assert_eq!(
        members(emu, &segment).await,
        set(&["u1", "u3", "u4", "u5", "x9"])
    );
    segment
}

#[tokio::test]
async fn the_operator_api_finds_and_repairs_drift_and_reports_it() {
    let (_redis, emu, mut cfg) = stack();
    with_operator(&mut cfg);
    emu.configure(json!({"export_polls": 2})).await;
    let bridge = Bridge::start(&cfg).await;
    let segment = converged_then_drifted(&bridge, &emu, "api").await;
    let link = "production:amplitude:api";

    let (s, v) = op(&bridge, Method::POST, &format!("/links/{link}/reconcile")).await;
    assert_eq!(s, 200, "{v}");
    // u1..u5 tracked (u5 a tombstone) and x9 only in LaunchDarkly.
    assert_eq!(
        (
            &v["checked"],
            &v["missing"],
            &v["extra"],
            &v["repaired"],
            &v["exported"]
        ),
        (&json!(6), &json!(1), &json!(2), &json!(3), &json!(5)),
        "{v}"
    );
    assert_eq!(
        (&v["drift_missing"], &v["drift_extra"]),
        (&json!(1), &json!(2)),
        "{v}"
    );

    let want = set(&["u1", "u2", "u3", "u4"]);
    eventually("the flusher repairs the drift", WAIT, || async {
        (members(&emu, &segment).await == want).then_some(())
    })
    .await;

    let (_, one) = op(&bridge, Method::GET, &format!("/links/{link}")).await;
    let report = &one["reconcile"];
    assert_eq!(
        report
            .as_object()
            .map(|o| o.keys().cloned().collect::<BTreeSet<_>>()),
        Some(set(&[
            "last_reconciled_ms",
            "checked",
            "missing",
            "extra",
            "repaired"
        ])),
        "{one}"
    );
    assert_eq!(
        (
            &report["checked"],
            &report["missing"],
            &report["extra"],
            &report["repaired"]
        ),
        (&json!(6), &json!(1), &json!(2), &json!(3))
    );
    assert!(report["last_reconciled_ms"].as_i64().unwrap() > 0);
    let (_, all) = op(&bridge, Method::GET, "/links").await;
    assert_eq!(all["links"][0]["reconcile"], *report);

    // The export's calls were LaunchDarkly requests like any other.
    let routes: Vec<String> = emu
        .requests()
        .await
        .iter()
        .map(|r| r["route"].as_str().unwrap_or("").to_string())
        .collect();
    for r in ["create_export", "get_export", "export_file"] {
        assert!(routes.iter().any(|x| x == r), "{r} in {routes:?}");
    }
    let (_, metrics) = bridge.get("/metrics").await;
    assert!(
        metrics.contains("cohort_bridge_reconcile_runs_total{result=\"ok\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("cohort_bridge_drift_members_total{kind=\"extra\"}"));
    assert!(metrics.contains("cohort_bridge_reconcile_members_total{kind=\"repaired\"}"));

    // Reconciling again finds nothing left to repair.
    let (s, v) = op(&bridge, Method::POST, &format!("/links/{link}/reconcile")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (&v["missing"], &v["extra"], &v["repaired"]),
        (&json!(0), &json!(0), &json!(0)),
        "{v}"
    );

    // Unknown links and missing tokens are refused before anything runs.
    let (s, _) = op(
        &bridge,
        Method::POST,
        "/links/production:amplitude:nope/reconcile",
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = bridge
        .operator(
            Method::POST,
            &format!("/links/{link}/reconcile"),
            None,
            None,
        )
        .await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn an_export_in_another_layout_fails_the_reconcile_and_changes_nothing() {
    let (_redis, emu, mut cfg) = stack();
    with_operator(&mut cfg);
    let bridge = Bridge::start(&cfg).await;
    let segment = converged_then_drifted(&bridge, &emu, "layout").await;
    let link = "production:amplitude:layout";
    emu.configure(json!({"export_layout": "two_columns"})).await;
    let before = emu.requests().await.len();

    let (s, v) = op(&bridge, Method::POST, &format!("/links/{link}/reconcile")).await;
    assert_eq!(s, 502, "{v}");
    assert_eq!(v["error"]["code"], "bad_export", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("unexpected export layout") && message.contains("record 1"),
        "{message}"
    );

    let (_, one) = op(&bridge, Method::GET, &format!("/links/{link}")).await;
    assert_eq!(one["dirty"], 0, "nothing was marked: {one}");
    assert!(one.get("reconcile").is_none(), "no report: {one}");
    // Only the export's three calls reached LaunchDarkly: no membership write.
    let after: Vec<Value> = emu.requests().await.split_off(before);
    let routes: Vec<&str> = after.iter().map(|r| r["route"].as_str().unwrap()).collect();
    assert_eq!(routes, ["create_export", "get_export", "export_file"]);
    assert_eq!(
        members(&emu, &segment).await,
        set(&["u1", "u3", "u4", "u5", "x9"])
    );
}

#[tokio::test]
async fn the_cli_reconciles_a_link_and_links_shows_the_report() {
    let (_redis, emu, mut cfg) = stack();
    with_operator(&mut cfg);
    let bridge = Bridge::start(&cfg).await;
    let segment = converged_then_drifted(&bridge, &emu, "cli").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, cfg.toml()).unwrap();
    let run = move |args: &'static [&'static str]| {
        let path = path.clone();
        async move {
            tokio::task::spawn_blocking(move || {
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
            })
            .await
            .unwrap()
        }
    };
    let (code, out, err) = run(&["reconcile", "production:amplitude:cli"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("checked 6, missing 1, extra 2, repaired 3"),
        "{out}"
    );
    let want = set(&["u1", "u2", "u3", "u4"]);
    eventually("the running bridge flushes the repair", WAIT, || async {
        (members(&emu, &segment).await == want).then_some(())
    })
    .await;
    let (code, out, _) = run(&["links"]).await;
    assert_eq!(code, Some(0));
    assert!(
        out.contains("checked 6, missing 1, extra 2, repaired 3"),
        "{out}"
    );
    let (code, _, err) = run(&["reconcile", "production:amplitude:none"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no link"), "{err}");
}

#[tokio::test]
async fn the_interval_reconciles_on_its_own() {
    let (_redis, emu, mut cfg) = stack();
    with_operator(&mut cfg);
    cfg.set("flush", "reconcile_interval_seconds", "1");
    let bridge = Bridge::start(&cfg).await;
    let segment = converged_then_drifted(&bridge, &emu, "tick").await;
    let drifted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let want = set(&["u1", "u2", "u3", "u4"]);
    eventually("an interval reconcile repairs the drift", WAIT, || async {
        (members(&emu, &segment).await == want).then_some(())
    })
    .await;
    let link = "production:amplitude:tick";
    // Nothing else repairs (no resync interval, no operator call); the
    // report is of a run after the drift (later runs find nothing left).
    let (_, v) = op(&bridge, Method::GET, &format!("/links/{link}")).await;
    let at = v["reconcile"]["last_reconciled_ms"]
        .as_i64()
        .expect("a report");
    assert!(at >= drifted_at, "{v}");
}

/// On a three-primary Redis Cluster: the staging set, the want hash and the
/// dirty set of a link share its hash tag, so the comparison script runs on
/// whichever node holds the link, for links on every node.
#[tokio::test]
async fn reconcile_works_for_links_on_every_node_of_a_redis_cluster() {
    use crate::support::cluster::RedisCluster;
    use cohort_bridge::store::{Keys, LinkId};
    const PARTITIONS: u16 = 16;
    let cluster = RedisCluster::start();
    let emu = Emulator::start();
    let mut cfg = TestConfig::new(&cluster.url(), &emu.base);
    cfg.set("redis", "cluster", "true")
        .set("redis", "cluster_urls", cluster.other_urls_toml())
        .set("redis", "partitions", PARTITIONS.to_string());
    with_operator(&mut cfg);
    let keys = Keys::new(&cfg.prefix, PARTITIONS);
    let mut per_node: [Option<String>; 3] = Default::default();
    for i in 0.. {
        if per_node.iter().all(Option::is_some) {
            break;
        }
        let cohort = format!("n{i}");
        let p = keys.partition("amplitude", &cohort);
        let link = LinkId::parse(&format!("production:amplitude:{cohort}")).unwrap();
        let node = cluster.node_of(&keys.want(p, "amplitude", &cohort));
        assert_eq!(
            node,
            cluster.node_of(&keys.reconcile_stage(p, &link, "run"))
        );
        per_node[node].get_or_insert(cohort);
    }
    let bridge = Bridge::start(&cfg).await;
    for cohort in per_node.iter().flatten() {
        let segment = converged_then_drifted(&bridge, &emu, cohort).await;
        let (s, v) = op(
            &bridge,
            Method::POST,
            &format!("/links/production:amplitude:{cohort}/reconcile"),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            (&v["missing"], &v["extra"], &v["repaired"]),
            (&json!(1), &json!(2), &json!(3)),
            "{v}"
        );
        let want = set(&["u1", "u2", "u3", "u4"]);
        eventually("the drift is repaired", WAIT, || async {
            (members(&emu, &segment).await == want).then_some(())
        })
        .await;
    }
}
