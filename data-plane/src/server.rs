//! Accepting client connections: TCP, optional TLS (ALPN h2/http1.1),
//! HTTP/1.1 and HTTP/2 (h2c by prior knowledge) through hyper's auto
//! builder, the framing guard, the idle timeout, and graceful shutdown.
//!
//! Thread per core, as nginx and pingora do: the accept task hands each
//! connection to a worker thread in turn, and the worker runs it to the
//! end on its own single-threaded runtime, with its own upstream pools, so
//! a request never hops between threads. A plain-TCP connection starts on
//! the fast path (`http1::server`) unless `--http1-engine hyper`; TLS and
//! what the fast path hands over go to hyper behind the framing guard.
//!
//! One sweeper task per worker handles idle timeouts, drains and hard
//! stops: it looks at its connections once per tick and gives each an
//! order (one atomic, read when the connection's task is woken; the sweeper
//! wakes it). A `select!` over timers and shutdown tokens in every
//! connection would poll them all on every wake-up.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures::task::AtomicWaker;
use http::{HeaderValue, Request};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::RequestBody;
use crate::gateway::Gateway;
use crate::http1::guard::{FramingGuard, Verdicts};
use crate::http1::server as h1;
use crate::http1::timeouts::WriteDeadline;
use crate::http1::Engine;
use crate::proxy::{self, ConnInfo, Limits};

