//! HTTP/1.1 to plain-HTTP targets for requests whose body is already in
//! memory (no body, or a small one): our own client codec on the request's
//! task, over connections pooled per proxy worker thread.
//!
//! Why not hyper's client here, the common case: hyper_util's pooled client
//! takes a mutex per checkout and spawns a task per request, and even
//! hyper's low-level client drives each connection from a task of its own,
//! so every request and every body chunk crosses a channel and wakes a
//! second task. Here the request's own task writes the request and reads
//! the answer, and the response body reads straight from the socket as the
//! client connection sends it on (pingora works the same way).
//!
//! A worker thread owns its idle connections outright (a thread-local list,
//! no lock). A connection goes back to the list when its response body has
//! been read to the end: the body carries it (`UpstreamBody`). A body
//! dropped half read takes its connection with it, since nothing else could
//! be sent on it. A pooled connection the target has closed is replaced
//! before anything is written on it.
//!
//! Answers are framed per RFC 9112 (a length, chunked with trailers, until
//! close, none for HEAD, 204 and 304); one that breaks it is a 502, or,
//! mid-body, an answer cut short. A request body of up to 16 KiB goes out
//! with its head in one write. Each connection keeps one deadline timer,
//! reset for each request: moving a tokio timer later is one atomic store,
//! where a new timer is a wheel insertion and removal.
//!
//! Streamed uploads, HTTPS targets, HTTP/2 (gRPC) and upgrades use
//! `Clients` (hyper_util), which sends a body while it reads the answer.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant as Deadline, Sleep};

#[cfg(test)]
use super::fields::Answer;
use super::fields::UpstreamFields;
use super::syntax::{add_length, codings_besides_chunked, lists_token, FieldName, MAX_HEAD};
use crate::body::BoxError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections older than this are closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const MAX_IDLE_PER_TARGET: usize = 256;
/// Bodies up to this size are read whole before sending, so they can go
/// through this pool.
pub const SMALL_BODY: u64 = 64 * 1024;
/// Request bodies up to this size are copied behind the head and sent with it.
const GATHER_BODY: usize = 16 * 1024;
/// Limits on what a target may send: the response head, a chunk-size line,
/// the trailers.
const MAX_HEAD_BYTES: usize = MAX_HEAD;
const MAX_HEADERS: usize = 128;
const MAX_CHUNK_LINE: usize = 4096;
const READ_CHUNK: usize = 16 * 1024;

/// One connection to a target, with what has been read but not used.
struct Conn {
    io: TcpStream,
    buf: BytesMut,
    /// The request head being sent: kept with the connection so each
    /// request reuses its allocation.
    out: Vec<u8>,
    /// Whether it served a request before this one.
    reused: bool,
    /// The current request's deadline. Kept with the connection and reset
    /// for each request: moving a deadline later is one atomic store in
    /// tokio's timer, where a new timer per request is an insertion into
    /// the timer wheel and a removal (both under the driver's lock).
    deadline: Pin<Box<Sleep>>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// Keyed by the authority's text: `Authority` hashes byte by byte,
/// lowercasing each.
type IdleMap = HashMap<Box<str>, VecDeque<Idle>, crate::FastHash>;

thread_local! {
    /// This thread's idle connections per target authority. Most recently
    /// used at the back: busy connections stay warm, and the ones at the
    /// front age out.
    static IDLE: RefCell<IdleMap> = RefCell::default();
}

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connecting to {authority}: {source}")]
    Connect {
        authority: Authority,
        source: std::io::Error,
    },
    /// The target broke off or sent something that is not HTTP/1.
    #[error("{0}")]
    Protocol(String),
    #[error("upstream I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A reused connection closed before any of the answer came: most
    /// likely the target's keep-alive timeout racing this request.
    #[error("pooled connection closed before an answer: {0}")]
    Stale(std::io::Error),
    /// No answer by the route's deadline.
    #[error("no answer within the route's timeout")]
    TimedOut,
    /// From hyper_util's client (streamed uploads, HTTPS, HTTP/2, upgrades).
    #[error(transparent)]
    Client(#[from] hyper_util::client::legacy::Error),
}

impl SendError {
    /// Nothing reached the target: always safe to try another.
    pub fn is_connect(&self) -> bool {
        match self {
            SendError::Connect { .. } => true,
            SendError::Client(e) => e.is_connect(),
            _ => false,
        }
    }

