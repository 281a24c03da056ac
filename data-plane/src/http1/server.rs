//! The HTTP/1.1 fast path of plain-TCP client connections.
//!
//! hyper's server is general, and its generality was about a third of the
//! instructions of a proxied request: a dispatcher, a role-generic parser
//! and encoder, a service future copied into its box, and the framing
//! guard parsing every head a second time. This path serves the common
//! request itself, in the connection's task, as pingora does: the head is
//! parsed once (httparse) straight into the `http` types without copying
//! header values, a small body is read whole, and the response's head and
//! body go out in one write.
//!
//! It takes only requests that pass the rules both engines share
//! ([`check_head`](super::syntax::check_head)) in their simplest form:
//! HTTP/1.1, origin-form target, exactly one Host, at most one
//! Content-Length (digits, up to `SMALL_BODY`), no Transfer-Encoding,
//! Upgrade or Expect, at most the limit's fields, a head that parses and
//! fits. At the first request that
//! is anything else (HTTP/2's preface, HTTP/1.0, chunked or large uploads,
//! WebSocket upgrades, every malformed or oversized head) it hands the
//! connection to hyper, with the bytes read and not yet used, for the rest
//! of its life; hyper behind the framing guard then gives the answers the
//! contract sets (400 and a close, 431 and a close, 501). The refusals both
//! engines make after parsing (414, 431 for field bytes) are the request
//! path's, with `Connection: close`, which this writer obeys as hyper does.
//!
//! Its own deadlines: the header read timeout (a head, and a small body,
//! must arrive within it); the client send timeout, enforced by the
//! connection's I/O (`timeouts::WriteDeadline`); and a client that hangs up
//! (FIN or RST) while its request is under way cancels it: the request's
//! future is dropped, and with it the upstream connection it held.

use std::future::{poll_fn, Future};
use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::ops::Range;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::FutureExt as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::client::SMALL_BODY;
use super::fields::{Answer, UpstreamFields};
use super::syntax::{
    codings_besides_chunked, content_length, digits, lists_token, Limits, X_REQUEST_ID,
};
use crate::body::{ProxyBody, RequestBody};

/// Header slots of one parse: the most any limit may allow. A head with
/// more fields than the limit goes to hyper (431 and a close).
const MAX_HEADERS: usize = 128;
/// Free space kept in the read buffer before each read.
const READ_SPACE: usize = 4 * 1024;
/// Body bytes gathered with the head before a write; larger frames are
/// written on their own.
const GATHER: usize = 16 * 1024;

