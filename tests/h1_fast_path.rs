//! The data plane's HTTP/1.1 fast path (`data-plane/src/h1.rs`), seen
//! from a raw TCP client: a real one-node control plane, a data plane, and
//! an upstream written here, so each test decides exactly which bytes go
//! out on one client connection and reads back exactly what came in.
//!
//! Plain-TCP connections are served by the fast path until the first
//! request it does not take (chunked or large uploads, HTTP/1.0, `Expect`,
//! malformed heads...), which hands the connection, with the bytes already
//! read, to hyper. So most tests here first send a request the fast path
//! serves, then something else on the same connection.

use crate::common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::dp::{start_dp_with, wait_for_revision};
use common::{api_doc, init_tracing, Cluster};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tollgate_data_plane::{DataPlaneHandle, Limits};

/// Generous bound for anything that should be quick.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The upstream
// ---------------------------------------------------------------------------

/// An HTTP/1.1 upstream (hyper's server) that answers by path:
///
/// - `/echo`: the request body, byte for byte (and records it);
/// - `/big`: `big_body()`, with a Content-Length;
/// - `/chunked`: two chunks, no length (so chunked on the wire);
/// - `/stream`: chunk `first-chunk`, then `second-chunk` only once the test
///   calls `release`;
/// - `/slow`: `slow done` after 1 s;
/// - `/nothing`: 204 No Content;
/// - `/sized`: 50 bytes with `Content-Length: 50` (none for HEAD);
/// - anything else: `ok <path>`.
struct Upstream {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Bytes>>>,
    release: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type UpBody = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> UpBody {
    Full::new(b.into()).boxed()
}

/// A body of frames sent on a channel: no size hint, so chunked.
fn channel_body() -> (mpsc::Sender<Result<Frame<Bytes>, Infallible>>, UpBody) {
    let (tx, rx) = mpsc::channel(4);
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    (tx, body.boxed())
}

fn big_body() -> Bytes {
    (0..300_000u32).map(|i| b'a' + (i % 23) as u8).collect()
}

impl Upstream {
    async fn start() -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(Notify::new());
        let (b, r) = (bodies.clone(), release.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = l.accept().await {
                let _ = stream.set_nodelay(true);
                let (b, r) = (b.clone(), r.clone());
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let (b, r) = (b.clone(), r.clone());
                    async move { Ok::<_, Infallible>(answer(req, b, r).await) }
                });
                conns.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            bodies,
            release,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn bodies(&self) -> Vec<Bytes> {
        self.bodies.lock().unwrap().clone()
    }
}

async fn answer(
    req: http::Request<Incoming>,
    bodies: Arc<Mutex<Vec<Bytes>>>,
    release: Arc<Notify>,
) -> http::Response<UpBody> {
    let path = req.uri().path().to_string();
    let res = http::Response::builder().header("x-upstream-path", &path);
    match path.as_str() {
        "/echo" => {
            let Ok(body) = req.into_body().collect().await else {
                // The gateway gave up on the request.
                return res.status(500).body(full("body broken")).unwrap();
            };
            let body = body.to_bytes();
            bodies.lock().unwrap().push(body.clone());
            res.body(full(body)).unwrap()
        }
        "/big" => res.body(full(big_body())).unwrap(),
        "/chunked" => {
            let (tx, body) = channel_body();
            tx.send(Ok(Frame::data(Bytes::from_static(b"chunk-one;"))))
                .await
                .unwrap();
            tx.send(Ok(Frame::data(Bytes::from_static(b"chunk-two"))))
                .await
                .unwrap();
            res.body(body).unwrap()
        }
        "/stream" => {
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"first-chunk"))))
                    .await;
                // Held until the client has seen the first chunk; the
                // bound only keeps a broken run from hanging.
                let _ = tokio::time::timeout(PATIENCE, release.notified()).await;
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"second-chunk"))))
                    .await;
            });
            res.body(body).unwrap()
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            res.body(full("slow done")).unwrap()
        }
        "/nothing" => res.status(204).body(full(Bytes::new())).unwrap(),
        "/sized" => res
            .header("content-length", "50")
            .body(full(vec![b'x'; 50]))
            .unwrap(),
        _ => res.body(full(format!("ok {path}"))).unwrap(),
    }
}

// ---------------------------------------------------------------------------
// The gateway
// ---------------------------------------------------------------------------

