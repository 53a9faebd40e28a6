//! `POST /v1/operator/links/{link}/retire` and `…/unfreeze`: a link's end
//! (`store::lifecycle`); the flusher carries it out under the normal rate limit.

use super::{authorized_link, ApiError, AppState};
use crate::clock::now_ms;
use crate::http::error::NativeError;
use crate::store::{LifecycleError, OnPush, RetireMode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

/// The body of `…/retire`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetireBody {
    /// `empty`, `delete` or `freeze`.
    pub mode: RetireMode,
    /// What later pushes get (default: `accept` for `freeze`, else `refuse`).
    #[serde(default)]
    pub on_push: Option<OnPush>,
}

/// The link's new state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LifecycleChanged {
    /// The link.
    pub link: String,
    /// Its state now: `frozen`, `emptying`, `deleting` or `active`.
    pub lifecycle: String,
    /// What its later pushes get.
    pub on_push: OnPush,
}

fn answer(e: LifecycleError, raw: String) -> ApiError {
    match e {
        LifecycleError::UnknownLink(_) => ApiError::UnknownLink(raw),
        LifecycleError::Store(e) => ApiError::Unavailable(e),
        e => ApiError::Retired(e.to_string()),
    }
}

/// Retires a link: `empty` removes every member and keeps the segment,
/// `delete` deletes it, `freeze` stops every write and keeps the data.
#[utoipa::path(
    post,
    path = "/v1/operator/links/{link}/retire",
    tag = "operator",
    security(("operator_token" = [])),
    params(("link" = String, Path, example = "production:amplitude:1234",
        description = "`<destination>:<source>:<cohort>`, percent-encoded where needed.")),
    request_body(content = RetireBody, content_type = "application/json",
        example = json!({"mode": "freeze"})),
    responses(
        (status = 200, description = "The link's new state; the flusher carries it out.", body = LifecycleChanged),
        (status = 400, description = "`{link}` is not a link id, or a bad body (`invalid_payload`).", body = NativeError),
        (status = 401, description = "Missing or wrong `Authorization: Bearer <token>` (`unauthorized`).", body = NativeError),
        (status = 404, description = "No such link (`unknown_link`), or no operator token is configured (`operator_api_disabled`).", body = NativeError),
        (status = 408, description = "The body did not arrive in time (`body_timeout`).", body = NativeError),
        (status = 409, description = "The link is already retired (`link_retired`; a frozen link may still be emptied or deleted).", body = NativeError),
        (status = 413, description = "The body is over `server.max_body_bytes` (`payload_too_large`).", body = NativeError),
        (status = 503, description = "Redis is unreachable or too slow (`store_unavailable`).", body = NativeError,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying (5)."))),
    )
)]
pub(crate) async fn retire(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let link = authorized_link(&req, &state, &path)?;
    let body = crate::http::webhooks::read_body(&req, payload, &state.settings.server).await?;
    let body: RetireBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::Invalid(format!(
            "body must be {{\"mode\": \"empty\"|\"delete\"|\"freeze\", \"on_push\": \"accept\"|\"refuse\"|\"ignore\"}}: {e}"
        ))
    })?;
    let on_push = body.on_push.unwrap_or(body.mode.default_on_push());
    let lifecycle = state
        .store
        .retire(&link, body.mode, on_push, now_ms())
        .await
        .map_err(|e| answer(e, path.into_inner()))?;
    tracing::info!(link = %link, lifecycle, on_push = on_push.as_str(), "Link retired by an operator.");
    state.wake.notify_one();
    Ok(HttpResponse::Ok().json(LifecycleChanged {
        link: link.to_string(),
        lifecycle: lifecycle.to_string(),
        on_push,
    }))
}

/// Resumes a frozen link: its backlog is sent.
#[utoipa::path(
    post,
    path = "/v1/operator/links/{link}/unfreeze",
    tag = "operator",
    security(("operator_token" = [])),
    params(("link" = String, Path, example = "production:amplitude:1234",
        description = "`<destination>:<source>:<cohort>`, percent-encoded where needed.")),
    responses(
        (status = 200, description = "The link is active again.", body = LifecycleChanged),
        (status = 400, description = "`{link}` is not `<destination>:<source>:<cohort>` (`invalid_payload`).", body = NativeError),
        (status = 401, description = "Missing or wrong `Authorization: Bearer <token>` (`unauthorized`).", body = NativeError),
        (status = 404, description = "No such link (`unknown_link`), or no operator token is configured (`operator_api_disabled`).", body = NativeError),
        (status = 409, description = "The link is not frozen (`link_retired`).", body = NativeError),
        (status = 503, description = "Redis is unreachable or too slow (`store_unavailable`).", body = NativeError,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying (5)."))),
    )
)]
pub(crate) async fn unfreeze(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let link = authorized_link(&req, &state, &path)?;
    state
        .store
        .unfreeze(&link, now_ms())
        .await
        .map_err(|e| answer(e, path.into_inner()))?;
    tracing::info!(link = %link, "Link unfrozen by an operator.");
    state.wake.notify_one();
    Ok(HttpResponse::Ok().json(LifecycleChanged {
        link: link.to_string(),
        lifecycle: "active".to_string(),
        on_push: OnPush::Accept,
    }))
}
