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

fn mac(secret: &Secret, id: &str, ts: &str, body: &[u8]) -> Option<HmacSha256> {
    let mut mac = super::keyed::<HmacSha256>(&key(secret))?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The `webhook-signature` value for one secret.
pub fn sign(secret: &Secret, id: &str, ts: &str, body: &[u8]) -> String {
    let sig = mac(secret, id, ts, body)
        .map(|m| m.finalize().into_bytes().to_vec())
        .unwrap_or_default();
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
            ok |= mac(s, id, ts, body).is_some_and(|m| m.verify_slice(&sig).is_ok());
        }
    }
    if !ok {
        return Err(VerifyError::BadSignature);
    }
    let ts_ms = check_window(secs.saturating_mul(1000), now_ms, tolerance)?;
    Ok((id.to_string(), ts_ms))
}
