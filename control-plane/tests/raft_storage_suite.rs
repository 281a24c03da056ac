//! openraft's own storage conformance suite, run against the sled-backed log
//! store and state machine.

#![forbid(unsafe_code)]

use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;
use tollgate_control_plane::raft::log_store::LogStore;
use tollgate_control_plane::raft::state_machine::StateMachine;
use tollgate_control_plane::raft::{open_storage, typ, TypeConfig};

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), typ::StorageError> {
        let dir = TempDir::new().expect("temp dir");
        let (log, sm) = open_storage(dir.path()).expect("open storage");
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_store_passes_openraft_suite() {
    Suite::test_all(SledBuilder).expect("openraft storage suite");
}
