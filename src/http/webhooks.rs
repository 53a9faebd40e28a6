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
//! Mixpanel sources are answered in Mixpanel's envelope instead, on success
//! and on every error (same status codes): `{"action": "<echo>", "status":
//! "success" | "failure", "error"?: {"message", "code": <HTTP status>}}`.

use super::error::ApiError;
use super::AppState;
use crate::clock::now_ms;
use crate::config::SourceKind;
use crate::metrics as m;
use crate::sources;
use crate::store::{ApplyOutcome, ApplyParams, BatchClaim};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
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
    /// Members whose key is too long or holds a control character.
    pub skipped_invalid_key: u64,
    pub duplicate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
    /// Present when the push was a page of a full snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotSummary>,
}

/// What a snapshot page did: `complete` once every page of its session has
/// arrived; `removed` members were in no page and are now desired out.
#[derive(Debug, Default, Serialize)]
pub struct SnapshotSummary {
    pub session: String,
    pub page: u32,
    pub total_pages: u32,
    pub complete: bool,
    pub removed: u64,
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
    /// `batches = "first-event"`: element 0's `messageId` (and its cohort,
    /// when element 0 is an audience event); apply the batch only if that
    /// element 0 was never applied.
    first_event: Option<(String, Option<String>)>,
}

/// Verifies, then parses; with Mixpanel's `action`, read only once the body
/// is verified (so an unauthenticated body is never parsed).
fn verify_and_parse(
    source: &crate::config::Source,
    headers: &actix_web::http::header::HeaderMap,
    body: &[u8],
    now: i64,
) -> (Option<&'static str>, Result<Checked, ApiError>) {
    let verified = match crate::verify::verify(&source.auth, headers, body, now) {
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
    let first_event = first_event.map(|id| {
        let cohort = parsed
            .pushes
            .first()
            .filter(|p| p.delivery_id.as_deref() == Some(id.as_str()))
            .map(|p| p.cohort_id.clone());
        (id, cohort)
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
    let mut action = None;
    let result = handle(&req, payload, &state, &source, &mut action).await;
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
    if let Err(e) = &result {
        match e {
            ApiError::Unavailable(err) => {
                tracing::warn!(source = %source.id, error = %err, "Push refused: Redis unavailable.")
            }
            other => tracing::info!(source = %source.id, error = %other, "Push rejected."),
        }
    }
    if source.kind == SourceKind::Mixpanel {
        return Ok(mixpanel_envelope(action.unwrap_or(""), result.map(|_| ())));
    }
    match result {
        Ok(summary) => Ok(HttpResponse::Ok().json(summary)),
        Err(e) => Err(e),
    }
}

/// Mixpanel's response envelope, with the status the error would have had.
fn mixpanel_envelope(action: &str, result: Result<(), ApiError>) -> HttpResponse {
    match result {
        Ok(()) => {
            HttpResponse::Ok().json(serde_json::json!({"action": action, "status": "success"}))
        }
        Err(e) => {
            let status = e.status_code();
            let mut resp = HttpResponse::build(status);
            if matches!(e, ApiError::Unavailable(_)) {
                resp.insert_header(("Retry-After", "5"));
            }
            resp.json(serde_json::json!({
                "action": action,
                "status": "failure",
                "error": {"message": e.to_string(), "code": status.as_u16()},
            }))
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
    crate::verify::precheck(&source.auth, req.headers(), now_ms())?;
    let body = read_body(req, payload, &settings.server).await?.freeze();
    let now = now_ms();
    let (echo, checked) = if body.len() > OFF_LOOP_BYTES {
        let (source, headers, body) = (source.clone(), req.headers().clone(), body.clone());
        web::block(move || verify_and_parse(&source, &headers, &body, now))
            .await
            .map_err(|e| ApiError::Invalid(format!("could not verify the body: {e}")))?
    } else {
        verify_and_parse(source, req.headers(), &body, now)
    };
    *action = echo;
    let checked = checked?;
    let mut parsed = checked.parsed;
    // Nothing of a push with a version from the future is stored; invalid
    // member keys are skipped and counted.
    let skew_ms = (settings.server.max_future_skew_seconds as i64).saturating_mul(1000);
    sources::check_future_versions(source.kind, &parsed, now, skew_ms)
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    sources::drop_invalid_keys(&mut parsed, settings.server.max_key_bytes);
    if let Some((first, cohort)) = &checked.first_event {
        let store = &state.store;
        let ttl = settings.redis.dedupe_ttl_seconds * 1000;
        let duplicate = Summary {
            duplicate: true,
            ..Summary::default()
        };
        match store.claim_batch(&source.id, first).await {
            Err(e) => return Err(ApiError::Unavailable(e)),
            Ok(BatchClaim::Done) => return Ok(duplicate),
            Ok(BatchClaim::InProgress) => return Err(ApiError::BatchInProgress),
            Ok(BatchClaim::Retry) => {}
            Ok(BatchClaim::New) => {
                let seen = match cohort {
                    Some(c) => store.delivery_seen(&source.id, c, first).await,
                    None => Ok(false),
                };
                match seen {
                    Ok(true) => {
                        store
                            .finish_batch(&source.id, first, true, ttl)
                            .await
                            .map_err(ApiError::Unavailable)?;
                        return Ok(duplicate);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        let _ = store.finish_batch(&source.id, first, false, ttl).await;
                        return Err(ApiError::Unavailable(e));
                    }
                }
            }
        }
        let result = apply(state, source, &parsed, now).await;
        let marked = store
            .finish_batch(&source.id, first, result.is_ok(), ttl)
            .await;
        return match (result, marked) {
            (Ok(summary), Ok(())) => Ok(summary),
            (Ok(_), Err(e)) => Err(ApiError::Unavailable(e)),
            (Err(e), _) => Err(e),
        };
    }
    apply(state, source, &parsed, now).await
}

/// Applies a parsed push to Redis; the 200 summary.
async fn apply(
    state: &AppState,
    source: &crate::config::Source,
    parsed: &sources::Delivery,
    now: i64,
) -> Result<Summary, ApiError> {
    let settings = &state.settings;
    let params = ApplyParams {
        now_ms: now,
        dedupe_ttl_ms: settings.redis.dedupe_ttl_seconds * 1000,
        max_delay_ms: settings.flush.max_delay_ms,
        batch: settings.launchdarkly.max_keys_per_request,
    };
    let mut summary = Summary {
        skipped_without_key: parsed.skipped_without_key,
        skipped_invalid_key: parsed.skipped_invalid_key,
        note: parsed.note,
        ..Summary::default()
    };
    for (cohort, name) in &parsed.arm_snapshot {
        state
            .store
            .arm_snapshot(&source.id, cohort, name.as_deref(), now)
            .await
            .map_err(ApiError::Unavailable)?;
        tracing::info!(source = %source.id, cohort = ?cohort, "Cohort armed: its next full sync replaces its membership.");
    }
    // The flusher polls every `flush.poll_interval_ms`; wake it only when a
    // link is due at once (a full batch, a snapshot's removals).
    let mut wake = false;
    for push in &parsed.pushes {
        let out = state
            .store_for(push.changes.len())
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
        wake |= out.due_now;
        if let Some(snap) = &push.snapshot {
            wake = true;
            // Also after a duplicate: a retried last page resumes a finalization cut short.
            let fin = state
                .store
                .finalize_snapshot(
                    &source.id,
                    &source.destinations,
                    &push.cohort_id,
                    params,
                    None,
                    None,
                )
                .await
                .map_err(ApiError::Unavailable)?;
            let removed = &fin.outcome;
            m::changes(&source.id, "accepted", removed.accepted);
            m::changes(&source.id, "unchanged", removed.unchanged);
            m::changes(&source.id, "superseded", removed.superseded);
            m::changes(&source.id, "cancelled", removed.cancelled);
            if fin.abandoned {
                tracing::warn!(source = %source.id, cohort = ?push.cohort_id, "Snapshot staging expired before its finalization ended; no further members were removed.");
            }
            let complete = state
                .store
                .snapshot_complete(&source.id, &push.cohort_id, &snap.session)
                .await
                .map_err(ApiError::Unavailable)?;
            // A Heap sync is only a snapshot after a drain armed its segment.
            if complete.is_some() || !snap.armed_only {
                summary.snapshot = Some(SnapshotSummary {
                    session: snap.session.clone(),
                    page: snap.page,
                    total_pages: snap.total_pages,
                    complete: complete.unwrap_or(false),
                    removed: removed.accepted,
                });
            }
        }
    }
    if !summary.duplicate {
        m::changes(
            &source.id,
            "skipped_without_key",
            summary.skipped_without_key,
        );
        m::changes(
            &source.id,
            "skipped_invalid_key",
            summary.skipped_invalid_key,
        );
    }
    if wake {
        state.wake.notify_one();
    }
    Ok(summary)
}
