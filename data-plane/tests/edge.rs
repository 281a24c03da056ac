//! The edge under hostile and slow peers (issue 19; contract §3 and §4),
//! on both HTTP/1 engines.
//!
//! Each test starts a gateway with two proxy servers over the same config,
//! one per engine (`Engine::Fast`, `Engine::Hyper`), in front of an
//! upstream written here on raw TCP: it records every request it reads
//! (head and body) and when each of its connections ends, and answers by
//! path (`/big`: a 32 MiB body; `/stall`: 1000 bytes of a 100000-byte body,
//! then nothing; `/hold`: no answer at all; anything else: `ok`). Clients
//! are raw `TcpStream`s writing exact bytes. Every case runs on both
//! engines and checks the status *and* whether the connection closed, and
//! that both engines agree. Waits are on conditions (the upstream's record,
//! EOF); time bounds only catch hangs.

mod edge_corpus;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use tollgate_data_plane::server::ProxyServer;
use tollgate_data_plane::{Engine, Gateway, Limits};
use tollgate_model::{ConfigSet, Resource};

/// Catches hangs; nothing here is expected to take more than a second or two.
const BOUND: Duration = Duration::from_secs(20);
/// The client send timeout of both servers.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// `/big`'s body: far more than the socket buffers between the upstream and
/// a client that stops reading can hold.
const BIG: usize = 32 * 1024 * 1024;
const ENGINES: [Engine; 2] = [Engine::Fast, Engine::Hyper];

static TAGS: AtomicU64 = AtomicU64::new(0);

/// A unique marker for one request's path (and what it smuggles), to find
/// it (or prove its absence) in what the upstream read.
fn tag() -> String {
    format!("tag{}x", TAGS.fetch_add(1, Ordering::Relaxed))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &str) -> bool {
    find(hay, needle.as_bytes()).is_some()
}

