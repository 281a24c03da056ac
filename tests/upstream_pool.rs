//! The data plane's own HTTP/1.1 connection pool for plain-HTTP targets
//! (`data-plane/src/conn_pool.rs`), seen from the outside: a real control
//! plane, a data plane, and an upstream written here on a bare TCP
//! listener, so the test counts the connections it accepts, sees each
//! request head as it was written, and decides when a connection closes.
//!
//! Each proxy worker thread has its own pool, and the data plane hands
//! client connections to its workers in turn: requests on one client
//! connection all run on one worker, so they share one pool.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::dp::{eventually, start_dp, wait_for_revision};
use common::{api_doc, init_tracing, Cluster};
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tollgate_data_plane::DataPlaneHandle;

/// Generous bound for anything that should be quick.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The upstream
// ---------------------------------------------------------------------------

/// One request as the upstream read it.
#[derive(Debug, Clone)]
struct Seen {
    /// Which accepted connection it came on (0 = the first one).
    conn: usize,
    /// The request line, e.g. `GET /x?q=1 HTTP/1.1`.
    line: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn path(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or("")
    }

    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// One step of an answer.
enum Step {
    Write(Bytes),
    /// Write these bytes in pieces of this many bytes, each flushed and
    /// followed by a short pause, so the gateway reads them piecemeal (a
    /// piece of 1: byte by byte).
    Trickle(Bytes, usize),
    Sleep(Duration),
    /// Wait until the test says go.
    Wait(Arc<Notify>),
}

/// What the connection does once the answer is written.
#[derive(Clone, Copy)]
enum After {
    /// Read the next request.
    KeepOpen,
    /// Close the socket now.
    Close,
    /// Close the socket after this long.
    CloseIn(Duration),
}

struct Answer {
    steps: Vec<Step>,
    after: After,
}

type Script = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

#[derive(Default)]
struct Record {
    accepted: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    /// The request bodies as read, in order, each with the connection it
    /// came on.
    bodies: Mutex<Vec<(usize, Bytes)>>,
    /// Connections whose handler ended (the peer closed, or it closed).
    ended: Mutex<Vec<usize>>,
}

/// An HTTP/1.1 upstream that answers by script.
struct RawUpstream {
    addr: SocketAddr,
    record: Arc<Record>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    async fn start(script: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> RawUpstream {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let record = Arc::new(Record::default());
        let script: Script = Arc::new(script);
        let rec = record.clone();
        let task = tokio::spawn(async move {
            let mut handlers = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = l.accept().await else {
                    return;
                };
                let conn = rec.accepted.fetch_add(1, Ordering::SeqCst);
                handlers.spawn(serve_conn(stream, conn, rec.clone(), script.clone()));
            }
        });
        RawUpstream { addr, record, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn accepted(&self) -> usize {
        self.record.accepted.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.record.seen.lock().unwrap().clone()
    }

    fn bodies(&self) -> Vec<(usize, Bytes)> {
        self.record.bodies.lock().unwrap().clone()
    }

    fn ended(&self, conn: usize) -> bool {
        self.record.ended.lock().unwrap().contains(&conn)
    }

    /// How many requests each accepted connection carried.
    fn requests_per_conn(&self) -> Vec<usize> {
        let mut per = vec![0; self.accepted()];
        for s in self.seen() {
            per[s.conn] += 1;
        }
        per
    }
}

async fn serve_conn(mut stream: TcpStream, conn: usize, rec: Arc<Record>, script: Script) {
    // Each write its own segment, for `Step::Trickle`.
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    'requests: loop {
        let Some(seen) = read_request(&mut stream, &mut buf, conn).await else {
            break;
        };
        rec.seen.lock().unwrap().push(seen.clone());
        let answer = script(&seen);
        // The answer goes out before the request body is read, as servers
        // that refuse or accept a request on its head alone do.
        for step in answer.steps {
            match step {
                Step::Write(b) => {
                    if stream.write_all(&b).await.is_err() {
                        break 'requests;
                    }
                }
                Step::Trickle(b, piece) => {
                    for part in b.chunks(piece) {
                        if stream.write_all(part).await.is_err() || stream.flush().await.is_err() {
                            break 'requests;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                Step::Sleep(d) => tokio::time::sleep(d).await,
                Step::Wait(n) => n.notified().await,
            }
        }
        let Some(body) = read_body(&mut stream, &mut buf, &seen).await else {
            break;
        };
        rec.bodies.lock().unwrap().push((conn, body));
        match answer.after {
            After::KeepOpen => {}
            After::Close => break,
            After::CloseIn(d) => {
                tokio::time::sleep(d).await;
                break;
            }
        }
    }
    drop(stream);
    rec.ended.lock().unwrap().push(conn);
}

/// Read one request head; `None` once the peer closed or sent garbage.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>, conn: usize) -> Option<Seen> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8(buf[..end].to_vec()).ok()?;
    buf.drain(..end + 4);
    let mut lines = head.split("\r\n");
    let line = lines.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Seen {
        conn,
        line,
        headers,
    })
}

/// Read the request's `Content-Length` body; `None` once the peer closed
/// first.
async fn read_body(stream: &mut TcpStream, buf: &mut Vec<u8>, seen: &Seen) -> Option<Bytes> {
    let mut left: usize = seen
        .header("content-length")
        .first()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = Vec::with_capacity(left);
    loop {
        let n = left.min(buf.len());
        body.extend(buf.drain(..n));
        left -= n;
        if left == 0 {
            return Some(body.into());
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A `200` with `Content-Length`; `extra` is more header lines, each
/// ending in CRLF.
fn ok_with_length(body: &str, extra: &str) -> Bytes {
    Bytes::from(format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    ))
}

/// The body an upstream answers `path` with.
fn body_for(path: &str) -> String {
    format!("pong {path}")
}

// ---------------------------------------------------------------------------
// The gateway
// ---------------------------------------------------------------------------

/// A one-node control plane, a data plane, and API `pool` on `/pool` in
/// front of `upstream`. Nothing has reached the upstream yet when this
/// returns: it waits for the revision, not for a route to answer.
async fn gateway(upstream: &str) -> (Cluster, DataPlaneHandle) {
    gateway_with(pool_api(upstream)).await
}

/// API `pool` on `/pool`, without retries: a request the pool fails is
/// not saved by the gateway trying again (a connect error is retried).
fn pool_api(upstream: &str) -> serde_json::Value {
    let mut api = api_doc("pool", "/pool", upstream);
    api["upstream"]["retries"] = serde_json::json!(0);
    api
}

/// The same with an API document of the test's own.
async fn gateway_with(api: serde_json::Value) -> (Cluster, DataPlaneHandle) {
    let c = Cluster::start(1).await;
    let dp = start_dp(vec![c.nodes[0].grpc_url()], None).await;
    let rev = c.nodes[0].client().must_put("/v1/apis/pool", api).await;
    wait_for_revision(&dp, rev).await;
    (c, dp)
}

/// The data plane's proxy worker threads: `DataPlaneConfig` has no say,
/// the server starts one per core (`workers: 0`), as this process sees it.
fn proxy_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One client connection to the gateway: every request sent through it
/// runs on the same proxy worker, so with the same upstream pool.
struct GwConn {
    sender: SendRequest<Full<Bytes>>,
}

struct Answered {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

/// Shortened: a failure message shows at most 100 bytes of any value.
impl std::fmt::Debug for Answered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(100)]).into_owned();
        let headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), short(v.as_bytes())))
            .collect();
        f.debug_struct("Answered")
            .field("status", &self.status)
            .field("headers", &headers)
            .field("body", &short(&self.body))
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// How one exchange with the gateway ended.
#[derive(Debug)]
enum Outcome {
    /// A whole response.
    Whole(Answered),
    /// A response head, then the connection broke before the body's end.
    Cut {
        status: u16,
        headers: http::HeaderMap,
        received: Bytes,
    },
    /// The connection failed or closed before a response head.
    NoResponse(String),
}

impl Outcome {
    fn whole(self, what: &str) -> Answered {
        match self {
            Outcome::Whole(a) => a,
            other => panic!("{what}: want a whole response, got {other:?}"),
        }
    }
}

/// A request to the gateway, `Host: gw.test`.
fn gw_request(method: Method, path: &str, body: Bytes) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "gw.test")
        .body(Full::new(body))
        .unwrap()
}

