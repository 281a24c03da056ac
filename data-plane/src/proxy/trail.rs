//! What the request path learned about one request (`Trail`), and
//! `finish`: the route's metrics and the access log line, now if the
//! body's size is known, else when the body has been sent (or dropped).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};

use super::facts::HeadFacts;
use crate::access_log::{AccessLog, LineWriter};
use crate::auth;
use crate::body::{BoxError, ProxyBody};
use crate::error::ProxyError;
use crate::gateway::Gateway;
use crate::metrics::{method_index, CacheStatus, RouteMetrics};
use crate::router::CompiledApi;
use crate::trace::TraceCtx;
use crate::upstream::UpstreamPool;

/// What the request path learned about one request, for the metrics and
/// the access log.
pub(super) struct Trail {
    pub start: Instant,
    pub method: Method,
    /// Kept only for the access log: a copy costs a reference count.
    pub uri: Option<Uri>,
    pub trace: TraceCtx,
    /// The API and route index, once matched.
    pub route: Option<(Arc<CompiledApi>, usize)>,
    pub identity: Option<auth::Identity>,
    /// The target of the last upstream attempt.
    pub upstream: Option<(Arc<UpstreamPool>, usize)>,
    pub upstream_us: Option<u64>,
    pub cache: Option<CacheStatus>,
    /// The plan's figures, for a response that passed it (its `RateLimit-*`
    /// fields; see `Served`).
    pub rate: Option<crate::plans::RateInfo>,
    pub reason: Option<&'static str>,
    pub bytes_in: u64,
    /// The deployment that serves the request, once a stage's side is
    /// chosen (`x-tollgate-deployment`).
    pub deployment: Option<HeaderValue>,
}

impl Trail {
    pub fn new<B>(req: &Request<B>, facts: &HeadFacts, logged: bool) -> Self {
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
            deployment: None,
        }
    }

    /// The response for an error, noting why.
    pub fn fail(&mut self, e: ProxyError, id: &HeaderValue) -> Response<ProxyBody> {
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

/// Count the request and log it: now if the body's size is known, else
/// when the body has been sent (or dropped).
pub(super) fn finish(
    gw: &Gateway,
    trail: Trail,
    id: &HeaderValue,
    res: Response<ProxyBody>,
) -> Response<ProxyBody> {
    // One clock read for the latency and the live-traffic window.
    let now = Instant::now();
    let total_us = now.saturating_duration_since(trail.start).as_micros() as u64;
    let status = res.status().as_u16();
    let m = trail.metrics(gw);
    m.record(
        method_index(&trail.method),
        status,
        total_us,
        trail.upstream_us,
    );
    m.traffic.record(now, status, total_us);
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
