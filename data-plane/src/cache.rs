//! The response cache of one data plane (contract §3, `Route.cache`).
//!
//! - Routes turn it on with `cache: {ttl_s, key, shared,
//!   allow_client_invalidation}`; `ttl_s: 0` turns it off.
//! - Only GET and HEAD are looked up; only statuses 200, 203, 204, 301 and
//!   404 are stored, never with `no-store`, `private`, `no-cache` or
//!   `Set-Cookie`, never over 1 MiB. The upstream's `s-maxage`/`max-age`
//!   can shorten the route's TTL, never lengthen it. A `Vary` on a header
//!   the key does not list makes a response unstorable.
//! - The key: API, its flush epoch, route, method, host, path, the query
//!   parameters and headers the route lists, and on routes with
//!   authentication the caller (key id, JWT subject) unless `shared`.
//! - Memory is bounded by moka, weighted by entry size (256 MiB by
//!   default). Concurrent misses of one key are coalesced: one caller
//!   fetches, the others wait for its entry.
//! - Flushes: the key holds the API's flush epoch (a `CacheFlush` resource
//!   streamed by the control plane), so a new epoch makes every older entry
//!   unreachable at once; their memory is reclaimed in the background.

use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use moka::future::Cache;
use tollgate_model::docs::{AuthPolicy, CacheConfig};

use crate::auth::Identity;
use crate::body::{self, BoxError, ProxyBody};
use crate::error::ProxyError;
use crate::http1::fields::Answer;

/// Responses larger than this are passed through, not stored.
pub const MAX_ENTRY_BYTES: usize = 1024 * 1024;
/// Default bound on the memory the cache holds.
pub const DEFAULT_CAPACITY_BYTES: u64 = 256 * 1024 * 1024;

pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// A stored response.
pub struct CachedResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub stored_at: Instant,
    pub ttl: Duration,
    /// How long past `ttl` the entry is kept, to be served only when the
    /// upstream fails (`cache.stale_if_error_s`).
    pub stale_for: Duration,
    weight: u32,
}

impl CachedResponse {
    /// Within its TTL: a hit. Past it (kept for `stale_for`), only a
    /// stand-in for a failed upstream.
    pub fn is_fresh(&self) -> bool {
        self.stored_at.elapsed() < self.ttl
    }

    /// The response to send: a copy of the stored one, with `Age` on a hit.
    pub fn respond(&self, hit: bool) -> Response<ProxyBody> {
        let body = if self.body.is_empty() {
            body::empty()
        } else {
            body::full(self.body.clone())
        };
        let mut res = Response::new(body);
        *res.status_mut() = self.status;
        *res.headers_mut() = self.headers.clone();
        if hit {
            res.headers_mut().insert(
                header::AGE,
                HeaderValue::from(self.stored_at.elapsed().as_secs()),
            );
        }
        res
    }
}

struct ByTtl;

impl moka::Expiry<Arc<str>, Arc<CachedResponse>> for ByTtl {
    fn expire_after_create(
        &self,
        _: &Arc<str>,
        v: &Arc<CachedResponse>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(v.ttl + v.stale_for)
    }

    fn expire_after_update(
        &self,
        _: &Arc<str>,
        v: &Arc<CachedResponse>,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.ttl + v.stale_for)
    }
}

/// What the cache phase decided for a request.
pub enum Plan {
    /// Not cacheable (method, upgrade, client directive, no identity…):
    /// straight to the upstream.
    Bypass,
    /// Look up `key`; with `refresh`, skip the lookup (a client-requested
    /// refresh the route allows) and store what comes back.
    Lookup { key: Arc<str>, refresh: bool },
}

pub struct ResponseCache {
    entries: Cache<Arc<str>, Arc<CachedResponse>>,
}

impl Default for ResponseCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY_BYTES)
    }
}

