//! Every error a client can get, and the one place it becomes a response.
//!
//! Each variant has one status (and `Retry-After` / `X-Ratelimit-Reset`
//! where it calls for one); [`ApiError::respond`] writes the body in the
//! style of the route's sender ([`AnswerStyle`]):
//!
//! - native: `{"error": {"code", "message"}}` (also every operator and ops route);
//! - LaunchDarkly (the partner route): `{"code", "message"}`, with the codes
//!   LaunchDarkly's API gives to each status;
//! - Mixpanel: `{"action": "<echo>", "status": "failure", "error": {"message", "code": <status>}}`.

use crate::clock::now_ms;
use crate::config::AnswerStyle;
use crate::metrics::RequestOutcome;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// Why a request was refused.
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
    #[error("missing or invalid access token in the Authorization header")]
    PartnerUnauthorized,
    #[error("this access token may not sync segments for the integration {0:?}")]
    Forbidden(String),
    #[error("this access token may not write the environment {0:?}")]
    ForbiddenEnvironment(String),
    #[error("unknown integration key {0:?}")]
    UnknownIntegration(String),
    #[error("this access token exceeded its rate limit; retry in {} ms", wait.as_millis())]
    RateLimited { wait: Duration },
    /// A retired link refuses the push, or an operator's lifecycle change
    /// does not fit the link's state (409).
    #[error("{0}")]
    Retired(String),
}

impl From<crate::ingest::IngestError> for ApiError {
    fn from(e: crate::ingest::IngestError) -> Self {
        match e {
            crate::ingest::IngestError::BatchInProgress => ApiError::BatchInProgress,
            crate::ingest::IngestError::Unavailable(err) => ApiError::Unavailable(err),
            e @ crate::ingest::IngestError::Retired { .. } => ApiError::Retired(e.to_string()),
        }
    }
}

impl ApiError {
    /// The code of the native body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::UnknownSource(_) => "unknown_source",
            ApiError::Unauthorized(_)
            | ApiError::OperatorUnauthorized
            | ApiError::PartnerUnauthorized => "unauthorized",
            ApiError::Invalid(_) => "invalid_payload",
            ApiError::TooLarge { .. } => "payload_too_large",
            ApiError::BodyTimeout { .. } => "body_timeout",
            ApiError::BatchInProgress => "batch_in_progress",
            ApiError::Unavailable(_) => "store_unavailable",
            ApiError::NotFound => "not_found",
            ApiError::OperatorDisabled => "operator_api_disabled",
            ApiError::UnknownLink(_) => "unknown_link",
            ApiError::Forbidden(_) | ApiError::ForbiddenEnvironment(_) => "forbidden",
            ApiError::UnknownIntegration(_) => "unknown_integration",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Retired(_) => "link_retired",
        }
    }

    /// The code of LaunchDarkly's body: LaunchDarkly names the status.
    fn launchdarkly_code(&self) -> &'static str {
        match self.status() {
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::REQUEST_TIMEOUT => "request_timeout",
            StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            _ => "invalid_request",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownSource(_)
            | ApiError::NotFound
            | ApiError::OperatorDisabled
            | ApiError::UnknownLink(_)
            | ApiError::UnknownIntegration(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_)
            | ApiError::OperatorUnauthorized
            | ApiError::PartnerUnauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::ForbiddenEnvironment(_) => StatusCode::FORBIDDEN,
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable(_) | ApiError::BatchInProgress => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Retired(_) => StatusCode::CONFLICT,
        }
    }

    /// The `outcome` label of `cohort_bridge_requests_total` for a receiver's refusal.
    pub fn outcome(&self) -> RequestOutcome {
        match self {
            ApiError::Unauthorized(_)
            | ApiError::OperatorUnauthorized
            | ApiError::PartnerUnauthorized
            | ApiError::Forbidden(_)
            | ApiError::ForbiddenEnvironment(_) => RequestOutcome::Unauthorized,
            ApiError::TooLarge { .. } => RequestOutcome::TooLarge,
            ApiError::Unavailable(_) => RequestOutcome::Unavailable,
            ApiError::RateLimited { .. } => RequestOutcome::RateLimited,
            _ => RequestOutcome::Invalid,
        }
    }

    /// The response, its body in `style`; `action` is what a Mixpanel
    /// envelope echoes.
    pub fn respond(&self, style: AnswerStyle, action: &str) -> HttpResponse {
        let status = self.status();
        let mut resp = HttpResponse::build(status);
        match self {
            ApiError::Unavailable(_) | ApiError::BatchInProgress => {
                resp.insert_header(("Retry-After", "5"));
            }
            ApiError::RateLimited { wait } => {
                let ms = wait.as_millis() as u64;
                resp.insert_header(("Retry-After", ms.div_ceil(1000).max(1).to_string()));
                resp.insert_header(("X-Ratelimit-Reset", (now_ms() + ms as i64).to_string()));
            }
            _ => {}
        }
        let message = self.to_string();
        match style {
            AnswerStyle::Native => resp.json(NativeError {
                error: ErrorDetail {
                    code: self.code(),
                    message,
                },
            }),
            AnswerStyle::LaunchDarkly => resp.json(LaunchDarklyError {
                code: self.launchdarkly_code(),
                message,
            }),
            AnswerStyle::Mixpanel => resp.json(MixpanelEnvelope {
                action: action.to_string(),
                status: MixpanelStatus::Failure,
                error: Some(MixpanelError {
                    message,
                    code: status.as_u16(),
                }),
            }),
        }
    }
}