/// A response, and the gateway's fields it is to carry: they replace any
/// of the same names the response has. Kept beside the map: a codec that
/// writes them itself spares the map their insertions (most answers from
/// the pool have nothing else in it).
pub struct Served {
    pub answer: Answer<ProxyBody>,
    pub request_id: HeaderValue,
    /// Numeric fields (`RateLimit-*` for a keyed request the plan let
    /// through).
    pub counters: Option<[(&'static HeaderName, u64); 3]>,
}

impl Served {
    /// The response with every field in the map (the upstream's too),
    /// for a codec that writes the map only.
    pub fn stamped(self) -> http::Response<ProxyBody> {
        let mut answer = self.answer;
        let map = answer.res.headers_mut();
        map.insert(X_REQUEST_ID.clone(), self.request_id);
        for (name, n) in self.counters.into_iter().flatten() {
            let digits = itoa::Buffer::new().format(n).to_owned();
            map.insert(
                name.clone(),
                HeaderValue::from_str(&digits).expect("digits"),
            );
        }
        answer.materialized()
    }
}

/// How a connection left the fast path.
pub enum Outcome {
    /// It is finished: either side closed it, it failed, or it drained.
    Closed,
    /// hyper serves the rest of it, starting with these bytes (read from
    /// the socket, not yet used).
    HandOver(Bytes),
}

/// Serve requests from `io` with `respond` until the connection ends or a
/// request needs hyper. `draining` is asked between requests: when it says
/// so, the connection closes once no request is under way. `in_flight`
/// counts the request under way, for the idle sweeper.
pub async fn serve<T, F, Fut>(
    io: &mut T,
    limits: &Limits,
    draining: impl Fn() -> bool + Sync,
    in_flight: &AtomicUsize,
    mut respond: F,
) -> Outcome
where
    T: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(Request<RequestBody>) -> Fut,
    Fut: Future<Output = Served>,
{
    let mut buf = BytesMut::with_capacity(READ_SPACE * 2);
    let mut layout = Layout::default();
    let mut out = Vec::with_capacity(1024);
    // A new connection must start its first head within the header read
    // timeout: one that sends nothing is not kept for the (longer) idle
    // timeout.
    let first = tokio::time::timeout(
        limits.header_read_timeout,
        read_more(io, &mut buf, Some(&draining)),
    );
    if !matches!(first.await, Ok(Ok(true))) {
        return Outcome::Closed;
    }
    loop {
        if buf.is_empty() {
            // Idle between requests: the sweeper's idle timeout applies,
            // and a drain order closes the connection here.
            if !matches!(read_more(io, &mut buf, Some(&draining)).await, Ok(true)) {
                return Outcome::Closed;
            }
        }
        layout.max_fields = limits.max_headers.min(MAX_HEADERS);
        layout.max_head = limits.max_head_bytes;
        let head_len = match read_head(io, &mut buf, &mut layout, limits.header_read_timeout).await
        {
            Ok(Parsed::Head(n)) => n,
            Ok(Parsed::NotMine) => return Outcome::HandOver(buf.freeze()),
            Err(_) => return Outcome::Closed,
        };
        let body_len = layout.content_length as usize;
        // Most bodies came with the head: no clock read or timer for them.
        if buf.len() < head_len + body_len {
            let whole = read_whole(io, &mut buf, head_len + body_len, &draining);
            if !tokio::time::timeout(limits.header_read_timeout, whole)
                .await
                .is_ok_and(|r| r.is_ok())
            {
                return Outcome::Closed;
            }
        }
        let bytes = buf.split_to(head_len + body_len).freeze();
        let Some(req) = layout.request(&bytes, head_len) else {
            // A value `http` refuses: hyper refuses it too, with a 400.
            let mut rest = BytesMut::from(&bytes[..]);
            rest.extend_from_slice(&buf);
            return Outcome::HandOver(rest.freeze());
        };
        let head_only = req.method() == Method::HEAD;
        let close = layout.close;
        in_flight.fetch_add(1, Ordering::AcqRel);
        // Built in place (`pin!`), not moved into this future's state.
        let res = pin!(respond(req));
        let res = until_hangup(io, &mut buf, res).await;
        in_flight.fetch_sub(1, Ordering::AcqRel);
        let Some(res) = res else {
            // The client hung up: the request is cancelled (dropped).
            return Outcome::Closed;
        };
        let close = close || draining();
        match pin!(write_response(io, &mut out, res, head_only, close)).await {
            Ok(true) => {}
            _ => return Outcome::Closed,
        }
    }
}

/// Read until `buf` holds `len` bytes: the body, whole (the head's
/// promise is at most `SMALL_BODY`). The caller bounds it by the header
/// read timeout, and a drain order (the sweeper's idle timeout included:
/// nothing is under way yet) ends the wait, so a stalled body cannot hold
/// the connection.
async fn read_whole<T: AsyncRead + Unpin>(
    io: &mut T,
    buf: &mut BytesMut,
    len: usize,
    draining: &(dyn Fn() -> bool + Sync),
) -> io::Result<()> {
    while buf.len() < len {
        if !read_more(io, buf, Some(draining)).await? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// Await `res` while watching the client: `None` if it closes its side
/// (FIN) or resets the connection first. What it sends meanwhile (a
/// pipelined request) is kept in `buf`, up to one head's worth.
async fn until_hangup<T, Fut>(io: &mut T, buf: &mut BytesMut, res: Pin<&mut Fut>) -> Option<Served>
where
    T: AsyncRead + Unpin,
    Fut: Future<Output = Served>,
{
    let mut res = res;
    let mut watching = true;
    poll_fn(|cx| {
        if let Poll::Ready(served) = res.as_mut().poll(cx) {
            return Poll::Ready(Some(served));
        }
        while watching {
            if buf.len() >= MAX_PIPELINED {
                // Enough read ahead: stop reading (the socket's own buffer
                // holds the rest) and only await the answer.
                watching = false;
                break;
            }
            buf.reserve(READ_SPACE);
            match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => continue,
                Poll::Pending => break,
            }
        }
        Poll::Pending
    })
    .await
}

/// Bytes of a next request read while one is under way, at most.
const MAX_PIPELINED: usize = 64 * 1024;

enum Parsed {
    /// A head this path serves, this many bytes long, is in `layout`.
    Head(usize),
    /// hyper's to serve.
    NotMine,
}

/// Read until the buffer holds a whole head, and lay it out. A head still
/// partial after the header read timeout (counted from the first read that
/// left it partial) fails the connection.
async fn read_head<T: AsyncRead + Unpin>(
    io: &mut T,
    buf: &mut BytesMut,
    layout: &mut Layout,
    timeout: Duration,
) -> io::Result<Parsed> {
    let mut partial_since = None;
    loop {
        match layout.parse(buf) {
            Some(Ok(n)) => return Ok(Parsed::Head(n)),
            Some(Err(NotMine)) => return Ok(Parsed::NotMine),
            None if buf.len() >= layout.max_head => return Ok(Parsed::NotMine),
            None => {}
        }
        // Partial: the slow case, so only now a clock and a timer.
        let since = *partial_since.get_or_insert_with(Instant::now);
        let left = timeout.saturating_sub(since.elapsed());
        match tokio::time::timeout(left, read_more(io, buf, None)).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::ErrorKind::TimedOut.into()),
        }
    }
}

/// One read into the buffer's free space; `false` at the end of the
/// stream. With `draining`, gives up (as `false`) once it says so.
async fn read_more<T: AsyncRead + Unpin>(
    io: &mut T,
    buf: &mut BytesMut,
    draining: Option<&(dyn Fn() -> bool + Sync)>,
) -> io::Result<bool> {
    buf.reserve(READ_SPACE);
    poll_fn(|cx| {
        if draining.is_some_and(|d| d()) {
            return Poll::Ready(Ok(false));
        }
        tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut *io), cx, buf).map_ok(|n| n > 0)
    })
    .await
}

