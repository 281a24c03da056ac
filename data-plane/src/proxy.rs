//! The request path. Phases, in order (ARCHITECTURE.md has the long form):
//!
//! 1. `admit`: framing and size limits the HTTP parser leaves to us.
//! 2. `route`: host, longest base path, template, method (404/405).
//! 3. `auth::cors`: CORS preflights are answered by the gateway; then the
//!    API's IP lists and the route's auth policy (`auth`). Identity headers
//!    replace whatever the client said about itself. (Plan and cache phases
//!    plug in after auth.)
//! 4. `mock` routes answer here.
//! 5. `forward`: pick a target, send with a deadline, retry what is safe to
//!    retry, pass the response (or the WebSocket upgrade) back.
//!
//! Every response, error or not, carries `x-request-id`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::auth;
use tollgate_model::{Resource, ResourceKind};

use crate::body::{self, Holding, ProxyBody};
use crate::error::ProxyError;
use crate::gateway::{Gateway, Snapshot};
use crate::router::{RouteError, RouteMatch};
use crate::upstream::UpstreamPool;

/// Limits for hostile or broken clients.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_uri_bytes: usize,
    /// Sum of header name and value lengths.
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 10 * 1024 * 1024,
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// What the request path knows about the connection a request came on.
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub tls: bool,
    /// Set by the framing guard when a request head was ambiguous.
    pub bad_framing: Arc<AtomicBool>,
}

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(&X_REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .cloned()
        .unwrap_or_else(|| {
            let id: u128 = rand::random();
            HeaderValue::from_str(&format!("{id:032x}")).expect("hex is a valid header")
        })
}

/// Serve one request. Never fails: errors become responses.
pub async fn serve(
    gw: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    limits: Arc<Limits>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    let id = request_id(req.headers());
    let mut res = match handle(&gw, &conn, &limits, &id, req).await {
        Ok(res) => res,
        Err(e) => {
            if e.status().is_server_error() {
                tracing::debug!(request_id = ?id, error = %e, "request failed");
            }
            e.into_response()
        }
    };
    res.headers_mut().insert(X_REQUEST_ID.clone(), id);
    gw.stats.record(res.status());
    Ok(res)
}

async fn handle(
    gw: &Gateway,
    conn: &ConnInfo,
    limits: &Limits,
    id: &HeaderValue,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    admit(conn, limits, &req)?;
    let snapshot = gw.snapshot();
    let host = request_host(&req).unwrap_or_default();
    if let Some(res) = auth::cors::answer_preflight(&snapshot.routes, &host, &req) {
        return Ok(res);
    }
    let matched = snapshot
        .routes
        .find(&host, req.uri().path(), req.method())
        .map_err(|e| match e {
            RouteError::NotFound => ProxyError::NotFound,
            RouteError::MethodNotAllowed { allow } => ProxyError::MethodNotAllowed { allow },
        })?;
    let api = matched.api.clone();
    let Some(cors) = &api.doc.cors else {
        return guarded(gw, &snapshot, conn, limits, id, &host, matched, req).await;
    };
    // CORS headers go on every response of the API, errors included.
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut res = match guarded(gw, &snapshot, conn, limits, id, &host, matched, req).await {
        Ok(res) => res,
        Err(e) => {
            if e.status().is_server_error() {
                tracing::debug!(request_id = ?id, error = %e, "request failed");
            }
            e.into_response()
        }
    };
    auth::cors::decorate(cors, origin.as_ref(), &mut res);
    Ok(res)
}

/// The phases after the route matched: IP lists, authentication, then a
/// mock answer or the upstream.
#[allow(clippy::too_many_arguments)]
async fn guarded(
    gw: &Gateway,
    snapshot: &Snapshot,
    conn: &ConnInfo,
    limits: &Limits,
    id: &HeaderValue,
    host: &str,
    matched: RouteMatch,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let api = &matched.api.doc;
    snapshot.auth.check_ip(&api.id, conn.remote.ip())?;
    let identity = snapshot
        .auth
        .authenticate(api, &matched.route().doc, req.headers())
        .await?;
    let rate = plan_phase(gw, snapshot, &identity, &api.id).await?;
    let mut res = if let Some(mock) = &matched.route().doc.mock {
        mock_response(mock)
    } else {
        auth::prepare_upstream_headers(req.headers_mut(), &identity);
        let pool =
            matched.api.upstream.clone().ok_or_else(|| {
                ProxyError::BadGateway("route has neither mock nor upstream".into())
            })?;
        forward(gw, conn, limits, id, host, &matched, &pool, req).await?
    };
    if let Some(info) = rate {
        crate::error::set_rate_headers(res.headers_mut(), &info);
    }
    Ok(res)
}

