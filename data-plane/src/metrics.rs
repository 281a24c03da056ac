//! Metrics for the status port, in the Prometheus text format.
//!
//! The request path only ever touches atomics: every route gets its own
//! `RouteMetrics` when its API is compiled (off the request path), and the
//! compiled route holds it, so recording a request is a handful of relaxed
//! `fetch_add`s with no lookup, lock or allocation, on the worker thread's
//! own copy of the counters (`shard`). Labels are bounded by
//! design: API id, route id, method (eight values), status class, cache
//! result — never a path, a key or a caller.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use http::Method;

use crate::shard::Sharded;

/// The methods counted by name; anything else is `OTHER`.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER",
];

pub fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// A latency histogram. Buckets are stored non-cumulative (one increment
/// per observation) and summed when rendered.
#[derive(Default)]
pub struct Histogram {
    /// One per bound, then +Inf.
    buckets: [AtomicU64; 15],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe_us(&self, us: u64) {
        let i = BUCKETS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// This histogram's lines, for a histogram kept in one copy.
    pub fn render_one(&self, out: &mut String, name: &str, labels: &str) {
        Self::total(std::iter::once(self)).render(out, name, labels);
    }

    /// Several copies of one histogram (one per worker), added up.
    fn total<'a>(copies: impl Iterator<Item = &'a Histogram>) -> HistogramTotal {
        let mut t = HistogramTotal::default();
        for h in copies {
            for (sum, b) in t.buckets.iter_mut().zip(&h.buckets) {
                *sum += b.load(Relaxed);
            }
            t.sum_us += h.sum_us.load(Relaxed);
        }
        t
    }
}

/// A histogram's figures at one moment.
#[derive(Default)]
struct HistogramTotal {
    buckets: [u64; 15],
    sum_us: u64,
}

impl HistogramTotal {
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut acc = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            acc += b;
            match BUCKETS_US.get(i) {
                Some(le) => {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{labels},le=\"{}\"}} {acc}",
                        *le as f64 / 1e6
                    );
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {acc}");
                }
            }
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_us as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{{labels}}} {acc}");
    }

    fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// What the response cache did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Bypass,
    /// A stale entry served because the upstream failed.
    Stale,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "Hit",
            CacheStatus::Miss => "Miss",
            CacheStatus::Bypass => "Bypass",
            CacheStatus::Stale => "Stale",
        }
    }
}

/// Why authentication refused a request.
#[derive(Debug, Clone, Copy)]
pub enum AuthFailure {
    Unauthorized,
    Forbidden,
}

/// Everything counted for one route (or for requests no route matched).
pub struct RouteMetrics {
    /// `api="…",route="…"`, rendered once.
    labels: String,
    counts: Sharded<Counts>,
    /// The live-traffic windows (`crate::traffic`), beside the counters
    /// so the request path finds them with no lookup.
    pub traffic: crate::traffic::RouteTraffic,
}

/// One worker's copy of a route's counters.
#[derive(Default)]
struct Counts {
    /// By method, then status class (1xx to 5xx).
    requests: [[AtomicU64; 5]; 8],
    latency: Histogram,
    upstream_latency: Histogram,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Hit, miss, bypass, stale.
    cache: [AtomicU64; 4],
    /// Fallback answers served instead of an upstream failure.
    fallbacks: AtomicU64,
    /// Unauthorized, forbidden.
    auth_failures: [AtomicU64; 2],
    /// Function invocations (function routes), and those that failed
    /// (function error, bad Invoke answer, unreadable result, timeout).
    function_calls: AtomicU64,
    function_errors: AtomicU64,
    function_latency: Histogram,
}

impl RouteMetrics {
    pub fn new(api: &str, route: &str) -> Self {
        Self::deployed(api, "", route)
    }

    /// A route served by a stage's deployment: `deployment="…"` beside the
    /// API, so a canary's figures compare with the stage's.
    pub fn deployed(api: &str, deployment: &str, route: &str) -> Self {
        let labels = if deployment.is_empty() {
            format!("api=\"{}\",route=\"{}\"", escape(api), escape(route))
        } else {
            format!(
                "api=\"{}\",deployment=\"{}\",route=\"{}\"",
                escape(api),
                escape(deployment),
                escape(route)
            )
        };
        Self {
            labels,
            counts: Sharded::default(),
            traffic: Default::default(),
        }
    }

    /// One counter added up over the workers' copies.
    fn sum(&self, counter: impl Fn(&Counts) -> &AtomicU64) -> u64 {
        self.counts.iter().map(|c| counter(c).load(Relaxed)).sum()
    }

