//! Phase 7: the upstream. `forward` is a sequence of steps: the request's
//! fields as the target gets them (`headers::Outgoing`), the body (kept
//! when it can be sent again or goes through the pool, else streamed),
//! then up to `retries + 1` attempts, each on a target the pool picks,
//! through our HTTP/1.1 codec (plain HTTP, body in hand) or hyper_util's
//! client (the rest), and the answer (an upgrade, or a body under the
//! idle timeout) back to the client.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::Scheme;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Either, Limited};
use hyper_util::rt::TokioIo;

use super::headers::{self, GatewayFields};
use super::{Trail, Upstream};
use crate::body::{self, Holding, ProxyBody, RequestBody};
use crate::error::ProxyError;
use crate::http1::client::{self as conn_pool, SendError};
use crate::http1::fields::{Answer, UpstreamFields};
use crate::http1::syntax::codings_besides_chunked;
use crate::http1::timeouts::IdleBody;
use crate::upstream::{Lease, TargetState};

/// How one upstream attempt goes out.
// One lives per attempt inside `forward`'s future; boxing the request
// would cost an allocation per unpooled attempt for nothing.
#[allow(clippy::large_enum_variant)]
enum Via<'a> {
    /// Our HTTP/1.1 codec, on this thread's connections, with this body.
    Pool(&'a Bytes),
    /// hyper_util's client, with the request built for it.
    Client(Request<ProxyBody>),
}

/// The request body as the attempts send it.
struct Payload {
    /// All of it, kept: it can be sent again, or through the pool.
    buffered: Option<Bytes>,
    /// Streamed, once: for a single attempt through hyper_util's client.
    streaming: Option<ProxyBody>,
    /// Set when the client's side of a streamed body failed (a malformed
    /// chunked body, a hang-up): the send's failure is then the client's,
    /// not the target's.
    client_failed: Option<Arc<AtomicBool>>,
}

impl Payload {
    fn client_failed_now(&self) -> bool {
        self.client_failed
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Acquire))
    }
}

/// A streamed request body that notes its own failure (see `Payload`).
struct ClientBody<B> {
    inner: B,
    failed: Arc<AtomicBool>,
}