    /// Worth another attempt for a request that may be sent twice (the
    /// caller decides that): nothing reached the target, or a reused
    /// connection was closed under the request.
    pub fn is_retryable(&self) -> bool {
        self.is_connect() || matches!(self, SendError::Stale(_))
    }
}

/// What goes on the request line and in the head. `headers` holds neither
/// `Host` nor hop-by-hop headers; the framing is ours to set.
pub struct Head<'a> {
    pub method: &'a Method,
    /// Written one after the other: the target's base path, the path, and
    /// the query.
    pub path: [&'a str; 2],
    pub query: Option<&'a str>,
    pub host: &'a HeaderValue,
    /// Written as they are, except `Host` (`host` is written instead) and
    /// `Content-Length` (written from the body's length).
    pub headers: &'a HeaderMap,
    /// Written after `headers`: fields the gateway sets that the map does
    /// not have.
    pub added: &'a [Option<(&'static HeaderName, &'a HeaderValue)>],
}

impl Head<'_> {
    /// Into `out`, in place of what it held.
    fn encode(&self, body_len: usize, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(256 + self.headers.len() * 48);
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        for part in self.path {
            out.extend_from_slice(part.as_bytes());
        }
        if let Some(q) = self.query {
            out.push(b'?');
            out.extend_from_slice(q.as_bytes());
        }
        out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        out.extend_from_slice(self.host.as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut declared = false;
        let added = self.added.iter().flatten().map(|(n, v)| (*n, *v));
        for (name, value) in self.headers.iter().chain(added) {
            if name == header::CONTENT_LENGTH {
                declared = true;
                continue;
            }
            if name == header::HOST {
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if body_len > 0 || declared {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// A connection of this thread to `authority` that is still open (`now`:
/// the caller's clock reading).
fn checkout(authority: &Authority, now: Instant) -> Option<Conn> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(authority.as_str())?;
        while let Some(mut c) = list.pop_back() {
            if now.saturating_duration_since(c.since) < IDLE_TIMEOUT && still_open(&mut c.conn) {
                return Some(c.conn);
            }
        }
        None
    })
}

/// An idle connection has nothing to read: a read readiness the reactor
/// has seen means the target closed it (or broke the protocol).
fn still_open(conn: &mut Conn) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match conn.io.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => matches!(
            conn.io.try_read(&mut [0u8; 1]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        ),
    }
}

fn checkin(authority: &Authority, mut conn: Conn) {
    conn.reused = true;
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = match idle.get_mut(authority.as_str()) {
            Some(list) => list,
            None => idle.entry(authority.as_str().into()).or_default(),
        };
        let now = Instant::now();
        while list
            .front()
            .is_some_and(|c| now.duration_since(c.since) >= IDLE_TIMEOUT)
        {
            list.pop_front();
        }
        if list.len() < MAX_IDLE_PER_TARGET {
            list.push_back(Idle { conn, since: now });
        }
    });
}

/// Connect, giving up at the request's deadline (`TimedOut`) or after
/// `CONNECT_TIMEOUT` (a connect error, which another target may not have).
async fn connect(authority: &Authority, deadline: Deadline) -> Result<Conn, SendError> {
    let failed = |source| SendError::Connect {
        authority: authority.clone(),
        source,
    };
    let addr = (authority.host(), authority.port_u16().unwrap_or(80));
    let connect_by = Deadline::now() + CONNECT_TIMEOUT;
    let io = match tokio::time::timeout_at(deadline.min(connect_by), TcpStream::connect(addr)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(failed(e)),
        Err(_) if deadline <= connect_by => return Err(SendError::TimedOut),
        Err(_) => return Err(failed(std::io::ErrorKind::TimedOut.into())),
    };
    let _ = io.set_nodelay(true);
    let _ = socket2::SockRef::from(&io).set_keepalive(true);
    Ok(Conn {
        io,
        buf: BytesMut::with_capacity(READ_CHUNK),
        out: Vec::new(),
        reused: false,
        deadline: Box::pin(tokio::time::sleep_until(deadline)),
    })
}

