//! The operator API, behind `Authorization: Bearer <token>` (the secret named
//! by `server.operator_token_env`; unset, every route answers 404):
//!
//! | route | what it does |
//! |---|---|
//! | `GET /v1/operator/links?q=&sort=&offset=&limit=` | every link with its status (all of them, by link id, without a query); `q` filters on the link id and segment key, `sort` is `link`, `backlog`, `dead_letters`, `tracked`, `oldest`, `last_write` or `blocked` (`-` first: descending), `offset` and `limit` page; `total` counts the matches |
//! | `GET /v1/operator/overview` | the deployment: replicas and the partitions each holds, Redis health, the LaunchDarkly budget, and this replica's 15-minute series (propagation p50/p99, requests/s against the budget) |
//! | `GET /v1/operator/links/{link}` | one link: segment, backlog, last flush, errors, dead letters |
//! | `GET /v1/operator/links/{link}/dead-letters?cursor=0&count=100` | a page of dead letters |
//! | `POST /v1/operator/links/{link}/redrive` | sends dead letters again (body `{"keys": [..]}` or empty: all) |
//! | `POST /v1/operator/links/{link}/resync` | rewrites the link in full: every tracked member is sent again |
//!
//! `{link}` is `<destination>:<source>:<cohort>`, percent-encoded where needed.
//!
//! `GET /ops` serves the operations dashboard over the same API (the token is
//! entered in the page, kept in the tab's `sessionStorage` and sent with each
//! call; the page itself holds no data). Its script and styles are served by
//! the bridge (`/ops/assets/ops.js`, `/ops/assets/ops.css`), so the page
//! needs no network and its CSP allows only `'self'`.

use super::error::ApiError;
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
            .route("/overview", web::get().to(overview)),
    );
    cfg.route("/ops", web::get().to(page))
        .route("/ops/assets/{file}", web::get().to(asset));
}

const PAGE: &str = include_str!("assets/operator.html");
const SCRIPT: &str = include_str!("assets/ops.js");
const STYLES: &str = include_str!("assets/ops.css");

/// The page's script and styles (404 for anything else, or with the
/// operator API disabled).
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
#[derive(Debug, Serialize)]
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

/// Statuses read at once by the links list (one pipeline each).
const LIST_CONCURRENCY: usize = 32;
/// The largest page of `GET /v1/operator/links`.
const MAX_PAGE: usize = 10_000;

/// The optional query of `GET /v1/operator/links`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinksQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    sort: Option<String>,
    #[serde(default)]
    offset: Option<usize>,
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
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "links": page,
        "total": total,
        "offset": offset,
    })))
}

/// One replica as the overview shows it.
#[derive(Debug, Serialize)]
struct ReplicaView {
    id: String,
    last_heartbeat_ms: i64,
    partitions: Vec<u16>,
    this_replica: bool,
}

/// `GET /v1/operator/overview`: the deployment at a glance.
async fn overview(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let obs = &state.observations;
    // With Redis down the overview still answers: Redis health is what the
    // operator needs then; replicas and leases are unknown (empty).
    let (holders, live, leases_known) = match (
        state.store.lease_holders().await,
        state
            .store
            .live_replicas(now_ms(), state.settings.lease_ttl)
            .await,
    ) {
        (Ok(h), Ok(l)) => (h, l, true),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(error = %e, "Overview without replicas: Redis did not answer.");
            (Vec::new(), Vec::new(), false)
        }
    };
    let mut replicas: Vec<ReplicaView> = live
        .into_iter()
        .map(|(id, at)| ReplicaView {
            this_replica: id == obs.replica(),
            partitions: Vec::new(),
            id,
            last_heartbeat_ms: at,
        })
        .collect();
    let mut unheld = Vec::new();
    for (partition, holder) in holders.into_iter().enumerate() {
        let partition = partition as u16;
        match holder {
            None => unheld.push(partition),
            Some(h) => match replicas.iter_mut().find(|r| r.id == h) {
                Some(r) => r.partitions.push(partition),
                // A lease of a replica whose heartbeat expired (it will too).
                None => replicas.push(ReplicaView {
                    id: h,
                    last_heartbeat_ms: 0,
                    partitions: vec![partition],
                    this_replica: false,
                }),
            },
        }
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "replica": obs.replica(),
        "replicas": replicas,
        "partitions": state.settings.redis.partitions,
        "unheld_partitions": unheld,
        "leases_known": leases_known,
        "redis": obs.redis_health(),
        "budget": {
            "limit_requests_per_second": obs.limit_rps(),
            "share_requests_per_second": obs.share_rps(),
            "live_replicas": obs.replicas(),
        },
        "sample_every_seconds": crate::flush::observe::SAMPLE_EVERY.as_secs(),
        "series": obs.series(),
    })))
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    count: Option<usize>,
}

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
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "link": link.to_string(),
        "dead_letters": letters,
        "next_cursor": (next != "0").then_some(next),
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveBody {
    #[serde(default)]
    keys: Option<Vec<String>>,
}

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
        serde_json::from_slice(&body).map_err(|e| {
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
    Ok(HttpResponse::Ok().json(serde_json::json!({ "link": link.to_string(), "redriven": n })))
}

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
    Ok(HttpResponse::Ok().json(serde_json::json!({ "link": link.to_string(), "members": n })))
}
