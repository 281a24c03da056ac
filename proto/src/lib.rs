//! Wire types for every gRPC service Tollgate speaks. Nothing outside the
//! edges of `control-plane` and `data-plane` should touch these: convert them
//! into `tollgate-model` types with `From`/`TryFrom` at the boundary (the
//! `Usage` service's conversions are in `usage`, the typed admin documents'
//! in `typed`).

#![forbid(unsafe_code)]

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("tollgate.v1");
}

pub use v1::*;

/// The encoded `FileDescriptorSet` of every service above, for server
/// reflection: clients discover the API from the server itself.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tollgate_descriptor.bin"));

pub mod auth;
pub mod tls;
pub mod traffic;
pub mod typed;
pub mod usage;
