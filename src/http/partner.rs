//! `POST /api/v2/segment-targets/{integrationKey}`: LaunchDarkly's partner
//! ("synced segment") endpoint, reimplemented so that any synced-segment
//! partner can point at the bridge unchanged.
//!
//! Order: the token (401) before anything else, so an anonymous caller
//! learns nothing and uploads nothing; then the integration key (404) and
//! whether the token may use it (403); the body is read up to
//! `max_body_bytes` (413) and parsed by the integration's manifest (400);
//! `environmentId` and the context kind pick the destination (400); a token
//! past its `requests_per_second` gets 429 with `X-Ratelimit-Reset`; the
//! changes are applied to Redis (503 with `Retry-After`). Only then 204: every
//! accepted change is in Redis.
//!
//! Answers mimic LaunchDarkly's: 204 without a body on success, errors as
//! `{"code", "message"}` (not the native receivers' `{"error": {...}}`).

use super::webhooks::{read_body, OFF_LOOP_BYTES};
use super::{ApiError, AppState};
use crate::clock::now_ms;
use crate::config::{PartnerSettings, PartnerToken};
use crate::metrics as m;
use crate::sources::manifest::Manifest;
use crate::ingest::IngestError;
use actix_web::http::header::{HeaderMap, AUTHORIZATION};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Why a partner request was refused, with LaunchDarkly's codes.
#[derive(Debug, thiserror::Error)]
pub enum PartnerError {
    #[error("missing or invalid access token in the Authorization header")]
    Unauthorized,
    #[error("this access token may not sync segments for the integration {0:?}")]
    Forbidden(String),
    #[error("this access token may not write the environment {0:?}")]
    ForbiddenEnvironment(String),
    #[error("unknown integration key {0:?}")]
    UnknownIntegration(String),
    #[error("{0}")]
    Invalid(String),
    #[error("body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body did not arrive within {ms} ms (server.body_read_timeout_ms)")]
    BodyTimeout { ms: u64 },
    #[error("the store is unavailable; retry later")]
    Unavailable(#[source] crate::store::StoreError),
    #[error("this access token exceeded its rate limit; retry in {} ms", wait.as_millis())]
    RateLimited { wait: Duration },
}

impl PartnerError {
    pub fn code(&self) -> &'static str {
        match self {
            PartnerError::Unauthorized => "unauthorized",
            PartnerError::Forbidden(_) | PartnerError::ForbiddenEnvironment(_) => "forbidden",
            PartnerError::UnknownIntegration(_) => "not_found",
            PartnerError::Invalid(_) => "invalid_request",
            PartnerError::TooLarge { .. } => "payload_too_large",
            PartnerError::BodyTimeout { .. } => "request_timeout",
            PartnerError::Unavailable(_) => "service_unavailable",
            PartnerError::RateLimited { .. } => "rate_limited",
        }
    }

    /// The `outcome` label of `cohort_bridge_pushes_total`.
    fn outcome(&self) -> &'static str {
        match self {
            PartnerError::Unauthorized
            | PartnerError::Forbidden(_)
            | PartnerError::ForbiddenEnvironment(_) => "unauthorized",
            PartnerError::TooLarge { .. } => "too_large",
            PartnerError::Unavailable(_) => "unavailable",
            PartnerError::RateLimited { .. } => "rate_limited",
            PartnerError::UnknownIntegration(_)
            | PartnerError::Invalid(_)
            | PartnerError::BodyTimeout { .. } => "invalid",
        }
    }
}

impl From<ApiError> for PartnerError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::TooLarge { limit } => PartnerError::TooLarge { limit },
            ApiError::BodyTimeout { ms } => PartnerError::BodyTimeout { ms },
            ApiError::Unavailable(err) => PartnerError::Unavailable(err),
            other => PartnerError::Invalid(other.to_string()),
        }
    }
}

