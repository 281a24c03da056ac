//! Everything Raft, in one module: the type config, the sled-backed log
//! store and state machine, and the tonic network (client and server).

// openraft's `StorageError` is large by openraft's design; every storage
// function must return it, so boxing on our side would only add copies.
#![allow(clippy::result_large_err)]

pub mod compaction;
pub mod elect;
pub mod kv;
pub mod log_store;
pub mod network;
pub mod state_machine;

use std::fmt;
use std::io::Cursor;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::state::{Command, CommandResult};

pub type NodeId = u64;

/// How to reach a control-plane node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// `http://host:port` (or https with mTLS) of the gRPC port.
    pub grpc_addr: String,
    /// `http://host:port` of the admin REST port.
    pub admin_addr: String,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{grpc: {}, admin: {}}}",
            self.grpc_addr, self.admin_addr
        )
    }
}

pub type SnapshotData = Cursor<Vec<u8>>;

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        Node = Node,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Metrics = openraft::RaftMetrics<NodeId, Node>;

/// The last index this node applied.
pub fn applied_index(m: &Metrics) -> u64 {
    m.last_applied.map_or(0, |l| l.index)
}

/// The commit index, as node `me` knows it; the one definition the admin
/// API (`/v1/cluster`) and `/metrics` both report.
///
/// openraft 0.9 does not publish the commit index. On the leader it is the
/// highest index a quorum of voters holds (never below what it applied);
/// elsewhere, what this node applied (committed by definition) is the best
/// lower bound.
pub fn commit_index(m: &Metrics, me: NodeId) -> u64 {
    let applied = applied_index(m);
    if m.current_leader != Some(me) {
        return applied;
    }
    let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
    let mut matched: Vec<u64> = voters
        .iter()
        .map(|v| {
            if *v == me {
                m.last_log_index.unwrap_or(0)
            } else {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(v).cloned().flatten())
                    .map_or(0, |l| l.index)
            }
        })
        .collect();
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched
        .get(voters.len() / 2)
        .copied()
        .unwrap_or(applied)
        .max(applied)
}

pub mod typ {
    use super::{Node, NodeId, TypeConfig};

    pub type Entry = openraft::Entry<TypeConfig>;
    pub type LogId = openraft::LogId<NodeId>;
    pub type StorageError = openraft::StorageError<NodeId>;
    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    pub type RPCError<E = openraft::error::Infallible> =
        openraft::error::RPCError<NodeId, Node, RaftError<E>>;
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, Node>;
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, Node>;
    pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
}

/// Open the log store and state machine under `dir` (one sled database).
pub fn open_storage(
    dir: &Path,
) -> std::io::Result<(log_store::LogStore, state_machine::StateMachine)> {
    std::fs::create_dir_all(dir)?;
    let db = kv::Db::open(&dir.join("raft.sled"))?;
    let log = log_store::LogStore::open(db.clone())?;
    let sm = state_machine::StateMachine::open(db)?;
    Ok((log, sm))
}

/// Shorthand: an io error as an openraft storage error.
pub(crate) fn storage_err(
    subject: openraft::ErrorSubject<NodeId>,
    verb: openraft::ErrorVerb,
    e: impl std::error::Error + 'static,
) -> typ::StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}
