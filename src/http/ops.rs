//! `GET /healthz`, `GET /readyz`, `GET /metrics`.

use super::AppState;
use crate::store::evicts;
use actix_web::{web, HttpResponse};
use serde_json::json;
use std::sync::atomic::Ordering;

/// Alive: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready: Redis reachable, scripts loaded, no evicting memory policy, not shutting down.
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

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    render_metrics(&state.metrics)
}

/// The Prometheus text, on the main listener or on `server.metrics_listen`.
pub fn render_metrics(handle: &metrics_exporter_prometheus::PrometheusHandle) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}
