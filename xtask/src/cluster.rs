//! `cargo xtask cluster up|down|status`: a local cluster of real processes
//! (3 control-plane nodes, 2 data planes, an echo upstream), with logs and
//! data under `target/cluster/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

const ADMIN: [&str; 3] = ["127.0.0.1:9081", "127.0.0.1:9082", "127.0.0.1:9083"];
const GRPC: [&str; 3] = ["127.0.0.1:9091", "127.0.0.1:9092", "127.0.0.1:9093"];
const PROXY: [&str; 2] = ["127.0.0.1:8080", "127.0.0.1:8082"];
const STATUS: [&str; 2] = ["127.0.0.1:9901", "127.0.0.1:9902"];
const ECHO: &str = "127.0.0.1:8081";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("target/cluster")
}

fn binary() -> anyhow::Result<PathBuf> {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--bin", "tollgate"])
        .status()?;
    anyhow::ensure!(status.success(), "build failed");
    Ok(dir().join("../debug/tollgate"))
}

fn token(name: &str) -> anyhow::Result<String> {
    let path = dir().join(name);
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok(t.trim().to_string());
    }
    let mut bytes = [0u8; 24];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    let t: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, &t)?;
    Ok(t)
}

fn spawn(bin: &Path, name: &str, args: &[&str], admin: &str, cluster: &str) -> anyhow::Result<u32> {
    let log = std::fs::File::create(dir().join(format!("{name}.log")))?;
    let child = Command::new(bin)
        .args(args)
        .env("TOLLGATE_ADMIN_TOKEN", admin)
        .env("TOLLGATE_CLUSTER_TOKEN", cluster)
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(child.id())
}

fn wait_http(url: &str) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        let ok = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", url])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[derive(clap::Subcommand)]
pub enum Action {
    /// Start the cluster in the background.
    Up,
    /// Stop it.
    Down,
    /// What each process answers.
    Status,
}

pub fn run(action: Action) -> anyhow::Result<()> {
    match action {
        Action::Up => up(),
        Action::Down => down(),
        Action::Status => status(),
    }
}

fn up() -> anyhow::Result<()> {
    std::fs::create_dir_all(dir())?;
    anyhow::ensure!(
        !dir().join("pids").exists(),
        "a cluster is up; `cargo xtask cluster down` first"
    );
    let bin = binary()?;
    let (admin, cluster) = (token("admin-token")?, token("cluster-token")?);
    let mut pids = Vec::new();
    pids.push(spawn(
        &bin,
        "echo",
        &["echo", "--listen", ECHO],
        &admin,
        &cluster,
    )?);
    for i in 0..3 {
        let id = (i + 1).to_string();
        let data = dir().join(format!("cp-{id}"));
        let mut a = vec![
            "control-plane",
            "--node-id",
            &id,
            "--grpc-addr",
            GRPC[i],
            "--admin-addr",
            ADMIN[i],
        ];
        let data = data.to_string_lossy().to_string();
        a.extend(["--data-dir", &data]);
        let join = format!("http://{}", ADMIN[0]);
        let fresh = !Path::new(&data).exists();
        if fresh && i == 0 {
            a.push("--bootstrap");
        } else if fresh {
            a.extend(["--join", &join]);
        }
        pids.push(spawn(&bin, &format!("cp-{id}"), &a, &admin, &cluster)?);
        anyhow::ensure!(
            wait_http(&format!("http://{}/readyz", ADMIN[i])),
            "control-plane node {id} not ready; see target/cluster/cp-{id}.log"
        );
    }
    let cps = GRPC
        .iter()
        .map(|g| format!("http://{g}"))
        .collect::<Vec<_>>()
        .join(",");
    for i in 0..2 {
        let state = dir()
            .join(format!("dp-{}", i + 1))
            .to_string_lossy()
            .to_string();
        let name = format!("dp-{}", i + 1);
        pids.push(spawn(
            &bin,
            &name,
            &[
                "data-plane",
                "--control-plane",
                &cps,
                "--listen",
                PROXY[i],
                "--status-addr",
                STATUS[i],
                "--state-dir",
                &state,
                "--node-id",
                &name,
            ],
            &admin,
            &cluster,
        )?);
    }
    std::fs::write(
        dir().join("pids"),
        pids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    )?;
    println!("cluster up: admin http://{} (token in target/cluster/admin-token), proxies http://{} and http://{}, echo upstream http://{ECHO}", ADMIN[0], PROXY[0], PROXY[1]);
    println!(
        "logs: target/cluster/*.log; `cargo xtask cluster status`, `cargo xtask cluster down`"
    );
    Ok(())
}

fn down() -> anyhow::Result<()> {
    let path = dir().join("pids");
    let pids = std::fs::read_to_string(&path).context("no cluster is up")?;
    for pid in pids.lines() {
        let _ = Command::new("kill").args(["-TERM", pid]).status();
    }
    std::fs::remove_file(path)?;
    println!("cluster down (data kept in target/cluster/; remove it for a fresh start)");
    Ok(())
}

fn status() -> anyhow::Result<()> {
    let pids = std::fs::read_to_string(dir().join("pids")).unwrap_or_default();
    let alive = pids
        .lines()
        .filter(|p| Path::new(&format!("/proc/{p}")).exists())
        .count();
    println!("processes: {alive} of {} running", pids.lines().count());
    let admin = token("admin-token")?;
    let out = Command::new("curl")
        .args([
            "-sf",
            "-H",
            &format!("authorization: Bearer {admin}"),
            &format!("http://{}/v1/cluster", ADMIN[0]),
        ])
        .output()?;
    println!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}
