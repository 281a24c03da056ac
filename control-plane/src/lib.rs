//! Tollgate control plane: a Raft-replicated store of API definitions,
//! authorizers, tenants, usage plans and API key hashes; the admin API (REST
//! and gRPC over one service layer); and config streaming to data planes.
//!
//! - `state`: the replicated state and its commands (pure, deterministic).
//! - `raft`: openraft types, sled log store and state machine, tonic network.
//! - `service`: every admin operation, once.
//! - `rest`, `grpc`: the doors into `service` (`grpc` also into `usage`).
//! - `grpc_typed`: `TypedAdmin` (a message per document kind) and server
//!   reflection.
//! - `openapi`: the REST door's OpenAPI document (paths from `rest`'s handlers).
//! - `config_stream`: `Config.Watch` for data planes.
//! - `connections`: the connections API's way to a data plane's WebSocket
//!   connections (`Connections.Open` streams, `Cluster.Deliver` to peers).
//! - `console`: the web console's files at `/ui/` (a client of `rest`).
//! - `error`: `ApiError`, what every admin operation answers with.
//! - `peer`: calls to another node's `Cluster` service (forwarding).
//! - `usage`: metering and quota leases for data planes; usage reads.
//! - `invoice`: a tenant's invoice for a month, from usage and price history.
//! - `demand`: throttle demand shared across data planes (on the leader).
//! - `traffic`: live traffic from data planes, in memory, merged across nodes.
//! - `transport`: bearer-token auth and the per-peer channel cache.
//! - `node`: start and stop a node.

#![forbid(unsafe_code)]

pub mod backup;
pub mod config_stream;
pub mod connections;
pub mod console;
pub mod declarative;
pub mod demand;
pub mod error;
pub mod grpc;
pub mod grpc_typed;
pub mod invoice;
pub mod node;
pub mod openapi;
pub mod peer;
pub mod raft;
pub mod rest;
pub mod service;
pub mod state;
pub mod traffic;
pub mod transport;
pub mod usage;

pub use node::{start, Membership, NodeConfig, NodeHandle, RaftTuning};
pub use service::{ApiError, ControlPlane};
