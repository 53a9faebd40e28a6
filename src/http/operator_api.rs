//! The operator API, behind `Authorization: Bearer <token>` (the secret named
//! by `server.operator_token_env`; unset, every route answers 404):
//!
//! | route | what it does |
//! |---|---|
//! | `GET /v1/operator/links` | every link with its status |
//! | `GET /v1/operator/links/{link}` | one link: segment, backlog, last flush, errors, dead letters |
//! | `GET /v1/operator/links/{link}/dead-letters?cursor=0&count=100` | a page of dead letters |
//! | `POST /v1/operator/links/{link}/redrive` | sends dead letters again (body `{"keys": [..]}` or empty: all) |
//! | `POST /v1/operator/links/{link}/resync` | rewrites the link in full: every tracked member is sent again |
//! | `POST /v1/operator/links/{link}/reconcile` | compares the link with LaunchDarkly's export and marks every difference for repair |
//!
//! `{link}` is `<destination>:<source>:<cohort>`, percent-encoded where needed.
//!
//! `GET /ops` serves a small page over the same API (the token is entered in
//! the page and sent with each call; the page itself holds no data).

use super::error::{ApiError, NativeError};
use super::AppState;
use crate::clock::now_ms;
use crate::store::{LinkId, LinkStatus};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

/// Resync marks members in chunks of this many (one short script each).
const RESYNC_CHUNK: usize = 1000;

/// Routes under `/v1/operator`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1/operator")
            .route("/links", web::get().to(list_links))
            .route("/links/{link}", web::get().to(show_link))
            .route("/links/{link}/dead-letters", web::get().to(dead_letters))
            .route("/links/{link}/redrive", web::post().to(redrive))
            .route("/links/{link}/resync", web::post().to(resync))
            .route(
                "/links/{link}/reconcile",
                web::post().to(reconcile::reconcile),
            ),
    );
    cfg.route("/ops", web::get().to(page));
}

const PAGE: &str = include_str!("assets/operator.html");

/// The operator page: a small page over this API (the token is entered in
/// the page; the page holds no data).
#[utoipa::path(get, path = "/ops", tag = "operator",
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html; charset=utf-8"),
        (status = 404, description = "No operator token is configured (`operator_api_disabled`).", body = NativeError),
    ))]
async fn page(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.settings.operator_token.is_none() {
        return Err(ApiError::OperatorDisabled);
    }
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ))
        .body(PAGE))
}

fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let Some(token) = &state.settings.operator_token else {
        return Err(ApiError::OperatorDisabled);
    };
    crate::verify::verify_header(req.headers(), "Authorization", std::slice::from_ref(token))
        .map_err(|_| ApiError::OperatorUnauthorized)
}

/// Authorizes the operator, then reads the `{link}` of the path.
fn authorized_link(req: &HttpRequest, state: &AppState, raw: &str) -> Result<LinkId, ApiError> {
    authorize(req, state)?;
    LinkId::parse(raw).ok_or_else(|| {
        ApiError::Invalid(format!(
            "{raw:?} is not a link id: expected <destination>:<source>:<cohort>"
        ))
    })
}

/// One link as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinkView {
    pub link: String,
    pub destination: String,
    pub source: String,
    pub cohort: String,
    /// Whether the destination and source are still configured.
    pub configured: bool,
    #[serde(flatten)]
    pub status: LinkStatus,
}

async fn view(state: &AppState, link: LinkId) -> Result<Option<LinkView>, ApiError> {
    let Some(status) = state
        .store
        .link_status(&link)
        .await
        .map_err(ApiError::Unavailable)?
    else {
        return Ok(None);
    };
    let configured = state
        .settings
        .source(&link.source)
        .is_some_and(|s| s.destinations.contains(&link.destination));
    Ok(Some(LinkView {
        link: link.to_string(),
        destination: link.destination,
        source: link.source,
        cohort: link.cohort,
        configured,
        status,
    }))
}

/// Every link with its status.
#[utoipa::path(
    get,
    path = "/v1/operator/links",
    tag = "operator",
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "Every link.", body = LinkList),
        (status = 401, description = "Missing or wrong `Authorization: Bearer <token>` (`unauthorized`).", body = NativeError),
        (status = 404, description = "No operator token is configured (`operator_api_disabled`).", body = NativeError),
        (status = 503, description = "Redis is unreachable or too slow (`store_unavailable`).", body = NativeError,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying (5)."))),
    )
)]
async fn list_links(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let links = state.store.links().await.map_err(ApiError::Unavailable)?;
    let mut out = Vec::with_capacity(links.len());
    for link in links {
        if let Some(v) = view(&state, link).await? {
            out.push(v);
        }
    }
    Ok(HttpResponse::Ok().json(LinkList { links: out }))
}