/// Phase 4: the usage plan of a key caller (the first of the key's plans
/// that grants this API): throttle, quota, metering. Callers without a key
/// have no plan.
async fn plan_phase(
    gw: &Gateway,
    snapshot: &Snapshot,
    identity: &auth::Identity,
    api_id: &str,
) -> Result<Option<crate::plans::RateInfo>, ProxyError> {
    let (Some(key_id), Some(plans)) = (&identity.key_id, gw.plans()) else {
        return Ok(None);
    };
    let Some(Resource::ApiKey(key)) = snapshot.config.get(ResourceKind::ApiKey, key_id) else {
        return Ok(None);
    };
    let plan =
        key.plans
            .iter()
            .find_map(|p| match snapshot.config.get(ResourceKind::UsagePlan, p) {
                Some(Resource::UsagePlan(plan)) if plan.apis.iter().any(|a| a == api_id) => {
                    Some(plan)
                }
                _ => None,
            });
    let Some(plan) = plan else { return Ok(None) };
    plans.admit(key_id, plan).await.map_err(|d| match d {
        crate::plans::PlanDenied::Throttled {
            info,
            retry_after_s,
        } => ProxyError::Throttled {
            info,
            retry_after_s,
        },
        crate::plans::PlanDenied::QuotaExceeded => ProxyError::QuotaExceeded,
    })
}

