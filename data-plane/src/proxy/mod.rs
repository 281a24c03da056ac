//! The request path: one request, phase by phase, around one context.
//!
//! ```text
//!  serve ─ HeadFacts::scan, request id, Trail, span
//!    │
//!    ├─ 1 admit      framing verdict, URI/field/body limits   (facts.rs)
//!    ├─ 2 route      CORS preflight, host → base path → template → method
//!    ├─ 3 identify   IP lists, API key or JWT → Identity
//!    ├─ 4 plan       throttle, quota, metering (key callers)
//!    ├─ 5 mock       routes that answer here
//!    ├─ 6 cached     a stored answer, or one fetch per key    (cached.rs)
//!    └─ 7 forward    fields out, body, attempts, answer back  (forward.rs,
//!    │                                                         headers.rs)
//!  finish ─ metrics, access log (now, or when the body ends)  (trail.rs)
//! ```
//!
//! Every phase gets the request's `RequestCtx` (the gateway, the
//! connection, the limits, what the head said, the request id, the span),
//! and writes what it learns in the request's `Trail`. Every response,
//! error or not, carries `x-request-id`; errors become responses in one
//! place (`ProxyError::into_response`). Each phase runs in a debug-level
//! `tracing` span under the `request` span, which joins the caller's W3C
//! trace (`trace`).
//!
//! Why futures are pinned where they are made (`pin!`) and some boxed: a
//! future awaited as `f(..).await` is built, then moved into its parent's
//! state, at every level of the path; pinned where it is made, it is never
//! copied. Futures only some routes need (JWT authentication, the cache)
//! are boxed, so only those routes pay for their size.

mod cached;
mod facts;
mod forward;
mod function;
mod headers;
mod trail;
mod upgrade;

use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use tracing::Instrument;

use crate::auth;
use crate::body::{self, ProxyBody, RequestBody};
use crate::cache::{self, X_CACHE};
use crate::error::ProxyError;
use crate::gateway::{Gateway, Snapshot};
use crate::http1::fields::Answer;
use crate::http1::guard::Verdicts;
pub use crate::http1::server::Served;
pub use crate::http1::Limits;
use crate::metrics::{AuthFailure, CacheStatus};
use crate::router::RouteMatch;
use crate::upstream::UpstreamPool;
use tollgate_model::websocket::Protocol;

use facts::HeadFacts;
pub use headers::strip_hop_by_hop;
use trail::Trail;

/// What the request path knows about the connection a request came on.
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// `remote`'s IP as a header value, made once per connection.
    pub remote_ip: HeaderValue,
    pub tls: bool,
    /// The framing guard's verdict on each request head hyper parses.
    pub verdicts: Arc<Verdicts>,
}

/// One request's context: what every phase reads. What phases learn goes
/// in the `Trail`, passed beside it (the one thing they write).
#[derive(Clone, Copy)]
struct RequestCtx<'a> {
    gw: &'a Gateway,
    conn: &'a ConnInfo,
    limits: &'a Limits,
    facts: &'a HeadFacts,
    id: &'a HeaderValue,
    /// The request's span, to note the API and route on
    /// (`Span::current` would look it up in the subscriber).
    span: &'a tracing::Span,
}

/// What `forward` needs besides the request: the request's context, and
/// the route and target pool it matched.
#[derive(Clone, Copy)]
struct Upstream<'a> {
    cx: RequestCtx<'a>,
    host: &'a str,
    matched: &'a RouteMatch,
    pool: &'a Arc<UpstreamPool>,
}

/// Serve one request. Never fails: errors become responses.
pub async fn serve(
    gw: &Gateway,
    conn: &ConnInfo,
    limits: &Limits,
    req: Request<RequestBody>,
) -> Served {
    let facts = HeadFacts::scan(req.headers());
    let id = facts::request_id(&facts);
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
    let cx = RequestCtx {
        gw,
        conn,
        limits,
        facts: &facts,
        id: &id,
        span: &span,
    };
    // What `.instrument(span)` does, without moving the future into a
    // wrapper: it is built where it is polled.
    let res = {
        let mut handling = pin!(route(cx, &mut trail, req));
        std::future::poll_fn(|c| span.in_scope(|| handling.as_mut().poll(c))).await
    };
    let Answer { mut res, upstream } = match res {
        Ok(answer) => answer,
        Err(e) => trail.fail(e, &id).into(),
    };
    if let Some(c) = trail.cache {
        res.headers_mut()
            .insert(X_CACHE.clone(), HeaderValue::from_static(c.as_str()));
    }
    if let Some(d) = trail.deployment.take() {
        res.headers_mut().insert(X_TOLLGATE_DEPLOYMENT.clone(), d);
    }
    span.record("status", res.status().as_u16());
    let rate = trail.rate.take();
    Served {
        answer: Answer {
            res: trail::finish(gw, trail, &id, res),
            upstream,
        },
        request_id: id,
        counters: rate.as_ref().map(crate::error::rate_fields),
    }
}

