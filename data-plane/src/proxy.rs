//! The request path. Phases, in order (ARCHITECTURE.md has the long form):
//!
//! 1. `admit`: framing and size limits the HTTP parser leaves to us.
//! 2. `route`: host, longest base path, template, method (404/405).
//! 3. `auth::cors`: CORS preflights are answered by the gateway; then the
//!    API's IP lists and the route's auth policy (`auth`). Identity headers
//!    replace whatever the client said about itself.
//! 4. `plan_phase`: the caller's usage plan (throttle, quota, metering).
//! 5. `mock` routes answer here.
//! 6. `cached` (routes with `cache`): a stored response, or one upstream
//!    fetch shared by every concurrent miss of the key (`cache`). After the
//!    plan phase, so a hit is still authorised, throttled and billed.
//! 7. `forward`: pick a target, send with a deadline, retry what is safe to
//!    retry, pass the response (or the WebSocket upgrade) back.
//!
//! Every response, error or not, carries `x-request-id`. Each request has a
//! `Trail` (what it matched, who called, which target, how long it took);
//! `finish` turns it into the route's metrics and the access log line.
//! Each phase runs in a debug-level `tracing` span under the `request`
//! span, which joins the caller's W3C trace (`trace`).

use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Scheme;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Either, Limited};
use hyper_util::rt::TokioIo;
use tracing::Instrument;

use crate::auth;

use crate::access_log::{AccessLog, LineWriter};
use crate::body::{self, BoxError, Holding, ProxyBody, RequestBody};
use crate::cache::{self, FillError, X_CACHE};
use crate::error::ProxyError;
use crate::gateway::{Gateway, Snapshot};
use crate::http1::client::{self as conn_pool, SendError};
use crate::http1::fields::Answer;
use crate::http1::guard::Verdicts;
pub use crate::http1::server::Served;
use crate::http1::syntax::{codings_besides_chunked, lists_token, HOP_BY_HOP, X_REQUEST_ID};
use crate::http1::timeouts::IdleBody;
pub use crate::http1::Limits;
use crate::metrics::{method_index, AuthFailure, CacheStatus, RouteMetrics};
use crate::router::{CompiledApi, RouteError, RouteMatch};
use crate::trace::{self, TraceCtx};
use crate::upstream::UpstreamPool;

/// What the request path knows about the connection a request came on.
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// `remote`'s IP as a header value, made once per connection.
    pub remote_ip: HeaderValue,
    pub tls: bool,
    /// The framing guard's verdict on each request head hyper parses.
    pub verdicts: Arc<Verdicts>,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// What the request path reads from the client's header fields, found in
/// one pass over them: a lookup for each would hash its name every time.
#[derive(Default)]
struct HeadFacts {
    host: Option<HeaderValue>,
    hosts: usize,
    /// The `Content-Length`, if it is a number.
    content_length: Option<u64>,
    upgrade: Option<HeaderValue>,
    /// `Connection` lists `upgrade`.
    connection_upgrade: bool,
    request_id: Option<HeaderValue>,
    traceparent: Option<HeaderValue>,
    /// Names and values, for the header size limit.
    field_bytes: usize,
}

impl HeadFacts {
    fn scan(h: &HeaderMap) -> Self {
        let mut facts = HeadFacts::default();
        let mut length_seen = false;
        for (name, value) in h {
            facts.field_bytes += name.as_str().len() + value.len();
            if *name == header::HOST {
                facts.hosts += 1;
                facts.host.get_or_insert_with(|| value.clone());
            } else if *name == header::CONTENT_LENGTH && !std::mem::replace(&mut length_seen, true)
            {
                facts.content_length = value.to_str().ok().and_then(|v| v.parse().ok());
            } else if *name == header::UPGRADE {
                facts.upgrade.get_or_insert_with(|| value.clone());
            } else if *name == header::CONNECTION {
                facts.connection_upgrade |= lists_token(value.as_bytes(), b"upgrade");
            } else if *name == X_REQUEST_ID {
                facts.request_id.get_or_insert_with(|| value.clone());
            } else if *name == TRACEPARENT {
                facts.traceparent.get_or_insert_with(|| value.clone());
            }
        }
        facts
    }
}

fn request_id(facts: &HeadFacts) -> HeaderValue {
    facts
        .request_id
        .as_ref()
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .cloned()
        .unwrap_or_else(|| {
            let mut hex = [0u8; 32];
            trace::hex(&mut hex, &trace::random_id().to_be_bytes());
            HeaderValue::from_bytes(&hex).expect("hex is a valid header")
        })
}

