//! Wire types for every gRPC service Tollgate speaks. Nothing outside the
//! edges of `control-plane` and `data-plane` should touch these: convert them
//! into `tollgate-model` types with `From`/`TryFrom` at the boundary (the
//! `Usage` service's conversions are in `usage`).

#![forbid(unsafe_code)]

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("tollgate.v1");
}

pub use v1::*;

pub mod auth;
pub mod tls;
pub mod usage;
