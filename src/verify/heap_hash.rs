//! Heap's `Heap-Hash: ts:<ts>,hmac:<base64>` header.
//!
//! `hmac = base64(HMAC-SHA256(utf8(secret), "<ts>" ++ raw body))`: the
//! timestamp text exactly as sent, then the body, no separator. Heap's
//! reference verifier sends milliseconds; a value below 10^12 is read as
//! seconds (sources.md). The timestamp must be within the tolerance window.

use super::{check_window, Headers, VerifyError};
use crate::config::Secret;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

type HmacSha256 = Hmac<Sha256>;

const HEADER: &str = "Heap-Hash";

fn mac(secret: &Secret, ts: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(ts.as_bytes());
    mac.update(body);
    mac
}

/// The header value Heap would send for `body` at `ts` (used by `replay`).
pub fn sign(secret: &Secret, ts: &str, body: &[u8]) -> String {
    let sig = mac(secret, ts, body).finalize().into_bytes();
    format!(
        "ts:{ts},hmac:{}",
        base64::engine::general_purpose::STANDARD.encode(sig)
    )
}

/// Verifies the header; returns the signed timestamp in ms.
pub fn verify(
    headers: &dyn Headers,
    body: &[u8],
    secrets: &[Secret],
    tolerance: Duration,
    now_ms: i64,
) -> Result<i64, VerifyError> {
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
    let sig = sig.ok_or(malformed("no hmac"))?;
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
    let sig = base64::engine::general_purpose::STANDARD
        .decode(sig)
        .map_err(|_| malformed("hmac is not base64"))?;
    let mut ok = false;
    for s in secrets {
        ok |= mac(s, ts, body).verify_slice(&sig).is_ok();
    }
    if !ok {
        return Err(VerifyError::BadSignature);
    }
    check_window(ts_ms, now_ms, tolerance)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Duration = Duration::from_secs(300);

    fn vector() -> (Secret, i64, String, String) {
        let v = &crate::verify::vectors::by_platform("heap")[0];
        (
            Secret::new(v["secret"].as_str().unwrap()),
            v["timestamp_ms"].as_i64().unwrap(),
            v["body"].as_str().unwrap().to_string(),
            v["headers"]["Heap-Hash"].as_str().unwrap().to_string(),
        )
    }

    fn h(v: &str) -> Vec<(String, String)> {
        vec![("heap-hash".into(), v.into())]
    }

    #[test]
    fn every_heap_vector_verifies() {
        let vectors = crate::verify::vectors::by_platform("heap");
        assert!(!vectors.is_empty());
        for v in vectors {
            let secret = Secret::new(v["secret"].as_str().unwrap());
            let ts = v["timestamp_ms"].as_i64().unwrap();
            let body = v["body"].as_str().unwrap();
            let header = v["headers"]["Heap-Hash"].as_str().unwrap();
            assert_eq!(
                verify(
                    &h(header),
                    body.as_bytes(),
                    std::slice::from_ref(&secret),
                    TOL,
                    ts + 5_000
                ),
                Ok(ts)
            );
            assert_eq!(sign(&secret, &ts.to_string(), body.as_bytes()), header);
        }
    }

    #[test]
    fn rotation_accepts_any_secret() {
        let (secret, ts, body, header) = vector();
        let secrets = [Secret::new("other"), secret];
        assert_eq!(
            verify(&h(&header), body.as_bytes(), &secrets, TOL, ts),
            Ok(ts)
        );
    }

    #[test]
    fn mutations_are_rejected() {
        let (secret, ts, body, header) = vector();
        let s = [secret];
        let mut tampered = body.clone().into_bytes();
        tampered[10] ^= 1;
        assert_eq!(
            verify(&h(&header), &tampered, &s, TOL, ts),
            Err(VerifyError::BadSignature)
        );
        let other_ts = header.replace(&ts.to_string(), &(ts + 1).to_string());
        assert_eq!(
            verify(&h(&other_ts), body.as_bytes(), &s, TOL, ts),
            Err(VerifyError::BadSignature)
        );
        // Correctly signed but stale, and in the future.
        assert!(matches!(
            verify(&h(&header), body.as_bytes(), &s, TOL, ts + 301_000),
            Err(VerifyError::OutsideWindow(_))
        ));
        assert!(matches!(
            verify(&h(&header), body.as_bytes(), &s, TOL, ts - 301_000),
            Err(VerifyError::OutsideWindow(_))
        ));
        assert_eq!(
            verify(&vec![], body.as_bytes(), &s, TOL, ts),
            Err(VerifyError::MissingHeader(HEADER))
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
                    verify(&h(bad), body.as_bytes(), &s, TOL, ts),
                    Err(VerifyError::Malformed { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn seconds_timestamps_are_accepted() {
        let (secret, ts, body, _) = vector();
        let secs = (ts / 1000).to_string();
        let header = sign(&secret, &secs, body.as_bytes());
        assert_eq!(
            verify(&h(&header), body.as_bytes(), &[secret], TOL, ts),
            Ok(ts)
        );
    }
}
