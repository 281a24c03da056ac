//! `cargo xtask bench proxy`: the proxy under wrk, side by side with the
//! upstream alone and nginx as a plain reverse proxy; config propagation to
//! three data planes; and one change on top of 10,000 APIs.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::bench::{free_addr, percentile, release_binary, spawn, wait_ready, Node, CLUSTER_TOKEN};
use crate::bench_apis::{
    authorizer_and_function_apis, jwt_api, keyed_api, mock_api, put, rollback_stage, staged_api,
};

pub(crate) struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A data plane process; `access_log` is `off`, `stdout` or a file path.
pub(crate) fn data_plane(
    bin: &Path,
    control_plane: &str,
    access_log: &str,
) -> anyhow::Result<(Proc, String, String)> {
    let (listen, status) = (free_addr()?, free_addr()?);
    let child = Command::new(bin)
        .args([
            "data-plane",
            "--control-plane",
            control_plane,
            "--listen",
            &listen,
        ])
        .args(["--status-addr", &status, "--access-log", access_log])
        .env("TOLLGATE_CLUSTER_TOKEN", CLUSTER_TOKEN)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok((Proc(child), listen, status))
}

struct Wrk {
    rps: f64,
    /// CPU (user + system) the measured process spent per request, in µs.
    cpu_us: f64,
    /// The same for the upstream behind it: what the proxy sends it (the
    /// contract's extra headers, which the upstream reads and echoes) costs
    /// CPU there too, on the same two cores.
    upstream_cpu_us: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Wrk {
    /// Each figure's median over several runs.
    fn median(runs: &[Wrk]) -> Wrk {
        let mid = |f: fn(&Wrk) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            percentile(&v, 0.5)
        };
        Wrk {
            rps: mid(|w| w.rps),
            p50_ms: mid(|w| w.p50_ms),
            p99_ms: mid(|w| w.p99_ms),
            cpu_us: mid(|w| w.cpu_us),
            upstream_cpu_us: mid(|w| w.upstream_cpu_us),
        }
    }
}

/// Tollgate and plain nginx in short runs back to back, `pairs` times,
/// which goes first alternating: the machine's drift over a minute is as
/// large as the difference, and only runs seconds apart share it. Prints
/// the median and quartiles of the pairs' ratios.
fn head_to_head(
    tollgate: (&str, u32),
    nginx: (&str, u32),
    connections: usize,
    pairs: usize,
) -> anyhow::Result<()> {
    const SECONDS: u64 = 2;
    let (mut rps, mut p99) = (Vec::new(), Vec::new());
    for pair in 0..pairs {
        let run = |(url, pid): (&str, u32)| wrk(url, connections, SECONDS, pid);
        let (t, n) = if pair % 2 == 0 {
            let t = run(tollgate)?;
            (t, run(nginx)?)
        } else {
            let n = run(nginx)?;
            (run(tollgate)?, n)
        };
        rps.push(t.rps / n.rps);
        p99.push(t.p99_ms / n.p99_ms);
    }
    let level = rps.iter().filter(|r| **r >= 1.0).count();
    let quartiles = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (percentile(v, 0.25), percentile(v, 0.5), percentile(v, 0.75))
    };
    let (r25, r50, r75) = quartiles(&mut rps);
    let (p25, p50, p75) = quartiles(&mut p99);
    println!(
        "head to head, tollgate/nginx (plain), {pairs} pairs of {SECONDS} s runs back to back: \
         throughput median {r50:.2}x (quartiles {r25:.2}-{r75:.2}, at least level in {level} of {pairs}), \
         p99 median {p50:.2}x (quartiles {p25:.2}-{p75:.2}, lower is better)"
    );
    Ok(())
}

/// wrk's latency figures come as "1.23ms", "456.00us" or "1.01s".
fn parse_ms(s: &str) -> Option<f64> {
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 1e-3)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * mult)
}

/// wrk against `url`, and the CPU the process `pid` spent per request.
fn wrk(url: &str, connections: usize, seconds: u64, pid: u32) -> anyhow::Result<Wrk> {
    wrk_with(url, connections, seconds, &[], (pid, None))
}

