//! The integration tests, linked into one binary.
//!
//! Each file beside this one is a module with its own clusters. One binary
//! instead of one per file: every test binary links the whole gateway, and
//! thirty of them outgrew a CI machine's disk and spent minutes linking.
//! Run one area with `cargo test --test integration websocket::`.
//!
//! Tests of different modules run side by side, so process-wide state a test
//! changes (the invoice clock) is taken under a lock in `common`. The OTLP and
//! key-secrecy tests each install the global tracing subscriber they test,
//! so each stays a binary of its own.

mod common;
mod observe;

mod auth;
mod backup;
mod cache;
mod cli;
mod connections;
mod console;
mod control_plane;
mod data_plane;
mod failover;
mod fallback;
mod function;
mod grpc_typed;
mod h1_fast_path;
mod import;
mod invoice;
mod metering;
mod mtls;
mod observability;
mod openapi;
mod operator_cli;
mod plans;
mod proxy;
mod request_authorizer;
mod stages;
mod traffic;
mod upstream_pool;
mod websocket;
