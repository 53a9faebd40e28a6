//! Authentication of pushes, on the raw request bytes, before any parsing.
//!
//! [`Verified`] is the only way to hand a body to `sources`: its fields are
//! private and the only constructor is [`verify`], so unverified input cannot
//! reach a parser by mistake (the typestate habit of svix).
//!
//! One file per scheme, holding both sides of it: the verifier ([`precheck`]
//! on the headers alone, then [`verify`] on the body) and the signer ([`sign`],
//! the headers a sender would send, which `replay` uses). Each compares in
//! constant time (the `hmac` crate's `verify_slice`, or `subtle` for shared
//! secrets) and accepts any of the configured secrets, which is how secrets
//! rotate. The known-answer tests against every vector live in
//! `tests/it/signatures.rs`.
//!
//! A new scheme is a file here, its [`ResolvedAuth`] variant
//! (`config/settings.rs`) and how it is read from `auth` (`config/auth.rs`),
//! and one arm in each of [`precheck`], [`verify`] and [`sign`].

mod heap_hash;
pub mod partner_token;
mod segment_signature;
mod shared_secret;
mod standard_webhooks;

pub use heap_hash::sign as heap_sign;
pub use segment_signature::{first_element as segment_first_element, sign as segment_sign};
pub use shared_secret::verify_header;
pub use standard_webhooks::sign as standard_webhooks_sign;

use crate::config::{ResolvedAuth, SegmentBatches};
use std::time::Duration;

/// Request headers as the verifiers see them (decoupled from the HTTP framework).
pub trait Headers {
    /// The first value of a header, if present and valid UTF-8.
    fn get_str(&self, name: &str) -> Option<&str>;
}

impl Headers for actix_web::http::header::HeaderMap {
    fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Headers for Vec<(String, String)> {
    fn get_str(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A request body whose sender proved it knows a configured secret.
#[derive(Debug)]
pub struct Verified<'a> {
    body: &'a [u8],
    signed_at_ms: Option<i64>,
    delivery_id: Option<String>,
    first_event_only: Option<std::ops::Range<usize>>,
}

impl<'a> Verified<'a> {
    /// A body whose sender the headers alone authenticated (`partner_token`).
    fn by_headers(body: &'a [u8]) -> Verified<'a> {
        Verified {
            body,
            signed_at_ms: None,
            delivery_id: None,
            first_event_only: None,
        }
    }

    /// The raw bytes exactly as received.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The timestamp the sender signed (Heap, Standard Webhooks), in ms.
    pub fn signed_at_ms(&self) -> Option<i64> {
        self.signed_at_ms
    }

    /// A delivery id carried by the signature scheme (Standard Webhooks' `webhook-id`).
    pub fn delivery_id(&self) -> Option<&str> {
        self.delivery_id.as_deref()
    }

    /// Set when the signature covers only element 0 of a JSON array of
    /// several (a Segment batch accepted with `batches = "first-event"`):
    /// element 0's bytes. The caller must apply the batch only the first
    /// time element 0 is seen.
    pub fn first_event_only(&self) -> Option<&'a [u8]> {
        self.first_event_only.clone().and_then(|r| self.body.get(r))
    }
}

/// Why a push was not authenticated. Every variant is answered 401.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("malformed {header} header: {reason}")]
    Malformed {
        header: &'static str,
        reason: &'static str,
    },
    #[error("credentials do not match any configured secret")]
    Mismatch,
    #[error("signature does not match any configured secret")]
    BadSignature,
    #[error("signed timestamp is {0} s away from now, outside the tolerance window")]
    OutsideWindow(i64),
    #[error("X-Signature covers only element 0 of this batch, so the other events are not authenticated; nothing was applied. Set the Segment Webhooks (Actions) mapping's batch size to 1, or set batches = \"first-event\" in this source's auth (see the README, Security)")]
    UnsignedBatch,
}

/// The checks that need only the headers, run before the body is read:
/// shared secrets and Basic in full; for signature schemes, the header's
/// presence and shape and the signed timestamp's window. [`verify`] repeats
/// them, so skipping this is never unsafe, only more expensive.
pub fn precheck(
    auth: &ResolvedAuth,
    headers: &dyn Headers,
    now_ms: i64,
) -> Result<Prechecked, VerifyError> {
    precheck_headers(auth, headers, now_ms).map(|()| Prechecked(()))
}

/// Proof that [`precheck`] accepted a request's headers; see [`verify_prechecked`].
#[derive(Debug)]
pub struct Prechecked(());

fn precheck_headers(
    auth: &ResolvedAuth,
    headers: &dyn Headers,
    now_ms: i64,
) -> Result<(), VerifyError> {
    match auth {
        ResolvedAuth::Header { header, secrets } => verify_header(headers, header, secrets),
        ResolvedAuth::Basic {
            username,
            passwords,
        } => shared_secret::verify_basic(headers, username, passwords),
        ResolvedAuth::HeapHash { tolerance, .. } => {
            heap_hash::precheck(headers, Window::new(now_ms, *tolerance)).map(|_| ())
        }
        ResolvedAuth::SegmentSignature { .. } => segment_signature::precheck(headers).map(|_| ()),
        ResolvedAuth::StandardWebhooks { tolerance, .. } => {
            standard_webhooks::precheck(headers, Window::new(now_ms, *tolerance)).map(|_| ())
        }
        ResolvedAuth::None => Ok(()),
    }
}

/// [`verify`] of a request whose same headers [`precheck`] accepted: the
/// schemes that [`precheck`] checks in full from the headers alone (shared
/// secrets, Basic) are not compared a second time; the signature schemes are
/// verified over the body as [`verify`] does.
pub fn verify_prechecked<'a>(
    auth: &ResolvedAuth,
    headers: &dyn Headers,
    body: &'a [u8],
    now_ms: i64,
    _prechecked: &Prechecked,
) -> Result<Verified<'a>, VerifyError> {
    match auth {
        ResolvedAuth::Header { .. } | ResolvedAuth::Basic { .. } => Ok(Verified::by_headers(body)),
        _ => verify(auth, headers, body, now_ms),
    }
}

