#![forbid(unsafe_code)]
//! `tollgate`: the one binary. Parses flags (each also read from
//! `TOLLGATE_<FLAG>`), sets up logging, and hands off to the crates.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tollgate_control_plane::{Membership, NodeConfig, RaftTuning};

/// mimalloc: the proxy allocates per request (headers, bodies, futures),
/// and glibc's malloc showed up at ~10% of CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tollgate", version, about = "A distributed API gateway")]
struct Cli {
    /// Log format: text or json. Filter with RUST_LOG.
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Tokens {
    /// File holding the admin token (else TOLLGATE_ADMIN_TOKEN, else one is
    /// generated into <data-dir>/admin-token).
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process: a one-node control plane, a data plane,
    /// and the echo upstream the quickstart routes to.
    Dev {
        #[arg(long, env = "TOLLGATE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = "./tollgate-data")]
        data_dir: PathBuf,
        #[arg(long, env = "TOLLGATE_ADMIN_ADDR", default_value = "127.0.0.1:9080")]
        admin_addr: String,
        #[arg(long, env = "TOLLGATE_GRPC_ADDR", default_value = "127.0.0.1:9090")]
        grpc_addr: String,
        /// Where the proxy listens.
        #[arg(long, env = "TOLLGATE_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        #[arg(long, env = "TOLLGATE_STATUS_ADDR", default_value = "127.0.0.1:9901")]
        status_addr: String,
        /// Where the demo echo upstream listens; "off" to not start it.
        #[arg(long, env = "TOLLGATE_ECHO_ADDR", default_value = "127.0.0.1:8081")]
        echo_addr: String,
        /// The access log: off, stdout, or a file path (appended).
        #[arg(long, env = "TOLLGATE_ACCESS_LOG", default_value = "stdout")]
        access_log: tollgate_data_plane::AccessLogTarget,
        #[command(flatten)]
        tokens: Tokens,
    },
    /// One stateless proxy streaming its config from the control plane.
    DataPlane {
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
    },
    /// A small upstream for demos, tests and benchmarks: answers with a JSON
    /// description of each request.
    Echo {
        #[arg(long, env = "TOLLGATE_LISTEN", default_value = "127.0.0.1:8081")]
        listen: String,
    },
    /// One Raft node of the control plane.
    ///
    /// Peers and data planes authenticate with TOLLGATE_CLUSTER_TOKEN
    /// (generated into the data dir when unset). While that token is being
    /// rotated, TOLLGATE_CLUSTER_TOKEN_ACCEPT lists further tokens to accept,
    /// comma separated (docs/operations.md).
    ControlPlane {
        #[arg(long, env = "TOLLGATE_NODE_ID")]
        node_id: u64,
        #[arg(long, env = "TOLLGATE_DATA_DIR")]
        data_dir: PathBuf,
        #[arg(long, env = "TOLLGATE_GRPC_ADDR")]
        grpc_addr: String,
        #[arg(long, env = "TOLLGATE_ADMIN_ADDR")]
        admin_addr: String,
        /// URL peers and data planes use to reach the gRPC port.
        #[arg(long, env = "TOLLGATE_ADVERTISE_GRPC")]
        advertise_grpc: Option<String>,
        /// URL peers use to reach the admin port.
        #[arg(long, env = "TOLLGATE_ADVERTISE_ADMIN")]
        advertise_admin: Option<String>,
        #[arg(long, env = "TOLLGATE_BOOTSTRAP", conflicts_with = "join")]
        bootstrap: bool,
        /// Admin URL of an existing member to join through.
        #[arg(long, env = "TOLLGATE_JOIN")]
        join: Option<String>,
        #[command(flatten)]
        tokens: Tokens,
        /// Mutual TLS on the gRPC port: this node's certificate, key, and
        /// the cluster CA that every peer and data plane must be signed by.
        #[arg(long, env = "TOLLGATE_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
        tls_cert: Option<PathBuf>,
        #[arg(long, env = "TOLLGATE_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        #[arg(long, env = "TOLLGATE_TLS_CA", requires = "tls_cert")]
        tls_ca: Option<PathBuf>,
    },
    /// Apply a declarative YAML/JSON file of documents.
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[arg(long, env = "TOLLGATE_SERVER", default_value = "http://127.0.0.1:9080")]
        server: String,
        #[command(flatten)]
        tokens: Tokens,
        /// Where `tollgate dev` keeps its generated admin token.
        #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = "./tollgate-data")]
        data_dir: PathBuf,
    },
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

/// Tokens from a comma-separated list; blanks around them and empty
/// entries are dropped.
fn token_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// A secret from a file, else an environment variable, else generated and
/// kept in `dir/name` (mode 0600) so a restart reuses it.
fn load_or_create_secret(
    file: Option<&Path>,
    env: &str,
    dir: &Path,
    name: &str,
) -> anyhow::Result<String> {
    if let Some(f) = file {
        let t = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        return Ok(t.trim().to_string());
    }
    if let Ok(t) = std::env::var(env) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let path = dir.join(name);
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok(t.trim().to_string());
    }
    std::fs::create_dir_all(dir)?;
    let token = tollgate_model::key::new_secret();
    std::fs::write(&path, &token)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    eprintln!("tollgate: generated {name}; it is in {}", path.display());
    Ok(token)
}

