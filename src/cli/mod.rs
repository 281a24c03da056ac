//! One module per subcommand (its flags and body), plus the pieces several
//! of them share, so that `main.rs` stays the thin dispatch.

pub mod apply;
pub mod cluster;
pub mod control_plane;
pub mod data_plane;
pub mod deploy;
pub mod dev;
pub mod dump;
pub mod echo;
pub mod get;
pub mod import;
pub mod keys;
pub mod lifecycle;
pub mod output;
pub mod secrets;
pub mod tls;
pub mod usage;
