//! `POST /v1/operator/links/{link}/reconcile`: runs a full reconcile (see
//! `crate::reconcile`) and answers its report, or why it failed (nothing
//! was marked): 404 unknown link, 409 no segment yet, 502 LaunchDarkly's
//! error or an export layout other than the assumed one, 503 Redis.

use super::{authorized_link, ApiError, AppState};
use crate::http::error::{ErrorDetail, NativeError};
use crate::reconcile::{Outcome, ReconcileError, Reconciler};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

/// A reconcile that failed before marking anything.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReconcileFailed {
    /// `not_reconcilable` or `shadow_mode` (409), `bad_export` or `launchdarkly_error` (502).
    pub error: ErrorDetail,
    /// The link.
    pub link: String,
}

/// Runs a full reconcile of one link with LaunchDarkly's export.
#[utoipa::path(
    post,
    path = "/v1/operator/links/{link}/reconcile",
    tag = "operator",
    security(("operator_token" = [])),
    params(("link" = String, Path, example = "production:amplitude:1234",
        description = "`<destination>:<source>:<cohort>`, percent-encoded where needed.")),
    responses(
        (status = 200, description = "The reconcile's report; every difference is marked for the flusher.", body = Outcome),
        (status = 400, description = "`{link}` is not `<destination>:<source>:<cohort>` (`invalid_payload`).", body = NativeError),
        (status = 401, description = "Missing or wrong `Authorization: Bearer <token>` (`unauthorized`).", body = NativeError),
        (status = 404, description = "No such link (`unknown_link`), or no operator token is configured (`operator_api_disabled`).", body = NativeError),
        (status = 409, description = "The link has no segment yet, or its destination is gone (`not_reconcilable`), or its destination is in shadow mode, so LaunchDarkly is not read (`shadow_mode`).", body = ReconcileFailed),
        (status = 502, description = "LaunchDarkly's error, or an export file in another layout than the assumed one (`launchdarkly_error`, `bad_export`); nothing was marked.", body = ReconcileFailed),
        (status = 503, description = "Redis is unreachable or too slow (`store_unavailable`).", body = NativeError,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying (5)."))),
    )
)]
pub(crate) async fn reconcile(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    reconciler: web::Data<Reconciler>,
) -> Result<HttpResponse, ApiError> {
    let link = authorized_link(&req, &state, &path)?;
    // A deleted link has no segment to compare with.
    if let Some(st) = state
        .store
        .link_status(&link)
        .await
        .map_err(ApiError::Unavailable)?
    {
        if let Some(l) = st.meta.get("lifecycle").filter(|l| l.starts_with("delet")) {
            return Ok(HttpResponse::Conflict().json(ReconcileFailed {
                error: ErrorDetail {
                    code: "not_reconcilable",
                    message: format!("link {link} is {l}: its segment is gone"),
                },
                link: link.to_string(),
            }));
        }
    }
    // Its own task: a caller that hangs up does not stop a run halfway.
    let run = {
        let (reconciler, link) = (reconciler.clone(), link.clone());
        tokio::spawn(async move { reconciler.run(&link).await })
    };
    let failed = |status: actix_web::http::StatusCode, code: &'static str, e: &ReconcileError| {
        HttpResponse::build(status).json(ReconcileFailed {
            error: ErrorDetail {
                code,
                message: e.to_string(),
            },
            link: link.to_string(),
        })
    };
    use actix_web::http::StatusCode as S;
    match run.await {
        Ok(Ok(outcome)) => {
            state.wake.notify_one();
            Ok(HttpResponse::Ok().json(outcome))
        }
        Ok(Err(ReconcileError::UnknownLink(_))) => Err(ApiError::UnknownLink(path.into_inner())),
        Ok(Err(ReconcileError::Store(e))) => Err(ApiError::Unavailable(e)),
        Ok(Err(e @ (ReconcileError::NoSegment(_) | ReconcileError::UnknownDestination(_)))) => {
            Ok(failed(S::CONFLICT, "not_reconcilable", &e))
        }
        Ok(Err(e @ ReconcileError::ShadowMode(_))) => Ok(failed(S::CONFLICT, "shadow_mode", &e)),
        Ok(Err(e @ ReconcileError::Export(_))) => Ok(failed(S::BAD_GATEWAY, "bad_export", &e)),
        Ok(Err(e)) => Ok(failed(S::BAD_GATEWAY, "launchdarkly_error", &e)),
        Err(e) => Err(ApiError::Invalid(format!("the reconcile task failed: {e}"))),
    }
}
