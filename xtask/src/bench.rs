//! Benchmarks that print figures; nothing here asserts a time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

pub(crate) const ADMIN_TOKEN: &str = "bench-admin-token";
pub(crate) const CLUSTER_TOKEN: &str = "bench-cluster-token";

/// The multi-threaded runtime every bench drives its load from.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

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

fn node_command(bin: &Path, id: u64, dir: &Path, grpc: &str, admin: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args([
        "control-plane",
        "--node-id",
        &id.to_string(),
        "--grpc-addr",
        grpc,
        "--admin-addr",
        admin,
    ])
    .arg("--data-dir")
    .arg(dir.join(format!("node-{id}")))
    .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
    .env("TOLLGATE_CLUSTER_TOKEN", CLUSTER_TOKEN);
    node_log(&mut cmd, &format!("node-{id}"));
    cmd
}

/// A bench process's log: none, or with `TOLLGATE_BENCH_LOGS=dir` its
/// output appended to `dir/{name}.log` at `RUST_LOG` (default info), to
/// find out afterwards what an outlier was waiting for.
pub(crate) fn node_log(cmd: &mut Command, name: &str) {
    let file = std::env::var_os("TOLLGATE_BENCH_LOGS").and_then(|dir| {
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(Path::new(&dir).join(format!("{name}.log")))
            .ok()
    });
    match file {
        Some(f) => {
            let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
            let out = f.try_clone().map_or(Stdio::null(), Stdio::from);
            cmd.env("RUST_LOG", level).stdout(out).stderr(f)
        }
        None => cmd
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    };
}

pub(crate) fn spawn(bin: &Path, id: u64, dir: &Path, join: Option<&str>) -> anyhow::Result<Node> {
    let (grpc, admin) = (free_addr()?, free_addr()?);
    let mut cmd = node_command(bin, id, dir, &grpc, &admin);
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

/// Start `node` again from its data dir, on its old addresses.
fn respawn(bin: &Path, dir: &Path, node: &Node) -> anyhow::Result<Node> {
    let (grpc, admin) = (
        node.grpc.trim_start_matches("http://"),
        node.admin.trim_start_matches("http://"),
    );
    Ok(Node {
        id: node.id,
        admin: node.admin.clone(),
        grpc: node.grpc.clone(),
        child: node_command(bin, node.id, dir, grpc, admin).spawn()?,
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
    crate::bench::runtime()?.block_on(async move {
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
        anyhow::ensure!(put(client.clone(), format!("{leader_admin}/v1/tenants/bench"), json!({"name": "t"})).await, "setup failed");
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
            put(c.clone(), format!("{follower}/v1/tenants/f-{cl}-{i}"), json!({"name": "t"}))
        })
        .await
        .print("writes via a follower, 32 clients");

        failover(&bin, dir.path(), &client, &mut nodes).await
    })
}

/// Leader SIGKILLs, then as many SIGSTOPs, per distribution.
const FAILOVER_ROUNDS: usize = 20;

/// Failover as a distribution: each round signals the leader (the one a
/// majority follows) and times until a write through a surviving node is
/// acknowledged; then the node comes back (restarted, or SIGCONT) and reads
/// that write before the next round.
async fn failover(
    bin: &Path,
    dir: &Path,
    client: &reqwest::Client,
    nodes: &mut [Node],
) -> anyhow::Result<()> {
    for signal in ["KILL", "STOP"] {
        let mut times = Vec::new();
        for round in 0..FAILOVER_ROUNDS {
            let leader = agreed_leader(client, nodes).await?;
            let i = nodes
                .iter()
                .position(|n| n.id == leader)
                .expect("the leader is a node");
            let survivor = nodes
                .iter()
                .find(|n| n.id != leader)
                .expect("3 nodes")
                .admin
                .clone();
            let id = format!("failover-{}-{round}", signal.to_lowercase());
            let pid = nodes[i].child.id().to_string();
            let t = Instant::now();
            anyhow::ensure!(
                Command::new("kill")
                    .args([&format!("-{signal}"), &pid])
                    .status()?
                    .success(),
                "kill -{signal}"
            );
            acked_write(client, &survivor, &id).await?;
            if t.elapsed() > Duration::from_secs(2) {
                eprintln!(
                    "round {round} (SIG{signal} to node {leader}, write via {survivor}): {:?}, from {}",
                    t.elapsed(),
                    humantime_utc(t.elapsed())
                );
            }
            times.push(t.elapsed());
            if signal == "KILL" {
                nodes[i].child.wait()?;
                nodes[i] = respawn(bin, dir, &nodes[i])?;
            } else {
                anyhow::ensure!(
                    Command::new("kill")
                        .args(["-CONT", &pid])
                        .status()?
                        .success(),
                    "kill -CONT"
                );
            }
            acked_read(client, &nodes[i].admin, &id).await?;
        }
        times.sort();
        let ms = |p: f64| percentile(&times, p).as_secs_f64() * 1e3;
        println!(
            "leader failover, SIG{signal:<4} to next acknowledged write via a follower: p50 {:>5.0} ms   p90 {:>5.0} ms   p99 {:>5.0} ms   max {:>5.0} ms   ({} rounds)",
            ms(0.5), ms(0.9), ms(0.99), ms(1.0), times.len()
        );
    }
    Ok(())
}

/// The UTC wall-clock time `ago` before now (to find a round in the logs).
fn humantime_utc(ago: Duration) -> String {
    let at = std::time::SystemTime::now() - ago;
    let d = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let s = d.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03} UTC",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
}

/// The leader a majority of the nodes name.
async fn agreed_leader(client: &reqwest::Client, nodes: &[Node]) -> anyhow::Result<u64> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        let mut named = Vec::new();
        for n in nodes {
            named.extend(leader_of(client, &n.admin).await);
        }
        if let Some(l) = named
            .iter()
            .find(|l| named.iter().filter(|m| m == l).count() * 2 > nodes.len())
        {
            return Ok(*l);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("no leader agreed on within 30 s")
}

/// PUT a tenant through `admin` until acknowledged (503s are asked again).
async fn acked_write(client: &reqwest::Client, admin: &str, id: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        let sent = client
            .put(format!("{admin}/v1/tenants/{id}"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": id}))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if matches!(sent, Ok(r) if r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    anyhow::bail!("no write acknowledged within 30 s of the failure")
}

/// Wait until a linearizable read of the tenant on `admin` finds it.
async fn acked_read(client: &reqwest::Client, admin: &str, id: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        let got = client
            .get(format!("{admin}/v1/tenants/{id}"))
            .bearer_auth(ADMIN_TOKEN)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if matches!(got, Ok(r) if r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("{admin} did not serve {id} within 30 s of coming back")
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
