//! A WebSocket route's HTTP integration: `POST {target}{path}` to the
//! API's upstream with the message as body, the connection's id, the route
//! key, the event type and the caller's identity headers (contract §5.3).
//! `$connect` and `$disconnect` are calls of the same shape.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::body;
use crate::error::ProxyError;
use crate::upstream::{Clients, UpstreamPool};

pub static X_CONNECTION_ID: HeaderName = HeaderName::from_static("x-tollgate-connection-id");
pub static X_ROUTE_KEY: HeaderName = HeaderName::from_static("x-tollgate-route-key");
pub static X_EVENT_TYPE: HeaderName = HeaderName::from_static("x-tollgate-event-type");
pub static X_CLOSE_CODE: HeaderName = HeaderName::from_static("x-tollgate-close-code");
pub static X_CLOSE_REASON: HeaderName = HeaderName::from_static("x-tollgate-close-reason");

/// Why the integration is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Connect,
    Message,
    Disconnect,
}

impl Event {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Event::Connect => "CONNECT",
            Event::Message => "MESSAGE",
            Event::Disconnect => "DISCONNECT",
        })
    }
}

/// One integration call.
pub struct Call<'a> {
    pub event: Event,
    pub route_key: &'a str,
    /// The route's integration path (`/` when the route names none).
    pub path: &'a str,
    /// `?…` of the upgrade request, for `$connect`; else empty.
    pub query: &'a str,
    pub body: Bytes,
    /// Fields besides the gateway's: the client's (for `$connect`), the
    /// close code (for `$disconnect`), the content type (for messages).
    pub fields: HeaderMap,
}

/// What the integration answered.
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Who the calls are for: the connection's id and its caller's identity
/// fields, made once at the upgrade.
pub struct Caller {
    pub connection_id: HeaderValue,
    pub identity: HeaderMap,
}

/// POST `call` to a target of `pool` within its `timeout_ms`; answers
/// bigger than `max_answer` bytes are a failure.
pub async fn post(
    clients: &Clients,
    pool: &Arc<UpstreamPool>,
    caller: &Caller,
    call: Call<'_>,
    max_answer: usize,
) -> Result<Reply, ProxyError> {
    let lease = pool.pick(&[]).ok_or(ProxyError::NoHealthyUpstream)?;
    let target = lease.target();
    let path = if call.path.is_empty() { "/" } else { call.path };
    let uri = format!(
        "{}://{}{}{path}{}",
        target.scheme,
        target.authority,
        target.base_path.trim_end_matches('/'),
        call.query
    );
    let mut req = Request::post(uri)
        .body(body::full(call.body))
        .map_err(|e| ProxyError::BadGateway(format!("bad integration request: {e}")))?;
    let h = req.headers_mut();
    *h = call.fields;
    h.extend(caller.identity.clone());
    h.insert(header::HOST, target.host_header.clone());
    h.insert(X_CONNECTION_ID.clone(), caller.connection_id.clone());
    if let Ok(key) = HeaderValue::from_str(call.route_key) {
        h.insert(X_ROUTE_KEY.clone(), key);
    }
    h.insert(X_EVENT_TYPE.clone(), call.event.header());
    let client = clients.for_request(false);
    let exchange = async {
        let res = client
            .request(req)
            .await
            .map_err(|e| ProxyError::BadGateway(format!("integration call failed: {e}")))?;
        let status = res.status();
        let body = Limited::new(res.into_body(), max_answer)
            .collect()
            .await
            .map_err(|e| ProxyError::BadGateway(format!("reading the integration's answer: {e}")))?
            .to_bytes();
        Ok(Reply { status, body })
    };
    let timeout = Duration::from_millis(pool.config.timeout_ms);
    let outcome = tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(ProxyError::GatewayTimeout));
    lease.record(outcome.as_ref().is_ok_and(|r| !r.status.is_server_error()));
    outcome
}
