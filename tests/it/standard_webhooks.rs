//! Standard Webhooks as a source over HTTP: the official and rotation
//! vectors, mutations, our body format end to end (adds, removes, a whole-
//! cohort snapshot, dedupe on `webhook-id`), bad bodies; and secret rotation
//! over HTTP for every authentication scheme.

use crate::support::bridge::{amplitude_body, heap_body, AMPLITUDE_SECRET, HEAP_SECRET};
use crate::support::native::{self, standard_webhooks, sw_headers, SW_NEW, SW_OLD};
use crate::support::{data_keys, eventually, signature_vectors, stack, WAIT};
use cohort_bridge::config::Secret;
use serde_json::{json, Value};

fn vectors() -> Vec<Value> {
    let v = signature_vectors(|p| p.starts_with("standard-webhooks"));
    assert_eq!(v.len(), 2, "official and rotation vectors");
    v
}

fn headers_of(v: &Value) -> Vec<(&'static str, String)> {
    ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .into_iter()
        .map(|h| (h, v["headers"][h].as_str().unwrap().to_string()))
        .collect()
}

fn replace(
    headers: &[(&'static str, String)],
    name: &str,
    value: &str,
) -> Vec<(&'static str, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                *k,
                if *k == name {
                    value.to_string()
                } else {
                    v.clone()
                },
            )
        })
        .collect()
}

#[tokio::test]
async fn standard_webhooks_vectors_verify_over_http_and_mutations_get_401_storing_nothing() {
    let (redis, emu, mut cfg) = stack();
    native::add_sources(&mut cfg);
    let bridge = native::start(&cfg).await;
    let vs = vectors();
    let official = vs.iter().find(|v| v.get("secret").is_some()).unwrap();
    let rotation = vs.iter().find(|v| v.get("secrets").is_some()).unwrap();

    for v in [official, rotation] {
        let body = v["body"].as_str().unwrap().as_bytes();
        let h = headers_of(v);
        let mut tampered = body.to_vec();
        tampered[2] ^= 1;
        let sig = v["headers"]["webhook-signature"].as_str().unwrap();
        let ts = v["headers"]["webhook-timestamp"].as_str().unwrap();
        type Case<'a> = (&'a str, &'a str, &'a [u8], Vec<(&'a str, String)>);
        let cases: Vec<Case<'_>> = vec![
            ("tampered body", "sw-vectors", &tampered, h.clone()),
            (
                "other webhook-id",
                "sw-vectors",
                body,
                replace(&h, "webhook-id", "msg_other"),
            ),
            (
                "other timestamp",
                "sw-vectors",
                body,
                replace(
                    &h,
                    "webhook-timestamp",
                    &(ts.parse::<i64>().unwrap() + 1).to_string(),
                ),
            ),
            (
                "unsigned",
                "sw-vectors",
                body,
                replace(&h, "webhook-signature", "v1,AAAA"),
            ),
            ("missing signature", "sw-vectors", body, h[..2].to_vec()),
            // The regular source's 300 s window refuses the vectors' old timestamps.
            ("outside the window", "standard-webhooks", body, h.clone()),
        ];
        for (what, source, b, headers) in cases {
            let (status, resp) = bridge.post(source, b, &headers).await;
            assert_eq!(status, 401, "{what}: {resp}");
        }
        // Only the old rotation secret's entry: sw-vectors does not hold that secret.
        let id = v["headers"]["webhook-id"].as_str().unwrap();
        let new_entry =
            cohort_bridge::verify::standard_webhooks_sign(&Secret::new(SW_NEW), id, ts, body);
        if let Some(old_entry) = sig
            .split(' ')
            .find(|e| sig.contains(' ') && *e != new_entry)
        {
            let (status, _) = bridge
                .post(
                    "sw-vectors",
                    body,
                    &replace(&h, "webhook-signature", old_entry),
                )
                .await;
            assert_eq!(status, 401, "the old secret's signature alone");
        }
    }
    assert!(
        data_keys(&redis, &cfg.prefix).is_empty(),
        "{:?}",
        data_keys(&redis, &cfg.prefix)
    );

    // The official vector verifies; its body is not our format: 400, not 401.
    let (status, resp) = bridge
        .post(
            "sw-vectors",
            official["body"].as_str().unwrap().as_bytes(),
            &headers_of(official),
        )
        .await;
    assert_eq!(status, 400, "{resp}");
    assert!(resp["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cohort_id"));
    // The rotation vector (event envelope, camelCase) verifies with either
    // entry and is applied: user-1, user-2 in, user-3 out.
    let (status, resp) = bridge
        .post(
            "sw-vectors",
            rotation["body"].as_str().unwrap().as_bytes(),
            &headers_of(rotation),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["accepted"], 3, "{resp}");
    // Retried: de-duplicated on webhook-id.
    let (_, resp) = bridge
        .post(
            "sw-vectors",
            rotation["body"].as_str().unwrap().as_bytes(),
            &headers_of(rotation),
        )
        .await;
    assert_eq!(resp["duplicate"], true, "{resp}");
    eventually("the cohort reaches LaunchDarkly", WAIT, || async {
        let got = emu
            .members("default", "production", "sw-vectors-7khm89cz")
            .await;
        (got == Some(vec!["user-1".into(), "user-2".into()])).then_some(())
    })
    .await;
    let seg = emu
        .segment("default", "production", "sw-vectors-7khm89cz")
        .await
        .unwrap();
    assert_eq!(seg["name"], "Power Users (30d)");
    bridge.stop().await;
}

