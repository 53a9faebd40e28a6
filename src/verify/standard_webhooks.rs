//! Standard Webhooks: `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature` (space-separated `v1,<base64>` entries).
//!
//! Signed bytes are `"{id}.{timestamp}.{body}"`, HMAC-SHA256 keyed with the
//! base64-decoded secret after its `whsec_` prefix. Any entry matching any
//! configured secret is accepted (rotation).

use super::{Headers, VerifyError, Window};
use crate::config::Secret;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

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
    format!("v1,{}", super::tag_base64(mac(secret, id, ts, body)))
}

/// The headers a Standard Webhooks sender would send with `body` at
/// `now_ms` (used by `replay`). The `webhook-id` is derived from the body, so
/// sending the same body twice is a retried delivery (de-duplicated).
pub fn sign_request(secret: &Secret, body: &[u8], now_ms: i64) -> Vec<(String, String)> {
    let id = webhook_id(body);
    let ts = (now_ms / 1000).to_string();
    vec![
        ("webhook-signature".into(), sign(secret, &id, &ts, body)),
        ("webhook-id".into(), id),
        ("webhook-timestamp".into(), ts),
    ]
}

/// A `webhook-id` that is the same for the same body: `msg_` + 24 hex digits of its SHA-256.
fn webhook_id(body: &[u8]) -> String {
    use sha2::Digest;
    let digest = Sha256::digest(body);
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

/// The `webhook-id`, the timestamp text and ms, and the candidate signatures.
type Prechecked<'h> = (&'h str, &'h str, i64, Vec<[u8; 32]>);

/// At most this many `v1,` entries are considered (rotation needs two or three).
const MAX_ENTRIES: usize = 8;

/// The headers alone, before the body is read: presence, the timestamp and
/// its window, and up to [`MAX_ENTRIES`] well-formed `v1,` signatures.
pub fn precheck(headers: &dyn Headers, window: Window) -> Result<Prechecked<'_>, VerifyError> {
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
    let ts_ms = window.check(secs.saturating_mul(1000))?;
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
    window: Window,
) -> Result<(String, i64), VerifyError> {
    use subtle::ConstantTimeEq;
    let (id, ts, ts_ms, candidates) = precheck(headers, window)?;
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

#[cfg(test)]
mod tests {
    use super::webhook_id;

    #[test]
    fn webhook_ids_follow_the_body() {
        assert_eq!(webhook_id(b"{}"), webhook_id(b"{}"));
        assert_ne!(webhook_id(b"{}"), webhook_id(b"{ }"));
        assert!(webhook_id(b"{}").starts_with("msg_"));
    }
}