    fn histogram(&self, which: fn(&Counts) -> &Histogram) -> HistogramTotal {
        Histogram::total(self.counts.iter().map(which))
    }

    /// One response: its status, total latency, and the upstream's
    /// latency if the upstream was called.
    pub fn record(&self, method: usize, status: u16, total_us: u64, upstream_us: Option<u64>) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        let c = self.counts.local();
        c.requests[method.min(7)][class].fetch_add(1, Relaxed);
        c.latency.observe_us(total_us);
        if let Some(us) = upstream_us {
            c.upstream_latency.observe_us(us);
        }
    }

    pub fn add_bytes_in(&self, n: u64) {
        if n > 0 {
            self.counts.local().bytes_in.fetch_add(n, Relaxed);
        }
    }

    pub fn add_bytes_out(&self, n: u64) {
        if n > 0 {
            self.counts.local().bytes_out.fetch_add(n, Relaxed);
        }
    }

    pub fn cache(&self, s: CacheStatus) {
        let i = match s {
            CacheStatus::Hit => 0,
            CacheStatus::Miss => 1,
            CacheStatus::Bypass => 2,
            CacheStatus::Stale => 3,
        };
        self.counts.local().cache[i].fetch_add(1, Relaxed);
    }

    pub fn fallback(&self) {
        self.counts.local().fallbacks.fetch_add(1, Relaxed);
    }

    pub fn auth_failure(&self, f: AuthFailure) {
        let i = match f {
            AuthFailure::Unauthorized => 0,
            AuthFailure::Forbidden => 1,
        };
        self.counts.local().auth_failures[i].fetch_add(1, Relaxed);
    }

    /// One function invocation: how long it took, and whether it failed.
    pub fn function_call(&self, us: u64, failed: bool) {
        let c = self.counts.local();
        c.function_calls.fetch_add(1, Relaxed);
        if failed {
            c.function_errors.fetch_add(1, Relaxed);
        }
        c.function_latency.observe_us(us);
    }

    /// Requests counted, all methods and statuses.
    pub fn requests(&self) -> u64 {
        self.histogram(|c| &c.latency).count()
    }
}

/// Every route's metrics, by (API id, deployment, route id); the deployment
/// is "" on an API's own path. Routes get theirs when their API (or
/// stage) is compiled; a route that survives a config change keeps its
/// counters.
pub struct Metrics {
    routes: Mutex<BTreeMap<(String, String, String), Arc<RouteMetrics>>>,
    /// Requests that matched no route (404/405), and CORS preflights.
    pub unmatched: Arc<RouteMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            routes: Mutex::new(BTreeMap::new()),
            unmatched: Arc::new(RouteMetrics::new("", "")),
        }
    }
}

impl Metrics {
    /// The metrics of a route, made on first use; `deployment` is "" on
    /// an API's own path.
    pub fn route(&self, api: &str, deployment: &str, route: &str) -> Arc<RouteMetrics> {
        self.routes
            .lock()
            .expect("metrics lock")
            .entry((api.to_string(), deployment.to_string(), route.to_string()))
            .or_insert_with(|| Arc::new(RouteMetrics::deployed(api, deployment, route)))
            .clone()
    }

    /// Forget routes the config no longer has: `keep(api, deployment,
    /// route)`.
    pub fn retain(&self, mut keep: impl FnMut(&str, &str, &str) -> bool) {
        self.routes
            .lock()
            .expect("metrics lock")
            .retain(|(a, d, r), _| keep(a, d, r));
    }

    /// Every route's metrics with its API and route ids (requests that
    /// matched no route are not among them).
    pub fn for_each_route(&self, mut f: impl FnMut(&str, &str, &RouteMetrics)) {
        let routes: Vec<_> = {
            let map = self.routes.lock().expect("metrics lock");
            map.iter()
                .map(|((a, _, r), m)| (a.clone(), r.clone(), m.clone()))
                .collect()
        };
        for (api, route, m) in routes {
            f(&api, &route, &m);
        }
    }

    fn all(&self) -> Vec<Arc<RouteMetrics>> {
        let mut v: Vec<_> = self
            .routes
            .lock()
            .expect("metrics lock")
            .values()
            .cloned()
            .collect();
        v.push(self.unmatched.clone());
        v
    }