#[tokio::test]
async fn adds_removes_and_a_whole_cohort_snapshot_reach_launchdarkly() {
    let (_redis, emu, mut cfg) = stack();
    native::add_sources(&mut cfg);
    let bridge = native::start(&cfg).await;
    let key = "standard-webhooks-beta";
    let (status, resp) = standard_webhooks(
        &bridge,
        "msg_1",
        &json!({"cohort_id": "beta", "cohort_name": "Beta testers", "context_kind": "user",
                "add": ["u1", "u2", "u3", "u4"], "remove": [], "version": 1_000}),
    )
    .await;
    assert_eq!(
        (status, resp["accepted"].clone()),
        (200, json!(4)),
        "{resp}"
    );
    let (_, resp) = standard_webhooks(
        &bridge,
        "msg_2",
        &json!({"cohort_id": "beta", "remove": ["u4"], "version": 2_000}),
    )
    .await;
    assert_eq!(resp["accepted"], 1, "{resp}");
    // Retried with the same webhook-id (a newer signature): applied once.
    let (_, resp) = standard_webhooks(
        &bridge,
        "msg_2",
        &json!({"cohort_id": "beta", "remove": ["u4"], "version": 2_000}),
    )
    .await;
    assert_eq!(resp["duplicate"], true, "{resp}");
    eventually("adds and removes reach LaunchDarkly", WAIT, || async {
        let got = emu.members("default", "production", key).await;
        (got == Some(vec!["u1".into(), "u2".into(), "u3".into()])).then_some(())
    })
    .await;
    let seg = emu.segment("default", "production", key).await.unwrap();
    assert_eq!(seg["name"], "Beta testers");

    // The whole cohort is {u2, u5}: u1 and u3 are removed.
    let (status, resp) = standard_webhooks(
        &bridge,
        "msg_3",
        &json!({"cohort_id": "beta", "add": ["u2", "u5"], "snapshot": true, "version": 3_000}),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["snapshot"]["complete"], true, "{resp}");
    assert_eq!(resp["snapshot"]["removed"], 2, "{resp}");
    eventually("the snapshot reaches LaunchDarkly", WAIT, || async {
        let got = emu.members("default", "production", key).await;
        (got == Some(vec!["u2".into(), "u5".into()])).then_some(())
    })
    .await;
    bridge.stop().await;
}

#[tokio::test]
async fn bad_standard_webhooks_bodies_are_400_with_a_clear_message_and_store_nothing() {
    let (redis, _emu, mut cfg) = stack();
    native::add_sources(&mut cfg);
    let bridge = native::start(&cfg).await;
    let cases = [
        (json!({"add": ["a"]}), "cohort_id is missing"),
        (
            json!({"cohort_id": "c", "add": "a"}),
            "add must be an array",
        ),
        (
            json!({"cohort_id": "c", "remove": [null]}),
            "remove[0] must be a key",
        ),
        (
            json!({"cohort_id": "c", "add": ["a"], "context_kind": "account"}),
            "context_kind \"account\" differs",
        ),
        (
            json!({"cohort_id": "c", "snapshot": 1}),
            "snapshot must be true or false",
        ),
        (
            json!({"cohort_id": "c", "version": "soon"}),
            "version must be",
        ),
        (json!([1]), "JSON"),
    ];
    for (i, (body, needle)) in cases.into_iter().enumerate() {
        let (status, resp) = standard_webhooks(&bridge, &format!("msg_bad_{i}"), &body).await;
        assert_eq!(status, 400, "{resp}");
        assert_eq!(resp["error"]["code"], "invalid_payload");
        let msg = resp["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg} lacks {needle}");
    }
    assert!(data_keys(&redis, &cfg.prefix).is_empty());
    bridge.stop().await;
}