/// Why a fill did not produce an entry.
pub enum FillError {
    /// A response that may not be stored; the caller that fetched it
    /// sends it (it sits here for that caller to take).
    Unstorable(std::sync::Mutex<Option<Response<ProxyBody>>>),
    /// The upstream failed; every waiting caller gets the same error.
    Failed(ProxyError),
}

impl ResponseCache {
    pub fn new(capacity_bytes: u64) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(capacity_bytes)
                .weigher(|_, v: &Arc<CachedResponse>| v.weight)
                .expire_after(ByTtl)
                .support_invalidation_closures()
                .build(),
        }
    }

    pub async fn get(&self, key: &Arc<str>) -> Option<Arc<CachedResponse>> {
        self.entries.get(key).await
    }

    pub async fn insert(&self, key: Arc<str>, v: Arc<CachedResponse>) {
        self.entries.insert(key, v).await;
    }

    /// The entry for `key`, or `fill`'s result stored under it; concurrent
    /// calls for one key run one `fill` and share its result. Returns the
    /// entry and whether it was there before the call.
    pub async fn get_or_fill<F>(
        &self,
        key: Arc<str>,
        fill: F,
    ) -> Result<(Arc<CachedResponse>, bool), Arc<FillError>>
    where
        F: std::future::Future<Output = Result<Arc<CachedResponse>, FillError>>,
    {
        let e = self.entries.entry(key).or_try_insert_with(fill).await?;
        let fresh = e.is_fresh();
        Ok((e.into_value(), !fresh))
    }

    /// Drop every entry of `api` (memory; flushed entries are unreachable
    /// already, as the key holds the flush epoch).
    pub fn invalidate_api(&self, api: &str) {
        let prefix: Arc<str> = format!("{api}\n").into();
        let _ = self
            .entries
            .invalidate_entries_if(move |k, _| k.starts_with(&*prefix));
    }

    /// (entries, bytes) held, approximately.
    pub fn usage(&self) -> (u64, u64) {
        (self.entries.entry_count(), self.entries.weighted_size())
    }

    /// Run pending maintenance (tests want exact counts).
    pub async fn sync(&self) {
        self.entries.run_pending_tasks().await;
    }
}

/// Decide how a request on a cached route is served, and its key.
#[allow(clippy::too_many_arguments)]
pub fn plan<B>(
    cfg: &CacheConfig,
    policy: &AuthPolicy,
    api: &str,
    epoch: u64,
    route: &str,
    host: &str,
    req: &Request<B>,
    identity: &Identity,
) -> Plan {
    if !matches!(*req.method(), Method::GET | Method::HEAD)
        || req.headers().contains_key(header::UPGRADE)
    {
        return Plan::Bypass;
    }
    let h = req.headers();
    let mut refresh = false;
    if cfg.allow_client_invalidation {
        for d in directives(h) {
            match d {
                ("no-store", _) => return Plan::Bypass,
                ("no-cache", _) | ("max-age", Some("0")) => refresh = true,
                _ => {}
            }
        }
        if h.get(header::PRAGMA)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
        {
            refresh = true;
        }
    }
    let listed = |name: &str| {
        cfg.key.iter().any(|k| {
            k.strip_prefix("header:")
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
    };
    // Credentials the gateway did not check are the upstream's business:
    // its answer may depend on them, so it is not shared.
    if policy.authorizer.is_none()
        && h.contains_key(header::AUTHORIZATION)
        && !listed("authorization")
    {
        return Plan::Bypass;
    }
    let mut key = String::with_capacity(128);
    key.push_str(api);
    key.push('\n');
    let _ = write!(key, "{epoch}");
    key.push('\n');
    key.push_str(route);
    key.push('\n');
    key.push_str(req.method().as_str());
    key.push('\n');
    for c in host.chars() {
        key.push(c.to_ascii_lowercase());
    }
    key.push('\n');
    key.push_str(req.uri().path());
    for k in &cfg.key {
        key.push('\n');
        if let Some(name) = k.strip_prefix("query:") {
            key.push_str("q:");
            key.push_str(name);
            key.push('=');
            let mut first = true;
            for pair in req.uri().query().unwrap_or("").split('&') {
                let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
                if n == name {
                    if !first {
                        key.push('&');
                    }
                    first = false;
                    key.push_str(v);
                }
            }
        } else if let Some(name) = k.strip_prefix("header:") {
            key.push_str("h:");
            key.push_str(name);
            key.push('=');
            for (i, v) in h.get_all(name).iter().enumerate() {
                if i > 0 {
                    key.push(',');
                }
                key.push_str(&String::from_utf8_lossy(v.as_bytes()));
            }
        }
    }
    if !policy.is_open() && !cfg.shared {
        // Each caller has their own entries; a caller the gateway cannot
        // name is not cached at all.
        if identity.key_id().is_none() && identity.subject.is_none() {
            return Plan::Bypass;
        }
        if let Some(k) = identity.key_id() {
            key.push_str("\nk:");
            key.push_str(k);
        }
        if let Some(s) = &identity.subject {
            key.push_str("\ns:");
            if let Some(a) = &policy.authorizer {
                key.push_str(a);
            }
            key.push(':');
            key.push_str(s);
        }
    }
    Plan::Lookup {
        key: key.into(),
        refresh,
    }
}

/// `Cache-Control` directives, lower-cased names, with values.
fn directives(h: &HeaderMap) -> impl Iterator<Item = (&str, Option<&str>)> {
    h.get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| {
            let d = d.trim();
            match d.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (d, None),
            }
        })
}