/// Send a request to `authority` on an idle connection of this thread, or
/// a new one, and read the head of the answer by `deadline` (`sent_at`:
/// the clock as the request goes out). A pooled
/// connection the target closed meanwhile is noticed before anything is
/// written, and the request goes on a new connection instead. The answer's
/// map is empty: its fields come beside it, as read.
pub async fn send(
    authority: &Authority,
    head: &Head<'_>,
    body: &Bytes,
    sent_at: Instant,
    deadline: Deadline,
) -> Result<(Response<UpstreamBody>, UpstreamFields), SendError> {
    let mut conn = match checkout(authority, sent_at) {
        Some(mut c) => {
            c.deadline.as_mut().reset(deadline);
            c
        }
        // Boxed: connecting is rare, and its future is large.
        None => {
            let connecting = Box::pin(connect(authority, deadline));
            connecting.await?
        }
    };
    let AnswerHead {
        parts,
        fields,
        framing,
        keep_alive,
    } = {
        let Conn {
            io,
            buf,
            out,
            reused,
            deadline,
        } = &mut conn;
        head.encode(body.len(), out);
        // A small body goes in the head's buffer: one plain `send`, not a
        // `writev` (the kernel's vectored path costs more than the copy).
        let body = if body.len() <= GATHER_BODY {
            out.extend_from_slice(body);
            &[][..]
        } else {
            &body[..]
        };
        let mut exchange = pin!(async {
            let written = if body.is_empty() {
                io.write_all(out).await
            } else {
                io.write_all_buf(&mut Buf::chain(&out[..], body)).await
            };
            if let Err(e) = written {
                return Err(if *reused {
                    SendError::Stale(e)
                } else {
                    e.into()
                });
            }
            read_head(io, buf, *reused, head.method).await
        });
        std::future::poll_fn(|cx| match exchange.as_mut().poll(cx) {
            Poll::Pending => deadline
                .as_mut()
                .poll(cx)
                .map(|()| Err(SendError::TimedOut)),
            done => done,
        })
        .await?
    };
    let mut body = UpstreamBody {
        conn: Some(conn),
        framing,
        keep_alive,
        authority: authority.clone(),
    };
    if body.framing == Framing::Done {
        body.release();
    }
    Ok((Response::from_parts(parts, body), fields))
}