/// Every scheme accepts each of its configured secrets (rotation), over HTTP.
#[tokio::test]
async fn every_scheme_accepts_each_configured_secret_over_http() {
    let (_redis, _emu, mut cfg) = stack();
    native::add_sources(&mut cfg);
    cfg.sources.push_str(
        r#"
[[sources]]
id = "amp-rotating"
kind = "amplitude"
destinations = ["production"]
auth = { scheme = "header", header = "X-Token", secret_env = ["AMPLITUDE_SECRET", "SEGMENT_OLD_SECRET"] }

[[sources]]
id = "heap-rotating"
kind = "heap"
destinations = ["production"]
auth = { scheme = "heap-hash", secret_env = ["HEAP_SECRET", "SEGMENT_OLD_SECRET"] }
"#,
    );
    let bridge = native::start(&cfg).await;
    let old = "segment-secret-before-rotation";
    for (i, secret) in [AMPLITUDE_SECRET, old].into_iter().enumerate() {
        let body =
            serde_json::to_vec(&amplitude_body("c", true, 1, &format!("m{i}"), &["u"])).unwrap();
        let (status, resp) = bridge
            .post("amp-rotating", &body, &[("X-Token", secret.into())])
            .await;
        assert_eq!(status, 200, "header secret {i}: {resp}");
    }
    for (i, secret) in [HEAP_SECRET, old].into_iter().enumerate() {
        let body = heap_body(1, &format!("task{i}"), 1, 1, &["u"], &[]);
        let ts = cohort_bridge::clock::now_ms().to_string();
        let h = cohort_bridge::verify::heap_sign(&Secret::new(secret), &ts, &body);
        let (status, resp) = bridge
            .post("heap-rotating", &body, &[("Heap-Hash", h)])
            .await;
        assert_eq!(status, 200, "heap secret {i}: {resp}");
    }
    let event = serde_json::to_vec(&native::segment_identify(
        "a",
        "u",
        true,
        "m1",
        "2026-01-01T00:00:00Z",
    ))
    .unwrap();
    for secret in [native::SEGMENT_SECRET, old] {
        let sig = cohort_bridge::verify::segment_sign(&Secret::new(secret), &event);
        let (status, resp) = bridge
            .post("segment", &event, &[("X-Signature", sig)])
            .await;
        assert_eq!(status, 200, "{resp}");
    }
    let body =
        serde_json::to_vec(&native::mixpanel_body("add_members", 1, "s", 1, 1, &["u"])).unwrap();
    for password in [
        native::MIXPANEL_PASSWORD,
        "mixpanel-password-before-rotation",
    ] {
        let creds = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:{password}", native::MIXPANEL_USER),
        );
        let (status, resp) = bridge
            .post(
                "mixpanel",
                &body,
                &[("Authorization", format!("Basic {creds}"))],
            )
            .await;
        assert_eq!(status, 200, "{resp}");
    }
    let body = serde_json::to_vec(&json!({"cohort_id": "c", "add": ["u"]})).unwrap();
    for (i, secret) in [SW_OLD, SW_NEW].into_iter().enumerate() {
        let (status, resp) = bridge
            .post(
                "standard-webhooks",
                &body,
                &sw_headers(secret, &format!("msg_rot_{i}"), &body),
            )
            .await;
        assert_eq!(status, 200, "{resp}");
    }
    // A secret that is not configured is refused by each.
    let sig = cohort_bridge::verify::segment_sign(&Secret::new("never-configured"), &event);
    assert_eq!(
        bridge
            .post("segment", &event, &[("X-Signature", sig)])
            .await
            .0,
        401
    );
    let (status, _) = bridge
        .post(
            "standard-webhooks",
            &body,
            &sw_headers(native::SW_OFFICIAL, "msg_x", &body),
        )
        .await;
    assert_eq!(status, 401);
    bridge.stop().await;
}

/// A snapshot of a cohort larger than one finalization chunk (500 members,
/// and past Redis's compact hash encoding, so HSCAN really pages) removes
/// exactly the members it does not list.
#[tokio::test]
async fn a_snapshot_finalized_over_several_chunks_removes_exactly_the_unlisted_members() {
    let (redis, emu, mut cfg) = stack();
    native::add_sources(&mut cfg);
    let bridge = native::start(&cfg).await;
    let all: Vec<String> = (0..1_300).map(|i| format!("m{i:04}")).collect();
    let (status, resp) = standard_webhooks(
        &bridge,
        "msg_big_1",
        &json!({"cohort_id": "big", "add": all, "version": 1_000}),
    )
    .await;
    assert_eq!(
        (status, resp["accepted"].clone()),
        (200, json!(1_300)),
        "{resp}"
    );
    // Keep every 13th member: 100 listed, 1,200 to remove.
    let kept: Vec<String> = all.iter().step_by(13).cloned().collect();
    let (status, resp) = standard_webhooks(
        &bridge,
        "msg_big_2",
        &json!({"cohort_id": "big", "add": kept, "snapshot": true, "version": 2_000}),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["snapshot"]["removed"], 1_200, "{resp}");

    let k = cohort_bridge::store::Keys::new(&cfg.prefix, 4);
    let p = k.partition("standard-webhooks", "big");
    let mut c = redis.client().get_connection().unwrap();
    let want: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(k.want(p, "standard-webhooks", "big"))
        .query(&mut c)
        .unwrap();
    let desired_in: Vec<String> = want
        .iter()
        .filter(|(_, v)| cohort_bridge::store::MemberValue::parse(v).is_some_and(|m| m.desired))
        .map(|(m, _)| m.clone())
        .collect();
    assert_eq!(desired_in, kept);
    eventually(
        "LaunchDarkly holds only the listed members",
        WAIT,
        || async {
            let got = emu
                .members("default", "production", "standard-webhooks-big")
                .await;
            (got.as_ref() == Some(&kept)).then_some(())
        },
    )
    .await;
    bridge.stop().await;
}