/// Verifies `body` against a source's resolved authentication.
pub fn verify<'a>(
    auth: &ResolvedAuth,
    headers: &dyn Headers,
    body: &'a [u8],
    now_ms: i64,
) -> Result<Verified<'a>, VerifyError> {
    let mut v = Verified {
        body,
        signed_at_ms: None,
        delivery_id: None,
        first_event_only: None,
    };
    match auth {
        ResolvedAuth::Header { header, secrets } => {
            verify_header(headers, header, secrets)?;
        }
        ResolvedAuth::Basic {
            username,
            passwords,
        } => shared_secret::verify_basic(headers, username, passwords)?,
        ResolvedAuth::HeapHash { secrets, tolerance } => {
            let window = Window::new(now_ms, *tolerance);
            v.signed_at_ms = Some(heap_hash::verify(headers, body, secrets, window)?);
        }
        ResolvedAuth::SegmentSignature { secrets, batches } => {
            match (segment_signature::verify(headers, body, secrets)?, batches) {
                (segment_signature::Coverage::Whole, _) => {}
                (segment_signature::Coverage::FirstOnly(_), SegmentBatches::Signed) => {
                    return Err(VerifyError::UnsignedBatch)
                }
                (segment_signature::Coverage::FirstOnly(r), SegmentBatches::FirstEvent) => {
                    v.first_event_only = Some(r);
                }
            }
        }
        ResolvedAuth::StandardWebhooks { secrets, tolerance } => {
            let window = Window::new(now_ms, *tolerance);
            let (id, ts) = standard_webhooks::verify(headers, body, secrets, window)?;
            v.signed_at_ms = Some(ts);
            v.delivery_id = Some(id);
        }
        ResolvedAuth::None => {}
    }
    Ok(v)
}

