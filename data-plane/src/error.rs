//! Every response the gateway makes itself. One function maps an error to
//! its status, message and headers, so the contract's table lives in one
//! place.

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::body::{full, ProxyBody};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    /// Ambiguous or malformed framing; the connection is closed after it.
    #[error("bad request framing: {0}")]
    BadFraming(&'static str),
    #[error("no API or route matches")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: Vec<Method> },
    /// JWT required and missing or invalid (401 with `WWW-Authenticate`).
    #[error("unauthorized")]
    Unauthorized,
    /// API key refused, JWT scope missing, client address not allowed,
    /// CORS preflight refused.
    #[error("forbidden")]
    Forbidden,
    /// A request authorizer failed (error, timeout, unreadable answer):
    /// 500, never a pass.
    #[error("request authorizer failed")]
    AuthorizerFailed,
    /// The key's throttle refused the request (429 with `Retry-After`).
    #[error("throttled")]
    Throttled {
        info: crate::plans::RateInfo,
        retry_after_s: u64,
    },
    /// The key's quota for the period is used up.
    #[error("quota used up")]
    QuotaExceeded,
    /// A request transfer coding the gateway does not implement (501).
    #[error("transfer coding not implemented")]
    CodingNotImplemented,
    #[error("request body over the limit")]
    PayloadTooLarge,
    #[error("request URI over the limit")]
    UriTooLong,
    #[error("request headers over the limit")]
    HeadersTooLarge,
    #[error("upstream unreachable or bad response: {0}")]
    BadGateway(String),
    #[error("no healthy upstream target")]
    NoHealthyUpstream,
    #[error("upstream slower than timeout_ms")]
    GatewayTimeout,
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// A WebSocket API asked for without `Upgrade` (426).
    #[error("upgrade required")]
    UpgradeRequired,
    /// A WebSocket upgrade missing or garbling a handshake field (400).
    #[error("bad websocket handshake: {0}")]
    BadHandshake(&'static str),
    /// The `$connect` integration refused the connection with this status.
    #[error("$connect answered {0}")]
    ConnectRefused(StatusCode),
    /// The config cannot serve this request as it stands (a stage variable
    /// on an API's own path, which defines none).
    #[error("misconfigured: {0}")]
    Misconfigured(String),
}

impl From<crate::http1::syntax::HeadError> for ProxyError {
    fn from(e: crate::http1::syntax::HeadError) -> Self {
        use crate::http1::syntax::HeadError;
        match e {
            HeadError::BadFraming(why) => ProxyError::BadFraming(why),
            HeadError::UnknownCoding => ProxyError::CodingNotImplemented,
            HeadError::TooLarge => ProxyError::HeadersTooLarge,
        }
    }
}

impl From<crate::router::RouteError> for ProxyError {
    fn from(e: crate::router::RouteError) -> Self {
        use crate::router::RouteError;
        match e {
            RouteError::NotFound => ProxyError::NotFound,
            RouteError::MethodNotAllowed { allow } => ProxyError::MethodNotAllowed { allow },
        }
    }
}

impl ProxyError {
    fn status_and_message(&self) -> (StatusCode, &'static str) {
        match self {
            ProxyError::BadFraming(_) => (StatusCode::BAD_REQUEST, "Bad Request"),
            ProxyError::CodingNotImplemented => (StatusCode::NOT_IMPLEMENTED, "Not Implemented"),
            ProxyError::NotFound => (StatusCode::NOT_FOUND, "Not Found"),
            ProxyError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
            }
            ProxyError::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            ProxyError::Forbidden => (StatusCode::FORBIDDEN, "Forbidden"),
            ProxyError::AuthorizerFailed | ProxyError::Misconfigured(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
            ProxyError::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests"),
            ProxyError::QuotaExceeded => (StatusCode::TOO_MANY_REQUESTS, "Limit Exceeded"),
            ProxyError::PayloadTooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large")
            }
            ProxyError::UriTooLong => (StatusCode::URI_TOO_LONG, "URI Too Long"),
            ProxyError::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "Request Header Fields Too Large",
            ),
            ProxyError::BadGateway(_) => (StatusCode::BAD_GATEWAY, "Bad Gateway"),
            ProxyError::NoHealthyUpstream => {
                (StatusCode::SERVICE_UNAVAILABLE, "No Healthy Upstream")
            }
            ProxyError::GatewayTimeout => {
                (StatusCode::GATEWAY_TIMEOUT, "Endpoint Request Timed Out")
            }
            ProxyError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
            ProxyError::UpgradeRequired => (StatusCode::UPGRADE_REQUIRED, "Upgrade Required"),
            ProxyError::BadHandshake(_) => (StatusCode::BAD_REQUEST, "Bad Request"),
            ProxyError::ConnectRefused(status) => {
                (*status, status.canonical_reason().unwrap_or("Refused"))
            }
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status_and_message().0
    }

    /// Why the gateway refused or failed the request, for the access log.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::BadFraming(_) => "bad_framing",
            ProxyError::CodingNotImplemented => "coding_not_implemented",
            ProxyError::NotFound => "no_route",
            ProxyError::MethodNotAllowed { .. } => "method_not_allowed",
            ProxyError::Unauthorized => "unauthorized",
            ProxyError::Forbidden => "forbidden",
            ProxyError::AuthorizerFailed => "authorizer_failed",
            ProxyError::Throttled { .. } => "throttled",
            ProxyError::QuotaExceeded => "quota_exceeded",
            ProxyError::PayloadTooLarge => "body_too_large",
            ProxyError::UriTooLong => "uri_too_long",
            ProxyError::HeadersTooLarge => "headers_too_large",
            ProxyError::BadGateway(_) => "bad_gateway",
            ProxyError::NoHealthyUpstream => "no_healthy_upstream",
            ProxyError::GatewayTimeout => "upstream_timeout",
            ProxyError::ShuttingDown => "shutting_down",
            ProxyError::Misconfigured(_) => "misconfigured",
            ProxyError::UpgradeRequired => "upgrade_required",
            ProxyError::BadHandshake(_) => "bad_handshake",
            ProxyError::ConnectRefused(_) => "connect_refused",
        }
    }

    /// The response for this error: a JSON `{"message": ...}` body.
    pub fn into_response(self) -> Response<ProxyBody> {
        let (status, message) = self.status_and_message();
        let body = serde_json::json!({ "message": message }).to_string();
        let mut res = Response::new(full(body));
        *res.status_mut() = status;
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match &self {
            // After a head in doubt nothing that follows on the connection
            // can be trusted to start a request: both engines close.
            ProxyError::BadFraming(_)
            | ProxyError::CodingNotImplemented
            | ProxyError::UriTooLong
            | ProxyError::HeadersTooLarge => {
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ProxyError::MethodNotAllowed { allow } => {
                let list = allow
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                if let Ok(v) = HeaderValue::from_str(&list) {
                    h.insert(header::ALLOW, v);
                }
            }
            ProxyError::Unauthorized => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            ProxyError::Throttled {
                info,
                retry_after_s,
            } => {
                set_rate_headers(h, info);
                h.insert(header::RETRY_AFTER, number(*retry_after_s));
            }
            ProxyError::UpgradeRequired => {
                h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            }
            _ => {}
        }
        res
    }
}

