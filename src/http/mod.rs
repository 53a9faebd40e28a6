//! The HTTP surface (actix-web) and [`Application`], which wires the
//! receivers, the flusher and shutdown together.

mod error;
pub mod operator;
pub mod ops;
mod partner;
mod webhooks;

pub use error::ApiError;
pub use webhooks::Summary;

use crate::config::Settings;
use crate::flush::Flusher;
use crate::store::Store;
use actix_web::{web, App, HttpServer};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// What request handlers use: one per HTTP worker thread (see
/// [`Application::build`]); everything but `worker_store` is shared.
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

/// A built bridge: bound listener, server and flusher, not yet running.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    /// `server.metrics_listen`: its port and the server answering `/metrics` there.
    metrics: Option<(u16, actix_web::dev::Server)>,
    flusher: Flusher,
    shutting_down: Arc<AtomicBool>,
}

/// Stops a running [`Application`].
#[derive(Clone)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        let _ = self.0.send(true);
    }
}

impl Application {
    /// Binds the listener (port 0 picks one) and prepares every part.
    pub fn build(settings: Settings) -> anyhow::Result<Application> {
        let settings = Arc::new(settings);
        let store = Store::connect(&settings.redis)?;
        let wake = Arc::new(Notify::new());
        let flusher = Flusher::new(settings.clone(), store.clone(), wake.clone())?;
        let shutting_down = Arc::new(AtomicBool::new(false));
        let metrics = crate::metrics::handle();
        let listener = TcpListener::bind(settings.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.listen))?;
        let port = listener.local_addr()?.port();
        let flag = shutting_down.clone();
        let partner_limits = Arc::new(partner::PartnerLimits::new(&settings.partner.tokens));
        let shared_settings = settings.clone();
        let separate_metrics = settings.metrics_listen.is_some();
        let metrics_server = match settings.metrics_listen {
            None => None,
            Some(addr) => {
                let listener = TcpListener::bind(addr).map_err(|e| {
                    anyhow::anyhow!("cannot listen on {addr} (server.metrics_listen): {e}")
                })?;
                let port = listener.local_addr()?.port();
                let handle = metrics.clone();
                let server = HttpServer::new(move || {
                    let handle = handle.clone();
                    App::new()
                        .route(
                            "/metrics",
                            web::get().to(move || {
                                let handle = handle.clone();
                                async move { ops::render_metrics(&handle) }
                            }),
                        )
                        .default_service(web::to(|| async {
                            Err::<actix_web::HttpResponse, _>(ApiError::NotFound)
                        }))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(settings.server.shutdown_grace_seconds)
                .listen(listener)?
                .run();
                Some((port, server))
            }
        };
        let server = HttpServer::new(move || {
            // Runs on each worker thread: its own Redis connection is driven
            // by the worker's runtime. (The URL was checked above; should
            // opening still fail, the worker uses the shared connection.)
            let worker_store =
                Store::connect(&shared_settings.redis).unwrap_or_else(|_| store.clone());
            let data = web::Data::new(AppState {
                settings: shared_settings.clone(),
                store: store.clone(),
                worker_store,
                partner_limits: partner_limits.clone(),
                wake: wake.clone(),
                shutting_down: flag.clone(),
                metrics: metrics.clone(),
            });
            let app = App::new()
                .app_data(data)
                .route("/v1/webhooks/{source}", web::post().to(webhooks::receive))
                .route(
                    "/api/v2/segment-targets/{integration_key}",
                    web::post().to(partner::receive),
                )
                .route("/healthz", web::get().to(ops::healthz))
                .route("/readyz", web::get().to(ops::readyz))
                .configure(operator::configure);
            // With server.metrics_listen, /metrics is only on that listener.
            let app = if separate_metrics {
                app
            } else {
                app.route("/metrics", web::get().to(ops::metrics))
            };
            app.default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(ApiError::NotFound)
            }))
        })
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_grace_seconds)
        .listen(listener)?
        .run();
        Ok(Application {
            port,
            server,
            metrics: metrics_server,
            flusher,
            shutting_down,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of `server.metrics_listen`, when set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(port, _)| *port)
    }

    /// Runs the server and the flusher until the handle is triggered or one
    /// of them stops; then shuts both down gracefully.
    pub async fn run(self, shutdown: ShutdownHandle) -> anyhow::Result<()> {
        let rx = shutdown.0.subscribe();
        let server_handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let metrics_server = self.metrics.map(|(_, s)| (s.handle(), tokio::spawn(s)));
        let mut flusher = tokio::spawn(self.flusher.run(rx.clone()));
        let mut rx2 = rx.clone();
        let shutting_down = self.shutting_down.clone();
        let stopped_by = tokio::select! {
            r = &mut server => { tracing::error!(result = ?r, "HTTP server stopped."); "server" }
            r = &mut flusher => { tracing::error!(result = ?r, "Flusher stopped."); "flusher" }
            _ = rx2.wait_for(|s| *s) => "signal",
        };
        tracing::info!(
            stopped_by,
            "Shutting down: closing the listener, finishing requests and flushes in flight."
        );
        shutting_down.store(true, Ordering::SeqCst);
        shutdown.shutdown();
        server_handle.stop(true).await;
        if let Some((handle, task)) = metrics_server {
            handle.stop(true).await;
            let _ = task.await;
        }
        if !server.is_finished() {
            let _ = server.await;
        }
        if !flusher.is_finished() {
            let _ = flusher.await;
        }
        tracing::info!("Stopped.");
        Ok(())
    }

    /// A handle that stops this application.
    pub fn shutdown_handle() -> ShutdownHandle {
        ShutdownHandle(watch::channel(false).0)
    }
}
