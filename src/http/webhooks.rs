//! `POST /v1/webhooks/{source}`: the native receivers.
//!
//! Order matters: unknown source (404) before reading the body; the body is
//! read up to `max_body_bytes` (413); verified on the raw bytes (401); parsed
//! (400); applied to Redis (503 if it cannot be). Only then 200: every
//! accepted change is in Redis.

use super::error::ApiError;
use super::AppState;
use crate::clock::now_ms;
use crate::metrics as m;
use crate::sources;
use crate::store::{ApplyOutcome, ApplyParams};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Serialize;

/// The 200 answer: what happened to the push's changes.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub accepted: u64,
    pub stale: u64,
    pub unchanged: u64,
    pub superseded: u64,
    pub cancelled: u64,
    pub skipped_without_key: u64,
    pub duplicate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

impl Summary {
    fn add(&mut self, o: &ApplyOutcome) {
        self.accepted += o.accepted;
        self.stale += o.stale;
        self.unchanged += o.unchanged;
        self.superseded += o.superseded;
        self.cancelled += o.cancelled;
        self.duplicate |= o.duplicate;
    }
}

/// Reads the body, refusing more than `limit` bytes without buffering them.
pub(super) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(8192).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::Invalid(format!("could not read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

pub async fn receive(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let Some(source) = state.settings.sources.get(&id).cloned() else {
        return Err(ApiError::UnknownSource(id));
    };
    let result = handle(&req, payload, &state, &source).await;
    let outcome = match &result {
        Ok(s) if s.duplicate => "duplicate",
        Ok(s) if s.note.is_some() => "ignored",
        Ok(_) => "accepted",
        Err(ApiError::Unauthorized(_)) => "unauthorized",
        Err(ApiError::TooLarge { .. }) => "too_large",
        Err(ApiError::Unavailable(_)) => "unavailable",
        Err(_) => "invalid",
    };
    m::push(&source.id, outcome);
    match result {
        Ok(summary) => Ok(HttpResponse::Ok().json(summary)),
        Err(e) => {
            match &e {
                ApiError::Unavailable(err) => {
                    tracing::warn!(source = %source.id, error = %err, "Push refused: Redis unavailable.")
                }
                other => tracing::info!(source = %source.id, error = %other, "Push rejected."),
            }
            Err(e)
        }
    }
}

async fn handle(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    source: &crate::config::Source,
) -> Result<Summary, ApiError> {
    let settings = &state.settings;
    let body = read_body(req, payload, settings.server.max_body_bytes).await?;
    let now = now_ms();
    let verified = crate::verify::verify(&source.auth, req.headers(), &body, now)?;
    let parsed = sources::parse(source, &verified, now).map_err(|e| ApiError::Invalid(e.0))?;
    let params = ApplyParams {
        now_ms: now,
        dedupe_ttl_ms: settings.redis.dedupe_ttl_seconds * 1000,
        max_delay_ms: settings.flush.max_delay_ms,
        batch: settings.launchdarkly.max_keys_per_request,
    };
    let mut summary = Summary {
        skipped_without_key: parsed.skipped_without_key,
        note: parsed.note,
        ..Summary::default()
    };
    for push in &parsed.pushes {
        let out = state
            .store
            .apply(&source.id, &source.destinations, push, params)
            .await
            .map_err(ApiError::Unavailable)?;
        if !out.duplicate {
            m::changes(&source.id, "accepted", out.accepted);
            m::changes(&source.id, "stale", out.stale);
            m::changes(&source.id, "unchanged", out.unchanged);
            m::changes(&source.id, "superseded", out.superseded);
            m::changes(&source.id, "cancelled", out.cancelled);
        }
        summary.add(&out);
    }
    if !summary.duplicate {
        m::changes(
            &source.id,
            "skipped_without_key",
            summary.skipped_without_key,
        );
    }
    state.wake.notify_one();
    Ok(summary)
}
