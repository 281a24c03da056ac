//! WebSocket APIs (contract §5.3): the upgrade, one session per connection,
//! and the registry the connections API reaches them through.
//!
//! A connection lives on the data plane that accepted it; its id names
//! that data plane (`tollgate_model::connection_id`), so a control-plane
//! node finds it without any shared table. The registry below is what the
//! control plane's commands (push, read, close) arrive at.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub mod integration;
pub mod metrics;
mod session;
mod upgrade;

pub use upgrade::{check_handshake, Upgrade};

/// What became of a command sent to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Pushed to the client, or closed.
    Done,
    /// No such connection here (closed, or never was): 410.
    Gone,
    /// The key's throttle refused the message: 429.
    TooManyRequests,
    /// The key's quota is spent: 429.
    LimitExceeded,
}

pub use tollgate_model::websocket::ConnectionInfo;

/// An access-log line for a connection: `connect` when it opens,
/// `disconnect` with the close code and how long it was open.
pub(crate) fn log_event(
    log: Option<&Arc<crate::access_log::AccessLog>>,
    info: &ConnectionInfo,
    closed: Option<(u16, u64)>,
) {
    let Some(log) = log else {
        return;
    };
    let mut w = crate::access_log::LineWriter::new();
    w.time("time", std::time::SystemTime::now())
        .str(
            "event",
            if closed.is_some() {
                "disconnect"
            } else {
                "connect"
            },
        )
        .str("api", &info.api)
        .str("connection_id", &info.id)
        .opt_str("key_id", info.key_id.as_deref())
        .opt_str("tenant", info.tenant.as_deref())
        .opt_str("subject", info.subject.as_deref())
        .str("client", &info.source_ip);
    if let Some((code, duration_ms)) = closed {
        w.u64("close_code", u64::from(code))
            .u64("duration_ms", duration_ms);
    }
    log.send(w.finish());
}

/// A command for a connection's session.
pub(crate) enum Command {
    Push(Bytes, oneshot::Sender<Delivery>),
    Close(oneshot::Sender<Delivery>),
    /// The config no longer serves the connection's API (1001).
    GoAway(&'static str),
}

/// One open connection, as the registry holds it.
pub(crate) struct Handle {
    pub(crate) info: ConnectionInfo,
    /// The route-table key of the API it was opened on.
    pub(crate) api_key: String,
    /// Unix milliseconds of the last message either way.
    pub(crate) last_active_ms: AtomicU64,
    pub(crate) commands: mpsc::Sender<Command>,
}

/// Every WebSocket connection open on this data plane, by id.
#[derive(Default)]
pub struct Connections {
    node_id: OnceLock<String>,
    open: DashMap<String, Arc<Handle>, crate::FastHash>,
    /// Cancelled at shutdown: every session runs `$disconnect` and closes
    /// with 1001.
    pub(crate) closing: CancellationToken,
    /// Woken when the last connection closes.
    emptied: tokio::sync::Notify,
    pub metrics: metrics::WebSocketMetrics,
}

impl Connections {
    /// The data plane's node id, which new connection ids carry.
    pub fn set_node_id(&self, node_id: &str) {
        let _ = self.node_id.set(node_id.to_string());
    }

    pub fn node_id(&self) -> &str {
        self.node_id.get().map_or("", String::as_str)
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Send `body` to the client as one message (text if UTF-8, else
    /// binary), under the key's throttle and quota.
    pub async fn push(&self, id: &str, body: Bytes) -> Delivery {
        self.command(id, |reply| Command::Push(body, reply)).await
    }

    /// Close the connection with 1000 (`$disconnect` runs).
    pub async fn close(&self, id: &str) -> Delivery {
        self.command(id, Command::Close).await
    }

    /// What is known of connection `id`; `None` if it is not open here.
    pub fn info(&self, id: &str) -> Option<ConnectionInfo> {
        let h = self.open.get(id)?;
        let mut info = h.info.clone();
        info.last_active_at =
            crate::civil_time::rfc3339_ms(h.last_active_ms.load(Ordering::Relaxed));
        Some(info)
    }

    async fn command(
        &self,
        id: &str,
        make: impl FnOnce(oneshot::Sender<Delivery>) -> Command,
    ) -> Delivery {
        let Some(commands) = self.open.get(id).map(|h| h.commands.clone()) else {
            return Delivery::Gone;
        };
        let (reply, answer) = oneshot::channel();
        if commands.send(make(reply)).await.is_err() {
            return Delivery::Gone;
        }
        answer.await.unwrap_or(Delivery::Gone)
    }

    /// Close every connection with 1001, each after its `$disconnect`,
    /// and wait (at most `grace`) until they are all closed.
    pub async fn shut_down(&self, grace: std::time::Duration) {
        self.closing.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let emptied = self.emptied.notified();
            if self.open.is_empty() {
                return;
            }
            if tokio::time::timeout_at(deadline, emptied).await.is_err() {
                tracing::warn!(
                    open = self.open.len(),
                    "websocket connections still open after the grace period"
                );
                return;
            }
        }
    }

    /// After a config change: connections whose API is gone, or no longer
    /// a WebSocket API, are closed with 1001; the rest stay open.
    pub fn reconcile(&self, routes: &crate::router::RouteTable) {
        use tollgate_model::websocket::Protocol;
        for h in self.open.iter() {
            let served = routes
                .api(&h.api_key)
                .is_some_and(|a| a.doc.protocol == Protocol::Websocket);
            if !served {
                let _ = h.commands.try_send(Command::GoAway("api removed"));
            }
        }
    }

    pub(crate) fn insert(&self, handle: Arc<Handle>) {
        self.open.insert(handle.info.id.clone(), handle);
    }

    pub(crate) fn remove(&self, id: &str) {
        self.open.remove(id);
        if self.open.is_empty() {
            self.emptied.notify_waiters();
        }
    }
}
