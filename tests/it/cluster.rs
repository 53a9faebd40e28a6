//! The bridge on a real three-primary Redis Cluster (`redis.cluster = true`):
//! pushes for cohorts whose partitions live on every node, fan-out to two
//! destinations, duplicates and stale changes, dead letters and redrive, a
//! Mixpanel paged replace, the operator listing across all partitions, and
//! readiness (200 when the cluster is whole, a 503 naming a primary whose
//! `maxmemory-policy` can evict, a 503 naming the node that is down, 200
//! again once it is back).

use crate::support::bridge::{amplitude_body, OPERATOR_TOKEN};
use crate::support::cluster::RedisCluster;
use crate::support::native::{self, mixpanel, mixpanel_body};
use crate::support::{converge, eventually, Bridge, Emulator, TestConfig, WAIT};
use cohort_bridge::store::Keys;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

const PARTITIONS: u16 = 16;

/// A cluster, the emulator, and a bridge configuration for the cluster
/// (every node a seed), with the operator API on and Amplitude fanning out
/// to production and staging.
fn cluster_stack() -> (RedisCluster, Emulator, TestConfig) {
    let cluster = RedisCluster::start();
    let emu = Emulator::start();
    let mut cfg = TestConfig::new(&cluster.url(), &emu.base);
    cfg.set("redis", "cluster", "true")
        .set("redis", "cluster_urls", cluster.other_urls_toml())
        .set("redis", "partitions", PARTITIONS.to_string())
        .set("server", "operator_token_env", "\"OPERATOR_TOKEN\"");
    cfg.amplitude_destinations = r#"["production", "staging"]"#.into();
    (cluster, emu, cfg)
}

/// Amplitude cohort ids whose partitions cover every node, `per_node` each.
fn cohorts_on_every_node(
    cluster: &RedisCluster,
    keys: &Keys,
    per_node: usize,
) -> BTreeMap<String, usize> {
    let mut count = [0usize; 3];
    let mut out = BTreeMap::new();
    for i in 0.. {
        if count.iter().all(|c| *c >= per_node) {
            break;
        }
        let cohort = format!("c{i}");
        let p = keys.partition("amplitude", &cohort);
        let node = cluster.node_of(&keys.want(p, "amplitude", &cohort));
        if count[node] < per_node {
            count[node] += 1;
            out.insert(cohort, node);
        }
    }
    out
}

