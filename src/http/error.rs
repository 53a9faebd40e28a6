//! Every error a client can get, as `{"error": {"code", "message"}}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// Why a request was refused. Each variant maps to one status and code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no source is configured with id {0:?}")]
    UnknownSource(String),
    #[error("{0}")]
    Unauthorized(#[from] crate::verify::VerifyError),
    #[error("{0}")]
    Invalid(String),
    #[error("body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body did not arrive within {ms} ms (server.body_read_timeout_ms)")]
    BodyTimeout { ms: u64 },
    #[error("a batch with this element 0 is being applied by another request; retry later")]
    BatchInProgress,
    #[error("the store is unavailable; retry later")]
    Unavailable(#[source] crate::store::StoreError),
    #[error("not found")]
    NotFound,
    #[error("the operator API is off: set server.operator_token_env to enable it")]
    OperatorDisabled,
    #[error("missing or wrong operator token (Authorization: Bearer <token>)")]
    OperatorUnauthorized,
    #[error("no link {0:?}: the cohort was never pushed for that destination")]
    UnknownLink(String),
}

impl From<crate::ingest::IngestError> for ApiError {
    fn from(e: crate::ingest::IngestError) -> Self {
        match e {
            crate::ingest::IngestError::BatchInProgress => ApiError::BatchInProgress,
            crate::ingest::IngestError::Unavailable(err) => ApiError::Unavailable(err),
        }
    }
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::UnknownSource(_) => "unknown_source",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Invalid(_) => "invalid_payload",
            ApiError::TooLarge { .. } => "payload_too_large",
            ApiError::BodyTimeout { .. } => "body_timeout",
            ApiError::BatchInProgress => "batch_in_progress",
            ApiError::Unavailable(_) => "store_unavailable",
            ApiError::NotFound => "not_found",
            ApiError::OperatorDisabled => "operator_api_disabled",
            ApiError::OperatorUnauthorized => "unauthorized",
            ApiError::UnknownLink(_) => "unknown_link",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::UnknownSource(_)
            | ApiError::NotFound
            | ApiError::OperatorDisabled
            | ApiError::UnknownLink(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) | ApiError::OperatorUnauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable(_) | ApiError::BatchInProgress => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unavailable(_) | ApiError::BatchInProgress) {
            resp.insert_header(("Retry-After", "5"));
        }
        resp.json(json!({"error": {"code": self.code(), "message": self.to_string()}}))
    }
}