impl<B> http_body::Body for ClientBody<B>
where
    B: http_body::Body<Data = Bytes, Error = crate::body::BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        // Over the body limit is not a broken body: that stays a 413
        // (`judge` finds the limit's error in the send's).
        if let std::task::Poll::Ready(Some(Err(e))) = &polled {
            if !e.is::<http_body_util::LengthLimitError>() {
                self.failed.store(true, Ordering::Release);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

pub(super) async fn forward(
    up: &Upstream<'_>,
    mut req: Request<RequestBody>,
    trail: &mut Trail,
) -> Result<Answer<ProxyBody>, ProxyError> {
    let pool = up.pool;
    // Its span id is the parent id the upstream sees in `traceparent`.
    let span = tracing::debug_span!(
        "upstream",
        target = tracing::field::Empty,
        status = tracing::field::Empty
    );
    let upgrade = headers::wanted_upgrade(&req, up.cx.facts);
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let grpc = is_grpc(&req);
    let (parts, incoming) = req.into_parts();
    let method = parts.method;
    let mut fields = parts.headers;
    let gateway = GatewayFields::new(up, &mut fields, &parts.uri, trail, &span);
    if let Some(u) = &upgrade {
        fields.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        fields.insert(header::UPGRADE, u.clone());
    }
    let added = gateway.added(up.cx.conn, up.cx.id);

    let retries = pool.config.retries as usize;
    // A body can be sent again only if we kept it; keep it when a retry is
    // possible (idempotent methods), and keep small ones so they can go
    // through this thread's pool. Stream the rest.
    let replayable = is_idempotent(&method) && retries > 0 && upgrade.is_none();
    let small = upgrade.is_none()
        && !grpc
        && up
            .cx
            .facts
            .content_length
            .is_some_and(|n| n <= conn_pool::SMALL_BODY);
    let mut payload = read_body(
        incoming,
        up.cx.limits.max_body_bytes,
        upgrade.is_none(),
        replayable || small,
    )
    .await?;
    trail.bytes_in = payload
        .buffered
        .as_ref()
        .map_or(trail.bytes_in, |b| b.len() as u64);

    let sent_at = Instant::now();
    let request = Outbound {
        method: &method,
        upstream_path: up.matched.upstream_path(parts.uri.path()),
        query: parts.uri.query(),
        added: &added,
        grpc,
        sent_at,
        deadline: tokio::time::Instant::from_std(sent_at)
            + Duration::from_millis(pool.config.timeout_ms),
    };
    let attempts = if replayable { retries + 1 } else { 1 };
    // At most 6 attempts (retries are 0 to 5): no allocation for the list.
    let mut tried = [0usize; 6];
    let attempts = attempts.min(tried.len());
    let mut last_err = ProxyError::NoHealthyUpstream;
    for attempt in 0..attempts {
        let Some(lease) = pool.pick(&tried[..attempt]) else {
            return Err(last_err);
        };
        tried[attempt] = lease.index;
        trail.upstream = Some((pool.clone(), lease.index));
        let target = lease.target();
        span.record("target", target.url.as_str());
        let last = attempt + 1 == attempts;
        let via = request.via(target, &mut payload, &mut fields, last)?;
        let outcome = pin!(request.send(up, target, via, &fields)).await;
        trail.upstream_us = Some(sent_at.elapsed().as_micros() as u64);
        if outcome.is_err() && payload.client_failed_now() {
            // Not the target's fault: no mark on its health or breaker.
            return Err(ProxyError::BadFraming("malformed request body"));
        }
        match judge(outcome, &lease, last) {
            Judged::Retry(e) => last_err = e,
            Judged::Fail(e) => return Err(e),
            Judged::Answer(res, fields) => {
                span.record("status", res.status().as_u16());
                return Ok(answer(up, res, fields, lease, client_upgrade));
            }
        }
    }
    Err(last_err)
}

/// What every attempt of one request sends, whichever target it picks.
struct Outbound<'a> {
    method: &'a Method,
    upstream_path: &'a str,
    query: Option<&'a str>,
    added: &'a headers::Added<'a>,
    grpc: bool,
    sent_at: Instant,
    /// One deadline for all attempts together (`timeout_ms`).
    deadline: tokio::time::Instant,
}

impl Outbound<'_> {
    /// How this attempt goes out: plain HTTP/1.1 with the body in hand
    /// goes through this thread's own pool; the rest through hyper_util's
    /// client, with a request built for it (the last attempt takes the
    /// fields; earlier ones need a copy).
    fn via<'p>(
        &self,
        target: &TargetState,
        payload: &'p mut Payload,
        fields: &mut HeaderMap,
        last: bool,
    ) -> Result<Via<'p>, ProxyError> {
        if let Some(body) = &payload.buffered {
            if !self.grpc && target.scheme == Scheme::HTTP {
                return Ok(Via::Pool(body));
            }
        }
        let uri = target_uri(target, self.upstream_path, self.query)?;
        let body = match (&payload.buffered, payload.streaming.take()) {
            (Some(b), _) => body::full(b.clone()),
            (None, Some(s)) => s,
            (None, None) => body::empty(),
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = if last {
            std::mem::take(fields)
        } else {
            fields.clone()
        };
        req.headers_mut().remove(header::HOST);
        self.added.insert_into(req.headers_mut());
        if self.grpc {
            *req.version_mut() = Version::HTTP_2;
        }
        Ok(Via::Client(req))
    }

    /// Send one attempt and read the answer's head, within the deadline.
    async fn send(
        &self,
        up: &Upstream<'_>,
        target: &TargetState,
        via: Via<'_>,
        fields: &HeaderMap,
    ) -> Result<SentAnswer, SendError> {
        match via {
            Via::Pool(body) => {
                let head = conn_pool::Head {
                    method: self.method,
                    path: [&target.base_path, self.upstream_path],
                    query: self.query,
                    host: &target.host_header,
                    headers: fields,
                    added: self.added.as_slice(),
                };
                let sent =
                    conn_pool::send(&target.authority, &head, body, self.sent_at, self.deadline);
                let (res, fields) = pin!(sent).await?;
                Ok((res.map(Either::Left), Some(fields)))
            }
            Via::Client(req) => {
                let sent = up.cx.gw.clients.for_request(self.grpc).request(req);
                match tokio::time::timeout_at(self.deadline, sent).await {
                    Ok(Ok(res)) => Ok((res.map(|b| Either::Right(body::boxed(b))), None)),
                    Ok(Err(e)) => Err(SendError::Client(e)),
                    Err(_) => Err(SendError::TimedOut),
                }
            }
        }
    }
}

/// An answer's head from either way, and the pool's fields beside it.
type SentAnswer = (
    Response<Either<conn_pool::UpstreamBody, ProxyBody>>,
    Option<UpstreamFields>,
);

