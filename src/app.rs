//! The composition root: [`Application`] builds the store, the flusher and
//! the HTTP servers from [`Settings`], runs them, and shuts them down.
//!
//! Nothing below imports this module; it only wires the parts together.

use crate::config::Settings;
use crate::flush::Flusher;
use crate::http::{self, AppState, PartnerLimits};
use crate::ingest::Ingest;
use crate::store::Store;
use actix_web::{web, App, HttpServer};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{watch, Notify};

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

/// Binds `addr`, naming the setting it came from when that fails.
fn bind(addr: std::net::SocketAddr, setting: &str) -> anyhow::Result<(TcpListener, u16)> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}{setting}: {e}"))?;
    let port = listener.local_addr()?.port();
    Ok((listener, port))
}

impl Application {
    /// Binds the listener (port 0 picks one) and prepares every part.
    pub fn build(settings: Settings) -> anyhow::Result<Application> {
        let settings = Arc::new(settings);
        // The recorder first: the flusher sets its constant gauges when built.
        let metrics = crate::metrics::handle();
        let store = Store::connect(&settings.redis)?;
        let wake = Arc::new(Notify::new());
        // The flusher's own connection: on the shared one, its few small
        // commands per batch queued behind every big push's apply script
        // (a first sync's ingest kept it to ~2 requests/s at a 50/s rate).
        let flusher = Flusher::new(
            settings.clone(),
            Store::connect(&settings.redis)?,
            wake.clone(),
        )?;
        let reconciler = web::Data::new(flusher.reconciler());
        let observations = flusher.observations();
        let shutting_down = Arc::new(AtomicBool::new(false));
        let (listener, port) = bind(settings.listen, "")?;
        let grace = settings.server.shutdown_grace_seconds;
        let metrics_server = match settings.metrics_listen {
            None => None,
            Some(addr) => {
                let (listener, port) = bind(addr, " (server.metrics_listen)")?;
                let handle = metrics.clone();
                let server = HttpServer::new(move || {
                    let handle = handle.clone();
                    App::new().configure(|cfg| http::metrics_routes(cfg, handle))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(grace)
                .listen(listener)?
                .run();
                Some((port, server))
            }
        };
        let partner_limits = Arc::new(PartnerLimits::new(&settings.partner.tokens));
        let separate_metrics = settings.metrics_listen.is_some();
        let flag = shutting_down.clone();
        let workers = settings.server.workers;
        let shared_settings = settings;
        let server = HttpServer::new(move || {
            // Runs on each worker thread: its own Redis connection is driven
            // by the worker's runtime. (The URL was checked above; should
            // opening still fail, the worker uses the shared connection.)
            let worker_store =
                Store::connect(&shared_settings.redis).unwrap_or_else(|_| store.clone());
            let data = web::Data::new(AppState {
                settings: shared_settings.clone(),
                store: store.clone(),
                ingest: Ingest::new(
                    shared_settings.clone(),
                    store.clone(),
                    worker_store,
                    wake.clone(),
                ),
                partner_limits: partner_limits.clone(),
                wake: wake.clone(),
                shutting_down: flag.clone(),
                metrics: metrics.clone(),
                observations: observations.clone(),
            });
            App::new()
                .app_data(data)
                .app_data(reconciler.clone())
                .configure(|cfg| http::routes(cfg, !separate_metrics))
        })
        .disable_signals()
        .shutdown_timeout(grace);
        let server = match workers {
            0 => server,
            n => server.workers(n),
        };
        let server = server.listen(listener)?.run();
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