/// Phases 1 and 2: admit, CORS preflight, route; then the rest of the
/// phases, with the API's CORS fields on whatever they answer.
async fn route(
    cx: RequestCtx<'_>,
    trail: &mut Trail,
    req: Request<RequestBody>,
) -> Result<Answer<ProxyBody>, ProxyError> {
    facts::admit(cx.conn, cx.limits, &req, cx.facts)?;
    let snapshot = cx.gw.snapshot();
    let host_value = facts::request_host(&req, cx.facts);
    let host = host_value
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let matched = {
        let _route = tracing::debug_span!("route").entered();
        if let Some(res) = auth::cors::answer_preflight(&snapshot.routes, host, &req) {
            return Ok(res.into());
        }
        snapshot.routes.find(host, req.uri().path(), req.method())?
    };
    let api = matched.api.clone();
    trail.route = Some((api.clone(), matched.route));
    cx.span.record("api", api.doc.id.as_str());
    cx.span.record("route", matched.route().doc.id.as_str());
    let origin = api
        .doc
        .cors
        .as_ref()
        .and_then(|_| req.headers().get(header::ORIGIN).cloned());
    let res = pin!(guarded(cx, &snapshot, host, matched, req, trail)).await;
    let Some(cors) = &api.doc.cors else {
        return res;
    };
    // CORS headers go on every response of the API, errors included.
    let mut answer = res.unwrap_or_else(|e| trail.fail(e, cx.id).into());
    auth::cors::decorate(cors, origin.as_ref(), &mut answer);
    Ok(answer)
}

/// Phases 3 to 7, after the route matched.
async fn guarded(
    cx: RequestCtx<'_>,
    snapshot: &Snapshot,
    host: &str,
    matched: RouteMatch,
    mut req: Request<RequestBody>,
    trail: &mut Trail,
) -> Result<Answer<ProxyBody>, ProxyError> {
    trail.bytes_in = cx.facts.content_length.unwrap_or(0);
    // A WebSocket API's base path answers only a WebSocket handshake.
    let handshake = match matched.api.doc.protocol {
        Protocol::Websocket => Some(crate::websocket::check_handshake(req.headers())?),
        Protocol::Http => None,
    };
    let identity = identify(cx, snapshot, &matched, &req).await?;
    let matched = side(cx, matched, &identity, &req, trail)?;
    let api = &matched.api.doc;
    let route = matched.route();
    // Only key callers have a plan.
    let plan_span = tracing::debug_span!("plan");
    let rate = if identity.key.is_some() {
        let stage_throttle = matched.api.stage.as_ref().and_then(|s| s.throttle.as_ref());
        plan(cx.gw, &identity, stage_throttle)
            .instrument(plan_span)
            .await
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
    if let Some(accept) = handshake {
        let upgrading = Box::pin(upgrade::upgrade(
            cx, &matched, &identity, accept, req, trail,
        ));
        let res = upgrading.await;
        trail.identity = Some(identity);
        trail.rate = rate.filter(|_| res.is_ok());
        return res;
    }
    if let Some(mock) = &route.doc.mock {
        trail.identity = Some(identity);
        trail.rate = rate;
        return Ok(mock_response(mock).into());
    }
    if let Some(f) = &route.doc.function {
        // Boxed: only function routes pay for its size.
        let invoking = Box::pin(function::invoke(
            cx, host, &matched, f, req, &identity, trail,
        ));
        let res = invoking.await;
        trail.identity = Some(identity);
        trail.rate = rate.filter(|_| res.is_ok());
        return res.map(Into::into);
    }
    let pool = matched
        .api
        .upstream
        .clone()
        .ok_or_else(|| ProxyError::BadGateway("route has neither mock nor upstream".into()))?;
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
        cx,
        host,
        matched: &matched,
        pool: &pool,
    };
    let res = match caching {
        Some((cfg, cache::Plan::Lookup { key, refresh })) => {
            let caching = Box::pin(cached::cached(&up, cfg, key, refresh, req, trail));
            caching.await
        }
        bypass => {
            if bypass.is_some() {
                trail.cache = Some(CacheStatus::Bypass);
            }
            pin!(forward::forward(&up, req, trail)).await
        }
    };
    let fallback = route.doc.fallback.as_ref().or(api.fallback.as_ref());
    let res = with_fallback(res, fallback, &route.metrics)?;
    trail.rate = rate;
    Ok(res)
}

/// An error the gateway answers with 502, 503 or 504: the upstream (or
/// every target of it) failed, not the client.
fn is_upstream_failure(e: &ProxyError) -> bool {
    matches!(
        e,
        ProxyError::BadGateway(_) | ProxyError::NoHealthyUpstream | ProxyError::GatewayTimeout
    )
}

