//! Standard Webhooks: `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature` (space-separated `v1,<base64>` entries).
//!
//! Signed bytes are `"{id}.{timestamp}.{body}"`, HMAC-SHA256 keyed with the
//! base64-decoded secret after its `whsec_` prefix. Any entry matching any
//! configured secret is accepted (rotation).

use super::{check_window, Headers, VerifyError};
use crate::config::Secret;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

type HmacSha256 = Hmac<Sha256>;

fn key(secret: &Secret) -> Vec<u8> {
    let s = secret.expose();
    let s = s.strip_prefix("whsec_").unwrap_or(s);
    // A secret that is not base64 is used as raw bytes rather than refused at runtime.
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|_| s.as_bytes().to_vec())
}

fn mac(secret: &Secret, id: &str, ts: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(&key(secret)).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` value for one secret.
pub fn sign(secret: &Secret, id: &str, ts: &str, body: &[u8]) -> String {
    let sig = mac(secret, id, ts, body).finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(sig)
    )
}

/// Returns the `webhook-id` and the signed timestamp in ms.
pub fn verify(
    headers: &dyn Headers,
    body: &[u8],
    secrets: &[Secret],
    tolerance: Duration,
    now_ms: i64,
) -> Result<(String, i64), VerifyError> {
    let id = headers
        .get_str("webhook-id")
        .ok_or(VerifyError::MissingHeader("webhook-id"))?;
    let ts = headers
        .get_str("webhook-timestamp")
        .ok_or(VerifyError::MissingHeader("webhook-timestamp"))?;
    let sigs = headers
        .get_str("webhook-signature")
        .ok_or(VerifyError::MissingHeader("webhook-signature"))?;
    let secs: i64 = ts.trim().parse().map_err(|_| VerifyError::Malformed {
        header: "webhook-timestamp",
        reason: "not a Unix timestamp",
    })?;
    let mut ok = false;
    for entry in sigs.split(' ') {
        let Some(("v1", b64)) = entry.split_once(',') else {
            continue;
        };
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            continue;
        };
        for s in secrets {
            ok |= mac(s, id, ts, body).verify_slice(&sig).is_ok();
        }
    }
    if !ok {
        return Err(VerifyError::BadSignature);
    }
    let ts_ms = check_window(secs.saturating_mul(1000), now_ms, tolerance)?;
    Ok((id.to_string(), ts_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Duration = Duration::from_secs(300);

    fn headers(v: &serde_json::Value) -> Vec<(String, String)> {
        v["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn every_standard_webhooks_vector_verifies() {
        let vectors = crate::verify::vectors::by_platform("standard-webhooks");
        assert_eq!(vectors.len(), 2);
        for v in vectors {
            let secrets: Vec<Secret> = match v.get("secret") {
                Some(s) => vec![Secret::new(s.as_str().unwrap())],
                None => v["secrets"]
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|s| Secret::new(s.as_str().unwrap()))
                    .collect(),
            };
            let h = headers(&v);
            let body = v["body"].as_str().unwrap().as_bytes();
            let ts: i64 = h.get_str("webhook-timestamp").unwrap().parse().unwrap();
            let now = ts * 1000 + 1000;
            // Each secret alone verifies (rotation: old and new both valid).
            for s in &secrets {
                let (id, at) = verify(&h, body, std::slice::from_ref(s), TOL, now).unwrap();
                assert_eq!(id, h.get_str("webhook-id").unwrap());
                assert_eq!(at, ts * 1000);
            }
            let mut tampered = body.to_vec();
            tampered[2] ^= 1;
            assert_eq!(
                verify(&h, &tampered, &secrets, TOL, now),
                Err(VerifyError::BadSignature)
            );
            let mut other_id = h.clone();
            other_id.retain(|(k, _)| k != "webhook-id");
            other_id.push(("webhook-id".into(), "msg_other".into()));
            assert_eq!(
                verify(&other_id, body, &secrets, TOL, now),
                Err(VerifyError::BadSignature)
            );
            assert!(matches!(
                verify(&h, body, &secrets, TOL, now + 301_000),
                Err(VerifyError::OutsideWindow(_))
            ));
            assert!(matches!(
                verify(&h, body, &secrets, TOL, now - 302_000),
                Err(VerifyError::OutsideWindow(_))
            ));
            assert_eq!(
                verify(&h, body, &[Secret::new("whsec_AAAA")], TOL, now),
                Err(VerifyError::BadSignature)
            );
        }
    }

    #[test]
    fn sign_round_trips_the_official_vector() {
        let v = &crate::verify::vectors::by_platform("standard-webhooks (official")[0];
        let h = headers(v);
        let s = Secret::new(v["secret"].as_str().unwrap());
        let sig = sign(
            &s,
            h.get_str("webhook-id").unwrap(),
            h.get_str("webhook-timestamp").unwrap(),
            v["body"].as_str().unwrap().as_bytes(),
        );
        assert_eq!(sig, h.get_str("webhook-signature").unwrap());
    }
}