/// How long a response may be stored, or `None` if it may not be.
pub fn storable(status: StatusCode, h: &HeaderMap, cfg: &CacheConfig) -> Option<Duration> {
    if !matches!(status.as_u16(), 200 | 203 | 204 | 301 | 404) || h.contains_key(header::SET_COOKIE)
    {
        return None;
    }
    let mut ttl = cfg.ttl_s.min(CacheConfig::MAX_TTL_S);
    let (mut max_age, mut s_maxage) = (None, None);
    for (name, value) in directives(h) {
        let name = name.to_ascii_lowercase();
        match name.as_str() {
            "no-store" | "private" | "no-cache" => return None,
            "max-age" => max_age = value.and_then(|v| v.parse::<u64>().ok()),
            "s-maxage" => s_maxage = value.and_then(|v| v.parse::<u64>().ok()),
            _ => {}
        }
    }
    if let Some(a) = s_maxage.or(max_age) {
        ttl = ttl.min(a);
    }
    if ttl == 0 {
        return None;
    }
    for v in h.get_all(header::VARY).iter() {
        let v = v.to_str().ok()?;
        for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let listed = cfg.key.iter().any(|k| {
                k.strip_prefix("header:")
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            });
            if name == "*" || !listed {
                return None;
            }
        }
    }
    if h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_ENTRY_BYTES)
    {
        return None;
    }
    Some(Duration::from_secs(ttl))
}

/// Read `res` into an entry if it may be stored; otherwise hand it back,
/// whole (what was read already goes first).
pub async fn collect(
    answer: Answer<ProxyBody>,
    cfg: &CacheConfig,
) -> Result<Arc<CachedResponse>, FillError> {
    // What is stored is a map.
    let res = answer.materialized();
    let unstorable = |res| FillError::Unstorable(std::sync::Mutex::new(Some(res)));
    let Some(ttl) = storable(res.status(), res.headers(), cfg) else {
        return Err(unstorable(res));
    };
    let (parts, mut body) = res.into_parts();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0;
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) => {
                return Err(FillError::Failed(ProxyError::BadGateway(format!(
                    "reading the upstream body: {e}"
                ))))
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    len += data.len();
                    chunks.push(data);
                    if len > MAX_ENTRY_BYTES {
                        let body = FramesThen::body(chunks, None, body);
                        return Err(unstorable(Response::from_parts(parts, body)));
                    }
                }
                Err(trailers) => {
                    // Trailers are not kept: pass this one through.
                    let body = FramesThen::body(chunks, Some(trailers), body);
                    return Err(unstorable(Response::from_parts(parts, body)));
                }
            },
        }
    }
    let body = if chunks.len() == 1 {
        chunks.pop().unwrap_or_default()
    } else {
        let mut b = bytes::BytesMut::with_capacity(len);
        for c in chunks {
            b.extend_from_slice(&c);
        }
        b.freeze()
    };
    let mut headers = parts.headers;
    headers.remove(header::AGE);
    let weight = (body.len()
        + headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum::<usize>()
        + 256)
        .min(u32::MAX as usize) as u32;
    Ok(Arc::new(CachedResponse {
        status: parts.status,
        headers,
        body,
        stored_at: Instant::now(),
        ttl,
        stale_for: Duration::from_secs(
            cfg.stale_if_error_s
                .min(tollgate_model::docs::CacheConfig::MAX_STALE_IF_ERROR_S),
        ),
        weight,
    }))
}