/// One link: segment, backlog, last flush, errors, dead letters.
#[utoipa::path(
    get,
    path = "/v1/operator/links/{link}",
    tag = "operator",
    security(("operator_token" = [])),
    params(("link" = String, Path, example = "production:amplitude:1234",
        description = "`<destination>:<source>:<cohort>`, percent-encoded where needed.")),
    responses(
        (status = 200, description = "The link.", body = LinkView),
        (status = 400, description = "`{link}` is not `<destination>:<source>:<cohort>` (`invalid_payload`).", body = NativeError),
        (status = 401, description = "Missing or wrong `Authorization: Bearer <token>` (`unauthorized`).", body = NativeError),
        (status = 404, description = "No such link (`unknown_link`), or no operator token is configured (`operator_api_disabled`).", body = NativeError),
        (status = 503, description = "Redis is unreachable or too slow (`store_unavailable`).", body = NativeError,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying (5)."))),
    )
)]
async fn show_link(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let link = authorized_link(&req, &state, &path)?;
    match view(&state, link).await? {
        Some(v) => Ok(HttpResponse::Ok().json(v)),
        None => Err(ApiError::UnknownLink(path.into_inner())),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    count: Option<usize>,
}

/// A page of the link's dead letters: members LaunchDarkly rejected.
#[utoipa::path(
    get,
    path = "/v1/operator/links/{link}/dead-letters",
    tag = "operator",
    security(("operator_token" = [])),
    params(("link" = String, Path, example = "production:amplitude:1234",
        description = "`<destination>:<source>:<cohort>`, percent-encoded where needed."), Page),
    responses(
        (status = 200, description = "A page of dead letters.", body = DeadLetterPage),
        (status = 400, description = "`{link}` is not a link id, or a bad query string or cursor (`invalid_payload`).", body = NativeError),
        (status = 401, description = "Missing or wrong `Authorization: Bearer <token>` (`unauthorized`).", body = NativeError),
        (status = 404, description = "No operator token is configured (`operator_api_disabled`).", body = NativeError),
        (status = 503, description = "Redis is unreachable or too slow (`store_unavailable`).", body = NativeError,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying (5)."))),
    )
)]
async fn dead_letters(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let link = authorized_link(&req, &state, &path)?;
    let query = web::Query::<Page>::from_query(req.query_string())
        .map_err(|e| ApiError::Invalid(format!("bad query string: {e}")))?;
    let cursor = query.cursor.as_deref().unwrap_or("0");
    if cursor.parse::<u64>().is_err() {
        return Err(ApiError::Invalid(format!(
            "cursor {cursor:?} is not a cursor returned by this endpoint"
        )));
    }
    let count = query.count.unwrap_or(100).clamp(1, 10_000);
    let (next, letters) = state
        .store
        .dead_letters(&link, cursor, count)
        .await
        .map_err(ApiError::Unavailable)?;
    Ok(HttpResponse::Ok().json(DeadLetterPage {
        link: link.to_string(),
        dead_letters: letters,
        next_cursor: (next != "0").then_some(next),
    }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RedriveBody {
    #[serde(default)]
    keys: Option<Vec<String>>,
}

/// Sends dead letters again: those named, or every one (empty body).
#[utoipa::path(
    post,
    path = "/v1/operator/links/{link}/redrive",
    tag = "operator",
    security(("operator_token" = [])),
    params(("link" = String, Path, example = "production:amplitude:1234",
        description = "`<destination>:<source>:<cohort>`, percent-encoded where needed.")),
    request_body(content = Option<RedriveBody>, content_type = "application/json",
        description = "Empty or `null` (every dead letter), or `{\"keys\": [...]}`."),
    responses(
        (status = 200, description = "How many left the dead letters.", body = Redriven),
        (status = 400, description = "`{link}` is not a link id, or the body is neither empty nor `{\"keys\": [...]}` (`invalid_payload`).", body = NativeError),
        (status = 401, description = "Missing or wrong `Authorization: Bearer <token>` (`unauthorized`).", body = NativeError),
        (status = 404, description = "No operator token is configured (`operator_api_disabled`).", body = NativeError),
        (status = 408, description = "The body did not arrive in time (`body_timeout`).", body = NativeError),
        (status = 413, description = "The body is over `server.max_body_bytes` (`payload_too_large`).", body = NativeError),
        (status = 503, description = "Redis is unreachable or too slow (`store_unavailable`).", body = NativeError,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying (5)."))),
    )
)]
async fn redrive(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // The token before any byte of the body is read.
    let link = authorized_link(&req, &state, &path)?;
    let body = super::webhooks::read_body(&req, payload, &state.settings.server).await?;
    let body: RedriveBody = if body.iter().all(u8::is_ascii_whitespace) {
        RedriveBody::default()
    } else {
        // `null` is the empty body's JSON spelling: every dead letter.
        serde_json::from_slice::<Option<RedriveBody>>(&body)
            .map(Option::unwrap_or_default)
            .map_err(|e| {
                ApiError::Invalid(format!(
                    "body must be empty or {{\"keys\": [\"<context key>\", ...]}}: {e}"
                ))
            })?
    };
    let n = state
        .store
        .redrive(&link, body.keys.as_deref(), now_ms())
        .await
        .map_err(ApiError::Unavailable)?;
    tracing::info!(link = %link, redriven = n, "Dead letters redriven by an operator.");
    state.wake.notify_one();
    Ok(HttpResponse::Ok().json(Redriven {
        link: link.to_string(),
        redriven: n,
    }))
}

/// Rewrites the link in full: every tracked member is sent again.
#[utoipa::path(
    post,
    path = "/v1/operator/links/{link}/resync",
    tag = "operator",
    security(("operator_token" = [])),
    params(("link" = String, Path, example = "production:amplitude:1234",
        description = "`<destination>:<source>:<cohort>`, percent-encoded where needed.")),
    responses(
        (status = 200, description = "How many members will be sent again.", body = Resynced),
        (status = 400, description = "`{link}` is not `<destination>:<source>:<cohort>` (`invalid_payload`).", body = NativeError),
        (status = 401, description = "Missing or wrong `Authorization: Bearer <token>` (`unauthorized`).", body = NativeError),
        (status = 404, description = "No such link (`unknown_link`), or no operator token is configured (`operator_api_disabled`).", body = NativeError),
        (status = 503, description = "Redis is unreachable or too slow (`store_unavailable`).", body = NativeError,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying (5)."))),
    )
)]
async fn resync(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let link = authorized_link(&req, &state, &path)?;
    let n = state
        .store
        .resync(&link, now_ms(), RESYNC_CHUNK)
        .await
        .map_err(ApiError::Unavailable)?
        .ok_or_else(|| ApiError::UnknownLink(path.into_inner()))?;
    tracing::info!(link = %link, members = n, "Resync requested by an operator.");
    state.wake.notify_one();
    Ok(HttpResponse::Ok().json(Resynced {
        link: link.to_string(),
        members: n,
    }))
}

/// `GET /v1/operator/links`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinkList {
    pub links: Vec<LinkView>,
}

