//! Tollgate data plane: a stateless proxy that holds the config streamed
//! from the control plane in memory.
//!
//! Module ownership (keep concerns in their own modules):
//! - `config`: the gRPC config stream client (hello, ACK/NACK, reconnect
//!   with backoff), conversion of prost types into `tollgate_model` types,
//!   and the `--state-dir` snapshot file.
//! - `router`, `proxy`, `upstream`, `error`, `echo`: the request path.

pub mod config;

use tollgate_model::{ConfigDelta, ConfigSet};

/// Whatever turns a config into the thing the request path reads. The
/// config client calls it for every update it receives; `Ok` leads to an
/// ACK, `Err(reason)` to a NACK, and then the previous config stays in
/// force. `next` is the whole config after the update, `delta` what changed,
/// so an implementation can do work in proportion to the change.
pub trait ConfigApplier: Send + Sync + 'static {
    fn apply(&self, next: &ConfigSet, delta: &ConfigDelta) -> Result<(), String>;
}
