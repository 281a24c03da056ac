//! Upstream targets of one API: load balancing, active health checks and a
//! circuit breaker per target. Connections themselves are pooled elsewhere:
//! plain HTTP/1.1 by each worker thread (`http1::client`), the rest by the
//! hyper_util clients (`Clients`), keyed by scheme and authority.
//!
//! The counters a pick reads and writes on every request (a target's
//! in-flight count, the round-robin position) are kept per worker thread
//! (`shard`): each worker keeps its own place in the cycle, so no cache
//! line is shared between cores on the request path.
//!
//! A pool outlives config changes that leave its `upstream` block alone, so
//! health and breaker state carry over; its health-check task ends when the
//! last config that uses the pool is dropped.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tollgate_model::docs::{LoadBalancing, Upstream};

use crate::body::{BoxError, ProxyBody};
use crate::shard::Sharded;

/// How long an open breaker refuses a target before letting one trial
/// request through.
const BREAKER_COOLDOWN: Duration = Duration::from_secs(5);

pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, ProxyBody>;

/// The hyper_util clients for what `conn_pool` does not take: HTTPS
/// targets, HTTP/2 (gRPC) and upgrades. Each keeps a keep-alive pool per
/// scheme and authority.
///
/// The request path uses a client per thread (`for_request`): a proxy
/// worker thread then drives its upstream connections itself, with no
/// cross-thread wake-ups. `http` is a shared client for background work
/// (health checks, JWKS fetches).
#[derive(Clone)]
pub struct Clients {
    /// HTTP/1.1 (and HTTP/2 by ALPN for https targets).
    pub http: HttpClient,
}

fn build_client(h2_only: bool) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let b = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http();
    let connector = if h2_only {
        b.enable_http2().wrap_connector(http)
    } else {
        b.enable_http1().enable_http2().wrap_connector(http)
    };
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256);
    if h2_only {
        builder.http2_only(true);
    }
    builder.build(connector)
}

thread_local! {
    /// (HTTP/1.1 + ALPN, HTTP/2 prior knowledge for gRPC), built on first use.
    static THREAD_CLIENTS: (HttpClient, HttpClient) = (build_client(false), build_client(true));
}

impl Clients {
    pub fn new() -> Self {
        Self {
            http: build_client(false),
        }
    }

    /// This thread's client: HTTP/2 with prior knowledge for gRPC, else
    /// HTTP/1.1 (HTTP/2 by ALPN for https targets).
    pub fn for_request(&self, grpc: bool) -> HttpClient {
        THREAD_CLIENTS.with(|(http, h2)| if grpc { h2.clone() } else { http.clone() })
    }
}

impl Default for Clients {
    fn default() -> Self {
        Self::new()
    }
}

fn now_ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64 + 1
}

/// Opens after `threshold` consecutive failures; after a cooldown it lets
/// exactly one trial request through, whose outcome closes or reopens it.
struct Breaker {
    threshold: u32,
    failures: AtomicU32,
    /// 0 = closed; else open until this time (ms since the pool's epoch).
    open_until: AtomicU64,
}

impl Breaker {
    fn allow(&self, now: impl FnOnce() -> u64) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = now();
        if now < until {
            return false;
        }
        // Half-open: whoever wins this race is the trial request.
        self.open_until
            .compare_exchange(
                until,
                now + BREAKER_COOLDOWN.as_millis() as u64,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// `now` is asked only while the breaker has a cooldown set.
    fn is_open(&self, now: impl FnOnce() -> u64) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        until != 0 && now() < until
    }

    /// Returns true when this failure opened the breaker.
    /// `now` is asked only on a failure.
    fn record(&self, ok: bool, now: impl FnOnce() -> u64) -> bool {
        if self.threshold == 0 {
            return false;
        }
        if ok {
            // Loads first: every request succeeds through here, and a store
            // would take the cache line from the other cores each time.
            if self.failures.load(Ordering::Acquire) != 0 {
                self.failures.store(0, Ordering::Release);
            }
            if self.open_until.load(Ordering::Acquire) != 0 {
                self.open_until.store(0, Ordering::Release);
            }
            return false;
        }
        let f = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if f >= self.threshold {
            let was = self.open_until.swap(
                now() + BREAKER_COOLDOWN.as_millis() as u64,
                Ordering::AcqRel,
            );
            return was == 0;
        }
        false
    }
}