/// Read more from the target into `buf`; `Ok(0)` at the end.
fn poll_fill(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// An answer's head, as read.
struct AnswerHead {
    parts: http::response::Parts,
    /// The target's own fields, left in the head as read (see `fields`).
    fields: UpstreamFields,
    /// How its body is delimited.
    framing: Framing,
    /// The connection can be kept after it.
    keep_alive: bool,
}

/// The response head, skipping interim (1xx) answers.
async fn read_head(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    reused: bool,
    method: &Method,
) -> Result<AnswerHead, SendError> {
    let mut received = false;
    loop {
        if !buf.is_empty() {
            received = true;
            if let Some(parsed) = parse_head(buf, method)? {
                return Ok(parsed);
            }
            if buf.len() > MAX_HEAD_BYTES {
                return Err(SendError::Protocol(
                    "upstream response head too large".into(),
                ));
            }
        }
        match std::future::poll_fn(|cx| poll_fill(io, buf, cx)).await {
            Ok(0) if !received && reused => {
                return Err(SendError::Stale(std::io::ErrorKind::UnexpectedEof.into()))
            }
            Ok(0) => {
                return Err(SendError::Protocol(
                    "upstream closed the connection before a complete response head".into(),
                ))
            }
            Ok(_) => {}
            Err(e) if !received && reused => return Err(SendError::Stale(e)),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Parse a complete head out of `buf` (`None`: not complete yet).
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<AnswerHead>, SendError> {
    let bad = |what: &str| SendError::Protocol(format!("invalid upstream response: {what}"));
    loop {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, buf, &mut slots)
        {
            Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD_BYTES => n,
            Ok(httparse::Status::Complete(_)) => return Err(bad("head over 64 KiB")),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(bad(&e.to_string())),
        };
        let code = res.code.unwrap_or(0);
        if (100..200).contains(&code) && code != 101 {
            // 100 Continue and the like: the answer proper follows.
            buf.advance(len);
            if buf.is_empty() {
                return Ok(None);
            }
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| bad("status code"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(bad("101 to a request that asked for no upgrade"));
        }
        let http10 = res.version == Some(0);
        let (mut kept, scan) = read_fields(res.headers, buf);
        if http10 && scan.chunked_last.is_some() {
            // RFC 9112 section 6.1: the framing of such an answer is faulty.
            return Err(bad("Transfer-Encoding in an HTTP/1.0 answer"));
        }
        let framing = framing(method, status, &scan).map_err(bad)?;
        let chunked = scan.chunked_last.is_some();
        // Transfer-Encoding wins; an intermediary drops the length beside
        // it (RFC 9112 section 6.3).
        kept.length = if chunked {
            None
        } else {
            scan.length.ok().flatten()
        };
        kept.set_head(buf.split_to(len).freeze());
        let keep_alive = !http10 && !scan.close;
        let mut parts = Response::new(()).into_parts().0;
        parts.status = status;
        // The client gets our HTTP version, not the target's (RFC 9110
        // section 6.2).
        parts.version = Version::HTTP_11;
        return Ok(Some(AnswerHead {
            parts,
            fields: kept,
            framing,
            keep_alive,
        }));
    }
}

/// The fields of an answer's head to pass on, as offsets into `buf`
/// (the head, split off once parsed: see `fields`), and what its framing
/// depends on. Hop-by-hop fields, those `Connection` names, and
/// `Content-Length` (the client side sets its own) are not passed on;
/// codings besides chunked are kept aside, to be told to the client.
fn read_fields(headers: &[httparse::Header<'_>], buf: &BytesMut) -> (UpstreamFields, HeadScan) {
    let base = buf.as_ptr() as usize;
    let offsets = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let mut kept = UpstreamFields::new(headers.len());
    let mut scan = HeadScan::default();
    let mut codings: Vec<&[u8]> = Vec::new();
    for h in headers {
        let name = h.name.as_bytes();
        let kind = FieldName::of(name);
        scan.see(kind, h.value);
        if kind == FieldName::TransferEncoding {
            codings.push(h.value);
        }
        if kind.is_hop_by_hop() || kind == FieldName::ContentLength {
            continue;
        }
        kept.dated |= kind == FieldName::Date;
        kept.push(offsets(name), offsets(h.value));
    }
    if scan.connection {
        let named: Vec<&[u8]> = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| h.value.split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .collect();
        kept.retain_names(buf, |name| {
            !named.iter().any(|n| n.eq_ignore_ascii_case(name))
        });
    }
    kept.codings = codings_besides_chunked(codings.into_iter());
    (kept, scan)
}

/// What a head's framing depends on, gathered as its fields are read
/// (one pass, no lookups in the map afterwards).
#[derive(Debug)]
struct HeadScan {
    /// Whether the last coding named over all Transfer-Encoding lines is
    /// `chunked`; `None` without Transfer-Encoding.
    chunked_last: Option<bool>,
    length: Result<Option<u64>, &'static str>,
    /// `Connection` lists `close`.
    close: bool,
    /// There is a `Connection` field (the fields it names are hop-by-hop).
    connection: bool,
}

impl Default for HeadScan {
    fn default() -> Self {
        Self {
            chunked_last: None,
            length: Ok(None),
            close: false,
            connection: false,
        }
    }
}

impl HeadScan {
    fn see(&mut self, name: FieldName, value: &[u8]) {
        match name {
            FieldName::TransferEncoding => {
                let last = value.rsplit(|b| *b == b',').next().unwrap_or(b"");
                self.chunked_last = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            FieldName::ContentLength => {
                if let Ok(length) = self.length {
                    self.length = add_length(length, value);
                }
            }
            FieldName::Connection => {
                self.connection = true;
                self.close |= lists_token(value, b"close");
            }
            _ => {}
        }
    }
}

/// How the body of an answer is delimited (RFC 9112 section 6.3).
fn framing(method: &Method, status: StatusCode, h: &HeadScan) -> Result<Framing, &'static str> {
    if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Done);
    }
    if let Some(chunked) = h.chunked_last {
        return Ok(if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::UntilClose
        });
    }
    Ok(match h.length? {
        Some(0) => Framing::Done,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Everything until the target closes the connection.
    UntilClose,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Next: a chunk-size line.
    Size,
    /// This many bytes of chunk data still to come.
    Data(u64),
    /// Next: the CRLF after a chunk's data.
    DataEnd,
    /// Next: the trailer section, after the last (empty) chunk.
    Trailers,
}

/// A response body read from the target as it is asked for, which puts its
/// connection back in the pool once it has been read to the end.
pub struct UpstreamBody {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    authority: Authority,
}

type FrameResult = Option<Result<Frame<Bytes>, BoxError>>;

impl UpstreamBody {
    /// The body is over: pool the connection if it can take another request.
    fn release(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take() {
            // Bytes past the end of the answer break the protocol.
            if self.keep_alive && conn.buf.is_empty() {
                checkin(&self.authority, conn);
            }
        }
    }

    fn fail(&mut self, e: impl Into<BoxError>) -> Poll<FrameResult> {
        self.framing = Framing::Done;
        self.conn = None;
        Poll::Ready(Some(Err(e.into())))
    }

    /// One step: decode what is buffered, or read more when that is not
    /// enough. `Ok(None)`: progress, step again; `Ok(Some(x))`: `x` is the
    /// poll's answer.
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<FrameResult>, BoxError>> {
        if let Some(decoded) = self.decode() {
            return Poll::Ready(decoded);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(Some(None)));
        };
        match poll_fill(&mut conn.io, &mut conn.buf, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Ready(Ok(0)) => {
                if self.framing == Framing::UntilClose {
                    // The close ends the body; the connection goes with it.
                    self.framing = Framing::Done;
                    self.conn = None;
                    Poll::Ready(Ok(Some(None)))
                } else {
                    Poll::Ready(Err("upstream closed the connection mid-body".into()))
                }
            }
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(None)),
        }
    }

    /// Decode from what is buffered, as `step` answers; `None` when more
    /// must be read first.
    fn decode(&mut self) -> Option<Result<Option<FrameResult>, BoxError>> {
        let Some(conn) = self.conn.as_mut() else {
            return Some(Ok(Some(None)));
        };
        match self.framing {
            Framing::Done => Some(Ok(Some(None))),
            Framing::Length(left) | Framing::Chunked(Chunk::Data(left)) if !conn.buf.is_empty() => {
                let n = (conn.buf.len() as u64).min(left) as usize;
                let data = conn.buf.split_to(n).freeze();
                let left = left - n as u64;
                match &mut self.framing {
                    Framing::Length(l) => {
                        *l = left;
                        if left == 0 {
                            self.release();
                        }
                    }
                    f => {
                        *f = Framing::Chunked(if left == 0 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left)
                        });
                    }
                }
                Some(Ok(Some(Some(Ok(Frame::data(data))))))
            }
            Framing::UntilClose if !conn.buf.is_empty() => {
                let data = conn.buf.split().freeze();
                Some(Ok(Some(Some(Ok(Frame::data(data))))))
            }
            Framing::Chunked(Chunk::Size) => {
                let size = chunk_size(&mut conn.buf)?;
                Some(size.map(|size| {
                    self.framing = Framing::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                    None
                }))
            }
            Framing::Chunked(Chunk::DataEnd) => {
                if conn.buf.len() < 2 {
                    return None;
                }
                if &conn.buf[..2] != b"\r\n" {
                    return Some(Err("chunk data not followed by CRLF".into()));
                }
                conn.buf.advance(2);
                self.framing = Framing::Chunked(Chunk::Size);
                Some(Ok(None))
            }
            Framing::Chunked(Chunk::Trailers) => {
                let trailers = trailers(&mut conn.buf)?;
                if trailers.is_ok() {
                    self.release();
                }
                Some(trailers.map(|t| Some(t.map(|t| Ok(Frame::trailers(t))))))
            }
            // Data framings with nothing buffered.
            _ => None,
        }
    }
}

