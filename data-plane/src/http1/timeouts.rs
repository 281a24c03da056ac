//! Deadlines for peers that stall once a response is under way: the
//! header read timeout covers a request until its body is in, and
//! `timeout_ms` an upstream until its head is in; these cover the rest.
//!
//! - [`WriteDeadline`]: a client that accepts no bytes for the send
//!   timeout fails the connection's writes, on either engine (it sits in
//!   the connection's I/O, below both codecs).
//! - [`IdleBody`]: an upstream body that yields nothing for the idle
//!   timeout fails; the client's connection is then closed, since its
//!   answer cannot be finished.
//!
//! Both arm a timer only when the peer makes them wait: a write the socket
//! takes at once, or a body frame that is ready, costs no timer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::body::BoxError;

/// A deadline that runs only while a peer makes us wait: armed at the
/// first `Pending`, disarmed by any progress. One timer, reset in place.
struct Stall {
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl Stall {
    fn new(limit: Duration) -> Self {
        Self {
            limit,
            timer: None,
            waiting: false,
        }
    }

    /// Progress: the next wait starts a new deadline.
    fn progressed(&mut self) {
        self.waiting = false;
    }

    /// Still waiting: whether the deadline has passed (the task is woken
    /// when it does).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = Instant::now() + self.limit;
        let timer = match &mut self.timer {
            Some(t) if self.waiting => t,
            Some(t) => {
                t.as_mut().reset(deadline);
                t
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.waiting = true;
        timer.as_mut().poll(cx).is_ready()
    }
}

/// The send timeout of one connection's writes.
pub struct WriteDeadline(Stall);

impl WriteDeadline {
    pub fn new(limit: Duration) -> Self {
        Self(Stall::new(limit))
    }

    /// Pass a write's outcome through: a write that has waited longer than
    /// the limit becomes a `TimedOut` error.
    pub fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        res: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if res.is_ready() {
            self.0.progressed();
            return res;
        }
        if self.0.expired(cx) {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client accepted no bytes within the send timeout",
            )));
        }
        Poll::Pending
    }
}

/// The error of a body cut for idling.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?} mid-body")]
pub struct Idle(pub Duration);

/// A body that fails when its source yields nothing for `limit`.
pub struct IdleBody<B> {
    inner: B,
    stall: Stall,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, limit: Duration) -> Self {
        Self {
            inner,
            stall: Stall::new(limit),
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.stall.progressed();
            return Poll::Ready(frame);
        }
        if this.stall.expired(cx) {
            return Poll::Ready(Some(Err(Box::new(Idle(this.stall.limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_is_cut_at_the_idle_timeout() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let stream =
            http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut body = IdleBody::new(stream, Duration::from_secs(5));
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        // Frames 4 s apart keep it alive: the timer restarts with each.
        for _ in 0..3 {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(4)).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"b"))))
                    .await
                    .unwrap();
            });
            assert!(body.frame().await.unwrap().is_ok());
        }
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<Idle>());
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        drop(tx);
    }

    /// A writer over an in-memory pipe whose reader never reads.
    struct Deadlined<W> {
        inner: W,
        deadline: WriteDeadline,
    }

    impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Deadlined<W> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let this = &mut *self;
            let res = Pin::new(&mut this.inner).poll_write(cx, buf);
            this.deadline.watch(cx, res)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_fails_the_writes_at_the_send_timeout() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut w = Deadlined {
            inner: a,
            deadline: WriteDeadline::new(Duration::from_secs(3)),
        };
        // Slow but moving: each write waits 2 s for the reader, never 3.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                b.read_exact(&mut buf).await.unwrap();
            }
            b // held, never read again
        });
        for _ in 0..5 {
            w.write_all(&[7u8; 1024]).await.unwrap();
        }
        let started = Instant::now();
        let err = w.write_all(&[7u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        drop(reader);
    }
}
