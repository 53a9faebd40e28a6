//! Segment Engage audiences over HTTP: the signature vectors, mutations,
//! identify and track events singly and batched, ordering, dedupe, and bad
//! bodies; each reaching the LaunchDarkly emulator.

use crate::support::native::{self, segment, segment_identify, segment_track, SEGMENT_SECRET};
use crate::support::{converge, data_keys, eventually, signature_vectors, stack, WAIT};
use cohort_bridge::config::Secret;
use serde_json::{json, Value};

fn vectors() -> Vec<Value> {
    let v = signature_vectors(|p| p.starts_with("segment"));
    assert_eq!(v.len(), 2, "single and batched Segment vectors");
    v
}

#[tokio::test]
async fn segment_vectors_verify_over_http_and_mutations_get_401_storing_nothing() {
    let (redis, emu, mut cfg) = stack();
    native::add_sources(&mut cfg);
    let bridge = native::start(&cfg).await;

    // Mutations first, so "nothing stored" is checked against an empty Redis.
    for v in vectors() {
        let body = v["body"].as_str().unwrap().as_bytes();
        let sig = v["headers"]["X-Signature"].as_str().unwrap().to_string();
        let mut tampered = body.to_vec();
        let at = tampered.iter().position(|&b| b == b'1').unwrap();
        tampered[at] = b'2';
        let other = cohort_bridge::verify::segment_sign(&Secret::new("not-configured"), body);
        let mut flipped = sig.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        type Case<'a> = (&'a str, &'a [u8], Vec<(&'a str, String)>);
        let cases: Vec<Case<'_>> = vec![
            (
                "tampered body",
                &tampered,
                vec![("X-Signature", sig.clone())],
            ),
            ("flipped signature", body, vec![("X-Signature", flipped)]),
            ("unknown secret", body, vec![("X-Signature", other)]),
            ("not hex", body, vec![("X-Signature", "zz".into())]),
            ("missing header", body, vec![]),
        ];
        for (what, b, headers) in cases {
            let (status, resp) = bridge.post("segment", b, &headers).await;
            assert_eq!(status, 401, "{what}: {resp}");
            assert_eq!(resp["error"]["code"], "unauthorized", "{what}");
        }
    }
    assert!(
        data_keys(&redis, &cfg.prefix).is_empty(),
        "{:?}",
        data_keys(&redis, &cfg.prefix)
    );

    // Every vector, exact bytes and header.
    let vs = vectors();
    let single = vs
        .iter()
        .find(|v| !v["body"].as_str().unwrap().starts_with('['))
        .unwrap();
    let batched = vs
        .iter()
        .find(|v| v["body"].as_str().unwrap().starts_with('['))
        .unwrap();
    let (status, resp) = bridge
        .post(
            "segment",
            single["body"].as_str().unwrap().as_bytes(),
            &[(
                "X-Signature",
                single["headers"]["X-Signature"].as_str().unwrap().into(),
            )],
        )
        .await;
    assert_eq!(
        (status, resp["accepted"].clone()),
        (200, json!(1)),
        "{resp}"
    );
    // Batched, signed over element 0 only (Segment's current behaviour): the
    // other events are not authenticated, so by default nothing is applied.
    let (status, resp) = bridge
        .post(
            "segment",
            batched["body"].as_str().unwrap().as_bytes(),
            &[(
                "X-Signature",
                batched["headers"]["X-Signature"].as_str().unwrap().into(),
            )],
        )
        .await;
    assert_eq!(status, 401, "{resp}");
    assert_eq!(resp["error"]["code"], "unauthorized", "{resp}");
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("batch size to 1"),
        "{resp}"
    );
    // The same batch signed in full (Segment's pending fix) is accepted.
    let (status, resp) = bridge
        .post(
            "segment",
            batched["body"].as_str().unwrap().as_bytes(),
            &[(
                "X-Signature",
                batched["x_signature_if_full_body_signed"]
                    .as_str()
                    .unwrap()
                    .into(),
            )],
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["accepted"], 2, "{resp}");
    assert_eq!(resp["duplicate"], false, "{resp}");

    // user-123 entered power_users_30d (both vectors); user-456 exited it.
    let key = "segment-aud_2djnfxHHnYGVQfOAEBroQ9Ti87N";
    converge(&emu, "production", key, &["user-123"]).await;
    let seg = emu.segment("default", "production", key).await.unwrap();
    assert_eq!(seg["name"], "power_users_30d");
    bridge.stop().await;
}

