//! Helpers for the cache and observability tests: an origin that counts
//! hits per path and records what it was sent, a Prometheus text parser, a
//! TCP forwarder that can be cut (to take a data plane offline), and a data
//! plane with an access log.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tollgate_data_plane::{AccessLogTarget, DataPlaneConfig, DataPlaneHandle, Limits};

/// What the origin was sent, per request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub traceparent: Option<String>,
    pub key_id: Option<String>,
}

/// An upstream whose answer depends on the path:
/// - `…/slow…` waits 300 ms first;
/// - `…/nostore`, `…/private`, `…/cookie`, `…/maxage1` set
///   `Cache-Control: no-store`, `Cache-Control: private`, `Set-Cookie`,
///   `Cache-Control: max-age=1`;
/// - `…/status/404`, `…/status/500` answer with that status;
/// - `…/big` sends 2 MiB;
/// - anything else: JSON `{"path", "n" (hits of this path so far), "key"
///   (x-tollgate-key-id), "query"}`.
pub struct Origin {
    pub addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    total: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: CancellationToken,
}

impl Origin {
    pub async fn start() -> Origin {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let hits = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let total = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (h, t, s, st) = (hits.clone(), total.clone(), seen.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = st.cancelled() => return,
                    r = l.accept() => r.unwrap().0,
                };
                let (h, t, s) = (h.clone(), t.clone(), s.clone());
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let (h, t, s) = (h.clone(), t.clone(), s.clone());
                    async move { Ok::<_, Infallible>(answer(req, &h, &t, &s).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
                );
            }
        });
        Origin {
            addr,
            hits,
            total,
            seen,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests the origin answered for `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn answer(
    req: http::Request<Incoming>,
    hits: &Mutex<HashMap<String, usize>>,
    total: &AtomicUsize,
    seen: &Mutex<Vec<Seen>>,
) -> http::Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: path.clone(),
        traceparent: header("traceparent"),
        key_id: header("x-tollgate-key-id"),
    });
    let n = {
        let mut h = hits.lock().unwrap();
        let n = h.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    total.fetch_add(1, Ordering::SeqCst);
    if path.contains("/slow") {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut res = http::Response::builder().header("content-type", "application/json");
    if path.ends_with("/nostore") {
        res = res.header("cache-control", "no-store");
    } else if path.ends_with("/private") {
        res = res.header("cache-control", "private, max-age=60");
    } else if path.ends_with("/cookie") {
        res = res.header("set-cookie", "session=abc");
    } else if path.ends_with("/maxage1") {
        res = res.header("cache-control", "max-age=1");
    }
    let status = if path.contains("/status/404") {
        404
    } else if path.contains("/status/500") {
        500
    } else {
        200
    };
    let body = if path.ends_with("/big") {
        Bytes::from(vec![b'x'; 2 * 1024 * 1024])
    } else {
        Bytes::from(
            serde_json::json!({
                "path": path, "n": n,
                "key": header("x-tollgate-key-id"),
                "query": req.uri().query(),
            })
            .to_string(),
        )
    };
    res.status(status).body(Full::new(body)).unwrap()
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parse the text format strictly enough to catch malformed output: every
/// sample belongs to a family announced by `# TYPE`, labels are quoted and
/// escaped, values are numbers.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut families: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                matches!(kind, "counter" | "gauge" | "histogram"),
                "bad type in {line:?}"
            );
            assert!(!families.contains(&name.to_string()), "family {name} twice");
            families.push(name.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (head, value) = line.rsplit_once(' ').expect("sample value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match head.split_once('{') {
            None => (head.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                (name.to_string(), parse_labels(body, line))
            }
        };
        let family_ok = families.iter().any(|f| {
            name == *f
                || [
                    f.clone() + "_bucket",
                    f.clone() + "_sum",
                    f.clone() + "_count",
                ]
                .contains(&name)
        });
        assert!(family_ok, "sample {name} has no TYPE line");
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

fn parse_labels(body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "unquoted label in {line:?}");
        let mut value = String::new();
        loop {
            match chars.next().expect("unterminated label") {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => panic!("bad escape in {line:?}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key, value);
        match chars.next() {
            Some(',') => continue,
            None => break,
            Some(c) => panic!("unexpected {c:?} in {line:?}"),
        }
    }
    labels
}

/// The sum of samples named `name` whose labels include `labels`.
pub fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

pub async fn scrape(url: &str) -> Vec<Sample> {
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    parse_metrics(&text)
}

/// A TCP forwarder to `target` on `listen`; `cut` closes the listener and
/// every connection, as a network partition would.
pub struct Forwarder {
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl Forwarder {
    pub async fn start(listen: &str, target: SocketAddr) -> Forwarder {
        let mut l = None;
        for _ in 0..100 {
            if let Ok(x) = TcpListener::bind(listen).await {
                l = Some(x);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let l = l.expect("forwarder binds");
        let addr = l.local_addr().unwrap();
        let stop = CancellationToken::new();
        let st = stop.clone();
        tokio::spawn(async move {
            loop {
                let (mut a, _) = tokio::select! {
                    _ = st.cancelled() => return,
                    r = l.accept() => match r { Ok(c) => c, Err(_) => continue },
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let Ok(mut b) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                        _ = st.cancelled() => {}
                    }
                });
            }
        });
        Forwarder { addr, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn cut(&self) {
        self.stop.cancel();
    }
}

/// A data plane whose access log goes to `access_log`.
pub async fn start_dp_logged(
    control_plane: Vec<String>,
    access_log: AccessLogTarget,
) -> DataPlaneHandle {
    start_dp_at(control_plane, access_log, None).await
}

pub async fn start_dp_at(
    control_plane: Vec<String>,
    access_log: AccessLogTarget,
    state_dir: Option<&Path>,
) -> DataPlaneHandle {
    tollgate_data_plane::start(DataPlaneConfig {
        node_id: format!("dp-{:x}", rand::random::<u32>()),
        control_plane,
        cluster_token: crate::common::CLUSTER_TOKEN.into(),
        cluster_tls: None,
        proxy_listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        status_listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        state_dir: state_dir.map(Path::to_path_buf),
        tls: None,
        limits: Limits::default(),
        grace: Duration::from_secs(5),
        access_log,
        cache_max_bytes: tollgate_data_plane::cache::DEFAULT_CAPACITY_BYTES,
    })
    .await
    .expect("data plane starts")
}