/// gRPC goes to the target as HTTP/2, through hyper_util's client.
fn is_grpc(req: &Request<RequestBody>) -> bool {
    req.version() == Version::HTTP_2
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Read the body whole when `keep` (and there is one), else leave it to
/// stream. A body over `limit` is 413; one the client failed to send
/// (a malformed chunked body, a hang-up) is the client's fault: 400.
async fn read_body(
    incoming: RequestBody,
    limit: usize,
    plain: bool,
    keep: bool,
) -> Result<Payload, ProxyError> {
    let limited = Limited::new(incoming, limit);
    if plain && limited.is_end_stream() {
        // No body (most GETs): nothing to read or keep.
        return Ok(Payload {
            buffered: Some(Bytes::new()),
            streaming: None,
            client_failed: None,
        });
    }
    if !keep {
        let failed = Arc::new(AtomicBool::new(false));
        let body = ClientBody {
            inner: limited,
            failed: failed.clone(),
        };
        return Ok(Payload {
            buffered: None,
            streaming: Some(body::boxed(body)),
            client_failed: Some(failed),
        });
    }
    match limited.collect().await {
        Ok(c) => Ok(Payload {
            buffered: Some(c.to_bytes()),
            streaming: None,
            client_failed: None,
        }),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ProxyError::PayloadTooLarge),
        Err(e) => {
            tracing::debug!(error = %e, "reading the request body failed");
            Err(ProxyError::BadFraming("malformed request body"))
        }
    }
}

/// The target's URI for hyper_util's client.
fn target_uri(
    target: &TargetState,
    upstream_path: &str,
    query: Option<&str>,
) -> Result<Uri, ProxyError> {
    let mut path_and_query = String::with_capacity(
        target.base_path.len() + upstream_path.len() + query.map_or(0, |q| q.len() + 1),
    );
    path_and_query.push_str(&target.base_path);
    path_and_query.push_str(upstream_path);
    if let Some(q) = query {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    Uri::builder()
        .scheme(target.scheme.clone())
        .authority(target.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| ProxyError::BadGateway(format!("upstream URI: {e}")))
}

/// What one attempt's outcome means for the request.
enum Judged<B> {
    /// Try the next target with this as the error if none is left.
    Retry(ProxyError),
    Fail(ProxyError),
    Answer(Response<B>, Option<UpstreamFields>),
}

/// Record the attempt on its target (health, breaker) and decide: a
/// timeout ends the request (504); a failure to send, or a 502/503 answer,
/// goes to the next target if one is left.
fn judge<B>(
    outcome: Result<(Response<B>, Option<UpstreamFields>), SendError>,
    lease: &Lease,
    last: bool,
) -> Judged<B> {
    let target = lease.target();
    match outcome {
        Err(SendError::TimedOut) => {
            lease.record(false);
            Judged::Fail(ProxyError::GatewayTimeout)
        }
        Err(e) => {
            lease.record(false);
            if caused_by_body_limit(&e) {
                return Judged::Fail(ProxyError::PayloadTooLarge);
            }
            let err = ProxyError::BadGateway(format!("{}: {e:?}", target.url));
            // Only requests that may be replayed get a next attempt.
            if e.is_retryable() && !last {
                Judged::Retry(err)
            } else {
                Judged::Fail(err)
            }
        }
        Ok((res, fields)) => {
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
                return Judged::Retry(ProxyError::BadGateway(format!("{}: {status}", target.url)));
            }
            Judged::Answer(res, fields)
        }
    }
}

/// The target's answer for the client: a WebSocket upgrade is joined to
/// the client's connection; any other body runs under the API's idle
/// timeout and holds the target's lease until it ends.
fn answer(
    up: &Upstream<'_>,
    mut res: Response<Either<conn_pool::UpstreamBody, ProxyBody>>,
    fields: Option<UpstreamFields>,
    lease: Lease,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Answer<ProxyBody> {
    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            // What follows on the client's connection is not HTTP/1: the
            // framing guard stops there.
            up.cx.conn.verdicts.upgraded();
            let upstream_upgrade = hyper::upgrade::on(&mut res);
            tokio::spawn(async move {
                if let (Ok(a), Ok(b)) = (client_upgrade.await, upstream_upgrade.await) {
                    let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
            });
            let (mut parts, _) = res.into_parts();
            let up = parts.headers.remove(header::UPGRADE);
            headers::strip_hop_by_hop(&mut parts.headers);
            if let Some(up) = up {
                parts.headers.insert(header::UPGRADE, up);
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            }
            return Response::from_parts(parts, body::empty()).into();
        }
    }
    let (mut parts, incoming) = res.into_parts();
    let codings = codings_besides_chunked(
        parts
            .headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(codings) = codings {
        // The body is still coded: the client must be told.
        parts.headers.insert(header::TRANSFER_ENCODING, codings);
    }
    let idle = Duration::from_millis(up.pool.config.idle_timeout_ms);
    let incoming = IdleBody::new(incoming, idle);
    Answer {
        res: Response::from_parts(parts, Holding::wrap(incoming, lease)),
        upstream: fields,
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
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
