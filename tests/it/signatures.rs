//! Every authentication scheme against the known-answer vectors of
//! `reference/signature-vectors.json` (a copy of the shared reference), and
//! mutations of each: through the public `verify::verify`, as the receivers call it.

use crate::support::signature_vectors;
use cohort_bridge::config::{ResolvedAuth, Secret, SegmentBatches};
use cohort_bridge::verify::{self, Headers, VerifyError};
use serde_json::Value;
use std::time::Duration;

const TOL: Duration = Duration::from_secs(300);

fn vectors(prefix: &str) -> Vec<Value> {
    let v = signature_vectors(|p| p.starts_with(prefix));
    assert!(!v.is_empty(), "no {prefix} vectors");
    v
}

fn headers_of(v: &Value) -> Vec<(String, String)> {
    v["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

fn h(k: &str, v: &str) -> Vec<(String, String)> {
    vec![(k.to_string(), v.to_string())]
}

fn check(
    auth: &ResolvedAuth,
    headers: &Vec<(String, String)>,
    body: &[u8],
    now_ms: i64,
) -> Result<(), VerifyError> {
    verify::verify(auth, headers, body, now_ms).map(|_| ())
}

fn heap(secrets: &[&str]) -> ResolvedAuth {
    ResolvedAuth::HeapHash {
        secrets: secrets.iter().map(|s| Secret::new(*s)).collect(),
        tolerance: TOL,
    }
}

#[test]
fn heap_vectors_verify_and_sign_round_trips() {
    for v in vectors("heap") {
        let secret = v["secret"].as_str().unwrap();
        let ts = v["timestamp_ms"].as_i64().unwrap();
        let body = v["body"].as_str().unwrap().as_bytes();
        let header = v["headers"]["Heap-Hash"].as_str().unwrap();
        let verified = verify::verify(
            &heap(&["rotated-out", secret]),
            &h("Heap-Hash", header),
            body,
            ts + 5_000,
        )
        .unwrap();
        assert_eq!(verified.signed_at_ms(), Some(ts));
        assert_eq!(
            verify::heap_sign(&Secret::new(secret), &ts.to_string(), body),
            header
        );
        // Seconds are accepted too.
        let secs = verify::heap_sign(&Secret::new(secret), &(ts / 1000).to_string(), body);
        assert_eq!(
            verify::verify(&heap(&[secret]), &h("Heap-Hash", &secs), body, ts)
                .unwrap()
                .signed_at_ms(),
            Some(ts)
        );
    }
}

#[test]
fn heap_mutations_are_rejected() {
    let v = &vectors("heap")[0];
    let auth = heap(&[v["secret"].as_str().unwrap()]);
    let ts = v["timestamp_ms"].as_i64().unwrap();
    let body = v["body"].as_str().unwrap().as_bytes();
    let header = v["headers"]["Heap-Hash"].as_str().unwrap();
    let mut tampered = body.to_vec();
    tampered[10] ^= 1;
    assert_eq!(
        check(&auth, &h("Heap-Hash", header), &tampered, ts),
        Err(VerifyError::BadSignature)
    );
    let other_ts = header.replace(&ts.to_string(), &(ts + 1).to_string());
    assert_eq!(
        check(&auth, &h("Heap-Hash", &other_ts), body, ts),
        Err(VerifyError::BadSignature)
    );
    assert!(matches!(
        check(&auth, &h("Heap-Hash", header), body, ts + 301_000),
        Err(VerifyError::OutsideWindow(_))
    ));
    assert!(matches!(
        check(&auth, &h("Heap-Hash", header), body, ts - 301_000),
        Err(VerifyError::OutsideWindow(_))
    ));
    assert_eq!(
        check(&auth, &vec![], body, ts),
        Err(VerifyError::MissingHeader("Heap-Hash"))
    );
    assert_eq!(
        check(&heap(&["wrong"]), &h("Heap-Hash", header), body, ts),
        Err(VerifyError::BadSignature)
    );
    for bad in [
        "",
        "ts:abc,hmac:xx",
        "hmac:abc",
        "ts:1767225600000",
        "ts:1767225600000,hmac:%%%",
    ] {
        assert!(
            matches!(
                check(&auth, &h("Heap-Hash", bad), body, ts),
                Err(VerifyError::Malformed { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn segment_vectors_verify_single_and_batched_and_mutations_fail() {
    for v in vectors("segment") {
        let secret = Secret::new(v["secret"].as_str().unwrap());
        let auth = ResolvedAuth::SegmentSignature {
            secrets: vec![Secret::new("old"), secret.clone()],
            batches: SegmentBatches::FirstEvent,
        };
        let body = v["body"].as_str().unwrap().as_bytes();
        let sig = v["headers"]["X-Signature"].as_str().unwrap();
        assert_eq!(check(&auth, &h("X-Signature", sig), body, 0), Ok(()));
        if let Some(full) = v["x_signature_if_full_body_signed"].as_str() {
            assert_eq!(check(&auth, &h("X-Signature", full), body, 0), Ok(()));
            assert_eq!(verify::segment_sign(&secret, body), full);
        }
        let mut tampered = body.to_vec();
        let at = tampered.iter().position(|&b| b == b'1').unwrap();
        tampered[at] = b'2';
        assert_eq!(
            check(&auth, &h("X-Signature", sig), &tampered, 0),
            Err(VerifyError::BadSignature)
        );
        let wrong = ResolvedAuth::SegmentSignature {
            secrets: vec![Secret::new("wrong")],
            batches: SegmentBatches::FirstEvent,
        };
        assert_eq!(
            check(&wrong, &h("X-Signature", sig), body, 0),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            check(&auth, &vec![], body, 0),
            Err(VerifyError::MissingHeader("X-Signature"))
        );
        assert!(matches!(
            check(&auth, &h("X-Signature", "zz"), body, 0),
            Err(VerifyError::Malformed { .. })
        ));
    }
}

#[test]
fn standard_webhooks_vectors_verify_with_each_secret_and_mutations_fail() {
    for v in vectors("standard-webhooks") {
        let secrets: Vec<Secret> = match v.get("secret") {
            Some(s) => vec![Secret::new(s.as_str().unwrap())],
            None => v["secrets"]
                .as_object()
                .unwrap()
                .values()
                .map(|s| Secret::new(s.as_str().unwrap()))
                .collect(),
        };
        let hdrs = headers_of(&v);
        let body = v["body"].as_str().unwrap().as_bytes();
        let ts: i64 = hdrs.get_str("webhook-timestamp").unwrap().parse().unwrap();
        let now = ts * 1000 + 1000;
        let auth = |s: Vec<Secret>| ResolvedAuth::StandardWebhooks {
            secrets: s,
            tolerance: TOL,
        };
        for s in &secrets {
            let verified = verify::verify(&auth(vec![s.clone()]), &hdrs, body, now).unwrap();
            assert_eq!(verified.delivery_id(), hdrs.get_str("webhook-id"));
            assert_eq!(verified.signed_at_ms(), Some(ts * 1000));
        }
        let all = auth(secrets.clone());
        let mut tampered = body.to_vec();
        tampered[2] ^= 1;
        assert_eq!(
            check(&all, &hdrs, &tampered, now),
            Err(VerifyError::BadSignature)
        );
        let mut other_id = hdrs.clone();
        other_id.retain(|(k, _)| k != "webhook-id");
        other_id.push(("webhook-id".into(), "msg_other".into()));
        assert_eq!(
            check(&all, &other_id, body, now),
            Err(VerifyError::BadSignature)
        );
        assert!(matches!(
            check(&all, &hdrs, body, now + 301_000),
            Err(VerifyError::OutsideWindow(_))
        ));
        assert!(matches!(
            check(&all, &hdrs, body, now - 302_000),
            Err(VerifyError::OutsideWindow(_))
        ));
        assert_eq!(
            check(&auth(vec![Secret::new("whsec_AAAA")]), &hdrs, body, now),
            Err(VerifyError::BadSignature)
        );
    }
    let official = &vectors("standard-webhooks (official")[0];
    let hdrs = headers_of(official);
    let sig = verify::standard_webhooks_sign(
        &Secret::new(official["secret"].as_str().unwrap()),
        hdrs.get_str("webhook-id").unwrap(),
        hdrs.get_str("webhook-timestamp").unwrap(),
        official["body"].as_str().unwrap().as_bytes(),
    );
    assert_eq!(sig, hdrs.get_str("webhook-signature").unwrap());
}

#[test]
fn shared_secret_header_accepts_any_configured_secret() {
    let auth = ResolvedAuth::Header {
        header: "X-Token".into(),
        secrets: vec![Secret::new("old"), Secret::new("new")],
    };
    assert_eq!(check(&auth, &h("X-Token", "new"), b"{}", 0), Ok(()));
    assert_eq!(check(&auth, &h("x-token", "old"), b"{}", 0), Ok(()));
    assert_eq!(check(&auth, &h("X-Token", "Bearer new"), b"{}", 0), Ok(()));
    assert_eq!(
        check(&auth, &h("X-Token", "nope"), b"{}", 0),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        check(&auth, &h("X-Token", "ne"), b"{}", 0),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        check(&auth, &vec![], b"{}", 0),
        Err(VerifyError::MissingHeader("secret"))
    );
}

#[test]
fn basic_auth_known_answer_from_the_vectors() {
    // "mixpanel custom webhook": mixpanel / s3cr3t-sync-key.
    let header = vectors("mixpanel")[0]["headers"]["Authorization"]
        .as_str()
        .unwrap()
        .to_string();
    let auth = |user: &str, pass: &[&str]| ResolvedAuth::Basic {
        username: Secret::new(user),
        passwords: pass.iter().map(|p| Secret::new(*p)).collect(),
    };
    let ok = auth("mixpanel", &["rotated-away", "s3cr3t-sync-key"]);
    assert_eq!(check(&ok, &h("Authorization", &header), b"{}", 0), Ok(()));
    assert_eq!(
        check(
            &auth("mixpanel", &["other"]),
            &h("Authorization", &header),
            b"{}",
            0
        ),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        check(
            &auth("someone", &["s3cr3t-sync-key"]),
            &h("Authorization", &header),
            b"{}",
            0
        ),
        Err(VerifyError::Mismatch)
    );
    assert!(matches!(
        check(&ok, &h("Authorization", "Basic !!!"), b"{}", 0),
        Err(VerifyError::Malformed { .. })
    ));
    assert!(matches!(
        check(&ok, &h("Authorization", "Bearer abc"), b"{}", 0),
        Err(VerifyError::Malformed { .. })
    ));
}
