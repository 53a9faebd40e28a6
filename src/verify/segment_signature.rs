//! Segment's `X-Signature: hex(HMAC-SHA1(utf8(secret), body))`.
//!
//! Batched (Actions) webhooks sign only element 0 of the JSON array, as
//! `JSON.stringify(body[0])`. A JavaScript sender emits the array with
//! `JSON.stringify` too, so element 0's raw bytes inside the body are exactly
//! that string; we verify against them, and also against the whole body
//! (Segment's pending fix signs the full array).
//!
//! A signature over element 0 of a longer array does not cover the other
//! elements: [`verify`] says so ([`Coverage::FirstOnly`]) and the caller
//! decides (refused unless the source opts in to `batches = "first-event"`).
//!
//! Cost: one MAC over the body and one over element 0 per secret; element 0
//! is found by a serde visitor that borrows it and skips the rest with
//! `IgnoredAny`, which allocates nothing per element.

use super::{Headers, VerifyError};
use crate::config::Secret;
use hmac::{Hmac, Mac};
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;
use sha1::Sha1;
use std::ops::Range;

type HmacSha1 = Hmac<Sha1>;

const HEADER: &str = "X-Signature";

/// What a valid signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coverage {
    /// Every applied byte: the whole body, or the only element of an array.
    Whole,
    /// Only element 0 (these bytes of the body) of an array of several.
    FirstOnly(Range<usize>),
}

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

/// The headers Segment would send with `body` (used by `replay`): signed
/// over the whole body, batches included (Segment's pending fix; accepted
/// whatever the source's `batches`).
pub fn sign_request(secret: &Secret, body: &[u8]) -> Vec<(String, String)> {
    vec![(HEADER.into(), sign(secret, body))]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The 20 bytes of an SHA-1 HMAC in hex; anything else is malformed (so a
/// huge header costs nothing).
fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 40 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Element 0 of a JSON array and how many elements it has, without
/// allocating per element.
struct FirstElement;

impl<'de> Visitor<'de> for FirstElement {
    type Value = Option<(&'de RawValue, usize)>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let Some(first) = seq.next_element::<&'de RawValue>()? else {
            return Ok(None);
        };
        let mut n = 1usize;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(Some((first, n)))
    }
}

/// Where element 0 lies in `body` and how many elements the array has, when
/// the body is a well-formed, non-empty JSON array.
pub fn first_element(body: &[u8]) -> Option<(Range<usize>, usize)> {
    if !body.trim_ascii_start().starts_with(b"[") {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let (first, n) = serde::Deserializer::deserialize_seq(&mut de, FirstElement).ok()??;
    de.end().ok()?;
    let first = first.get().as_bytes();
    // `first` borrows from `body`: its position is the offset of its pointer.
    let start = (first.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let range = start..start + first.len();
    body.get(range.clone())?;
    Some((range, n))
}

/// Cheap checks on the header alone, before the body is read.
pub fn precheck(headers: &dyn Headers) -> Result<Vec<u8>, VerifyError> {
    let value = headers
        .get_str(HEADER)
        .ok_or(VerifyError::MissingHeader(HEADER))?;
    unhex(value.trim()).ok_or(VerifyError::Malformed {
        header: HEADER,
        reason: "not 40 hexadecimal digits",
    })
}

pub fn verify(
    headers: &dyn Headers,
    body: &[u8],
    secrets: &[Secret],
) -> Result<Coverage, VerifyError> {
    let sig = precheck(headers)?;
    let mut whole = false;
    for s in secrets {
        whole |= mac(s, body).is_some_and(|m| m.verify_slice(&sig).is_ok());
    }
    if whole {
        return Ok(Coverage::Whole);
    }
    let Some((range, n)) = first_element(body) else {
        return Err(VerifyError::BadSignature);
    };
    let mut first = false;
    for s in secrets {
        first |= mac(s, &body[range.clone()]).is_some_and(|m| m.verify_slice(&sig).is_ok());
    }
    match (first, n) {
        (false, _) => Err(VerifyError::BadSignature),
        (true, 1) => Ok(Coverage::Whole),
        (true, _) => Ok(Coverage::FirstOnly(range)),
    }
}
