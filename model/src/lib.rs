//! Tollgate's domain: the documents operators write (APIs, authorizers,
//! tenants, usage plans, stages), deployments, the API key records the cluster stores, and the
//! rules that make a document valid.
//!
//! This crate has no I/O. The control plane validates with it before a write
//! reaches Raft; the data plane uses the same types to build its routing
//! table, so both halves agree on what a document means.

#![forbid(unsafe_code)]

pub mod billing;
pub mod config;
pub mod connection_id;
pub mod docs;
pub mod key;
pub mod metering;
pub mod path;
pub mod stages;
pub mod traffic;
pub mod usage;
pub mod validate;
pub mod variables;
pub mod websocket;

pub use config::{ConfigDelta, ConfigSet, Resource, ResourceKind};
pub use docs::*;
pub use validate::ValidationError;