/// The same with request headers, and the CPU of the upstream process too
/// (`pids`: the measured one, the upstream's).
fn wrk_with(
    url: &str,
    connections: usize,
    seconds: u64,
    headers: &[&str],
    pids: (u32, Option<u32>),
) -> anyhow::Result<Wrk> {
    let (pid, upstream) = pids;
    let upstream_ticks = || upstream.map_or(0, cpu_ticks);
    let cpu_before = cpu_ticks(pid);
    let upstream_before = upstream_ticks();
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output()?;
    let cpu_ticks_used = cpu_ticks(pid).saturating_sub(cpu_before);
    let upstream_ticks_used = upstream_ticks().saturating_sub(upstream_before);
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
    };
    if text.contains("Non-2xx") {
        anyhow::bail!("wrk saw non-2xx responses from {url}:\n{text}");
    }
    let requests: u64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    // Linux counts 100 ticks a second.
    let per_request = |ticks: u64| ticks as f64 * 10_000.0 / requests.max(1) as f64;
    Ok(Wrk {
        cpu_us: per_request(cpu_ticks_used),
        upstream_cpu_us: per_request(upstream_ticks_used),
        rps: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        p50_ms: field("50%").and_then(|v| parse_ms(&v)).unwrap_or(0.0),
        p99_ms: field("99%").and_then(|v| parse_ms(&v)).unwrap_or(0.0),
    })
}

/// CPU time (user + system, in clock ticks) used so far by a process, its
/// threads and its child processes (nginx's workers). Linux only; 0
/// elsewhere.
fn cpu_ticks(pid: u32) -> u64 {
    let own: u64 = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .map(|stat| {
            // Fields after the command name, which is in parentheses.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            let at = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            at(11) + at(12) // utime, stime
        })
        .sum();
    let children: u64 = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .map(cpu_ticks)
        .sum();
    own + children
}

/// nginx's master process. SIGKILL would orphan its workers, so it is
/// stopped with SIGTERM, which takes the workers down with it.
pub(crate) struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// nginx in front of `upstream`, listening twice: as a plain reverse proxy,
/// and doing the header work Tollgate's contract asks of every request (a
/// request id to the upstream and back to the client, X-Forwarded-Proto and
/// -Host, a `traceparent` of the same length), so the upstream and the wire
/// carry the same bytes as behind Tollgate.
fn start_nginx(dir: &Path, upstream: &str) -> anyhow::Result<Option<(Nginx, String, String)>> {
    if Command::new("nginx").arg("-v").output().is_err() {
        println!("nginx: not installed, skipped (apt-get install nginx)");
        return Ok(None);
    }
    let listen = free_addr()?;
    let listen_headers = free_addr()?;
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            r#"worker_processes auto;
user root root;
pid {dir}/nginx.pid;
error_log {dir}/error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream echo {{ server {upstream}; keepalive 128; }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
    server {{
        listen {listen_headers};
        location / {{
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Request-Id $request_id;
            proxy_set_header traceparent "00-$request_id-00f067aa0ba902b7-01";
            add_header X-Request-Id $request_id always;
        }}
    }}
}}
"#,
            dir = dir.display()
        ),
    )?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Some((Nginx(child), listen, listen_headers)))
}

