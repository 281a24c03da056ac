//! Backup and restore: `GET /v1/snapshot` exports every document (key
//! hashes and the key-hash secret included, never a key value) and every
//! usage counter; `POST /v1/snapshot` replaces a cluster's state with a
//! backup through one Raft command, so every node and data plane follows.

use serde::{Deserialize, Serialize};
use tollgate_model::Resource;

use crate::service::{parse_json, ApiError, ControlPlane, Result};
use crate::state::{Command, Counter};

const FORMAT: &str = "tollgate-backup/1";

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    pub format: String,
    /// The revision the backup was taken at.
    pub revision: u64,
    /// Every document, each as `{"kind": "api", "doc": {...}}`.
    #[schema(value_type = Vec<Object>)]
    pub docs: Vec<Resource>,
    /// `[counter, value]` pairs, each counter as `{"Kind": {...}}`.
    #[schema(value_type = Vec<(Object, u64)>)]
    pub counters: Vec<(Counter, u64)>,
}

impl ControlPlane {
    pub async fn export_backup(&self) -> Result<Backup> {
        self.read_barrier(false).await?;
        let revision = self.shared.applied();
        Ok(self.shared.read(|s| Backup {
            format: FORMAT.into(),
            revision,
            docs: s.all().map(|st| st.resource.clone()).collect(),
            counters: s
                .counters()
                .filter(|(_, v)| **v > 0)
                .map(|(c, v)| (c.clone(), *v))
                .collect(),
        }))
    }

    /// Returns the revision the restore committed at.
    pub async fn import_backup(&self, body: &[u8]) -> Result<u64> {
        let b: Backup = parse_json(body)?;
        if b.format != FORMAT {
            return Err(ApiError::InvalidArgument(format!(
                "format: {:?} is not {FORMAT:?}",
                b.format
            )));
        }
        let (revision, _) = self
            .write(Command::Restore {
                docs: b.docs,
                counters: b.counters,
            })
            .await?;
        Ok(revision)
    }
}
