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

/// Shared by every request handler.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    /// Wakes the flusher after a push.
    pub wake: Arc<Notify>,
    pub shutting_down: AtomicBool,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

/// A built bridge: bound listener, server and flusher, not yet running.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    flusher: Flusher,
    state: web::Data<AppState>,
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
        let state = web::Data::new(AppState {
            settings: settings.clone(),
            store,
            wake,
            shutting_down: AtomicBool::new(false),
            metrics: crate::metrics::handle(),
        });
        let listener = TcpListener::bind(settings.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.listen))?;
        let port = listener.local_addr()?.port();
        let data = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/v1/webhooks/{source}", web::post().to(webhooks::receive))
                .route(
                    "/api/v2/segment-targets/{integration_key}",
                    web::post().to(partner::receive),
                )
                .route("/healthz", web::get().to(ops::healthz))
                .route("/readyz", web::get().to(ops::readyz))
                .route("/metrics", web::get().to(ops::metrics))
                .configure(operator::configure)
                .default_service(web::to(|| async {
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
            flusher,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs the server and the flusher until the handle is triggered or one
    /// of them stops; then shuts both down gracefully.
    pub async fn run(self, shutdown: ShutdownHandle) -> anyhow::Result<()> {
        let rx = shutdown.0.subscribe();
        let server_handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let mut flusher = tokio::spawn(self.flusher.run(rx.clone()));
        let mut rx2 = rx.clone();
        let state = self.state.clone();
        let stopped_by = tokio::select! {
            r = &mut server => { tracing::error!(result = ?r, "HTTP server stopped."); "server" }
            r = &mut flusher => { tracing::error!(result = ?r, "Flusher stopped."); "flusher" }
            _ = rx2.wait_for(|s| *s) => "signal",
        };
        tracing::info!(
            stopped_by,
            "Shutting down: closing the listener, finishing requests and flushes in flight."
        );
        state.shutting_down.store(true, Ordering::SeqCst);
        shutdown.shutdown();
        server_handle.stop(true).await;
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
