//! `tollgate apply`: send a file of declarative documents to the admin API.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::secrets::{self, Tokens};

#[derive(clap::Args)]
pub struct ApplyArgs {
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    #[arg(long, env = "TOLLGATE_SERVER", default_value = "http://127.0.0.1:9080")]
    server: String,
    #[command(flatten)]
    tokens: Tokens,
    /// Where `tollgate dev` keeps its generated admin token.
    #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = "./tollgate-data")]
    data_dir: PathBuf,
}

pub async fn run(args: ApplyArgs) -> anyhow::Result<()> {
    let token = secrets::admin_token(&args.tokens, &args.data_dir)?;
    apply_file(&args.file, &args.server, &token).await
}

/// Parses `path` and applies it, printing one line per document; `dev
/// --config` uses it too.
pub async fn apply_file(path: &Path, server: &str, token: &str) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let docs = tollgate_control_plane::declarative::parse(&text)
        .with_context(|| format!("parsing {}", path.display()))?;
    for line in tollgate_control_plane::declarative::apply(server, token, &docs).await? {
        println!("{line}");
    }
    Ok(())
}
