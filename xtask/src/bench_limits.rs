//! `cargo xtask bench limits`: how exactly a plan's throttle and quota hold
//! across 3 and 5 data planes (real processes, 3-node control plane).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::bench::{release_binary, spawn, wait_ready, Node, ADMIN_TOKEN};
use crate::bench_proxy::{data_plane, put, Proc};

async fn issue(client: &reqwest::Client, admin: &str, plan: &str) -> anyhow::Result<String> {
    let r = client
        .post(format!("{admin}/v1/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"tenant": "bench", "plans": [plan]}))
        .send()
        .await?;
    let v: serde_json::Value = r.json().await?;
    Ok(v["value"].as_str().unwrap_or_default().to_string())
}

/// Paced load: `rps[i]` requests per second to data plane `i`.
async fn drive(
    client: &reqwest::Client,
    dps: &[String],
    key: &str,
    rps: &[f64],
    seconds: f64,
) -> (usize, usize) {
    let ok = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (dp, &rate) in dps.iter().zip(rps) {
        let (client, url, key, ok, refused) = (
            client.clone(),
            format!("http://{dp}/limited/x"),
            key.to_string(),
            ok.clone(),
            refused.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut inflight = Vec::new();
            for i in 0..(rate * seconds) as u64 {
                tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
                let req = client.get(&url).header("x-api-key", &key);
                let (ok, refused) = (ok.clone(), refused.clone());
                inflight.push(tokio::spawn(async move {
                    match req.send().await.map(|r| r.status().as_u16()) {
                        Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => refused.fetch_add(1, Ordering::Relaxed),
                    };
                }));
            }
            for t in inflight {
                let _ = t.await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (ok.load(Ordering::Relaxed), refused.load(Ordering::Relaxed))
}

pub fn run(seconds: f64) -> anyhow::Result<()> {
    let bin = release_binary()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let dir = tempfile::tempdir()?;
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
        let mut nodes: Vec<Node> = vec![spawn(&bin, 1, dir.path(), None)?];
        wait_ready(&client, &nodes[0].admin).await?;
        let first = nodes[0].admin.clone();
        for id in 2..=3 {
            nodes.push(spawn(&bin, id, dir.path(), Some(&first))?);
        }
        for n in &nodes {
            wait_ready(&client, &n.admin).await?;
        }
        let echo = crate::bench::free_addr()?;
        let _echo = Proc(std::process::Command::new(&bin).args(["echo", "--listen", &echo]).spawn()?);
        put(&client, format!("{first}/v1/tenants/bench"), json!({})).await?;
        put(&client, format!("{first}/v1/apis/limited"), json!({
            "base_path": "/limited", "auth": {"api_key": true},
            "upstream": {"targets": [{"url": format!("http://{echo}")}]},
            "routes": [{"id": "all", "path": "/{rest+}"}]})).await?;
        let (rate, burst) = (200.0, 50.0);
        put(&client, format!("{first}/v1/usage-plans/rate"), json!({"apis": ["limited"], "throttle": {"rate": rate, "burst": burst as u32}})).await?;
        put(&client, format!("{first}/v1/usage-plans/quota"), json!({"apis": ["limited"], "quota": {"limit": 1000, "period": "day"}})).await?;
        let grpc: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
        println!("3-node control plane; throttle rate {rate}/s burst {burst}, driven at 3x for {seconds} s; quota 1000/day driven hard");
        for n in [3usize, 5] {
            let mut dps: Vec<(Proc, String, String)> = Vec::new();
            for _ in 0..n {
                dps.push(data_plane(&bin, &grpc.join(","), "off")?);
            }
            let addrs: Vec<String> = dps.iter().map(|(_, l, _)| l.clone()).collect();
            for (name, weights) in [("even", vec![1.0; n]), ("90/5/5…", {
                let mut w = vec![0.1 / (n - 1) as f64; n];
                w[0] = 0.9;
                w
            })] {
                let key = issue(&client, &first, "rate").await?;
                // Until every data plane has the key.
                for a in &addrs {
                    let t = Instant::now();
                    while !matches!(client.get(format!("http://{a}/limited/warm")).header("x-api-key", &key).send().await, Ok(r) if r.status() == 200) {
                        anyhow::ensure!(t.elapsed() < Duration::from_secs(20), "key never in force on {a}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(600)).await;
                let total: f64 = weights.iter().sum();
                let rps: Vec<f64> = weights.iter().map(|w| 3.0 * rate * w / total).collect();
                let (ok, refused) = drive(&client, &addrs, &key, &rps, seconds).await;
                let expected = rate * seconds + burst;
                println!(
                    "throttle, {n} data planes, {name:<8} admitted {ok:>6}  expected {expected:>6.0}  error {:+5.1}%  (refused {refused})",
                    (ok as f64 / expected - 1.0) * 100.0
                );
            }
            let key = issue(&client, &first, "quota").await?;
            let hammer = addrs.iter().map(|a| {
                let (client, url, key) = (client.clone(), format!("http://{a}/limited/x"), key.clone());
                async move {
                    let (mut ok, mut refused_in_a_row) = (0usize, 0);
                    while refused_in_a_row < 30 {
                        match client.get(&url).header("x-api-key", &key).send().await.map(|r| r.status().as_u16()) {
                            Ok(200) => { ok += 1; refused_in_a_row = 0; }
                            _ => { refused_in_a_row += 1; tokio::time::sleep(Duration::from_millis(20)).await; }
                        }
                    }
                    ok
                }
            });
            let admitted: usize = futures::future::join_all(hammer).await.into_iter().sum();
            println!("quota 1000/day, {n} data planes: admitted {admitted} (never above 1000)");
        }
        Ok(())
    })
}
