//! Starting and stopping one control-plane node: storage, Raft, the gRPC
//! port (Raft, cluster, admin, config streaming) and the admin REST port.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tollgate_proto::tls::MutualTls;
use tollgate_proto::{
    admin_server::AdminServer, cluster_server::ClusterServer, config_server::ConfigServer,
    connections_server::ConnectionsServer, raft_server::RaftServer, usage_server::UsageServer,
};
use tonic::service::interceptor::InterceptedService;

use crate::config_stream::{ConfigService, DataPlaneRegistry};
use crate::connections::ConnectionsService;
use crate::grpc::{AdminService, ClusterService};
use crate::raft::network::{Network, RaftService};
use crate::raft::{open_storage, Node, NodeId, Raft};
use crate::service::ControlPlane;
use crate::transport::{Channels, RequireToken};

/// Timing knobs. With the defaults a leader that dies is replaced 0.6 to
/// 0.9 s after its last heartbeat: followers trust a leader for a lease
/// (`election_max_ms`), then wait a random part of the election range more
/// (`raft::elect`). Six missed heartbeats, not one slow disk flush, make a
/// leader look dead; and append-entries, bounded by openraft at one
/// heartbeat interval, get 100 ms for a follower's flush.
#[derive(Debug, Clone)]
pub struct RaftTuning {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot (and purge the log behind it) once the log since
    /// the last one holds at least this many entries and at least as many
    /// as the state holds documents (see `raft::compaction`).
    pub snapshot_every: u64,
    /// Entries kept in the log behind the last snapshot.
    pub keep_behind_snapshot: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        Self {
            heartbeat_ms: 100,
            election_min_ms: 300,
            election_max_ms: 600,
            snapshot_every: 5000,
            keep_behind_snapshot: 1000,
        }
    }
}

pub enum Membership {
    /// Create a one-node cluster if the data dir holds none.
    Bootstrap,
    /// Ask the member at this admin URL to add us.
    Join(String),
    /// Restart from the data dir.
    Resume,
}

pub struct NodeConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    pub grpc_listener: TcpListener,
    pub admin_listener: TcpListener,
    /// URLs other nodes reach us at; default from the listeners' addresses.
    pub advertise_grpc: Option<String>,
    pub advertise_admin: Option<String>,
    pub admin_token: String,
    /// The token this node presents to its peers, and accepts.
    pub cluster_token: String,
    /// Further cluster tokens accepted (not presented), while the cluster
    /// token is rotated one node at a time: first every node accepts the
    /// new token, then each presents it, then the old one is dropped.
    pub cluster_tokens_accepted: Vec<String>,
    /// Mutual TLS on the gRPC port (and for calls to peers); `None` is the
    /// simple token-only mode of `dev`.
    pub tls: Option<MutualTls>,
    pub membership: Membership,
    pub tuning: RaftTuning,
    pub request_timeout: Duration,
}

