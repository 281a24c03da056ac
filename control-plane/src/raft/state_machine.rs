//! The state machine: `crate::state::State` in memory for reads, written
//! through to sled on every apply (one atomic batch per apply call, together
//! with the last applied log id), so a restarted node starts from its own
//! disk and only replays the log after that point.

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tollgate_model::config::ResourceRef;

use super::kv::{Batch, Db, Tree};
use super::typ::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership};
use super::{storage_err, SnapshotData, TypeConfig};
use crate::state::{Change, CommandResult, Counter, State, Stored};

/// What the rest of the node reads: the state, and the applied index as a
/// watch so that readers can wait for a revision.
pub struct Shared {
    state: RwLock<State>,
    applied: watch::Sender<u64>,
}

impl Shared {
    /// Run `f` on the current state. Keep `f` short: applies wait for it.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.read().expect("state lock"))
    }

    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }
}

#[derive(Clone)]
pub struct StateMachine {
    db: Db,
    docs: Tree,
    snapshots: Tree,
    shared: Arc<Shared>,
    meta: Arc<RwLock<Meta>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Meta {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

const DOC: u8 = b'd';
const TOMBSTONE: u8 = b't';
const COUNTER: u8 = b'c';
const META_KEY: &[u8] = b"m";
const CURRENT_SNAPSHOT: &[u8] = b"current";

fn doc_key(tag: u8, (kind, id): &ResourceRef) -> Vec<u8> {
    let mut k = vec![tag];
    k.extend_from_slice(kind.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    storage_err(ErrorSubject::StateMachine, verb, e)
}

impl StateMachine {
    pub fn open(db: Db) -> std::io::Result<Self> {
        let docs = db.tree("state")?;
        let snapshots = db.tree("snapshots")?;
        let meta: Meta = match docs.get(META_KEY)? {
            Some(v) => serde_json::from_slice(&v).map_err(std::io::Error::other)?,
            None => Meta::default(),
        };
        let mut stored = Vec::new();
        for r in docs.scan_prefix(&[DOC]) {
            stored.push(serde_json::from_slice::<Stored>(&r?.1).map_err(std::io::Error::other)?);
        }
        let mut tombstones = Vec::new();
        for r in docs.scan_prefix(&[TOMBSTONE]) {
            tombstones.push(
                serde_json::from_slice::<(ResourceRef, u64)>(&r?.1)
                    .map_err(std::io::Error::other)?,
            );
        }
        let mut counters = Vec::new();
        for r in docs.scan_prefix(&[COUNTER]) {
            counters.push(
                serde_json::from_slice::<(Counter, u64)>(&r?.1).map_err(std::io::Error::other)?,
            );
        }
        let applied = meta.last_applied.map_or(0, |l| l.index);
        Ok(Self {
            db,
            docs,
            snapshots,
            shared: Arc::new(Shared {
                state: RwLock::new(State::from_parts(stored, tombstones, counters)),
                applied: watch::channel(applied).0,
            }),
            meta: Arc::new(RwLock::new(meta)),
        })
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn write_changes(batch: &mut Batch, changes: &[Change]) -> Result<(), StorageError> {
        for c in changes {
            match c {
                Change::Upsert(st) => {
                    let key = st.resource.key();
                    batch.remove(doc_key(TOMBSTONE, &key));
                    batch.insert(
                        doc_key(DOC, &key),
                        serde_json::to_vec(st).map_err(|e| sm_err(ErrorVerb::Write, e))?,
                    );
                }
                Change::Remove(key, rev) => {
                    batch.remove(doc_key(DOC, key));
                    let v =
                        serde_json::to_vec(&(key, rev)).map_err(|e| sm_err(ErrorVerb::Write, e))?;
                    batch.insert(doc_key(TOMBSTONE, key), v);
                }
                Change::Counter(c, v) => {
                    let mut k = vec![COUNTER];
                    k.extend(serde_json::to_vec(c).map_err(|e| sm_err(ErrorVerb::Write, e))?);
                    let v = serde_json::to_vec(&(c, v)).map_err(|e| sm_err(ErrorVerb::Write, e))?;
                    batch.insert(k, v);
                }
            }
        }
        Ok(())
    }

    fn write_meta(batch: &mut Batch, meta: &Meta) -> Result<(), StorageError> {
        batch.insert(
            META_KEY,
            serde_json::to_vec(meta).map_err(|e| sm_err(ErrorVerb::Write, e))?,
        );
        Ok(())
    }

    fn current_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        match self
            .snapshots
            .get(CURRENT_SNAPSHOT)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
        {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).map_err(|e| sm_err(ErrorVerb::Read, e))?,
            )),
            None => Ok(None),
        }
    }