/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds
/// until the bucket is full again).
pub fn set_rate_headers(h: &mut http::HeaderMap, info: &crate::plans::RateInfo) {
    for (name, n) in rate_fields(info) {
        h.insert(name.clone(), number(n));
    }
}

/// The `RateLimit-*` fields for `info`: each name and its number.
pub fn rate_fields(info: &crate::plans::RateInfo) -> [(&'static http::HeaderName, u64); 3] {
    [
        (&RATELIMIT[0], info.limit),
        (&RATELIMIT[1], info.remaining),
        (&RATELIMIT[2], info.reset_s),
    ]
}

/// The names of the `RateLimit-*` fields. Static: parsing a name from a
/// `&str` allocates on every call.
pub static RATELIMIT: [http::HeaderName; 3] = [
    http::HeaderName::from_static("ratelimit-limit"),
    http::HeaderName::from_static("ratelimit-remaining"),
    http::HeaderName::from_static("ratelimit-reset"),
];

/// A number as a header value. Not `HeaderValue::from(u64)`: that makes a
/// buffer with room to spare, then a second allocation to share it;
/// copying the digits makes one.
fn number(n: u64) -> HeaderValue {
    HeaderValue::from_str(itoa::Buffer::new().format(n)).expect("digits are a header value")
}
