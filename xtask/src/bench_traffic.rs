//! `cargo xtask bench traffic`: `GET /v1/traffic` on real processes (a
//! 3-node control plane, one data plane streaming from each node, 100 mock
//! APIs), the measure issue 23 sets: under 50 ms.
//!
//! Every API is called through every data plane for `--seconds`, so each
//! node holds windows of its own data plane for all 100 APIs; then each
//! node's `GET /v1/traffic?window=15m` (its own windows and both peers',
//! merged) is timed `--reads` times. 15 minutes of load fill every window
//! (the worst case); a shorter run fills `seconds / 10` of the 90.

use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::bench::{percentile, release_binary, three_nodes, ADMIN_TOKEN};
use crate::bench_apis::{mock_api, put};
use crate::bench_proxy::{data_plane, wait_status};

const APIS: usize = 100;

pub struct Options {
    pub seconds: u64,
    pub reads: usize,
}

/// Every API through every data plane, round after round, until `seconds`
/// have passed; returns the requests answered.
async fn load(client: &reqwest::Client, dps: &[String], seconds: u64) -> usize {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut answered = 0;
    while Instant::now() < deadline {
        let urls: Vec<String> = dps
            .iter()
            .flat_map(|dp| (0..APIS).map(move |i| format!("http://{dp}/t-{i}")))
            .collect();
        answered += futures::stream::iter(urls)
            .map(|url| async move { client.get(url).send().await.is_ok() })
            .buffer_unordered(32)
            .filter(|ok| futures::future::ready(*ok))
            .count()
            .await;
    }
    answered
}

/// One read of `url`: the requests it counts over every API, and how long
/// the answer took (to its last byte).
async fn counted(client: &reqwest::Client, url: &str) -> anyhow::Result<(u64, Duration)> {
    let t = Instant::now();
    let r = client.get(url).bearer_auth(ADMIN_TOKEN).send().await?;
    anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
    let body = r.bytes().await?;
    // Timed to the last byte: parsing ~1 MB of JSON in this (debug) tool
    // is the client's cost, not the answer's.
    let took = t.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let n = v["apis"].as_object().map_or(0, |a| {
        a.values().filter_map(|x| x["requests"].as_u64()).sum()
    });
    Ok((n, took))
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let bin = release_binary()?;
    crate::bench::runtime()?.block_on(async move {
        let dir = tempfile::tempdir()?;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?;
        let nodes = three_nodes(&bin, dir.path(), &client).await?;
        let first = nodes[0].admin.clone();
        for i in 0..APIS {
            let id = format!("t-{i}");
            put(&client, format!("{first}/v1/apis/{id}"), mock_api(&id)).await?;
        }
        // Data plane i streams from, and reports to, node i.
        let mut procs = Vec::new();
        let mut dps = Vec::new();
        for n in &nodes {
            let (p, listen, _) = data_plane(&bin, &n.grpc, "off")?;
            procs.push(p);
            dps.push(listen);
        }
        for dp in &dps {
            wait_status(&client, &format!("http://{dp}/t-{}", APIS - 1), 200).await?;
        }
        let answered = load(&client, &dps, opts.seconds).await;
        // Until the last reports are in (the warm-up requests count too).
        let url = format!("{}/v1/traffic?window=15m", nodes[2].admin);
        let t = Instant::now();
        while counted(&client, &url).await?.0 < answered as u64 {
            anyhow::ensure!(t.elapsed() < Duration::from_secs(30), "{url} never counted {answered}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            "traffic: {answered} requests to {APIS} APIs through {} data planes over {} s",
            dps.len(),
            opts.seconds
        );
        for (i, n) in nodes.iter().enumerate() {
            let url = format!("{}/v1/traffic?window=15m", n.admin);
            let mut took = Vec::with_capacity(opts.reads);
            let mut total = 0;
            for _ in 0..opts.reads {
                let (n, t) = counted(&client, &url).await?;
                took.push(t);
                total = n;
            }
            took.sort();
            println!(
                "  GET /v1/traffic?window=15m on node {}: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} reads; {total} requests counted){}",
                i + 1,
                percentile(&took, 0.5).as_secs_f64() * 1e3,
                percentile(&took, 0.99).as_secs_f64() * 1e3,
                took.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
                opts.reads,
                if percentile(&took, 0.99) < Duration::from_millis(50) {
                    ""
                } else {
                    "  OVER 50 ms"
                },
            );
        }
        drop(procs);
        Ok(())
    })
}