/// A keyed MAC. HMAC takes keys of any length, so this never fails in
/// practice; if it did, the request would simply not verify (no panic on the
/// request path).
fn keyed<M: hmac::digest::KeyInit>(key: &[u8]) -> Option<M> {
    M::new_from_slice(key).ok()
}

/// A MAC's tag in standard base64 (empty if there is no MAC, see [`keyed`]).
fn tag_base64<M: hmac::Mac>(mac: Option<M>) -> String {
    use base64::Engine;
    mac.map(|m| base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Now ± the tolerance: where a signed timestamp must lie (Heap, Standard
/// Webhooks), so that a captured request cannot be replayed later.
#[derive(Debug, Clone, Copy)]
struct Window {
    now_ms: i64,
    tolerance: Duration,
}

impl Window {
    fn new(now_ms: i64, tolerance: Duration) -> Window {
        Window { now_ms, tolerance }
    }

    /// Checks a signed timestamp (ms); returns it.
    fn check(self, ts_ms: i64) -> Result<i64, VerifyError> {
        let skew = self.now_ms.saturating_sub(ts_ms);
        if skew.unsigned_abs() > self.tolerance.as_millis() as u64 {
            return Err(VerifyError::OutsideWindow(skew / 1000));
        }
        Ok(ts_ms)
    }
}

/// The headers a sender holding the first configured secret would send with
/// `body` at `now_ms`, each made by the scheme's own file beside its
/// verifier (used by `replay`). Empty for `none` or without a secret.
pub fn sign(auth: &ResolvedAuth, body: &[u8], now_ms: i64) -> Vec<(String, String)> {
    let signed = match auth {
        ResolvedAuth::Header { header, secrets } => secrets
            .first()
            .map(|s| shared_secret::header_request(header, s)),
        ResolvedAuth::Basic {
            username,
            passwords,
        } => passwords
            .first()
            .map(|p| shared_secret::basic_request(username, p)),
        ResolvedAuth::HeapHash { secrets, .. } => secrets
            .first()
            .map(|s| heap_hash::sign_request(s, body, now_ms)),
        ResolvedAuth::SegmentSignature { secrets, .. } => secrets
            .first()
            .map(|s| segment_signature::sign_request(s, body)),
        ResolvedAuth::StandardWebhooks { secrets, .. } => secrets
            .first()
            .map(|s| standard_webhooks::sign_request(s, body, now_ms)),
        ResolvedAuth::None => None,
    };
    signed.unwrap_or_default()
}

#[cfg(test)]
mod prechecked_tests {
    use super::*;
    use crate::config::Secret;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_shared_secret_is_refused_by_precheck_and_not_compared_again() {
        let auth = ResolvedAuth::Header {
            header: "x-token".into(),
            secrets: vec![Secret::new("s3cret")],
        };
        let wrong = headers(&[("x-token", "nope")]);
        assert!(matches!(
            precheck(&auth, &wrong, 0),
            Err(VerifyError::Mismatch)
        ));
        let right = headers(&[("x-token", "s3cret")]);
        let proof = precheck(&auth, &right, 0).expect("the right secret passes");
        let v = verify_prechecked(&auth, &right, b"{}", 0, &proof).expect("verified");
        assert_eq!(v.body(), b"{}");
        assert_eq!(v.signed_at_ms(), None);
    }

    #[test]
    fn a_signature_is_still_verified_over_the_body_after_precheck() {
        let auth = ResolvedAuth::SegmentSignature {
            secrets: vec![Secret::new("k")],
            batches: SegmentBatches::Signed,
        };
        // Well-formed (40 hex digits) but not the body's HMAC.
        let h = headers(&[("x-signature", &"0".repeat(40))]);
        let proof = precheck(&auth, &h, 0).expect("the header's shape is right");
        assert!(verify_prechecked(&auth, &h, b"{}", 0, &proof).is_err());
    }
}