#[tokio::test]
async fn identify_and_track_events_single_and_batched_reach_launchdarkly_in_version_order() {
    let (_redis, emu, mut cfg) = stack();
    native::add_sources(&mut cfg);
    let bridge = native::start(&cfg).await;
    let t = |m: u32| format!("2026-03-01T10:{m:02}:00.000Z");

    // One event per request.
    let one = serde_json::to_vec(&segment_identify("vips", "u1", true, "m1", &t(0))).unwrap();
    let (status, resp) = segment(&bridge, &one).await;
    assert_eq!(
        (status, resp["accepted"].clone()),
        (200, json!(1)),
        "{resp}"
    );
    let one = serde_json::to_vec(&segment_track("vips", "u2", true, "m2", &t(0))).unwrap();
    let (status, resp) = segment(&bridge, &one).await;
    assert_eq!(
        (status, resp["accepted"].clone()),
        (200, json!(1)),
        "{resp}"
    );

    // A batch: entries, an exit, a newer exit arriving before an older entry
    // (the entry is stale), and events that are not audience events.
    let batch = json!([
        segment_identify("vips", "u3", true, "m3", &t(1)),
        segment_track("vips", "u4", true, "m4", &t(1)),
        segment_track("vips", "u1", false, "m5", &t(2)),
        segment_identify("vips", "u5", false, "m6", &t(9)),
        segment_identify("vips", "u5", true, "m7", &t(8)),
        {"type": "track", "event": "Order Completed", "userId": "u9", "messageId": "m8"},
        {"type": "page", "userId": "u9", "messageId": "m9"},
    ]);
    let bytes = serde_json::to_vec(&batch).unwrap();
    let (status, resp) = segment(&bridge, &bytes).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["accepted"], 4, "{resp}");
    assert_eq!(resp["stale"], 1, "{resp}");
    assert!(resp["note"].as_str().unwrap().contains("skipped"), "{resp}");
    // A retried single event is applied once.
    let retry = serde_json::to_vec(&segment_track("vips", "u2", true, "m2", &t(0))).unwrap();
    let (_, resp) = segment(&bridge, &retry).await;
    assert_eq!(resp["duplicate"], true, "{resp}");
    // A request with no audience event at all is acknowledged with a note.
    let (status, resp) = segment(
        &bridge,
        br#"{"type":"track","event":"Signed Up","userId":"u7","messageId":"m10"}"#,
    )
    .await;
    assert_eq!(
        (status, resp["accepted"].clone()),
        (200, json!(0)),
        "{resp}"
    );
    assert!(resp["note"]
        .as_str()
        .unwrap()
        .contains("no Engage audience event"));

    eventually("the audience reaches LaunchDarkly", WAIT, || async {
        let got = emu
            .members("default", "production", "segment-aud_vips")
            .await;
        (got == Some(vec!["u2".into(), "u3".into(), "u4".into()])).then_some(())
    })
    .await;
    bridge.stop().await;
}

#[tokio::test]
async fn bad_segment_bodies_are_400_with_a_clear_message_and_store_nothing() {
    let (redis, _emu, mut cfg) = stack();
    native::add_sources(&mut cfg);
    let bridge = native::start(&cfg).await;
    let mut bad_trait = segment_identify("vips", "u1", true, "m1", "2026-03-01T10:00:00Z");
    bad_trait["traits"]["vips"] = json!("yes");
    let mut bad_time = segment_identify("vips", "u1", true, "m1", "2026-03-01T10:00:00Z");
    bad_time["timestamp"] = json!("last tuesday");
    for (body, needle) in [
        (b"{not json".to_vec(), "JSON"),
        (b"42".to_vec(), "one Segment event"),
        (
            serde_json::to_vec(&bad_trait).unwrap(),
            "traits.vips must be true or false",
        ),
        (
            serde_json::to_vec(&json!([bad_time])).unwrap(),
            "event 0: timestamp",
        ),
    ] {
        let (status, resp) = segment(&bridge, &body).await;
        assert_eq!(status, 400, "{resp}");
        assert_eq!(resp["error"]["code"], "invalid_payload");
        let msg = resp["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg} lacks {needle}");
    }
    assert!(data_keys(&redis, &cfg.prefix).is_empty());
    // The secret itself never appears in an answer.
    let (_, resp) = bridge
        .post("segment", b"{}", &[("X-Signature", "00".into())])
        .await;
    assert!(!resp.to_string().contains(SEGMENT_SECRET));
    bridge.stop().await;
}