/// The request was not one for this path.
struct NotMine;

/// Where the parts of the head just parsed are: the owned values (method,
/// names) made while the buffer was borrowed, and the ranges of the rest,
/// taken from the buffer without copying once it is split off. Kept per
/// connection so its vector is allocated once.
#[derive(Default)]
struct Layout {
    method: Method,
    target: Range<usize>,
    headers: Vec<(HeaderName, Range<usize>)>,
    content_length: u64,
    /// The client asked to close after this request.
    close: bool,
    /// Fields a head may have, and its bytes (the limits).
    max_fields: usize,
    max_head: usize,
}

impl Layout {
    /// `None`: the head is not complete yet.
    fn parse(&mut self, buf: &[u8]) -> Option<Result<usize, NotMine>> {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let n = match req.parse_with_uninit_headers(buf, &mut slots[..self.max_fields]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return None,
            Err(_) => return Some(Err(NotMine)),
        };
        Some(self.lay_out(buf, &req).map(|()| n))
    }

    fn lay_out(&mut self, buf: &[u8], req: &httparse::Request<'_, '_>) -> Result<(), NotMine> {
        let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
            return Err(NotMine);
        };
        if !path.starts_with('/') {
            return Err(NotMine);
        }
        self.method = Method::from_bytes(method.as_bytes()).map_err(|_| NotMine)?;
        if self.method == Method::CONNECT {
            return Err(NotMine);
        }
        let at = |s: &[u8]| {
            let start = s.as_ptr() as usize - buf.as_ptr() as usize;
            start..start + s.len()
        };
        self.target = at(path.as_bytes());
        self.headers.clear();
        self.content_length = 0;
        self.close = false;
        let (mut hosts, mut lengths) = (0, 0);
        for h in req.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| NotMine)?;
            if name == header::HOST {
                hosts += 1;
            } else if name == header::CONTENT_LENGTH {
                lengths += 1;
                self.content_length = digits(h.value).ok_or(NotMine)?;
            } else if name == header::CONNECTION {
                if lists_token(h.value, b"upgrade") {
                    return Err(NotMine);
                }
                self.close |= lists_token(h.value, b"close");
            } else if name == header::TRANSFER_ENCODING
                || name == header::UPGRADE
                || name == header::EXPECT
            {
                return Err(NotMine);
            }
            self.headers.push((name, at(h.value)));
        }
        if hosts != 1 || lengths > 1 || self.content_length > SMALL_BODY {
            return Err(NotMine);
        }
        Ok(())
    }

    /// The request from `bytes`: its head (`head_len` bytes) then its body.
    /// `None` if `http` refuses the target or a value.
    fn request(&mut self, bytes: &Bytes, head_len: usize) -> Option<Request<RequestBody>> {
        let uri = Uri::from_maybe_shared(bytes.slice(self.target.clone())).ok()?;
        // The gateway's own fields for the target are written beside the
        // map, not into it: only the caller's identity (a keyed or JWT
        // route) may need room.
        let mut headers = HeaderMap::with_capacity(self.headers.len() + 3);
        for (name, range) in self.headers.drain(..) {
            let value = HeaderValue::from_maybe_shared(bytes.slice(range)).ok()?;
            headers.append(name, value);
        }
        let body = Full::new(bytes.slice(head_len..));
        let mut req = Request::new(RequestBody::Whole(body));
        *req.method_mut() = std::mem::take(&mut self.method);
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = headers;
        Some(req)
    }
}