/// What the request path learned about one request, for the metrics and
/// the access log.
pub struct Trail {
    start: Instant,
    method: Method,
    /// Kept only for the access log: a copy costs a reference count.
    uri: Option<Uri>,
    trace: TraceCtx,
    /// The API and route index, once matched.
    route: Option<(Arc<CompiledApi>, usize)>,
    identity: Option<auth::Identity>,
    /// The target of the last upstream attempt.
    upstream: Option<(Arc<UpstreamPool>, usize)>,
    upstream_us: Option<u64>,
    cache: Option<CacheStatus>,
    /// The plan's figures, for a response that passed it (its `RateLimit-*`
    /// fields; see `Served`).
    rate: Option<crate::plans::RateInfo>,
    reason: Option<&'static str>,
    bytes_in: u64,
}

impl Trail {
    fn new<B>(req: &Request<B>, facts: &HeadFacts, logged: bool) -> Self {
        Self {
            start: Instant::now(),
            method: req.method().clone(),
            uri: logged.then(|| req.uri().clone()),
            trace: TraceCtx::from_header(facts.traceparent.as_ref()),
            route: None,
            identity: None,
            upstream: None,
            upstream_us: None,
            cache: None,
            rate: None,
            reason: None,
            bytes_in: 0,
        }
    }

    /// The response for an error, noting why.
    fn fail(&mut self, e: ProxyError, id: &HeaderValue) -> Response<ProxyBody> {
        if e.status().is_server_error() {
            tracing::debug!(request_id = ?id, error = %e, "request failed");
        }
        self.reason = Some(e.reason());
        e.into_response()
    }

    fn metrics<'a>(&'a self, gw: &'a Gateway) -> &'a Arc<RouteMetrics> {
        match &self.route {
            Some((api, i)) => &api.routes[*i].metrics,
            None => &gw.metrics.unmatched,
        }
    }

    /// The access log line.
    fn line(&self, id: &HeaderValue, status: u16, total_us: u64, bytes_out: u64) -> String {
        let mut w = LineWriter::new();
        let (api, route) = match &self.route {
            Some((a, i)) => (Some(a.doc.id.as_str()), Some(a.routes[*i].doc.id.as_str())),
            None => (None, None),
        };
        let who = self.identity.as_ref();
        // When the request came: read only for a line actually logged.
        let at = SystemTime::now()
            .checked_sub(self.start.elapsed())
            .unwrap_or(UNIX_EPOCH);
        w.time("time", at)
            .str("request_id", id.to_str().unwrap_or(""))
            .hex128("trace_id", self.trace.trace_id)
            .opt_str("api", api)
            .opt_str("route", route)
            .str("method", self.method.as_str())
            .str("path", self.uri.as_ref().map_or("", Uri::path))
            .u64("status", u64::from(status))
            .opt_str("key_id", who.and_then(|i| i.key_id()))
            .opt_str("subject", who.and_then(|i| i.subject.as_deref()))
            .opt_str("tenant", who.and_then(|i| i.tenant()))
            .opt_str(
                "upstream",
                self.upstream
                    .as_ref()
                    .map(|(p, i)| p.targets[*i].url.as_str()),
            )
            .ms("latency_ms", Some(total_us))
            .ms("upstream_latency_ms", self.upstream_us)
            .u64("bytes_in", self.bytes_in)
            .u64("bytes_out", bytes_out)
            .opt_str("cache", self.cache.map(CacheStatus::as_str))
            .opt_str("reason", self.reason);
        w.finish()
    }
}

/// Serve one request. Never fails: errors become responses.
pub async fn serve(
    gw: &Gateway,
    conn: &ConnInfo,
    limits: &Limits,
    req: Request<RequestBody>,
) -> Served {
    let facts = HeadFacts::scan(req.headers());
    let id = request_id(&facts);
    let mut trail = Trail::new(&req, &facts, gw.access_log().is_some());
    let span = tracing::debug_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        api = tracing::field::Empty,
        route = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    trail.trace.link(&span);
    // What `.instrument(span)` does, without moving the future into a
    // wrapper: it is built where it is polled (see `guarded`).
    let res = {
        let mut handling = pin!(handle(
            gw, conn, limits, &facts, &id, &mut trail, &span, req
        ));
        std::future::poll_fn(|cx| span.in_scope(|| handling.as_mut().poll(cx))).await
    };
    let Answer { mut res, upstream } = match res {
        Ok(answer) => answer,
        Err(e) => trail.fail(e, &id).into(),
    };
    if let Some(c) = trail.cache {
        res.headers_mut()
            .insert(X_CACHE.clone(), HeaderValue::from_static(c.as_str()));
    }
    span.record("status", res.status().as_u16());
    let rate = trail.rate.take();
    Served {
        answer: Answer {
            res: finish(gw, trail, &id, res),
            upstream,
        },
        request_id: id,
        counters: rate.as_ref().map(crate::error::rate_fields),
    }
}