pub struct TargetState {
    pub url: String,
    pub scheme: Scheme,
    pub authority: Authority,
    /// The target URL's own path, prepended to every upstream path.
    pub base_path: String,
    /// `Host` for requests to this target.
    pub host_header: http::HeaderValue,
    weight: u32,
    healthy: AtomicBool,
    ok_streak: AtomicU32,
    fail_streak: AtomicU32,
    /// Per worker (`shard`); a copy may wrap below zero when a request
    /// ends on another thread than it started, the sum is right.
    in_flight: Sharded<AtomicUsize>,
    breaker: Breaker,
}

impl TargetState {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Requests to this target under way.
    pub fn in_flight(&self) -> usize {
        self.in_flight
            .iter()
            .fold(0, |sum, c| sum.wrapping_add(c.load(Ordering::Relaxed)))
    }
}

pub struct UpstreamPool {
    pub api_id: String,
    pub config: Upstream,
    pub targets: Vec<TargetState>,
    total_weight: u64,
    /// Each worker's place in the round-robin cycle: a shared counter
    /// would pass its cache line between cores on every request.
    next: Sharded<AtomicUsize>,
    epoch: Instant,
}

/// Decrements the target's in-flight count when the attempt ends.
pub struct Lease {
    pool: Arc<UpstreamPool>,
    pub index: usize,
}

impl Lease {
    pub fn target(&self) -> &TargetState {
        &self.pool.targets[self.index]
    }

