//! Shared secrets: a static header (Amplitude's custom headers) or HTTP Basic.
//!
//! Both sides are hashed with SHA-256 before the constant-time comparison, so
//! neither the content nor the length of a secret leaks through timing.

use super::{Headers, VerifyError};
use crate::config::Secret;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// Whether any of `candidates` equals any of `secrets`. Every pair is
/// compared: no early exit that would time which one matched.
pub(super) fn matches_any(candidates: &[&[u8]], secrets: &[Secret]) -> bool {
    let mut ok = false;
    for s in secrets {
        for c in candidates {
            ok |= ct_eq(c, s.expose().as_bytes());
        }
    }
    ok
}

/// Any configured secret must equal the header's value. A `Bearer ` prefix is
/// accepted when the configured secret does not have one (Amplitude users
/// often configure `Authorization: Bearer <token>`).
pub fn verify_header(
    headers: &dyn Headers,
    header: &str,
    secrets: &[Secret],
) -> Result<(), VerifyError> {
    let value = headers
        .get_str(header)
        .ok_or(VerifyError::MissingHeader("secret"))?
        .trim();
    let stripped = value.strip_prefix("Bearer ").unwrap_or(value);
    if matches_any(&[value.as_bytes(), stripped.as_bytes()], secrets) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// The header a sender configured with `secret` sends (used by `replay`).
pub fn header_request(header: &str, secret: &Secret) -> Vec<(String, String)> {
    vec![(header.to_string(), secret.expose().to_string())]
}

/// The `Authorization: Basic` header for `username` and `password` (used by `replay`).
pub fn basic_request(username: &Secret, password: &Secret) -> Vec<(String, String)> {
    let creds = format!("{}:{}", username.expose(), password.expose());
    let enc = base64::engine::general_purpose::STANDARD.encode(creds);
    vec![("Authorization".into(), format!("Basic {enc}"))]
}

/// `Authorization: Basic base64(user:password)`, any configured password.
pub fn verify_basic(
    headers: &dyn Headers,
    username: &Secret,
    passwords: &[Secret],
) -> Result<(), VerifyError> {
    let value = headers
        .get_str("authorization")
        .ok_or(VerifyError::MissingHeader("Authorization"))?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
        .ok_or(VerifyError::Malformed {
            header: "Authorization",
            reason: "expected the Basic scheme",
        })?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| VerifyError::Malformed {
            header: "Authorization",
            reason: "credentials are not base64",
        })?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(VerifyError::Malformed {
            header: "Authorization",
            reason: "credentials have no ':'",
        })?;
    let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
    let user_ok = ct_eq(user, username.expose().as_bytes());
    let mut pass_ok = false;
    for p in passwords {
        pass_ok |= ct_eq(pass, p.expose().as_bytes());
    }
    if user_ok && pass_ok {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}
