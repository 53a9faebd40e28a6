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

fn mac(secret: &Secret, msg: &[u8]) -> HmacSha1 {
    let mut mac = HmacSha1::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(msg);
    mac
}

/// The header Segment would send for `signed` bytes.
pub fn sign(secret: &Secret, signed: &[u8]) -> String {
    hex(&mac(secret, signed).finalize().into_bytes())
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
        ok |= mac(s, body).verify_slice(&sig).is_ok();
        if let Some(first) = first {
            ok |= mac(s, first).verify_slice(&sig).is_ok();
        }
    }
    if ok {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> Vec<(String, String)> {
        vec![("x-signature".into(), v.into())]
    }

    #[test]
    fn every_segment_vector_verifies_and_mutations_fail() {
        let vectors = crate::verify::vectors::by_platform("segment");
        assert_eq!(vectors.len(), 2);
        for v in vectors {
            let secret = Secret::new(v["secret"].as_str().unwrap());
            let body = v["body"].as_str().unwrap().as_bytes();
            let sig = v["headers"]["X-Signature"].as_str().unwrap();
            assert_eq!(
                verify(&h(sig), body, &[Secret::new("old"), secret.clone()]),
                Ok(())
            );
            if let Some(full) = v["x_signature_if_full_body_signed"].as_str() {
                assert_eq!(
                    verify(&h(full), body, std::slice::from_ref(&secret)),
                    Ok(())
                );
                assert_eq!(sign(&secret, body), full);
            }
            let mut tampered = body.to_vec();
            let at = tampered.iter().position(|&b| b == b'1').unwrap();
            tampered[at] = b'2';
            assert_eq!(
                verify(&h(sig), &tampered, std::slice::from_ref(&secret)),
                Err(VerifyError::BadSignature)
            );
            assert_eq!(
                verify(&h(sig), body, &[Secret::new("wrong")]),
                Err(VerifyError::BadSignature)
            );
            assert_eq!(
                verify(&vec![], body, std::slice::from_ref(&secret)),
                Err(VerifyError::MissingHeader(HEADER))
            );
            assert!(matches!(
                verify(&h("zz"), body, &[secret]),
                Err(VerifyError::Malformed { .. })
            ));
        }
    }
}