/// A one-node control plane and a data plane with `limits`, holding API
/// `h1` on `/h1` in front of `up` (with an upstream timeout of
/// `timeout_ms`) and API `m` on `/m`, a mock answering `mocked`.
async fn gateway_full(
    up: &Upstream,
    limits: Limits,
    timeout_ms: u64,
) -> (Cluster, DataPlaneHandle) {
    let c = Cluster::start(1).await;
    let dp = start_dp_with(vec![c.nodes[0].grpc_url()], None, limits, None).await;
    let admin = c.nodes[0].client();
    let mut api = api_doc("h1", "/h1", &up.url());
    api["upstream"]["timeout_ms"] = json!(timeout_ms);
    admin.must_put("/v1/apis/h1", api).await;
    let mock = json!({"id": "m", "base_path": "/m",
                      "routes": [{"id": "r", "path": "/", "mock": {"body": "mocked"}}]});
    let rev = admin.must_put("/v1/apis/m", mock).await;
    wait_for_revision(&dp, rev).await;
    (c, dp)
}

async fn gateway(up: &Upstream) -> (Cluster, DataPlaneHandle) {
    gateway_full(up, Limits::default(), 29_000).await
}

// ---------------------------------------------------------------------------
// A raw HTTP/1.1 client
// ---------------------------------------------------------------------------

/// One response as read off the wire.
struct Resp {
    status: u16,
    /// The head as text, for failure messages.
    head: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.body[..self.body.len().min(200)];
        write!(
            f,
            "{}[{} body bytes: {:?}]",
            self.head,
            self.body.len(),
            String::from_utf8_lossy(b)
        )
    }
}

impl Resp {
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn one(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "more than one {name}: {self:?}");
        all.first().copied()
    }

    fn chunked(&self) -> bool {
        self.all("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn says_close(&self) -> bool {
        self.all("connection")
            .iter()
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The framing a fast-path answer must have: exactly one
    /// Content-Length, or chunked and no Content-Length; and one Date.
    fn assert_framed(&self, what: &str) {
        let lengths = self.all("content-length");
        if self.chunked() {
            assert!(lengths.is_empty(), "{what}: chunked and a length: {self:?}");
        } else {
            assert_eq!(lengths.len(), 1, "{what}: one content-length: {self:?}");
            assert_eq!(lengths[0], self.body.len().to_string(), "{what}: {self:?}");
        }
        assert_eq!(self.all("date").len(), 1, "{what}: one date: {self:?}");
    }
}

/// One client connection, with the bytes read and not yet used.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        Conn { s, buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    /// Read more; `false` at the end of the stream (a reset counts as one).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(PATIENCE, self.s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!(
                "nothing read within {PATIENCE:?}; holding {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Take `n` bytes, reading as needed.
    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(
                self.fill().await,
                "closed after {} of {n} bytes",
                self.buf.len()
            );
        }
        self.buf.drain(..n).collect()
    }

    /// Take one CRLF-terminated line (without the CRLF).
    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return line;
            }
            assert!(
                self.fill().await,
                "closed in the middle of a line: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// A response head: (status, head text, headers).
    async fn head(&mut self) -> Resp {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(
                self.fill().await,
                "closed before a whole response head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8_lossy(&self.buf[..end + 4]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1."), "{head:?}");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("a status line: {head:?}"));
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap_or_else(|| panic!("{head:?}"));
                (k.trim().to_string(), v.trim().to_string())
            })
            .collect();
        Resp {
            status,
            head,
            headers,
            body: Vec::new(),
        }
    }

    /// One chunk of a chunked body; `None` at the last chunk (trailers,
    /// if any, are read and dropped).
    async fn chunk(&mut self) -> Option<Vec<u8>> {
        let size_line = self.line().await;
        let size = size_line.split(';').next().unwrap().trim();
        let size = usize::from_str_radix(size, 16)
            .unwrap_or_else(|_| panic!("a chunk size line: {size_line:?}"));
        if size == 0 {
            while !self.line().await.is_empty() {}
            return None;
        }
        let data = self.take(size).await;
        assert_eq!(self.take(2).await, b"\r\n", "CRLF after chunk data");
        Some(data)
    }

    /// A whole response; `head_only` for the answer to a HEAD.
    async fn response(&mut self, head_only: bool) -> Resp {
        let mut r = self.head().await;
        if head_only || r.status < 200 || r.status == 204 || r.status == 304 {
            return r;
        }
        if r.chunked() {
            while let Some(c) = self.chunk().await {
                r.body.extend_from_slice(&c);
            }
        } else if let Some(n) = r.one("content-length") {
            let n: usize = n.parse().unwrap();
            r.body = self.take(n).await;
        } else {
            while self.fill().await {}
            r.body = std::mem::take(&mut self.buf);
        }
        r
    }

    async fn get(&mut self, path: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n\r\n").as_bytes())
            .await;
        self.response(false).await
    }

    /// Whether the server closes the connection within `within`; any
    /// byte it sends first fails the test.
    async fn closes_within(&mut self, within: Duration) -> bool {
        let mut chunk = [0u8; 4096];
        let closed = match tokio::time::timeout(within, self.s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(n)) => panic!(
                "bytes where a close was expected: {:?}",
                String::from_utf8_lossy(&chunk[..n])
            ),
            Err(_) => false,
        };
        assert!(
            self.buf.is_empty(),
            "stray bytes: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        closed
    }
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