    /// Feed the attempt's outcome to the breaker.
    pub fn record(&self, ok: bool) {
        let t = self.target();
        if t.breaker.record(ok, || now_ms(self.pool.epoch)) {
            tracing::warn!(api = %self.pool.api_id, target = %t.url, "circuit breaker open");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.target()
            .in_flight
            .local()
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl UpstreamPool {
    /// Whether target `i`'s circuit breaker is open (refusing requests).
    pub fn breaker_open(&self, i: usize) -> bool {
        self.targets[i].breaker.is_open(|| now_ms(self.epoch))
    }

    /// Build a pool and start its health checks (if configured).
    pub fn new(api_id: &str, config: Upstream, clients: &Clients) -> Result<Arc<Self>, String> {
        let targets = config
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let uri: http::Uri = t
                    .url
                    .parse()
                    .map_err(|e| format!("api {api_id:?} upstream.targets[{i}].url: {e}"))?;
                let (Some(scheme), Some(authority)) =
                    (uri.scheme().cloned(), uri.authority().cloned())
                else {
                    return Err(format!(
                        "api {api_id:?} upstream.targets[{i}].url: not absolute"
                    ));
                };
                // As hyper_util's client writes it: no userinfo, no default port.
                let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
                let host = match authority.port_u16() {
                    Some(p) if p != default_port => format!("{}:{p}", authority.host()),
                    _ => authority.host().to_string(),
                };
                let host_header = http::HeaderValue::from_str(&host)
                    .map_err(|e| format!("api {api_id:?} upstream.targets[{i}].url: host: {e}"))?;
                Ok(TargetState {
                    url: t.url.clone(),
                    scheme,
                    authority,
                    host_header,
                    base_path: uri.path().trim_end_matches('/').to_string(),
                    weight: t.weight.max(1),
                    healthy: AtomicBool::new(true),
                    ok_streak: AtomicU32::new(0),
                    fail_streak: AtomicU32::new(0),
                    in_flight: Sharded::default(),
                    breaker: Breaker {
                        threshold: config.circuit_breaker_failures,
                        failures: AtomicU32::new(0),
                        open_until: AtomicU64::new(0),
                    },
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let pool = Arc::new(Self {
            api_id: api_id.to_string(),
            total_weight: targets.iter().map(|t| u64::from(t.weight)).sum(),
            targets,
            config,
            next: Sharded::default(),
            epoch: Instant::now(),
        });
        if pool.config.health_check.is_some() {
            tokio::spawn(health_checks(Arc::downgrade(&pool), clients.http.clone()));
        }
        Ok(pool)
    }

    /// Pick a target for one attempt, skipping `tried` while others remain.
    /// `None` when every target is down or its breaker is open.
    pub fn pick(self: &Arc<Self>, tried: &[usize]) -> Option<Lease> {
        // The clock is read only if a breaker has a cooldown set.
        let clock = std::cell::OnceCell::new();
        let now = || *clock.get_or_init(|| now_ms(self.epoch));
        let n = self.targets.len();
        let index = match self.config.load_balancing {
            LoadBalancing::RoundRobin => {
                // Weighted: position `k` of the cycle belongs to the target
                // whose cumulative weight first exceeds it.
                let k =
                    (self.next.local().fetch_add(1, Ordering::Relaxed) as u64) % self.total_weight;
                let mut acc = 0;
                let first = self
                    .targets
                    .iter()
                    .position(|t| {
                        acc += u64::from(t.weight);
                        acc > k
                    })
                    .unwrap_or(0);
                self.first_allowed((0..n).map(|j| (first + j) % n), tried, now)
            }
            LoadBalancing::LeastRequest => {
                let offset = self.next.local().fetch_add(1, Ordering::Relaxed);
                let mut v: Vec<usize> = (0..n).map(|j| (offset + j) % n).collect();
                v.sort_by_key(|&i| {
                    let t = &self.targets[i];
                    // In-flight per unit of weight, scaled to stay integral.
                    t.in_flight() * 1000 / t.weight as usize
                });
                self.first_allowed(v.into_iter(), tried, now)
            }
        }?;
        self.targets[index]
            .in_flight
            .local()
            .fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            pool: self.clone(),
            index,
        })
    }

    /// The first target in the balancer's `order` that is healthy and whose
    /// breaker lets a request through, preferring those not tried yet (a
    /// retry goes to the same target only when no other is left).
    fn first_allowed(
        &self,
        order: impl Iterator<Item = usize> + Clone,
        tried: &[usize],
        now: impl Fn() -> u64 + Copy,
    ) -> Option<usize> {
        let usable = |i: &usize| {
            let t = &self.targets[*i];
            t.is_healthy() && !t.breaker.is_open(now)
        };
        let fresh = order.clone().filter(|i| usable(i) && !tried.contains(i));
        let again = order.filter(|i| usable(i) && tried.contains(i));
        fresh
            .chain(again)
            .find(|&i| self.targets[i].breaker.allow(now))
    }
}

async fn health_checks(pool: Weak<UpstreamPool>, client: HttpClient) {
    let Some((hc, n)) = pool.upgrade().and_then(|p| {
        p.config
            .health_check
            .clone()
            .map(|hc| (hc, p.targets.len()))
    }) else {
        return;
    };
    let interval = Duration::from_millis(hc.interval_ms);
    let timeout = interval.min(Duration::from_secs(2));
    loop {
        tokio::time::sleep(interval).await;
        let Some(p) = pool.upgrade() else { return };
        let probes = (0..n).map(|i| {
            let t = &p.targets[i];
            let uri = format!("{}://{}{}{}", t.scheme, t.authority, t.base_path, hc.path);
            let client = client.clone();
            async move {
                let req = http::Request::get(uri)
                    .header("user-agent", "tollgate-health-check")
                    .body(
                        Empty::<Bytes>::new()
                            .map_err(|e| -> BoxError { match e {} })
                            .boxed(),
                    )
                    .expect("valid request");
                matches!(
                    tokio::time::timeout(timeout, client.request(req)).await,
                    Ok(Ok(res)) if res.status().is_success() || res.status().is_redirection()
                )
            }
        });
        let results = futures::future::join_all(probes).await;
        for (t, ok) in p.targets.iter().zip(results) {
            let (streak, other, threshold) = if ok {
                (&t.ok_streak, &t.fail_streak, hc.healthy_threshold)
            } else {
                (&t.fail_streak, &t.ok_streak, hc.unhealthy_threshold)
            };
            other.store(0, Ordering::Relaxed);
            let s = streak.fetch_add(1, Ordering::Relaxed) + 1;
            if s >= threshold.max(1) && t.healthy.swap(ok, Ordering::AcqRel) != ok {
                if ok {
                    tracing::info!(api = %p.api_id, target = %t.url, "target healthy again");
                } else {
                    tracing::warn!(api = %p.api_id, target = %t.url, "target failed health checks");
                }
            }
        }
    }
}
