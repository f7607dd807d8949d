//! The on-disk record store: one file per container, written atomically.
//!
//! A record holds everything DEL, CHECK and GC need (the delegates as resolved at ADD and
//! their results), so those commands never depend on the pod, the NAD or the API server.
//! Writes go to a temp file that is fsynced and renamed over the record, and the directory is
//! fsynced, so after a crash a record is either the old or the new version, never half.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cni::CniVersion;
use crate::names::{ContainerId, IfName, PodKey};
use crate::resolve::Delegate;
use crate::status::NetworkStatus;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record store {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("record {path} is unreadable: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// One delegate of a pod and what its ADD returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub delegate: Delegate,
    /// The chain's final ADD result in the delegate's version; `None` while only intended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

/// Everything plexusd knows about one container's attachments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    pub container_id: ContainerId,
    /// The runtime's CNI_IFNAME: with the container id, the identity GC compares.
    pub ifname: IfName,
    pub netns: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodKey>,
    pub runtime_version: CniVersion,
    pub attachments: Vec<Attachment>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_status: Vec<NetworkStatus>,
}

pub struct RecordStore {
    dir: PathBuf,
}

const SUFFIX: &str = ".json";
const TEMP_SUFFIX: &str = ".tmp";

impl RecordStore {
    /// Opens (and creates) the directory, removing temp files a crash left behind.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, RecordError> {
        let dir = dir.into();
        let io_err = |source| RecordError::Io {
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io_err)?;
        for entry in fs::read_dir(&dir).map_err(io_err)?.flatten() {
            if entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &ContainerId) -> PathBuf {
        self.dir.join(format!("{id}{SUFFIX}"))
    }

    pub fn load(&self, id: &ContainerId) -> Result<Option<PodRecord>, RecordError> {
        read_record(&self.path(id))
    }

    pub fn save(&self, record: &PodRecord) -> Result<(), RecordError> {
        let path = self.path(&record.container_id);
        let temp = self
            .dir
            .join(format!("{}{TEMP_SUFFIX}", record.container_id));
        let io_err = |source| RecordError::Io {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| io_err(io::Error::other(e)))?;
        let mut file = File::create(&temp).map_err(io_err)?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(io_err)?;
        fs::rename(&temp, &path).map_err(io_err)?;
        self.sync_dir()
    }

    /// Removes the record; a record that is already gone is fine (DEL is idempotent).
    pub fn remove(&self, id: &ContainerId) -> Result<(), RecordError> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RecordError::Io { path, source }),
        }
    }

    /// Every record, for GC. Unreadable records are returned as errors, not skipped silently.
    pub fn list(&self) -> Result<Vec<Result<PodRecord, RecordError>>, RecordError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| RecordError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.to_string_lossy().ends_with(SUFFIX) {
                match read_record(&path) {
                    Ok(Some(record)) => records.push(Ok(record)),
                    Ok(None) => {}
                    Err(e) => records.push(Err(e)),
                }
            }
        }
        Ok(records)
    }

    fn sync_dir(&self) -> Result<(), RecordError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| RecordError::Io {
                path: self.dir.clone(),
                source,
            })
    }
}

fn read_record(path: &Path) -> Result<Option<PodRecord>, RecordError> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| RecordError::Corrupt {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RecordError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}
