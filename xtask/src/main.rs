//! `cargo xtask <task>`: the project's toolbox (alias in
//! .cargo/config.toml). `cargo xtask --help` lists the tasks.

#![forbid(unsafe_code)]

mod bench;
mod bench_apis;
mod bench_limits;
mod bench_proxy;
mod bench_traffic;
mod bench_websocket;
mod chart;
mod cluster;
mod fuzz;

use std::process::Command;

use clap::{Parser, Subcommand};

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(env!("CARGO")).args(args).status()?;
    anyhow::ensure!(status.success(), "cargo {} failed", args.join(" "));
    Ok(())
}

/// The project's toolbox.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
enum Task {
    /// fmt --check, clippy -D warnings, the tests, and the chart check.
    Ci,
    /// helm lint, render, validate and check the Helm chart.
    Chart,
    /// A local cluster as processes (3 control-plane nodes, 2 data planes,
    /// an echo upstream), logs under target/cluster/.
    Cluster {
        #[command(subcommand)]
        action: cluster::Action,
    },
    /// Print performance figures.
    #[command(subcommand)]
    Bench(Bench),
    /// Fuzz the HTTP/1 framing guard against a strict reference parser
    /// (cargo fuzz on nightly; a stable random-input loop without it).
    Fuzz {
        /// Seconds of fuzzing.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
        seconds: u64,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Writes/s and latency against a 3-node control plane; failover time.
    ControlPlane {
        /// Seconds of load per phase.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        seconds: u64,
    },
    /// wrk against the upstream, Tollgate and nginx side by side; config
    /// propagation; one change on top of 10,000 APIs.
    Proxy {
        /// Seconds per wrk run.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        seconds: u64,
        /// Interleaved rounds; each figure is the median.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
        rounds: u64,
        /// Only the plain and key + plan rows (to compare two builds).
        #[arg(long)]
        core: bool,
    },
    /// Throttle and quota accuracy across 3 and 5 data planes, even and
    /// skewed load, on an idle and a busy host.
    Limits {
        /// Seconds of load per run.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Runs per case (a fresh key each).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        runs: u64,
        /// Data-plane counts to try.
        #[arg(long, value_delimiter = ',', default_value = "3,5")]
        data_planes: Vec<usize>,
        /// Host conditions: `idle`, `busy` (a CPU hog per core) or `both`.
        #[arg(long, default_value = "both", value_parser = ["idle", "busy", "both"])]
        host: String,
    },
    /// WebSocket APIs: memory per idle connection, messages/s through a
    /// mock and an HTTP integration, connections-API delivery latency.
    Websocket {
        /// Seconds per messages/s phase.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        seconds: u64,
        /// Idle connections held open on one data plane.
        #[arg(long, default_value_t = 10_000)]
        idle: usize,
        /// Closed-loop clients in the messages/s phases.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Connections-API pushes timed.
        #[arg(long, default_value_t = 1000)]
        pushes: usize,
    },
    /// `GET /v1/traffic?window=15m` latency on each of 3 nodes, with a data
    /// plane streaming from each and 100 APIs under load.
    Traffic {
        /// Seconds of load before the reads (900 fills every window).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
        seconds: u64,
        /// Reads timed per node.
        #[arg(long, default_value_t = 200)]
        reads: usize,
    },
    /// ns/op of the GCRA bucket and of response-cache hits.
    Primitives,
}

fn main() -> anyhow::Result<()> {
    match Task::parse() {
        Task::Ci => {
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
        Task::Chart => chart::run(),
        Task::Cluster { action } => cluster::run(action),
        Task::Fuzz { seconds } => fuzz::run(seconds),
        Task::Bench(Bench::ControlPlane { seconds }) => bench::control_plane(seconds),
        Task::Bench(Bench::Proxy {
            seconds,
            rounds,
            core,
        }) => {
            if core {
                bench_proxy::run_core(seconds, rounds)
            } else {
                bench_proxy::run(seconds, rounds)
            }
        }
        Task::Bench(Bench::Limits {
            seconds,
            runs,
            data_planes,
            host,
        }) => bench_limits::run(bench_limits::Options {
            seconds,
            runs: runs as usize,
            data_planes,
            busy: host != "idle",
            busy_only: host == "busy",
        }),
        Task::Bench(Bench::Websocket {
            seconds,
            idle,
            clients,
            pushes,
        }) => bench_websocket::run(bench_websocket::Options {
            seconds,
            idle,
            clients,
            pushes,
        }),
        Task::Bench(Bench::Traffic { seconds, reads }) => {
            bench_traffic::run(bench_traffic::Options { seconds, reads })
        }
        Task::Bench(Bench::Primitives) => cargo(&[
            "run",
            "--quiet",
            "--release",
            "--package",
            "tollgate-data-plane",
            "--example",
            "primitives",
        ]),
    }
}