fn chunked_post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut req =
        format!("POST {path} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    for part in body.chunks(700) {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    req
}

fn pattern(n: usize, seed: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + ((i * 7 + seed) % 26) as u8).collect()
}

fn assert_ok(r: &Resp, body: &str, what: &str) {
    assert_eq!((r.status, r.text().as_str()), (200, body), "{what}: {r:?}");
    r.assert_framed(what);
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    init_tracing();
    let up = Upstream::start().await;
    let (_c, dp) = gateway(&up).await;

    let mut conn = Conn::open(dp.proxy_addr).await;
    conn.send(
        b"GET /h1/a HTTP/1.1\r\nHost: gw.test\r\n\r\n\
          GET /h1/b HTTP/1.1\r\nHost: gw.test\r\n\r\n\
          GET /h1/c HTTP/1.1\r\nHost: gw.test\r\n\r\n",
    )
    .await;
    for p in ["a", "b", "c"] {
        let r = conn.response(false).await;
        assert_ok(&r, &format!("ok /{p}"), &format!("pipelined GET /{p}"));
    }

    // A POST with its body between two GETs, and a gateway-made answer,
    // all in one write.
    let body = pattern(1000, 1);
    let mut batch = b"GET /h1/d HTTP/1.1\r\nHost: gw.test\r\n\r\n".to_vec();
    batch.extend(post("/h1/echo", &body));
    batch.extend_from_slice(b"GET /m HTTP/1.1\r\nHost: gw.test\r\n\r\n");
    batch.extend_from_slice(b"GET /h1/e HTTP/1.1\r\nHost: gw.test\r\n\r\n");
    conn.send(&batch).await;
    assert_ok(&conn.response(false).await, "ok /d", "GET /d");
    let r = conn.response(false).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body == body, "the echoed body: {r:?}");
    r.assert_framed("POST /echo");
    assert_ok(&conn.response(false).await, "mocked", "GET /m");
    assert_ok(&conn.response(false).await, "ok /e", "GET /e");

    // More than fits one read of the server's buffer.
    let batch: String = (0..100)
        .map(|i| format!("GET /h1/many/{i} HTTP/1.1\r\nHost: gw.test\r\nX-Pad: {i:0>40}\r\n\r\n"))
        .collect();
    assert!(batch.len() > 8 * 1024);
    conn.send(batch.as_bytes()).await;
    for i in 0..100 {
        let r = conn.response(false).await;
        assert_ok(&r, &format!("ok /many/{i}"), "one of 100 pipelined");
    }
    assert!(!conn.closes_within(Duration::from_millis(200)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_answers_are_framed_once_and_dated() {
    init_tracing();
    let up = Upstream::start().await;
    let (_c, dp) = gateway(&up).await;

    let mut conn = Conn::open(dp.proxy_addr).await;
    for round in 0..2 {
        let r = conn.get("/h1/x").await;
        assert_ok(&r, "ok /x", "GET /x");
        assert_eq!(r.one("content-length"), Some("5"));
        assert!(r.one("x-request-id").is_some(), "{r:?}");
        assert!(!r.says_close(), "{r:?}");

        // Larger than the writer's gathering buffer: written on its own.
        let r = conn.get("/h1/big").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body == big_body(), "round {round}: big body differs");
        assert_eq!(r.one("content-length"), Some("300000"));
        r.assert_framed("GET /big");

        // No length from the upstream: chunked to the client.
        let r = conn.get("/h1/chunked").await;
        assert_ok(&r, "chunk-one;chunk-two", "GET /chunked");
        assert!(r.chunked(), "{r:?}");

        // No body at all.
        let r = conn.get("/h1/nothing").await;
        assert_eq!((r.status, r.body.len()), (204, 0), "{r:?}");
        assert!(r.all("content-length").is_empty() && !r.chunked(), "{r:?}");
        assert_eq!(r.all("date").len(), 1, "{r:?}");

        // Answers made by the gateway itself: a mock, a 404.
        let r = conn.get("/m").await;
        assert_ok(&r, "mocked", "GET /m");
        let r = conn.get("/nowhere").await;
        assert_eq!(r.status, 404, "{r:?}");
        assert_eq!(r.text(), r#"{"message":"Not Found"}"#);
        r.assert_framed("GET /nowhere");
    }
    assert!(!conn.closes_within(Duration::from_millis(200)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_handed_to_hyper_mid_way_keeps_serving() {
    init_tracing();
    let up = Upstream::start().await;
    let (_c, dp) = gateway(&up).await;
    let body = pattern(5000, 3);

    // One request at a time: fast path, then chunked (hyper's), then more.
    let mut conn = Conn::open(dp.proxy_addr).await;
    assert_ok(&conn.get("/h1/one").await, "ok /one", "GET before");
    conn.send(&chunked_post("/h1/echo", &body)).await;
    let r = conn.response(false).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body == body, "chunked upload echoed: {r:?}");
    assert_ok(&conn.get("/h1/two").await, "ok /two", "GET after");
    assert_ok(&conn.get("/h1/three").await, "ok /three", "GET after");

    // The same three in one write: the hand-over carries the bytes read.
    let mut conn = Conn::open(dp.proxy_addr).await;
    let mut batch = b"GET /h1/one HTTP/1.1\r\nHost: gw.test\r\n\r\n".to_vec();
    batch.extend(chunked_post("/h1/echo", &body));
    batch.extend_from_slice(b"GET /h1/two HTTP/1.1\r\nHost: gw.test\r\n\r\n");
    conn.send(&batch).await;
    assert_ok(&conn.response(false).await, "ok /one", "pipelined GET");
    let r = conn.response(false).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body == body, "pipelined chunked upload: {r:?}");
    assert_ok(
        &conn.response(false).await,
        "ok /two",
        "pipelined GET after",
    );

    // Every upload reached the upstream whole.
    assert_eq!(up.bodies().len(), 2);
    for got in up.bodies() {
        assert!(got == body, "the upstream read {} bytes", got.len());
    }

    // Other hand-overs: a body over 64 KiB, an Expect, and HTTP/1.0 (which
    // closes the connection after its answer).
    let large = pattern(64 * 1024 + 1, 4);
    let mut conn = Conn::open(dp.proxy_addr).await;
    assert_ok(&conn.get("/h1/one").await, "ok /one", "GET before");
    conn.send(&post("/h1/echo", &large)).await;
    let r = conn.response(false).await;
    assert!(r.status == 200 && r.body == large, "large upload: {r:?}");
    assert_ok(&conn.get("/h1/two").await, "ok /two", "GET after");

    let mut conn = Conn::open(dp.proxy_addr).await;
    assert_ok(&conn.get("/h1/one").await, "ok /one", "GET before");
    conn.send(
        b"POST /h1/echo HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n\
          Expect: 100-continue\r\n\r\n",
    )
    .await;
    let r = conn.head().await;
    assert_eq!(r.status, 100, "{r:?}");
    conn.send(b"hello").await;
    assert_ok(&conn.response(false).await, "hello", "after 100-continue");
    assert_ok(&conn.get("/h1/two").await, "ok /two", "GET after");

    let mut conn = Conn::open(dp.proxy_addr).await;
    assert_ok(&conn.get("/h1/one").await, "ok /one", "GET before");
    conn.send(b"GET /h1/old HTTP/1.0\r\nHost: gw.test\r\n\r\n")
        .await;
    let r = conn.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok /old"), "{r:?}");
    assert!(conn.closes_within(PATIENCE).await, "HTTP/1.0 closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_bodies_reach_the_upstream_byte_exact() {
    init_tracing();
    let up = Upstream::start().await;
    let (_c, dp) = gateway(&up).await;

    let mut conn = Conn::open(dp.proxy_addr).await;
    let one = pattern(1000, 5);
    conn.send(&post("/h1/echo", &one)).await;
    let r = conn.response(false).await;
    assert!(r.status == 200 && r.body == one, "{r:?}");
    r.assert_framed("POST 1000");

    // Head first, then the body in pieces with pauses between them.
    let two = pattern(3000, 6);
    conn.send(
        format!(
            "POST /h1/echo HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {}\r\n\r\n",
            two.len()
        )
        .as_bytes(),
    )
    .await;
    for part in two.chunks(700) {
        tokio::time::sleep(Duration::from_millis(60)).await;
        conn.send(part).await;
    }
    let r = conn.response(false).await;
    assert!(r.status == 200 && r.body == two, "{r:?}");

    // The head itself split mid-line, body in the same write as its end.
    let three = pattern(10, 7);
    let req = post("/h1/echo", &three);
    conn.send(&req[..20]).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    conn.send(&req[20..]).await;
    let r = conn.response(false).await;
    assert!(r.status == 200 && r.body == three, "{r:?}");

    // The largest body the fast path reads whole, and an empty one.
    let four = pattern(64 * 1024, 8);
    conn.send(&post("/h1/echo", &four)).await;
    let r = conn.response(false).await;
    assert!(r.status == 200 && r.body == four, "64 KiB: {r:?}");
    conn.send(&post("/h1/echo", b"")).await;
    let r = conn.response(false).await;
    assert_eq!((r.status, r.body.len()), (200, 0), "{r:?}");
    r.assert_framed("empty POST");

    let want: Vec<Bytes> = [one, two, three, four, vec![]]
        .into_iter()
        .map(Bytes::from)
        .collect();
    assert!(up.bodies() == want, "the upstream read other bodies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_is_answered_then_closed() {
    init_tracing();
    let up = Upstream::start().await;
    let (_c, dp) = gateway(&up).await;

    for header in ["close", "keep-alive, Close"] {
        let mut conn = Conn::open(dp.proxy_addr).await;
        assert_ok(&conn.get("/h1/first").await, "ok /first", "GET before");
        conn.send(
            format!("GET /h1/last HTTP/1.1\r\nHost: gw.test\r\nConnection: {header}\r\n\r\n")
                .as_bytes(),
        )
        .await;
        let r = conn.response(false).await;
        assert_ok(&r, "ok /last", header);
        assert!(r.says_close(), "{header}: {r:?}");
        assert!(
            conn.closes_within(Duration::from_secs(2)).await,
            "{header}: the connection stays open"
        );
    }

    // A request pipelined behind the closing one is not answered.
    let mut conn = Conn::open(dp.proxy_addr).await;
    conn.send(
        b"GET /h1/last HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n\
          GET /h1/never HTTP/1.1\r\nHost: gw.test\r\n\r\n",
    )
    .await;
    let r = conn.response(false).await;
    assert_ok(&r, "ok /last", "closing request");
    assert!(r.says_close(), "{r:?}");
    assert!(conn.closes_within(Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_have_a_length_and_no_body() {
    init_tracing();
    let up = Upstream::start().await;
    let (_c, dp) = gateway(&up).await;

    let mut conn = Conn::open(dp.proxy_addr).await;
    for round in 0..2 {
        conn.send(b"HEAD /h1/sized HTTP/1.1\r\nHost: gw.test\r\n\r\n")
            .await;
        let r = conn.response(true).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.one("content-length"), Some("50"), "{r:?}");
        assert!(!r.chunked(), "{r:?}");
        assert_eq!(r.all("date").len(), 1, "{r:?}");
        // Give stray body bytes time to arrive, then see none came.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !conn.closes_within(Duration::from_millis(100)).await,
            "round {round}"
        );
        assert_ok(&conn.get("/h1/after").await, "ok /after", "GET after HEAD");

        // HEAD of a gateway-made answer.
        conn.send(b"HEAD /m HTTP/1.1\r\nHost: gw.test\r\n\r\n")
            .await;
        let r = conn.response(true).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.one("content-length"), Some("6"), "{r:?}");
        assert_ok(&conn.get("/h1/after").await, "ok /after", "GET after HEAD");
    }

    // Pipelined: HEAD then GET in one write; the GET's answer must follow
    // the HEAD's head directly.
    conn.send(
        b"HEAD /h1/sized HTTP/1.1\r\nHost: gw.test\r\n\r\n\
          GET /h1/next HTTP/1.1\r\nHost: gw.test\r\n\r\n",
    )
    .await;
    let r = conn.response(true).await;
    assert_eq!(
        (r.status, r.one("content-length")),
        (200, Some("50")),
        "{r:?}"
    );
    assert_ok(&conn.response(false).await, "ok /next", "GET after HEAD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_or_malformed_heads_after_a_fast_request_get_400_and_a_close() {
    init_tracing();
    let up = Upstream::start().await;
    let (_c, dp) = gateway(&up).await;

    let cases: &[(&str, &[u8])] = &[
        (
            "CL and TE",
            b"POST /h1/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "TE and CL",
            b"POST /h1/echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        ),
        (
            "two lengths",
            b"POST /h1/echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "two hosts",
            b"GET /h1/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ),
        (
            "bad header bytes",
            b"GET /h1/x HTTP/1.1\r\nHost: h\r\nX-Bad: a\x01b\r\n\r\n",
        ),
        (
            "bad header name",
            b"GET /h1/x HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n",
        ),
        (
            "length not digits",
            b"POST /h1/echo HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello",
        ),
    ];
    for (what, bytes) in cases {
        // One request at a time, and pipelined behind the good one.
        for pipelined in [false, true] {
            let mut conn = Conn::open(dp.proxy_addr).await;
            let good = b"GET /h1/good HTTP/1.1\r\nHost: gw.test\r\n\r\n";
            if pipelined {
                let mut batch = good.to_vec();
                batch.extend_from_slice(bytes);
                conn.send(&batch).await;
            } else {
                conn.send(good).await;
            }
            assert_ok(&conn.response(false).await, "ok /good", what);
            if !pipelined {
                conn.send(bytes).await;
            }
            let r = conn.response(false).await;
            assert_eq!(r.status, 400, "{what} (pipelined: {pipelined}): {r:?}");
            assert!(
                conn.closes_within(Duration::from_secs(2)).await,
                "{what} (pipelined: {pipelined}): the connection must close"
            );
        }
    }
    assert!(up.bodies().is_empty(), "nothing reached /echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_left_partial_is_cut_off_after_the_header_read_timeout() {
    init_tracing();
    let up = Upstream::start().await;
    let limits = Limits {
        header_read_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let (_c, dp) = gateway_full(&up, limits, 29_000).await;

    // After a fast-path request, and as the first request.
    for first in [true, false] {
        let mut conn = Conn::open(dp.proxy_addr).await;
        if first {
            assert_ok(&conn.get("/h1/x").await, "ok /x", "GET before");
        }
        conn.send(b"GET /h1/y HTTP/1.1\r\nHost: gw.test\r\nX-Half: ")
            .await;
        let t = Instant::now();
        assert!(
            conn.closes_within(Duration::from_secs(5)).await,
            "a partial head (after a request: {first}) must be cut off"
        );
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_millis(2500),
            "cut off after {took:?}, the timeout is 500 ms"
        );
    }

    // A connection that sends nothing at all is cut off at the header read
    // timeout too, not kept for the idle timeout (60 s here).
    let mut conn = Conn::open(dp.proxy_addr).await;
    let t = Instant::now();
    assert!(
        conn.closes_within(Duration::from_secs(5)).await,
        "a silent connection must be cut off"
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(2500),
        "silent connection cut off after {took:?}, the timeout is 500 ms"
    );

    // A head trickled a byte at a time: the clock runs from its first byte,
    // not from the last.
    let mut conn = Conn::open(dp.proxy_addr).await;
    assert_ok(&conn.get("/h1/x").await, "ok /x", "GET before");
    let t = Instant::now();
    let head = b"GET /h1/y HTTP/1.1\r\nHost: gw.test\r\nX-Trickle: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut = false;
    for b in head.iter() {
        if conn.s.write_all(std::slice::from_ref(b)).await.is_err() {
            cut = true;
            break;
        }
        if conn.closes_within(Duration::from_millis(80)).await {
            cut = true;
            break;
        }
    }
    let took = t.elapsed();
    assert!(cut, "a trickled head was never cut off ({took:?})");
    assert!(
        took < Duration::from_millis(2500),
        "cut off after {took:?}, the timeout is 500 ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_is_not_held_back() {
    init_tracing();
    let up = Upstream::start().await;
    let (_c, dp) = gateway(&up).await;

    let mut conn = Conn::open(dp.proxy_addr).await;
    assert_ok(&conn.get("/h1/x").await, "ok /x", "GET before");
    for round in 0..2 {
        conn.send(b"GET /h1/stream HTTP/1.1\r\nHost: gw.test\r\n\r\n")
            .await;
        let r = conn.head().await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.chunked(), "unknown length: chunked: {r:?}");
        assert!(r.all("content-length").is_empty(), "{r:?}");
        assert_eq!(r.all("date").len(), 1, "{r:?}");
        // The upstream sends its second chunk only once the first is here:
        // a writer that waits for the end of the body never gets there.
        let first = tokio::time::timeout(Duration::from_secs(3), conn.chunk())
            .await
            .unwrap_or_else(|_| panic!("round {round}: the first chunk was held back"));
        assert_eq!(first.as_deref(), Some(&b"first-chunk"[..]));
        up.release.notify_one();
        let mut rest = Vec::new();
        while let Some(c) = conn.chunk().await {
            rest.extend(c);
        }
        assert_eq!(String::from_utf8_lossy(&rest), "second-chunk");
        assert_ok(&conn.get("/h1/after").await, "ok /after", "GET after");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_closes_idle_connections_and_finishes_requests() {
    init_tracing();
    let up = Upstream::start().await;
    let (_c, dp) = gateway(&up).await;
    let addr = dp.proxy_addr;

    // Idle on the fast path.
    let mut idle = Conn::open(addr).await;
    assert_ok(&idle.get("/h1/x").await, "ok /x", "idle's request");
    // Idle after a hand-over to hyper.
    let mut idle_hyper = Conn::open(addr).await;
    assert_ok(&idle_hyper.get("/h1/x").await, "ok /x", "GET before");
    idle_hyper.send(&chunked_post("/h1/echo", b"handed")).await;
    assert_ok(&idle_hyper.response(false).await, "handed", "chunked");
    // In flight on the fast path: the upstream answers after 1 s.
    let mut busy = Conn::open(addr).await;
    assert_ok(&busy.get("/h1/x").await, "ok /x", "busy's first request");
    busy.send(b"GET /h1/slow HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let t = Instant::now();
    let shutdown = tokio::spawn(dp.shutdown());
    assert!(
        idle.closes_within(Duration::from_millis(700)).await,
        "an idle fast-path connection stays open during shutdown"
    );
    assert!(
        idle_hyper.closes_within(Duration::from_millis(700)).await,
        "an idle hyper connection stays open during shutdown"
    );
    let r = busy.response(false).await;
    assert_ok(&r, "slow done", "the request in flight");
    assert!(r.says_close(), "answered while draining: {r:?}");
    assert!(busy.closes_within(Duration::from_secs(2)).await);
    tokio::time::timeout(PATIENCE, shutdown)
        .await
        .expect("shutdown finishes")
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "shutdown did not wait for the request in flight"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// A request whose body stalls part-way is not left hanging. On the fast
/// path (a body up to 64 KiB, read whole before the request goes in) the
/// body must arrive within the header read timeout, else the connection
/// closes; on hyper's path (a larger, streamed body) the request is already
/// under way upstream and gets the API's 504 once `timeout_ms` is up.
/// (This test found the fast path waiting forever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_small_body_does_not_hold_the_connection_forever() {
    init_tracing();
    let up = Upstream::start().await;
    let limits = Limits {
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(600),
        ..Limits::default()
    };
    let (_c, dp) = gateway_full(&up, limits, 1000).await;
    // hyper's path first (the body is over 64 KiB), then the fast path.
    for len in [100_000usize, 100] {
        let mut conn = Conn::open(dp.proxy_addr).await;
        assert_ok(&conn.get("/h1/x").await, "ok /x", "GET before");
        conn.send(
            format!(
                "POST /h1/echo HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {len}\r\n\r\n0123456789"
            )
            .as_bytes(),
        )
        .await;
        let t = Instant::now();
        let mut chunk = [0u8; 4096];
        let got = tokio::time::timeout(Duration::from_secs(5), conn.s.read(&mut chunk)).await;
        assert!(
            got.is_ok(),
            "Content-Length {len}, 10 bytes of body sent then nothing: after {:?} \
             (idle timeout 600 ms, upstream timeout 1 s) neither an answer nor a close",
            t.elapsed()
        );
    }
}
