//! `tollgate echo`: the demo upstream, on its own.

use super::lifecycle::{bind, wait_for_shutdown};

#[derive(clap::Args)]
pub struct EchoArgs {
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "127.0.0.1:8081")]
    listen: String,
}

pub async fn run(args: EchoArgs) -> anyhow::Result<()> {
    let listener = bind(&args.listen).await?;
    println!("tollgate echo: listening on {}", listener.local_addr()?);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(tollgate_data_plane::echo::run(listener, shutdown.clone()));
    wait_for_shutdown().await;
    shutdown.cancel();
    let _ = server.await;
    Ok(())
}