/// Phase 1: what hyper's parser accepts but the contract refuses.
fn admit(conn: &ConnInfo, limits: &Limits, req: &Request<Incoming>) -> Result<(), ProxyError> {
    if conn.bad_framing.load(Ordering::Acquire) {
        return Err(ProxyError::BadFraming(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if req.headers().get_all(header::HOST).iter().count() > 1 {
        return Err(ProxyError::BadFraming("more than one Host header"));
    }
    if req.uri().to_string().len() > limits.max_uri_bytes {
        return Err(ProxyError::UriTooLong);
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > limits.max_header_bytes || req.headers().len() > limits.max_headers {
        return Err(ProxyError::HeadersTooLarge);
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(ProxyError::PayloadTooLarge);
    }
    Ok(())
}

fn request_host(req: &Request<Incoming>) -> Option<String> {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
}

fn mock_response(mock: &tollgate_model::docs::Mock) -> Response<ProxyBody> {
    let mut res = Response::new(body::full(mock.body.clone()));
    *res.status_mut() = StatusCode::from_u16(mock.status).unwrap_or(StatusCode::OK);
    for (k, v) in &mock.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            res.headers_mut().insert(k, v);
        }
    }
    res
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The `Upgrade` a request asks for, if the gateway passes it through.
/// `h2c` is never forwarded.
fn wanted_upgrade(req: &Request<Incoming>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let up = req.headers().get(header::UPGRADE)?;
    let wants = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    (wants && !up.as_bytes().eq_ignore_ascii_case(b"h2c")).then(|| up.clone())
}

/// Remove hop-by-hop headers, including those named by `Connection`.
/// `te: trailers` survives: gRPC needs it end to end.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    let te_trailers = h
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for n in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        h.remove(n);
    }
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

fn append_forwarded_for(h: &mut HeaderMap, ip: std::net::IpAddr) {
    let value = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
}

fn caused_by_body_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    gw: &Gateway,
    conn: &ConnInfo,
    limits: &Limits,
    id: &HeaderValue,
    host: &str,
    matched: &RouteMatch,
    pool: &Arc<UpstreamPool>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let upgrade = wanted_upgrade(&req);
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let grpc = req.version() == Version::HTTP_2
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let (parts, incoming) = req.into_parts();
    let method = parts.method;

    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.remove(&X_API_KEY);
    append_forwarded_for(&mut headers, conn.remote.ip());
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        let proto = if conn.tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if !headers.contains_key(&X_FORWARDED_HOST) {
        if let Ok(v) = HeaderValue::from_str(host) {
            headers.insert(X_FORWARDED_HOST.clone(), v);
        }
    }
    headers.insert(X_REQUEST_ID.clone(), id.clone());
    if !headers.contains_key(&TRACEPARENT) {
        let (t, s): (u128, u64) = (rand::random(), rand::random());
        let tp = format!("00-{t:032x}-{:016x}-01", s | 1);
        headers.insert(
            TRACEPARENT.clone(),
            HeaderValue::from_str(&tp).expect("hex"),
        );
    }
    if let Some(up) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, up.clone());
    }

    let retries = pool.config.retries as usize;
    let limited = Limited::new(incoming, limits.max_body_bytes);
    // A body can be sent again only if we kept it; keep it when a retry is
    // possible (idempotent methods), stream it otherwise.
    let replayable = is_idempotent(&method) && retries > 0 && upgrade.is_none();
    let mut buffered: Option<Bytes> = None;
    let mut streaming = None;
    if replayable {
        buffered = Some(match limited.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(ProxyError::PayloadTooLarge)
            }
            Err(e) => return Err(ProxyError::BadGateway(format!("reading request body: {e}"))),
        });
    } else {
        streaming = Some(body::boxed(limited));
    }

    let query = parts.uri.query();
    let client = gw.clients.for_request(grpc);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(pool.config.timeout_ms);
    let attempts = if replayable { retries + 1 } else { 1 };
    let mut tried = Vec::new();
    let mut last_err = ProxyError::NoHealthyUpstream;
    for attempt in 0..attempts {
        let Some(lease) = pool.pick(&tried) else {
            return Err(last_err);
        };
        tried.push(lease.index);
        let target = lease.target();
        let mut path_and_query = format!("{}{}", target.base_path, matched.upstream_path);
        if let Some(q) = query {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        let uri = Uri::builder()
            .scheme(target.scheme.clone())
            .authority(target.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| ProxyError::BadGateway(format!("upstream URI: {e}")))?;
        let body = match (&buffered, streaming.take()) {
            (Some(b), _) => body::full(b.clone()),
            (None, Some(s)) => s,
            (None, None) => body::empty(),
        };
        let mut up = Request::new(body);
        *up.method_mut() = method.clone();
        *up.uri_mut() = uri;
        *up.headers_mut() = headers.clone();
        if grpc {
            *up.version_mut() = Version::HTTP_2;
        }
        let last = attempt + 1 == attempts;
        match tokio::time::timeout_at(deadline, client.request(up)).await {
            Err(_) => {
                lease.record(false);
                return Err(ProxyError::GatewayTimeout);
            }
            Ok(Err(e)) => {
                lease.record(false);
                if caused_by_body_limit(&e) {
                    return Err(ProxyError::PayloadTooLarge);
                }
                last_err = ProxyError::BadGateway(format!("{}: {e:?}", target.url));
                if e.is_connect() && !last {
                    continue;
                }
                return Err(last_err);
            }
            Ok(Ok(mut res)) => {
                let status = res.status();
                let failed = matches!(
                    status,
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                );
                lease.record(!failed);
                if !last
                    && matches!(
                        status,
                        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE
                    )
                {
                    last_err = ProxyError::BadGateway(format!("{}: {status}", target.url));
                    continue;
                }
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(client_upgrade) = client_upgrade {
                        let upstream_upgrade = hyper::upgrade::on(&mut res);
                        tokio::spawn(async move {
                            if let (Ok(a), Ok(b)) = (client_upgrade.await, upstream_upgrade.await) {
                                let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                                let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                            }
                        });
                        let (mut parts, _) = res.into_parts();
                        let up = parts.headers.remove(header::UPGRADE);
                        strip_hop_by_hop(&mut parts.headers);
                        if let Some(up) = up {
                            parts.headers.insert(header::UPGRADE, up);
                            parts
                                .headers
                                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                        }
                        return Ok(Response::from_parts(parts, body::empty()));
                    }
                }
                let (mut parts, incoming) = res.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                return Ok(Response::from_parts(
                    parts,
                    Holding::wrap(body::boxed(incoming), lease),
                ));
            }
        }
    }
    Err(last_err)
}
