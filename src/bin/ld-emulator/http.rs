//! HTTP plumbing shared by the LaunchDarkly routes and the control API:
//! response builders, LaunchDarkly's error body, reading request bodies.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

pub type Resp = Response<Full<Bytes>>;

/// Largest request body accepted (big membership batches fit easily).
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Returned from the hyper service to make hyper close the connection
/// without writing any response: the client sees a transport error.
#[derive(Debug)]
pub struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose (injected fault)")
    }
}

impl std::error::Error for DropConnection {}

pub fn json_response(status: StatusCode, body: &Value) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub fn text_response(status: StatusCode, content_type: &'static str, body: String) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub fn no_content() -> Resp {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

/// LaunchDarkly's error code for a status.
pub fn error_code(status: u16) -> &'static str {
    match status {
        400 => "invalid_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "optimistic_locking_error",
        429 => "rate_limited",
        500..=599 => "internal_server_error",
        _ => "error",
    }
}

/// The message LaunchDarkly's spec gives as the example for each status.
pub fn default_message(status: u16) -> &'static str {
    match status {
        400 => "Invalid request body",
        401 => "Invalid access token",
        403 => "Forbidden. Access to the requested resource was denied.",
        404 => "Invalid resource identifier",
        405 => "Method not allowed",
        409 => "Conflict. Optimistic lock error. Try again later.",
        429 => "You've exceeded the API rate limit. Try again later.",
        500..=599 => "Internal server error",
        _ => "Error",
    }
}

/// `{"code","message"}` error response.
pub fn ld_error(status: u16, message: Option<&str>) -> Resp {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(
        code,
        &json!({
            "code": error_code(status),
            "message": message.unwrap_or(default_message(status)),
        }),
    )
}

/// Sets a header, ignoring names/values that are not valid HTTP (they can
/// come from user-supplied fault definitions).
pub fn set_header(resp: &mut Resp, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
        resp.headers_mut().insert(n, v);
    }
}

/// Reads the whole body, bounded.
pub async fn read_body(body: Incoming) -> Result<Bytes, String> {
    Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| format!("could not read request body: {e}"))
}