async fn wait_for_shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        matches!(cli.log_format.as_str(), "text" | "json"),
        "--log-format: {:?} is not text or json",
        cli.log_format
    );
    // Logs as --log-format and RUST_LOG say; traces over OTLP only when
    // OTEL_EXPORTER_OTLP_ENDPOINT is set.
    let telemetry = tollgate_data_plane::telemetry::init(&cli.log_format)?;
    let result = run(cli.command).await;
    telemetry.shutdown();
    result
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Dev {
            config,
            data_dir,
            admin_addr,
            grpc_addr,
            listen,
            status_addr,
            echo_addr,
            access_log,
            tokens,
        } => {
            let shutdown = tokio_util::sync::CancellationToken::new();
            if echo_addr != "off" {
                let l = bind(&echo_addr).await?;
                tokio::spawn(tollgate_data_plane::echo::run(l, shutdown.clone()));
            }
            let (admin_token, node) = start_control_plane(StartNode {
                node_id: 1,
                data_dir: &data_dir,
                storage_dir: data_dir.join("control-plane"),
                grpc_addr: &grpc_addr,
                admin_addr: &admin_addr,
                advertise_grpc: None,
                advertise_admin: None,
                tokens: &tokens,
                membership: Membership::Bootstrap,
                tls: None,
            })
            .await?;
            if let Some(path) = config {
                apply_file(&path, &node.admin_addr, &admin_token).await?;
            }
            let cluster_token =
                load_or_create_secret(None, "TOLLGATE_CLUSTER_TOKEN", &data_dir, "cluster-token")?;
            let dp = tollgate_data_plane::start(tollgate_data_plane::DataPlaneConfig {
                node_id: "dev".into(),
                control_plane: vec![node.grpc_addr.clone()],
                cluster_token,
                cluster_tls: None,
                proxy_listener: bind(&listen).await?,
                status_listener: bind(&status_addr).await?,
                state_dir: Some(data_dir.join("data-plane")),
                tls: None,
                limits: tollgate_data_plane::Limits::default(),
                grace: Duration::from_secs(5),
                access_log,
                cache_max_bytes: tollgate_data_plane::cache::DEFAULT_CAPACITY_BYTES,
            })
            .await?;
            println!(
                "tollgate dev: proxy on http://{}, admin API on {} (token in {}/admin-token or TOLLGATE_ADMIN_TOKEN), status on http://{}",
                dp.proxy_addr,
                node.admin_addr,
                data_dir.display(),
                dp.status_addr,
            );
            wait_for_shutdown().await;
            dp.shutdown().await;
            shutdown.cancel();
            node.shutdown().await;
        }
        Command::DataPlane {
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
        } => {
            let cluster_token = match cluster_token_file {
                Some(f) => std::fs::read_to_string(&f)
                    .with_context(|| format!("reading {}", f.display()))?
                    .trim()
                    .to_string(),
                None => std::env::var("TOLLGATE_CLUSTER_TOKEN").context(
                    "no cluster token: set TOLLGATE_CLUSTER_TOKEN or --cluster-token-file",
                )?,
            };
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
        }
        Command::Echo { listen } => {
            let listener = bind(&listen).await?;
            println!("tollgate echo: listening on {}", listener.local_addr()?);
            let shutdown = tokio_util::sync::CancellationToken::new();
            let server = tokio::spawn(tollgate_data_plane::echo::run(listener, shutdown.clone()));
            wait_for_shutdown().await;
            shutdown.cancel();
            let _ = server.await;
        }
        Command::ControlPlane {
            node_id,
            data_dir,
            grpc_addr,
            admin_addr,
            advertise_grpc,
            advertise_admin,
            bootstrap,
            join,
            tokens,
            tls_cert,
            tls_key,
            tls_ca,
        } => {
            let membership = match (bootstrap, join) {
                (true, _) => Membership::Bootstrap,
                (false, Some(url)) => Membership::Join(url),
                (false, None) => Membership::Resume,
            };
            let (_, node) = start_control_plane(StartNode {
                node_id,
                data_dir: &data_dir,
                storage_dir: data_dir.clone(),
                grpc_addr: &grpc_addr,
                admin_addr: &admin_addr,
                advertise_grpc,
                advertise_admin,
                tokens: &tokens,
                membership,
                tls: mutual_tls(tls_cert, tls_key, tls_ca)?,
            })
            .await?;
            wait_for_shutdown().await;
            node.shutdown().await;
        }
        Command::Apply {
            file,
            server,
            tokens,
            data_dir,
        } => {
            let token = match (
                &tokens.admin_token_file,
                std::env::var("TOLLGATE_ADMIN_TOKEN"),
            ) {
                (Some(f), _) => std::fs::read_to_string(f)?.trim().to_string(),
                (None, Ok(t)) => t,
                (None, Err(_)) => std::fs::read_to_string(data_dir.join("admin-token"))
                    .context("no admin token: set TOLLGATE_ADMIN_TOKEN or --admin-token-file")?
                    .trim()
                    .to_string(),
            };
            apply_file(&file, &server, &token).await?;
        }
    }
    Ok(())
}

