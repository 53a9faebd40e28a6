//! Segment's `X-Signature: hex(HMAC-SHA1(utf8(secret), body))`.
//!
//! Batched (Actions) webhooks sign only element 0 of the JSON array, as
//! `JSON.stringify(body[0])`. A JavaScript sender emits the array with
//! `JSON.stringify` too, so element 0's raw bytes inside the body are exactly
//! that string; we verify against them, and also against the whole body
//! (Segment's pending fix signs the full array).

use super::{Headers, VerifyError};
use crate::config::Secret;
use hmac::{Hmac, Mac};
use serde_json::value::RawValue;
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

const HEADER: &str = "X-Signature";

fn mac(secret: &Secret, msg: &[u8]) -> Option<HmacSha1> {
    let mut mac = super::keyed::<HmacSha1>(secret.expose().as_bytes())?;
    mac.update(msg);
    Some(mac)
}

/// The header Segment would send for `signed` bytes.
pub fn sign(secret: &Secret, signed: &[u8]) -> String {
    mac(secret, signed)
        .map(|m| hex(&m.finalize().into_bytes()))
        .unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Raw bytes of element 0 when the body is a JSON array.
fn first_element(body: &[u8]) -> Option<&[u8]> {
    let trimmed = body.trim_ascii_start();
    if !trimmed.starts_with(b"[") {
        return None;
    }
    let elements: Vec<&RawValue> = serde_json::from_slice(body).ok()?;
    let first = elements.first()?.get().as_bytes();
    // `first` borrows from `body`; find its position to return a slice of the body.
    let start = first.as_ptr() as usize - body.as_ptr() as usize;
    body.get(start..start + first.len())
}

pub fn verify(headers: &dyn Headers, body: &[u8], secrets: &[Secret]) -> Result<(), VerifyError> {
    let value = headers
        .get_str(HEADER)
        .ok_or(VerifyError::MissingHeader(HEADER))?;
    let sig = unhex(value.trim()).ok_or(VerifyError::Malformed {
        header: HEADER,
        reason: "not hexadecimal",
    })?;
    let first = first_element(body);
    let mut ok = false;
    for s in secrets {
        ok |= mac(s, body).is_some_and(|m| m.verify_slice(&sig).is_ok());
        if let Some(first) = first {
            ok |= mac(s, first).is_some_and(|m| m.verify_slice(&sig).is_ok());
        }
    }
    if ok {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}
