//! The operator API, behind `Authorization: Bearer <token>` (the secret named
//! by `server.operator_token_env`; unset, every route answers 404):
//!
//! | route | what it does |
//! |---|---|
//! | `GET /v1/operator/links?q=&sort=&offset=&limit=` | every link with its status (all of them, by link id, without a query); `q` filters on the link id and segment key, `sort` is `link`, `backlog`, `dead_letters`, `tracked`, `oldest`, `last_write` or `blocked` (`-` first: descending), `offset` and `limit` page; `total` counts the matches |
//! | `GET /v1/operator/overview` | the deployment: replicas and the partitions each holds, Redis health, the LaunchDarkly budget, and this replica's 15-minute series (propagation p50/p99, requests/s against the budget) |
//! | `GET /v1/operator/links/{link}` | one link: segment, backlog, last flush, errors, dead letters |
//! | `GET /v1/operator/links/{link}/dead-letters?cursor=0&count=100` | a page of dead letters |
//! | `GET /v1/operator/links/{link}/audit?since=&limit=` | the link's LaunchDarkly writes, newest first (`since`: Unix ms or RFC 3339) |
//! | `GET /v1/operator/links/{link}/members/{key}?launchdarkly=` | why a member is (not) in the segment: desired state and version, what LaunchDarkly has per the bridge, dirty and due, the changes that touched it; `launchdarkly=true` adds LaunchDarkly's own answer |
//! | `POST /v1/operator/links/{link}/redrive` | sends dead letters again (body `{"keys": [..]}` or empty: all) |
//! | `POST /v1/operator/links/{link}/resync` | rewrites the link in full: every tracked member is sent again |
//! | `POST /v1/operator/links/{link}/reconcile` | compares the link with LaunchDarkly's export and marks every difference for repair |
//!
//! `{link}` is `<destination>:<source>:<cohort>`, percent-encoded where needed.
//!
//! `GET /ops` serves the operations dashboard over the same API (the token is
//! entered in the page, kept in the tab's `sessionStorage` and sent with each
//! call; the page itself holds no data). Its script and styles are served by
//! the bridge (`/ops/assets/ops.js`, `/ops/assets/ops.css`), so the page
//! needs no network and its CSP allows only `'self'`.

pub(super) mod lifecycle;
pub(super) mod overview;
pub(super) mod reconcile;

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
            .route("/links/{link}/audit", web::get().to(audit))
            .route("/links/{link}/members/{key}", web::get().to(member))
            .route("/links/{link}/resync", web::post().to(resync))
            .route("/links/{link}/retire", web::post().to(lifecycle::retire))
            .route(
                "/links/{link}/unfreeze",
                web::post().to(lifecycle::unfreeze),
            )
            .route(
                "/links/{link}/reconcile",
                web::post().to(reconcile::reconcile),
            )
            .route("/overview", web::get().to(overview::overview)),
    );
    cfg.route("/ops", web::get().to(page))
        .route("/ops/assets/{file}", web::get().to(asset));
}

const PAGE: &str = include_str!("../assets/operator.html");
const SCRIPT: &str = include_str!("../assets/ops.js");
const STYLES: &str = include_str!("../assets/ops.css");

/// The page's script and styles (404 for anything else, or with the
/// operator API disabled).
#[utoipa::path(get, path = "/ops/assets/{file}", tag = "operator",
    params(("file" = String, Path, description = "`ops.js` or `ops.css`.")),
    responses(
        (status = 200, description = "The script or the styles.", body = String, content_type = "text/javascript; charset=utf-8"),
        (status = 404, description = "No such asset (`not_found`), or no operator token is configured (`operator_api_disabled`).", body = NativeError),
    ))]
async fn asset(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if state.settings.operator_token.is_none() {
        return Err(ApiError::OperatorDisabled);
    }
    let (body, kind) = match path.as_str() {
        "ops.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "ops.css" => (STYLES, "text/css; charset=utf-8"),
        _ => return Err(ApiError::NotFound),
    };
    Ok(HttpResponse::Ok()
        .content_type(kind)
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(body))
}

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
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
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
    /// `active`, `orphaned` (its source or destination left the
    /// configuration: nothing is written, the data is kept), or a retired
    /// state: `frozen`, `emptying`, `emptied`, `deleting`, `deleted`.
    pub lifecycle: String,
    /// `live`, or `shadow` (nothing is sent to LaunchDarkly; writes are
    /// audited as `shadowed`): the destination's mode.
    pub mode: crate::config::Mode,
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
    let lifecycle = match status.meta.get("lifecycle").filter(|s| !s.is_empty()) {
        Some(s) => s.clone(),
        None if !configured => "orphaned".to_string(),
        None => "active".to_string(),
    };
    let mode = state.settings.mode_of(&link.destination);
    Ok(Some(LinkView {
        lifecycle,
        link: link.to_string(),
        destination: link.destination,
        source: link.source,
        cohort: link.cohort,
        configured,
        mode,
        status,
    }))
}

