#![forbid(unsafe_code)]
//! Tollgate data plane: a stateless proxy that holds the config streamed
//! from the control plane in memory.
//!
//! - `config`: the `Config.Watch` client (hello, ACK/NACK, reconnect with
//!   backoff), prost → model conversion, and the `--state-dir` snapshot.
//! - `gateway`: the snapshot in force (`ArcSwap`) and how a delta replaces it.
//! - `router`: the compiled routing table.
//! - `upstream`: target pools, load balancing, health checks, breakers.
//! - `proxy`: the request path, phase by phase; `error`: every response the
//!   gateway makes itself.
//! - `server`: connections, TLS, graceful shutdown, which engine reads a
//!   connection; `http1`: HTTP/1.1 on its own (the fast path's server
//!   codec, the upstream client codec, the framing guard, the limits and
//!   timeouts both engines share).
//! - `cache`: the response cache.
//! - `status`, `metrics`: the status port; `access_log`: one JSON line per
//!   request, written off the request path; `trace`: W3C trace context;
//!   `telemetry`: log format and the OTLP trace exporter.
//! - `traffic`: each route's answers in 10 s windows, reported to the
//!   control plane for `GET /v1/traffic`.
//! - `echo`: the demo upstream.

/// The hasher of maps on the request path: foldhash, seeded per process.
/// SipHash (std's default) was a visible share of a request's CPU.
pub type FastHash = foldhash::fast::RandomState;
/// A persistent map (cheap clones, updates in proportion to the change)
/// with `FastHash`.
pub type ImMap<K, V> = im::HashMap<K, V, FastHash>;

pub mod access_log;
pub mod auth;
pub mod body;
pub mod cache;
pub mod civil_time;
pub mod config;
pub mod echo;
pub mod error;
pub mod gateway;
pub mod http1;
pub mod metrics;
pub mod plans;
pub mod proxy;
pub mod router;
pub mod server;
pub mod shard;
pub mod stages;
pub mod status;
pub mod telemetry;
pub mod trace;
pub mod traffic;
pub mod upstream;
pub mod websocket;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tollgate_model::{ConfigDelta, ConfigSet};

pub use access_log::AccessLogTarget;
pub use config::Connection;
pub use gateway::Gateway;
pub use http1::{Engine, Limits};

/// Whatever turns a config into the thing the request path reads. The
/// config client calls it for every update it receives; `Ok` leads to an
/// ACK, `Err(reason)` to a NACK, and then the previous config stays in
/// force. `next` is the whole config after the update, `delta` what changed,
/// so an implementation can do work in proportion to the change.
pub trait ConfigApplier: Send + Sync + 'static {
    fn apply(&self, next: &ConfigSet, delta: &ConfigDelta) -> Result<(), String>;
}

pub struct DataPlaneConfig {
    pub node_id: String,
    /// gRPC URLs of control-plane nodes.
    pub control_plane: Vec<String>,
    pub cluster_token: String,
    /// Mutual TLS to the control plane (client certificate from the
    /// cluster CA); `None` is the token-only mode of `dev`.
    pub cluster_tls: Option<tollgate_proto::tls::MutualTls>,
    pub proxy_listener: TcpListener,
    pub status_listener: TcpListener,
    pub state_dir: Option<PathBuf>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub limits: Limits,
    /// How long in-flight requests may run after shutdown begins.
    pub grace: Duration,
    /// Where the access log goes (`--access-log`).
    pub access_log: AccessLogTarget,
    /// The response cache's memory cap, in bytes (`--cache-max-bytes`).
    pub cache_max_bytes: u64,
}

pub struct DataPlaneHandle {
    pub proxy_addr: SocketAddr,
    pub status_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    pub connection: watch::Receiver<Connection>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    plans_stop: CancellationToken,
    plans_task: JoinHandle<()>,
    kill: CancellationToken,
    grace: Duration,
}

