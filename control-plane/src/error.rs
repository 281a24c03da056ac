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
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidArgument(_) => "invalid_argument",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
            ApiError::Gone(_) => "gone",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::ResourceExhausted(_) => "resource_exhausted",
            ApiError::DeadlineExceeded(_) => "deadline_exceeded",
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            ApiError::InvalidArgument(_) => 400,
            ApiError::Unauthenticated => 401,
            ApiError::NotFound(_) => 404,
            ApiError::Conflict(_) => 409,
            ApiError::Unavailable(_) => 503,
            ApiError::Internal(_) => 500,
            ApiError::Gone(_) => 410,
            ApiError::PayloadTooLarge(_) => 413,
            ApiError::ResourceExhausted(_) => 429,
            ApiError::DeadlineExceeded(_) => 504,
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
            ErrorCode::Conflict => ApiError::Conflict(r.message),
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
            ApiError::Unavailable(_) => tonic::Status::unavailable(msg),
            ApiError::Internal(_) => tonic::Status::internal(msg),
            ApiError::Gone(_) => tonic::Status::not_found(msg),
            ApiError::PayloadTooLarge(_) => tonic::Status::out_of_range(msg),
            ApiError::ResourceExhausted(_) => tonic::Status::resource_exhausted(msg),
            ApiError::DeadlineExceeded(_) => tonic::Status::deadline_exceeded(msg),
        }
    }
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;
