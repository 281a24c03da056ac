//! The error every admin operation answers with, and how it crosses the
//! doors: from validation and state-machine rejections, to and from gRPC
//! statuses (a forwarded call's failure comes back as one).

use tollgate_model::config::ResourceKind;
use tollgate_model::ValidationError;

use crate::state::{ErrorCode, Rejection};

/// An error as the admin API reports it (contract §2).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("missing or wrong admin token")]
    Unauthenticated,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    /// The connections API: the connection is closed or unknown.
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Over a key's throttle or quota (the message says which).
    #[error("{0}")]
    ResourceExhausted(String),
    /// A data plane did not answer in time.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// `POST /v1/keys` with an `Idempotency-Key` already used: the key it
    /// issued (409, with `key_id` beside the error, and no value).
    #[error("Idempotency-Key already used: it issued key {key_id:?}")]
    AlreadyIssued { key_id: String },
    /// The path exists, but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
}

/// Every admin error on the wire: `{"error": {"code", "message"}}`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    /// `POST /v1/keys` with an `Idempotency-Key` already used (409): the
    /// key that request issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// `invalid_argument` (400), `unauthenticated` (401), `not_found` (404),
    /// `method_not_allowed` (405), `conflict` (409), `gone` (410),
    /// `payload_too_large` (413), `resource_exhausted` (429), `internal`
    /// (500), `unavailable` (503), `deadline_exceeded` (504).
    #[schema(example = "not_found")]
    pub code: String,
    /// What went wrong; a bad field is named first (`upstream.targets[0].url: ...`).
    pub message: String,
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidArgument(_) => "invalid_argument",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) | ApiError::AlreadyIssued { .. } => "conflict",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
            ApiError::Gone(_) => "gone",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::ResourceExhausted(_) => "resource_exhausted",
            ApiError::DeadlineExceeded(_) => "deadline_exceeded",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            ApiError::InvalidArgument(_) => 400,
            ApiError::Unauthenticated => 401,
            ApiError::NotFound(_) => 404,
            ApiError::Conflict(_) | ApiError::AlreadyIssued { .. } => 409,
            ApiError::Unavailable(_) => 503,
            ApiError::Internal(_) => 500,
            ApiError::Gone(_) => 410,
            ApiError::PayloadTooLarge(_) => 413,
            ApiError::ResourceExhausted(_) => 429,
            ApiError::DeadlineExceeded(_) => 504,
            ApiError::MethodNotAllowed(_) => 405,
        }
    }

    /// An error some other layer answered with (an extractor's rejection,
    /// a body limit, a method the route lacks), by its status: the
    /// contract's code for it, and 400 for a 4xx the contract has none for.
    pub fn from_status(status: u16, message: String) -> Self {
        match status {
            401 => ApiError::Unauthenticated,
            404 => ApiError::NotFound(message),
            405 => ApiError::MethodNotAllowed(message),
            409 => ApiError::Conflict(message),
            410 => ApiError::Gone(message),
            413 => ApiError::PayloadTooLarge(message),
            429 => ApiError::ResourceExhausted(message),
            503 => ApiError::Unavailable(message),
            504 => ApiError::DeadlineExceeded(message),
            400..=499 => ApiError::InvalidArgument(message),
            _ => ApiError::Internal(message),
        }
    }

    /// The error as the admin API sends it.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code().into(),
                message: self.to_string(),
            },
            key_id: match self {
                ApiError::AlreadyIssued { key_id } => Some(key_id.clone()),
                _ => None,
            },
        }
    }

    pub fn not_found(kind: ResourceKind, id: &str) -> Self {
        ApiError::NotFound(format!("{} {id:?} not found", kind.as_str()))
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::InvalidArgument(e.to_string())
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        match r.code {
            ErrorCode::InvalidArgument => ApiError::InvalidArgument(r.message),
            ErrorCode::NotFound => ApiError::NotFound(r.message),
            ErrorCode::Conflict => match r.key_id {
                Some(key_id) => ApiError::AlreadyIssued { key_id },
                None => ApiError::Conflict(r.message),
            },
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::InvalidArgument => ApiError::InvalidArgument(s.message().into()),
            tonic::Code::NotFound => ApiError::NotFound(s.message().into()),
            tonic::Code::AlreadyExists | tonic::Code::FailedPrecondition => {
                ApiError::Conflict(s.message().into())
            }
            tonic::Code::Unauthenticated => ApiError::Unauthenticated,
            _ => ApiError::Unavailable(format!("leader unreachable: {}", s.message())),
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let msg = e.to_string();
        match e {
            ApiError::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            ApiError::Unauthenticated => tonic::Status::unauthenticated(msg),
            ApiError::NotFound(_) => tonic::Status::not_found(msg),
            ApiError::Conflict(_) => tonic::Status::failed_precondition(msg),
            ApiError::AlreadyIssued { .. } => tonic::Status::already_exists(msg),
            ApiError::Unavailable(_) => tonic::Status::unavailable(msg),
            ApiError::Internal(_) => tonic::Status::internal(msg),
            ApiError::Gone(_) => tonic::Status::not_found(msg),
            ApiError::PayloadTooLarge(_) => tonic::Status::out_of_range(msg),
            ApiError::ResourceExhausted(_) => tonic::Status::resource_exhausted(msg),
            ApiError::DeadlineExceeded(_) => tonic::Status::deadline_exceeded(msg),
            ApiError::MethodNotAllowed(_) => tonic::Status::unimplemented(msg),
        }
    }
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;
