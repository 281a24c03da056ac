//! `tollgate apply`: send a file of declarative documents to the admin API.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::secrets::AdminApi;

#[derive(clap::Args)]
pub struct ApplyArgs {
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    #[command(flatten)]
    admin: AdminApi,
}

pub async fn run(args: ApplyArgs) -> anyhow::Result<()> {
    let token = args.admin.token()?;
    apply_file(&args.file, &args.admin.server, &token).await
}

/// Parses `path` and applies it, printing one line per document; `dev
/// --config` uses it too.
pub async fn apply_file(path: &Path, server: &str, token: &str) -> anyhow::Result<()> {
    // `-f -`: standard input (`tollgate get … -o yaml | tollgate apply -f -`).
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    let docs = tollgate_control_plane::declarative::parse(&text)
        .with_context(|| format!("parsing {}", path.display()))?;
    for line in tollgate_control_plane::declarative::apply(server, token, &docs).await? {
        println!("{line}");
    }
    Ok(())
}
