//! The load generator (pre-built bodies, N keep-alive HTTP/1.1 connections,
//! hyper's client) and the ceiling it is compared with for single changes:
//! a bare actix-web endpoint that reads the body and answers 200.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Where the generator sends, with which credentials.
#[derive(Clone)]
pub struct Target {
    pub port: u16,
    pub path: String,
    pub token: Option<String>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct LoadResult {
    pub requests: u64,
    /// Sum of the `accepted` field of 2xx answers (0 for the bare endpoint).
    pub accepted: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    pub fn accepted_per_s(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }
}

/// How long, or how much, to send.
#[derive(Clone, Copy)]
pub enum Mode {
    /// Cycle through the bodies for this long.
    For(Duration),
    /// Send every body exactly once.
    EachOnce,
}

/// `"accepted":N` out of the bridge's summary, without a JSON parse.
fn accepted_of(body: &[u8]) -> u64 {
    const NEEDLE: &[u8] = b"\"accepted\":";
    body.windows(NEEDLE.len())
        .position(|w| w == NEEDLE)
        .map(|i| {
            body[i + NEEDLE.len()..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'))
        })
        .unwrap_or(0)
}

/// Drives `target` with `connections` keep-alive connections.
pub async fn run(
    target: &Target,
    bodies: Arc<Vec<Bytes>>,
    connections: usize,
    mode: Mode,
) -> LoadResult {
    let next = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (target, bodies, next) = (target.clone(), bodies.clone(), next.clone());
        let (requests, accepted, errors) = (requests.clone(), accepted.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(("127.0.0.1", target.port))
                .await
                .expect("connect");
            let _ = stream.set_nodelay(true);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let body = match mode {
                    Mode::For(d) if start.elapsed() >= d => break,
                    Mode::For(_) => bodies[i % bodies.len()].clone(),
                    Mode::EachOnce if i >= bodies.len() => break,
                    Mode::EachOnce => bodies[i].clone(),
                };
                let mut req = Request::post(target.path.as_str())
                    .header("host", "127.0.0.1")
                    .header("content-type", "application/json");
                if let Some(t) = &target.token {
                    req = req.header("x-cohort-bridge-token", t.as_str());
                }
                let req = req.body(Full::new(body)).expect("request");
                let resp = match sender.send_request(req).await {
                    Ok(r) => r,
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                };
                let ok = resp.status().is_success();
                let bytes = resp
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                requests.fetch_add(1, Ordering::Relaxed);
                if ok {
                    accepted.fetch_add(accepted_of(&bytes), Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    LoadResult {
        requests: requests.load(Ordering::Relaxed),
        accepted: accepted.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    }
}

/// The single-change ceiling: an actix-web server (same worker count as the
/// bridge's, actix's default) whose one route reads the body and answers 200.
pub struct BareServer {
    pub port: u16,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BareServer {
    pub fn start() -> BareServer {
        use actix_web::{web, App, HttpResponse, HttpServer};
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(|| {
                    App::new()
                        .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                        .route(
                            "/v1/webhooks/{source}",
                            web::post().to(|body: Bytes| async move {
                                HttpResponse::Ok()
                                    .content_type("application/json")
                                    .body(format!("{{\"bytes\":{}}}", body.len()))
                            }),
                        )
                })
                .bind(("127.0.0.1", 0))
                .expect("bind the bare server");
                let port = server.addrs()[0].port();
                let server = server.run();
                tx.send((port, server.handle())).expect("report the port");
                let _ = server.await;
            });
        });
        let (port, handle) = rx.recv().expect("bare server started");
        BareServer {
            port,
            handle,
            thread: Some(thread),
        }
    }

    pub async fn stop(mut self) {
        self.handle.stop(true).await;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