/// The native error body: every native receiver, operator and ops route.
#[derive(Debug, Serialize, ToSchema)]
// In the document: `additionalProperties: false`, so that a receiver's
// `oneOf` (native or Mixpanel's envelope) matches exactly one.
#[serde(deny_unknown_fields)]
pub struct NativeError {
    pub error: ErrorDetail,
}

/// What went wrong, in a native error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `unknown_source`, `unauthorized`,
    /// `invalid_payload`, `payload_too_large`, `body_timeout`,
    /// `batch_in_progress`, `store_unavailable`, `not_found`,
    /// `operator_api_disabled`, `unknown_link`, `forbidden`,
    /// `unknown_integration`, `rate_limited`.
    #[schema(example = "unauthorized")]
    pub code: &'static str,
    /// For people: what was wrong and, where it helps, what to do.
    pub message: String,
}

/// The partner endpoint's error body, as LaunchDarkly's API answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct LaunchDarklyError {
    /// LaunchDarkly's code for the status: `unauthorized`, `forbidden`,
    /// `not_found`, `payload_too_large`, `request_timeout`,
    /// `service_unavailable`, `rate_limited` or `invalid_request`.
    #[schema(example = "invalid_request")]
    pub code: &'static str,
    pub message: String,
}

/// Mixpanel's envelope: every answer to a Mixpanel source, success or not.
#[derive(Debug, Serialize, ToSchema)]
pub struct MixpanelEnvelope {
    /// The body's `action`, echoed (empty when the body was not verified or
    /// carries none).
    pub action: String,
    pub status: MixpanelStatus,
    /// Only on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<MixpanelError>,
}

impl MixpanelEnvelope {
    /// The 200 answer.
    pub fn success(action: &str) -> MixpanelEnvelope {
        MixpanelEnvelope {
            action: action.to_string(),
            status: MixpanelStatus::Success,
            error: None,
        }
    }
}

/// Whether Mixpanel should consider the request done.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MixpanelStatus {
    Success,
    Failure,
}

/// A failure in Mixpanel's envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct MixpanelError {
    pub message: String,
    /// The HTTP status, repeated.
    #[schema(example = 401)]
    pub code: u16,
}

/// Routes that return `Result<_, ApiError>` answer in the native style.
impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        self.respond(AnswerStyle::Native, "")
    }
}