/// Count the request and log it: now if the body's size is known, else
/// when the body has been sent (or dropped).
fn finish(
    gw: &Gateway,
    trail: Trail,
    id: &HeaderValue,
    res: Response<ProxyBody>,
) -> Response<ProxyBody> {
    let total_us = trail.start.elapsed().as_micros() as u64;
    let status = res.status().as_u16();
    let m = trail.metrics(gw);
    m.record(
        method_index(&trail.method),
        status,
        total_us,
        trail.upstream_us,
    );
    m.add_bytes_in(trail.bytes_in);
    if let Some(c) = trail.cache {
        m.cache(c);
    }
    match res.body().size_hint().exact() {
        Some(n) => {
            m.add_bytes_out(n);
            if let Some(log) = gw.access_log() {
                log.send(trail.line(id, status, total_us, n));
            }
            res
        }
        None => {
            let (m, log) = (m.clone(), gw.access_log().cloned());
            let (parts, inner) = res.into_parts();
            let body = Counted {
                inner,
                sent: 0,
                done: Some(Box::new(Pending {
                    trail,
                    id: id.clone(),
                    status,
                    total_us,
                    metrics: m,
                    log,
                })),
            };
            Response::from_parts(parts, http_body_util::BodyExt::boxed(body))
        }
    }
}

/// What is left to record once a streamed body ends.
struct Pending {
    trail: Trail,
    id: HeaderValue,
    status: u16,
    total_us: u64,
    metrics: Arc<RouteMetrics>,
    log: Option<Arc<AccessLog>>,
}

/// A response body of unknown size: counts the bytes sent, then records.
struct Counted {
    inner: ProxyBody,
    sent: u64,
    done: Option<Box<Pending>>,
}

impl Counted {
    fn record(&mut self) {
        if let Some(p) = self.done.take() {
            p.metrics.add_bytes_out(self.sent);
            if let Some(log) = &p.log {
                log.send(p.trail.line(&p.id, p.status, p.total_us, self.sent));
            }
        }
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.sent += d.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.record(),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.record();
    }
}

/// `span`: the request's, to note the API and route on (`Span::current`
/// would look it up in the subscriber).
#[allow(clippy::too_many_arguments)]
async fn handle(
    gw: &Gateway,
    conn: &ConnInfo,
    limits: &Limits,
    facts: &HeadFacts,
    id: &HeaderValue,
    trail: &mut Trail,
    span: &tracing::Span,
    req: Request<RequestBody>,
) -> Result<Answer<ProxyBody>, ProxyError> {
    admit(conn, limits, &req, facts)?;
    let snapshot = gw.snapshot();
    let host_value = request_host(&req, facts);
    let host = host_value
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let matched = {
        let _route = tracing::debug_span!("route").entered();
        if let Some(res) = auth::cors::answer_preflight(&snapshot.routes, host, &req) {
            return Ok(res.into());
        }
        snapshot
            .routes
            .find(host, req.uri().path(), req.method())
            .map_err(|e| match e {
                RouteError::NotFound => ProxyError::NotFound,
                RouteError::MethodNotAllowed { allow } => ProxyError::MethodNotAllowed { allow },
            })?
    };
    let api = matched.api.clone();
    trail.route = Some((api.clone(), matched.route));
    span.record("api", api.doc.id.as_str());
    span.record("route", matched.route().doc.id.as_str());
    let origin = api
        .doc
        .cors
        .as_ref()
        .and_then(|_| req.headers().get(header::ORIGIN).cloned());
    let res = pin!(guarded(
        gw, &snapshot, conn, limits, facts, id, host, matched, req, trail,
    ))
    .await;
    let Some(cors) = &api.doc.cors else {
        return res;
    };
    // CORS headers go on every response of the API, errors included.
    let mut answer = res.unwrap_or_else(|e| trail.fail(e, id).into());
    auth::cors::decorate(cors, origin.as_ref(), &mut answer);
    Ok(answer)
}