/// Take a chunk-size line off `buf`: its size, or `None` while the line
/// is incomplete.
fn chunk_size(buf: &mut BytesMut) -> Option<Result<u64, BoxError>> {
    let Some(end) = memchr_crlf(buf) else {
        return (buf.len() > MAX_CHUNK_LINE).then(|| Err("chunk size line too long".into()));
    };
    if end > MAX_CHUNK_LINE {
        return Some(Err("chunk size line too long".into()));
    }
    let line = &buf[..end + 2];
    // httparse reads an empty size as 0: the size must start with a hex
    // digit.
    let size = match httparse::parse_chunk_size(line) {
        Ok(httparse::Status::Complete((_, size))) if line[0].is_ascii_hexdigit() => size,
        _ => return Some(Err("invalid chunk size line from upstream".into())),
    };
    buf.advance(end + 2);
    Some(Ok(size))
}

/// Take the trailer section off `buf`: the trailers (`None` for an empty
/// section), or `None` while it is incomplete.
fn trailers(buf: &mut BytesMut) -> Option<Result<Option<HeaderMap>, BoxError>> {
    if buf.starts_with(b"\r\n") {
        buf.advance(2);
        return Some(Ok(None));
    }
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete((len, fields))) => {
            let mut trailers = HeaderMap::new();
            for f in fields {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(f.name.as_bytes()),
                    HeaderValue::from_bytes(f.value),
                ) {
                    trailers.append(n, v);
                }
            }
            buf.advance(len);
            Some(Ok(Some(trailers)))
        }
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD_BYTES => None,
        _ => Some(Err("invalid trailers from upstream".into())),
    }
}

