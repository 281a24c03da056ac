//! Benchmarks that print figures; nothing here asserts a time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

pub(crate) const ADMIN_TOKEN: &str = "bench-admin-token";
pub(crate) const CLUSTER_TOKEN: &str = "bench-cluster-token";

pub(crate) fn free_addr() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

pub(crate) struct Node {
    pub id: u64,
    pub admin: String,
    pub grpc: String,
    pub child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn spawn(bin: &Path, id: u64, dir: &Path, join: Option<&str>) -> anyhow::Result<Node> {
    let (grpc, admin) = (free_addr()?, free_addr()?);
    let mut cmd = Command::new(bin);
    cmd.args([
        "control-plane",
        "--node-id",
        &id.to_string(),
        "--grpc-addr",
        &grpc,
        "--admin-addr",
        &admin,
    ])
    .arg("--data-dir")
    .arg(dir.join(format!("node-{id}")))
    .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
    .env("TOLLGATE_CLUSTER_TOKEN", CLUSTER_TOKEN)
    .env("RUST_LOG", "error")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    match join {
        Some(url) => cmd.args(["--join", url]),
        None => cmd.arg("--bootstrap"),
    };
    Ok(Node {
        id,
        admin: format!("http://{admin}"),
        grpc: format!("http://{grpc}"),
        child: cmd.spawn()?,
    })
}

/// The release `tollgate` binary, built now, or the one named by
/// `TOLLGATE_BENCH_BIN` (to compare two builds in turn).
pub(crate) fn release_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("TOLLGATE_BENCH_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--bin", "tollgate"])
        .status()?;
    anyhow::ensure!(status.success(), "release build failed");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    Ok(root.join("target/release/tollgate"))
}

/// The value at fraction `p` of `sorted` (nearest rank); the default
/// (zero) for no values.
pub(crate) fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Figures {
    ops: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Figures {
    fn print(&mut self, name: &str) {
        self.latencies.sort();
        println!(
            "{name:<34} {:>9.0} ops/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} ops)",
            self.ops as f64 / self.elapsed.as_secs_f64(),
            percentile(&self.latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&self.latencies, 0.99).as_secs_f64() * 1e3,
            self.ops
        );
    }
}

/// Run `clients` loops of `op` against the nodes for `seconds`.
async fn load<F, Fut>(clients: usize, seconds: u64, op: F) -> Figures
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (op, stop) = (op.clone(), stop.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if op(c, i).await {
                        lat.push(t.elapsed());
                    }
                    i += 1;
                }
                lat
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap_or_default());
    }
    Figures {
        ops: latencies.len(),
        elapsed: started.elapsed(),
        latencies,
    }
}

async fn leader_of(client: &reqwest::Client, admin: &str) -> Option<u64> {
    let r = client
        .get(format!("{admin}/v1/cluster"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .ok()?;
    r.json::<serde_json::Value>().await.ok()?["leader_id"].as_u64()
}

/// A 3-node control plane under `dir`: node 1 bootstraps, the others
/// join it; every admin port answers before this returns.
pub(crate) async fn three_nodes(
    bin: &Path,
    dir: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<Vec<Node>> {
    let mut nodes = vec![spawn(bin, 1, dir, None)?];
    wait_ready(client, &nodes[0].admin).await?;
    let first = nodes[0].admin.clone();
    for id in 2..=3 {
        nodes.push(spawn(bin, id, dir, Some(&first))?);
    }
    for n in &nodes {
        wait_ready(client, &n.admin).await?;
    }
    Ok(nodes)
}

pub fn control_plane(seconds: u64) -> anyhow::Result<()> {
    let bin = release_binary()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let dir = tempfile::tempdir()?;
        let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
        let mut nodes = three_nodes(&bin, dir.path(), &client).await?;
        let first = nodes[0].admin.clone();
        let put = |c: reqwest::Client, url: String, body: serde_json::Value| async move {
            matches!(c.put(url).bearer_auth(ADMIN_TOKEN).json(&body).send().await, Ok(r) if r.status().is_success())
        };
        let post = |c: reqwest::Client, url: String, body: serde_json::Value| async move {
            matches!(c.post(url).bearer_auth(ADMIN_TOKEN).json(&body).send().await, Ok(r) if r.status().as_u16() == 201)
        };
        let leader = leader_of(&client, &first).await.unwrap_or(1);
        let leader_admin = nodes.iter().find(|n| n.id == leader).map(|n| n.admin.clone()).unwrap_or(first.clone());
        anyhow::ensure!(put(client.clone(), format!("{leader_admin}/v1/tenants/bench"), json!({})).await, "setup failed");
        println!("3-node control plane, release build, {seconds} s per row, writes sent to the leader");
        for clients in [1usize, 32] {
            let (c, base) = (client.clone(), leader_admin.clone());
            load(clients, seconds, move |cl, i| {
                let url = format!("{base}/v1/apis/api-{cl}-{i}");
                let body = json!({"base_path": format!("/b{cl}-{i}"), "upstream": {"targets": [{"url": "http://127.0.0.1:9"}]},
                                  "routes": [{"id": "r", "path": "/{rest+}"}]});
                put(c.clone(), url, body)
            })
            .await
            .print(&format!("API writes, {clients} client(s)"));
            let (c, base) = (client.clone(), leader_admin.clone());
            load(clients, seconds, move |_, _| post(c.clone(), format!("{base}/v1/keys"), json!({"tenant": "bench"})))
                .await
                .print(&format!("key issuance, {clients} client(s)"));
        }
        let (c, follower) = (
            client.clone(),
            nodes.iter().find(|n| n.id != leader).map(|n| n.admin.clone()).unwrap_or(first.clone()),
        );
        load(32, seconds, move |cl, i| {
            put(c.clone(), format!("{follower}/v1/tenants/f-{cl}-{i}"), json!({}))
        })
        .await
        .print("writes via a follower, 32 clients");

        // Failover: SIGKILL the leader, time until a write succeeds again.
        let idx = nodes.iter().position(|n| n.id == leader).unwrap_or(0);
        let mut killed = nodes.remove(idx);
        let survivor = nodes[0].admin.clone();
        killed.child.kill()?;
        let t = Instant::now();
        let mut n = 0;
        loop {
            n += 1;
            if put(client.clone(), format!("{survivor}/v1/tenants/after-failover-{n}"), json!({})).await {
                break;
            }
            anyhow::ensure!(t.elapsed() < Duration::from_secs(30), "no failover within 30 s");
        }
        println!("leader failover (SIGKILL to next acknowledged write): {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
        Ok(())
    })
}

pub(crate) async fn wait_ready(client: &reqwest::Client, admin: &str) -> anyhow::Result<()> {
    for _ in 0..400 {
        if let Ok(r) = client.get(format!("{admin}/readyz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{admin} never became ready")
}
