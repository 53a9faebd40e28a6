//! Heap's `Heap-Hash: ts:<ts>,hmac:<base64>` header.
//!
//! `hmac = base64(HMAC-SHA256(utf8(secret), "<ts>" ++ raw body))`: the
//! timestamp text exactly as sent, then the body, no separator. Heap's
//! reference verifier sends milliseconds; a value below 10^12 is read as
//! seconds (docs/sources.md, "Heap: segment sync webhook"). The timestamp must be within the tolerance window.

use super::{Headers, VerifyError, Window};
use crate::config::Secret;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const HEADER: &str = "Heap-Hash";

fn mac(secret: &Secret, ts: &str, body: &[u8]) -> Option<HmacSha256> {
    let mut mac = super::keyed::<HmacSha256>(secret.expose().as_bytes())?;
    mac.update(ts.as_bytes());
    mac.update(body);
    Some(mac)
}

/// The header value Heap would send for `body` at `ts`.
pub fn sign(secret: &Secret, ts: &str, body: &[u8]) -> String {
    format!("ts:{ts},hmac:{}", super::tag_base64(mac(secret, ts, body)))
}

/// The headers Heap would send with `body` at `now_ms` (used by `replay`).
pub fn sign_request(secret: &Secret, body: &[u8], now_ms: i64) -> Vec<(String, String)> {
    vec![(HEADER.into(), sign(secret, &now_ms.to_string(), body))]
}

/// The header alone, before the body is read: its timestamp (text and ms,
/// inside the window) and the 32-byte signature.
pub fn precheck(
    headers: &dyn Headers,
    window: Window,
) -> Result<(&str, i64, [u8; 32]), VerifyError> {
    let value = headers
        .get_str(HEADER)
        .ok_or(VerifyError::MissingHeader(HEADER))?;
    let (mut ts, mut sig) = (None, None);
    for part in value.split(',') {
        match part.trim().split_once(':') {
            Some(("ts", v)) => ts = Some(v.trim()),
            Some(("hmac", v)) => sig = Some(v.trim()),
            _ => {}
        }
    }
    let malformed = |reason| VerifyError::Malformed {
        header: HEADER,
        reason,
    };
    let ts = ts.ok_or(malformed("no ts"))?;
    let sig_b64 = sig.ok_or(malformed("no hmac"))?;
    if ts.is_empty() || ts.len() > 16 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("ts is not a Unix timestamp"));
    }
    let raw: i64 = ts
        .parse()
        .map_err(|_| malformed("ts is not a Unix timestamp"))?;
    let ts_ms = if raw < 1_000_000_000_000 {
        raw * 1000
    } else {
        raw
    };
    // The window first: a stale request costs no MAC. 32 bytes are 44
    // base64 characters; nothing longer is decoded.
    window.check(ts_ms)?;
    let mut sig = [0u8; 32];
    if sig_b64.len() != 44
        || base64::engine::general_purpose::STANDARD.decode_slice(sig_b64, &mut sig) != Ok(32)
    {
        return Err(malformed("hmac is not 32 bytes of base64"));
    }
    Ok((ts, ts_ms, sig))
}

/// Verifies the header; returns the signed timestamp in ms.
pub fn verify(
    headers: &dyn Headers,
    body: &[u8],
    secrets: &[Secret],
    window: Window,
) -> Result<i64, VerifyError> {
    let (ts, ts_ms, sig) = precheck(headers, window)?;
    let mut ok = false;
    for s in secrets {
        ok |= mac(s, ts, body).is_some_and(|m| m.verify_slice(&sig).is_ok());
    }
    if !ok {
        return Err(VerifyError::BadSignature);
    }
    Ok(ts_ms)
}