/// A running node. `shutdown` stops it; dropping it leaves it running.
pub struct NodeHandle {
    pub control: Arc<ControlPlane>,
    pub grpc_addr: String,
    pub admin_addr: String,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeHandle {
    pub fn id(&self) -> NodeId {
        self.control.id
    }

    /// Stop serving and shut Raft down; storage is closed once this returns.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.control.raft.shutdown().await;
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

pub async fn start(cfg: NodeConfig) -> anyhow::Result<NodeHandle> {
    let grpc_local = cfg.grpc_listener.local_addr()?;
    let admin_local = cfg.admin_listener.local_addr()?;
    let grpc_addr = cfg.advertise_grpc.clone().unwrap_or_else(|| {
        let scheme = if cfg.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{grpc_local}")
    });
    let admin_addr = cfg
        .advertise_admin
        .clone()
        .unwrap_or_else(|| format!("http://{admin_local}"));
    let node = Node {
        grpc_addr: grpc_addr.clone(),
        admin_addr: admin_addr.clone(),
    };

    let (log_store, state_machine) = open_storage(&cfg.data_dir)
        .with_context(|| format!("opening storage in {}", cfg.data_dir.display()))?;
    let shared = state_machine.shared();
    let t = &cfg.tuning;
    let raft_config = openraft::Config {
        cluster_name: "tollgate".into(),
        heartbeat_interval: t.heartbeat_ms,
        election_timeout_min: t.election_min_ms,
        election_timeout_max: t.election_max_ms,
        // Snapshots are triggered by `raft::compaction`, which scales the
        // interval with the state's size.
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: t.keep_behind_snapshot,
        purge_batch_size: 1,
        // `raft::elect` starts elections, behind a pre-vote.
        enable_elect: false,
        ..Default::default()
    }
    .validate()?;
    let channels = Channels::new(&cfg.cluster_token, cfg.tls.clone());
    let raft = Raft::new(
        cfg.node_id,
        Arc::new(raft_config),
        Network::new(channels.clone()),
        log_store.clone(),
        state_machine,
    )
    .await?;

    let control = Arc::new(ControlPlane {
        id: cfg.node_id,
        node: node.clone(),
        raft: raft.clone(),
        shared: shared.clone(),
        channels,
        data_planes: DataPlaneRegistry::default(),
        demand: crate::demand::DemandTable::default(),
        connections: Arc::default(),
        traffic: Default::default(),
        log_store,
        request_timeout: cfg.request_timeout,
    });

    let cancel = CancellationToken::new();
    let mut tasks = vec![
        tokio::spawn(crate::raft::compaction::run(
            raft.clone(),
            shared.clone(),
            t.snapshot_every,
            cancel.clone(),
        )),
        tokio::spawn(crate::raft::elect::run(
            raft.clone(),
            control.log_store.clone(),
            control.channels.clone(),
            cancel.clone(),
        )),
    ];

    // gRPC: Raft, cluster and config streaming take the cluster token; the
    // admin service takes the admin token.
    let cluster_auth = RequireToken::new(
        std::iter::once(&cfg.cluster_token)
            .chain(&cfg.cluster_tokens_accepted)
            .map(String::as_str),
    );
    let admin_auth = RequireToken::new([cfg.admin_token.as_str()]);
    // Pings find a peer or data plane that vanished without a word, so a
    // dead stream is not taken for a live one (connections API, Watch).
    let mut server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)));
    if let Some(tls) = &cfg.tls {
        server = server
            .tls_config(tls.server())
            .context("gRPC TLS settings")?;
    }
    // Reflection takes no token (why: `grpc_typed::reflection`).
    let (reflection_v1, reflection_v1alpha) = crate::grpc_typed::reflection()?;
    let grpc = server
        .add_service(InterceptedService::new(
            RaftServer::new(RaftService::new(raft.clone(), control.log_store.clone())),
            cluster_auth.clone(),
        ))
        .add_service(InterceptedService::new(
            ClusterServer::new(ClusterService {
                cp: control.clone(),
            }),
            cluster_auth.clone(),
        ))
        .add_service(InterceptedService::new(
            ConfigServer::new(ConfigService {
                shared,
                registry: control.data_planes.clone(),
                shutdown: cancel.clone(),
            }),
            cluster_auth.clone(),
        ))
        .add_service(InterceptedService::new(
            ConnectionsServer::new(ConnectionsService {
                links: control.connections.clone(),
                shutdown: cancel.clone(),
            }),
            cluster_auth.clone(),
        ))
        .add_service(InterceptedService::new(
            UsageServer::new(crate::grpc::UsageService {
                cp: control.clone(),
            }),
            cluster_auth,
        ))
        .add_service(InterceptedService::new(
            AdminServer::new(AdminService {
                cp: control.clone(),
            }),
            admin_auth.clone(),
        ))
        .add_service(InterceptedService::new(
            tollgate_proto::typed_admin_server::TypedAdminServer::new(
                crate::grpc_typed::TypedAdminService {
                    cp: control.clone(),
                },
            ),
            admin_auth,
        ))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    // No Nagle: an answer's last small write (trailers, the tail of a large
    // message) would otherwise wait for the caller's delayed ACK.
    let grpc_incoming =
        tonic::transport::server::TcpIncoming::from(cfg.grpc_listener).with_nodelay(Some(true));
    let c = cancel.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = grpc
            .serve_with_incoming_shutdown(grpc_incoming, c.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "gRPC server failed");
        }
    }));

    let app = crate::rest::router(control.clone(), &cfg.admin_token);
    let c = cancel.clone();
    // No Nagle: a large answer's last segment would otherwise wait for
    // the client's delayed ACK (40 ms on Linux) before it leaves.
    let admin_listener = axum::serve::ListenerExt::tap_io(cfg.admin_listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY on an admin connection");
        }
    });
    tasks.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(admin_listener, app)
            .with_graceful_shutdown(c.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "admin server failed");
        }
    }));

    match cfg.membership {
        Membership::Bootstrap => {
            if !raft.is_initialized().await? {
                raft.initialize(std::collections::BTreeMap::from([(
                    cfg.node_id,
                    node.clone(),
                )]))
                .await
                .context("bootstrapping the cluster")?;
                tracing::info!(node = cfg.node_id, "bootstrapped a new cluster");
            }
        }
        Membership::Join(url) => {
            if !raft.is_initialized().await? {
                join(&url, &cfg.admin_token, cfg.node_id, &node).await?;
            }
        }
        Membership::Resume => {}
    }
    tracing::info!(node = cfg.node_id, grpc = %grpc_addr, admin = %admin_addr, "control-plane node started");
    Ok(NodeHandle {
        control,
        grpc_addr,
        admin_addr,
        cancel,
        tasks,
    })
}

/// Ask an existing member to add this node, retrying while the cluster is
/// electing or unreachable.
async fn join(url: &str, admin_token: &str, id: NodeId, node: &Node) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let endpoint = format!("{}/v1/cluster/members", url.trim_end_matches('/'));
    let body =
        serde_json::json!({"id": id, "grpc_addr": node.grpc_addr, "admin_addr": node.admin_addr});
    let mut last = String::new();
    for attempt in 0..60 {
        match client
            .post(&endpoint)
            .bearer_auth(admin_token)
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                tracing::info!(node = id, via = url, "joined the cluster");
                return Ok(());
            }
            Ok(r) if r.status().as_u16() == 401 => {
                anyhow::bail!("joining via {url}: the admin token was refused")
            }
            Ok(r) => last = format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => last = e.to_string(),
        }
        tracing::warn!(attempt, error = %last, "join failed; retrying");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("could not join via {url}: {last}")
}
