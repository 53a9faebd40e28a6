//! LaunchDarkly partner access tokens (`[partner] tokens`):
//! `Authorization: <token>`, as LaunchDarkly takes it, or `Bearer <token>`.
//!
//! The headers alone authenticate a partner request, so the check runs before
//! the body is read ([`authenticate`]); the body read afterwards becomes a
//! [`Verified`] through the tokens' [`TokenProof`].

use super::{shared_secret, Headers, Verified, VerifyError};
use crate::config::PartnerToken;

/// The configured tokens whose secret the caller sent, in configuration
/// order; never empty. Obtained only through [`authenticate`].
#[derive(Debug)]
pub struct PartnerTokens<'t> {
    matched: Vec<(usize, &'t PartnerToken)>,
}

/// Compares the `Authorization` header with every secret of every token, in
/// constant time and with no early exit (`shared_secret`'s comparison).
pub fn authenticate<'t>(
    headers: &dyn Headers,
    tokens: &'t [PartnerToken],
) -> Result<PartnerTokens<'t>, VerifyError> {
    let value = headers
        .get_str("authorization")
        .ok_or(VerifyError::MissingHeader("Authorization"))?
        .trim();
    let stripped = value.strip_prefix("Bearer ").unwrap_or(value).trim();
    let mut matched = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if shared_secret::matches_any(&[value.as_bytes(), stripped.as_bytes()], &t.secrets) {
            matched.push((i, t));
        }
    }
    if matched.is_empty() {
        return Err(VerifyError::Mismatch);
    }
    Ok(PartnerTokens { matched })
}

impl<'t> PartnerTokens<'t> {
    /// Keeps the tokens that may sync segments for `integration_key`; `None`
    /// when no matched token may.
    pub fn for_integration(self, integration_key: &str) -> Option<PartnerTokens<'t>> {
        let matched: Vec<_> = self
            .matched
            .into_iter()
            .filter(|(_, t)| t.allows(integration_key))
            .collect();
        (!matched.is_empty()).then_some(PartnerTokens { matched })
    }

    /// The index in `[partner] tokens` of the first matched token: the one
    /// whose `requests_per_second` the request counts against.
    pub fn first(&self) -> usize {
        self.matched[0].0
    }

    /// Whether any matched token may write the environment with this client-side ID.
    pub fn allow_environment(&self, client_id: &str) -> bool {
        self.matched
            .iter()
            .any(|(_, t)| t.allows_environment(client_id))
    }

    /// The proof that the request's sender holds a configured token, to
    /// verify its body with once read (on any thread).
    pub fn proof(&self) -> TokenProof {
        TokenProof(())
    }
}

/// A request authenticated by a partner token ([`PartnerTokens::proof`]).
#[derive(Debug, Clone, Copy)]
pub struct TokenProof(());

impl TokenProof {
    /// The request's body, verified by its token.
    pub fn verified(self, body: &[u8]) -> Verified<'_> {
        Verified::by_headers(body)
    }
}
