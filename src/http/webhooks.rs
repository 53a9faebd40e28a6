//! `POST /v1/webhooks/{source}`: the native receivers.
//!
//! Order matters: unknown source (404) before reading the body; the body is
//! read up to `max_body_bytes` (413); verified on the raw bytes (401); parsed
//! (400); applied to Redis (503 if it cannot be). Only then 200: every
//! accepted change is in Redis.
//!
//! A page that completes a full snapshot also has its finalization driven to
//! the end here (members in no page become desired out, a chunk at a time;
//! `store::snapshot`) before the answer, which reports it under `snapshot`.
//!
//! Each source is answered in its kind's style ([`AnswerStyle`]): Mixpanel
//! sources in Mixpanel's envelope, on success and on every error (same status
//! codes): `{"action": "<echo>", "status": "success" | "failure", "error"?:
//! {"message", "code": <HTTP status>}}`; the others natively (`super::error`).

use super::error::{ApiError, MixpanelEnvelope, NativeError};
use super::AppState;
use crate::clock::now_ms;
use crate::config::AnswerStyle;
use crate::ingest::{FirstEvent, Summary};
use crate::metrics::{self as m, RequestOutcome};
use crate::sources;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

/// Reads the body, refusing more than `server.max_body_bytes` without
/// buffering them (413), and a body that has not fully arrived within
/// `server.body_read_timeout_ms` (408).
pub(super) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    server: &crate::config::ServerConfig,
) -> Result<web::BytesMut, ApiError> {
    let limit = server.max_body_bytes;
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge { limit });
    }
    let read = async {
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
    };
    let ms = server.body_read_timeout_ms;
    tokio::time::timeout(std::time::Duration::from_millis(ms), read)
        .await
        .map_err(|_| ApiError::BodyTimeout { ms })?
}

/// Bodies above this size are verified and parsed on the blocking pool, so
/// a big request does not stall the other requests of its worker.
pub(super) const OFF_LOOP_BYTES: usize = 64 * 1024;

/// What a verified, parsed body carries.
struct Checked {
    parsed: sources::Delivery,
    /// `batches = "first-event"`: element 0 of a batch signed over it alone.
    first_event: Option<FirstEvent>,
}

/// Verifies, then parses; with Mixpanel's `action`, read only once the body
/// is verified (so an unauthenticated body is never parsed).
fn verify_and_parse(
    source: &crate::config::Source,
    headers: &actix_web::http::header::HeaderMap,
    prechecked: &crate::verify::Prechecked,
    body: &[u8],
    now: i64,
) -> (Option<&'static str>, Result<Checked, ApiError>) {
    let verified =
        match crate::verify::verify_prechecked(&source.auth, headers, body, now, prechecked) {
            Ok(v) => v,
            Err(e) => return (None, Err(e.into())),
        };
    let action = sources::echo_action(source.kind, body);
    (action, parse_verified(source, &verified, now))
}

fn parse_verified(
    source: &crate::config::Source,
    verified: &crate::verify::Verified<'_>,
    now: i64,
) -> Result<Checked, ApiError> {
    let first_event = match verified.first_event_only() {
        None => None,
        Some(first) => Some(first_message_id(first).ok_or_else(|| {
            ApiError::Invalid(
                "event 0 of a batch signed over element 0 must carry a messageId (batches = \"first-event\")"
                    .into(),
            )
        })?),
    };
    let parsed =
        sources::parse(source, verified, now).map_err(|e| ApiError::Invalid(e.to_string()))?;
    // Element 0's push, if it has one, is the first and carries its messageId.
    let first_event = first_event.map(|message_id| FirstEvent {
        cohort: parsed
            .pushes
            .first()
            .filter(|p| p.delivery_id.as_deref() == Some(message_id.as_str()))
            .map(|p| p.cohort_id.clone()),
        message_id,
    });
    Ok(Checked {
        parsed,
        first_event,
    })
}

/// The `messageId` of a (verified) Segment event.
fn first_message_id(event: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        #[serde(rename = "messageId")]
        message_id: Option<String>,
    }
    serde_json::from_slice::<Id>(event)
        .ok()?
        .message_id
        .filter(|m| !m.is_empty())
}