impl ResponseError for PartnerError {
    fn status_code(&self) -> StatusCode {
        match self {
            PartnerError::Unauthorized => StatusCode::UNAUTHORIZED,
            PartnerError::Forbidden(_) | PartnerError::ForbiddenEnvironment(_) => {
                StatusCode::FORBIDDEN
            }
            PartnerError::UnknownIntegration(_) => StatusCode::NOT_FOUND,
            PartnerError::Invalid(_) => StatusCode::BAD_REQUEST,
            PartnerError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            PartnerError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            PartnerError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            PartnerError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        match self {
            PartnerError::Unavailable(_) => {
                resp.insert_header(("Retry-After", "5"));
            }
            PartnerError::RateLimited { wait } => {
                let ms = wait.as_millis() as u64;
                resp.insert_header(("Retry-After", ms.div_ceil(1000).max(1).to_string()));
                resp.insert_header(("X-Ratelimit-Reset", (now_ms() + ms as i64).to_string()));
            }
            _ => {}
        }
        resp.json(json!({"code": self.code(), "message": self.to_string()}))
    }
}

/// One governor limiter per configured token that has a `requests_per_second`.
pub struct PartnerLimits(Vec<Option<DefaultDirectRateLimiter>>);

impl PartnerLimits {
    pub fn new(tokens: &[PartnerToken]) -> PartnerLimits {
        PartnerLimits(
            tokens
                .iter()
                .map(|t| {
                    let rps = t.requests_per_second?;
                    let quota = Quota::with_period(Duration::try_from_secs_f64(1.0 / rps).ok()?)?;
                    Some(RateLimiter::direct(quota))
                })
                .collect(),
        )
    }

    /// Takes a token's permit; `Err(wait)` when it must wait that long.
    fn check(&self, token: usize) -> Result<(), Duration> {
        match self.0.get(token).and_then(Option::as_ref) {
            None => Ok(()),
            Some(l) => l
                .check()
                .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now())),
        }
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    // Hashing first hides the secrets' lengths as well as their content.
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// The tokens whose secret the caller sent: `Authorization: <token>`, as
/// LaunchDarkly takes it, or `Bearer <token>`. Every secret of every token is
/// compared, in constant time, with no early exit.
fn authenticate<'a>(
    headers: &HeaderMap,
    tokens: &'a [PartnerToken],
) -> Vec<(usize, &'a PartnerToken)> {
    let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Vec::new();
    };
    let value = value.trim();
    let stripped = value.strip_prefix("Bearer ").unwrap_or(value).trim();
    let mut matched = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let mut ok = false;
        for s in &t.secrets {
            ok |= ct_eq(value.as_bytes(), s.expose().as_bytes())
                | ct_eq(stripped.as_bytes(), s.expose().as_bytes());
        }
        if ok {
            matched.push((i, t));
        }
    }
    matched
}