/// The phases after the route matched: IP lists, authentication, the
/// plan, then a mock answer, the cache or the upstream.
#[allow(clippy::too_many_arguments)]
async fn guarded(
    gw: &Gateway,
    snapshot: &Snapshot,
    conn: &ConnInfo,
    limits: &Limits,
    facts: &HeadFacts,
    id: &HeaderValue,
    host: &str,
    matched: RouteMatch,
    mut req: Request<RequestBody>,
    trail: &mut Trail,
) -> Result<Answer<ProxyBody>, ProxyError> {
    let api = &matched.api.doc;
    let route = matched.route();
    trail.bytes_in = facts.content_length.unwrap_or(0);
    // Only routes with a JWT authorizer build (and move) the
    // authentication future: API keys are checked without waiting. The
    // phase's span is there either way.
    let has_authorizer = route.doc.auth_policy(api).authorizer.is_some();
    let auth_span = tracing::debug_span!("auth");
    let identity = match auth_span.in_scope(|| snapshot.auth.check_ip(&api.id, conn.remote.ip())) {
        Err(e) => Err(e),
        Ok(()) if !has_authorizer => auth_span.in_scope(|| {
            snapshot
                .auth
                .authenticate_key(api, &route.doc, req.headers())
        }),
        // Boxed: only these routes pay for its size (about 1 KiB). Built
        // in a statement of its own, so the unboxed temporary is not kept
        // in this future's state across the wait.
        Ok(()) => {
            let authenticating = Box::pin(
                snapshot
                    .auth
                    .authenticate(api, &route.doc, req.headers())
                    .instrument(auth_span),
            );
            authenticating.await
        }
    };
    let identity = match identity {
        Ok(i) => i,
        Err(e) => {
            match e {
                ProxyError::Unauthorized => route.metrics.auth_failure(AuthFailure::Unauthorized),
                ProxyError::Forbidden => route.metrics.auth_failure(AuthFailure::Forbidden),
                _ => {}
            }
            return Err(e);
        }
    };
    // Only key callers have a plan.
    let plan_span = tracing::debug_span!("plan");
    let rate = if identity.key.is_some() {
        plan_phase(gw, &identity).instrument(plan_span).await
    } else {
        plan_span.in_scope(|| Ok(None))
    };
    let rate = match rate {
        Ok(r) => r,
        Err(e) => {
            trail.identity = Some(identity);
            return Err(e);
        }
    };
    let res = if let Some(mock) = &route.doc.mock {
        trail.identity = Some(identity);
        mock_response(mock).into()
    } else {
        let pool =
            matched.api.upstream.clone().ok_or_else(|| {
                ProxyError::BadGateway("route has neither mock nor upstream".into())
            })?;
        // Routes with a cache: the config and what to do with this request.
        let caching = route.doc.cache.as_ref().filter(|c| c.ttl_s > 0).map(|cfg| {
            let policy = route.doc.auth_policy(api);
            let epoch = snapshot.cache_epoch(&api.id);
            let plan = cache::plan(
                cfg,
                policy,
                &api.id,
                epoch,
                &route.doc.id,
                host,
                &req,
                &identity,
            );
            (cfg, plan)
        });
        auth::prepare_upstream_headers(req.headers_mut(), &identity);
        trail.identity = Some(identity);
        let up = Upstream {
            gw,
            conn,
            limits,
            facts,
            id,
            host,
            matched: &matched,
            pool: &pool,
        };
        // `forward` is built in place (`pin!`): a future awaited as
        // `f(..).await` is built, then moved into its parent's state, at
        // every level of the request path; pinned where it is made, it is
        // never copied. `cached` is boxed: only cached routes pay for its
        // size.
        match caching {
            Some((cfg, cache::Plan::Lookup { key, refresh })) => {
                let caching = Box::pin(cached(&up, cfg, key, refresh, req, trail));
                caching.await?
            }
            bypass => {
                if bypass.is_some() {
                    trail.cache = Some(CacheStatus::Bypass);
                }
                pin!(forward(&up, req, trail)).await?
            }
        }
    };
    trail.rate = rate;
    Ok(res)
}

/// What `forward` needs besides the request.
#[derive(Clone, Copy)]
struct Upstream<'a> {
    gw: &'a Gateway,
    conn: &'a ConnInfo,
    limits: &'a Limits,
    facts: &'a HeadFacts,
    id: &'a HeaderValue,
    host: &'a str,
    matched: &'a RouteMatch,
    pool: &'a Arc<UpstreamPool>,
}

impl Upstream<'_> {
    /// Read a response into a cache entry, if it may be stored. Callers
    /// may be waiting on it, so the body gets the upstream's timeout too.
    async fn collect(
        &self,
        res: Answer<ProxyBody>,
        cfg: &tollgate_model::docs::CacheConfig,
    ) -> Result<Arc<cache::CachedResponse>, FillError> {
        let limit = Duration::from_millis(self.pool.config.timeout_ms);
        tokio::time::timeout(limit, cache::collect(res, cfg))
            .await
            .unwrap_or(Err(FillError::Failed(ProxyError::GatewayTimeout)))
    }
}