/// Statuses read at once by the links list (one pipeline each).
const LIST_CONCURRENCY: usize = 32;
/// The largest page of `GET /v1/operator/links`.
const MAX_PAGE: usize = 10_000;

/// The optional query of `GET /v1/operator/links`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct LinksQuery {
    /// Keeps links whose id or segment key contains this (case-insensitive).
    #[serde(default)]
    q: Option<String>,
    /// `link` (default), `backlog`, `dead_letters`, `tracked`, `oldest`,
    /// `last_write` or `blocked`; a leading `-` reverses.
    #[serde(default)]
    sort: Option<String>,
    /// Links to skip (default 0).
    #[serde(default)]
    offset: Option<usize>,
    /// Links in the page, 1 to 10,000 (default: all).
    #[serde(default)]
    limit: Option<usize>,
}

/// How the links list is ordered (`sort=`; `-` first reverses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkSort {
    Link,
    Backlog,
    DeadLetters,
    Tracked,
    Oldest,
    LastWrite,
    Blocked,
}

impl LinkSort {
    fn parse(raw: &str) -> Option<(LinkSort, bool)> {
        let (desc, name) = match raw.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, raw),
        };
        let sort = match name {
            "link" => LinkSort::Link,
            "backlog" => LinkSort::Backlog,
            "dead_letters" => LinkSort::DeadLetters,
            "tracked" => LinkSort::Tracked,
            "oldest" => LinkSort::Oldest,
            "last_write" => LinkSort::LastWrite,
            "blocked" => LinkSort::Blocked,
            _ => return None,
        };
        Some((sort, desc))
    }

    fn cmp(self, a: &LinkView, b: &LinkView) -> std::cmp::Ordering {
        let meta_ms = |v: &LinkView, k: &str| {
            v.status
                .meta
                .get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .unwrap_or(0)
        };
        let blocked = |v: &LinkView| v.status.meta.get("blocked").is_some_and(|r| !r.is_empty());
        let by = match self {
            LinkSort::Link => std::cmp::Ordering::Equal,
            LinkSort::Backlog => a.status.dirty.cmp(&b.status.dirty),
            LinkSort::DeadLetters => a.status.dead_letters.cmp(&b.status.dead_letters),
            LinkSort::Tracked => a.status.tracked_members.cmp(&b.status.tracked_members),
            // Oldest pending first; links with nothing pending last.
            LinkSort::Oldest => a
                .status
                .dirty_since_ms
                .unwrap_or(i64::MAX)
                .cmp(&b.status.dirty_since_ms.unwrap_or(i64::MAX)),
            LinkSort::LastWrite => meta_ms(a, "last_flush_ms").cmp(&meta_ms(b, "last_flush_ms")),
            // Blocked links first.
            LinkSort::Blocked => blocked(b).cmp(&blocked(a)),
        };
        by.then_with(|| a.link.cmp(&b.link))
    }
}