    async fn save_snapshot(&self, snap: &StoredSnapshot) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(snap).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        self.snapshots
            .insert(CURRENT_SNAPSHOT, bytes)
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        self.db
            .flush()
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, e))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Hold the meta lock while serializing so that the state and the
        // log id it is labelled with agree.
        let (meta, data) = {
            let m = self.meta.read().expect("meta lock");
            let data = self
                .shared
                .read(serde_json::to_vec)
                .map_err(|e| sm_err(ErrorVerb::Read, e))?;
            (m.clone(), data)
        };
        let snapshot_id = match meta.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, rand::random::<u32>()),
            None => format!("none-{}", rand::random::<u32>()),
        };
        let meta = SnapshotMeta {
            last_log_id: meta.last_applied,
            last_membership: meta.membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.save_snapshot(&stored).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let m = self.meta.read().expect("meta lock");
        Ok((m.last_applied, m.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = Batch::default();
        let mut results = Vec::new();
        // Lock order meta -> state everywhere, so a snapshot sees the state
        // and the log id it is labelled with change together.
        let mut meta_guard = self.meta.write().expect("meta lock");
        let mut meta = meta_guard.clone();
        {
            let mut state = self.shared.state.write().expect("state lock");
            for entry in entries {
                let index = entry.log_id.index;
                meta.last_applied = Some(entry.log_id);
                let mut amount = 0;
                let outcome = match entry.payload {
                    EntryPayload::Blank => None,
                    EntryPayload::Normal(cmd) => {
                        let (outcome, changes, granted) = state.apply(index, cmd);
                        Self::write_changes(&mut batch, &changes)?;
                        amount = granted;
                        Some(outcome)
                    }
                    EntryPayload::Membership(m) => {
                        meta.membership = StoredMembership::new(Some(entry.log_id), m);
                        None
                    }
                };
                results.push(CommandResult {
                    revision: index,
                    outcome,
                    amount,
                });
            }
        }
        Self::write_meta(&mut batch, &meta)?;
        self.docs
            .apply(batch)
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let applied = meta.last_applied.map_or(0, |l| l.index);
        *meta_guard = meta;
        drop(meta_guard);
        self.shared.applied.send_replace(applied);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state: State = serde_json::from_slice::<State>(&data).map_err(|e| {
            storage_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                e,
            )
        })?;
        let new_meta = Meta {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        self.docs.clear().map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let mut batch = Batch::default();
        let changes: Vec<Change> = state
            .all()
            .map(|s| Change::Upsert(s.clone()))
            .chain(
                state
                    .tombstones()
                    .map(|(k, r)| Change::Remove(k.clone(), *r)),
            )
            .chain(
                state
                    .counters()
                    .map(|(c, v)| Change::Counter(c.clone(), *v)),
            )
            .collect();
        Self::write_changes(&mut batch, &changes)?;
        Self::write_meta(&mut batch, &new_meta)?;
        self.docs
            .apply(batch)
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        *self.shared.state.write().expect("state lock") = state;
        *self.meta.write().expect("meta lock") = new_meta;
        self.shared
            .applied
            .send_replace(meta.last_log_id.map_or(0, |l| l.index));
        self.save_snapshot(&StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.current_snapshot()?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