/// Phase 6: serve from the cache, or fetch once for every concurrent miss
/// of `key` and store what may be stored.
async fn cached(
    up: &Upstream<'_>,
    cfg: &tollgate_model::docs::CacheConfig,
    key: Arc<str>,
    refresh: bool,
    req: Request<RequestBody>,
    trail: &mut Trail,
) -> Result<Answer<ProxyBody>, ProxyError> {
    let cache = &up.gw.cache;
    let span = tracing::debug_span!("cache", result = tracing::field::Empty);
    if refresh {
        // The client asked for a fresh answer and the route allows it.
        trail.cache = Some(CacheStatus::Miss);
        span.record("result", "refresh");
        let res = forward(up, req, trail).await?;
        return match up.collect(res, cfg).await {
            Ok(entry) => {
                cache.insert(key, entry.clone()).await;
                Ok(entry.respond(false).into())
            }
            Err(FillError::Unstorable(slot)) => Ok(take_response(&slot).into()),
            Err(FillError::Failed(e)) => Err(e),
        };
    }
    if let Some(hit) = cache.get(&key).instrument(span.clone()).await {
        trail.cache = Some(CacheStatus::Hit);
        span.record("result", "hit");
        return Ok(hit.respond(true).into());
    }
    let leader = AtomicBool::new(false);
    let mut slot = Some(req);
    let filled = {
        let fill = async {
            leader.store(true, Ordering::Relaxed);
            let req = slot.take().expect("only one fill per call");
            let res = forward(up, req, trail).await.map_err(FillError::Failed)?;
            up.collect(res, cfg).await
        };
        cache.get_or_fill(key, fill).instrument(span.clone()).await
    };
    let leader = leader.load(Ordering::Relaxed);
    match filled {
        Ok((entry, _)) => {
            // A caller that waited for another's fetch got a hit.
            let status = if leader {
                CacheStatus::Miss
            } else {
                CacheStatus::Hit
            };
            trail.cache = Some(status);
            span.record("result", status.as_str());
            Ok(entry.respond(!leader).into())
        }
        Err(e) => {
            trail.cache = Some(CacheStatus::Miss);
            span.record("result", "miss");
            match &*e {
                FillError::Failed(err) => Err(err.clone()),
                FillError::Unstorable(slot_res) if leader => Ok(take_response(slot_res).into()),
                // Another caller fetched a response that may not be
                // shared: fetch our own.
                FillError::Unstorable(_) => {
                    let req = slot.take().expect("a waiter still has its request");
                    forward(up, req, trail).await
                }
            }
        }
    }
}

fn take_response(slot: &std::sync::Mutex<Option<Response<ProxyBody>>>) -> Response<ProxyBody> {
    slot.lock()
        .expect("response slot")
        .take()
        .unwrap_or_else(|| ProxyError::BadGateway("response already taken".into()).into_response())
}