fn replace(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + to.len());
    let mut rest = bytes;
    while let Some(i) = find(rest, from.as_bytes()) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to.as_bytes());
        rest = &rest[i + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

// ---------------------------------------------------------------------------
// The upstream
// ---------------------------------------------------------------------------

/// One request as the upstream read it.
#[derive(Clone, Debug)]
struct Seen {
    /// Which upstream connection read it (for failure messages).
    #[allow(dead_code)]
    conn: u64,
    target: String,
    /// Names as sent (case kept), values as bytes.
    headers: Vec<(String, Vec<u8>)>,
    raw_head: Vec<u8>,
    body: Vec<u8>,
    /// The body was read to its end (not cut by EOF).
    complete: bool,
}

impl Seen {
    fn header(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    fn mentions(&self, tag: &str) -> bool {
        contains(&self.raw_head, tag) || contains(&self.body, tag)
    }
}

#[derive(Clone, Debug)]
enum Event {
    Request(Seen),
    /// An upstream connection ended (the gateway closed it, or it broke);
    /// `last` is the target of the last request read on it.
    Closed {
        #[allow(dead_code)]
        conn: u64,
        last: String,
    },
}

#[derive(Clone)]
struct Upstream {
    addr: SocketAddr,
    events: Arc<watch::Sender<Vec<Event>>>,
}

impl Upstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Upstream {
            addr,
            events: Arc::new(watch::channel(Vec::new()).0),
        };
        let u = up.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((s, _)) = listener.accept().await {
                n += 1;
                tokio::spawn(u.clone().connection(s, n));
            }
        });
        up
    }

    fn push(&self, e: Event) {
        self.events.send_modify(|v| v.push(e));
    }

    /// Wait (within `BOUND`) until `done` holds of the events so far.
    async fn wait_for(&self, what: &str, done: impl FnMut(&Vec<Event>) -> bool) -> Vec<Event> {
        let mut rx = self.events.subscribe();
        let events = tokio::time::timeout(BOUND, rx.wait_for(done))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "waited {BOUND:?} for the upstream to see {what}; it saw {:#?}",
                    self.events.borrow()
                )
            })
            .expect("the sender lives in self");
        events.clone()
    }

    fn requests(&self) -> Vec<Seen> {
        self.events
            .borrow()
            .iter()
            .filter_map(|e| match e {
                Event::Request(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    /// The request whose target holds `tag`, once the upstream read it.
    async fn seen(&self, tag: &str) -> Seen {
        let found = |events: &Vec<Event>| {
            events.iter().find_map(|e| match e {
                Event::Request(s) if s.target.contains(tag) => Some(s.clone()),
                _ => None,
            })
        };
        let events = self
            .wait_for(&format!("a request for {tag}"), |ev| found(ev).is_some())
            .await;
        found(&events).unwrap()
    }

    /// Wait until the connection that carried the request for `tag` ends.
    async fn closed_after(&self, tag: &str, what: &str) {
        self.wait_for(what, |events| {
            events
                .iter()
                .any(|e| matches!(e, Event::Closed { last, .. } if last.contains(tag)))
        })
        .await;
    }

    fn never_saw(&self, tag: &str) -> Result<(), Seen> {
        match self.requests().into_iter().find(|s| s.mentions(tag)) {
            Some(s) => Err(s),
            None => Ok(()),
        }
    }

    async fn connection(self, mut s: TcpStream, conn: u64) {
        let mut buf = Vec::new();
        let mut last = String::new();
        loop {
            let Some(seen) = self.read_request(&mut s, &mut buf, conn).await else {
                break;
            };
            last = seen.target.clone();
            let target = seen.target.clone();
            self.push(Event::Request(seen));
            if target.contains("/hold") {
                // No answer: the connection ends when the gateway closes it.
                drain(&mut s).await;
                break;
            }
            if target.contains("/stall") {
                let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
                if s.write_all(head).await.is_ok() && s.write_all(&[b'a'; 1000]).await.is_ok() {
                    drain(&mut s).await;
                }
                break;
            }
            if target.contains("/gzip") {
                // A body coded by the target (the bytes need not be real
                // gzip for a proxy): the coding must reach the client.
                let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
                if s.write_all(answer).await.is_err() {
                    break;
                }
                continue;
            }
            if target.contains("/big") {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n");
                if s.write_all(head.as_bytes()).await.is_err() {
                    break;
                }
                let chunk = vec![b'b'; 64 * 1024];
                let mut sent = 0;
                while sent < BIG {
                    if s.write_all(&chunk).await.is_err() {
                        break;
                    }
                    sent += chunk.len();
                }
                if sent < BIG {
                    break;
                }
                continue;
            }
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .is_err()
            {
                break;
            }
        }
        self.push(Event::Closed { conn, last });
    }

    /// Read one request (head, then a body by Content-Length or chunked).
    /// `None` at EOF; a request cut mid-body is recorded as incomplete.
    async fn read_request(&self, s: &mut TcpStream, buf: &mut Vec<u8>, conn: u64) -> Option<Seen> {
        let head_len = loop {
            if let Some(i) = find(buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !read_some(s, buf).await {
                return None;
            }
        };
        let raw_head = buf[..head_len].to_vec();
        let mut slots = [httparse::EMPTY_HEADER; 256];
        let mut req = httparse::Request::new(&mut slots);
        let parsed = req.parse(&raw_head);
        let mut seen = Seen {
            conn,
            target: req.path.unwrap_or("<unparsable>").to_string(),
            headers: req
                .headers
                .iter()
                .map(|h| (h.name.to_string(), h.value.to_vec()))
                .collect(),
            raw_head: raw_head.clone(),
            body: Vec::new(),
            complete: true,
        };
        if parsed.is_err() {
            seen.target = format!("<unparsable> {}", String::from_utf8_lossy(&raw_head));
        }
        buf.drain(..head_len);
        let chunked = seen
            .header("transfer-encoding")
            .iter()
            .any(|v| contains(&v.to_ascii_lowercase(), "chunked"));
        let length = seen
            .header("content-length")
            .first()
            .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok());
        let ok = if chunked {
            read_chunked(s, buf, &mut seen.body).await
        } else {
            let n = length.unwrap_or(0);
            loop {
                if buf.len() >= n {
                    seen.body = buf.drain(..n).collect();
                    break true;
                }
                if !read_some(s, buf).await {
                    seen.body = std::mem::take(buf);
                    break false;
                }
            }
        };
        if !ok {
            seen.complete = false;
            let target = seen.target.clone();
            self.push(Event::Request(seen));
            self.push(Event::Closed { conn, last: target });
            // The caller sees EOF next and records nothing more.
            return None;
        }
        Some(seen)
    }
}

async fn read_some(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Read a chunked body into `body`; `false` if the stream ended first or
/// it is malformed.
async fn read_chunked(s: &mut TcpStream, buf: &mut Vec<u8>, body: &mut Vec<u8>) -> bool {
    loop {
        let line = loop {
            if let Some(i) = find(buf, b"\r\n") {
                break i;
            }
            if !read_some(s, buf).await {
                return false;
            }
        };
        let size_text = String::from_utf8_lossy(&buf[..line]).to_string();
        let size_text = size_text.split(';').next().unwrap_or("").trim().to_string();
        let Ok(size) = usize::from_str_radix(&size_text, 16) else {
            return false;
        };
        buf.drain(..line + 2);
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let end = loop {
                    if let Some(i) = find(buf, b"\r\n") {
                        break i;
                    }
                    if !read_some(s, buf).await {
                        return false;
                    }
                };
                buf.drain(..end + 2);
                if end == 0 {
                    return true;
                }
            }
        }
        while buf.len() < size + 2 {
            if !read_some(s, buf).await {
                return false;
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

async fn drain(s: &mut TcpStream) {
    let mut sink = [0u8; 16 * 1024];
    while let Ok(n) = s.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

// ---------------------------------------------------------------------------
// The gateway: one config, one server per engine
// ---------------------------------------------------------------------------

struct Harness {
    up: Upstream,
    fast: SocketAddr,
    hyper: SocketAddr,
    _stop: DropGuard,
}

impl Harness {
    /// APIs, all on the one upstream, no retries but on `/retry`, `timeout_ms` 60 s (so a
    /// cancelled request cannot be mistaken for a timed-out one):
    /// - `/api`: the defaults;
    /// - `/open`: `allow_underscore_headers: true`;
    /// - `/idle`: `upstream.idle_timeout_ms: 300`;
    /// - `/retry`: `retries: 1` (an idempotent request's body is read whole,
    ///   to be replayable).
    async fn start() -> Self {
        let up = Upstream::start().await;
        let url = format!("http://{}", up.addr);
        let api = |id: &str, base: &str, underscores: bool, idle_ms: u64, retries: u32| {
            let doc = json!({
                "id": id,
                "base_path": base,
                "upstream": {
                    "targets": [{"url": url}],
                    "retries": retries,
                    "timeout_ms": 60_000,
                    "idle_timeout_ms": idle_ms,
                },
                "routes": [{"id": "all", "path": "/{rest+}"}, {"id": "root", "path": "/"}],
                "allow_underscore_headers": underscores,
            });
            Resource::Api(serde_json::from_value(doc).expect("an API document"))
        };
        let resources = [
            api("edge", "/api", false, 60_000, 0),
            api("open", "/open", true, 60_000, 0),
            api("idle", "/idle", false, 300, 0),
            api("retry", "/retry", false, 60_000, 1),
        ];
        let config = ConfigSet {
            revision: 1,
            resources: resources.into_iter().map(|r| (r.key(), r)).collect(),
        };
        let gateway = Gateway::new();
        gateway.install(&config).expect("the config installs");
        let stop = CancellationToken::new();
        let fast = serve(gateway.clone(), Engine::Fast, stop.clone()).await;
        let hyper = serve(gateway, Engine::Hyper, stop.clone()).await;
        Harness {
            up,
            fast,
            hyper,
            _stop: stop.drop_guard(),
        }
    }

    fn addr(&self, engine: Engine) -> SocketAddr {
        match engine {
            Engine::Fast => self.fast,
            Engine::Hyper => self.hyper,
        }
    }

    /// A clean request on a fresh connection gets its answer, and the
    /// upstream has read it: after this, what the upstream read before is
    /// in its record.
    async fn barrier(&self, engine: Engine) {
        let t = tag();
        let mut c = Client::connect(self.addr(engine)).await;
        c.send(format!("GET /api/{t}/sentinel HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        let r = c.response().await.expect("an answer to a clean request");
        assert_eq!(
            r.status, 200,
            "{engine:?}: a clean request on a fresh connection"
        );
        self.up.seen(&t).await;
    }

    /// Nothing with `tag` in its head or body reached the upstream.
    async fn assert_never_forwarded(&self, tag: &str, case: &str) {
        for engine in ENGINES {
            self.barrier(engine).await;
        }
        if let Err(seen) = self.up.never_saw(tag) {
            panic!("{case}: the upstream got {seen:#?}");
        }
    }
}

async fn serve(gateway: Arc<Gateway>, engine: Engine, stop: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = ProxyServer {
        gateway,
        limits: Arc::new(Limits {
            engine,
            client_send_timeout: SEND_TIMEOUT,
            ..Limits::default()
        }),
        tls: None,
        grace: Duration::from_secs(1),
        workers: 1,
        kill: CancellationToken::new(),
    };
    tokio::spawn(server.run(listener, stop));
    addr
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

struct Client {
    s: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The whole body came (by its length or chunked framing).
    complete: bool,
}

/// What one connection got: the statuses of the answers, in order, and
/// whether the gateway closed it after them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    statuses: Vec<u16>,
    closed: bool,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).unwrap();
        Client {
            s,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// A client whose receive buffer is small: one that stops reading
    /// stalls the gateway's writes soon.
    async fn connect_small_window(addr: SocketAddr) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        let s = socket.connect(addr).await.expect("connect");
        s.set_nodelay(true).unwrap();
        Client {
            s,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Write bytes; a refused write (the gateway closed already) is not an
    /// error here: what the client reads tells.
    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes).await;
        let _ = self.s.flush().await;
    }

    /// Write `parts` one write each. The pause between them only makes it
    /// likely that the gateway reads them apart; the outcome must be the
    /// same either way, so nothing waits on it.
    async fn send_split(&mut self, parts: &[&[u8]]) {
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            self.send(p).await;
        }
    }

    /// One read; `false` at EOF (or a reset: the gateway closed).
    async fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = vec![0u8; 64 * 1024];
        match tokio::time::timeout(BOUND, self.s.read(&mut chunk)).await {
            Err(_) => panic!("no bytes and no EOF within {BOUND:?}: the connection hangs"),
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.eof = true;
                false
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next response; `None` if the connection ends before its head.
    async fn response(&mut self) -> Option<Resp> {
        let head_len = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill().await {
                assert!(
                    self.buf.is_empty(),
                    "the connection ended inside a response head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
        };
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let mut res = httparse::Response::new(&mut slots);
        res.parse(&self.buf[..head_len])
            .expect("a valid response head");
        let status = res.code.unwrap();
        let headers: Vec<(String, String)> = res
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).to_string(),
                )
            })
            .collect();
        self.buf.drain(..head_len);
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        let complete =
            if status == 101 || status == 204 || status == 304 || (100..200).contains(&status) {
                true
            } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                self.read_chunked(&mut body).await
            } else if let Some(n) = get("content-length") {
                let n: usize = n.trim().parse().expect("a length");
                while self.buf.len() < n && self.fill().await {}
                let take = n.min(self.buf.len());
                body = self.buf.drain(..take).collect();
                take == n
            } else {
                // Delimited by the close.
                while self.fill().await {}
                body = std::mem::take(&mut self.buf);
                true
            };
        Some(Resp {
            status,
            headers,
            body,
            complete,
        })
    }

    async fn read_chunked(&mut self, body: &mut Vec<u8>) -> bool {
        loop {
            let line = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if !self.fill().await {
                    return false;
                }
            };
            let text = String::from_utf8_lossy(&self.buf[..line]).to_string();
            let size = usize::from_str_radix(text.split(';').next().unwrap().trim(), 16)
                .expect("a chunk size");
            self.buf.drain(..line + 2);
            if size == 0 {
                loop {
                    let end = loop {
                        if let Some(i) = find(&self.buf, b"\r\n") {
                            break i;
                        }
                        if !self.fill().await {
                            return false;
                        }
                    };
                    self.buf.drain(..end + 2);
                    if end == 0 {
                        return true;
                    }
                }
            }
            while self.buf.len() < size + 2 {
                if !self.fill().await {
                    body.extend_from_slice(&self.buf);
                    return false;
                }
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }

    /// Every answer until the gateway closes the connection (`closed`), or
    /// until `BOUND` passes with the connection open (`closed: false`).
    async fn until_close(&mut self) -> Outcome {
        let mut statuses = Vec::new();
        loop {
            match tokio::time::timeout(BOUND, self.response()).await {
                Ok(Some(r)) => statuses.push(r.status),
                Ok(None) => {
                    return Outcome {
                        statuses,
                        closed: true,
                    }
                }
                Err(_) => {
                    return Outcome {
                        statuses,
                        closed: false,
                    }
                }
            }
        }
    }

    /// Whether the connection still serves: a clean request on it is
    /// answered 200.
    async fn still_serves(&mut self) -> bool {
        let t = tag();
        self.send(format!("GET /api/{t}/alive HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        matches!(self.response().await, Some(r) if r.status == 200)
    }

    /// Read whatever comes until EOF; the bytes read.
    async fn read_to_eof(&mut self) -> usize {
        let mut total = std::mem::take(&mut self.buf).len();
        while self.fill().await {
            total += self.buf.len();
            self.buf.clear();
        }
        total
    }
}

/// Send `parts` (one write each) to each engine on a fresh connection and
/// read every answer until the gateway closes it; both engines must agree.
async fn outcome_on_both(h: &Harness, case: &str, parts: &[&[u8]]) -> Outcome {
    let mut seen = Vec::new();
    for engine in ENGINES {
        let mut c = Client::connect(h.addr(engine)).await;
        c.send_split(parts).await;
        seen.push((engine, c.until_close().await));
    }
    assert_eq!(
        seen[0].1, seen[1].1,
        "{case}: the engines disagree: {seen:?}"
    );
    seen.remove(0).1
}

/// A request with both a length and chunked framing that, read as
/// chunked, smuggles `GET /api/<tag>-smuggled`.
fn cl_te(tag: &str) -> Vec<u8> {
    let body = format!("0\r\n\r\nGET /api/{tag}-smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
    format!(
        "POST /api/{tag}/clte HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------
// Engine parse
// ---------------------------------------------------------------------------

#[test]
fn the_engine_is_fast_or_hyper() {
    assert_eq!("fast".parse::<Engine>(), Ok(Engine::Fast));
    assert_eq!("hyper".parse::<Engine>(), Ok(Engine::Hyper));
    assert!("h2".parse::<Engine>().is_err());
    assert!("".parse::<Engine>().is_err());
    assert!("Fast".parse::<Engine>().is_err());
    assert_eq!(Engine::default(), Engine::Fast);
    assert_eq!(Limits::default().engine, Engine::Fast);
    assert_eq!(Limits::default().max_headers, 100);
}

// ---------------------------------------------------------------------------
// 1. Identity spoofing through `_`
// ---------------------------------------------------------------------------

/// Names that, with `_` read as `-`, are framing or the gateway's own.
fn reads_as_reserved(name: &str) -> bool {
    let read = name.to_ascii_lowercase().replace('_', "-");
    [
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "upgrade",
        "te",
        "trailer",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
    ]
    .contains(&read.as_str())
        || read.starts_with("x-tollgate-")
}

const SPOOF: &str = "x_tollgate_tenant: evil-corp\r\n\
    X_Tollgate_Key_Id: evil-key\r\n\
    x_forwarded_for: 6.6.6.6\r\n\
    x_forwarded_host: evil.example\r\n\
    x_request_id: evil-request\r\n\
    x-tollgate-tenant: evil-corp\r\n\
    x-tollgate-subject: evil-subject\r\n\
    x_custom: 1\r\n";

/// What reached the upstream carries no identity or framing the client
/// made up.
fn assert_clean_identity(seen: &Seen, case: &str) {
    for (name, value) in &seen.headers {
        assert!(
            !(name.contains('_') && reads_as_reserved(name)),
            "{case}: {name} reached the upstream: {seen:#?}"
        );
        for evil in [
            "evil-corp",
            "evil-key",
            "6.6.6.6",
            "evil.example",
            "evil-request",
            "evil-subject",
        ] {
            assert!(
                !contains(value, evil),
                "{case}: {name}: {} reached the upstream",
                String::from_utf8_lossy(value)
            );
        }
    }
}

#[tokio::test]
async fn a_response_coding_besides_chunked_reaches_the_client() {
    let h = Harness::start().await;
    for engine in ENGINES {
        for method in ["GET", "POST"] {
            let mut c = Client::connect(h.addr(engine)).await;
            let body = if method == "POST" {
                "Content-Length: 0\r\n"
            } else {
                ""
            };
            c.send(
                format!(
                    "{method} /api/{}/gzip HTTP/1.1\r\nHost: x\r\n{body}\r\n",
                    tag()
                )
                .as_bytes(),
            )
            .await;
            let r = c.response().await.expect("an answer");
            let case = format!("{engine:?} {method}");
            assert_eq!(r.status, 200, "{case}");
            let te: Vec<&str> = r
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(te, vec!["gzip, chunked"], "{case}: {r:?}");
            assert_eq!(r.body, b"hello", "{case}");
            assert!(r.complete, "{case}");
        }
    }
}

#[tokio::test]
async fn underscore_names_never_spoof_identity() {
    let h = Harness::start().await;
    for (base, forwards_custom) in [("/api", false), ("/open", true)] {
        let mut outcomes = Vec::new();
        for engine in ENGINES {
            let case = format!("{engine:?} {base}");
            let t = tag();
            let mut c = Client::connect(h.addr(engine)).await;
            c.send(format!("GET {base}/{t}/id HTTP/1.1\r\nHost: x\r\n{SPOOF}\r\n").as_bytes())
                .await;
            let r = c.response().await.expect("an answer");
            assert_eq!(r.status, 200, "{case}: {r:?}");
            let seen = h.up.seen(&t).await;
            assert_clean_identity(&seen, &case);
            let custom = seen.header("x_custom");
            if forwards_custom {
                assert_eq!(
                    custom,
                    vec![&b"1"[..]],
                    "{case}: x_custom is kept on opt-in"
                );
            } else {
                assert!(custom.is_empty(), "{case}: x_custom is dropped by default");
            }
            // The gateway's own: set by it, not taken from the client.
            assert_eq!(
                seen.header("x-forwarded-for"),
                vec![&b"127.0.0.1"[..]],
                "{case}"
            );
            assert_eq!(seen.header("x-request-id").len(), 1, "{case}");
            let open = c.still_serves().await;
            outcomes.push(Outcome {
                statuses: vec![r.status],
                closed: !open,
            });
        }
        assert_eq!(outcomes[0], outcomes[1], "{base}: the engines disagree");
        assert!(!outcomes[0].closed, "{base}: the connection goes on");
    }
}

/// `Transfer_Encoding` and `Content_Length` never reach the upstream as
/// framing: dropped (the request goes on) or refused with 400 and a close,
/// the same on both engines, with or without the opt-in.
#[tokio::test]
async fn underscore_framing_look_alikes_never_reach_the_upstream() {
    let h = Harness::start().await;
    for base in ["/api", "/open"] {
        let mut outcomes = Vec::new();
        for engine in ENGINES {
            let case = format!("{engine:?} {base}");
            let t = tag();
            let mut c = Client::connect(h.addr(engine)).await;
            // Read as chunked by a CGI upstream, this body smuggles a request.
            let smuggle = format!("0\r\n\r\nGET /api/{t}-smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
            c.send(
                format!(
                    "POST {base}/{t}/framing HTTP/1.1\r\nHost: x\r\nTransfer_Encoding: chunked\r\n\
                     Content_Length: 1000\r\nContent-Length: {}\r\n{SPOOF}\r\n{smuggle}",
                    smuggle.len()
                )
                .as_bytes(),
            )
            .await;
            let r = c.response().await.expect("an answer");
            let closed = if r.status == 200 {
                let seen = h.up.seen(&t).await;
                assert_clean_identity(&seen, &case);
                assert!(
                    seen.header("transfer_encoding").is_empty(),
                    "{case}: {seen:#?}"
                );
                assert!(
                    seen.header("content_length").is_empty(),
                    "{case}: {seen:#?}"
                );
                assert!(
                    seen.header("transfer-encoding").is_empty(),
                    "{case}: {seen:#?}"
                );
                !c.still_serves().await
            } else {
                assert_eq!(r.status, 400, "{case}: refused, if not served");
                c.until_close().await.closed
            };
            outcomes.push(Outcome {
                statuses: vec![r.status],
                closed,
            });
            h.barrier(engine).await;
            assert!(
                h.up.requests()
                    .iter()
                    .all(|s| !s.target.contains(&format!("{t}-smuggled"))),
                "{case}: the smuggled request reached the upstream"
            );
        }
        assert_eq!(outcomes[0], outcomes[1], "{base}: the engines disagree");
        let expected_closed = outcomes[0].statuses[0] == 400;
        assert_eq!(outcomes[0].closed, expected_closed, "{base}: {outcomes:?}");
    }
}

// ---------------------------------------------------------------------------
// 2. Framing
// ---------------------------------------------------------------------------

/// Bytes of a request, given the tag that marks it upstream.
type MakeRequest = Box<dyn Fn(&str) -> Vec<u8>>;

#[tokio::test]
async fn ambiguous_framing_is_refused_and_closed_on_both_engines() {
    let h = Harness::start().await;
    let cases: Vec<(&str, u16, MakeRequest)> = vec![
        ("Content-Length and Transfer-Encoding", 400, Box::new(cl_te)),
        (
            "Transfer-Encoding then Content-Length",
            400,
            Box::new(|t| {
                format!(
                    "POST /api/{t} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
                )
                .into_bytes()
            }),
        ),
        (
            "two differing Content-Length lines",
            400,
            Box::new(|t| {
                format!("POST /api/{t} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")
                    .into_bytes()
            }),
        ),
        (
            "a Content-Length list that differs",
            400,
            Box::new(|t| {
                format!("POST /api/{t} HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!")
                    .into_bytes()
            }),
        ),
        (
            "Content-Length: +5",
            400,
            Box::new(|t| {
                format!("POST /api/{t} HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello")
                    .into_bytes()
            }),
        ),
        (
            "Content-Length: 0x5",
            400,
            Box::new(|t| {
                format!("POST /api/{t} HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello")
                    .into_bytes()
            }),
        ),
        (
            "Transfer-Encoding: gzip (last coding not chunked)",
            400,
            Box::new(|t| {
                format!(
                    "POST /api/{t} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n"
                )
                .into_bytes()
            }),
        ),
        (
            "Transfer-Encoding: chunked, gzip",
            400,
            Box::new(|t| {
                format!("POST /api/{t} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n")
                    .into_bytes()
            }),
        ),
        (
            "Transfer-Encoding: gzip, chunked (not implemented)",
            501,
            Box::new(|t| {
                format!("POST /api/{t} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
                    .into_bytes()
            }),
        ),
        (
            "gzip and chunked on two lines (not implemented)",
            501,
            Box::new(|t| {
                format!(
                    "POST /api/{t} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                )
                .into_bytes()
            }),
        ),
        (
            "obs-fold",
            400,
            Box::new(|t| {
                format!("GET /api/{t} HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n").into_bytes()
            }),
        ),
        (
            "obs-fold of Transfer-Encoding",
            400,
            Box::new(|t| {
                format!("POST /api/{t} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n")
                    .into_bytes()
            }),
        ),
        (
            "a bare CR in a value",
            400,
            Box::new(|t| {
                format!("GET /api/{t} HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n").into_bytes()
            }),
        ),
        (
            "a space in a name",
            400,
            Box::new(|t| {
                format!("GET /api/{t} HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n").into_bytes()
            }),
        ),
        (
            "a control byte in a name",
            400,
            Box::new(|t| {
                format!("GET /api/{t} HTTP/1.1\r\nHost: x\r\nX\x01A: 1\r\n\r\n").into_bytes()
            }),
        ),
        (
            "a space before the colon",
            400,
            Box::new(|t| {
                format!("POST /api/{t} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n")
                    .into_bytes()
            }),
        ),
        (
            "a NUL in a value",
            400,
            Box::new(|t| {
                format!("GET /api/{t} HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n").into_bytes()
            }),
        ),
        (
            "HTTP/1.1 without Host",
            400,
            Box::new(|t| format!("GET /api/{t} HTTP/1.1\r\nX-A: 1\r\n\r\n").into_bytes()),
        ),
        (
            "HTTP/1.1 with two Hosts",
            400,
            Box::new(|t| {
                format!("GET /api/{t} HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n").into_bytes()
            }),
        ),
        (
            "HTTP/1.0 with Transfer-Encoding",
            400,
            Box::new(|t| {
                format!("POST /api/{t} HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").into_bytes()
            }),
        ),
    ];
    for (case, status, request) in &cases {
        let t = tag();
        let got = outcome_on_both(&h, case, &[&request(&t)]).await;
        assert_eq!(
            got,
            Outcome {
                statuses: vec![*status],
                closed: true
            },
            "{case}"
        );
        h.assert_never_forwarded(&t, case).await;
    }
}

/// The desync corpus's ambiguous and severe heads (see `edge_corpus`),
/// each with a body that, read as chunked, smuggles a second request:
/// refused and closed, the same way on both engines, and never forwarded.
#[tokio::test]
async fn the_desync_corpus_is_refused_alike_and_never_forwarded() {
    let h = Harness::start().await;
    let mut failures = Vec::new();
    let mut tags = Vec::new();
    for (index, reason, head) in edge_corpus::CASES {
        let t = tag();
        let mut request = replace(head, "@TAG@", &t);
        request.extend_from_slice(
            format!("0\r\n\r\nGET /api/{t}-smuggled HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        );
        let mut seen = Vec::new();
        for engine in ENGINES {
            let mut c = Client::connect(h.addr(engine)).await;
            c.send(&request).await;
            seen.push(c.until_close().await);
        }
        let case = format!(
            "corpus #{index} {reason}: {:?}",
            String::from_utf8_lossy(&request)
        );
        if seen[0] != seen[1] {
            failures.push(format!(
                "{case}: the engines disagree: fast {:?}, hyper {:?}",
                seen[0], seen[1]
            ));
        } else if !seen[0].closed
            || seen[0].statuses.len() != 1
            || !matches!(seen[0].statuses[0], 400 | 501)
        {
            failures.push(format!(
                "{case}: expected 400 (or 501) and a close, got {:?}",
                seen[0]
            ));
        }
        tags.push((t, case));
    }
    for engine in ENGINES {
        h.barrier(engine).await;
    }
    for (t, case) in &tags {
        if let Err(s) = h.up.never_saw(t) {
            failures.push(format!(
                "{case}: forwarded: {:?}",
                String::from_utf8_lossy(&s.raw_head)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        tags.len(),
        failures.join("\n")
    );
    // A clean request on a fresh connection still works.
    for engine in ENGINES {
        let mut c = Client::connect(h.addr(engine)).await;
        assert!(c.still_serves().await, "{engine:?}");
    }
}

// ---------------------------------------------------------------------------
// 3. The guard never switches off
// ---------------------------------------------------------------------------

/// On one connection: `first` (in `parts`, one write each), its answer,
/// then a CL+TE request: that one is refused with 400 and a close, and
/// never forwarded.
async fn then_cl_te(h: &Harness, case: &str, parts: &[&[u8]], first_status: u16, t: &str) {
    let mut outcomes = Vec::new();
    for engine in ENGINES {
        let mut c = Client::connect(h.addr(engine)).await;
        c.send_split(parts).await;
        let first = c
            .response()
            .await
            .unwrap_or_else(|| panic!("{engine:?} {case}: no answer"));
        c.send(&cl_te(&format!("{t}-second"))).await;
        let mut rest = c.until_close().await;
        rest.statuses.insert(0, first.status);
        outcomes.push(rest);
    }
    assert_eq!(outcomes[0], outcomes[1], "{case}: the engines disagree");
    assert_eq!(
        outcomes[0],
        Outcome {
            statuses: vec![first_status, 400],
            closed: true
        },
        "{case}"
    );
    h.assert_never_forwarded(&format!("{t}-second"), case).await;
}

#[tokio::test]
async fn the_guard_holds_after_an_upgrade_that_was_not_acted_on() {
    let h = Harness::start().await;
    let t = tag();
    let first = format!(
        "GET /api/{t}/upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    then_cl_te(
        &h,
        "after an Upgrade answered 200",
        &[first.as_bytes()],
        200,
        &t,
    )
    .await;
}

#[tokio::test]
async fn the_guard_holds_after_a_connect() {
    let h = Harness::start().await;
    let t = tag();
    let mut statuses = Vec::new();
    for engine in ENGINES {
        let mut c = Client::connect(h.addr(engine)).await;
        c.send(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n")
            .await;
        let first = c.response().await.expect("an answer to CONNECT");
        statuses.push(first.status);
    }
    assert_eq!(statuses[0], statuses[1], "CONNECT: the engines disagree");
    assert!(
        statuses[0] >= 400,
        "a CONNECT is not tunnelled: {statuses:?}"
    );
    then_cl_te(
        &h,
        "after a CONNECT",
        &[b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n"],
        statuses[0],
        &t,
    )
    .await;
}

#[tokio::test]
async fn the_guard_holds_after_a_long_chunk_extension_split_across_reads() {
    let h = Harness::start().await;
    let t = tag();
    let head = format!(
        "POST /api/{t}/long HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext={}",
        "a".repeat(3000)
    );
    let rest = format!("{}\r\nhello\r\n0\r\n\r\n", "a".repeat(2000));
    then_cl_te(
        &h,
        "after a 5 KiB chunk extension in two writes",
        &[head.as_bytes(), rest.as_bytes()],
        200,
        &t,
    )
    .await;
    assert!(
        h.up.requests()
            .iter()
            .any(|s| s.target.contains(&format!("{t}/long")) && s.body == b"hello"),
        "the chunked body reached the upstream whole"
    );
}

// ---------------------------------------------------------------------------
// 4. Bare-LF heads split across reads
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_bare_lf_cl_te_head_split_across_writes_is_refused() {
    let h = Harness::start().await;
    let t = tag();
    let body = format!("0\r\n\r\nGET /api/{t}-smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
    let first = format!(
        "POST /api/{t}/lf HTTP/1.1\nHost: x\nContent-Length: {}\n",
        body.len()
    );
    let second = format!("Transfer-Encoding: chunked\n\n{body}");
    let got = outcome_on_both(&h, "bare LF, split", &[first.as_bytes(), second.as_bytes()]).await;
    assert_eq!(
        got,
        Outcome {
            statuses: vec![400],
            closed: true
        }
    );
    h.assert_never_forwarded(&t, "bare LF, split").await;

    // The split inside the end of the head: `\n` | `\n`.
    let t = tag();
    let body = format!("0\r\n\r\nGET /api/{t}-smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
    let first = format!(
        "POST /api/{t}/lf HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\nContent-Length: {}\n",
        body.len()
    );
    let second = format!("\n{body}");
    let got = outcome_on_both(
        &h,
        "bare LF, split at the end",
        &[first.as_bytes(), second.as_bytes()],
    )
    .await;
    assert_eq!(
        got,
        Outcome {
            statuses: vec![400],
            closed: true
        }
    );
    h.assert_never_forwarded(&t, "bare LF, split at the end")
        .await;
}

// ---------------------------------------------------------------------------
// 5. Malformed chunked bodies
// ---------------------------------------------------------------------------

/// A chunked body that is malformed (a size that is not hex, data longer
/// than its size) sent with `method`: 400 and a close on both engines.
async fn malformed_chunked_body(method: &str, base: &str) {
    let h = Harness::start().await;
    let mut failures = Vec::new();
    for (what, body) in [
        ("a chunk size that is not hex", "zz\r\n"),
        ("chunk data longer than its size", "2\r\nhello\r\n0\r\n\r\n"),
    ] {
        let t = tag();
        let case = format!("{method}: {what}");
        let request = format!(
            "{method} {base}/{t}/badchunk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        let got = outcome_on_both(&h, &case, &[request.as_bytes()]).await;
        let want = Outcome {
            statuses: vec![400],
            closed: true,
        };
        if got != want {
            failures.push(format!(
                "{case} ({request:?}): got {got:?} on both engines, want {want:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// PUT on an API with retries is replayable: the gateway reads its body
/// whole before going upstream.
#[tokio::test]
async fn a_malformed_chunked_body_read_whole_is_400_and_closed() {
    malformed_chunked_body("PUT", "/retry").await;
}

/// A body that is not kept (POST, or no retries) streams to the upstream
/// as it comes; its failure is the client's all the same.
#[tokio::test]
async fn a_malformed_chunked_body_streamed_is_400_and_closed() {
    malformed_chunked_body("POST", "/api").await;
}

// ---------------------------------------------------------------------------
// 6. Too many fields
// ---------------------------------------------------------------------------

fn with_fields(t: &str, total: usize) -> Vec<u8> {
    let mut head = format!("GET /api/{t}/fields HTTP/1.1\r\nHost: x\r\n");
    for i in 1..total {
        head.push_str(&format!("x-f{i}: {i}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[tokio::test]
async fn over_100_fields_is_431_and_closed_on_both_engines() {
    let h = Harness::start().await;
    for total in [101, 128, 129, 300] {
        let t = tag();
        let case = format!("{total} fields");
        let got = outcome_on_both(&h, &case, &[&with_fields(&t, total)]).await;
        assert_eq!(
            got,
            Outcome {
                statuses: vec![431],
                closed: true
            },
            "{case}"
        );
        h.assert_never_forwarded(&t, &case).await;
    }
    // 100 fields (Host included) are served, and the connection goes on.
    let mut outcomes = Vec::new();
    for engine in ENGINES {
        let t = tag();
        let mut c = Client::connect(h.addr(engine)).await;
        c.send(&with_fields(&t, 100)).await;
        let r = c.response().await.expect("an answer");
        let seen = h.up.seen(&t).await;
        assert!(
            seen.header("x-f99") == vec![&b"99"[..]],
            "{engine:?}: every field forwarded"
        );
        outcomes.push(Outcome {
            statuses: vec![r.status],
            closed: !c.still_serves().await,
        });
    }
    assert_eq!(outcomes[0], outcomes[1], "100 fields: the engines disagree");
    assert_eq!(
        outcomes[0],
        Outcome {
            statuses: vec![200],
            closed: false
        }
    );
}

// ---------------------------------------------------------------------------
// 7. A valid request pipelined before a bad one
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_valid_request_pipelined_before_a_bad_one_keeps_its_answer() {
    let h = Harness::start().await;
    for (what, bad) in [
        ("CL+TE", None),
        (
            "no Host",
            Some("GET /api/@T@-bad HTTP/1.1\r\nX-A: 1\r\n\r\n"),
        ),
        (
            "gzip",
            Some(
                "POST /api/@T@-bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
            ),
        ),
    ] {
        let t = tag();
        let mut bytes = format!("GET /api/{t}-good/first HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
        match bad {
            None => bytes.extend_from_slice(&cl_te(&format!("{t}-bad"))),
            Some(b) => bytes.extend_from_slice(b.replace("@T@", &t).as_bytes()),
        }
        let case = format!("valid, then {what}, in one write");
        let got = outcome_on_both(&h, &case, &[&bytes]).await;
        assert_eq!(
            got,
            Outcome {
                statuses: vec![200, 400],
                closed: true
            },
            "{case}"
        );
        h.up.seen(&format!("{t}-good")).await;
        h.assert_never_forwarded(&format!("{t}-bad"), &case).await;
    }
}

// ---------------------------------------------------------------------------
// 8-10. Slow and stalled peers
// ---------------------------------------------------------------------------

/// A client that stops reading while a large answer streams is dropped
/// (the send timeout is 1 s): the gateway closes both its connection and
/// the upstream's, and the client, reading at last, gets EOF before the
/// whole body.
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped() {
    let h = Harness::start().await;
    for engine in ENGINES {
        let t = tag();
        let mut c = Client::connect_small_window(h.addr(engine)).await;
        c.send(format!("GET /api/{t}/big HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        // The client reads nothing until the gateway gave up on it.
        h.up.closed_after(
            &t,
            &format!("{engine:?}: the upstream connection of a dropped client closed"),
        )
        .await;
        let got = c.read_to_eof().await;
        assert!(
            got < BIG,
            "{engine:?}: the client got {got} bytes of a {BIG}-byte body: it was not dropped"
        );
    }
}

/// An upstream that stalls mid-body (`idle_timeout_ms: 300`) is cut off,
/// and the client's connection closed with the body incomplete.
#[tokio::test]
async fn an_upstream_that_stalls_mid_body_is_cut_and_the_client_closed() {
    let h = Harness::start().await;
    let mut outcomes = Vec::new();
    for engine in ENGINES {
        let t = tag();
        let mut c = Client::connect(h.addr(engine)).await;
        c.send(format!("GET /idle/{t}/stall HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        let r = c.response().await.expect("the answer's head");
        assert_eq!(r.status, 200, "{engine:?}");
        assert!(!r.complete, "{engine:?}: the body cannot be whole");
        assert!(r.body.len() <= 1000, "{engine:?}");
        let rest = c.until_close().await;
        h.up.closed_after(
            &t,
            &format!("{engine:?}: the stalled upstream connection closed"),
        )
        .await;
        outcomes.push(Outcome {
            statuses: vec![r.status],
            closed: rest.closed && rest.statuses.is_empty(),
        });
    }
    assert_eq!(outcomes[0], outcomes[1], "the engines disagree");
    assert!(outcomes[0].closed);
}

/// A client that hangs up (FIN, then RST) while the upstream holds its
/// answer cancels the request: the upstream connection closes, long
/// before `timeout_ms` (60 s).
#[tokio::test]
async fn a_client_that_hangs_up_cancels_its_request_upstream() {
    let h = Harness::start().await;
    for engine in ENGINES {
        for reset in [false, true] {
            let how = if reset { "RST" } else { "FIN" };
            let t = tag();
            let mut c = Client::connect(h.addr(engine)).await;
            c.send(format!("GET /api/{t}/hold HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await;
            h.up.seen(&t).await;
            if reset {
                socket2::SockRef::from(&c.s)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
            } else {
                c.s.shutdown().await.unwrap();
            }
            drop(c);
            h.up.closed_after(
                &t,
                &format!("{engine:?}: the upstream connection closed after a client {how}"),
            )
            .await;
        }
    }
}
