//! `tollgate dump [--file FILE]`: every declarative document in the
//! cluster, as a file `tollgate apply -f` takes back unchanged (a whole
//! backup, counters and key records included, is `GET /v1/snapshot`).

use std::path::PathBuf;

use anyhow::Context;

use super::secrets::AdminApi;

#[derive(clap::Args)]
pub struct DumpArgs {
    /// Write here instead of to stdout.
    #[arg(long)]
    file: Option<PathBuf>,
    #[command(flatten)]
    admin: AdminApi,
}

pub async fn run(args: DumpArgs) -> anyhow::Result<()> {
    let token = args.admin.token()?;
    let yaml = tollgate_control_plane::declarative::dump(&args.admin.server, &token).await?;
    match &args.file {
        Some(path) => {
            std::fs::write(path, yaml).with_context(|| format!("writing {}", path.display()))
        }
        None => {
            print!("{yaml}");
            Ok(())
        }
    }
}
