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

/// The `webhook-id`, the timestamp text and ms, and the candidate signatures.
type Prechecked<'h> = (&'h str, &'h str, i64, Vec<[u8; 32]>);

/// At most this many `v1,` entries are considered (rotation needs two or three).
const MAX_ENTRIES: usize = 8;

/// The headers alone, before the body is read: presence, the timestamp and
/// its window, and up to [`MAX_ENTRIES`] well-formed `v1,` signatures.
pub fn precheck(
    headers: &dyn Headers,
    tolerance: Duration,
    now_ms: i64,
) -> Result<Prechecked<'_>, VerifyError> {
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
    // The window first: a stale or future request costs no MAC.
    let ts_ms = check_window(secs.saturating_mul(1000), now_ms, tolerance)?;
    let candidates: Vec<[u8; 32]> = sigs
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        // 32 bytes are 44 base64 characters: nothing else is decoded.
        .filter(|b64| b64.len() == 44)
        .filter_map(|b64| {
            let mut out = [0u8; 32];
            match base64::engine::general_purpose::STANDARD.decode_slice(b64, &mut out) {
                Ok(32) => Some(out),
                _ => None,
            }
        })
        .take(MAX_ENTRIES)
        .collect();
    if candidates.is_empty() {
        return Err(VerifyError::Malformed {
            header: "webhook-signature",
            reason: "no v1 signature of 32 bytes",
        });
    }
    Ok((id, ts, ts_ms, candidates))
}

/// Returns the `webhook-id` and the signed timestamp in ms. One MAC per
/// secret, compared in constant time against each candidate entry.
pub fn verify(
    headers: &dyn Headers,
    body: &[u8],
    secrets: &[Secret],
    tolerance: Duration,
    now_ms: i64,
) -> Result<(String, i64), VerifyError> {
    use subtle::ConstantTimeEq;
    let (id, ts, ts_ms, candidates) = precheck(headers, tolerance, now_ms)?;
    let mut ok = subtle::Choice::from(0u8);
    for s in secrets {
        let Some(m) = mac(s, id, ts, body) else {
            continue;
        };
        let tag = m.finalize().into_bytes();
        for c in &candidates {
            ok |= tag.as_slice().ct_eq(c.as_slice());
        }
    }
    if !bool::from(ok) {
        return Err(VerifyError::BadSignature);
    }
    Ok((id.to_string(), ts_ms))
}
