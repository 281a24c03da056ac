//! Mutual TLS between cluster members: a control-plane node's gRPC port
//! and a data plane's link to it read the same three PEM files.

use std::path::PathBuf;

/// Mutual TLS settings from the three PEM files (clap ensures all or none).
pub fn mutual_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
) -> anyhow::Result<Option<tollgate_proto::tls::MutualTls>> {
    match (cert, key, ca) {
        (Some(c), Some(k), Some(a)) => Ok(Some(tollgate_proto::tls::MutualTls::from_files(
            &c, &k, &a,
        )?)),
        _ => Ok(None),
    }
}