/// Frames already read (data, then any trailers), then the rest of the
/// body: what a response that turned out unstorable is sent as.
struct FramesThen {
    frames: std::collections::VecDeque<Frame<Bytes>>,
    rest: ProxyBody,
}

impl FramesThen {
    fn body(chunks: Vec<Bytes>, trailers: Option<Frame<Bytes>>, rest: ProxyBody) -> ProxyBody {
        let frames = chunks
            .into_iter()
            .map(Frame::data)
            .chain(trailers)
            .collect();
        Self { frames, rest }.boxed()
    }
}

impl Body for FramesThen {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(f) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn size_hint(&self) -> SizeHint {
        let held: u64 = self
            .frames
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let rest = self.rest.size_hint();
        let mut h = SizeHint::new();
        h.set_lower(rest.lower() + held);
        if let Some(upper) = rest.upper() {
            h.set_upper(upper + held);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::IndexedKey;

    fn cfg(key: &[&str]) -> CacheConfig {
        serde_json::from_value(serde_json::json!({"ttl_s": 60, "key": key})).unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn what_may_be_stored() {
        let c = cfg(&["header:accept"]);
        assert_eq!(
            storable(StatusCode::OK, &HeaderMap::new(), &c),
            Some(Duration::from_secs(60))
        );
        for s in [203, 204, 301, 404] {
            assert!(storable(StatusCode::from_u16(s).unwrap(), &HeaderMap::new(), &c).is_some());
        }
        for s in [201, 206, 302, 304, 500, 503] {
            assert!(storable(StatusCode::from_u16(s).unwrap(), &HeaderMap::new(), &c).is_none());
        }
        for h in [
            headers(&[("cache-control", "no-store")]),
            headers(&[("cache-control", "public, Private")]),
            headers(&[("cache-control", "max-age=0")]),
            headers(&[("set-cookie", "a=b")]),
            headers(&[("vary", "Accept-Encoding")]),
            headers(&[("vary", "*")]),
            headers(&[("content-length", "2000000")]),
        ] {
            assert!(storable(StatusCode::OK, &h, &c).is_none(), "{h:?}");
        }
        assert_eq!(
            storable(
                StatusCode::OK,
                &headers(&[("cache-control", "max-age=5"), ("vary", "accept")]),
                &c
            ),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            storable(
                StatusCode::OK,
                &headers(&[("cache-control", "max-age=5, s-maxage=7")]),
                &c
            ),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            storable(
                StatusCode::OK,
                &headers(&[("cache-control", "max-age=600")]),
                &c
            ),
            Some(Duration::from_secs(60))
        );
    }

    fn req(uri: &str, h: &[(&'static str, &'static str)]) -> Request<()> {
        let mut r = Request::get(uri).body(()).unwrap();
        *r.headers_mut() = headers(h);
        r
    }

    fn key_of(p: Plan) -> String {
        match p {
            Plan::Lookup { key, .. } => key.to_string(),
            Plan::Bypass => panic!("bypassed"),
        }
    }

    #[test]
    fn keys_hold_what_the_route_lists_and_the_caller() {
        let c = cfg(&["query:page", "header:accept"]);
        let open = AuthPolicy::default();
        let anon = Identity::default();
        let k = |uri, h: &[(&'static str, &'static str)]| {
            key_of(plan(&c, &open, "a", 3, "r", "Ex.com", &req(uri, h), &anon))
        };
        assert_eq!(
            k("/x?page=2&b=1", &[("accept", "text/plain")]),
            "a\n3\nr\nGET\nex.com\n/x\nq:page=2\nh:accept=text/plain"
        );
        assert_eq!(
            k("/x?b=1&page=2", &[("accept", "text/plain")]),
            k("/x?page=2", &[("accept", "text/plain")])
        );
        assert_ne!(k("/x?page=3", &[]), k("/x?page=2", &[]));
        assert_ne!(k("/x", &[("accept", "a")]), k("/x", &[("accept", "b")]));
        assert_eq!(k("/x?other=1", &[]), k("/x?other=2", &[]));

        let keyed: AuthPolicy =
            serde_json::from_value(serde_json::json!({"api_key": true})).unwrap();
        let alice = Identity {
            key: Some(IndexedKey::for_tests("key_a", "acme")),
            ..Default::default()
        };
        let bob = Identity {
            key: Some(IndexedKey::for_tests("key_b", "acme")),
            ..Default::default()
        };
        let r = req("/x", &[]);
        let ka = key_of(plan(&c, &keyed, "a", 0, "r", "h", &r, &alice));
        let kb = key_of(plan(&c, &keyed, "a", 0, "r", "h", &r, &bob));
        assert_ne!(ka, kb);
        assert!(ka.ends_with("\nk:key_a"));
        let mut shared = c.clone();
        shared.shared = true;
        assert_eq!(
            key_of(plan(&shared, &keyed, "a", 0, "r", "h", &r, &alice)),
            key_of(plan(&shared, &keyed, "a", 0, "r", "h", &r, &bob))
        );
        assert!(matches!(
            plan(&c, &keyed, "a", 0, "r", "h", &r, &anon),
            Plan::Bypass
        ));
    }

    #[test]
    fn client_directives_count_only_when_allowed() {
        let mut c = cfg(&[]);
        let open = AuthPolicy::default();
        let anon = Identity::default();
        let r = req("/x", &[("cache-control", "max-age=0")]);
        assert!(matches!(
            plan(&c, &open, "a", 0, "r", "h", &r, &anon),
            Plan::Lookup { refresh: false, .. }
        ));
        c.allow_client_invalidation = true;
        assert!(matches!(
            plan(&c, &open, "a", 0, "r", "h", &r, &anon),
            Plan::Lookup { refresh: true, .. }
        ));
        let post = Request::post("/x").body(()).unwrap();
        assert!(matches!(
            plan(&c, &open, "a", 0, "r", "h", &post, &anon),
            Plan::Bypass
        ));
        let authz = req("/x", &[("authorization", "Basic eA==")]);
        assert!(matches!(
            plan(&c, &open, "a", 0, "r", "h", &authz, &anon),
            Plan::Bypass
        ));
    }

    #[tokio::test]
    async fn memory_stays_under_the_cap() {
        let cap = 64 * 1024;
        let cache = ResponseCache::new(cap);
        for i in 0..100 {
            let body = Bytes::from(vec![b'x'; 4096]);
            let entry = Arc::new(CachedResponse {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                weight: body.len() as u32 + 256,
                body,
                stored_at: Instant::now(),
                ttl: Duration::from_secs(60),
                stale_for: Duration::ZERO,
            });
            cache.insert(format!("api\n{i}").into(), entry).await;
        }
        cache.sync().await;
        let (entries, bytes) = cache.usage();
        assert!(bytes <= cap, "{bytes} bytes held, cap {cap}");
        assert!(entries > 0 && entries < 100, "{entries} entries");
    }
}