pub(crate) async fn wait_status(
    client: &reqwest::Client,
    url: &str,
    want: u16,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status().as_u16() == want {
                return Ok(t.elapsed());
            }
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(30),
            "{url} never answered {want}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `--core`: only the plain and the key + plan rows, which every build
/// has, in `rounds` interleaved rounds, and the pair's ratio per round: to
/// compare two builds (`TOLLGATE_BENCH_BIN`) run after run, since the
/// full table's rows drift by ±15 % between runs on this machine.
pub fn run_core(seconds: u64, rounds: u64) -> anyhow::Result<()> {
    let bin = release_binary()?;
    crate::bench::runtime()?.block_on(async move {
        let dir = tempfile::tempdir()?;
        let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
        let echo_addr = free_addr()?;
        let echo = Proc(Command::new(&bin).args(["echo", "--listen", &echo_addr]).stdout(Stdio::null()).spawn()?);
        let nodes: Vec<Node> = vec![spawn(&bin, 1, dir.path(), None)?];
        wait_ready(&client, &nodes[0].admin).await?;
        let admin = nodes[0].admin.clone();
        let (dp, listen, _) = data_plane(&bin, &nodes[0].grpc, "off")?;
        put(&client, format!("{admin}/v1/apis/bench"), json!({
            "base_path": "/", "upstream": {"targets": [{"url": format!("http://{echo_addr}")}]},
            "routes": [{"id": "all", "path": "/{rest+}"}]})).await?;
        wait_status(&client, &format!("http://{listen}/bench/x"), 200).await?;
        let key = keyed_api(&client, &admin, &echo_addr).await?;
        let key_header = format!("x-api-key: {key}");
        wait_status_with_header(&client, &format!("http://{listen}/keyed/x"), ("x-api-key", &key), 200).await?;
        // The request-authorizer row too, when this build's echo answers
        // as an authorizer.
        let authorizes = client
            .post(format!("http://{echo_addr}/authorize"))
            .send()
            .await
            .ok()
            .and_then(|r| r.headers().get("content-type").cloned())
            .is_some()
            && authorizer_and_function_apis(&client, &admin, &echo_addr).await.is_ok()
            && wait_status_with_header(&client, &format!("http://{listen}/authorized/x"), ("x-bench-caller", "bench"), 200).await.is_ok();
        let pids = (dp.0.id(), Some(echo.0.id()));
        let mut rows: Vec<(&str, String, Vec<&str>, Vec<Wrk>)> = vec![
            ("plain", format!("http://{listen}/bench/x"), vec![], vec![]),
            ("key + plan", format!("http://{listen}/keyed/x"), vec![key_header.as_str()], vec![]),
        ];
        if authorizes {
            rows.push(("request authorizer", format!("http://{listen}/authorized/x"), vec!["x-bench-caller: bench"], vec![]));
        }
        // And a stage with a canary beside its API's own path, when the
        // build has stages.
        let stages = staged_api(&client, &admin, &echo_addr).await.is_ok()
            && wait_status(&client, &format!("http://{listen}/staged-prod/x"), 200).await.is_ok();
        if stages {
            rows.push(("stage + 10% canary", format!("http://{listen}/staged-prod/x"), vec![], vec![]));
            rows.push(("stage, no canary", format!("http://{listen}/staged-one/x"), vec![], vec![]));
            rows.push(("that API's own path", format!("http://{listen}/staged/x"), vec![], vec![]));
        }
        for round in 0..rounds {
            let mut order: Vec<usize> = (0..rows.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let (_, url, headers, runs) = &mut rows[i];
                runs.push(wrk_with(url, 64, seconds, headers, pids)?);
            }
        }
        let plain = Wrk::median(&rows[0].3);
        println!("core rows, {rounds} rounds of {seconds} s: plain {:.0} req/s ({:.1} us CPU/req)", plain.rps, plain.cpu_us);
        for (name, _, _, runs) in &rows[1..] {
            let m = Wrk::median(runs);
            let ratios: Vec<String> = rows[0].3.iter().zip(runs).map(|(p, r)| format!("{:.3}", r.rps / p.rps)).collect();
            println!(
                "  {name}: {:.0} req/s ({:.1} us CPU/req); / plain: throughput {:.3} (per round {}), CPU/req {:.3}",
                m.rps, m.cpu_us, m.rps / plain.rps, ratios.join(" "), m.cpu_us / plain.cpu_us
            );
        }
        Ok(())
    })
}

pub fn run(seconds: u64, rounds: u64) -> anyhow::Result<()> {
    let connections = 64;
    anyhow::ensure!(
        Command::new("wrk").arg("-v").output().is_ok(),
        "wrk is not installed (apt-get install wrk)"
    );
    let bin = release_binary()?;
    crate::bench::runtime()?.block_on(async move {
        let dir = tempfile::tempdir()?;
        let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;

        // The upstream.
        let echo_addr = free_addr()?;
        let echo = Proc(
            Command::new(&bin)
                .args(["echo", "--listen", &echo_addr])
                .stdout(Stdio::null())
                .spawn()?,
        );
        // Tollgate: a one-node control plane and one data plane.
        let mut nodes: Vec<Node> = vec![spawn(&bin, 1, dir.path(), None)?];
        wait_ready(&client, &nodes[0].admin).await?;
        let admin = nodes[0].admin.clone();
        let (dp, listen, status) = data_plane(&bin, &nodes[0].grpc, "off")?;
        put(&client, format!("{admin}/v1/apis/bench"), json!({
            "base_path": "/", "upstream": {"targets": [{"url": format!("http://{echo_addr}")}]},
            "routes": [{"id": "all", "path": "/{rest+}"}]})).await?;
        wait_status(&client, &format!("http://{listen}/bench/x"), 200).await?;
        wait_status(&client, &format!("http://{echo_addr}/bench/x"), 200).await?;
        let nginx = start_nginx(dir.path(), &echo_addr)?;
        if let Some((_, l, lh)) = &nginx {
            wait_status(&client, &format!("http://{l}/bench/x"), 200).await?;
            wait_status(&client, &format!("http://{lh}/bench/x"), 200).await?;
        }

        // Every row's routes and processes first, so rows can run in
        // interleaved rounds: throughput on a shared two-core machine drifts
        // by ±15 % over a minute, and interleaving spreads the drift evenly.
        let dp_pid = dp.0.id();
        let echo_pid = echo.0.id();
        let key = keyed_api(&client, &admin, &echo_addr).await?;
        let key_header = format!("x-api-key: {key}");
        wait_status_with_header(&client, &format!("http://{listen}/keyed/x"), ("x-api-key", &key), 200).await?;
        let jwt = jwt_api(&client, &admin, &echo_addr).await?;
        let bearer = format!("authorization: Bearer {jwt}");
        wait_status_with_header(&client, &format!("http://{listen}/jwt/x"), ("authorization", &format!("Bearer {jwt}")), 200).await?;
        authorizer_and_function_apis(&client, &admin, &echo_addr).await?;
        let identity = "x-bench-caller: bench";
        wait_status_with_header(&client, &format!("http://{listen}/authorized/x"), ("x-bench-caller", "bench"), 200).await?;
        wait_status(&client, &format!("http://{listen}/fn/x"), 200).await?;
        staged_api(&client, &admin, &echo_addr).await?;
        wait_status(&client, &format!("http://{listen}/staged-prod/x"), 200).await?;
        let log_path = dir.path().join("access.log");
        let (logging_dp, logging_listen, _) =
            data_plane(&bin, &nodes[0].grpc, &log_path.display().to_string())?;
        wait_status(&client, &format!("http://{logging_listen}/bench/x"), 200).await?;

        struct Row<'a> {
            name: &'static str,
            url: String,
            headers: Vec<&'a str>,
            pid: u32,
            runs: Vec<Wrk>,
        }
        let mut rows = vec![
            Row { name: "upstream directly", url: format!("http://{echo_addr}/bench/x"), headers: vec![], pid: echo_pid, runs: vec![] },
            Row { name: "tollgate -> upstream", url: format!("http://{listen}/bench/x"), headers: vec![], pid: dp_pid, runs: vec![] },
            // An API key and a usage plan: throttle (high enough not to
            // refuse), quota leases and metering on every request.
            Row { name: "tollgate + key + plan", url: format!("http://{listen}/keyed/x"), headers: vec![&key_header], pid: dp_pid, runs: vec![] },
            Row { name: "tollgate + JWT RS256", url: format!("http://{listen}/jwt/x"), headers: vec![&bearer], pid: dp_pid, runs: vec![] },
            // A request authorizer answered from its cache (one call per
            // TTL), and a function route (the Invoke API, served by `tollgate
            // echo`: the event built and the result mapped on every request).
            Row { name: "tollgate + request authorizer", url: format!("http://{listen}/authorized/x"), headers: vec![identity], pid: dp_pid, runs: vec![] },
            Row { name: "tollgate -> function", url: format!("http://{listen}/fn/x"), headers: vec![], pid: dp_pid, runs: vec![] },
            // A stage with a 10 % canary (split per request): the side drawn
            // after authentication, the deployment header on every answer.
            Row { name: "tollgate, stage + 10% canary", url: format!("http://{listen}/staged-prod/x"), headers: vec![], pid: dp_pid, runs: vec![] },
            // The same API at its own path: the stage's cost alone.
            Row { name: "tollgate, that API's own path", url: format!("http://{listen}/staged/x"), headers: vec![], pid: dp_pid, runs: vec![] },
            // A second data plane, writing one JSON line per request to a file.
            Row { name: "tollgate, access log to file", url: format!("http://{logging_listen}/bench/x"), headers: vec![], pid: logging_dp.0.id(), runs: vec![] },
        ];
        if let Some((ng_proc, l, lh)) = &nginx {
            rows.push(Row { name: "nginx -> upstream", url: format!("http://{l}/bench/x"), headers: vec![], pid: ng_proc.0.id(), runs: vec![] });
            rows.push(Row { name: "nginx, same headers", url: format!("http://{lh}/bench/x"), headers: vec![], pid: ng_proc.0.id(), runs: vec![] });
        }
        println!("wrk -t2 -c{connections} -d{seconds}s, GET, upstream `tollgate echo`, all on this machine; {rounds} interleaved rounds, medians");
        for round in 0..rounds {
            // Every other round runs the rows backwards, so a row early in
            // one round is late in the next: a drift over the run favours
            // no row.
            let order: Vec<usize> = if round % 2 == 0 {
                (0..rows.len()).collect()
            } else {
                (0..rows.len()).rev().collect()
            };
            for i in order {
                let r = &mut rows[i];
                let pids = (r.pid, (r.pid != echo_pid).then_some(echo_pid));
                r.runs.push(wrk_with(&r.url, connections, seconds, &r.headers, pids)?);
            }
        }
        println!(
            "{:<28} {:>10} {:>9} {:>9} {:>14} {:>18}",
            "target", "req/s", "p50 ms", "p99 ms", "CPU us/req", "upstream CPU us/req"
        );
        let row = |name: &str, w: &Wrk| {
            println!(
                "{name:<28} {:>10.0} {:>9.2} {:>9.2} {:>14.1} {:>18.1}",
                w.rps, w.p50_ms, w.p99_ms, w.cpu_us, w.upstream_cpu_us
            );
        };
        let medians: Vec<Wrk> = rows.iter().map(|r| Wrk::median(&r.runs)).collect();
        for (r, m) in rows.iter().zip(&medians) {
            row(r.name, m);
        }
        let (tollgate, keyed, jwt_row, authorized, function, staged, unstaged, logged) = (
            &medians[1], &medians[2], &medians[3], &medians[4], &medians[5], &medians[6], &medians[7],
            &medians[8],
        );
        // Throughput moves with everything else on the machine; the proxy's
        // own CPU per request is the steadier measure of what a phase costs.
        let vs_plain = |w: &Wrk| {
            format!(
                "{:+.1}% throughput, {:+.1}% CPU/req",
                (w.rps / tollgate.rps - 1.0) * 100.0,
                (w.cpu_us / tollgate.cpu_us - 1.0) * 100.0
            )
        };
        println!("against the plain proxy: key + plan {}; JWT {}", vs_plain(keyed), vs_plain(jwt_row));
        println!(
            "against the plain proxy: request authorizer, warm cache {}; function route {}",
            vs_plain(authorized),
            vs_plain(function)
        );
        println!(
            "stage with a 10 % canary: against the plain proxy {}; against the same API at its own path {:+.1}% throughput, {:+.1}% CPU/req",
            vs_plain(staged),
            (staged.rps / unstaged.rps - 1.0) * 100.0,
            (staged.cpu_us / unstaged.cpu_us - 1.0) * 100.0
        );
        let lines = std::fs::read_to_string(&log_path).map_or(0, |t| t.lines().count());
        println!(
            "access log on against off: {}, p99 {:+.2} ms ({lines} lines written)",
            vs_plain(logged),
            logged.p99_ms - tollgate.p99_ms
        );
        for ((ng, ng_row), which) in medians.iter().zip(&rows).skip(9).zip(["plain", "same headers"]) {
            // Each round's pair on its own: how often Tollgate came out ahead.
            let per_round: Vec<f64> = rows[1].runs.iter().zip(&ng_row.runs).map(|(t, n)| t.rps / n.rps).collect();
            let ahead = per_round.iter().filter(|r| **r >= 1.0).count();
            let listed: Vec<String> = per_round.iter().map(|r| format!("{r:.2}")).collect();
            println!(
                "tollgate/nginx ({which}): throughput {:.2}x, p99 {:.2}x (lower is better); \
                 proxy CPU per request (user + system): tollgate {:.1} us, nginx {:.1} us ({:.2}x); \
                 the upstream's CPU per request behind each: {:.1} us, {:.1} us; \
                 throughput per round {} (at least level in {ahead} of {})",
                tollgate.rps / ng.rps,
                tollgate.p99_ms / ng.p99_ms,
                tollgate.cpu_us,
                ng.cpu_us,
                tollgate.cpu_us / ng.cpu_us,
                tollgate.upstream_cpu_us,
                ng.upstream_cpu_us,
                listed.join(" "),
                per_round.len()
            );
        }
        if let Some((ng_proc, l, _)) = &nginx {
            head_to_head(
                (&format!("http://{listen}/bench/x"), dp_pid),
                (&format!("http://{l}/bench/x"), ng_proc.0.id()),
                connections,
                4 * rounds as usize,
            )?;
        }
        // A cached route: one upstream request per TTL, the rest from memory.
        let cached = cached_row(&client, &admin, &echo_addr, (&listen, &status, dp_pid), connections, seconds).await?;
        row("tollgate, cached route", &cached.wrk);
        println!(
            "cached route: {:.2}x the plain proxy; the upstream saw {} requests in {seconds} s (TTL {} s)",
            cached.wrk.rps / tollgate.rps,
            cached.upstream_requests,
            CACHE_TTL_S
        );
        drop(nginx);

        // Propagation: 3 control-plane nodes, 3 data planes (one per node).
        let first = nodes[0].admin.clone();
        for id in 2..=3 {
            nodes.push(spawn(&bin, id, dir.path(), Some(&first))?);
        }
        for n in &nodes {
            wait_ready(&client, &n.admin).await?;
        }
        let mut dps = Vec::new();
        for n in &nodes {
            dps.push(data_plane(&bin, &n.grpc, "off")?);
        }
        put(&client, format!("{first}/v1/apis/warm"), mock_api("warm")).await?;
        for (_, l, _) in &dps {
            wait_status(&client, &format!("http://{l}/warm"), 200).await?;
        }
        let listens: Vec<&str> = dps.iter().map(|(_, l, _)| l.as_str()).collect();
        let mut samples = Vec::new();
        for i in 0..100 {
            let id = format!("prop-{i}");
            let t = Instant::now();
            put(&client, format!("{first}/v1/apis/{id}"), mock_api(&id)).await?;
            on_every(&listens, |l| {
                let (c, url) = (client.clone(), format!("http://{l}/{id}"));
                async move { wait_status(&c, &url, 200).await.map(|_| ()) }
            })
            .await?;
            samples.push(t.elapsed());
        }
        print_spread("propagation, admin write to served on all 3 data planes (3-node control plane, {n} writes)", &mut samples);

        // Rollback: a stage PUT back and forth between two deployments,
        // timed until every data plane answers from the one put.
        let deps = rollback_stage(&client, &first).await?;
        let mut samples = Vec::new();
        for i in 0..60 {
            let dep = &deps[i % 2];
            let t = Instant::now();
            put(&client, format!("{first}/v1/stages/rb"), json!({"api": "rb-api", "deployment": dep, "base_path": "/rb"})).await?;
            on_every(&listens, |l| {
                let (c, url) = (client.clone(), format!("http://{l}/rb/"));
                async move { wait_deployment(&c, &url, dep).await }
            })
            .await?;
            samples.push(t.elapsed());
        }
        print_spread("rollback, stage PUT to the deployment served on all 3 data planes ({n} PUTs)", &mut samples);

        // Large config: 10,000 APIs, then one change.
        let t = Instant::now();
        let writes = (0..10_000).map(|i| {
            let (c, base) = (client.clone(), first.clone());
            async move { put(&c, format!("{base}/v1/apis/big-{i}"), mock_api(&format!("big-{i}"))).await }
        });
        let mut stream = futures::stream::iter(writes).buffer_unordered(32);
        use futures::StreamExt;
        while let Some(r) = stream.next().await {
            r?;
        }
        for (_, l, _) in &dps {
            wait_status(&client, &format!("http://{l}/big-9999"), 200).await?;
        }
        println!("loaded 10,000 APIs in {:.1} s", t.elapsed().as_secs_f64());
        let mut samples = Vec::new();
        for i in 0..20 {
            let id = format!("late-{i}");
            let t = Instant::now();
            put(&client, format!("{first}/v1/apis/{id}"), mock_api(&id)).await?;
            for (_, l, _) in &dps {
                wait_status(&client, &format!("http://{l}/{id}"), 200).await?;
            }
            samples.push(t.elapsed());
        }
        samples.sort();
        println!(
            "one change on top of 10,000 APIs, write to served on all 3 data planes: p50 {:.1} ms, p99 {:.1} ms",
            percentile(&samples, 0.5).as_secs_f64() * 1e3,
            percentile(&samples, 0.99).as_secs_f64() * 1e3
        );
        Ok(())
    })
}