/// A rustls server config for the proxy from PEM files, with ALPN for
/// HTTP/2 and HTTP/1.1.
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("opening {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("reading certificates from {}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", cert.display());
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("opening {}", key.display()))?,
    ))
    .with_context(|| format!("reading the key from {}", key.display()))?
    .with_context(|| format!("{} holds no private key", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One connection as its worker's sweeper sees it: activity for the idle
/// timeout, and a way to tell the connection to drain or close.
///
/// Why not a `select!` in each connection over its idle timer and the
/// shutdown tokens: that polls all three (and re-registers their wakers) on
/// every wake-up of every connection. Here one task per worker thread looks
/// at its connections once per tick, and a connection reads one atomic per
/// wake-up.
#[derive(Default)]
struct Activity {
    /// Reads and writes so far (a counter, not a timestamp: no clock read
    /// per I/O).
    io: AtomicU64,
    in_flight: AtomicUsize,
    /// The sweeper's order: `CARRY_ON`, `DRAIN` or `CLOSE`; only ever rises.
    order: AtomicU8,
    /// The connection's task, woken when an order comes.
    task: AtomicWaker,
}

const CARRY_ON: u8 = 0;
/// Finish the request under way (if any), then close.
const DRAIN: u8 = 1;
/// Close now.
const CLOSE: u8 = 2;

impl Activity {
    fn give(&self, order: u8) {
        if self.order.fetch_max(order, Ordering::AcqRel) < order {
            self.task.wake();
        }
    }
}

/// Idle means no I/O and no request under way for IDLE_TICKS sweeps in a
/// row: closed between 1 and 1.25 idle timeouts after the last activity.
const IDLE_TICKS: u32 = 4;

/// A worker's connections, for its sweeper.
#[derive(Default)]
struct Watched {
    conns: std::sync::Mutex<Vec<WatchedConn>>,
    draining: AtomicBool,
}

struct WatchedConn {
    activity: std::sync::Weak<Activity>,
    seen_io: u64,
    quiet_ticks: u32,
}

impl Watched {
    fn add(&self, activity: &Arc<Activity>) {
        let mut conns = self.conns.lock().expect("watched connections");
        conns.push(WatchedConn {
            activity: Arc::downgrade(activity),
            seen_io: 0,
            quiet_ticks: 0,
        });
        // Read after the push, under the lock: a shutdown the sweeper has
        // not yet applied to this list will find the connection in it.
        if self.draining.load(Ordering::Acquire) {
            activity.give(DRAIN);
        }
    }

    /// Every tick: drain the idle connections. On shutdown: drain them
    /// all; on a hard stop: close them all.
    async fn sweep(
        &self,
        tick: Duration,
        shutdown: CancellationToken,
        hard_stop: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let order = tokio::select! {
                _ = hard_stop.cancelled() => CLOSE,
                _ = shutdown.cancelled(), if !self.draining.load(Ordering::Acquire) => {
                    self.draining.store(true, Ordering::Release);
                    DRAIN
                }
                _ = ticks.tick() => CARRY_ON,
            };
            self.conns
                .lock()
                .expect("watched connections")
                .retain_mut(|w| {
                    let Some(a) = w.activity.upgrade() else {
                        return false;
                    };
                    if order != CARRY_ON {
                        a.give(order);
                        return true;
                    }
                    let io = a.io.load(Ordering::Relaxed);
                    if io == w.seen_io && a.in_flight.load(Ordering::Acquire) == 0 {
                        w.quiet_ticks += 1;
                    } else {
                        (w.seen_io, w.quiet_ticks) = (io, 0);
                    }
                    if w.quiet_ticks >= IDLE_TICKS {
                        a.give(DRAIN);
                    }
                    true
                });
            if order == CLOSE {
                return;
            }
        }
    }
}

/// The client's stream with the framing guard, the send timeout and
/// activity tracking: what both engines read and write through.
struct ConnIo<T> {
    inner: T,
    /// Bytes already read from `inner` and not yet used (what the fast
    /// path hands to hyper): the first reads give these back.
    unread: Bytes,
    guard: FramingGuard,
    activity: Arc<Activity>,
    send: WriteDeadline,
}

impl<T> ConnIo<T> {
    fn new(inner: T, guard: FramingGuard, activity: &Arc<Activity>, limits: &Limits) -> Self {
        Self {
            inner,
            unread: Bytes::new(),
            guard,
            activity: activity.clone(),
            send: WriteDeadline::new(limits.client_send_timeout),
        }
    }

    fn touch(&self) {
        self.activity.io.fetch_add(1, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ConnIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = if self.unread.is_empty() {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        } else {
            let n = buf.remaining().min(self.unread.len());
            buf.put_slice(&self.unread.split_to(n));
            Poll::Ready(Ok(()))
        };
        if let Poll::Ready(Ok(())) = res {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                let this = &mut *self;
                this.guard.feed(new);
                this.touch();
            }
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ConnIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_write(cx, data);
        let res = this.send.watch(cx, res);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        let res = this.send.watch(cx, res);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_flush(cx);
        this.send.watch(cx, res)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

pub struct ProxyServer {
    pub gateway: Arc<Gateway>,
    pub limits: Arc<Limits>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long in-flight requests may take to finish after shutdown.
    pub grace: Duration,
    /// Worker threads, each a single-threaded runtime (0 = one per core).
    pub workers: usize,
    /// Cancelled: drop every connection at once (a crash, for tests).
    pub kill: CancellationToken,
}

impl ProxyServer {
    /// Serve until `shutdown`, then drain: stop accepting, let in-flight
    /// requests finish within the grace period, then close what is left.
    ///
    /// Thread per core, as nginx and pingora do: this task accepts and hands
    /// each connection to a worker thread in turn; the worker runs it to the
    /// end on its own single-threaded runtime, with its own upstream pools,
    /// so a request never hops between threads.
    pub async fn run(self, listener: TcpListener, shutdown: CancellationToken) {
        let workers = if self.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.workers
        };
        let this = Arc::new(self);
        let mut senders = Vec::with_capacity(workers);
        let mut finished = Vec::with_capacity(workers);
        for i in 0..workers {
            let (tx, rx) =
                tokio::sync::mpsc::unbounded_channel::<(std::net::TcpStream, SocketAddr)>();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            let (this, shutdown) = (this.clone(), shutdown.clone());
            std::thread::Builder::new()
                .name(format!("tollgate-proxy-{i}"))
                .spawn(move || {
                    crate::shard::enter(i);
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a proxy worker runtime");
                    rt.block_on(this.worker(rx, shutdown));
                    let _ = done_tx.send(());
                })
                .expect("spawning a proxy worker thread");
            senders.push(tx);
            finished.push(done_rx);
        }
        let mut next = 0;
        loop {
            let (stream, remote) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off a little.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            let Ok(stream) = stream.into_std() else {
                continue;
            };
            let _ = senders[next % workers].send((stream, remote));
            next += 1;
        }
        drop(listener);
        drop(senders);
        for done in finished {
            let _ = done.await;
        }
    }

    /// One worker thread: serve the connections handed over until the
    /// acceptor stops, then drain within the grace period.
    async fn worker(
        self: Arc<Self>,
        mut incoming: tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
        shutdown: CancellationToken,
    ) {
        let tracker = TaskTracker::new();
        let hard_stop = self.kill.child_token();
        let watched = Arc::new(Watched::default());
        let tick = (self.limits.idle_timeout / IDLE_TICKS).max(Duration::from_millis(10));
        let sweeper = tokio::spawn({
            let (watched, hard_stop) = (watched.clone(), hard_stop.clone());
            async move { watched.sweep(tick, shutdown, hard_stop).await }
        });
        while let Some((stream, remote)) = incoming.recv().await {
            let Ok(stream) = TcpStream::from_std(stream) else {
                continue;
            };
            let activity = Arc::new(Activity::default());
            watched.add(&activity);
            let this = self.clone();
            tracker.spawn(async move {
                this.connection(stream, remote, activity).await;
            });
        }
        tracker.close();
        if tokio::time::timeout(self.grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                connections = tracker.len(),
                "grace period over; closing the connections left"
            );
            hard_stop.cancel();
            tracker.wait().await;
        }
        hard_stop.cancel();
        let _ = sweeper.await;
    }

    async fn connection(&self, stream: TcpStream, remote: SocketAddr, activity: Arc<Activity>) {
        let _ = stream.set_nodelay(true);
        let verdicts = Arc::new(Verdicts::default());
        let info = Arc::new(ConnInfo {
            remote,
            remote_ip: HeaderValue::from_str(&remote.ip().to_string())
                .expect("an IP address is a valid header value"),
            tls: self.tls.is_some(),
            verdicts: verdicts.clone(),
        });
        let io = |inner, guard| ConnIo::new(inner, guard, &activity, &self.limits);
        let guard = || FramingGuard::new(verdicts.clone(), self.limits.max_headers);
        match &self.tls {
            None if self.limits.engine == Engine::Hyper => {
                self.serve_http(io(stream, guard()), info, activity).await;
            }
            None => {
                // The fast path first; hyper (with the framing guard) from
                // the first request it does not take.
                let mut io = io(stream, FramingGuard::off());
                let outcome = {
                    let fast = h1::serve(
                        &mut io,
                        &self.limits,
                        || activity.order.load(Ordering::Acquire) != CARRY_ON,
                        &activity.in_flight,
                        |req| proxy::serve(&self.gateway, &info, &self.limits, req),
                    );
                    tokio::pin!(fast);
                    obey(&activity, |cx, _| fast.as_mut().poll(cx)).await
                };
                let Some(h1::Outcome::HandOver(read)) = outcome else {
                    return;
                };
                // hyper reads the request it did not take again, through
                // the framing guard.
                io.unread = read;
                io.guard = guard();
                self.serve_http(io, info, activity).await;
            }
            Some(config) => {
                let accept = TlsAcceptor::from(config.clone()).accept(stream);
                let tls = match tokio::time::timeout(self.limits.header_read_timeout, accept).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let guard = if h2 { FramingGuard::off() } else { guard() };
                let io = ConnIo::new(tls, guard, &activity, &self.limits);
                self.serve_http(io, info, activity).await;
            }
        }
    }

    /// Serve a connection with hyper: HTTP/2, TLS, and what the fast path
    /// hands over.
    async fn serve_http<T>(&self, io: ConnIo<T>, info: Arc<ConnInfo>, activity: Arc<Activity>)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let remote = info.remote;
        let (gw, limits) = (self.gateway.clone(), self.limits.clone());
        let act = activity.clone();
        let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
            let (gw, info, limits, act) = (gw.clone(), info.clone(), limits.clone(), act.clone());
            // On the heap from the start: the request's future is several
            // KiB, and every move of it up the chain would copy it whole.
            Box::pin(async move {
                act.in_flight.fetch_add(1, Ordering::AcqRel);
                let served =
                    proxy::serve(&gw, &info, &limits, req.map(RequestBody::Streamed)).await;
                // hyper writes the map only.
                let res = served.stamped();
                act.in_flight.fetch_sub(1, Ordering::AcqRel);
                Ok::<_, Infallible>(res)
            })
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .max_headers(self.limits.max_headers)
            .max_buf_size(self.limits.max_head_bytes)
            // Head and body in one buffer, one `write`: cheaper than queueing
            // `iovec`s for the small answers most APIs give.
            .writev(false);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(self.limits.max_header_bytes as u32)
            .keep_alive_interval(Duration::from_secs(30));
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let ended = obey(&activity, |cx, drain_now| {
            if drain_now {
                conn.as_mut().graceful_shutdown();
            }
            conn.as_mut().poll(cx)
        })
        .await;
        if let Some(Err(e)) = ended {
            tracing::debug!(%remote, error = %e, "connection ended with an error");
        }
    }
}

/// Run a connection under its sweeper's orders: `CLOSE` drops it at once
/// (`None`); at the first `DRAIN`, `poll` is told to drain (its second
/// argument), after which the connection must finish by itself.
///
/// A poll function rather than a future: hyper's connection type, passed
/// through a generic `F: Future`, defeats the compiler's `Send` proof.
async fn obey<T>(
    activity: &Activity,
    mut poll: impl FnMut(&mut Context<'_>, bool) -> Poll<T>,
) -> Option<T> {
    let mut draining = false;
    std::future::poll_fn(|cx| {
        // Registered before the order is read: an order given after the
        // read wakes this task again.
        activity.task.register(cx.waker());
        let drain_now = match activity.order.load(Ordering::Acquire) {
            CLOSE => return Poll::Ready(None),
            DRAIN => !std::mem::replace(&mut draining, true),
            _ => false,
        };
        poll(cx, drain_now).map(Some)
    })
    .await
}
