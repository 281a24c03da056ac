#![forbid(unsafe_code)]
//! `tollgate`: the one binary. Parses flags (each also read from
//! `TOLLGATE_<FLAG>`), sets up logging, and hands off to a subcommand in
//! `cli`, which hands off to the crates.

mod cli;

use clap::{Parser, Subcommand};

/// mimalloc: the proxy allocates per request (headers, bodies, futures),
/// and glibc's malloc showed up at ~10% of CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tollgate", version, about = "A distributed API gateway")]
struct Cli {
    /// Log format: text or json. Filter with RUST_LOG.
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process: a one-node control plane, a data plane,
    /// and the echo upstream the quickstart routes to.
    Dev(cli::dev::DevArgs),
    /// One stateless proxy streaming its config from the control plane.
    DataPlane(cli::data_plane::DataPlaneArgs),
    /// A small upstream for demos, tests and benchmarks: answers with a JSON
    /// description of each request.
    Echo(cli::echo::EchoArgs),
    /// One Raft node of the control plane.
    ///
    /// Peers and data planes authenticate with TOLLGATE_CLUSTER_TOKEN
    /// (generated into the data dir when unset). While that token is being
    /// rotated, TOLLGATE_CLUSTER_TOKEN_ACCEPT lists further tokens to accept,
    /// comma separated (docs/operations.md).
    ControlPlane(cli::control_plane::ControlPlaneArgs),
    /// Apply a declarative YAML/JSON file of documents (--prune deletes
    /// documents of its kinds it does not name; --dry-run changes nothing).
    Apply(cli::apply::ApplyArgs),
    /// What `apply -f FILE` would change, as diffs; exit 0 no changes, 1
    /// changes, 2 trouble (as diff(1)).
    Diff(cli::apply::DiffArgs),
    /// Daily used and remaining quota of a plan's keys or of one key.
    Usage(cli::usage::UsageArgs),
    /// Freeze an API as a deployment; with --stage, serve it there (or,
    /// with --canary PERCENT, to part of the stage's traffic).
    Deploy(cli::deploy::DeployArgs),
    /// Print every declarative document (APIs, authorizers, tenants, usage
    /// plans, stages) as YAML that `apply -f` takes back unchanged.
    Dump(cli::dump::DumpArgs),
    /// Print documents of a kind (one, or all): a table on a terminal,
    /// else YAML that `apply -f -` takes back unchanged.
    Get(cli::get::GetArgs),
    /// Delete one document.
    Delete(cli::get::DeleteArgs),
    /// Issue or revoke API keys.
    #[command(subcommand)]
    Keys(cli::keys::KeysCommand),
    /// The cluster as the answering node sees it.
    #[command(subcommand)]
    Cluster(cli::cluster::ClusterCommand),
    /// Turn a definition from elsewhere into documents: `import openapi
    /// FILE` (OpenAPI 3, Swagger 2, AWS API Gateway exports).
    #[command(subcommand)]
    Import(cli::import::ImportCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = Cli::parse();
    anyhow::ensure!(
        matches!(opts.log_format.as_str(), "text" | "json"),
        "--log-format: {:?} is not text or json",
        opts.log_format
    );
    // Logs as --log-format and RUST_LOG say; traces over OTLP only when
    // OTEL_EXPORTER_OTLP_ENDPOINT is set.
    let telemetry = tollgate_data_plane::telemetry::init(&opts.log_format)?;
    let result = match opts.command {
        Command::Dev(args) => cli::dev::run(args).await,
        Command::DataPlane(args) => cli::data_plane::run(args).await,
        Command::Echo(args) => cli::echo::run(args).await,
        Command::ControlPlane(args) => cli::control_plane::run(args).await,
        Command::Apply(args) => cli::apply::run(args).await,
        Command::Diff(args) => {
            // diff(1)'s statuses: 1 is "changes", so trouble is 2.
            let outcome = cli::apply::diff(args).await;
            telemetry.shutdown();
            match outcome {
                Ok(changed) => std::process::exit(i32::from(changed)),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    std::process::exit(2);
                }
            }
        }
        Command::Usage(args) => cli::usage::run(args).await,
        Command::Deploy(args) => cli::deploy::run(args).await,
        Command::Dump(args) => cli::dump::run(args).await,
        Command::Get(args) => cli::get::get(args).await,
        Command::Delete(args) => cli::get::delete(args).await,
        Command::Keys(cmd) => cli::keys::run(cmd).await,
        Command::Cluster(cmd) => cli::cluster::run(cmd).await,
        Command::Import(cmd) => cli::import::run(cmd).await,
    };
    telemetry.shutdown();
    // One line, never a backtrace (`RUST_BACKTRACE` would add one to the
    // default report); exit status 1 (clap's usage errors exit 2).
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}