/// Phase 4: the usage plan of a key caller (the first of the key's plans
/// that grants this API): throttle, quota, metering. Callers without a key
/// have no plan.
async fn plan_phase(
    gw: &Gateway,
    identity: &auth::Identity,
) -> Result<Option<crate::plans::RateInfo>, ProxyError> {
    // The key and its plan as authentication found them: no second lookup.
    let (Some(key), Some(plan), Some(plans)) = (&identity.key, &identity.plan, gw.plans()) else {
        return Ok(None);
    };
    plans.admit(&key.id, plan).await.map_err(|d| match d {
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
fn admit(
    conn: &ConnInfo,
    limits: &Limits,
    req: &Request<RequestBody>,
    facts: &HeadFacts,
) -> Result<(), ProxyError> {
    conn.verdicts.take()?;
    if facts.hosts > 1 {
        return Err(ProxyError::BadFraming("more than one Host header"));
    }
    if uri_len(req.uri()) > limits.max_uri_bytes {
        return Err(ProxyError::UriTooLong);
    }
    if facts.field_bytes > limits.max_header_bytes || req.headers().len() > limits.max_headers {
        return Err(ProxyError::HeadersTooLarge);
    }
    if facts
        .content_length
        .is_some_and(|n| n > limits.max_body_bytes as u64)
    {
        return Err(ProxyError::PayloadTooLarge);
    }
    Ok(())
}

/// The length of the URI as sent, without formatting it.
fn uri_len(uri: &Uri) -> usize {
    let pq = uri.path_and_query().map_or(0, |p| p.as_str().len());
    match (uri.scheme_str(), uri.authority()) {
        (Some(s), Some(a)) => s.len() + "://".len() + a.as_str().len() + pq,
        (None, Some(a)) => a.as_str().len() + pq,
        _ => pq,
    }
}

/// The host the request is for: the authority of an absolute-form or
/// HTTP/2 request, else the Host header (a cheap clone, not a copy).
fn request_host(req: &Request<RequestBody>, facts: &HeadFacts) -> Option<HeaderValue> {
    match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => facts.host.clone(),
    }
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
fn wanted_upgrade(req: &Request<RequestBody>, facts: &HeadFacts) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 || !facts.connection_upgrade {
        return None;
    }
    let up = facts.upgrade.as_ref()?;
    (!up.as_bytes().eq_ignore_ascii_case(b"h2c")).then(|| up.clone())
}

/// Remove hop-by-hop headers, including those named by `Connection`.
/// `te: trailers` survives: gRPC needs it end to end.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages have none: one pass over the names (comparisons of
    // standard names are cheap) saves hashing each of them for `remove`.
    if !h.keys().any(|k| HOP_BY_HOP.contains(&k)) {
        return;
    }
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
    for n in HOP_BY_HOP {
        h.remove(n);
    }
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Drop the client's header names with `_`: all of them by default (as
/// nginx does), and with `allow_underscore_headers` those that, with `_`
/// read as `-` (as CGI, WSGI and PHP upstreams read them), name framing or
/// a field the gateway sets. Otherwise `x_tollgate_tenant` would reach a
/// PHP upstream as the caller's tenant, and `Transfer_Encoding` as framing.
fn drop_underscore_names(h: &mut HeaderMap, allow: bool) {
    // Most requests have none: one scan of the names, no allocation.
    if !h.keys().any(|k| k.as_str().contains('_')) {
        return;
    }
    let dropped: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().contains('_') && (!allow || reads_as_reserved(k.as_str())))
        .cloned()
        .collect();
    for name in dropped {
        tracing::debug!(header = name.as_str(), "dropped a header name with `_`");
        h.remove(name);
    }
}

/// Whether `name`, with `_` read as `-`, is a framing field or one the
/// gateway sets (names in a `HeaderMap` are lower case already).
fn reads_as_reserved(name: &str) -> bool {
    let read = name.replace('_', "-");
    const FRAMING: [&str; 7] = [
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "upgrade",
        "te",
        "trailer",
    ];
    const GATEWAY: [&str; 4] = [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
    ];
    FRAMING.contains(&read.as_str())
        || GATEWAY.contains(&read.as_str())
        || read.starts_with("x-tollgate-")
        || HOP_BY_HOP.iter().any(|n| n.as_str() == read)
}

/// Which of the headers the gateway sets on the way up the client sent
/// too: one pass over the names, instead of a lookup for each.
#[derive(Default)]
struct Sent {
    forwarded_for: bool,
    forwarded_proto: bool,
    forwarded_host: bool,
    request_id: bool,
    traceparent: bool,
}

impl Sent {
    fn scan(h: &HeaderMap) -> Self {
        let mut sent = Sent::default();
        for name in h.keys() {
            let flag = if *name == X_FORWARDED_FOR {
                &mut sent.forwarded_for
            } else if *name == X_FORWARDED_PROTO {
                &mut sent.forwarded_proto
            } else if *name == X_FORWARDED_HOST {
                &mut sent.forwarded_host
            } else if *name == X_REQUEST_ID {
                &mut sent.request_id
            } else if *name == TRACEPARENT {
                &mut sent.traceparent
            } else {
                continue;
            };
            *flag = true;
        }
        sent
    }
}

/// Headers for the target that the request's map does not have (so
/// writing them after the map's is the same as inserting them). Borrowed:
/// our codec writes them from where they are, and only hyper_util's client
/// needs copies.
#[derive(Default)]
struct Added<'a> {
    fields: [Option<(&'static HeaderName, &'a HeaderValue)>; 5],
    len: usize,
}

impl<'a> Added<'a> {
    fn push(&mut self, name: &'static HeaderName, value: &'a HeaderValue) {
        self.fields[self.len] = Some((name, value));
        self.len += 1;
    }

    fn as_slice(&self) -> &[Option<(&'static HeaderName, &'a HeaderValue)>] {
        &self.fields[..self.len]
    }

    fn insert_into(&self, h: &mut HeaderMap) {
        h.reserve(self.len);
        for (name, value) in self.as_slice().iter().flatten() {
            h.insert(*name, (*value).clone());
        }
    }
}

static HTTP: HeaderValue = HeaderValue::from_static("http");
static HTTPS: HeaderValue = HeaderValue::from_static("https");