    pub fn render(&self, out: &mut String) {
        let all = self.all();
        family(
            out,
            "tollgate_requests_total",
            "counter",
            "Responses by API, route, method and status class.",
        );
        for m in &all {
            for (mi, method) in METHODS.iter().enumerate() {
                for ci in 0..5 {
                    let n = m.sum(|c| &c.requests[mi][ci]);
                    if n > 0 {
                        let _ = writeln!(
                            out,
                            "tollgate_requests_total{{{},method=\"{}\",status_class=\"{}xx\"}} {n}",
                            m.labels,
                            method,
                            ci + 1
                        );
                    }
                }
            }
        }
        for (name, help, pick) in [
            (
                "tollgate_request_duration_seconds",
                "Time from the request to the response head, by API and route.",
                (|c: &Counts| &c.latency) as fn(&Counts) -> &Histogram,
            ),
            (
                "tollgate_upstream_duration_seconds",
                "Time the upstream took to send its response head, by API and route.",
                |c: &Counts| &c.upstream_latency,
            ),
        ] {
            family(out, name, "histogram", help);
            for m in &all {
                m.histogram(pick).render(out, name, &m.labels);
            }
        }
        for (name, help, pick) in [
            (
                "tollgate_request_bytes_total",
                "Request body bytes received.",
                (|c: &Counts| &c.bytes_in) as fn(&Counts) -> &AtomicU64,
            ),
            (
                "tollgate_response_bytes_total",
                "Response body bytes sent.",
                |c: &Counts| &c.bytes_out,
            ),
        ] {
            family(out, name, "counter", help);
            for m in &all {
                let _ = writeln!(out, "{name}{{{}}} {}", m.labels, m.sum(pick));
            }
        }
        family(
            out,
            "tollgate_cache_requests_total",
            "counter",
            "Requests on cached routes by cache result (hit, miss, bypass, stale).",
        );
        for m in &all {
            for (i, result) in ["hit", "miss", "bypass", "stale"].iter().enumerate() {
                let n = m.sum(|c| &c.cache[i]);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "tollgate_cache_requests_total{{{},result=\"{result}\"}} {n}",
                        m.labels
                    );
                }
            }
        }
        family(
            out,
            "tollgate_fallbacks_total",
            "counter",
            "Fallback answers served instead of an upstream failure.",
        );
        for m in &all {
            let n = m.sum(|c| &c.fallbacks);
            if n > 0 {
                let _ = writeln!(out, "tollgate_fallbacks_total{{{}}} {n}", m.labels);
            }
        }
        family(
            out,
            "tollgate_auth_failures_total",
            "counter",
            "Requests refused by authentication (401 unauthorized, 403 forbidden).",
        );
        for m in &all {
            for (i, reason) in ["unauthorized", "forbidden"].iter().enumerate() {
                let n = m.sum(|c| &c.auth_failures[i]);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "tollgate_auth_failures_total{{{},reason=\"{reason}\"}} {n}",
                        m.labels
                    );
                }
            }
        }
        for (name, help, pick) in [
            (
                "tollgate_function_invocations_total",
                "Function invocations by API and route.",
                (|c: &Counts| &c.function_calls) as fn(&Counts) -> &AtomicU64,
            ),
            (
                "tollgate_function_errors_total",
                "Function invocations that failed (function error, bad answer, timeout).",
                |c: &Counts| &c.function_errors,
            ),
        ] {
            family(out, name, "counter", help);
            for m in &all {
                let n = m.sum(pick);
                if n > 0 {
                    let _ = writeln!(out, "{name}{{{}}} {n}", m.labels);
                }
            }
        }
        let name = "tollgate_function_duration_seconds";
        family(
            out,
            name,
            "histogram",
            "Time a function took to answer its invocation, by API and route.",
        );
        for m in &all {
            let h = m.histogram(|c| &c.function_latency);
            if h.count() > 0 {
                h.render(out, name, &m.labels);
            }
        }
    }
}