/// Write the response; `Ok(true)` if the connection can take another
/// request. `out` is the connection's write buffer.
async fn write_response<T: AsyncWrite + Unpin>(
    io: &mut T,
    out: &mut Vec<u8>,
    served: Served,
    head_only: bool,
    close: bool,
) -> io::Result<bool> {
    let upstream = served.answer.upstream;
    let (parts, mut body) = served.answer.res.into_parts();
    let status = parts.status;
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let framing = Framing::of(
        &parts.headers,
        upstream.as_ref(),
        &body,
        head_only,
        bodiless,
    );
    let fields = Fields {
        map: &parts.headers,
        upstream: upstream.as_ref(),
        request_id: &served.request_id,
        counters: served.counters,
    };
    let close = fields.write(out, close);
    let chunked = framing.write(out, head_only, bodiless);
    out.extend_from_slice(b"\r\n");
    if bodiless || head_only {
        io.write_all(out).await?;
        return Ok(!close);
    }
    let Some(sent) = write_body(io, out, &mut body, chunked).await? else {
        return Ok(false);
    };
    // A body shorter or longer than its Content-Length leaves the client
    // unable to find the next answer: close.
    Ok(!close && framing.length.is_none_or(|n| n == sent))
}

/// How an answer's body is framed on the wire. The framing is this
/// writer's to set: one Content-Length, or chunked.
struct Framing {
    length: Option<u64>,
    /// Codings besides chunked (`gzip`): they stay on the body, the client
    /// is told, and the framing is chunked after them, as hyper writes it.
    codings: Option<HeaderValue>,
}

impl Framing {
    /// The length is the body's own when it knows it (what is sent); an
    /// answer to HEAD has no body, and its length is the header's.
    fn of(
        map: &HeaderMap,
        upstream: Option<&UpstreamFields>,
        body: &ProxyBody,
        head_only: bool,
        bodiless: bool,
    ) -> Self {
        let header_length = || {
            let length = content_length(map).ok().flatten();
            length.or_else(|| upstream?.length)
        };
        let codings = codings_besides_chunked(
            map.get_all(header::TRANSFER_ENCODING)
                .iter()
                .map(HeaderValue::as_bytes),
        )
        .or_else(|| upstream?.codings.clone())
        .filter(|_| !bodiless && !head_only);
        let length = if bodiless || codings.is_some() {
            None
        } else if head_only {
            header_length().or_else(|| body.size_hint().exact())
        } else {
            body.size_hint().exact().or_else(header_length)
        };
        Framing { length, codings }
    }