impl DataPlaneHandle {
    /// Stop accepting, drain in-flight requests within the grace period,
    /// and stop streaming config.
    pub async fn shutdown(self) {
        // WebSocket sessions first: each runs `$disconnect`, then closes
        // with 1001 (contract §5.3), while the rest still runs.
        self.gateway.connections.shut_down(self.grace).await;
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        self.plans_stop.cancel();
        let _ = self.plans_task.await;
        if let Some(log) = self.gateway.access_log() {
            log.drain(Duration::from_secs(2));
        }
    }

    /// Stop at once, as a crash would: no draining.
    pub fn kill(self) {
        self.kill.cancel();
        self.shutdown.cancel();
        for t in &self.tasks {
            t.abort();
        }
        self.plans_task.abort();
    }
}

/// Load the state file (if any), then start the proxy, the status port and
/// the config client.
pub async fn start(cfg: DataPlaneConfig) -> anyhow::Result<DataPlaneHandle> {
    let gateway = Gateway::with_cache_capacity(cfg.cache_max_bytes);
    if let Some(log) = access_log::AccessLog::open(&cfg.access_log)
        .map_err(|e| anyhow::anyhow!("opening the access log {:?}: {e}", cfg.access_log))?
    {
        gateway.set_access_log(log);
    }
    let mut held = ConfigSet::default();
    let state = cfg.state_dir.as_ref().map(|dir| {
        match config::state_file::load(dir) {
            Ok(Some(saved)) => match gateway.install(&saved) {
                Ok(()) => {
                    tracing::info!(revision = saved.revision, "serving the config from the state file");
                    held = saved;
                }
                Err(reason) => tracing::error!(%reason, "the state file's config cannot be applied; starting empty"),
            },
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "refusing the state file; starting without a config"),
        }
        config::StateWriter::spawn(dir.clone())
    });
    let cfg_grace = cfg.grace;
    let proxy_addr = cfg.proxy_listener.local_addr()?;
    let status_addr = cfg.status_listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let kill = CancellationToken::new();
    let (conn_tx, conn_rx) = watch::channel(Connection::default());

    let plans = plans::PlanEnforcer::new(
        &cfg.node_id,
        plans::link::ControlPlaneLink::new(
            cfg.control_plane.clone(),
            &cfg.cluster_token,
            cfg.cluster_tls.clone(),
        ),
    );
    gateway.set_plans(plans.clone());
    gateway.connections.set_node_id(&cfg.node_id);
    // Its own channel, so live traffic never queues behind a quota lease.
    let traffic_link = plans::link::ControlPlaneLink::new(
        cfg.control_plane.clone(),
        &cfg.cluster_token,
        cfg.cluster_tls.clone(),
    );
    let traffic_source = cfg.node_id.clone();
    let client = config::ConfigClient {
        endpoints: cfg.control_plane,
        cluster_token: cfg.cluster_token,
        tls: cfg.cluster_tls,
        node_id: cfg.node_id,
        advertise_addr: proxy_addr.to_string(),
        state,
        connections: gateway.connections.clone(),
    };
    let server = server::ProxyServer {
        gateway: gateway.clone(),
        limits: Arc::new(cfg.limits),
        tls: cfg.tls,
        grace: cfg_grace,
        workers: 0,
        kill: kill.clone(),
    };
    let tasks = vec![
        tokio::spawn(server.run(cfg.proxy_listener, shutdown.clone())),
        tokio::spawn(status::run(
            cfg.status_listener,
            gateway.clone(),
            conn_rx.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(client.run(gateway.clone(), held, conn_tx, shutdown.clone())),
    ];
    // Usage sync and reports (and live traffic's) outlive the proxy's
    // drain: the last requests are metered before the final flush.
    let plans_stop = CancellationToken::new();
    let traffic = traffic::run(
        gateway.clone(),
        traffic_link,
        traffic_source,
        plans_stop.clone(),
    );
    let plans_run = plans.run(plans_stop.clone());
    let plans_task = tokio::spawn(async move {
        tokio::join!(plans_run, traffic);
    });
    Ok(DataPlaneHandle {
        proxy_addr,
        status_addr,
        gateway,
        connection: conn_rx,
        shutdown,
        tasks,
        plans_stop,
        plans_task,
        kill,
        grace: cfg_grace,
    })
}