/// Receives one push from the source `{source}`.
///
/// The body is the sender's own (Amplitude Cohort Webhooks, a Heap
/// `segment.users.sync`, Segment Engage events, Mixpanel's cohort sync, or
/// the Standard Webhooks body); the source's `kind` in the configuration
/// says which. Each source authenticates as its sender does, checked on the
/// raw bytes before parsing (401 otherwise):
///
/// - `scheme = "header"` (Amplitude): the configured header (e.g.
///   `X-Cohort-Bridge-Token`) holds a shared secret;
/// - `heap-hash` (Heap): `Heap-Hash: ts:<ms>,hmac:<base64>`, HMAC-SHA256 over
///   the timestamp and the body, within the tolerance window;
/// - `segment-signature` (Segment): `X-Signature`, hex HMAC-SHA1 of the body;
/// - `basic` (Mixpanel): `Authorization: Basic <user:password>`;
/// - `standard-webhooks`: `webhook-id`, `webhook-timestamp` and
///   `webhook-signature` (`v1,<base64>`), HMAC-SHA256 over
///   `<id>.<timestamp>.<body>`.
///
/// Answers are in the source's style: natively (the summary on 200,
/// `{"error": {"code", "message"}}` otherwise), or in Mixpanel's envelope
/// (`{"action", "status", "error"?}`, with the same statuses) for Mixpanel
/// sources. 200 means every accepted change is in Redis.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{source}",
    tag = "receivers",
    params(("source" = String, Path, example = "amplitude",
        description = "The `id` of a configured `[[sources]]` entry.")),
    request_body(content = Object, content_type = "application/json",
        description = "The sender's body, as its platform posts it (see the source kinds in the README); \
            the example is an Amplitude Cohort Webhooks body.",
        example = json!({"cohort_id": "1234", "cohort_name": "Power users", "in_cohort": true,
            "computed_time": "1700000000000", "message_id": "m-1",
            "users": [{"user_id": "user-1"}, {"user_id": "user-2"}]})),
    responses(
        (status = 200, description = "Every accepted change is in Redis: the summary, or Mixpanel's success envelope.",
            body = super::openapi::WebhookAnswer),
        (status = 400, description = "Not JSON or not the source's shape (`invalid_payload`).", body = super::openapi::WebhookError),
        (status = 401, description = "Missing or wrong credentials, a bad signature, or a signed timestamp outside the window (`unauthorized`).",
            body = super::openapi::WebhookError),
        (status = 404, description = "No source with that id (`unknown_source`, always native).", body = NativeError),
        (status = 408, description = "The body did not arrive within `server.body_read_timeout_ms` (`body_timeout`).",
            body = super::openapi::WebhookError),
        (status = 409, description = "A link of the pushed cohort was retired and refuses pushes (`link_retired`; the message names the link and its state).", body = super::openapi::WebhookError),
        (status = 413, description = "The body is over `server.max_body_bytes` (`payload_too_large`).", body = super::openapi::WebhookError),
        (status = 503, description = "Redis is unreachable or too slow, or another request applies the same Segment batch (`store_unavailable`, `batch_in_progress`): retry.",
            body = super::openapi::WebhookError,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying (5)."))),
    )
)]
pub async fn receive(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let Some(source) = state.settings.sources.get(&id) else {
        return Err(ApiError::UnknownSource(id));
    };
    let mut action = None;
    let result = handle(&req, payload, &state, source, &mut action).await;
    m::request(
        &source.id,
        match &result {
            Ok(s) if s.duplicate => RequestOutcome::Duplicate,
            Ok(s) if s.note.is_some() => RequestOutcome::Ignored,
            Ok(_) => RequestOutcome::Accepted,
            Err(e) => e.outcome(),
        },
    );
    let style = source.kind.answer_style();
    let action = action.unwrap_or("");
    match result {
        Ok(summary) => Ok(match style {
            AnswerStyle::Mixpanel => HttpResponse::Ok().json(MixpanelEnvelope::success(action)),
            AnswerStyle::Native | AnswerStyle::LaunchDarkly => HttpResponse::Ok().json(summary),
        }),
        Err(e) => {
            match &e {
                ApiError::Unavailable(err) => {
                    tracing::warn!(source = %source.id, error = %err, "Push refused: Redis unavailable.");
                }
                other => tracing::info!(source = %source.id, error = %other, "Push rejected."),
            }
            Ok(e.respond(style, action))
        }
    }
}

async fn handle(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    source: &crate::config::Source,
    action: &mut Option<&'static str>,
) -> Result<Summary, ApiError> {
    let settings = &state.settings;
    // Header credentials (and signature headers' shape and window) first:
    // an unauthenticated request is refused before its body is read.
    let prechecked = crate::verify::precheck(&source.auth, req.headers(), now_ms())?;
    let body = read_body(req, payload, &settings.server).await?.freeze();
    let now = now_ms();
    let (echo, checked) = if body.len() > OFF_LOOP_BYTES {
        let (source, headers, body) = (source.clone(), req.headers().clone(), body.clone());
        web::block(move || verify_and_parse(&source, &headers, &prechecked, &body, now))
            .await
            .map_err(|e| ApiError::Invalid(format!("could not verify the body: {e}")))?
    } else {
        verify_and_parse(source, req.headers(), &prechecked, &body, now)
    };
    *action = echo;
    let checked = checked?;
    let mut parsed = checked.parsed;
    state
        .ingest
        .admit(source.kind, &mut parsed, now)
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    state
        .ingest
        .apply(
            &source.id,
            &source.destinations,
            &parsed,
            checked.first_event.as_ref(),
            now,
        )
        .await
        .map_err(ApiError::from)
}
