//! Binding ports and waiting for a stop signal: what every serving
//! subcommand does the same way, so errors and signals read alike.

use anyhow::Context;
use tokio::net::TcpListener;

/// Binds `addr`, naming it in the error so a busy port is obvious.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// Returns on Ctrl-C or, on Unix, SIGTERM (what Kubernetes sends).
pub async fn wait_for_shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