impl GwConn {
    async fn open(addr: SocketAddr) -> GwConn {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        GwConn { sender }
    }

    async fn get(&mut self, path: &str) -> Answered {
        self.send(gw_request(Method::GET, path, Bytes::new()))
            .await
            .whole(&format!("GET {path}"))
    }

    /// Send `req` and read its answer, however it ends.
    async fn send(&mut self, req: http::Request<Full<Bytes>>) -> Outcome {
        let what = format!("{} {}", req.method(), req.uri());
        let exchange = async {
            if let Err(e) = self.sender.ready().await {
                return Outcome::NoResponse(format!("connection not ready: {e}"));
            }
            let res = match self.sender.send_request(req).await {
                Ok(res) => res,
                Err(e) => return Outcome::NoResponse(e.to_string()),
            };
            let (parts, mut body) = res.into_parts();
            let mut data = BytesMut::new();
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return Outcome::Cut {
                        status: parts.status.as_u16(),
                        headers: parts.headers,
                        received: data.freeze(),
                    };
                };
                if let Ok(d) = frame.into_data() {
                    data.extend_from_slice(&d);
                }
            }
            Outcome::Whole(Answered {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: data.freeze(),
            })
        };
        tokio::time::timeout(PATIENCE, exchange)
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer within {PATIENCE:?}"))
    }
}

/// `GET path` on a connection of its own.
async fn get_once(addr: SocketAddr, path: &str) -> Answered {
    GwConn::open(addr).await.get(path).await
}

