//! `tollgate control-plane`: one Raft node. Also how `dev` starts its
//! one-node cluster, so both resolve tokens and bind ports alike.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tollgate_control_plane::{Membership, NodeConfig, RaftTuning};

use super::lifecycle::{bind, wait_for_shutdown};
use super::secrets::{load_or_create_secret, token_list, Tokens};
use super::tls::mutual_tls;

#[derive(clap::Args)]
pub struct ControlPlaneArgs {
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
}

pub async fn run(args: ControlPlaneArgs) -> anyhow::Result<()> {
    let membership = match (args.bootstrap, args.join) {
        (true, _) => Membership::Bootstrap,
        (false, Some(url)) => Membership::Join(url),
        (false, None) => Membership::Resume,
    };
    let (_, node) = start_control_plane(StartNode {
        node_id: args.node_id,
        data_dir: &args.data_dir,
        storage_dir: args.data_dir.clone(),
        grpc_addr: &args.grpc_addr,
        admin_addr: &args.admin_addr,
        advertise_grpc: args.advertise_grpc,
        advertise_admin: args.advertise_admin,
        tokens: &args.tokens,
        membership,
        tls: mutual_tls(args.tls_cert, args.tls_key, args.tls_ca)?,
    })
    .await?;
    wait_for_shutdown().await;
    node.shutdown().await;
    Ok(())
}

pub struct StartNode<'a> {
    pub node_id: u64,
    /// Where generated tokens are kept.
    pub data_dir: &'a Path,
    /// Where Raft keeps its sled database.
    pub storage_dir: PathBuf,
    pub grpc_addr: &'a str,
    pub admin_addr: &'a str,
    pub advertise_grpc: Option<String>,
    pub advertise_admin: Option<String>,
    pub tokens: &'a Tokens,
    pub membership: Membership,
    pub tls: Option<tollgate_proto::tls::MutualTls>,
}

/// Resolve the tokens, bind the ports and start one control-plane node.
/// Returns the admin token with the node.
pub async fn start_control_plane(
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
