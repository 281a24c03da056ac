//! Test harness: real control-plane nodes on 127.0.0.1:0 with sled dirs in
//! temp folders, and a small admin REST client.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpListener;
pub use tollgate_control_plane::transport::Fault;
use tollgate_control_plane::{Membership, NodeConfig, NodeHandle, RaftTuning};
use tollgate_proto::tls::MutualTls;

pub mod dp;

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const CLUSTER_TOKEN: &str = "test-cluster-token";

pub fn tuning() -> RaftTuning {
    RaftTuning {
        heartbeat_ms: 50,
        election_min_ms: 300,
        election_max_ms: 600,
        ..RaftTuning::default()
    }
}

/// Bind `addr` (an earlier ephemeral port when restarting a node, so its
/// advertised address stays valid), retrying briefly while it is released.
async fn bind(addr: &str) -> TcpListener {
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("could not bind {addr}");
}

/// The cluster token a node presents, and the further ones it accepts.
#[derive(Clone)]
pub struct ClusterTokens {
    pub presented: String,
    pub accepted: Vec<String>,
}

impl Default for ClusterTokens {
    fn default() -> Self {
        Self {
            presented: CLUSTER_TOKEN.into(),
            accepted: Vec::new(),
        }
    }
}

/// What a node proves itself with to its peers.
#[derive(Clone, Default)]
pub struct Credentials {
    /// Mutual TLS on its gRPC port and towards its peers.
    pub tls: Option<MutualTls>,
    pub tokens: ClusterTokens,
}

/// One node's identity and where it lives, so it can be restarted.
pub struct NodeSlot {
    pub id: u64,
    pub dir: PathBuf,
    pub grpc: String,
    pub admin: String,
    /// What it starts with the next time.
    pub tokens: ClusterTokens,
    pub handle: Option<NodeHandle>,
}

impl NodeSlot {
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }
    /// A connected channel to its gRPC port.
    pub async fn grpc_channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(self.grpc_url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
    pub fn client(&self) -> Admin {
        Admin::new(&self.admin_url())
    }
    pub fn handle(&self) -> &NodeHandle {
        self.handle.as_ref().expect("node is running")
    }
}