pub async fn receive(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PartnerError> {
    let key = path.into_inner();
    let partner = &state.settings.partner;
    let manifest = partner.manifests.get(&key).cloned();
    let source_id = manifest
        .as_ref()
        .map(|m| crate::config::partner_source_id(&m.key));
    let result = handle(&req, payload, &state, partner, &key, manifest).await;
    // Unknown keys are not counted: a label per guessed key would grow without bound.
    if let Some(id) = &source_id {
        m::push(
            id,
            match &result {
                Ok(_) => "accepted",
                Err(e) => e.outcome(),
            },
        );
    }
    match result {
        Ok(0) => Ok(HttpResponse::NoContent().finish()),
        // LaunchDarkly answers 204 without a body; the count goes in a header.
        Ok(n) => Ok(HttpResponse::NoContent()
            .insert_header(("X-Skipped-Invalid-Key", n.to_string()))
            .finish()),
        Err(e) => {
            match &e {
                PartnerError::Unavailable(err) => {
                    tracing::warn!(integration = ?key, error = %err, "Partner push refused: Redis unavailable.")
                }
                other => {
                    tracing::info!(integration = ?key, error = %other, "Partner push rejected.")
                }
            }
            Err(e)
        }
    }
}

async fn handle(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    partner: &PartnerSettings,
    key: &str,
    manifest: Option<Arc<Manifest>>,
) -> Result<u64, PartnerError> {
    let tokens = authenticate(req.headers(), &partner.tokens);
    if tokens.is_empty() {
        return Err(PartnerError::Unauthorized);
    }
    let manifest = manifest.ok_or_else(|| PartnerError::UnknownIntegration(key.to_string()))?;
    let allowed: Vec<&(usize, &PartnerToken)> =
        tokens.iter().filter(|(_, t)| t.allows(key)).collect();
    let Some(&&(index, _)) = allowed.first() else {
        return Err(PartnerError::Forbidden(key.to_string()));
    };
    state
        .partner_limits
        .check(index)
        .map_err(|wait| PartnerError::RateLimited { wait })?;
    let settings = &state.settings;
    // The token was checked above, before any byte of the body is read.
    let body = read_body(req, payload, &settings.server).await?.freeze();
    let now = now_ms();
    // As in /v1/webhooks: a big body is parsed on the blocking pool.
    let parsed = if body.len() > OFF_LOOP_BYTES {
        web::block(move || manifest.parse(&body, now))
            .await
            .map_err(|e| PartnerError::Invalid(format!("could not parse the body: {e}")))?
    } else {
        manifest.parse(&body, now)
    };
    let mut request = parsed.map_err(|e| PartnerError::Invalid(e.0))?;
    if !allowed
        .iter()
        .any(|(_, t)| t.allows_environment(&request.environment_id))
    {
        return Err(PartnerError::ForbiddenEnvironment(
            request.environment_id.clone(),
        ));
    }
    let cohorts = request.parsed.pushes.len();
    if cohorts > partner.max_cohorts_per_request {
        return Err(PartnerError::Invalid(format!(
            "the body carries {cohorts} distinct cohorts; at most {} are accepted per request (partner.max_cohorts_per_request)",
            partner.max_cohorts_per_request
        )));
    }
    crate::sources::check_future_versions(
        crate::sources::SourceKind::Partner,
        &request.parsed,
        now,
        (settings.server.max_future_skew_seconds as i64).saturating_mul(1000),
    )
    .map_err(|e| PartnerError::Invalid(e.0))?;
    crate::sources::drop_invalid_keys(&mut request.parsed, settings.server.max_key_bytes);

    let names = partner
        .environments
        .get(&request.environment_id)
        .ok_or_else(|| {
            PartnerError::Invalid(format!(
                "unknown environmentId {:?}: no LaunchDarkly environment with this client-side ID is configured",
                request.environment_id
            ))
        })?;
    let destination = names
        .iter()
        .find(|n| {
            settings
                .destinations
                .get(*n)
                .is_some_and(|d| d.context_kind == request.context_kind)
        })
        .ok_or_else(|| {
            let kinds: Vec<String> = names
                .iter()
                .filter_map(|n| settings.destinations.get(n))
                .map(|d| format!("{:?}", d.context_kind))
                .collect();
            PartnerError::Invalid(format!(
                "context kind {:?} is not synced for environmentId {:?} (configured: {})",
                request.context_kind,
                request.environment_id,
                kinds.join(", ")
            ))
        })?;

    // An integration's cohort entry without changes is nothing to apply.
    request.parsed.pushes.retain(|p| !p.changes.is_empty());
    let summary = state
        .ingest
        .apply(
            &crate::config::partner_source_id(key),
            std::slice::from_ref(destination),
            &request.parsed,
            None,
            now,
        )
        .await
        .map_err(|e| match e {
            IngestError::Unavailable(err) => PartnerError::Unavailable(err),
            // Only Segment's first-event batches are claimed.
            IngestError::BatchInProgress => PartnerError::Invalid(e.to_string()),
        })?;
    Ok(summary.skipped_invalid_key)
}
