//! The `--state-dir` snapshot: the last good config on disk, so a data plane
//! can start and serve while no control-plane node is reachable.
//!
//! Layout of `config.snapshot`: the magic `TGSTATE\0`, a little-endian u32
//! format version, a u32 CRC32 of the payload, a u64 payload length, then the
//! payload (JSON of the revision and every resource). It is written to a
//! temporary file, fsynced, and renamed over the old one, so a crash leaves
//! either the old or the new snapshot, never a torn one.
//!
//! A background writer (`StateWriter`) coalesces: only the newest config
//! is written, so a burst of updates costs one write and the config stream
//! never waits on the disk.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tollgate_model::{ConfigSet, Resource};

const MAGIC: &[u8; 8] = b"TGSTATE\0";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 8;
const FILE_NAME: &str = "config.snapshot";

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a Tollgate state file (bad magic)")]
    BadMagic { path: PathBuf },
    #[error("{path} has format version {found}; this build reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("{path} is truncated: {expected} payload bytes announced, {found} present")]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{path} is corrupt: checksum mismatch")]
    Checksum { path: PathBuf },
    #[error("{path} is corrupt: {source}")]
    Payload {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Serialize, Deserialize)]
struct Payload {
    revision: u64,
    resources: Vec<Resource>,
}

pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Read the snapshot in `dir`. `Ok(None)` when there is none yet.
pub fn load(dir: &Path) -> Result<Option<ConfigSet>, StateFileError> {
    let path = path_in(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateFileError::Io { path, source }),
    };
    decode(&bytes, &path).map(Some)
}

fn decode(bytes: &[u8], path: &Path) -> Result<ConfigSet, StateFileError> {
    let path = || path.to_path_buf();
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err(StateFileError::BadMagic { path: path() });
    }
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    let version = u32_at(8);
    if version != VERSION {
        return Err(StateFileError::Version {
            path: path(),
            found: version,
        });
    }
    let crc = u32_at(12);
    let len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(StateFileError::Truncated {
            path: path(),
            expected: len,
            found: payload.len() as u64,
        });
    }
    if crc32fast::hash(payload) != crc {
        return Err(StateFileError::Checksum { path: path() });
    }
    let p: Payload = serde_json::from_slice(payload).map_err(|source| StateFileError::Payload {
        path: path(),
        source,
    })?;
    Ok(ConfigSet {
        revision: p.revision,
        resources: p.resources.into_iter().map(|r| (r.key(), r)).collect(),
    })
}

fn encode(config: &ConfigSet) -> Vec<u8> {
    let payload = serde_json::to_vec(&Payload {
        revision: config.revision,
        resources: config.resources.values().cloned().collect(),
    })
    .expect("resources serialize");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Write `config` atomically into `dir`.
pub fn store(dir: &Path, config: &ConfigSet) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&encode(config))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path_in(dir))?;
    // The rename is durable only once the directory entry is.
    std::fs::File::open(dir)?.sync_all()
}

/// Keeps the state file up to date from a background thread. Writes are
/// coalesced: only the newest config is written, so a burst of updates
/// costs one write, and the config stream never waits on the disk.
#[derive(Clone)]
pub struct StateWriter {
    tx: tokio::sync::watch::Sender<Option<ConfigSet>>,
}

impl StateWriter {
    pub fn spawn(dir: PathBuf) -> Self {
        let (tx, mut rx) = tokio::sync::watch::channel::<Option<ConfigSet>>(None);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(config) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let dir = dir.clone();
                let revision = config.revision;
                let res = tokio::task::spawn_blocking(move || store(&dir, &config)).await;
                match res {
                    Ok(Ok(())) => tracing::debug!(revision, "state file written"),
                    Ok(Err(e)) => {
                        tracing::warn!(revision, error = %e, "writing the state file failed")
                    }
                    Err(e) => tracing::warn!(error = %e, "state file writer panicked"),
                }
            }
        });
        Self { tx }
    }

    pub fn save(&self, config: &ConfigSet) {
        self.tx.send_replace(Some(config.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_model::docs::Tenant;

    fn sample() -> ConfigSet {
        let t = Resource::Tenant(Tenant {
            id: "acme".into(),
            name: "Acme".into(),
        });
        ConfigSet {
            revision: 42,
            resources: [(t.key(), t)].into_iter().collect(),
        }
    }

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        store(dir.path(), &sample()).unwrap();
        assert_eq!(load(dir.path()).unwrap().unwrap(), sample());
    }

    #[test]
    fn refuses_corruption_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), &sample()).unwrap();
        let path = path_in(dir.path());
        let good = std::fs::read(&path).unwrap();

        let mut flipped = good.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x20;
        std::fs::write(&path, &flipped).unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(StateFileError::Checksum { .. })
        ));

        std::fs::write(&path, &good[..good.len() - 3]).unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(StateFileError::Truncated { .. })
        ));

        std::fs::write(&path, b"garbage that is long enough to have a header").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(StateFileError::BadMagic { .. })
        ));

        let mut future = good.clone();
        future[8] = 9;
        std::fs::write(&path, &future).unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(StateFileError::Version { .. })
        ));
    }
}