pub async fn start_node(
    id: u64,
    dir: &Path,
    grpc: &str,
    admin: &str,
    membership: Membership,
    tuning: RaftTuning,
    credentials: &Credentials,
) -> NodeHandle {
    let mut last = None;
    for _ in 0..50 {
        let cfg = NodeConfig {
            node_id: id,
            data_dir: dir.to_path_buf(),
            grpc_listener: bind(grpc).await,
            admin_listener: bind(admin).await,
            advertise_grpc: None,
            advertise_admin: None,
            admin_token: ADMIN_TOKEN.into(),
            cluster_token: credentials.tokens.presented.clone(),
            cluster_tokens_accepted: credentials.tokens.accepted.clone(),
            tls: credentials.tls.clone(),
            membership: match &membership {
                Membership::Bootstrap => Membership::Bootstrap,
                Membership::Join(u) => Membership::Join(u.clone()),
                Membership::Resume => Membership::Resume,
            },
            tuning: tuning.clone(),
            request_timeout: Duration::from_secs(3),
        };
        match tollgate_control_plane::start(cfg).await {
            Ok(h) => return h,
            // The previous incarnation may still be releasing sled's lock.
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("node {id} did not start: {:?}", last);
}

pub struct Cluster {
    pub nodes: Vec<NodeSlot>,
    pub tuning: RaftTuning,
    /// Mutual TLS for every node's gRPC port, if the test wants it.
    pub tls: Option<MutualTls>,
    _root: TempDir,
}

impl Cluster {
    /// Node 1 bootstraps; the others join through node 1's admin API.
    pub async fn start(n: usize) -> Cluster {
        Self::start_with(n, tuning()).await
    }

    pub async fn start_with(n: usize, tuning: RaftTuning) -> Cluster {
        Self::start_full(n, tuning, None).await
    }

    pub async fn start_tls(n: usize, tls: MutualTls) -> Cluster {
        Self::start_full(n, tuning(), Some(tls)).await
    }

    async fn start_full(n: usize, tuning: RaftTuning, tls: Option<MutualTls>) -> Cluster {
        let root = TempDir::new().unwrap();
        let mut c = Cluster {
            nodes: Vec::new(),
            tuning,
            tls,
            _root: root,
        };
        for i in 0..n {
            c.add_node(if i == 0 { None } else { Some(0) }).await;
        }
        c.wait_for_voters(n).await;
        c
    }

    /// Start a new node; `join_via` is the index of a member to join through.
    pub async fn add_node(&mut self, join_via: Option<usize>) -> usize {
        let id = self.nodes.len() as u64 + 1;
        let dir = self._root.path().join(format!("node-{id}"));
        let membership = match join_via {
            None => Membership::Bootstrap,
            Some(i) => Membership::Join(self.nodes[i].admin_url()),
        };
        let h = start_node(
            id,
            &dir,
            "127.0.0.1:0",
            "127.0.0.1:0",
            membership,
            self.tuning.clone(),
            &Credentials {
                tls: self.tls.clone(),
                tokens: ClusterTokens::default(),
            },
        )
        .await;
        let grpc = h
            .grpc_addr
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string();
        let admin = h.admin_addr.trim_start_matches("http://").to_string();
        self.nodes.push(NodeSlot {
            id,
            dir,
            grpc,
            admin,
            tokens: ClusterTokens::default(),
            handle: Some(h),
        });
        self.nodes.len() - 1
    }

    pub async fn stop(&mut self, i: usize) {
        if let Some(h) = self.nodes[i].handle.take() {
            h.shutdown().await;
        }
    }

    /// Restart a stopped node from its data dir, on its old addresses.
    pub async fn restart(&mut self, i: usize) {
        let s = &self.nodes[i];
        let h = start_node(
            s.id,
            &s.dir,
            &s.grpc,
            &s.admin,
            Membership::Resume,
            self.tuning.clone(),
            &Credentials {
                tls: self.tls.clone(),
                tokens: s.tokens.clone(),
            },
        )
        .await;
        self.nodes[i].handle = Some(h);
    }

    pub fn running(&self) -> impl Iterator<Item = &NodeSlot> {
        self.nodes.iter().filter(|n| n.handle.is_some())
    }

    pub async fn leader(&self) -> usize {
        for _ in 0..200 {
            for (i, n) in self.nodes.iter().enumerate() {
                if let Some(h) = &n.handle {
                    let m = h.control.raft.metrics().borrow().clone();
                    if m.current_leader == Some(n.id) {
                        return i;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader elected");
    }

    pub fn follower(&self, leader: usize) -> usize {
        (0..self.nodes.len())
            .find(|i| *i != leader && self.nodes[*i].handle.is_some())
            .expect("a running follower")
    }

    pub async fn wait_for_voters(&self, n: usize) {
        for _ in 0..200 {
            let i = self.leader().await;
            let m = self.nodes[i]
                .handle()
                .control
                .raft
                .metrics()
                .borrow()
                .clone();
            if m.membership_config.membership().voter_ids().count() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("cluster did not reach {n} voters");
    }

    /// Fault every connection between node `i` and its running peers:
    /// `Fault::Partitioned` cuts it off (connects time out, connections open
    /// across the cut stay dead), `Fault::Frozen` stops every byte until
    /// healed, as a SIGSTOPped process would (its own timers run on: one
    /// process cannot stop a part of itself). `None` heals. Clients still
    /// reach its admin port.
    pub fn set_fault(&self, i: usize, fault: Option<Fault>) {
        let target = self.nodes[i].handle();
        for (j, n) in self.nodes.iter().enumerate() {
            let Some(h) = n.handle.as_ref().filter(|_| j != i) else {
                continue;
            };
            h.control.channels.faults().set(&target.grpc_addr, fault);
            target.control.channels.faults().set(&h.grpc_addr, fault);
        }
    }
}

/// A small admin REST client that returns (status, JSON body).
#[derive(Clone)]
pub struct Admin {
    pub base: String,
    pub token: Option<String>,
    http: reqwest::Client,
}

impl Admin {
    /// Issue a key of tenant `acme` on `plan`: (key id, key value).
    #[allow(dead_code)] // not every test binary issues keys
    pub async fn issue_key(&self, plan: &str) -> (String, String) {
        let (s, v) = self
            .post(
                "/v1/keys",
                serde_json::json!({"tenant": "acme", "plans": [plan]}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        (
            v["id"].as_str().unwrap().into(),
            v["value"].as_str().unwrap().into(),
        )
    }

    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            token: Some(ADMIN_TOKEN.to_string()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        }
    }

    pub fn with_token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(str::to_string);
        self
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PUT", path, Some(body)).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call("DELETE", path, None).await
    }

    /// PUT that must succeed; returns the revision.
    pub async fn must_put(&self, path: &str, body: Value) -> u64 {
        let (s, v) = self.put(path, body).await;
        assert_eq!(s, 200, "PUT {path}: {v}");
        v["revision"].as_u64().expect("revision")
    }
}

pub fn api_doc(id: &str, base_path: &str, upstream: &str) -> Value {
    serde_json::json!({
        "id": id,
        "base_path": base_path,
        "upstream": {"targets": [{"url": upstream}]},
        "routes": [{"id": "all", "path": "/{rest+}"}, {"id": "root", "path": "/"}]
    })
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Held while a test drives the control plane's price clock
/// (`set_price_day_for_tests`), which every cluster in this process shares.
pub async fn price_clock() -> tokio::sync::MutexGuard<'static, ()> {
    static CLOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    CLOCK.lock().await
}
