//! Network faults injected into one node's peer connections, for the
//! failover tests and drills: in-process nodes share one network, so a
//! partition or a paused peer cannot be made outside the process. Every
//! peer connection goes through `connect` and `FaultyStream`; with no fault
//! set each costs one uncontended lock per poll.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use http::Uri;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What this node sees of one peer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Packets dropped: a connect never completes (the endpoint's connect
    /// timeout ends it), and a connection open across the cut never
    /// carries another byte, even once it is healed, as after a middlebox
    /// forgot it. Only HTTP/2 keepalive gets rid of such a connection.
    Partitioned,
    /// The peer is stopped (SIGSTOP): connects complete, as the kernel
    /// still accepts them, but no byte moves either way until it clears.
    Frozen,
}

#[derive(Default)]
struct Table {
    faults: HashMap<String, Fault>,
    /// Streams waiting for a `Frozen` to clear.
    frozen: Vec<Waker>,
}

/// The faults of one node, by peer address (as in `Node::grpc_addr`).
#[derive(Clone, Default)]
pub struct Faults(Arc<Mutex<Table>>);

impl Faults {
    /// Set (`Some`) or clear (`None`) the fault towards `addr`.
    pub fn set(&self, addr: &str, fault: Option<Fault>) {
        let wakers = {
            let mut t = self.0.lock().expect("faults lock");
            match fault {
                Some(f) => t.faults.insert(addr.to_string(), f),
                None => t.faults.remove(addr),
            };
            std::mem::take(&mut t.frozen)
        };
        // Woken streams look again and wait anew if still frozen.
        wakers.into_iter().for_each(Waker::wake);
    }

    fn get(&self, addr: &str) -> Option<Fault> {
        self.0
            .lock()
            .expect("faults lock")
            .faults
            .get(addr)
            .copied()
    }

    /// `Frozen` towards `addr`: park `cx` until a change.
    fn park_if_frozen(&self, addr: &str, cx: &Context<'_>) -> Option<Fault> {
        let mut t = self.0.lock().expect("faults lock");
        let f = t.faults.get(addr).copied();
        if f == Some(Fault::Frozen) {
            t.frozen.push(cx.waker().clone());
        }
        f
    }
}

/// Open a TCP connection to `uri` (the peer at `addr`), through the faults.
pub(super) async fn connect(
    faults: Faults,
    addr: Arc<str>,
    uri: Uri,
) -> io::Result<hyper_util::rt::TokioIo<FaultyStream>> {
    if faults.get(&addr) == Some(Fault::Partitioned) {
        // A SYN into the void: the endpoint's connect timeout ends this.
        std::future::pending::<()>().await;
    }
    let host = uri
        .host()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in peer URL"))?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let default_port = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let tcp = TcpStream::connect((host, uri.port_u16().unwrap_or(default_port))).await?;
    tcp.set_nodelay(true)?;
    Ok(hyper_util::rt::TokioIo::new(FaultyStream {
        inner: tcp,
        faults,
        addr,
        dead: false,
    }))
}

/// A peer connection that stalls while a fault is set towards its peer.
pub struct FaultyStream {
    inner: TcpStream,
    faults: Faults,
    addr: Arc<str>,
    /// It crossed a partition: it stays silent for good.
    dead: bool,
}

impl FaultyStream {
    fn stalled(&mut self, cx: &Context<'_>) -> bool {
        match self.faults.park_if_frozen(&self.addr, cx) {
            Some(Fault::Partitioned) => self.dead = true,
            Some(Fault::Frozen) => return true,
            None => {}
        }
        // A dead stream is never woken: hyper's keepalive timer polls the
        // connection, finds the ping unanswered and drops it.
        self.dead
    }
}

impl AsyncRead for FaultyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.stalled(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.stalled(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.stalled(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