#[tokio::test]
async fn pushes_for_cohorts_on_every_node_fan_out_once_in_order() {
    let (cluster, emu, cfg) = cluster_stack();
    let keys = Keys::new(&cfg.prefix, PARTITIONS);
    let cohorts = cohorts_on_every_node(&cluster, &keys, 2);
    let bridge = Bridge::start(&cfg).await;
    let (status, body) = bridge.get("/readyz").await;
    assert_eq!(status, 200, "{body}");

    for cohort in cohorts.keys() {
        let users: Vec<String> = (0..3).map(|i| format!("{cohort}-u{i}")).collect();
        let refs: Vec<&str> = users.iter().map(String::as_str).collect();
        let enter = amplitude_body(cohort, true, 1_000, &format!("{cohort}-m1"), &refs);
        let (s, r) = bridge.amplitude(&enter).await;
        assert_eq!((s, r["accepted"].clone()), (200, json!(3)), "{r}");
        // The same delivery again is a duplicate: applied once.
        let (s, r) = bridge.amplitude(&enter).await;
        assert_eq!((s, r["duplicate"].clone()), (200, json!(true)), "{r}");
        // A newer exit of u0, then an older enter of u0: the older one is stale.
        let exit = amplitude_body(cohort, false, 2_000, &format!("{cohort}-m2"), &refs[..1]);
        let (_, r) = bridge.amplitude(&exit).await;
        assert_eq!(r["accepted"], 1, "{r}");
        let late = amplitude_body(cohort, true, 1_500, &format!("{cohort}-m3"), &refs[..1]);
        let (_, r) = bridge.amplitude(&late).await;
        assert_eq!(
            (r["stale"].clone(), r["accepted"].clone()),
            (json!(1), json!(0)),
            "{r}"
        );
    }

    // Each cohort's keys are on the node that serves its partition, and
    // every node holds some: the data really is spread over the cluster.
    for (cohort, node) in &cohorts {
        let p = keys.partition("amplitude", cohort);
        let want = keys.want(p, "amplitude", cohort);
        for (i, n) in cluster.nodes.iter().enumerate() {
            assert_eq!(
                n.keys(&cfg.prefix).contains(&want),
                i == *node,
                "{want} should live on node {node} only"
            );
        }
    }

    // Both destinations converge to exactly u1 and u2 of every cohort.
    for cohort in cohorts.keys() {
        let (u1, u2) = (format!("{cohort}-u1"), format!("{cohort}-u2"));
        let segment = format!("amplitude-{cohort}");
        converge(&emu, "production", &segment, &[&u1, &u2]).await;
        converge(&emu, "staging", &segment, &[&u1, &u2]).await;
    }
    // Once flushed, nothing is dirty or due anywhere, and the operator
    // listing (every partition, every node) shows every link.
    let (s, v) = eventually("every link is flushed", WAIT, || async {
        let (s, v) = bridge
            .operator(Method::GET, "/links", Some(OPERATOR_TOKEN), None)
            .await;
        let links = v["links"].as_array()?;
        let idle = links.len() == 2 * cohorts.len()
            && links
                .iter()
                .all(|l| l["dirty"] == 0 && l["due_at_ms"].is_null());
        idle.then_some((s, v))
    })
    .await;
    assert_eq!(s, 200, "{v}");
    let listed: BTreeSet<&str> = v["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["link"].as_str())
        .collect();
    for cohort in cohorts.keys() {
        assert!(listed.contains(format!("production:amplitude:{cohort}").as_str()));
        assert!(listed.contains(format!("staging:amplitude:{cohort}").as_str()));
    }
    // Each segment was created once and written with batched requests.
    let creates = emu
        .requests()
        .await
        .iter()
        .filter(|r| r["route"] == "create")
        .count();
    assert_eq!(creates, 2 * cohorts.len());
    bridge.stop().await;
}

#[tokio::test]
async fn dead_letters_redrive_and_a_paged_mixpanel_replace_work_on_a_cluster() {
    let (_cluster, emu, mut cfg) = cluster_stack();
    native::add_sources(&mut cfg);
    let bridge = native::start(&cfg).await;

    // A member LaunchDarkly refuses is set aside with its reason, then redriven.
    emu.configure(json!({"reject_keys": ["poison"]})).await;
    let (s, _) = bridge
        .amplitude(&amplitude_body(
            "px",
            true,
            1,
            "px1",
            &["ok1", "poison", "ok2"],
        ))
        .await;
    assert_eq!(s, 200);
    converge(&emu, "production", "amplitude-px", &["ok1", "ok2"]).await;
    let link = "production:amplitude:px";
    let dead = eventually("the poison member is dead-lettered", WAIT, || async {
        let (s, v) = bridge
            .operator(
                Method::GET,
                &format!("/links/{link}/dead-letters"),
                Some(OPERATOR_TOKEN),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        (v["dead_letters"].as_array()?.len() == 1).then_some(v)
    })
    .await;
    assert_eq!(dead["dead_letters"][0]["key"], "poison", "{dead}");
    emu.configure(json!({"reject_keys": []})).await;
    let (s, v) = bridge
        .operator(
            Method::POST,
            &format!("/links/{link}/redrive"),
            Some(OPERATOR_TOKEN),
            Some(json!({})),
        )
        .await;
    assert_eq!((s, v["redriven"].clone()), (200, json!(1)), "{v}");
    converge(
        &emu,
        "production",
        "amplitude-px",
        &["ok1", "ok2", "poison"],
    )
    .await;

    // Mixpanel: a cohort, then a replace in two pages; only the member in
    // no page is removed, and only after the last page.
    let ok = |action: &str| (200, json!({"action": action, "status": "success"}));
    let body = mixpanel_body("add_members", 77, "s0", 1, 1, &["a", "b", "c", "d"]);
    assert_eq!(mixpanel(&bridge, &body).await, ok("add_members"));
    converge(&emu, "production", "mixpanel-77", &["a", "b", "c", "d"]).await;
    let page1 = mixpanel_body("members", 77, "s1", 1, 2, &["a", "x"]);
    assert_eq!(mixpanel(&bridge, &page1).await, ok("members"));
    converge(
        &emu,
        "production",
        "mixpanel-77",
        &["a", "b", "c", "d", "x"],
    )
    .await;
    let page2 = mixpanel_body("members", 77, "s1", 2, 2, &["b", "y"]);
    assert_eq!(mixpanel(&bridge, &page2).await, ok("members"));
    converge(&emu, "production", "mixpanel-77", &["a", "b", "x", "y"]).await;
    bridge.stop().await;
}

#[tokio::test]
async fn readiness_names_the_cluster_node_that_is_down_and_recovers() {
    let (mut cluster, _emu, cfg) = cluster_stack();
    let bridge = Bridge::start(&cfg).await;
    let (status, body) = bridge.get("/readyz").await;
    assert_eq!(status, 200, "{body}");

    // One primary that may evict keys is enough to refuse readiness.
    let evicting = cluster.nodes[2].port;
    let set_policy = |policy: &str| {
        let mut c = cluster.nodes[2].client().get_connection().unwrap();
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg(policy)
            .query(&mut c)
            .unwrap();
    };
    set_policy("allkeys-lru");
    let (status, body) = bridge.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("allkeys-lru") && body.contains(&format!("127.0.0.1:{evicting}")),
        "the reason names the policy and the node: {body}"
    );
    set_policy("noeviction");
    let (status, body) = bridge.get("/readyz").await;
    assert_eq!(status, 200, "{body}");

    let down = cluster.nodes[1].port;
    cluster.kill(1);
    let reason = eventually("readiness reports the dead node", WAIT, || async {
        let (status, body) = bridge.get("/readyz").await;
        (status == 503).then_some(body)
    })
    .await;
    let v: Value = serde_json::from_str(&reason).expect("a JSON body");
    let text = v["reason"].as_str().unwrap_or_default();
    assert!(
        text.contains(&format!("127.0.0.1:{down}")),
        "the reason names the node that is down: {text}"
    );

    // A push for a cohort on the dead node is refused (503), not lost.
    let keys = Keys::new(&cfg.prefix, PARTITIONS);
    let on_dead = (0..)
        .map(|i| format!("d{i}"))
        .find(|c| {
            let p = keys.partition("amplitude", c);
            cluster.node_of(&keys.want(p, "amplitude", c)) == 1
        })
        .expect("some cohort lives on node 1");
    let (s, r) = bridge
        .amplitude(&amplitude_body(&on_dead, true, 1, "dead-1", &["u1"]))
        .await;
    assert_eq!(s, 503, "{r}");

    cluster.restart(1);
    eventually("readiness is back once the node is", WAIT, || async {
        (bridge.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let (s, r) = bridge
        .amplitude(&amplitude_body(&on_dead, true, 1, "dead-1", &["u1"]))
        .await;
    assert_eq!((s, r["accepted"].clone()), (200, json!(1)), "{r}");
    bridge.stop().await;
}
