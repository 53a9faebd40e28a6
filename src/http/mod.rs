//! The HTTP surface (actix-web): routes, handlers and error responses.
//! [`crate::app::Application`] builds the servers that serve them.

mod error;
pub mod openapi;
pub mod operator_api;
pub mod ops;
mod partner;
mod webhooks;

pub use error::ApiError;
pub use partner::PartnerLimits;

use crate::config::Settings;
use crate::ingest::Ingest;
use crate::store::Store;
use actix_web::web;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::sync::Notify;

/// What request handlers use: one per HTTP worker thread (see
/// [`crate::app::Application::build`]); everything but `ingest`'s worker
/// connection is shared.
pub struct AppState {
    pub settings: Arc<Settings>,
    /// Redis through the connection the runtime's I/O threads drive.
    pub store: Store,
    /// Where verified, parsed requests go.
    pub ingest: Ingest,
    /// Per partner token rate limits (shared by every worker).
    pub partner_limits: Arc<PartnerLimits>,
    /// Wakes the flusher after an operator's redrive or resync.
    pub wake: Arc<Notify>,
    pub shutting_down: Arc<AtomicBool>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The flusher's gauges and 15-minute series (`GET /v1/operator/overview`).
    pub observations: Arc<crate::flush::Observations>,
}

/// Every route of the main listener; `/metrics` too unless
/// `server.metrics_listen` serves it elsewhere ([`metrics_routes`]).
pub fn routes(cfg: &mut web::ServiceConfig, with_metrics: bool) {
    cfg.route("/v1/webhooks/{source}", web::post().to(webhooks::receive))
        .route(
            "/api/v2/segment-targets/{integration_key}",
            web::post().to(partner::receive),
        )
        .route("/healthz", web::get().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz))
        .route("/openapi.json", web::get().to(openapi::serve))
        .configure(operator_api::configure);
    if with_metrics {
        cfg.route("/metrics", web::get().to(ops::metrics));
    }
    cfg.default_service(web::to(not_found));
}

/// The `server.metrics_listen` listener: `/metrics` and nothing else.
pub fn metrics_routes(
    cfg: &mut web::ServiceConfig,
    handle: metrics_exporter_prometheus::PrometheusHandle,
) {
    cfg.route(
        "/metrics",
        web::get().to(move || {
            let handle = handle.clone();
            async move { ops::render_metrics(&handle) }
        }),
    )
    .default_service(web::to(not_found));
}

async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}