    /// Write the framing field; whether the body goes chunked.
    fn write(&self, out: &mut Vec<u8>, head_only: bool, bodiless: bool) -> bool {
        match (self.length, &self.codings) {
            (Some(n), _) => {
                push_header(
                    out,
                    b"content-length",
                    itoa::Buffer::new().format(n).as_bytes(),
                );
                false
            }
            (None, _) if bodiless => false,
            (None, Some(codings)) => {
                let mut value = codings.as_bytes().to_vec();
                value.extend_from_slice(b", chunked");
                push_header(out, b"transfer-encoding", &value);
                true
            }
            (None, None) => {
                if !head_only {
                    push_header(out, b"transfer-encoding", b"chunked");
                }
                true
            }
        }
    }
}

/// An answer's fields: the upstream's as read, the gateway's own (which
/// replace any of their names in the map or the upstream's), the map's.
struct Fields<'a> {
    map: &'a HeaderMap,
    upstream: Option<&'a UpstreamFields>,
    request_id: &'a HeaderValue,
    counters: Option<[(&'static HeaderName, u64); 3]>,
}

impl Fields<'_> {
    /// Write them, with `Date` when none says it and `Connection: close`
    /// when the connection closes; whether it closes (`close`, or the
    /// answer says so).
    fn write(&self, out: &mut Vec<u8>, mut close: bool) -> bool {
        let gateway_names = match &self.counters {
            Some([a, b, c]) => [&X_REQUEST_ID, a.0, b.0, c.0],
            None => [&X_REQUEST_ID; 4],
        };
        let gateway_names = &gateway_names[..if self.counters.is_some() { 4 } else { 1 }];
        let (mut dated, mut says_close) = (false, false);
        if let Some(upstream) = self.upstream {
            upstream.write(out, self.map, gateway_names);
            dated = upstream.dated;
        }
        push_header(
            out,
            X_REQUEST_ID.as_str().as_bytes(),
            self.request_id.as_bytes(),
        );
        for (name, n) in self.counters.into_iter().flatten() {
            push_header(
                out,
                name.as_str().as_bytes(),
                itoa::Buffer::new().format(n).as_bytes(),
            );
        }
        for (name, value) in self.map {
            if *name == header::TRANSFER_ENCODING
                || *name == header::CONTENT_LENGTH
                || gateway_names.contains(&name)
            {
                continue;
            }
            if *name == header::DATE {
                dated = true;
            } else if *name == header::CONNECTION {
                says_close |= lists_token(value.as_bytes(), b"close");
            }
            push_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
        close |= says_close;
        if !dated {
            push_header(out, b"date", &date::now());
        }
        if close && !says_close {
            push_header(out, b"connection", b"close");
        }
        close
    }
}

/// Write the body after the head in `out`; the bytes sent, or `None` if
/// the body failed (the answer is cut short: the connection must close).
async fn write_body<T: AsyncWrite + Unpin>(
    io: &mut T,
    out: &mut Vec<u8>,
    body: &mut ProxyBody,
    chunked: bool,
) -> io::Result<Option<u64>> {
    let mut sent = 0u64;
    loop {
        // Gather what is ready; write before waiting for more, so a
        // streamed answer (server-sent events) is never held back.
        let frame = match body.frame().now_or_never() {
            Some(f) => f,
            None => {
                if !out.is_empty() {
                    io.write_all(out).await?;
                    out.clear();
                }
                body.frame().await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body failed; closing the connection");
                if !out.is_empty() {
                    io.write_all(out).await?;
                }
                return Ok(None);
            }
            // Trailers are dropped, as hyper drops them on HTTP/1.
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
        };
        sent += data.len() as u64;
        if chunked {
            write!(out, "{:x}\r\n", data.len())?;
        }
        if data.len() <= GATHER {
            out.extend_from_slice(&data);
        } else {
            io.write_all(out).await?;
            out.clear();
            io.write_all(&data).await?;
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if !out.is_empty() {
        io.write_all(out).await?;
    }
    Ok(Some(sent))
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The `Date` header, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    /// An IMF-fixdate is always 29 bytes.
    pub fn now() -> [u8; 29] {
        thread_local! {
            static LAST: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
        }
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        LAST.with_borrow_mut(|(at, text)| {
            if *at != secs {
                let s = httpdate::fmt_http_date(now);
                text.copy_from_slice(&s.as_bytes()[..29]);
                *at = secs;
            }
            *text
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, DuplexStream};

    fn answer(body: &'static str) -> Served {
        Served {
            answer: http::Response::new(crate::body::full(body)).into(),
            request_id: HeaderValue::from_static("rid"),
            counters: None,
        }
    }

    /// Serve one connection over an in-memory pipe with `respond`; the
    /// client's end, and the server's outcome when it ends.
    fn start<F, Fut>(respond: F) -> (DuplexStream, tokio::task::JoinHandle<&'static str>)
    where
        F: FnMut(Request<RequestBody>) -> Fut + Send + 'static,
        Fut: Future<Output = Served> + Send,
    {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move {
            let limits = Limits::default();
            let in_flight = AtomicUsize::new(0);
            match serve(&mut server, &limits, || false, &in_flight, respond).await {
                Outcome::Closed => "closed",
                Outcome::HandOver(_) => "handed over",
            }
        });
        (client, task)
    }

    async fn read_until(client: &mut DuplexStream, needle: &str) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains(needle) {
            let n = client.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before {needle:?}: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(got).unwrap()
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order_with_one_length_each() {
        let (mut client, task) = start(|req| async move {
            answer(if req.uri().path() == "/a" {
                "first"
            } else {
                "second"
            })
        });
        client
            .write_all(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut all = String::new();
        client.read_to_string(&mut all).await.unwrap();
        let first = all.find("first").unwrap();
        assert!(all[first..].contains("second"), "{all}");
        assert_eq!(all.matches("content-length: ").count(), 2, "{all}");
        assert!(all.contains("connection: close"));
        assert_eq!(task.await.unwrap(), "closed");
    }

    #[tokio::test]
    async fn what_the_fast_path_does_not_take_goes_to_hyper() {
        let many: String = (0..100).map(|i| format!("x-{i}: v\r\n")).collect();
        for head in [
            "GET / HTTP/1.1\r\n\r\n".to_string(),
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(),
            format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n"),
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello".into(),
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
            "GET / HTTP/1.0\r\n\r\n".into(),
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n".into(),
        ] {
            let (mut client, task) = start(|_| async { answer("never") });
            client.write_all(head.as_bytes()).await.unwrap();
            assert_eq!(task.await.unwrap(), "handed over", "{head:?}");
        }
    }

    #[tokio::test]
    async fn a_client_that_hangs_up_cancels_its_request() {
        let dropped = Arc::new(AtomicBool::new(false));
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let flag = dropped.clone();
        let (mut client, task) = start(move |_| {
            let guard = Flag(flag.clone());
            async move {
                let _guard = guard;
                std::future::pending::<Served>().await
            }
        });
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .unwrap();
        // Let the request start, then hang up.
        tokio::task::yield_now().await;
        drop(client);
        let outcome = tokio::time::timeout(Duration::from_secs(10), task).await;
        assert_eq!(outcome.unwrap().unwrap(), "closed");
        assert!(dropped.load(Ordering::Acquire), "the request was dropped");
    }

    #[tokio::test]
    async fn bytes_sent_during_a_request_are_kept_for_the_next() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let rx = Arc::new(tokio::sync::Mutex::new(Some(rx)));
        let (mut client, task) = start(move |req| {
            let rx = rx.clone();
            async move {
                if req.uri().path() == "/slow" {
                    let rx = rx.lock().await.take().unwrap();
                    let _ = rx.await;
                    return answer("slow-done");
                }
                answer("fast-done")
            }
        });
        client
            .write_all(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .unwrap();
        tokio::task::yield_now().await;
        client
            .write_all(b"GET /fast HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        tokio::task::yield_now().await;
        tx.send(()).unwrap();
        let mut all = read_until(&mut client, "slow-done").await;
        client.read_to_string(&mut all).await.unwrap();
        assert!(all.find("slow-done") < all.find("fast-done"), "{all}");
        assert_eq!(task.await.unwrap(), "closed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_small_body_is_cut_at_the_header_read_timeout() {
        let (mut client, task) = start(|_| async { answer("never") });
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(task.await.unwrap(), "closed");
        assert_eq!(started.elapsed(), Limits::default().header_read_timeout);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "nothing answered");
    }
}