/// `# HELP` and `# TYPE` lines of a metric family.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value, escaped for the text format.
pub fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_over_every_copy() {
        let (h, other) = (Histogram::default(), Histogram::default());
        h.observe_us(400);
        other.observe_us(1_000);
        h.observe_us(20_000_000);
        let mut out = String::new();
        Histogram::total([&h, &other].into_iter()).render(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.001\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 3\n"), "{out}");
    }

    /// Workers count on their own copies; the status port shows the sum.
    #[test]
    fn counts_from_every_worker_add_up() {
        let m = Arc::new(RouteMetrics::new("a", "r"));
        let workers: Vec<_> = (0..3)
            .map(|i| {
                let m = m.clone();
                std::thread::spawn(move || {
                    crate::shard::enter(i);
                    m.record(0, 200, 300, Some(100));
                    m.add_bytes_out(10);
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(m.requests(), 3);
        let metrics = Metrics::default();
        let mut out = String::new();
        metrics
            .routes
            .lock()
            .unwrap()
            .insert(("a".into(), String::new(), "r".into()), m);
        metrics.render(&mut out);
        assert!(out.contains("tollgate_requests_total{api=\"a\",route=\"r\",method=\"GET\",status_class=\"2xx\"} 3\n"), "{out}");
        assert!(
            out.contains("tollgate_response_bytes_total{api=\"a\",route=\"r\"} 30\n"),
            "{out}"
        );
        assert!(
            out.contains("tollgate_upstream_duration_seconds_count{api=\"a\",route=\"r\"} 3\n"),
            "{out}"
        );
    }

    #[test]
    fn a_stage_s_route_carries_its_deployment() {
        let m = RouteMetrics::deployed("orders", "dep-7", "all");
        assert_eq!(
            m.labels,
            "api=\"orders\",deployment=\"dep-7\",route=\"all\""
        );
        assert_eq!(
            RouteMetrics::new("orders", "all").labels,
            "api=\"orders\",route=\"all\""
        );
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
        let m = RouteMetrics::new("a\"", "r");
        assert_eq!(m.labels, "api=\"a\\\"\",route=\"r\"");
    }
}

/// One request authorizer's counters: calls to its endpoint (and those
/// that failed), answers served from its cache, denies, call latency.
/// Labelled by authorizer id only.
pub struct AuthorizerMetrics {
    /// `authorizer="…"`, rendered once.
    labels: String,
    counts: Sharded<AuthorizerCounts>,
}

#[derive(Default)]
struct AuthorizerCounts {
    calls: AtomicU64,
    errors: AtomicU64,
    cache_hits: AtomicU64,
    denies: AtomicU64,
    latency: Histogram,
}

/// A counter family: its name, its help, and where each copy keeps it.
type CounterFamily<C> = (&'static str, &'static str, fn(&C) -> &AtomicU64);

impl AuthorizerMetrics {
    pub fn new(id: &str) -> Self {
        Self {
            labels: format!("authorizer=\"{}\"", escape(id)),
            counts: Sharded::default(),
        }
    }

    /// One call to the endpoint: how long it took, and whether it failed.
    pub fn call(&self, us: u64, failed: bool) {
        let c = self.counts.local();
        c.calls.fetch_add(1, Relaxed);
        if failed {
            c.errors.fetch_add(1, Relaxed);
        }
        c.latency.observe_us(us);
    }

    pub fn cache_hit(&self) {
        self.counts.local().cache_hits.fetch_add(1, Relaxed);
    }

    pub fn deny(&self) {
        self.counts.local().denies.fetch_add(1, Relaxed);
    }

    fn sum(&self, counter: impl Fn(&AuthorizerCounts) -> &AtomicU64) -> u64 {
        self.counts.iter().map(|c| counter(c).load(Relaxed)).sum()
    }

    /// Calls to the endpoint so far.
    pub fn calls(&self) -> u64 {
        self.sum(|c| &c.calls)
    }

    /// The families of every request authorizer in `all`.
    pub fn render<'a>(out: &mut String, all: impl Iterator<Item = &'a AuthorizerMetrics> + Clone) {
        let counters: [CounterFamily<AuthorizerCounts>; 4] = [
            (
                "tollgate_authorizer_calls_total",
                "Calls to a request authorizer's endpoint.",
                |c| &c.calls,
            ),
            (
                "tollgate_authorizer_errors_total",
                "Authorizer calls that failed (error, timeout, unreadable answer).",
                |c| &c.errors,
            ),
            (
                "tollgate_authorizer_cache_hits_total",
                "Requests a request authorizer decided from its cache.",
                |c| &c.cache_hits,
            ),
            (
                "tollgate_authorizer_denies_total",
                "Requests a request authorizer denied (403).",
                |c| &c.denies,
            ),
        ];
        for (name, help, counter) in counters {
            family(out, name, "counter", help);
            for m in all.clone() {
                let _ = writeln!(out, "{name}{{{}}} {}", m.labels, m.sum(counter));
            }
        }
        let name = "tollgate_authorizer_duration_seconds";
        family(
            out,
            name,
            "histogram",
            "Time a request authorizer's endpoint took to answer.",
        );
        for m in all {
            let h = Histogram::total(m.counts.iter().map(|c| &c.latency));
            if h.count() > 0 {
                h.render(out, name, &m.labels);
            }
        }
    }
}
