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
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

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

/// `GET /v1/connections/{id}`: what the gateway knows of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionInfo {
    pub id: String,
    pub api: String,
    /// RFC 3339, UTC.
    pub connected_at: String,
    pub last_active_at: String,
    pub source_ip: String,
    pub key_id: Option<String>,
    pub tenant: Option<String>,
    pub subject: Option<String>,
}

/// A command for a connection's session.
pub(crate) enum Command {
    Push(Bytes, oneshot::Sender<Delivery>),
    Close(oneshot::Sender<Delivery>),
}

/// One open connection, as the registry holds it.
pub(crate) struct Handle {
    pub(crate) info: ConnectionInfo,
    /// Unix milliseconds of the last message either way.
    pub(crate) last_active_ms: AtomicU64,
    pub(crate) commands: mpsc::Sender<Command>,
}

/// Every WebSocket connection open on this data plane, by id.
#[derive(Default)]
pub struct Connections {
    node_id: OnceLock<String>,
    open: DashMap<String, Arc<Handle>, crate::FastHash>,
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

    pub(crate) fn insert(&self, handle: Arc<Handle>) {
        self.open.insert(handle.info.id.clone(), handle);
    }

    pub(crate) fn remove(&self, id: &str) {
        self.open.remove(id);
    }
}
