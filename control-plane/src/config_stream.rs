//! `Config.Watch`: streams config to data planes from this node's applied
//! state (followers serve it too, so load spreads over the cluster).
//!
//! Per stream: the data plane says hello with the revision it holds; we send
//! the whole config if it holds nothing, otherwise only what changed since,
//! and then one delta each time the applied index moves. One update is in
//! flight at a time: the next goes out after the ACK or NACK, based on the
//! last revision the data plane acknowledged, so a NACKed update is never
//! assumed applied.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tollgate_model::{Resource, ResourceKind};
use tollgate_proto::cluster_client::ClusterClient;
use tollgate_proto::{watch_request, ConfigUpdate, DataPlaneInfo, WatchRequest};
use tonic::{Request, Response, Status, Streaming};

use crate::raft::state_machine::Shared;
use crate::transport::Channels;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Data planes that stream (or streamed) from this node.
#[derive(Clone, Default)]
pub struct DataPlaneRegistry {
    inner: Arc<Mutex<HashMap<String, Registered>>>,
}

#[derive(Default)]
struct Registered {
    info: DataPlaneInfo,
    /// Streams open on this node under this id. Usually 0 or 1; 2 for a
    /// moment when a data plane reconnects before the old stream is seen
    /// to be dead, and for as long as two data planes share an id.
    streams: u32,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DataPlaneView {
    pub id: String,
    pub addr: String,
    pub revision: u64,
    pub connected: bool,
    /// RFC 3339 time the data plane was last heard from.
    pub last_seen: String,
    pub last_seen_ms: u64,
}

/// `ms` since the Unix epoch as RFC 3339 in UTC ("" if out of range).
pub(crate) fn rfc3339(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl From<DataPlaneInfo> for DataPlaneView {
    fn from(d: DataPlaneInfo) -> Self {
        let last_seen = rfc3339(d.last_seen_ms);
        Self {
            id: d.id,
            addr: d.addr,
            revision: d.revision,
            connected: d.connected,
            last_seen,
            last_seen_ms: d.last_seen_ms,
        }
    }
}

impl DataPlaneRegistry {
    fn update(&self, id: &str, f: impl FnOnce(&mut DataPlaneInfo)) {
        self.update_entry(id, |entry| f(&mut entry.info));
    }

    fn update_entry<T>(&self, id: &str, f: impl FnOnce(&mut Registered) -> T) -> T {
        let mut map = self.inner.lock().expect("registry lock");
        let entry = map.entry(id.to_string()).or_insert_with(|| Registered {
            info: DataPlaneInfo {
                id: id.to_string(),
                ..Default::default()
            },
            streams: 0,
        });
        let out = f(entry);
        entry.info.last_seen_ms = now_ms();
        out
    }

    /// A stream opened under `id`. Returns the address of a stream already
    /// open under it, if any: another data plane with the same id, or this
    /// one reconnecting before its old stream was seen to end.
    fn connect(&self, id: &str, addr: &str, revision: u64) -> Option<String> {
        self.update_entry(id, |entry| {
            let other = (entry.streams > 0).then(|| entry.info.addr.clone());
            entry.streams += 1;
            entry.info.addr = addr.to_string();
            entry.info.revision = revision;
            entry.info.connected = true;
            other
        })
    }

    /// A stream under `id` ended; the data plane shows as disconnected only
    /// once no stream under its id is left.
    fn disconnect(&self, id: &str) {
        self.update_entry(id, |entry| {
            entry.streams = entry.streams.saturating_sub(1);
            entry.info.connected = entry.streams > 0;
        });
    }

    pub fn local(&self) -> Vec<DataPlaneInfo> {
        self.inner
            .lock()
            .expect("registry lock")
            .values()
            .map(|entry| entry.info.clone())
            .collect()
    }

    /// This node's data planes merged with every peer's; for each data
    /// plane the most recently seen record wins.
    pub async fn gather(&self, channels: &Channels, peers: &[String]) -> Vec<DataPlaneView> {
        let mut all: HashMap<String, DataPlaneInfo> = HashMap::new();
        let mut merge = |d: DataPlaneInfo| {
            let keep = all
                .get(&d.id)
                .is_none_or(|o| (d.connected, d.last_seen_ms) > (o.connected, o.last_seen_ms));
            if keep {
                all.insert(d.id.clone(), d);
            }
        };
        self.local().into_iter().for_each(&mut merge);
        let calls = peers.iter().map(|p| {
            let mut client = ClusterClient::new(channels.get(p));
            async move {
                let mut req = Request::new(tollgate_proto::ReadIndexRequest {});
                req.set_timeout(Duration::from_millis(500));
                client
                    .local_data_planes(req)
                    .await
                    .map(|r| r.into_inner().items)
            }
        });
        for items in futures::future::join_all(calls).await.into_iter().flatten() {
            items.into_iter().for_each(&mut merge);
        }
        let mut out: Vec<DataPlaneView> = all.into_values().map(DataPlaneView::from).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

fn proto_kind(k: ResourceKind) -> tollgate_proto::ResourceKind {
    use tollgate_proto::ResourceKind as P;
    match k {
        ResourceKind::Api => P::Api,
        ResourceKind::Authorizer => P::Authorizer,
        ResourceKind::Tenant => P::Tenant,
        ResourceKind::UsagePlan => P::UsagePlan,
        ResourceKind::ApiKey => P::ApiKey,
        ResourceKind::Settings => P::Settings,
        ResourceKind::CacheFlush => P::CacheFlush,
        ResourceKind::Deployment => P::Deployment,
        ResourceKind::Stage => P::Stage,
    }
}

fn to_proto(r: &Resource) -> tollgate_proto::Resource {
    tollgate_proto::Resource {
        kind: proto_kind(r.kind()) as i32,
        id: r.id().to_string(),
        json: serde_json::to_vec(&r.doc_json()).expect("documents serialize"),
    }
}

/// The update that takes a data plane from `base` to what is applied now.
pub fn update_since(shared: &Shared, base: u64) -> ConfigUpdate {
    // Read the applied index before the state: the state may then hold a
    // little more than the label says, which only resends idempotent upserts.
    let revision = shared.applied();
    shared.read(|state| {
        if base == 0 {
            ConfigUpdate {
                revision,
                full: true,
                base_revision: 0,
                upserts: state.all().map(|s| to_proto(&s.resource)).collect(),
                removals: Vec::new(),
            }
        } else {
            let changes = state.changes_since(base);
            ConfigUpdate {
                revision,
                full: false,
                base_revision: base,
                upserts: changes.upserts.iter().map(to_proto).collect(),
                removals: changes
                    .removals
                    .iter()
                    .map(|(k, id)| tollgate_proto::ResourceRef {
                        kind: proto_kind(*k) as i32,
                        id: id.clone(),
                    })
                    .collect(),
            }
        }
    })
}

pub struct ConfigService {
    pub shared: Arc<Shared>,
    pub registry: DataPlaneRegistry,
    /// Ends every stream, so a stopping node does not wait on its data
    /// planes (they reconnect elsewhere).
    pub shutdown: CancellationToken,
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<ConfigUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl tollgate_proto::config_server::Config for ConfigService {
    type WatchStream = UpdateStream;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<UpdateStream>, Status> {
        let mut inbound = req.into_inner();
        let hello = match inbound.next().await {
            Some(Ok(WatchRequest {
                msg: Some(watch_request::Msg::Hello(h)),
            })) => h,
            _ => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        if hello.node_id.is_empty() {
            return Err(Status::invalid_argument("hello.node_id: must not be empty"));
        }
        let (tx, rx) = mpsc::channel(4);
        let shared = self.shared.clone();
        let registry = self.registry.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let id = hello.node_id.clone();
            if let Some(other) = registry.connect(&id, &hello.addr, hello.revision) {
                // Harmless for a reconnect (the old stream ends soon); two
                // live data planes under one id show as one in /v1/cluster.
                tracing::warn!(
                    data_plane = %id, addr = %hello.addr, other_addr = %other,
                    "a second stream under this data-plane id: a reconnect, or two data planes sharing an id (give each its own --node-id)"
                );
            }
            tracing::info!(data_plane = %id, revision = hello.revision, "data plane connected");
            tokio::select! {
                _ = serve_stream(&shared, &registry, &id, hello.revision, &mut inbound, &tx) => {}
                _ = shutdown.cancelled() => {}
            }
            registry.disconnect(&id);
            tracing::info!(data_plane = %id, "data plane disconnected");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn serve_stream(
    shared: &Shared,
    registry: &DataPlaneRegistry,
    id: &str,
    held: u64,
    inbound: &mut Streaming<WatchRequest>,
    tx: &mpsc::Sender<Result<ConfigUpdate, Status>>,
) {
    let mut applied_rx = shared.subscribe();
    let mut acked = held;
    let mut in_flight: Option<u64> = None;
    // After a NACK, wait for a new commit before trying again.
    let mut refused_at: Option<u64> = None;
    loop {
        let applied = *applied_rx.borrow_and_update();
        if in_flight.is_none() && applied > acked && refused_at != Some(applied) {
            let update = update_since(shared, acked);
            in_flight = Some(update.revision);
            if tx.send(Ok(update)).await.is_err() {
                return;
            }
        }
        tokio::select! {
            changed = applied_rx.changed() => if changed.is_err() { return },
            msg = inbound.next() => match msg {
                Some(Ok(WatchRequest { msg: Some(watch_request::Msg::Ack(a)) })) => {
                    acked = acked.max(a.revision);
                    in_flight = None;
                    refused_at = None;
                    registry.update(id, |d| d.revision = acked);
                }
                Some(Ok(WatchRequest { msg: Some(watch_request::Msg::Nack(n)) })) => {
                    tracing::warn!(data_plane = %id, revision = n.revision, reason = %n.reason, "data plane refused config");
                    refused_at = in_flight.take();
                    registry.update(id, |_| {});
                }
                Some(Ok(_)) => registry.update(id, |_| {}),
                Some(Err(_)) | None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected(registry: &DataPlaneRegistry, id: &str) -> bool {
        registry.local().iter().any(|d| d.id == id && d.connected)
    }

    #[test]
    fn a_data_plane_shows_connected_while_any_stream_under_its_id_is_open() {
        let registry = DataPlaneRegistry::default();
        assert_eq!(registry.connect("dp-1", "10.0.0.1:8080", 3), None);
        // A reconnect (or a second data plane under the same id) before the
        // first stream ends: reported, and the newest address is shown.
        assert_eq!(
            registry.connect("dp-1", "10.0.0.2:8080", 4),
            Some("10.0.0.1:8080".to_string())
        );
        // The old stream ending must not hide the live one.
        registry.disconnect("dp-1");
        assert!(connected(&registry, "dp-1"));
        let listed = registry.local();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].addr, "10.0.0.2:8080");
        assert_eq!(listed[0].revision, 4);
        registry.disconnect("dp-1");
        assert!(!connected(&registry, "dp-1"));
        // A late second end changes nothing.
        registry.disconnect("dp-1");
        assert!(!connected(&registry, "dp-1"));
        assert_eq!(registry.connect("dp-1", "10.0.0.2:8080", 4), None);
        assert!(connected(&registry, "dp-1"));
    }
}