fn memchr_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<FrameResult> {
        loop {
            match self.step(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(None)) => continue,
                Poll::Ready(Ok(Some(frame))) => return Poll::Ready(frame),
                Poll::Ready(Err(e)) => return self.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_lines_are_strict() {
        let size = |line: &[u8]| {
            let mut buf = BytesMut::from(line);
            chunk_size(&mut buf).map(|r| r.map_err(|e| e.to_string()))
        };
        assert_eq!(size(b"1a\r\n"), Some(Ok(26)));
        assert_eq!(size(b"5;ext=1\r\n"), Some(Ok(5)));
        assert_eq!(size(b"0\r\n"), Some(Ok(0)));
        assert_eq!(size(b"5"), None, "incomplete");
        assert!(matches!(size(b"\r\n"), Some(Err(_))), "empty size");
        assert!(matches!(size(b";x\r\n"), Some(Err(_))));
        assert!(matches!(size(b"zz\r\n"), Some(Err(_))));
        let mut long = b"5;".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_CHUNK_LINE + 1));
        assert!(matches!(size(&long), Some(Err(_))), "no end in sight");
        long.extend_from_slice(b"\r\n");
        assert!(matches!(size(&long), Some(Err(_))), "too long");
    }

    #[test]
    fn trailer_sections_end_the_body() {
        let mut empty = BytesMut::from(&b"\r\nnext"[..]);
        assert!(matches!(trailers(&mut empty), Some(Ok(None))));
        assert_eq!(&empty[..], b"next");
        let mut some = BytesMut::from(&b"X-Sum: 1\r\n\r\n"[..]);
        let t = trailers(&mut some).unwrap().unwrap().unwrap();
        assert_eq!(t["x-sum"], "1");
        assert!(some.is_empty());
        let mut partial = BytesMut::from(&b"X-Sum: 1\r\n"[..]);
        assert!(trailers(&mut partial).is_none());
        let mut bad = BytesMut::from(&b"X Sum: 1\r\n\r\n"[..]);
        assert!(matches!(trailers(&mut bad), Some(Err(_))));
    }

    #[test]
    fn answer_heads_keep_their_fields_and_drop_the_hop_by_hop_ones() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: x-hop\r\nX-Hop: 1\r\nKeep-Alive: t=5\r\nX-Kept: 2\r\n\r\nabc"[..],
        );
        let head = parse_head(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(head.framing, Framing::Length(3));
        assert!(head.keep_alive);
        let res = Answer {
            res: Response::from_parts(head.parts, ()),
            upstream: Some(head.fields),
        }
        .materialized();
        let names: Vec<&str> = res.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-kept", "content-length"]);
        // 1xx answers are skipped; a 101 nobody asked for is an error.
        let mut interim =
            BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"[..]);
        let head = parse_head(&mut interim, &Method::POST).unwrap().unwrap();
        assert_eq!(head.parts.status, StatusCode::NO_CONTENT);
        let mut upgrade = BytesMut::from(&b"HTTP/1.1 101 Switching Protocols\r\n\r\n"[..]);
        assert!(parse_head(&mut upgrade, &Method::GET).is_err());
        let mut te10 =
            BytesMut::from(&b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..]);
        assert!(parse_head(&mut te10, &Method::GET).is_err());
    }

    #[test]
    fn codings_besides_chunked_reach_the_client_side() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\n"[..],
        );
        let head = parse_head(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(head.fields.codings.as_ref().unwrap(), "gzip");
        assert_eq!(head.framing, Framing::Chunked(Chunk::Size));
        let map = Answer {
            res: Response::from_parts(head.parts, ()),
            upstream: Some(head.fields),
        }
        .materialized();
        assert_eq!(map.headers()[header::TRANSFER_ENCODING], "gzip");
        assert_eq!(&buf[..], b"5\r\n", "the body is left unread");

        let mut plain =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..]);
        let head = parse_head(&mut plain, &Method::GET).unwrap().unwrap();
        assert!(head.fields.codings.is_none());
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = |pairs: &[(&str, &str)]| {
            let mut scan = HeadScan::default();
            for (k, v) in pairs {
                scan.see(FieldName::of(k.as_bytes()), v.as_bytes());
            }
            scan
        };
        let ok = StatusCode::OK;
        assert_eq!(
            framing(&Method::HEAD, ok, &h(&[("content-length", "5")])),
            Ok(Framing::Done)
        );
        assert_eq!(
            framing(&Method::GET, StatusCode::NO_CONTENT, &h(&[])),
            Ok(Framing::Done)
        );
        assert_eq!(
            framing(&Method::GET, ok, &h(&[("content-length", "5")])),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            framing(&Method::GET, ok, &h(&[("content-length", "5, 5")])),
            Ok(Framing::Length(5))
        );
        assert!(framing(
            &Method::GET,
            ok,
            &h(&[("content-length", "5"), ("content-length", "6")])
        )
        .is_err());
        assert!(framing(&Method::GET, ok, &h(&[("content-length", "+5")])).is_err());
        assert_eq!(
            framing(
                &Method::GET,
                ok,
                &h(&[
                    ("transfer-encoding", "gzip, chunked"),
                    ("content-length", "5")
                ])
            ),
            Ok(Framing::Chunked(Chunk::Size))
        );
        assert_eq!(
            framing(&Method::GET, ok, &h(&[("transfer-encoding", "gzip")])),
            Ok(Framing::UntilClose)
        );
        assert_eq!(framing(&Method::GET, ok, &h(&[])), Ok(Framing::UntilClose));
    }

    static X_B: HeaderName = HeaderName::from_static("x-b");

    /// `head` encoded into a buffer that held an earlier request's head.
    fn encoded(head: &Head<'_>, body_len: usize) -> String {
        let mut out = b"GET /earlier HTTP/1.1\r\n\r\n".to_vec();
        head.encode(body_len, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_head_carries_our_framing_only() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("1"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        let host = HeaderValue::from_static("up.test");
        let two = HeaderValue::from_static("2");
        let head = Head {
            method: &Method::POST,
            path: ["/base", "/p"],
            query: Some("q=1"),
            host: &host,
            headers: &headers,
            added: &[Some((&X_B, &two))],
        };
        let text = encoded(&head, 3);
        assert_eq!(
            text,
            "POST /base/p?q=1 HTTP/1.1\r\nhost: up.test\r\nx-a: 1\r\nx-b: 2\r\ncontent-length: 3\r\n\r\n"
        );
        let empty = HeaderMap::new();
        let get = Head {
            method: &Method::GET,
            path: ["", "/"],
            query: None,
            host: &host,
            headers: &empty,
            added: &[],
        };
        assert_eq!(encoded(&get, 0), "GET / HTTP/1.1\r\nhost: up.test\r\n\r\n");
    }
}