fn assert_pong(a: &Answered, upstream_path: &str, what: &str) {
    assert_eq!(
        (a.status, String::from_utf8_lossy(&a.body).into_owned()),
        (200, body_for(upstream_path)),
        "{what}"
    );
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_are_reused() {
    init_tracing();
    let up = RawUpstream::start(|s| Answer {
        steps: vec![Step::Write(ok_with_length(&body_for(s.path()), ""))],
        after: After::KeepOpen,
    })
    .await;
    let (_cluster, dp) = gateway(&up.url()).await;

    // One client connection, so one worker and one pool: one upstream
    // connection carries every request.
    let mut gw = GwConn::open(dp.proxy_addr).await;
    for i in 0..50 {
        let a = gw.get(&format!("/pool/seq/{i}")).await;
        assert_pong(&a, &format!("/seq/{i}"), &format!("request {i}"));
    }
    assert_eq!(up.accepted(), 1, "50 requests on one worker");
    assert_eq!(up.requests_per_conn(), vec![50]);

    // A new client connection per request: the requests go round the
    // workers, and each worker keeps reusing its own upstream connection.
    let workers = proxy_workers();
    let n = 50.max(3 * workers);
    for i in 0..n {
        let a = get_once(dp.proxy_addr, &format!("/pool/fresh/{i}")).await;
        assert_pong(&a, &format!("/fresh/{i}"), &format!("fresh request {i}"));
    }
    assert!(
        up.accepted() <= workers,
        "{} upstream connections for {} requests on {workers} proxy workers",
        up.accepted(),
        50 + n
    );
    assert_eq!(up.seen().len(), 50 + n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_upstream_closed_is_replaced() {
    init_tracing();
    // Keep-alive as far as the headers go, but the socket closes shortly
    // after each answer: the gateway is left holding a pooled connection
    // that is dead by the time the next request comes.
    let up = RawUpstream::start(|s| Answer {
        steps: vec![Step::Write(ok_with_length(
            &body_for(s.path()),
            "Connection: keep-alive\r\nKeep-Alive: timeout=60\r\n",
        ))],
        after: After::CloseIn(Duration::from_millis(50)),
    })
    .await;
    let (_cluster, dp) = gateway(&up.url()).await;

    let n = 8;
    let mut gw = GwConn::open(dp.proxy_addr).await;
    for i in 0..n {
        let a = gw.get(&format!("/pool/r/{i}")).await;
        assert_pong(&a, &format!("/r/{i}"), &format!("request {i}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(up.accepted(), n, "one upstream connection per request");
    assert_eq!(up.requests_per_conn(), vec![1; n]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_from_upstream_is_honoured() {
    init_tracing();
    let up = RawUpstream::start(|s| Answer {
        steps: vec![Step::Write(ok_with_length(
            &body_for(s.path()),
            "Connection: close\r\n",
        ))],
        after: After::Close,
    })
    .await;
    let (_cluster, dp) = gateway(&up.url()).await;

    // Back to back on one client connection (one worker), no pause.
    let n = 20;
    let mut gw = GwConn::open(dp.proxy_addr).await;
    for i in 0..n {
        let a = gw.get(&format!("/pool/c/{i}")).await;
        assert_pong(&a, &format!("/c/{i}"), &format!("request {i}"));
        // Hop-by-hop: the upstream's `Connection: close` is not passed on.
        assert!(a.headers.get(http::header::CONNECTION).is_none());
    }
    assert_eq!(up.accepted(), n, "one upstream connection per request");
    assert_eq!(up.requests_per_conn(), vec![1; n]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_header_and_origin_form() {
    init_tracing();
    let chunks = [
        "first chunk;",
        "second, a bit longer;",
        "3rd;",
        "and the last",
    ];
    let up = RawUpstream::start(move |s| {
        if s.path() != "/chunked" {
            return Answer {
                steps: vec![Step::Write(ok_with_length(&body_for(s.path()), ""))],
                after: After::KeepOpen,
            };
        }
        let mut steps = vec![Step::Write(Bytes::from_static(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
        ))];
        for c in chunks {
            steps.push(Step::Write(Bytes::from(format!(
                "{:x}\r\n{c}\r\n",
                c.len()
            ))));
            // Separate reads on the gateway's side, so separate frames.
            steps.push(Step::Sleep(Duration::from_millis(20)));
        }
        steps.push(Step::Write(Bytes::from_static(b"0\r\n\r\n")));
        Answer {
            steps,
            after: After::KeepOpen,
        }
    })
    .await;
    let (_cluster, dp) = gateway(&up.url()).await;
    let mut gw = GwConn::open(dp.proxy_addr).await;

    let a = gw.get("/pool/path?q=1").await;
    assert_pong(&a, "/path?q=1", "the first request");
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let first = &seen[0];
    assert_eq!(first.line, "GET /path?q=1 HTTP/1.1", "origin form");
    assert_eq!(
        first.header("host"),
        vec![format!("127.0.0.1:{}", up.addr.port())],
        "Host is the target's, exactly once"
    );
    assert_eq!(first.header("x-forwarded-host"), vec!["gw.test"]);

    // A chunked answer arrives whole, and its connection is reused after.
    let a = gw.get("/pool/chunked").await;
    assert_eq!(a.status, 200);
    assert_eq!(String::from_utf8_lossy(&a.body), chunks.concat());
    let a = gw.get("/pool/after").await;
    assert_pong(&a, "/after", "the request after the chunked answer");

    assert_eq!(
        up.accepted(),
        1,
        "the chunked answer's connection is reused"
    );
    let seen = up.seen();
    let lines: Vec<&str> = seen.iter().map(|s| s.line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "GET /path?q=1 HTTP/1.1",
            "GET /chunked HTTP/1.1",
            "GET /after HTTP/1.1"
        ]
    );
    for s in &seen {
        assert_eq!(s.conn, 0);
        assert_eq!(
            s.header("host"),
            vec![format!("127.0.0.1:{}", up.addr.port())]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_dropped_half_read_does_not_poison_the_pool() {
    init_tracing();
    const BIG: usize = 4 * 1024 * 1024;
    const FIRST: usize = 64 * 1024;
    // `/big`: the head and the first 64 KiB, then the rest once the test
    // says so (after its client has gone), so the gateway cannot have read
    // the body to the end before the client left.
    let go = Arc::new(Notify::new());
    let gate = go.clone();
    let up = RawUpstream::start(move |s| {
        if s.path() != "/big" {
            return Answer {
                steps: vec![Step::Write(ok_with_length(&body_for(s.path()), ""))],
                after: After::KeepOpen,
            };
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {BIG}\r\n\r\n"
        );
        let mut steps = vec![
            Step::Write(Bytes::from(head)),
            Step::Write(Bytes::from(vec![b'x'; FIRST])),
            Step::Wait(gate.clone()),
        ];
        for _ in 0..(BIG - FIRST) / FIRST {
            steps.push(Step::Write(Bytes::from(vec![b'x'; FIRST])));
        }
        Answer {
            steps,
            after: After::KeepOpen,
        }
    })
    .await;
    let (_cluster, dp) = gateway(&up.url()).await;

    // Warm this worker's pool first, so `/big` goes on a pooled
    // connection that has already served a request.
    let mut client = TcpStream::connect(dp.proxy_addr).await.unwrap();
    client
        .write_all(b"GET /pool/warm HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .unwrap();
    // The next request's head is only sent once this answer was read.
    read_ok_answer(&mut client, "/warm").await;

    // Read the head of `/big`, then leave.
    client
        .write_all(b"GET /pool/big HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {BIG}")),
        "{head}"
    );

    // While that body is under way, its connection is nobody else's:
    // requests on every worker, the one reading `/big` included, are
    // answered, on other connections, without waiting for it.
    for i in 0..proxy_workers() {
        let a = get_once(dp.proxy_addr, &format!("/pool/during/{i}")).await;
        assert_pong(
            &a,
            &format!("/during/{i}"),
            &format!("request {i} during /big"),
        );
    }

    drop(client);
    go.notify_one();

    let big_conn = up
        .seen()
        .iter()
        .find(|s| s.path() == "/big")
        .expect("the upstream saw /big")
        .conn;
    assert_eq!(big_conn, 0, "/big went on the warmed connection");
    // The gateway closes the connection whose body it dropped.
    eventually(
        "the gateway to close the half-read upstream connection",
        PATIENCE,
        || async { up.ended(big_conn) },
    )
    .await;

    // New client connections reach every worker, the one that dropped
    // the body included: each request is answered in full, and none of
    // them goes on the half-read connection.
    for i in 0..=proxy_workers() {
        let a = get_once(dp.proxy_addr, &format!("/pool/next/{i}")).await;
        assert_pong(
            &a,
            &format!("/next/{i}"),
            &format!("request {i} after /big"),
        );
    }
    let after: Vec<Seen> = up
        .seen()
        .into_iter()
        .filter(|s| s.path().starts_with("/during/") || s.path().starts_with("/next/"))
        .collect();
    assert_eq!(after.len(), 2 * proxy_workers() + 1);
    assert!(
        after.iter().all(|s| s.conn != big_conn),
        "a request went on the half-read connection: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_delimited_by_close_arrives_whole() {
    init_tracing();
    // Neither `Content-Length` nor chunked: the body ends where the
    // connection does, so that connection cannot serve another request.
    let up = RawUpstream::start(|s| Answer {
        steps: vec![Step::Write(Bytes::from(format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n{}",
            long_body(s.path())
        )))],
        after: After::Close,
    })
    .await;
    let (_cluster, dp) = gateway(&up.url()).await;

    let n = 10;
    let mut gw = GwConn::open(dp.proxy_addr).await;
    for i in 0..n {
        let path = format!("/eof/{i}");
        let a = gw.get(&format!("/pool{path}")).await;
        assert_eq!(a.status, 200, "request {i}");
        let body = String::from_utf8_lossy(&a.body);
        assert!(
            body == long_body(&path),
            "request {i}: {} bytes, want {}; starts {:?}",
            body.len(),
            long_body(&path).len(),
            &body[..body.len().min(60)]
        );
    }
    assert_eq!(up.accepted(), n, "one upstream connection per request");
    assert_eq!(up.requests_per_conn(), vec![1; n]);
}

fn long_body(path: &str) -> String {
    format!("{} ", body_for(path)).repeat(1000)
}

/// An upstream that answers a POST on its head alone (an early 200, 401 or
/// 413 with keep-alive) while the client is still sending the body: hyper
/// cannot send another request on that connection until the upload is
/// done, so it must not be handed to the next request before then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_still_being_sent_does_not_hold_up_other_requests() {
    init_tracing();
    let up = RawUpstream::start(|s| Answer {
        steps: vec![Step::Write(ok_with_length(&body_for(s.path()), ""))],
        after: After::KeepOpen,
    })
    .await;
    let mut api = pool_api(&up.url());
    // A stuck request ends in a 504 after this, not the default 29 s.
    api["upstream"]["timeout_ms"] = serde_json::json!(3000);
    let (_cluster, dp) = gateway_with(api).await;

    // A POST (not retried, so its body is streamed, not buffered) whose
    // client sends part of the body, then pauses.
    const UPLOAD: usize = 100_000;
    let mut slow = TcpStream::connect(dp.proxy_addr).await.unwrap();
    slow.write_all(
        format!("POST /pool/upload HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {UPLOAD}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    slow.write_all(&[b'u'; 1000]).await.unwrap();
    // The upstream's answer comes through whole, upload or not.
    read_ok_answer(&mut slow, "/upload").await;

    // Requests on every worker, the uploader's included, while the upload
    // is paused.
    for i in 0..=proxy_workers() {
        let a = get_once(dp.proxy_addr, &format!("/pool/during/{i}")).await;
        assert_pong(
            &a,
            &format!("/during/{i}"),
            &format!("request {i} during the upload"),
        );
    }

    // Once the upload is done, every worker answers again.
    slow.write_all(&vec![b'u'; UPLOAD - 1000]).await.unwrap();
    for i in 0..=proxy_workers() {
        let a = get_once(dp.proxy_addr, &format!("/pool/after/{i}")).await;
        assert_pong(
            &a,
            &format!("/after/{i}"),
            &format!("request {i} after the upload"),
        );
    }
    drop(slow);
}

/// Read from `s` until the end of a response head; returns what was read
/// (the head, and whatever of the body came with it).
/// Read a 200 answer whose body is `body_for(upstream_path)`: its head,
/// and the rest of the body if it did not come with the head.
async fn read_ok_answer(s: &mut TcpStream, upstream_path: &str) {
    let head = read_head(s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let already = head.split("\r\n\r\n").nth(1).unwrap_or("").len();
    let mut rest = vec![0u8; body_for(upstream_path).len() - already];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut rest))
        .await
        .unwrap_or_else(|_| panic!("the body of {upstream_path}"))
        .unwrap();
}

async fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let read = async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the gateway closed before a response head");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("a response head");
    String::from_utf8_lossy(&buf).into_owned()
}

/// The target closes a kept-alive connection just as the next request goes
/// out on it (its keep-alive timeout racing the gateway): nothing of an
/// answer came, so an idempotent request is sent again, on a new
/// connection, when the API allows a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_a_connection_closed_under_it_is_retried() {
    init_tracing();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    let up = RawUpstream::start(move |s| {
        // The second request (the first on the reused connection) is read
        // and met with a close.
        if counted.fetch_add(1, Ordering::SeqCst) == 1 {
            Answer {
                steps: vec![],
                after: After::Close,
            }
        } else {
            Answer {
                steps: vec![Step::Write(ok_with_length(&body_for(s.path()), ""))],
                after: After::KeepOpen,
            }
        }
    })
    .await;
    let mut api = pool_api(&up.url());
    api["upstream"]["retries"] = serde_json::json!(1);
    let (_cluster, dp) = gateway_with(api).await;

    let mut gw = GwConn::open(dp.proxy_addr).await;
    let a = gw.get("/pool/first").await;
    assert_pong(&a, "/first", "the first request");
    let a = gw.get("/pool/second").await;
    assert_pong(&a, "/second", "the request whose connection was closed");
    assert_eq!(
        requests.load(Ordering::SeqCst),
        3,
        "sent twice, answered once"
    );
    assert_eq!(up.accepted(), 2, "the retry went on a new connection");
}

// ---------------------------------------------------------------------------
// The codec: framing, interim answers, request bodies
// ---------------------------------------------------------------------------

/// An upstream answering `special` paths by `answer` and everything else
/// with `ok_with_length(body_for(path))`, keeping its connections open.
async fn upstream_with(
    special: impl Fn(&Seen) -> Option<Answer> + Send + Sync + 'static,
) -> RawUpstream {
    RawUpstream::start(move |s| {
        special(s).unwrap_or_else(|| Answer {
            steps: vec![Step::Write(ok_with_length(&body_for(s.path()), ""))],
            after: After::KeepOpen,
        })
    })
    .await
}

fn header_str<'a>(h: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

/// The request lines the upstream saw, in order.
fn lines(up: &RawUpstream) -> Vec<String> {
    up.seen().into_iter().map(|s| s.line).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_answer_trickled_byte_by_byte_arrives_whole_and_its_connection_is_reused() {
    init_tracing();
    // Every byte of the answer, head included, in a write of its own: the
    // decoder meets each chunk-size line, data and CRLF cut at every
    // possible place. Hex sizes in both cases, an extension, a trailer.
    const ANSWER: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
        1\r\na\r\n\
        5\r\nbcdef\r\n\
        1A\r\nABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n\
        10;x=y\r\n0123456789abcdef\r\n\
        0\r\nX-End: 1\r\n\r\n";
    const BODY: &str = "abcdefABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef";
    let up = upstream_with(|s| {
        s.path().starts_with("/trickle/").then(|| Answer {
            steps: vec![Step::Trickle(Bytes::from_static(ANSWER), 1)],
            after: After::KeepOpen,
        })
    })
    .await;
    let (_cluster, dp) = gateway(&up.url()).await;

    let mut gw = GwConn::open(dp.proxy_addr).await;
    for i in 0..3 {
        let a = gw.get(&format!("/pool/trickle/{i}")).await;
        assert_eq!(a.status, 200, "request {i}");
        assert_eq!(String::from_utf8_lossy(&a.body), BODY, "request {i}");
    }
    let a = gw.get("/pool/after").await;
    assert_pong(&a, "/after", "the request after the trickled answers");
    assert_eq!(up.accepted(), 1, "one upstream connection for all");
    assert_eq!(up.requests_per_conn(), vec![4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_extensions_and_trailers_are_decoded_and_the_connection_reused() {
    init_tracing();
    let up = upstream_with(|s| {
        (s.path() == "/ext").then(|| Answer {
            steps: vec![Step::Write(Bytes::from_static(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\
                  Trailer: X-Checksum\r\n\r\n\
                  5;ext=1\r\nhello\r\n\
                  7;name=\"quoted; value\";flag\r\n, world\r\n\
                  0;last=yes\r\nX-Checksum: abc123\r\nX-Other: 2\r\n\r\n",
            ))],
            after: After::KeepOpen,
        })
    })
    .await;
    let (_cluster, dp) = gateway(&up.url()).await;

    // The gateway drops trailers (it strips `Trailer`, and a client gets
    // only declared ones): what shows is the body, and that the trailer
    // section was read to its end, leaving the connection usable.
    let mut gw = GwConn::open(dp.proxy_addr).await;
    for i in 0..2 {
        let a = gw.get("/pool/ext").await;
        assert_eq!(a.status, 200, "request {i}");
        assert_eq!(
            String::from_utf8_lossy(&a.body),
            "hello, world",
            "request {i}"
        );
    }
    let a = gw.get("/pool/after").await;
    assert_pong(&a, "/after", "the request after the chunked answers");
    assert_eq!(up.accepted(), 1, "the connection is reused after trailers");
    assert_eq!(up.requests_per_conn(), vec![3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_1xx_answers_are_skipped_for_the_final_one() {
    init_tracing();
    let up = upstream_with(|s| {
        let ok = ok_with_length(&body_for(s.path()), "");
        match s.path() {
            // The interim answer alone first, the final one after.
            "/continue" => Some(Answer {
                steps: vec![
                    Step::Write(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n")),
                    Step::Sleep(Duration::from_millis(50)),
                    Step::Write(ok),
                ],
                after: After::KeepOpen,
            }),
            // Two interim answers and the final one in one write.
            "/hints" => {
                let mut all = b"HTTP/1.1 100 Continue\r\n\r\n\
                    HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                    .to_vec();
                all.extend_from_slice(&ok);
                Some(Answer {
                    steps: vec![Step::Write(all.into())],
                    after: After::KeepOpen,
                })
            }
            _ => None,
        }
    })
    .await;
    let (_cluster, dp) = gateway(&up.url()).await;

    let mut gw = GwConn::open(dp.proxy_addr).await;
    let a = gw.get("/pool/continue").await;
    assert_pong(&a, "/continue", "100 then 200");
    let a = gw.get("/pool/hints").await;
    assert_pong(&a, "/hints", "100, 103, then 200 in one write");
    assert_eq!(
        header_str(&a.headers, "link"),
        None,
        "the 103's headers are not the answer's"
    );
    let a = gw.get("/pool/after").await;
    assert_pong(&a, "/after", "the request after the interim answers");
    assert_eq!(up.accepted(), 1);
    assert_eq!(up.requests_per_conn(), vec![3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_answer_with_content_length_has_no_body_and_keeps_its_connection() {
    init_tracing();
    let up = upstream_with(|s| {
        (s.path() == "/head").then(|| Answer {
            steps: vec![Step::Write(Bytes::from_static(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 50\r\n\r\n",
            ))],
            after: After::KeepOpen,
        })
    })
    .await;
    let (_cluster, dp) = gateway(&up.url()).await;

    let mut gw = GwConn::open(dp.proxy_addr).await;
    for i in 0..2 {
        let a = gw
            .send(gw_request(Method::HEAD, "/pool/head", Bytes::new()))
            .await
            .whole("HEAD /pool/head");
        assert_eq!(a.status, 200, "HEAD {i}");
        assert_eq!(header_str(&a.headers, "content-length"), Some("50"));
        assert!(a.body.is_empty(), "HEAD {i}: {:?}", a.body);
        let a = gw.get(&format!("/pool/after/{i}")).await;
        assert_pong(&a, &format!("/after/{i}"), "the GET after a HEAD");
    }
    assert_eq!(
        lines(&up),
        [
            "HEAD /head HTTP/1.1",
            "GET /after/0 HTTP/1.1",
            "HEAD /head HTTP/1.1",
            "GET /after/1 HTTP/1.1"
        ]
    );
    assert_eq!(up.accepted(), 1, "HEAD answers leave the connection usable");
    assert_eq!(up.requests_per_conn(), vec![4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_204_and_304_have_no_body_and_keep_their_connection() {
    init_tracing();
    let up = upstream_with(|s| {
        let head: &'static [u8] = match s.path() {
            "/none" => b"HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n",
            // A 304 may carry the Content-Length of what it stands for.
            "/same" => b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 10\r\n\r\n",
            _ => return None,
        };
        Some(Answer {
            steps: vec![Step::Write(Bytes::from_static(head))],
            after: After::KeepOpen,
        })
    })
    .await;
    let (_cluster, dp) = gateway(&up.url()).await;

    let mut gw = GwConn::open(dp.proxy_addr).await;
    for i in 0..2 {
        let a = gw.get("/pool/none").await;
        assert_eq!((a.status, a.body.len()), (204, 0), "204 {i}");
        assert_eq!(header_str(&a.headers, "x-kind"), Some("none"));
        let a = gw.get(&format!("/pool/after-204/{i}")).await;
        assert_pong(&a, &format!("/after-204/{i}"), "the request after a 204");

        let a = gw.get("/pool/same").await;
        assert_eq!((a.status, a.body.len()), (304, 0), "304 {i}");
        assert_eq!(header_str(&a.headers, "etag"), Some("\"v1\""));
        let a = gw.get(&format!("/pool/after-304/{i}")).await;
        assert_pong(&a, &format!("/after-304/{i}"), "the request after a 304");
    }
    assert_eq!(up.accepted(), 1, "204 and 304 leave the connection usable");
    assert_eq!(up.requests_per_conn(), vec![8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_post_bodies_arrive_intact_with_content_length_on_one_connection() {
    init_tracing();
    let up = upstream_with(|_| None).await;
    let (_cluster, dp) = gateway(&up.url()).await;

    // Sizes up to the largest body the pool takes (64 KiB), each body
    // different from the others.
    let sizes = [3000, 1, 3000, 20_000, 64 * 1024];
    let bodies: Vec<Bytes> = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| (0..n).map(|i| b'a' + ((i * 7 + k) % 26) as u8).collect())
        .collect();
    let mut gw = GwConn::open(dp.proxy_addr).await;
    for (k, body) in bodies.iter().enumerate() {
        let a = gw
            .send(gw_request(
                Method::POST,
                &format!("/pool/post/{k}"),
                body.clone(),
            ))
            .await
            .whole("POST");
        assert_pong(&a, &format!("/post/{k}"), &format!("POST {k}"));
    }

    eventually("the upstream to read every body", PATIENCE, || async {
        up.bodies().len() == bodies.len()
    })
    .await;
    for (k, ((conn, got), want)) in up.bodies().iter().zip(&bodies).enumerate() {
        assert_eq!(*conn, 0, "POST {k} on the first connection");
        assert!(
            got == want,
            "POST {k}: the upstream read {} bytes, the client sent {}",
            got.len(),
            want.len()
        );
    }
    for (k, s) in up.seen().iter().enumerate() {
        assert_eq!(s.line, format!("POST /post/{k} HTTP/1.1"));
        assert_eq!(
            s.header("content-length"),
            vec![sizes[k].to_string()],
            "POST {k}"
        );
        assert!(s.header("transfer-encoding").is_empty(), "POST {k}: {s:?}");
    }
    assert_eq!(up.accepted(), 1, "every POST on the pooled connection");
    assert_eq!(up.requests_per_conn(), vec![sizes.len()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_the_declared_body_are_dropped_with_their_connection() {
    init_tracing();
    let up = upstream_with(|s| {
        (s.path() == "/extra").then(|| Answer {
            steps: vec![Step::Write(Bytes::from_static(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloGARBAGE!!",
            ))],
            after: After::KeepOpen,
        })
    })
    .await;
    let (_cluster, dp) = gateway(&up.url()).await;

    let mut gw = GwConn::open(dp.proxy_addr).await;
    let a = gw.get("/pool/extra").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, "hello", "exactly the declared 5 bytes");
    let a = gw.get("/pool/after").await;
    assert_pong(&a, "/after", "the request after the extra bytes");
    assert_eq!(up.accepted(), 2, "a new connection after the extra bytes");
    assert_eq!(up.requests_per_conn(), vec![1, 1]);
    eventually("the gateway to close that connection", PATIENCE, || async {
        up.ended(0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_answer_is_read_whole_and_its_connection_not_reused() {
    init_tracing();
    let up = RawUpstream::start(|s| {
        let body = long_body(s.path());
        Answer {
            steps: vec![Step::Write(Bytes::from(format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )))],
            // Open, so a wrongly reused connection would still answer.
            after: After::KeepOpen,
        }
    })
    .await;
    let (_cluster, dp) = gateway(&up.url()).await;

    // The gateway passes the answer's version on, and closes the client
    // connection after an HTTP/1.0 answer: a client connection per request.
    // More requests than workers, so some worker serves two or more (its
    // pool would hand the second one a connection if it had kept one).
    let n = 2 * proxy_workers() + 1;
    for i in 0..n {
        let path = format!("/old/{i}");
        let a = get_once(dp.proxy_addr, &format!("/pool{path}")).await;
        assert_eq!(a.status, 200, "request {i}");
        assert!(
            a.body == long_body(&path),
            "request {i}: {} bytes, want {}",
            a.body.len(),
            long_body(&path).len()
        );
    }
    assert_eq!(
        up.accepted(),
        n,
        "one upstream connection per HTTP/1.0 answer"
    );
    assert_eq!(up.requests_per_conn(), vec![1; n]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_content_length_values_count_as_one_length() {
    init_tracing();
    let up = upstream_with(|s| match s.path() {
        "/two" => Some(answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        )),
        "/list" => Some(answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
        )),
        _ => None,
    })
    .await;
    let (_cluster, dp) = gateway(&up.url()).await;

    let mut gw = GwConn::open(dp.proxy_addr).await;
    for path in ["/two", "/list"] {
        let a = gw.get(&format!("/pool{path}")).await;
        assert_eq!((a.status, a.body.as_ref()), (200, &b"hello"[..]), "{path}");
    }
    let a = gw.get("/pool/after").await;
    assert_pong(&a, "/after", "the request after");
    assert_eq!(
        up.accepted(),
        1,
        "each body ended at 5 bytes, nothing left over"
    );
    assert_eq!(up.requests_per_conn(), vec![3]);
}

// ---------------------------------------------------------------------------
// The codec: what the target gets wrong
// ---------------------------------------------------------------------------

/// What the client gets for a broken answer.
enum Expect {
    /// A 502 from the gateway: the answer broke before its head was whole.
    BadGateway,
    /// The answer's head, then a body cut short (or, the head not sent
    /// yet, no answer at all): the answer broke in its body.
    CutShort,
}

/// The upstream answers `GET /bad` by `bad`, the rest well. The client of
/// `/bad` gets what `expect` says, the gateway closes that upstream
/// connection, and requests after it, on every worker, are answered well
/// on other connections.
async fn a_bad_answer_fails_alone(what: &str, bad: fn() -> Answer, expect: Expect) {
    init_tracing();
    let up = upstream_with(move |s| (s.path() == "/bad").then(bad)).await;
    let (_cluster, dp) = gateway(&up.url()).await;

    let mut gw = GwConn::open(dp.proxy_addr).await;
    let outcome = gw
        .send(gw_request(Method::GET, "/pool/bad", Bytes::new()))
        .await;
    let client_open = match expect {
        Expect::BadGateway => {
            let a = outcome.whole(what);
            assert_eq!(a.status, 502, "{what}: {a:?}");
            true
        }
        Expect::CutShort => {
            match &outcome {
                Outcome::Cut {
                    status,
                    headers,
                    received,
                } => {
                    assert_eq!(*status, 200, "{what}: {outcome:?}");
                    if let Some(n) = header_str(headers, "content-length") {
                        assert!(
                            (received.len() as u64) < n.parse::<u64>().unwrap(),
                            "{what}: {outcome:?}"
                        );
                    }
                }
                Outcome::NoResponse(e) => assert!(!e.is_empty()),
                Outcome::Whole(_) => panic!("{what}: want a broken answer, got {outcome:?}"),
            }
            false
        }
    };

    let bad_conn = up
        .seen()
        .iter()
        .find(|s| s.path() == "/bad")
        .expect("the upstream saw /bad")
        .conn;
    eventually(
        &format!("{what}: the gateway to close the connection of /bad"),
        PATIENCE,
        || async { up.ended(bad_conn) },
    )
    .await;

    if client_open {
        // The same client connection, so the same worker and pool.
        let a = gw.get("/pool/same").await;
        assert_pong(&a, "/same", &format!("{what}: the next request"));
    }
    for i in 0..=proxy_workers() {
        let a = get_once(dp.proxy_addr, &format!("/pool/next/{i}")).await;
        assert_pong(
            &a,
            &format!("/next/{i}"),
            &format!("{what}: request {i} after"),
        );
    }
    let after: Vec<Seen> = up
        .seen()
        .into_iter()
        .filter(|s| s.path() != "/bad")
        .collect();
    assert_eq!(after.len(), proxy_workers() + 1 + usize::from(client_open));
    assert!(
        after.iter().all(|s| s.conn != bad_conn),
        "{what}: a request went on the connection of /bad: {after:?}"
    );
}

fn answer(bytes: &'static [u8]) -> Answer {
    Answer {
        steps: vec![Step::Write(Bytes::from_static(bytes))],
        after: After::KeepOpen,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_is_not_http_is_a_502() {
    a_bad_answer_fails_alone("not HTTP", || answer(b"hello\r\n\r\n"), Expect::BadGateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differing_content_lengths_are_a_502() {
    a_bad_answer_fails_alone(
        "two Content-Length headers",
        || answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        Expect::BadGateway,
    )
    .await;
    a_bad_answer_fails_alone(
        "a Content-Length list",
        || answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!"),
        Expect::BadGateway,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_content_length_is_a_502() {
    a_bad_answer_fails_alone(
        "Content-Length +5",
        || answer(b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"),
        Expect::BadGateway,
    )
    .await;
    a_bad_answer_fails_alone(
        "Content-Length abc",
        || answer(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello"),
        Expect::BadGateway,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_mid_body_cuts_the_answer_short() {
    a_bad_answer_fails_alone(
        "closed after 10 of 100 bytes",
        || Answer {
            steps: vec![Step::Write(Bytes::from_static(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
            ))],
            after: After::Close,
        },
        Expect::CutShort,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_before_a_whole_head_is_a_502() {
    a_bad_answer_fails_alone(
        "closed mid-head",
        || Answer {
            steps: vec![Step::Write(Bytes::from_static(
                b"HTTP/1.1 200 OK\r\nContent-Le",
            ))],
            after: After::Close,
        },
        Expect::BadGateway,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_chunk_size_line_cuts_the_answer_short() {
    a_bad_answer_fails_alone(
        "chunk size zz",
        || {
            answer(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n",
            )
        },
        Expect::CutShort,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_data_longer_than_its_size_cuts_the_answer_short() {
    a_bad_answer_fails_alone(
        "chunk data not followed by CRLF",
        || {
            answer(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5\r\nhello, world\r\n0\r\n\r\n",
            )
        },
        Expect::CutShort,
    )
    .await;
}

/// A response head of about 200 KiB, over three times the 64 KiB limit:
/// the gateway gives up on it once it holds more than 64 KiB of it, which
/// happens before the head is whole however the reads split it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_head_over_64_kib_is_a_502() {
    a_bad_answer_fails_alone(
        "a 200 KiB head",
        || {
            let head = format!(
                "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
                "a".repeat(200 * 1024)
            );
            Answer {
                steps: vec![Step::Write(head.into())],
                after: After::KeepOpen,
            }
        },
        Expect::BadGateway,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_128_response_headers_are_a_502() {
    a_bad_answer_fails_alone(
        "129 headers",
        || {
            let mut head = String::from("HTTP/1.1 200 OK\r\n");
            for i in 0..129 {
                head.push_str(&format!("X-H{i}: {i}\r\n"));
            }
            head.push_str("Content-Length: 2\r\n\r\nok");
            Answer {
                steps: vec![Step::Write(head.into())],
                after: After::KeepOpen,
            }
        },
        Expect::BadGateway,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unasked_for_101_is_a_502() {
    a_bad_answer_fails_alone(
        "101 to a plain GET",
        || {
            answer(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            )
        },
        Expect::BadGateway,
    )
    .await;
}

// ---------------------------------------------------------------------------
// Limits and framing rules a first version of the codec got wrong: each
// test says what RFC 9112 wants.
// ---------------------------------------------------------------------------

/// The 64 KiB head limit holds for a head that arrives whole, too (the
/// read buffer grows past 64 KiB before the head is parsed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_head_over_64_kib_in_one_write_is_a_502() {
    a_bad_answer_fails_alone(
        "an 80 KiB head in one write",
        || {
            let head = format!(
                "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
                "a".repeat(80 * 1024)
            );
            Answer {
                steps: vec![Step::Write(head.into())],
                after: After::KeepOpen,
            }
        },
        Expect::BadGateway,
    )
    .await;
}

/// `chunk-size = 1*HEXDIG`: an empty size line (or an extension alone),
/// which httparse's `parse_chunk_size` reads as 0, is not the last chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_chunk_size_line_cuts_the_answer_short() {
    a_bad_answer_fails_alone(
        "an empty chunk-size line",
        || {
            answer(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5\r\nhello\r\n\r\n\r\n",
            )
        },
        Expect::CutShort,
    )
    .await;
}

/// `Transfer-Encoding` is a list: two field lines, `gzip` then `chunked`,
/// make `gzip, chunked`, chunked last, so the body is chunked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_named_in_a_second_transfer_encoding_line_is_decoded() {
    init_tracing();
    let up = upstream_with(|s| {
        (s.path() == "/te2").then(|| Answer {
            steps: vec![Step::Write(Bytes::from_static(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5\r\nhello\r\n0\r\n\r\n",
            ))],
            // So that reading to the close ends, and the test with it.
            after: After::CloseIn(Duration::from_secs(1)),
        })
    })
    .await;
    let (_cluster, dp) = gateway(&up.url()).await;
    let mut gw = GwConn::open(dp.proxy_addr).await;
    let a = gw.get("/pool/te2").await;
    assert_eq!((a.status, a.body.as_ref()), (200, &b"hello"[..]), "{a:?}");
}

/// RFC 9112 section 6.3: with both `Transfer-Encoding` and
/// `Content-Length`, the former wins, and an intermediary must remove
/// `Content-Length` before passing the message on (left in, the client
/// would read 3 of the 5 bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_beside_chunked_is_not_passed_on() {
    init_tracing();
    let up = upstream_with(|s| {
        (s.path() == "/tecl").then(|| {
            answer(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n\
                  5\r\nhello\r\n0\r\n\r\n",
            )
        })
    })
    .await;
    let (_cluster, dp) = gateway(&up.url()).await;
    let mut gw = GwConn::open(dp.proxy_addr).await;
    let a = gw.get("/pool/tecl").await;
    assert_eq!((a.status, a.body.as_ref()), (200, &b"hello"[..]), "{a:?}");
}

/// The 4 KiB limit on a chunk-size line holds for a line that arrives
/// whole, too, so what passes does not depend on how the reads split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlong_chunk_size_line_cuts_the_answer_short() {
    a_bad_answer_fails_alone(
        "a 5000-byte chunk extension",
        || {
            let answer = format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5\r\nhello\r\n5;ext={}\r\nworld\r\n0\r\n\r\n",
                "x".repeat(5000)
            );
            Answer {
                steps: vec![Step::Write(answer.into())],
                after: After::KeepOpen,
            }
        },
        Expect::CutShort,
    )
    .await;
}

/// The pooled client passes the answer's fields on as the target wrote
/// them, without a header map: the gateway's own fields still replace the
/// target's, hop-by-hop fields (and those `Connection` names) stay behind,
/// and repeated fields all arrive. The same holds where the fields do go
/// into a map: hyper's HTTP/2 server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answers_own_fields_pass_through_and_the_gateways_replace_the_targets() {
    init_tracing();
    let up = upstream_with(|s| {
        (s.path() == "/fields").then(|| {
            answer(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\n\
                  X-Request-Id: the-targets\r\nConnection: keep-alive, X-Hop\r\n\
                  X-Hop: secret\r\nKeep-Alive: timeout=5\r\nset-cookie: b=2\r\n\
                  Date: Mon, 30 Nov 2026 18:00:00 GMT\r\nContent-Length: 2\r\n\r\nok",
            )
        })
    })
    .await;
    let (_cluster, dp) = gateway(&up.url()).await;
    let check = |what: &str, status: u16, h: &http::HeaderMap, body: &[u8]| {
        assert_eq!((status, body), (200, &b"ok"[..]), "{what}: {h:?}");
        let all = |name: &str| -> Vec<&str> {
            h.get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(all("content-type"), ["text/plain"], "{what}");
        assert_eq!(all("content-length"), ["2"], "{what}");
        assert_eq!(all("set-cookie"), ["a=1", "b=2"], "{what}");
        assert_eq!(all("date"), ["Mon, 30 Nov 2026 18:00:00 GMT"], "{what}");
        let id = all("x-request-id");
        assert_eq!(id.len(), 1, "{what}: {id:?}");
        assert_ne!(id[0], "the-targets", "{what}");
        for hop in ["x-hop", "keep-alive"] {
            assert!(h.get(hop).is_none(), "{what}: {hop} passed on");
        }
    };
    let a = GwConn::open(dp.proxy_addr).await.get("/pool/fields").await;
    check("HTTP/1.1", a.status, &a.headers, &a.body);

    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2
        .get(format!("http://{}/pool/fields", dp.proxy_addr))
        .header("host", "gw.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    check("HTTP/2", status, &headers, &r.bytes().await.unwrap());
}

/// Each pooled connection keeps one deadline timer and resets it per
/// request. A connection that sat idle past its last request's deadline
/// (the timer fired meanwhile) serves the next request in full, and a
/// request that does run out of time on a reused connection still gets
/// the API's 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_idle_past_its_last_deadline_serves_the_next_request() {
    init_tracing();
    let up = upstream_with(|s| {
        (s.path() == "/slow").then(|| Answer {
            steps: vec![
                Step::Sleep(Duration::from_millis(800)),
                Step::Write(ok_with_length("late", "")),
            ],
            after: After::KeepOpen,
        })
    })
    .await;
    let mut api = pool_api(&up.url());
    api["upstream"]["timeout_ms"] = serde_json::json!(300);
    let (_cluster, dp) = gateway_with(api).await;
    let mut gw = GwConn::open(dp.proxy_addr).await;
    assert_pong(&gw.get("/pool/a").await, "/a", "first request");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_pong(
        &gw.get("/pool/b").await,
        "/b",
        "after the old deadline passed",
    );
    assert_eq!(up.accepted(), 1, "both on one upstream connection");
    // The target answers 200 after 800 ms: a 504 comes from the timer.
    let timed_out = gw.get("/pool/slow").await;
    assert_eq!(timed_out.status, 504, "{timed_out:?}");
}
