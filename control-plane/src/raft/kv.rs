//! The only place that knows the storage engine is sled. Everything else
//! speaks in `Db`, `Tree` and `Batch`, so replacing sled is one file.

use std::io;
use std::path::Path;

fn io_err(e: sled::Error) -> io::Error {
    io::Error::other(e)
}

#[derive(Clone)]
pub struct Db {
    db: sled::Db,
}

#[derive(Clone)]
pub struct Tree {
    tree: sled::Tree,
}

#[derive(Default)]
pub struct Batch {
    batch: sled::Batch,
}

impl Db {
    pub fn open(path: &Path) -> io::Result<Self> {
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(io_err)?;
        Ok(Self { db })
    }

    pub fn tree(&self, name: &str) -> io::Result<Tree> {
        Ok(Tree {
            tree: self.db.open_tree(name).map_err(io_err)?,
        })
    }

    /// Make every write so far durable. Concurrent callers share one fsync.
    pub async fn flush(&self) -> io::Result<()> {
        self.db.flush_async().await.map_err(io_err).map(drop)
    }

    pub fn was_recovered(&self) -> bool {
        self.db.was_recovered()
    }
}

impl Tree {
    pub fn get(&self, key: impl AsRef<[u8]>) -> io::Result<Option<Vec<u8>>> {
        Ok(self.tree.get(key).map_err(io_err)?.map(|v| v.to_vec()))
    }

    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> io::Result<()> {
        self.tree
            .insert(key.as_ref(), value.as_ref())
            .map_err(io_err)
            .map(drop)
    }

    pub fn remove(&self, key: impl AsRef<[u8]>) -> io::Result<()> {
        self.tree.remove(key).map_err(io_err).map(drop)
    }

    /// Key/value pairs with keys in `[start, end)`, in key order.
    pub fn range(
        &self,
        start: &[u8],
        end: &[u8],
    ) -> impl Iterator<Item = io::Result<(Vec<u8>, Vec<u8>)>> {
        self.tree
            .range(start.to_vec()..end.to_vec())
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(io_err))
    }

    pub fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = io::Result<(Vec<u8>, Vec<u8>)>> {
        self.tree
            .scan_prefix(prefix)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(io_err))
    }

    pub fn last(&self) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .tree
            .last()
            .map_err(io_err)?
            .map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    pub fn clear(&self) -> io::Result<()> {
        self.tree.clear().map_err(io_err)
    }

    /// Apply every write in `batch` atomically.
    pub fn apply(&self, batch: Batch) -> io::Result<()> {
        self.tree.apply_batch(batch.batch).map_err(io_err)
    }
}

impl Batch {
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.batch.insert(key.as_ref(), value.as_ref());
    }

    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.batch.remove(key.as_ref());
    }
}
