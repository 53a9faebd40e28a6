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

use super::error::LaunchDarklyError;
use super::webhooks::{read_body, OFF_LOOP_BYTES};
use super::{ApiError, AppState};
use crate::clock::now_ms;
use crate::config::manifest::Manifest;
use crate::config::SourceKind;
use crate::config::{PartnerSettings, PartnerToken};
use crate::metrics::{self as m, RequestOutcome};
use crate::verify::partner_token;
use actix_web::{web, HttpRequest, HttpResponse};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::sync::Arc;
use std::time::Duration;

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

/// LaunchDarkly's synced-segment endpoint: a partner's push for the
/// integration `{integration_key}`.
///
/// The body is parsed by the integration's manifest (its
/// `syncedSegment.requestParser`); `environmentId` and the context kind pick
/// the destination. Authenticate with `Authorization: <token>` (or
/// `Bearer <token>`), a `[[partner.tokens]]` secret allowed for the
/// integration. Answers mimic LaunchDarkly's: 204 without a body, errors as
/// `{"code", "message"}`.
#[utoipa::path(
    post,
    path = "/api/v2/segment-targets/{integration_key}",
    tag = "partner",
    security(("partner_token" = [])),
    params(("integration_key" = String, Path, example = "segment-audiences",
        description = "The integration's key: a built-in manifest or one from `partner.manifest_dirs`.")),
    request_body(content = Object, content_type = "application/json",
        description = "The partner's body, as the integration's manifest reads it; the example is \
            `segment-audiences`' (Segment's \"LaunchDarkly Audiences\").",
        example = json!({"environmentId": "61a0c0ffee0000000000prod", "contextKind": "user",
            "batch": [{"userId": "user-1", "cohortId": "1234", "cohortName": "Power users", "value": true}]})),
    responses(
        (status = 204, description = "Every accepted change is in Redis.",
            headers(("X-Skipped-Invalid-Key" = u64, description = "Members skipped for an invalid key (only when some were)."))),
        (status = 400, description = "Not JSON, a required pointer missing, a wrong type, an unknown `environmentId` or context kind, too many cohorts (`invalid_request`).",
            body = LaunchDarklyError),
        (status = 401, description = "`Authorization` missing or matching no token (checked first).", body = LaunchDarklyError),
        (status = 403, description = "The token may not use this integration or environment.", body = LaunchDarklyError),
        (status = 404, description = "No manifest has that integration key.", body = LaunchDarklyError),
        (status = 408, description = "The body did not arrive within `server.body_read_timeout_ms`.", body = LaunchDarklyError),
        (status = 409, description = "A link of the audience was retired and refuses pushes (the message names the link and its state).", body = LaunchDarklyError),
        (status = 413, description = "The body is over `server.max_body_bytes`.", body = LaunchDarklyError),
        (status = 429, description = "The token is past its `requests_per_second`; nothing was read or stored.", body = LaunchDarklyError,
            headers(
                ("Retry-After" = u64, description = "Seconds to wait before retrying."),
                ("X-Ratelimit-Reset" = i64, description = "When the token may send again, in Unix ms."),
            )),
        (status = 503, description = "Redis is unreachable or too slow: retry.", body = LaunchDarklyError,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying (5)."))),
    )
)]
pub async fn receive(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let key = path.into_inner();
    let partner = &state.settings.partner;
    let manifest = partner.manifests.get(&key).cloned();
    let source_id = manifest
        .as_ref()
        .map(|m| crate::config::partner_source_id(&m.key));
    let result = handle(&req, payload, &state, partner, &key, manifest).await;
    // Unknown keys are not counted: a label per guessed key would grow without bound.
    if let Some(id) = &source_id {
        m::request(
            id,
            match &result {
                Ok(_) => RequestOutcome::Accepted,
                Err(e) => e.outcome(),
            },
        );
    }
    match result {
        Ok(0) => HttpResponse::NoContent().finish(),
        // LaunchDarkly answers 204 without a body; the count goes in a header.
        Ok(n) => HttpResponse::NoContent()
            .insert_header(("X-Skipped-Invalid-Key", n.to_string()))
            .finish(),
        Err(e) => {
            match &e {
                ApiError::Unavailable(err) => {
                    tracing::warn!(integration = ?key, error = %err, "Partner push refused: Redis unavailable.");
                }
                other => {
                    tracing::info!(integration = ?key, error = %other, "Partner push rejected.");
                }
            }
            e.respond(SourceKind::Partner.answer_style(), "")
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
) -> Result<u64, ApiError> {
    let tokens = partner_token::authenticate(req.headers(), &partner.tokens)
        .map_err(|_| ApiError::PartnerUnauthorized)?;
    let manifest = manifest.ok_or_else(|| ApiError::UnknownIntegration(key.to_string()))?;
    let tokens = tokens
        .for_integration(key)
        .ok_or_else(|| ApiError::Forbidden(key.to_string()))?;
    state
        .partner_limits
        .check(tokens.first())
        .map_err(|wait| ApiError::RateLimited { wait })?;
    let settings = &state.settings;
    // The token was checked above, before any byte of the body is read.
    let body = read_body(req, payload, &settings.server).await?.freeze();
    let now = now_ms();
    // As in /v1/webhooks: a big body is parsed on the blocking pool.
    let proof = tokens.proof();
    let parse =
        move |body: &[u8]| crate::sources::partner::parse(&manifest, &proof.verified(body), now);
    let parsed = if body.len() > OFF_LOOP_BYTES {
        web::block(move || parse(&body))
            .await
            .map_err(|e| ApiError::Invalid(format!("could not parse the body: {e}")))?
    } else {
        parse(&body)
    };
    let mut request = parsed.map_err(|e| ApiError::Invalid(e.to_string()))?;
    if !tokens.allow_environment(&request.environment_id) {
        return Err(ApiError::ForbiddenEnvironment(
            request.environment_id.clone(),
        ));
    }
    let cohorts = request.parsed.pushes.len();
    if cohorts > partner.max_cohorts_per_request {
        return Err(ApiError::Invalid(format!(
            "the body carries {cohorts} distinct cohorts; at most {} are accepted per request (partner.max_cohorts_per_request)",
            partner.max_cohorts_per_request
        )));
    }
    state
        .ingest
        .admit(SourceKind::Partner, &mut request.parsed, now)
        .map_err(|e| ApiError::Invalid(e.to_string()))?;

    let names = partner
        .environments
        .get(&request.environment_id)
        .ok_or_else(|| {
            ApiError::Invalid(format!(
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
            ApiError::Invalid(format!(
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
        .map_err(ApiError::from)?;
    Ok(summary.skipped_invalid_key)
}