fn append_forwarded_for(h: &mut HeaderMap, ip: &HeaderValue) {
    let value = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => {
            let joined = format!("{prev}, {}", ip.to_str().unwrap_or_default());
            match HeaderValue::from_str(&joined) {
                Ok(v) => v,
                Err(_) => return,
            }
        }
        None => ip.clone(),
    };
    h.insert(X_FORWARDED_FOR.clone(), value);
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

/// How one upstream attempt goes out.
// One lives per attempt inside `forward`'s (boxed) future; boxing the
// request would cost an allocation per unpooled attempt for nothing.
#[allow(clippy::large_enum_variant)]
enum Via<'a> {
    /// Our HTTP/1.1 codec, on this thread's connections, with this body.
    Pool(&'a Bytes),
    /// hyper_util's client, with the request built for it.
    Client(Request<ProxyBody>),
}

async fn forward(
    up: &Upstream<'_>,
    mut req: Request<RequestBody>,
    trail: &mut Trail,
) -> Result<Answer<ProxyBody>, ProxyError> {
    let Upstream {
        gw,
        conn,
        limits,
        facts,
        id,
        host,
        matched,
        pool,
    } = *up;
    // Its span id is the parent id the upstream sees in `traceparent`.
    let span = tracing::debug_span!(
        "upstream",
        target = tracing::field::Empty,
        status = tracing::field::Empty
    );
    let upgrade = wanted_upgrade(&req, facts);
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
    drop_underscore_names(&mut headers, matched.api.doc.allow_underscore_headers);
    // `x-api-key` is already gone: `prepare_upstream_headers` ran. The
    // client's Host stays in the map (removing it costs a hash and a
    // shuffle of the map): our codec skips it, and hyper_util's client
    // gets a map without it. More than one Host was refused (`admit`).
    // The headers the gateway sets. Those the client did not send (the
    // usual case) are kept aside, not inserted: our codec writes them after
    // the map's, which saves hashing each into it; hyper_util's client gets
    // them inserted.
    let sent = Sent::scan(&headers);
    // The Host header as it came, unless the request line (absolute form)
    // or HTTP/2's authority named the host.
    let named_host;
    let forwarded_host = match &facts.host {
        _ if sent.forwarded_host => None,
        Some(v) if parts.uri.authority().is_none() => Some(v),
        _ => {
            named_host = HeaderValue::from_str(host).ok();
            named_host.as_ref()
        }
    };
    let traceparent = trail.trace.header(trace::child_span_id(&span));
    let mut added = Added::default();
    if sent.forwarded_for {
        append_forwarded_for(&mut headers, &conn.remote_ip);
    } else {
        added.push(&X_FORWARDED_FOR, &conn.remote_ip);
    }
    if !sent.forwarded_proto {
        added.push(&X_FORWARDED_PROTO, if conn.tls { &HTTPS } else { &HTTP });
    }
    if let Some(v) = forwarded_host {
        added.push(&X_FORWARDED_HOST, v);
    }
    if sent.request_id {
        headers.insert(X_REQUEST_ID.clone(), id.clone());
    } else {
        added.push(&X_REQUEST_ID, id);
    }
    if sent.traceparent {
        headers.insert(TRACEPARENT.clone(), traceparent.clone());
    } else {
        added.push(&TRACEPARENT, &traceparent);
    }
    if let Some(up) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, up.clone());
    }

    let retries = pool.config.retries as usize;
    let limited = Limited::new(incoming, limits.max_body_bytes);
    // A body can be sent again only if we kept it; keep it when a retry is
    // possible (idempotent methods), and keep small ones so they can go
    // through this thread's pool. Stream the rest.
    let replayable = is_idempotent(&method) && retries > 0 && upgrade.is_none();
    let small = upgrade.is_none()
        && !grpc
        && facts
            .content_length
            .is_some_and(|n| n <= conn_pool::SMALL_BODY);
    let mut buffered: Option<Bytes> = None;
    let mut streaming = None;
    if upgrade.is_none() && limited.is_end_stream() {
        // No body (most GETs): nothing to read or keep.
        buffered = Some(Bytes::new());
    } else if replayable || small {
        buffered = Some(match limited.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(ProxyError::PayloadTooLarge)
            }
            // The client's body failed: a malformed chunked body, or the
            // client went away. Either way the fault is the client's.
            Err(e) => {
                tracing::debug!(error = %e, "reading the request body failed");
                return Err(ProxyError::BadFraming("malformed request body"));
            }
        });
        trail.bytes_in = buffered.as_ref().map_or(0, |b| b.len() as u64);
    } else {
        streaming = Some(body::boxed(limited));
    }

    let query = parts.uri.query();
    let upstream_path = matched.upstream_path(parts.uri.path());
    let sent_at = Instant::now();
    let deadline =
        tokio::time::Instant::from_std(sent_at) + Duration::from_millis(pool.config.timeout_ms);
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
        // Plain HTTP/1.1 with the body in hand goes through this thread's
        // own pool; the rest through hyper_util's client.
        let attempt_via = match &buffered {
            Some(body) if !grpc && target.scheme == Scheme::HTTP => Via::Pool(body),
            _ => {
                let mut path_and_query = String::with_capacity(
                    target.base_path.len() + upstream_path.len() + query.map_or(0, |q| q.len() + 1),
                );
                path_and_query.push_str(&target.base_path);
                path_and_query.push_str(upstream_path);
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
                // The last attempt takes the headers; earlier ones need a copy.
                *up.headers_mut() = if last {
                    std::mem::take(&mut headers)
                } else {
                    headers.clone()
                };
                up.headers_mut().remove(header::HOST);
                added.insert_into(up.headers_mut());
                if grpc {
                    *up.version_mut() = Version::HTTP_2;
                }
                Via::Client(up)
            }
        };
        let outcome = pin!(async {
            match attempt_via {
                Via::Pool(body) => {
                    let head = conn_pool::Head {
                        method: &method,
                        path: [&target.base_path, upstream_path],
                        query,
                        host: &target.host_header,
                        headers: &headers,
                        added: added.as_slice(),
                    };
                    let sent = pin!(conn_pool::send(
                        &target.authority,
                        &head,
                        body,
                        sent_at,
                        deadline
                    ))
                    .await;
                    sent.map(|(res, fields)| (res.map(Either::Left), Some(fields)))
                }
                Via::Client(up) => {
                    let sent = gw.clients.for_request(grpc).request(up);
                    match tokio::time::timeout_at(deadline, sent).await {
                        Ok(Ok(res)) => Ok((res.map(|b| Either::Right(body::boxed(b))), None)),
                        Ok(Err(e)) => Err(SendError::Client(e)),
                        Err(_) => Err(SendError::TimedOut),
                    }
                }
            }
        })
        .await;
        trail.upstream_us = Some(sent_at.elapsed().as_micros() as u64);
        match outcome {
            Err(SendError::TimedOut) => {
                lease.record(false);
                return Err(ProxyError::GatewayTimeout);
            }
            Err(e) => {
                lease.record(false);
                if caused_by_body_limit(&e) {
                    return Err(ProxyError::PayloadTooLarge);
                }
                last_err = ProxyError::BadGateway(format!("{}: {e:?}", target.url));
                // Only requests that may be replayed get a next attempt.
                if e.is_retryable() && !last {
                    continue;
                }
                return Err(last_err);
            }
            Ok((mut res, upstream)) => {
                let status = res.status();
                span.record("status", status.as_u16());
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
                        // What follows on the client's connection is not
                        // HTTP/1: the framing guard stops there.
                        conn.verdicts.upgraded();
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
                        return Ok(Response::from_parts(parts, body::empty()).into());
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
                strip_hop_by_hop(&mut parts.headers);
                if let Some(codings) = codings {
                    // The body is still coded: the client must be told.
                    parts.headers.insert(header::TRANSFER_ENCODING, codings);
                }
                let idle = Duration::from_millis(pool.config.idle_timeout_ms);
                let incoming = IdleBody::new(incoming, idle);
                return Ok(Answer {
                    res: Response::from_parts(parts, Holding::wrap(incoming, lease)),
                    upstream,
                });
            }
        }
    }
    Err(last_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underscore_names_are_dropped_unless_allowed_and_never_when_reserved() {
        let map = || {
            let mut h = HeaderMap::new();
            for (n, v) in [
                ("x_tollgate_tenant", "evil-corp"),
                ("x_tollgate_key_id", "k"),
                ("transfer_encoding", "chunked"),
                ("content_length", "1000"),
                ("x_forwarded_for", "1.2.3.4"),
                ("x_request_id", "spoof"),
                ("keep_alive", "1"),
                ("x_custom_thing", "kept when allowed"),
                ("x-normal", "always kept"),
            ] {
                h.insert(HeaderName::from_static(n), HeaderValue::from_static(v));
            }
            h
        };
        let mut h = map();
        drop_underscore_names(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-normal"]);
        let mut h = map();
        drop_underscore_names(&mut h, true);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, vec!["x-normal", "x_custom_thing"]);
    }
}
