//! The Raft log in sled. An append is flushed to disk before openraft is
//! told it is durable: `append` writes the batch, then a spawned task
//! flushes and fires the `LogFlushed` callback.
//!
//! openraft 0.9's core awaits that callback before it takes its next
//! message (`RaftCore::append_to_log`), so appends do not overlap: on the
//! leader each client write is appended, and fsynced, one at a time; a
//! follower fsyncs once per `AppendEntries` batch it receives. Spawning the
//! flush buys no concurrency under 0.9; it only keeps the wait out of
//! `append` itself.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, Vote};

use super::kv::{Batch, Db, Tree};
use super::typ::{Entry, LogId, StorageError};
use super::{storage_err, NodeId, TypeConfig};

#[derive(Clone)]
pub struct LogStore {
    db: Db,
    logs: Tree,
    meta: Tree,
}

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    storage_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    storage_err(ErrorSubject::Logs, ErrorVerb::Write, e)
}

impl LogStore {
    pub fn open(db: Db) -> std::io::Result<Self> {
        Ok(Self {
            logs: db.tree("raft_log")?,
            meta: db.tree("raft_meta")?,
            db,
        })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        match self.meta.get(key).map_err(read_err)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    async fn put_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(write_err)?;
        self.meta.insert(key, bytes).map_err(write_err)?;
        self.db.flush().await.map_err(write_err)
    }

    /// Number of entries currently held, for metrics.
    /// The id of the last entry written, or of the last purged one when
    /// none is left.
    pub fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        match self.logs.last().map_err(read_err)? {
            Some((_, v)) => Ok(Some(
                serde_json::from_slice::<Entry>(&v)
                    .map_err(read_err)?
                    .log_id,
            )),
            None => self.get_meta(LAST_PURGED),
        }
    }

    pub fn len(&self) -> usize {
        self.logs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => x.saturating_add(1),
            Bound::Excluded(x) => *x,
            Bound::Unbounded => u64::MAX,
        };
        if start >= end {
            return Ok(Vec::new());
        }
        self.logs
            .range(&index_key(start), &index_key(end))
            .map(|r| {
                let (_, v) = r.map_err(read_err)?;
                serde_json::from_slice(&v).map_err(read_err)
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(LogState {
            last_purged_log_id: self.get_meta(LAST_PURGED)?,
            last_log_id: self.last_log_id()?,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta(VOTE, vote).await.map_err(|_| {
            storage_err(
                ErrorSubject::Vote,
                ErrorVerb::Write,
                std::io::Error::other("save vote"),
            )
        })
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed on its own: losing it only means re-applying from the
        // last applied index, which the state machine persists.
        let bytes = serde_json::to_vec(&committed).map_err(write_err)?;
        self.meta.insert(COMMITTED, bytes).map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.get_meta(COMMITTED)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = Batch::default();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(write_err)?;
            batch.insert(index_key(entry.log_id.index), bytes);
        }
        self.logs.apply(batch).map_err(write_err)?;
        // Durable before acknowledged: openraft counts the entries only when
        // the callback fires, after the flush. The flush runs off the Raft
        // core so it can keep replicating meanwhile; a flush covers every
        // write before it, so completions can only ever vouch for more.
        let db = self.db.clone();
        tokio::spawn(async move {
            let flushed = db
                .flush()
                .await
                .map_err(|e| std::io::Error::new(e.kind(), e.to_string()));
            callback.log_io_completed(flushed);
        });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = Batch::default();
        for r in self
            .logs
            .range(&index_key(log_id.index), &index_key(u64::MAX))
        {
            batch.remove(r.map_err(write_err)?.0);
        }
        self.logs.apply(batch).map_err(write_err)?;
        self.db.flush().await.map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.put_meta(LAST_PURGED, &log_id).await?;
        let mut batch = Batch::default();
        for r in self.logs.range(&index_key(0), &index_key(log_id.index + 1)) {
            batch.remove(r.map_err(write_err)?.0);
        }
        self.logs.apply(batch).map_err(write_err)
    }
}