async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
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

struct StartNode<'a> {
    node_id: u64,
    /// Where generated tokens are kept.
    data_dir: &'a Path,
    /// Where Raft keeps its sled database.
    storage_dir: PathBuf,
    grpc_addr: &'a str,
    admin_addr: &'a str,
    advertise_grpc: Option<String>,
    advertise_admin: Option<String>,
    tokens: &'a Tokens,
    membership: Membership,
    tls: Option<tollgate_proto::tls::MutualTls>,
}

/// Mutual TLS settings from the three PEM files (clap ensures all or none).
fn mutual_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
) -> anyhow::Result<Option<tollgate_proto::tls::MutualTls>> {
    match (cert, key, ca) {
        (Some(c), Some(k), Some(a)) => Ok(Some(tollgate_proto::tls::MutualTls::from_files(
            &c, &k, &a,
        )?)),
        _ => Ok(None),
    }
}

/// Resolve the tokens, bind the ports and start one control-plane node.
/// Returns the admin token with the node.
async fn start_control_plane(
    n: StartNode<'_>,
) -> anyhow::Result<(String, tollgate_control_plane::NodeHandle)> {
    let admin_token = load_or_create_secret(
        n.tokens.admin_token_file.as_deref(),
        "TOLLGATE_ADMIN_TOKEN",
        n.data_dir,
        "admin-token",
    )?;
    let cluster_token =
        load_or_create_secret(None, "TOLLGATE_CLUSTER_TOKEN", n.data_dir, "cluster-token")?;
    // Environment only, like the cluster token: secrets stay off the
    // command line, where `ps` shows them.
    let cluster_tokens_accepted =
        token_list(&std::env::var("TOLLGATE_CLUSTER_TOKEN_ACCEPT").unwrap_or_default());
    if !cluster_tokens_accepted.is_empty() {
        tracing::info!(
            count = cluster_tokens_accepted.len(),
            "accepting further cluster tokens (TOLLGATE_CLUSTER_TOKEN_ACCEPT): remove them once the rotation is done"
        );
    }
    let node = tollgate_control_plane::start(NodeConfig {
        node_id: n.node_id,
        data_dir: n.storage_dir,
        grpc_listener: bind(n.grpc_addr).await?,
        admin_listener: bind(n.admin_addr).await?,
        advertise_grpc: n.advertise_grpc,
        advertise_admin: n.advertise_admin,
        admin_token: admin_token.clone(),
        cluster_token,
        cluster_tokens_accepted,
        tls: n.tls,
        membership: n.membership,
        tuning: RaftTuning::default(),
        request_timeout: Duration::from_secs(5),
    })
    .await?;
    Ok((admin_token, node))
}

async fn apply_file(path: &Path, server: &str, token: &str) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let docs = tollgate_control_plane::declarative::parse(&text)
        .with_context(|| format!("parsing {}", path.display()))?;
    for line in tollgate_control_plane::declarative::apply(server, token, &docs).await? {
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::token_list;

    #[test]
    fn token_lists_drop_blanks_and_empty_entries() {
        assert_eq!(token_list(" a, b ,,c,"), ["a", "b", "c"]);
        assert!(token_list("").is_empty());
        assert!(token_list(" , ").is_empty());
    }
}
