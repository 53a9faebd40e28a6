//! The HTTP surface (actix-web): routes, handlers and error responses.
//! [`crate::app::Application`] builds the servers that serve them.

mod error;
pub mod operator;
pub mod ops;
mod partner;
mod webhooks;

pub use error::ApiError;
pub use partner::PartnerLimits;
pub use webhooks::Summary;

use crate::config::Settings;
use crate::store::Store;
use actix_web::web;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::sync::Notify;

/// What request handlers use: one per HTTP worker thread (see
/// [`crate::app::Application::build`]); everything but `worker_store` is shared.
pub struct AppState {
    pub settings: Arc<Settings>,
    /// Redis through the connection the runtime's I/O threads drive.
    pub store: Store,
    /// Redis through this worker's own connection, driven on the worker's
    /// thread: no hand-off between threads per round trip.
    pub worker_store: Store,
    /// Per partner token rate limits (shared by every worker).
    pub partner_limits: Arc<partner::PartnerLimits>,
    /// Wakes the flusher after a push.
    pub wake: Arc<Notify>,
    pub shutting_down: Arc<AtomicBool>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl AppState {
    /// Where to apply a push of `changes` changes. Small pushes are bound by
    /// the per-request round trip, which the worker's own connection makes
    /// cheapest (measured: one-member pushes +12%); big ones by encoding
    /// and sending thousands of arguments, which the runtime's I/O threads
    /// take off the worker (measured: 1,000-member pushes 10% slower on the
    /// worker's connection). See the README's Performance section.
    pub fn store_for(&self, changes: usize) -> &Store {
        if changes <= SMALL_PUSH {
            &self.worker_store
        } else {
            &self.store
        }
    }
}

/// Pushes of at most this many changes use the worker's own connection.
const SMALL_PUSH: usize = 64;

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
        .configure(operator::configure);
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