/// The route's (else the API's) fallback instead of an upstream failure:
/// an error the gateway would answer with 502/503/504, or a 5xx answer
/// (after the retries). Marked `x-tollgate-fallback: 1`.
fn with_fallback(
    res: Result<Answer<ProxyBody>, ProxyError>,
    fallback: Option<&tollgate_model::docs::Mock>,
    metrics: &crate::metrics::RouteMetrics,
) -> Result<Answer<ProxyBody>, ProxyError> {
    let Some(fallback) = fallback else {
        return res;
    };
    match &res {
        Err(e) if is_upstream_failure(e) => {
            tracing::debug!(error = %e, "upstream failed; answering the fallback");
        }
        Ok(a) if a.res.status().is_server_error() => {
            tracing::debug!(status = %a.res.status(), "upstream failed; answering the fallback");
        }
        _ => return res,
    }
    metrics.fallback();
    let mut answer = mock_response(fallback);
    let h = answer.headers_mut();
    if !h.contains_key(header::CONTENT_TYPE) {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    h.insert(X_TOLLGATE_FALLBACK.clone(), HeaderValue::from_static("1"));
    Ok(answer.into())
}

static X_TOLLGATE_FALLBACK: HeaderName = HeaderName::from_static("x-tollgate-fallback");
static X_TOLLGATE_DEPLOYMENT: HeaderName = HeaderName::from_static("x-tollgate-deployment");

/// Phase 3b, after authentication (so `sticky: key` has the key): on a
/// stage, the side that serves the request, the canary's route when the
/// draw says so, and the deployment noted for every answer from here on.
/// On an API's own path, a route that needs a stage variable is a 500.
fn side(
    cx: RequestCtx<'_>,
    matched: RouteMatch,
    identity: &auth::Identity,
    req: &Request<RequestBody>,
    trail: &mut Trail,
) -> Result<RouteMatch, ProxyError> {
    if matched.api.stage.is_none() {
        if matched.api.route_needs_variables(matched.route) {
            return Err(ProxyError::Misconfigured(format!(
                "route {:?} of api {:?} refers to a stage variable; only its stages define them",
                matched.route().doc.id,
                matched.api.doc.id
            )));
        }
        return Ok(matched);
    }
    // Held apart from `matched`, which the canary's match replaces.
    let api = matched.api.clone();
    let stage = api.stage.as_ref().expect("checked above");
    let matched = match &stage.canary {
        Some(c)
            if crate::stages::takes_canary(
                &stage.stage,
                c,
                identity.key_id(),
                cx.conn.remote.ip(),
            ) =>
        {
            // The canary's deployment may list other addresses (`identify`
            // checked the stage's own).
            let ip = cx.conn.remote.ip();
            if c.api.stage.as_ref().is_some_and(|s| !s.admits(ip)) {
                return Err(ProxyError::Forbidden);
            }
            crate::router::RouteTable::find_in(&c.api, req.uri().path(), req.method())?
        }
        _ => matched,
    };
    // Every answer from here on names the deployment that served it.
    trail.deployment = matched.api.stage.as_ref().map(|s| s.deployment.clone());
    trail.route = Some((matched.api.clone(), matched.route));
    Ok(matched)
}

/// Phase 3: the API's IP lists, then the route's auth policy: who calls.
/// A refusal is counted on the route.
async fn identify(
    cx: RequestCtx<'_>,
    snapshot: &Snapshot,
    matched: &RouteMatch,
    req: &Request<RequestBody>,
) -> Result<auth::Identity, ProxyError> {
    let api = &matched.api.doc;
    let route = matched.route();
    // Only routes with a JWT authorizer build (and move) the
    // authentication future: API keys are checked without waiting. The
    // phase's span is there either way.
    let has_authorizer = route.doc.auth_policy(api).authorizer.is_some();
    let auth_span = tracing::debug_span!("auth");
    let ip_checked = auth_span.in_scope(|| match &matched.api.stage {
        // A stage: its deployment's lists, not the draft's.
        Some(stage) if !stage.admits(cx.conn.remote.ip()) => Err(ProxyError::Forbidden),
        Some(_) => Ok(()),
        None => snapshot.auth.check_ip(&api.id, cx.conn.remote.ip()),
    });
    let identity = match ip_checked {
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
            let facts =
                auth::request::RequestFacts::new(api, &route.doc, req, cx.conn.remote.ip(), cx.id);
            let authenticating = Box::pin(snapshot.auth.authenticate(&facts).instrument(auth_span));
            authenticating.await
        }
    };
    identity.inspect_err(|e| match e {
        ProxyError::Unauthorized => route.metrics.auth_failure(AuthFailure::Unauthorized),
        ProxyError::Forbidden => route.metrics.auth_failure(AuthFailure::Forbidden),
        _ => {}
    })
}

/// Phase 4: the usage plan of a key caller (the first of the key's plans
/// that grants this API): throttle, quota, metering. Callers without a key
/// have no plan.
async fn plan(
    gw: &Gateway,
    identity: &auth::Identity,
    stage_throttle: Option<&tollgate_model::docs::Throttle>,
) -> Result<Option<crate::plans::RateInfo>, ProxyError> {
    // The key and its plan as authentication found them: no second lookup.
    let (Some(key), Some(plan), Some(plans)) = (&identity.key, &identity.plan, gw.plans()) else {
        return Ok(None);
    };
    // A stage's throttle stands in for a plan that sets none.
    let throttle = plan.throttle.as_ref().or(stage_throttle);
    plans
        .admit_under(&key.id, plan, throttle)
        .await
        .map_err(|d| match d {
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
