//! Phase 6: serve from the cache, or fetch once for every concurrent miss
//! of a key and store what may be stored. After the plan phase, so a hit
//! is still authorised, throttled and billed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use tracing::Instrument;

use super::forward::forward;
use super::Trail;
use super::Upstream;
use crate::body::{ProxyBody, RequestBody};
use crate::cache::{self, FillError};
use crate::error::ProxyError;
use crate::http1::fields::Answer;
use crate::metrics::CacheStatus;

/// Read a response into a cache entry, if it may be stored. Callers may be
/// waiting on it, so the body gets the upstream's timeout too.
async fn collect(
    up: &Upstream<'_>,
    res: Answer<ProxyBody>,
    cfg: &tollgate_model::docs::CacheConfig,
) -> Result<Arc<cache::CachedResponse>, FillError> {
    let limit = Duration::from_millis(up.pool.config.timeout_ms);
    tokio::time::timeout(limit, cache::collect(res, cfg))
        .await
        .unwrap_or(Err(FillError::Failed(ProxyError::GatewayTimeout)))
}

/// Phase 6: serve from the cache, or fetch once for every concurrent miss
/// of `key` and store what may be stored.
pub(super) async fn cached(
    up: &Upstream<'_>,
    cfg: &tollgate_model::docs::CacheConfig,
    key: Arc<str>,
    refresh: bool,
    req: Request<RequestBody>,
    trail: &mut Trail,
) -> Result<Answer<ProxyBody>, ProxyError> {
    let cache = &up.cx.gw.cache;
    let span = tracing::debug_span!("cache", result = tracing::field::Empty);
    if refresh {
        // The client asked for a fresh answer and the route allows it.
        trail.cache = Some(CacheStatus::Miss);
        span.record("result", "refresh");
        let res = forward(up, req, trail).await?;
        return match collect(up, res, cfg).await {
            Ok(entry) => {
                cache.insert(key, entry.clone()).await;
                Ok(entry.respond(false).into())
            }
            Err(FillError::Unstorable(slot)) => Ok(take_response(&slot).into()),
            Err(FillError::Failed(e)) => Err(e),
        };
    }
    if let Some(hit) = cache.get(&key).instrument(span.clone()).await {
        if !hit.is_fresh() {
            // Kept past its TTL for `stale_if_error_s`: fetch anew, and
            // serve it only if that fails.
            span.record("result", "stale");
            return revalidate(up, cfg, key, hit, req, trail).await;
        }
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
            collect(up, res, cfg).await
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

/// Fetch anew for an entry past its TTL: store and send what comes back,
/// unless the upstream failed (an error the gateway would answer with
/// 502/503/504, or a 5xx answer): then the stale entry, `x-cache: Stale`.
async fn revalidate(
    up: &Upstream<'_>,
    cfg: &tollgate_model::docs::CacheConfig,
    key: Arc<str>,
    stale: Arc<cache::CachedResponse>,
    req: Request<RequestBody>,
    trail: &mut Trail,
) -> Result<Answer<ProxyBody>, ProxyError> {
    let cache = &up.cx.gw.cache;
    let fresh = match forward(up, req, trail).await {
        Ok(res) if !res.res.status().is_server_error() => Ok(res),
        Ok(res) => Err(ProxyError::BadGateway(format!(
            "upstream answered {}",
            res.res.status()
        ))),
        Err(e) => Err(e),
    };
    let fresh = match fresh {
        Ok(res) => match collect(up, res, cfg).await {
            Ok(entry) => {
                cache.insert(key, entry.clone()).await;
                trail.cache = Some(CacheStatus::Miss);
                return Ok(entry.respond(false).into());
            }
            Err(FillError::Unstorable(slot)) => {
                trail.cache = Some(CacheStatus::Miss);
                return Ok(take_response(&slot).into());
            }
            Err(FillError::Failed(e)) => e,
        },
        Err(e) => e,
    };
    if !super::is_upstream_failure(&fresh) {
        return Err(fresh);
    }
    tracing::debug!(error = %fresh, "upstream failed; serving the stale entry");
    trail.cache = Some(CacheStatus::Stale);
    Ok(stale.respond(true).into())
}

fn take_response(slot: &std::sync::Mutex<Option<Response<ProxyBody>>>) -> Response<ProxyBody> {
    slot.lock()
        .expect("response slot")
        .take()
        .unwrap_or_else(|| ProxyError::BadGateway("response already taken".into()).into_response())
}
