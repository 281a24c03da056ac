//! `cargo xtask bench limits`: how exactly a plan's throttle and quota hold
//! across 3 and 5 data planes (real processes, 3-node control plane).
//!
//! The throttle is tried as a user would: closed-loop connections (each
//! sends its next request as soon as the last is answered), spread evenly
//! or skewed 9/1/1…, for `seconds`, on an idle host and beside a CPU hog
//! (one busy process per core). Each run takes a fresh key; the admitted
//! count is compared with `rate × seconds + burst`.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::bench::{percentile, release_binary, three_nodes, ADMIN_TOKEN};
use crate::bench_apis::put;
use crate::bench_proxy::{data_plane, Proc};

const RATE: f64 = 200.0;
const BURST: f64 = 200.0;

pub struct Options {
    pub seconds: f64,
    pub runs: usize,
    pub data_planes: Vec<usize>,
    /// Run the busy-host cases (and the idle ones unless `busy_only`).
    pub busy: bool,
    pub busy_only: bool,
}

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

/// Closed-loop load: `connections[i]` connections to data plane `i`, each
/// with its own client (its own TCP connection). Counts the requests sent
/// before the deadline that were admitted.
async fn drive(dps: &[String], key: &str, connections: &[usize], seconds: f64) -> (usize, usize) {
    let ok = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for (dp, &n) in dps.iter().zip(connections) {
        for _ in 0..n {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let (url, key, ok, refused) = (
                format!("http://{dp}/limited/x"),
                key.to_string(),
                ok.clone(),
                refused.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let status = client
                        .get(&url)
                        .header("x-api-key", &key)
                        .send()
                        .await
                        .map(|r| r.status().as_u16());
                    match status {
                        Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => refused.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    (ok.load(Ordering::Relaxed), refused.load(Ordering::Relaxed))
}

/// One busy process per core while alive.
struct CpuHog {
    _procs: Vec<Proc>,
}

impl CpuHog {
    fn start() -> anyhow::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut procs = Vec::new();
        for _ in 0..cores {
            let child = Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdout(Stdio::null())
                .spawn()?;
            procs.push(Proc(child));
        }
        Ok(Self { _procs: procs })
    }
}

/// Until `key` is admitted on every data plane; then long enough for the
/// bucket to refill what the probes took.
async fn wait_in_force(
    client: &reqwest::Client,
    addrs: &[String],
    key: &str,
) -> anyhow::Result<()> {
    for a in addrs {
        let t = Instant::now();
        while !matches!(client.get(format!("http://{a}/limited/warm")).header("x-api-key", key).send().await, Ok(r) if r.status() == 200)
        {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(20),
                "key never in force on {a}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // The probes took a few tokens and made the key known (so its demand
    // is reported); a fresh bucket is full again after burst / rate.
    tokio::time::sleep(Duration::from_secs_f64(BURST / RATE + 0.5)).await;
    Ok(())
}

fn summary(label: &str, errors: &mut [f64]) {
    errors.sort_by(|a, b| a.total_cmp(b));
    let within = errors.iter().filter(|e| e.abs() <= 5.0).count();
    println!(
        "{label:<34} runs {:>2}  min {:+5.1}%  median {:+5.1}%  max {:+5.1}%  within ±5%: {within}/{}",
        errors.len(),
        errors.first().copied().unwrap_or_default(),
        percentile(errors, 0.5),
        errors.last().copied().unwrap_or_default(),
        errors.len()
    );
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let bin = release_binary()?;
    crate::bench::runtime()?.block_on(async move {
        let dir = tempfile::tempdir()?;
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
        let nodes = three_nodes(&bin, dir.path(), &client).await?;
        let first = nodes[0].admin.clone();
        let echo = crate::bench::free_addr()?;
        let _echo = Proc(Command::new(&bin).args(["echo", "--listen", &echo]).spawn()?);
        put(&client, format!("{first}/v1/tenants/bench"), json!({"name": "t"})).await?;
        put(&client, format!("{first}/v1/apis/limited"), json!({
            "base_path": "/limited", "auth": {"api_key": true},
            "upstream": {"targets": [{"url": format!("http://{echo}")}]},
            "routes": [{"id": "all", "path": "/{rest+}"}]})).await?;
        put(&client, format!("{first}/v1/usage-plans/rate"), json!({"apis": ["limited"], "throttle": {"rate": RATE, "burst": BURST as u32}})).await?;
        put(&client, format!("{first}/v1/usage-plans/quota"), json!({"apis": ["limited"], "quota": {"limit": 1000, "period": "day"}})).await?;
        anyhow::ensure!(opts.data_planes.iter().all(|&n| n >= 2), "--data-planes: at least 2 each");
        let grpc: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
        println!(
            "3-node control plane; throttle {RATE}/s burst {BURST}; {} s of closed-loop load per run, a fresh key each run; error = admitted / (rate × seconds + burst) − 1",
            opts.seconds
        );
        let hosts: Vec<bool> = match (opts.busy, opts.busy_only) {
            (_, true) => vec![true],
            (true, false) => vec![false, true],
            (false, false) => vec![false],
        };
        let mut table = Vec::new();
        for &n in &opts.data_planes {
            let mut dps: Vec<(Proc, String, String)> = Vec::new();
            for _ in 0..n {
                dps.push(data_plane(&bin, &grpc.join(","), "off")?);
            }
            let addrs: Vec<String> = dps.iter().map(|(_, l, _)| l.clone()).collect();
            let skew = format!("9/{}", vec!["1"; n - 1].join("/"));
            for &busy in &hosts {
                let _hog = if busy { Some(CpuHog::start()?) } else { None };
                let host = if busy { "busy" } else { "idle" };
                for (load, connections) in [("even", vec![3; n]), (skew.as_str(), {
                    let mut c = vec![1; n];
                    c[0] = 9;
                    c
                })] {
                    let mut errors = Vec::new();
                    for run in 1..=opts.runs {
                        let key = issue(&client, &first, "rate").await?;
                        wait_in_force(&client, &addrs, &key).await?;
                        let (ok, refused) = drive(&addrs, &key, &connections, opts.seconds).await;
                        let expected = RATE * opts.seconds + BURST;
                        let error = (ok as f64 / expected - 1.0) * 100.0;
                        println!(
                            "  {n} data planes, {load:<9} {host} host, run {run:>2}: admitted {ok:>5} of {expected:.0}  error {error:+5.1}%  (refused {refused})"
                        );
                        errors.push(error);
                    }
                    table.push((format!("{n} data planes, {load}, {host} host"), errors));
                }
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
        println!();
        for (label, errors) in &mut table {
            summary(label, errors);
        }
        Ok(())
    })
}
