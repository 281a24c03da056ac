//! `tollgate dev`: the quickstart in one process (a one-node control plane,
//! a data plane and the echo upstream), started the same way as the real
//! subcommands so dev behaves like production.

use std::path::PathBuf;
use std::time::Duration;

use tollgate_control_plane::Membership;

use super::apply::apply_file;
use super::control_plane::{start_control_plane, StartNode};
use super::lifecycle::{bind, wait_for_shutdown};
use super::secrets::{load_or_create_secret, Tokens};

#[derive(clap::Args)]
pub struct DevArgs {
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
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let DevArgs {
        config,
        data_dir,
        admin_addr,
        grpc_addr,
        listen,
        status_addr,
        echo_addr,
        access_log,
        tokens,
    } = args;
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
    Ok(())
}
