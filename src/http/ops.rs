//! `GET /healthz`, `GET /readyz`, `GET /metrics`.

use super::AppState;
use crate::store::evicts;
use actix_web::{web, HttpResponse};
use serde_json::json;
use std::sync::atomic::Ordering;

/// Alive: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "The process answers.", body = super::openapi::Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready: Redis reachable, scripts loaded, no evicting memory policy, not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "Ready for traffic.", body = super::openapi::Health),
        (status = 503, description = "Not ready: shutting down, Redis unreachable or not loaded, or an evicting `maxmemory-policy`.",
            body = super::openapi::Unready,
            headers(("Retry-After" = u32, description = "Seconds to wait before asking again (5)."))),
    ))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let unready = |reason: String| {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(json!({"status": "unavailable", "reason": reason}))
    };
    if state.shutting_down.load(Ordering::SeqCst) {
        return unready("shutting down".into());
    }
    if let Err(e) = state.store.ready().await {
        return unready(format!("redis: {e}"));
    }
    match state.store.eviction_policy().await {
        Ok(policy) if evicts(&policy) && state.settings.redis.refuse_evicting_policy => {
            return unready(format!(
                "redis maxmemory-policy is {policy}, which can evict the bridge's keys and lose accepted changes; \
                 set maxmemory-policy noeviction (or redis.refuse_evicting_policy = false to accept the risk)"
            ));
        }
        Ok(_) => {}
        // Managed Redis often forbids CONFIG; that is not a reason to refuse traffic.
        Err(e) => tracing::debug!(error = %e, "Cannot read maxmemory-policy."),
    }
    HttpResponse::Ok().json(json!({"status": "ready"}))
}

/// The Prometheus exposition of this replica's metrics (also on
/// `server.metrics_listen`, when set, instead of here).
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format 0.0.4.", body = String,
        content_type = "text/plain; version=0.0.4")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    render_metrics(&state.metrics)
}

/// The Prometheus text, on the main listener or on `server.metrics_listen`.
pub fn render_metrics(handle: &metrics_exporter_prometheus::PrometheusHandle) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}
