//! `tollgate dump`: every declarative document in the cluster, as a file
//! `tollgate apply -f` takes back unchanged (a whole backup, counters and
//! key records included, is `GET /v1/snapshot`).

use super::secrets::AdminApi;

#[derive(clap::Args)]
pub struct DumpArgs {
    #[command(flatten)]
    admin: AdminApi,
}

pub async fn run(args: DumpArgs) -> anyhow::Result<()> {
    let token = args.admin.token()?;
    print!(
        "{}",
        tollgate_control_plane::declarative::dump(&args.admin.server, &token).await?
    );
    Ok(())
}