/// Every link with its status.
#[utoipa::path(
    get,
    path = "/v1/operator/links",
    tag = "operator",
    security(("operator_token" = [])),
    params(LinksQuery),
    responses(
        (status = 200, description = "The links matching `q`, sorted by `sort`, from `offset` (every link, by id, without a query).", body = LinkList),
        (status = 400, description = "A bad query: an unknown `sort` or a `limit` out of range (`invalid_payload`).", body = NativeError),
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
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    authorize(&req, &state)?;
    let query = web::Query::<LinksQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::Invalid(format!("bad query string: {e}")))?
        .into_inner();
    let (sort, desc) = match query.sort.as_deref() {
        None | Some("") => (LinkSort::Link, false),
        Some(raw) => LinkSort::parse(raw).ok_or_else(|| {
            ApiError::Invalid(format!(
                "sort {raw:?} is not one of link, backlog, dead_letters, tracked, oldest, last_write, blocked (prefix - for descending)"
            ))
        })?,
    };
    if query.limit == Some(0) || query.limit.is_some_and(|l| l > MAX_PAGE) {
        return Err(ApiError::Invalid(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let links = state.store.links().await.map_err(ApiError::Unavailable)?;
    let views: Vec<Option<LinkView>> = stream::iter(links.into_iter().map(|l| view(&state, l)))
        .buffered(LIST_CONCURRENCY)
        .try_collect()
        .await?;
    let needle = query
        .q
        .as_deref()
        .map(str::to_lowercase)
        .unwrap_or_default();
    let mut out: Vec<LinkView> = views
        .into_iter()
        .flatten()
        .filter(|v| {
            needle.is_empty()
                || v.link.to_lowercase().contains(&needle)
                || v.status
                    .meta
                    .get("segment_key")
                    .is_some_and(|k| k.to_lowercase().contains(&needle))
        })
        .collect();
    if sort != LinkSort::Link || desc {
        out.sort_by(|a, b| {
            let o = sort.cmp(a, b);
            if desc {
                o.reverse()
            } else {
                o
            }
        });
    }
    let total = out.len();
    let offset = query.offset.unwrap_or(0).min(total);
    let limit = query.limit.unwrap_or(total);
    let page: Vec<LinkView> = out.into_iter().skip(offset).take(limit).collect();
    Ok(HttpResponse::Ok().json(LinkList {
        links: page,
        total,
        offset,
    }))
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

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct MemberQuery {
    /// Also ask LaunchDarkly for the member (one read, under the flusher's
    /// rate limit and the shared 429 pause). Default false.
    #[serde(default)]
    launchdarkly: Option<bool>,
}

/// Why a member is (not) in the link's segment.
#[utoipa::path(
    get,
    path = "/v1/operator/links/{link}/members/{key}",
    tag = "operator",
    security(("operator_token" = [])),
    params(("link" = String, Path, example = "production:amplitude:1234",
        description = "`<destination>:<source>:<cohort>`, percent-encoded where needed."),
        ("key" = String, Path, example = "user-42", description = "The member's context key, percent-encoded."),
        MemberQuery),
    responses(
        (status = 200, description = "The member's explanation (`known: false` for a key the bridge never saw).", body = crate::store::MemberExplanation),
        (status = 400, description = "`{link}` is not a link id, or a bad query string (`invalid_payload`).", body = NativeError),
        (status = 401, description = "Missing or wrong `Authorization: Bearer <token>` (`unauthorized`).", body = NativeError),
        (status = 404, description = "No such link (`unknown_link`), or no operator token is configured (`operator_api_disabled`).", body = NativeError),
        (status = 503, description = "Redis is unreachable or too slow (`store_unavailable`).", body = NativeError,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying (5)."))),
    )
)]
async fn member(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
    reconciler: web::Data<crate::reconcile::Reconciler>,
) -> Result<HttpResponse, ApiError> {
    let (raw_link, key) = path.into_inner();
    let link = authorized_link(&req, &state, &raw_link)?;
    let query = web::Query::<MemberQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::Invalid(format!("bad query string: {e}")))?;
    let ask = query.launchdarkly.unwrap_or(false);
    let explained = reconciler
        .explain_member(&link, &key, ask)
        .await
        .map_err(ApiError::Unavailable)?
        .ok_or(ApiError::UnknownLink(raw_link))?;
    Ok(HttpResponse::Ok().json(explained))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Only entries at or after this time: Unix ms, or RFC 3339 (`2026-12-02T14:02:00Z`).
    #[serde(default)]
    since: Option<String>,
    /// At most this many entries (default 100, at most 10000).
    #[serde(default)]
    limit: Option<usize>,
}

/// The link's audit trail: every LaunchDarkly write, newest first.
#[utoipa::path(
    get,
    path = "/v1/operator/links/{link}/audit",
    tag = "operator",
    security(("operator_token" = [])),
    params(("link" = String, Path, example = "production:amplitude:1234",
        description = "`<destination>:<source>:<cohort>`, percent-encoded where needed."), AuditQuery),
    responses(
        (status = 200, description = "The link's writes, newest first.", body = AuditPage),
        (status = 400, description = "`{link}` is not a link id, or a bad `since` or `limit` (`invalid_payload`).", body = NativeError),
        (status = 401, description = "Missing or wrong `Authorization: Bearer <token>` (`unauthorized`).", body = NativeError),
        (status = 404, description = "No operator token is configured (`operator_api_disabled`).", body = NativeError),
        (status = 503, description = "Redis is unreachable or too slow (`store_unavailable`).", body = NativeError,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying (5)."))),
    )
)]
async fn audit(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let link = authorized_link(&req, &state, &path)?;
    let query = web::Query::<AuditQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::Invalid(format!("bad query string: {e}")))?;
    let since = match query.since.as_deref() {
        None => None,
        Some(raw) => Some(crate::store::parse_since(raw).ok_or_else(|| {
            ApiError::Invalid(format!(
                "since {raw:?} is neither Unix milliseconds nor an RFC 3339 time"
            ))
        })?),
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    let entries = state
        .store
        .audit(&link, since, limit)
        .await
        .map_err(ApiError::Unavailable)?;
    Ok(HttpResponse::Ok().json(AuditPage {
        link: link.to_string(),
        entries,
    }))
}

/// `GET /v1/operator/links/{link}/audit`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub link: String,
    /// Newest first.
    pub entries: Vec<crate::store::AuditEntry>,
}

/// `GET /v1/operator/links`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinkList {
    /// The page of links (every link without `offset`/`limit`).
    pub links: Vec<LinkView>,
    /// Links matching `q`, over all pages.
    pub total: usize,
    /// Where this page starts in the sorted, filtered list.
    pub offset: usize,
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