/// Until `check` passes on every data plane (all at once).
async fn on_every<F, Fut>(listens: &[&str], check: F) -> anyhow::Result<()>
where
    F: Fn(&str) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    for r in futures::future::join_all(listens.iter().map(|l| check(l))).await {
        r?;
    }
    Ok(())
}

/// `what` (its `{n}` replaced by the count) with the samples' p50 and p99.
fn print_spread(what: &str, samples: &mut [Duration]) {
    samples.sort();
    println!(
        "{}: p50 {:.1} ms, p99 {:.1} ms",
        what.replace("{n}", &samples.len().to_string()),
        percentile(samples, 0.5).as_secs_f64() * 1e3,
        percentile(samples, 0.99).as_secs_f64() * 1e3
    );
}

/// Until `url` answers from `deployment` (`x-tollgate-deployment`).
async fn wait_deployment(
    client: &reqwest::Client,
    url: &str,
    deployment: &str,
) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.headers()
                .get("x-tollgate-deployment")
                .is_some_and(|d| d == deployment)
            {
                return Ok(());
            }
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(10),
            "{url} never served {deployment}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn wait_status_with_header(
    client: &reqwest::Client,
    url: &str,
    (name, value): (&str, &str),
    want: u16,
) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        if let Ok(r) = client.get(url).header(name, value).send().await {
            if r.status().as_u16() == want {
                return Ok(());
            }
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(30),
            "{url} never answered {want}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const CACHE_TTL_S: u64 = 5;

struct CachedRow {
    wrk: Wrk,
    /// Cache misses while wrk ran: the requests that reached the upstream.
    upstream_requests: u64,
}

/// The plain API's twin with a response cache on its route, under wrk; the
/// upstream requests are read from the data plane's cache-miss counter.
async fn cached_row(
    client: &reqwest::Client,
    admin: &str,
    echo: &str,
    (listen, status, pid): (&str, &str, u32),
    connections: usize,
    seconds: u64,
) -> anyhow::Result<CachedRow> {
    put(
        client,
        format!("{admin}/v1/apis/cached"),
        json!({
        "base_path": "/cached", "upstream": {"targets": [{"url": format!("http://{echo}")}]},
        "routes": [{"id": "all", "path": "/{rest+}", "cache": {"ttl_s": CACHE_TTL_S}}]}),
    )
    .await?;
    let url = format!("http://{listen}/cached/x");
    wait_status(client, &url, 200).await?;
    let misses = || async {
        let text = client
            .get(format!("http://{status}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        anyhow::Ok(
            text.lines()
                .filter(|l| {
                    l.starts_with("tollgate_cache_requests_total{")
                        && l.contains("api=\"cached\"")
                        && l.contains("result=\"miss\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum::<u64>(),
        )
    };
    let before = misses().await?;
    let w = wrk(&url, connections, seconds, pid)?;
    let after = misses().await?;
    Ok(CachedRow {
        wrk: w,
        upstream_requests: after - before,
    })
}