/// `GET /v1/operator/links/{link}/dead-letters`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterPage {
    pub link: String,
    pub dead_letters: Vec<crate::store::DeadLetter>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /v1/operator/links/{link}/redrive`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Redriven {
    pub link: String,
    /// How many members left the dead letters to be sent again.
    pub redriven: u64,
}

/// `POST /v1/operator/links/{link}/resync`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Resynced {
    pub link: String,
    /// How many tracked members will be sent again.
    pub members: u64,
}

/// `POST /v1/operator/links/{link}/reconcile`: runs a full reconcile (see
/// `crate::reconcile`) and answers its report, or why it failed (nothing
/// was marked): 404 unknown link, 409 no segment yet, 502 LaunchDarkly's
/// error or an export layout other than the assumed one, 503 Redis.
mod reconcile {
    use super::{authorized_link, ApiError, AppState};
    use crate::reconcile::{ReconcileError, Reconciler};
    use actix_web::{web, HttpRequest, HttpResponse};
    use serde_json::json;

    pub(super) async fn reconcile(
        req: HttpRequest,
        path: web::Path<String>,
        state: web::Data<AppState>,
        reconciler: web::Data<Reconciler>,
    ) -> Result<HttpResponse, ApiError> {
        let link = authorized_link(&req, &state, &path)?;
        // Its own task: a caller that hangs up does not stop a run halfway.
        let run = {
            let (reconciler, link) = (reconciler.clone(), link.clone());
            tokio::spawn(async move { reconciler.run(&link).await })
        };
        let failed = |status: actix_web::http::StatusCode, code: &str, e: &ReconcileError| {
            HttpResponse::build(status).json(json!({
                "error": {"code": code, "message": e.to_string()},
                "link": link.to_string(),
            }))
        };
        use actix_web::http::StatusCode as S;
        match run.await {
            Ok(Ok(outcome)) => {
                state.wake.notify_one();
                Ok(HttpResponse::Ok().json(outcome))
            }
            Ok(Err(ReconcileError::UnknownLink(_))) => {
                Err(ApiError::UnknownLink(path.into_inner()))
            }
            Ok(Err(ReconcileError::Store(e))) => Err(ApiError::Unavailable(e)),
            Ok(Err(e @ (ReconcileError::NoSegment(_) | ReconcileError::UnknownDestination(_)))) => {
                Ok(failed(S::CONFLICT, "not_reconcilable", &e))
            }
            Ok(Err(e @ ReconcileError::Export(_))) => Ok(failed(S::BAD_GATEWAY, "bad_export", &e)),
            Ok(Err(e)) => Ok(failed(S::BAD_GATEWAY, "launchdarkly_error", &e)),
            Err(e) => Err(ApiError::Invalid(format!("the reconcile task failed: {e}"))),
        }
    }
}
