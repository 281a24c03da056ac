//! `tollgate data-plane`: one stateless proxy fed by the control plane,
//! and the proxy flags that tune it.

use std::path::PathBuf;
use std::time::Duration;

use super::lifecycle::{bind, wait_for_shutdown};
use super::secrets;
use super::tls::mutual_tls;

#[derive(clap::Args)]
pub struct DataPlaneArgs {
    /// gRPC URLs of control-plane nodes, comma separated.
    #[arg(
        long,
        env = "TOLLGATE_CONTROL_PLANE",
        value_delimiter = ',',
        required = true
    )]
    control_plane: Vec<String>,
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "0.0.0.0:8080")]
    listen: String,
    #[arg(long, env = "TOLLGATE_STATUS_ADDR", default_value = "0.0.0.0:9901")]
    status_addr: String,
    /// Keep the last good config here, to start without a control plane.
    #[arg(long, env = "TOLLGATE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Unique per data plane; defaults to `<host name>:<proxy port>`.
    #[arg(long, env = "TOLLGATE_NODE_ID")]
    node_id: Option<String>,
    /// File holding the cluster token (else TOLLGATE_CLUSTER_TOKEN).
    #[arg(long, env = "TOLLGATE_CLUSTER_TOKEN_FILE")]
    cluster_token_file: Option<PathBuf>,
    #[command(flatten)]
    proxy: ProxyFlags,
    /// Mutual TLS to the control plane: this data plane's certificate,
    /// key, and the cluster CA.
    #[arg(long, env = "TOLLGATE_CLUSTER_TLS_CERT", requires_all = ["cluster_tls_key", "cluster_tls_ca"])]
    cluster_tls_cert: Option<PathBuf>,
    #[arg(long, env = "TOLLGATE_CLUSTER_TLS_KEY", requires = "cluster_tls_cert")]
    cluster_tls_key: Option<PathBuf>,
    #[arg(long, env = "TOLLGATE_CLUSTER_TLS_CA", requires = "cluster_tls_cert")]
    cluster_tls_ca: Option<PathBuf>,
}

#[derive(clap::Args, Clone)]
struct ProxyFlags {
    /// PEM certificate chain for TLS on the proxy port.
    #[arg(long, env = "TOLLGATE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, env = "TOLLGATE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "TOLLGATE_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Seconds in-flight requests get to finish on SIGTERM.
    #[arg(long, env = "TOLLGATE_GRACE_S", default_value_t = 30)]
    grace_s: u64,
    /// The access log: off, stdout, or a file path (appended).
    #[arg(long, env = "TOLLGATE_ACCESS_LOG", default_value = "stdout")]
    access_log: tollgate_data_plane::AccessLogTarget,
    /// Memory cap of the response cache, in bytes (entries are weighted by
    /// size; the least useful go first).
    #[arg(long, env = "TOLLGATE_CACHE_MAX_BYTES", default_value_t = tollgate_data_plane::cache::DEFAULT_CAPACITY_BYTES)]
    cache_max_bytes: u64,
    /// Which codec reads plain-TCP HTTP/1 connections: `fast` (ours,
    /// handing over to hyper at the first request it does not take) or
    /// `hyper` (to route around a codec bug). Both give the same answers.
    #[arg(long, env = "TOLLGATE_HTTP1_ENGINE", default_value = "fast")]
    http1_engine: tollgate_data_plane::Engine,
    /// A client that accepts no response bytes for this long is dropped.
    #[arg(long, env = "TOLLGATE_CLIENT_SEND_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    client_send_timeout_ms: u64,
}

impl ProxyFlags {
    fn limits(&self) -> tollgate_data_plane::Limits {
        tollgate_data_plane::Limits {
            max_body_bytes: self.max_body_bytes,
            client_send_timeout: Duration::from_millis(self.client_send_timeout_ms),
            engine: self.http1_engine,
            ..Default::default()
        }
    }
}

pub async fn run(args: DataPlaneArgs) -> anyhow::Result<()> {
    let DataPlaneArgs {
        control_plane,
        listen,
        status_addr,
        state_dir,
        node_id,
        cluster_token_file,
        proxy,
        cluster_tls_cert,
        cluster_tls_key,
        cluster_tls_ca,
    } = args;
    let cluster_token = secrets::cluster_token(cluster_token_file.as_deref())?;
    let tls = match (&proxy.tls_cert, &proxy.tls_key) {
        (Some(c), Some(k)) => Some(tollgate_data_plane::server::tls_config(c, k)?),
        _ => None,
    };
    let proxy_listener = bind(&listen).await?;
    // Unique per process: the control plane tells data planes apart
    // by id (cluster listing, throttle shares, usage batches).
    let node_id = node_id.unwrap_or_else(|| {
        let port = proxy_listener.local_addr().map_or(0, |a| a.port());
        format!("{}:{port}", default_node_id())
    });
    let dp = tollgate_data_plane::start(tollgate_data_plane::DataPlaneConfig {
        node_id,
        control_plane,
        cluster_token,
        cluster_tls: mutual_tls(cluster_tls_cert, cluster_tls_key, cluster_tls_ca)?,
        proxy_listener,
        status_listener: bind(&status_addr).await?,
        state_dir,
        tls,
        limits: proxy.limits(),
        grace: Duration::from_secs(proxy.grace_s),
        access_log: proxy.access_log.clone(),
        cache_max_bytes: proxy.cache_max_bytes,
    })
    .await?;
    println!(
        "tollgate data-plane: proxy on {}, status on {}",
        dp.proxy_addr, dp.status_addr
    );
    wait_for_shutdown().await;
    dp.shutdown().await;
    Ok(())
}

/// The host name (a pod name on Kubernetes), else a random id.
fn default_node_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("dp-{:08x}", rand::random::<u32>()))
}
