//! `ld-emulator`: a stateful stand-in for the slice of LaunchDarkly's REST
//! API that cohort-bridge writes to and reads back (create, get, list,
//! patch and delete segments, big-segment membership and exports), with LaunchDarkly's auth rule, `LD-API-Version` handling,
//! error bodies and rate-limit headers, plus a test-only control API under
//! `/_emulator` for fault injection and inspection.
//!
//! It deliberately shares no types with the `cohort_bridge` library: bodies
//! are checked against LaunchDarkly's published OpenAPI schemas instead.
//!
//! Served with hyper directly (not actix-web) because the faults need to
//! close a connection without any response, which a service error does.

mod app;
mod control;
mod exports;
mod faults;
mod http;
mod journal;
mod ratelimit;
mod routes;
mod schema;
mod state;
mod target;

use anyhow::Context;
use app::Emulator;
use clap::Parser;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Parser, Debug)]
#[command(
    name = "ld-emulator",
    about = "LaunchDarkly REST API emulator for tests"
)]
struct Cli {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long)]
    listen: SocketAddr,
    /// Accepted access token (repeatable). Compared exactly with the
    /// Authorization header, as LaunchDarkly does (no "Bearer ").
    #[arg(long = "token", required = true)]
    tokens: Vec<String>,
    /// OpenAPI document to validate bodies against (default: embedded copy).
    #[arg(long)]
    schema: Option<std::path::PathBuf>,
    /// Requests per window across all routes.
    #[arg(long, default_value_t = 100_000)]
    rate_limit_global: u64,
    /// Requests per window per route.
    #[arg(long, default_value_t = 100_000)]
    rate_limit_route: u64,
    /// Rate-limit window length in milliseconds (LaunchDarkly uses 10 s).
    #[arg(long, default_value_t = 10_000)]
    window_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    if cli.rate_limit_global == 0 || cli.rate_limit_route == 0 || cli.window_ms == 0 {
        anyhow::bail!("rate limits and window must be positive");
    }
    let spec_text = match &cli.schema {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading schema {}", path.display()))?,
        None => schema::EMBEDDED_SPEC.to_string(),
    };
    let spec = schema::Spec::parse(&spec_text).context("parsing OpenAPI schema")?;
    let budgets = ratelimit::Budgets {
        global: cli.rate_limit_global,
        route: cli.rate_limit_route,
        window_ms: cli.window_ms,
    };
    let emu = Arc::new(Emulator::new(spec, cli.tokens, budgets));

    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let addr = listener.local_addr()?;
    {
        // Tests parse this exact line to learn the port.
        let mut out = std::io::stdout().lock();
        writeln!(out, "ld-emulator listening on http://{addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, "ld-emulator ready");

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let emu = emu.clone();
                    tokio::spawn(serve_connection(emu, stream));
                }
                Err(e) => {
                    // Usually EMFILE; back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
    tracing::info!("ld-emulator shutting down");
    Ok(())
}

async fn serve_connection(emu: Arc<Emulator>, stream: tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let emu = emu.clone();
        async move {
            if req.uri().path().starts_with("/_emulator") {
                Ok(control::handle(emu, req).await)
            } else {
                routes::handle(emu, req).await
            }
        }
    });
    if let Err(e) = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %e, "connection ended with error");
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
