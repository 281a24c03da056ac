//! `cargo xtask bench websocket`: WebSocket APIs on real processes (a
//! 3-node control plane, two data planes, `tollgate echo` as the
//! integration).
//!
//! - Memory per idle connection: the data plane's resident set before and
//!   after `--idle` connections are open on it, divided by their number.
//! - Messages/s: closed-loop clients (each sends its next message when the
//!   last is answered) through a mock route and through an HTTP
//!   integration whose answer comes back as the route response.
//! - Connections-API delivery latency: `POST /v1/connections/{id}` on the
//!   one node no data plane streams from, to a client on either data
//!   plane, timed from the call to the client's receipt.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::bench::{percentile, release_binary, three_nodes, ADMIN_TOKEN};
use crate::bench_apis::put;
use crate::bench_proxy::{data_plane, Proc};

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Options {
    pub seconds: u64,
    pub idle: usize,
    pub clients: usize,
    pub pushes: usize,
}

/// The API every phase uses: `$default` a mock, `echo` an HTTP
/// integration whose answer is the route response.
fn api(echo: &str) -> serde_json::Value {
    json!({
        "protocol": "websocket", "base_path": "/ws",
        "upstream": {"targets": [{"url": format!("http://{echo}")}]},
        "routes": [
            {"id": "echo", "key": "echo", "path": "/echo", "response": true},
            {"id": "default", "key": "$default", "mock": {"body": "pong"}}
        ]
    })
}

async fn connect(addr: &str) -> anyhow::Result<(Client, String)> {
    let (ws, res) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await?;
    let id = res
        .headers()
        .get("x-tollgate-connection-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((ws, id))
}

/// Resident set of process `pid`, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}

async fn idle_memory(dp: &Proc, addr: &str, n: usize) -> anyhow::Result<()> {
    // A few connections first, so one-off allocations are not counted.
    let mut open = Vec::with_capacity(n);
    for _ in 0..16 {
        open.push(connect(addr).await?.0);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(dp.0.id())?;
    let mut pending = futures::stream::iter((0..n).map(|_| connect(addr))).buffer_unordered(64);
    while let Some(c) = pending.next().await {
        open.push(c?.0);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(dp.0.id())?;
    println!(
        "idle connections: {n} open on one data plane: RSS {before} KiB → {after} KiB, {:.1} KiB per connection",
        (after.saturating_sub(before)) as f64 / n as f64
    );
    for mut ws in open {
        let _ = ws.close(None).await;
    }
    Ok(())
}

/// Closed-loop messages for `seconds`: answered messages per second and
/// the round trip's p50/p99.
async fn messages(addr: &str, clients: usize, seconds: u64, body: &str) -> anyhow::Result<()> {
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (mut ws, _) = connect(addr).await?;
        let (done, body) = (done.clone(), body.to_string());
        tasks.push(tokio::spawn(async move {
            let mut rtts = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                if ws.send(Message::text(body.clone())).await.is_err() {
                    break;
                }
                match ws.next().await {
                    Some(Ok(Message::Text(_))) => {
                        rtts.push(t.elapsed());
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
            let _ = ws.close(None).await;
            rtts
        }));
    }
    let started = Instant::now();
    let mut rtts = Vec::new();
    for t in tasks {
        rtts.extend(t.await?);
    }
    rtts.sort();
    let n = done.load(Ordering::Relaxed);
    println!(
        "  {:>9.0} messages/s  p50 {:.2} ms  p99 {:.2} ms  ({clients} clients, {n} round trips)",
        n as f64 / started.elapsed().as_secs_f64(),
        percentile(&rtts, 0.5).as_secs_f64() * 1e3,
        percentile(&rtts, 0.99).as_secs_f64() * 1e3,
    );
    Ok(())
}

/// Pushes through `admin` to a client on each data plane in turn.
async fn delivery(admin: &str, dps: &[String], pushes: usize) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let mut clients = Vec::new();
    for dp in dps {
        clients.push(connect(dp).await?);
    }
    let mut latencies = Vec::with_capacity(pushes);
    for i in 0..pushes {
        let (ws, id) = &mut clients[i % dps.len()];
        let t = Instant::now();
        let r = http
            .post(format!("{admin}/v1/connections/{id}"))
            .bearer_auth(ADMIN_TOKEN)
            .body(format!("push {i}"))
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 204, "push answered {}", r.status());
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => latencies.push(t.elapsed()),
            other => anyhow::bail!("the push did not arrive: {other:?}"),
        }
    }
    latencies.sort();
    println!(
        "connections API, {pushes} pushes via a node no data plane streams from, alternating 2 data planes: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    Ok(())
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let bin = release_binary()?;
    crate::bench::runtime()?.block_on(async move {
        let dir = tempfile::tempdir()?;
        let client = reqwest::Client::new();
        let nodes = three_nodes(&bin, dir.path(), &client).await?;
        let first = nodes[0].admin.clone();
        let echo = crate::bench::free_addr()?;
        let _echo = Proc(
            std::process::Command::new(&bin)
                .args(["echo", "--listen", &echo])
                .spawn()?,
        );
        put(&client, format!("{first}/v1/apis/ws"), api(&echo)).await?;
        // Data plane i streams from node i; node 3 holds no stream.
        let (dp1, addr1, _) = data_plane(&bin, &nodes[0].grpc, "off")?;
        let (_dp2, addr2, _) = data_plane(&bin, &nodes[1].grpc, "off")?;
        for addr in [&addr1, &addr2] {
            let t = Instant::now();
            while connect(addr).await.is_err() {
                anyhow::ensure!(
                    t.elapsed() < Duration::from_secs(20),
                    "{addr} never served the API"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        idle_memory(&dp1, &addr1, opts.idle).await?;
        println!("messages through a mock route:");
        messages(&addr1, opts.clients, opts.seconds, "ping").await?;
        println!(
            "messages through an HTTP integration (tollgate echo), answer as the route response:"
        );
        messages(&addr1, opts.clients, opts.seconds, r#"{"action":"echo"}"#).await?;
        delivery(&nodes[2].admin, &[addr1, addr2], opts.pushes).await?;
        Ok(())
    })
}
