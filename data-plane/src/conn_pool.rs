//! HTTP/1.1 connections to plain-HTTP targets, pooled per proxy worker
//! thread and driven with hyper's low-level client.
//!
//! Why not hyper_util's pooled client for this, the common case: it takes a
//! mutex per checkout, and to learn when a connection is free again it
//! spawns a task per request. Here a worker thread owns its idle
//! connections outright (a thread-local list, no lock), and a connection
//! goes back to the list when its response body has been read to the end:
//! the response body carries it (`Returning`). A body dropped half read
//! takes its connection with it, since nothing else could be sent on it.
//!
//! HTTPS targets, HTTP/2 (gRPC) and upgrades keep using `Clients`.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::{BoxError, ProxyBody};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections older than this are closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const MAX_IDLE_PER_TARGET: usize = 256;

type Sender = SendRequest<ProxyBody>;

struct Idle {
    sender: Sender,
    since: Instant,
}

type IdleMap = HashMap<Authority, VecDeque<Idle>, crate::FastHash>;

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
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// A reused connection closed before any of the answer came: most
    /// likely the target's keep-alive timeout racing this request.
    #[error("pooled connection closed before an answer: {0}")]
    Stale(hyper::Error),
    /// From hyper_util's client (HTTPS, HTTP/2, upgrades).
    #[error(transparent)]
    Client(#[from] hyper_util::client::legacy::Error),
}

impl SendError {
    /// Nothing reached the target: always safe to try another.
    pub fn is_connect(&self) -> bool {
        match self {
            SendError::Connect { .. } => true,
            SendError::Http(_) | SendError::Stale(_) => false,
            SendError::Client(e) => e.is_connect(),
        }
    }

    /// Worth another attempt for a request that may be sent twice (the
    /// caller decides that): nothing reached the target, or a reused
    /// connection was closed under the request.
    pub fn is_retryable(&self) -> bool {
        self.is_connect() || matches!(self, SendError::Stale(_))
    }
}

fn checkout(authority: &Authority) -> Option<Sender> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(authority)?;
        while let Some(c) = list.pop_back() {
            if !c.sender.is_closed() && c.since.elapsed() < IDLE_TIMEOUT {
                return Some(c.sender);
            }
        }
        None
    })
}

fn checkin(authority: &Authority, sender: Sender) {
    if sender.is_closed() {
        return;
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(authority.clone()).or_default();
        let now = Instant::now();
        while list
            .front()
            .is_some_and(|c| now.duration_since(c.since) >= IDLE_TIMEOUT || c.sender.is_closed())
        {
            list.pop_front();
        }
        if list.len() < MAX_IDLE_PER_TARGET {
            list.push_back(Idle { sender, since: now });
        }
    });
}

async fn connect(authority: &Authority) -> Result<Sender, SendError> {
    let failed = |source| SendError::Connect {
        authority: authority.clone(),
        source,
    };
    let addr = (authority.host(), authority.port_u16().unwrap_or(80));
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(failed(e)),
        Err(_) => return Err(failed(std::io::ErrorKind::TimedOut.into())),
    };
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(&stream).set_keepalive(true);
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// Send `req` (origin-form URI, `Host` set) to `authority` on an idle
/// connection of this thread, or a new one. A pooled connection the target
/// closed meanwhile is noticed before anything is written, and the request
/// goes on a new connection instead.
pub async fn send(
    authority: &Authority,
    mut req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, SendError> {
    while let Some(mut sender) = checkout(authority) {
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(res) => return Ok(returning(res, authority, sender)),
            Err(mut e) => match e.take_message() {
                Some(unsent) => req = unsent,
                None if e.error().is_incomplete_message() => {
                    return Err(SendError::Stale(e.into_error()))
                }
                None => return Err(e.into_error().into()),
            },
        }
    }
    // Boxed: connecting is rare, and its future is large.
    let mut sender = Box::pin(connect(authority)).await?;
    let res = sender.send_request(req).await?;
    Ok(returning(res, authority, sender))
}

fn returning(
    res: Response<Incoming>,
    authority: &Authority,
    sender: Sender,
) -> Response<ProxyBody> {
    let (parts, inner) = res.into_parts();
    let mut body = Returning {
        inner,
        home: Some((authority.clone(), sender)),
    };
    // No body at all (HEAD, 204, a zero length): free at once.
    if body.inner.is_end_stream() {
        body.release();
    }
    Response::from_parts(parts, http_body_util::BodyExt::boxed(body))
}

/// A response body that puts its connection back in the pool once it has
/// been read to the end.
struct Returning {
    inner: Incoming,
    home: Option<(Authority, Sender)>,
}

impl Returning {
    fn release(&mut self) {
        let Some((authority, mut sender)) = self.home.take() else {
            return;
        };
        if sender.is_ready() {
            checkin(&authority, sender);
        } else if !sender.is_closed() {
            // The target answered before the request body was all sent (an
            // early 401 or 413, say): the connection can take another request
            // only once the upload is done. Pooled now, it would hold up
            // whichever request picked it next.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if sender.ready().await.is_ok() {
                        checkin(&authority, sender);
                    }
                });
            }
        }
    }
}

impl Body for Returning {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.home = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream() {
                    this.release();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
