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
        }
    }
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;
