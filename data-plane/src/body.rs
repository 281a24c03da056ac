//! The one body type the proxy hands to hyper, in both directions.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A client's request body.
pub enum RequestBody {
    /// hyper's stream of it.
    Streamed(hyper::body::Incoming),
    /// All of it, read by the HTTP/1.1 fast path (`h1`) before the request
    /// went in.
    Whole(Full<Bytes>),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Streamed(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RequestBody::Whole(b) => Pin::new(b).poll_frame(cx).map_err(|e| match e {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Streamed(b) => b.is_end_stream(),
            RequestBody::Whole(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Streamed(b) => b.size_hint(),
            RequestBody::Whole(b) => b.size_hint(),
        }
    }
}

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// A body that keeps something alive (an upstream lease, a metrics guard)
/// until the body has been sent or dropped. Generic over the body so a
/// concrete one is boxed once, with what it holds.
pub struct Holding<B, T> {
    inner: B,
    _held: T,
}

impl<B, T> Holding<B, T>
where
    B: Body<Data = Bytes, Error = BoxError> + Send + Sync + Unpin + 'static,
    T: Send + Sync + Unpin + 'static,
{
    pub fn wrap(inner: B, held: T) -> ProxyBody {
        Holding { inner, _held: held }.boxed()
    }
}

impl<B: Body<Data = Bytes, Error = BoxError> + Unpin, T: Unpin> Body for Holding<B, T> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
