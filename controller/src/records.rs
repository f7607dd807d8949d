//! The on-disk record store: one file per container, written atomically.
//!
//! A record holds everything DEL, CHECK and GC need (the delegates as resolved at ADD and
//! their results), so those commands never depend on the pod, the NAD or the API server.
//! Writes go to a temp file that is fsynced and renamed over the record, and the directory is
//! fsynced, so after a crash a record is either the old or the new version, never half. An
//! ADD's intent is the exception: its file is written without an fsync, and the intent journal
//! (`journal`, `intents`) makes it durable for less; the record is fsynced once the ADD has
//! replied.

mod intents;
mod journal;

pub use intents::Intent;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
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

/// Why a pod has an attachment. Only the pod's own selections follow its annotation
/// (hot-plug); the cluster network and plexusd's default networks stay as ADD made them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Origin {
    /// The cluster network on the runtime's interface (or the pod's
    /// `v1.multus-cni.io/default-network`).
    ClusterNetwork,
    /// One of plexusd's `defaultNetworks`.
    DefaultNetwork,
    /// An entry of the pod's `k8s.v1.cni.cncf.io/networks` annotation.
    Selection,
}

/// A hot-plug change written down before its delegate runs, so that after a crash plexusd
/// knows the attachment is in an unknown state and finishes or undoes the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Pending {
    /// Its ADD is about to run or running; until its result is recorded, it may be half made.
    Attach,
    /// Its DEL is about to run or running, or failed and is retried.
    Detach,
}

/// One delegate of a pod and what its ADD returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub delegate: Delegate,
    /// The chain's final ADD result in the delegate's version; `None` while only intended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// `None` in records written before plexusd recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// A hot-plug change in flight on this attachment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
    /// When the ADD (or hot-plug's attach) was made and how long it took, for
    /// `plexusd inspect`. Absent in records written before Plexus kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<Attached>,
}

/// When an attachment's ADD finished, and how long its chain took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attached {
    pub at: Timestamp,
    /// Unknown for attachments adopted from Multus's cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_us: Option<u64>,
}

impl Attachment {
    /// An attachment about to be made: recorded before its delegate runs.
    pub fn intended(delegate: Delegate) -> Self {
        Self {
            delegate,
            result: None,
            origin: None,
            pending: None,
            attached: None,
        }
    }

    /// An attachment whose ADD returned `result`.
    pub fn added(delegate: Delegate, result: serde_json::Value) -> Self {
        Self {
            result: Some(result),
            ..Self::intended(delegate)
        }
    }

    pub fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = Some(origin);
        self
    }

    pub fn with_pending(mut self, pending: Pending) -> Self {
        self.pending = Some(pending);
        self
    }

    /// The same attachment, saying when its ADD finished and how long it took.
    pub fn at(mut self, attached: Attached) -> Self {
        self.attached = Some(attached);
        self
    }
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
    /// The pod's uid as the runtime (or Multus's cache) gave it: `plexusd inspect` shows it,
    /// and hot-plug acts only on a pod of this uid, so a pod recreated under the same name
    /// never reaches this container. `None` in records from before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Set when the record was adopted from Multus's cache rather than made by an ADD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted: Option<Adoption>,
    pub runtime_version: CniVersion,
    pub attachments: Vec<Attachment>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_status: Vec<NetworkStatus>,
    /// A DEL started and could not delete everything: the pod is being torn down, and
    /// hot-plug keeps out of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
    /// The ADD intent this record carries on, numbered in the order intents were made: after
    /// a crash, an intent in the journal newer than the record file replaces it. `None` for
    /// records not made by an ADD (adopted ones) and those from before the journal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<u64>,
}

/// Where and when a record was adopted from Multus's per-container cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Adoption {
    /// Multus's cache file; Plexus reads it and leaves it where it is.
    pub from: PathBuf,
    pub at: Timestamp,
}

#[derive(Clone)]
pub struct RecordStore {
    dir: PathBuf,
    /// `None` where it could not be made (a full or read-only disk at start): every intent is
    /// then an fsynced record file.
    journal: Option<Arc<journal::Journal>>,
    /// Records that could not be written durably (a full or read-only disk): intents found in
    /// the journal at start, and ADDs' records that could not be settled. They stand for their
    /// files here, and their intents keep their slots, until the container's record is saved
    /// or removed.
    unrestored: Arc<Mutex<HashMap<ContainerId, intents::Unrestored>>>,
}

const SUFFIX: &str = ".json";
const TEMP_SUFFIX: &str = ".tmp";
/// Where `RecordStore::remove` moves a record to be unlinked in the background.
const DELETED_DIR: &str = "deleted";

/// Numbers the records moved to `deleted/`, so that a record removed again before the last
/// one was unlinked does not land on it (renaming over a file unlinks it on the spot).
static BURIED: AtomicU64 = AtomicU64::new(0);

/// A record renamed into place but not yet durable (`RecordStore::publish`).
struct Unsynced {
    file: File,
    dir: PathBuf,
    path: PathBuf,
}

impl Unsynced {
    /// Makes the record durable: its data, then its name. Also right after the record was
    /// removed or replaced meanwhile: the file is then durable for nothing, and harmlessly.
    fn sync(self) -> Result<(), RecordError> {
        self.file
            .sync_all()
            .and_then(|()| File::open(&self.dir)?.sync_all())
            .map_err(|source| RecordError::Io {
                path: self.path,
                source,
            })
    }
}

/// A record as its file holds it: pretty, for the operator who reads it.
fn pretty(record: &PodRecord) -> io::Result<Vec<u8>> {
    serde_json::to_vec_pretty(record).map_err(io::Error::other)
}

impl RecordStore {
    /// Opens (and creates) the directory, removing temp files a crash left behind, starts the
    /// intent journal, and turns the intents a crash left in it into records (`restore`).
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
        sweep_deleted(&dir.join(DELETED_DIR));
        let found = journal::Found::read(&dir).map_err(io_err)?;
        let journal = match journal::Journal::start(&dir, &found) {
            Ok(journal) => Some(Arc::new(journal)),
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "no intent journal: every ADD's intent is fsynced as its record file");
                None
            }
        };
        let store = Self {
            dir,
            journal,
            unrestored: Arc::default(),
        };
        for (slot, payload) in journal::Journal::claim(store.journal.as_deref(), found) {
            store.restore(slot, &payload);
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &ContainerId) -> PathBuf {
        self.dir.join(format!("{id}{SUFFIX}"))
    }

    pub fn load(&self, id: &ContainerId) -> Result<Option<PodRecord>, RecordError> {
        if let Some(stand_in) = self.stand_in(id) {
            return Ok(Some(stand_in));
        }
        read_record(&self.path(id))
    }

    /// Writes `record` and makes it durable (fsync of the file and the directory).
    pub fn save(&self, record: &PodRecord) -> Result<(), RecordError> {
        let id = &record.container_id;
        pretty(record)
            .and_then(|bytes| self.write(id, &bytes, true))
            .map_err(|source| self.io_error(id, source))?;
        self.settle_unrestored(id);
        Ok(())
    }

    /// Writes `record` and renames it into place without waiting for the disk: every read
    /// sees it at once, and a crash may lose it until `Unsynced::sync` returns. Only for a
    /// record an intent in the journal covers meanwhile (`RecordStore::settle_then`).
    fn publish(&self, record: &PodRecord) -> Result<Unsynced, RecordError> {
        let id = &record.container_id;
        let file = pretty(record)
            .and_then(|bytes| self.write_file(id, &bytes, false))
            .map_err(|source| self.io_error(id, source))?;
        self.settle_unrestored(id);
        Ok(Unsynced {
            file,
            dir: self.dir.clone(),
            path: self.path(id),
        })
    }

    /// Writes `bytes` (a record as JSON) to a temp file renamed over `id`'s record; `durable`
    /// fsyncs the file before the rename and the directory after it.
    fn write(&self, id: &ContainerId, bytes: &[u8], durable: bool) -> io::Result<()> {
        self.write_file(id, bytes, durable)?;
        if durable {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }

    /// `write` up to the rename, returning the file renamed.
    fn write_file(&self, id: &ContainerId, bytes: &[u8], durable: bool) -> io::Result<File> {
        let path = self.path(id);
        let temp = self.dir.join(format!("{id}{TEMP_SUFFIX}"));
        let mut file = File::create(&temp)?;
        let written = file
            .write_all(bytes)
            .and_then(|()| if durable { file.sync_all() } else { Ok(()) })
            .and_then(|()| fs::rename(&temp, &path));
        if let Err(error) = written {
            // A full disk takes the inode but not the data: the half-written temp file must
            // not stay behind (only a restart would sweep it otherwise).
            let _ = fs::remove_file(&temp);
            return Err(error);
        }
        Ok(file)
    }

    fn io_error(&self, id: &ContainerId, source: io::Error) -> RecordError {
        RecordError::Io {
            path: self.path(id),
            source,
        }
    }

    /// Removes the record; a record that is already gone is fine (DEL is idempotent). The
    /// directory is not fsynced, so DEL does not wait for the disk: should a crash undo the
    /// removal, the record comes back and the next DEL or GC deletes its attachments again,
    /// which is harmless, since DEL of what is already gone succeeds.
    ///
    /// The record is renamed into `deleted/` and unlinked there once the DEL has replied:
    /// unlinking a file that was fsynced frees its blocks, which costs ext4 0.1 ms (0.4 at
    /// p90) on the DEL's path, the rename a tenth of that. What a crash leaves in `deleted/`
    /// is swept at start. Without `deleted/` (it could not be made) the record is unlinked in
    /// place.
    pub fn remove(&self, id: &ContainerId) -> Result<(), RecordError> {
        let path = self.path(id);
        let buried = self.dir.join(DELETED_DIR).join(format!(
            "{id}.{}{SUFFIX}",
            BURIED.fetch_add(1, Ordering::Relaxed)
        ));
        let removed = match fs::rename(&path, &buried) {
            Ok(()) => {
                unlink_off_path(buried);
                Ok(())
            }
            // ENOENT may mean the record is gone or that `deleted/` is: only the unlink in
            // place tells them apart.
            Err(_) => fs::remove_file(&path),
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(RecordError::Io { path, source }),
        }
        self.settle_unrestored(id);
        Ok(())
    }

    /// Every record, for GC. Unreadable records are returned as errors, not skipped silently.
    pub fn list(&self) -> Result<Vec<Result<PodRecord, RecordError>>, RecordError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| RecordError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let stand_ins = self.stand_ins();
        let mut records: Vec<_> = stand_ins.values().cloned().map(Ok).collect();
        for entry in entries.flatten() {
            let path = entry.path();
            let stood_in =
                record_id(&entry.file_name()).is_some_and(|id| stand_ins.contains_key(&id));
            if path.to_string_lossy().ends_with(SUFFIX) && !stood_in {
                match read_record(&path) {
                    Ok(Some(record)) => records.push(Ok(record)),
                    Ok(None) => {}
                    Err(e) => records.push(Err(e)),
                }
            }
        }
        Ok(records)
    }

    /// The container of every record file (readable or not), for `plexusd inspect`.
    pub fn ids(&self) -> Result<Vec<ContainerId>, RecordError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| RecordError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let stand_ins = self.stand_ins();
        let mut ids: Vec<ContainerId> = entries
            .flatten()
            .filter_map(|e| record_id(&e.file_name()))
            .filter(|id| !stand_ins.contains_key(id))
            .collect();
        ids.extend(stand_ins.into_keys());
        Ok(ids)
    }

    /// How many records there are (unreadable ones included).
    pub fn count(&self) -> usize {
        self.ids().map_or(0, |ids| ids.len())
    }
}

/// Makes `deleted/` and empties it of what a crash left there. A `deleted/` that cannot be
/// made only costs DEL the unlink in place (`RecordStore::remove`).
fn sweep_deleted(deleted: &Path) {
    let _ = fs::remove_dir_all(deleted);
    if let Err(error) = fs::create_dir(deleted) {
        tracing::warn!(dir = %deleted.display(), %error, "DEL will unlink records in place");
    }
}

/// Unlinks a removed record once the DEL has replied, or here when there is no runtime.
fn unlink_off_path(path: PathBuf) {
    crate::background::after_reply(move || {
        let _ = fs::remove_file(path);
    });
}

/// The container whose record a file in the directory is.
fn record_id(file_name: &std::ffi::OsStr) -> Option<ContainerId> {
    let name = file_name.to_string_lossy();
    ContainerId::parse(name.strip_suffix(SUFFIX)?).ok()
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::names::{Namespace, ObjectName};
    use crate::status::StatusDns;
    use crate::testing::chain;
    use crate::testing::dir_entries;

    /// The records directory's entries but the journal and `deleted/`, which are always there.
    pub(super) fn records_in(dir: &Path) -> Vec<String> {
        let mut names = dir_entries(dir);
        names.retain(|name| name != journal::FILE_NAME && name != DELETED_DIR);
        names
    }

    pub(super) fn id(value: &str) -> ContainerId {
        ContainerId::parse(value).unwrap()
    }

    /// A record with every optional part filled in.
    pub(super) fn full_record(container: &str) -> PodRecord {
        let cluster = Delegate::test("cluster", chain("cluster", "1.0.0", &["bridge", "portmap"]))
            .cluster()
            .with_runtime_config(json!({"portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}]}))
            .with_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web");
        let secondary = Delegate::test("ns1/mac", chain("mac", "0.3.1", &["macvlan"]))
            .on("data0")
            .with_runtime_config(json!({"mac": "c2:11:22:33:44:55"}))
            .with_args_cni(json!({"labels": [{"key": "a", "value": "b"}]}))
            .with_default_route(&["192.168.1.1", "fd00::1"]);
        let intended = Delegate::test("ns1/later", chain("later", "1.1.0", &["vlan"])).on("net3");
        PodRecord {
            pod: Some(PodKey {
                namespace: Namespace::parse("ns1").unwrap(),
                name: ObjectName::parse("web").unwrap(),
            }),
            network_status: vec![NetworkStatus {
                name: "ns1/mac".into(),
                interface: Some("data0".into()),
                ips: vec!["192.168.1.5".into(), "fd00::5".into()],
                mac: Some("c2:11:22:33:44:55".into()),
                default: false,
                dns: Some(StatusDns {
                    nameservers: vec!["192.168.1.53".into()],
                    domain: Some("example.test".into()),
                    search: vec![],
                }),
                default_route: Some(vec!["192.168.1.1".into()]),
                device_info: None,
            }],
            pod_uid: Some("0b9e5e3c-2d43-4f7c-9a51-6e1f3c1d2b7a".into()),
            adopted: Some(Adoption {
                from: PathBuf::from("/var/lib/cni/multus").join(container),
                at: Timestamp::from_millis(1_700_000_000_000),
            }),
            deleting: true,
            ..PodRecord::test(
                container,
                vec![
                    Attachment::added(
                        cluster,
                        json!({"cniVersion": "1.0.0", "ips": [{"address": "10.244.0.5/24"}], "x-vendor": [1]}),
                    )
                    .with_origin(Origin::ClusterNetwork)
                    .at(Attached {
                        at: Timestamp::from_millis(1_700_000_000_123),
                        took_us: Some(4321),
                    }),
                    Attachment::added(
                        secondary,
                        json!({"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "192.168.1.5/24"}]}),
                    )
                    .with_pending(Pending::Detach)
                    .at(Attached {
                        at: Timestamp::from_millis(1_700_000_000_456),
                        took_us: None,
                    }),
                    Attachment::intended(intended)
                        .with_origin(Origin::Selection)
                        .with_pending(Pending::Attach),
                ],
            )
        }
    }

    #[test]
    fn a_saved_record_loads_back_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        let record = full_record("c1");
        store.save(&record).unwrap();
        assert_eq!(store.load(&id("c1")).unwrap(), Some(record.clone()));
        // And from a store opened later, as after a restart.
        let reopened = RecordStore::open(dir.path()).unwrap();
        assert_eq!(reopened.load(&id("c1")).unwrap(), Some(record));
    }

    #[test]
    fn a_record_from_before_hot_plug_loads_with_its_new_fields_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        let old = json!({
            "containerId": "c1",
            "ifname": "eth0",
            "netns": "/var/run/netns/c1",
            "runtimeVersion": "1.0.0",
            "attachments": [{
                "delegate": {
                    "network": "cluster", "isDefault": true, "ifname": "eth0", "version": "1.0.0",
                    "config": chain("cluster", "1.0.0", &["bridge"]), "cniArgs": "IgnoreUnknown=1"
                },
                "result": {"cniVersion": "1.0.0"}
            }]
        });
        fs::write(dir.path().join("c1.json"), old.to_string()).unwrap();
        let record = store.load(&id("c1")).unwrap().unwrap();
        assert_eq!(record.pod_uid, None);
        assert!(!record.deleting);
        assert_eq!(record.attachments[0].origin, None);
        assert_eq!(record.attachments[0].pending, None);
        // And a record without them writes none of them, so older plexusd versions read it.
        let written = serde_json::to_value(&record).unwrap();
        for key in ["podUid", "deleting"] {
            assert!(written.get(key).is_none(), "{key} in {written}");
        }
        for key in ["origin", "pending"] {
            assert!(
                written["attachments"][0].get(key).is_none(),
                "{key} in {written}"
            );
        }
    }

    #[test]
    fn a_record_written_before_inspect_and_adoption_existed_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        let mut old = serde_json::to_value(full_record("c1")).unwrap();
        let object = old.as_object_mut().unwrap();
        object.remove("podUid");
        object.remove("adopted");
        for attachment in old["attachments"].as_array_mut().unwrap() {
            attachment.as_object_mut().unwrap().remove("attached");
        }
        fs::write(dir.path().join("c1.json"), old.to_string()).unwrap();
        let loaded = store.load(&id("c1")).unwrap().unwrap();
        assert_eq!(loaded.pod_uid, None);
        assert_eq!(loaded.adopted, None);
        assert!(loaded.attachments.iter().all(|a| a.attached.is_none()));
        assert_eq!(loaded.attachments.len(), 3);
    }

    #[test]
    fn saving_again_replaces_the_record_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path().join("records")).unwrap();
        let mut record = full_record("c1");
        store.save(&record).unwrap();
        record.attachments.truncate(1);
        record.network_status.clear();
        store.save(&record).unwrap();
        assert_eq!(store.load(&id("c1")).unwrap(), Some(record));
        assert_eq!(records_in(store.dir()), ["c1.json"]);
    }

    #[test]
    fn open_removes_temp_files_a_crash_left_and_keeps_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        let record = full_record("c1");
        store.save(&record).unwrap();
        // A crash between writing the temp file and renaming it.
        fs::write(
            dir.path().join("c1.tmp"),
            b"{\"containerId\": \"c1\", \"half",
        )
        .unwrap();
        fs::write(dir.path().join("c2.tmp"), b"").unwrap();
        let reopened = RecordStore::open(dir.path()).unwrap();
        assert_eq!(records_in(dir.path()), ["c1.json"]);
        assert_eq!(reopened.load(&id("c1")).unwrap(), Some(record));
        assert_eq!(reopened.load(&id("c2")).unwrap(), None);
    }

    #[test]
    fn a_missing_record_loads_as_none_and_removing_it_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        assert_eq!(store.load(&id("never")).unwrap(), None);
        store.remove(&id("never")).unwrap();
        store.save(&full_record("c1")).unwrap();
        store.remove(&id("c1")).unwrap();
        assert_eq!(store.load(&id("c1")).unwrap(), None);
        store.remove(&id("c1")).unwrap();
        assert!(records_in(dir.path()).is_empty());
    }

    #[test]
    fn a_removed_record_leaves_nothing_in_the_store_or_in_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        store.save(&full_record("c1")).unwrap();
        store.remove(&id("c1")).unwrap();
        assert_eq!(store.load(&id("c1")).unwrap(), None);
        assert!(records_in(dir.path()).is_empty());
        assert!(dir_entries(&dir.path().join(DELETED_DIR)).is_empty());
    }

    #[tokio::test]
    async fn under_a_runtime_the_record_is_gone_at_once_and_unlinked_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        for _ in 0..3 {
            // The same container again before the last one was unlinked, as a quick
            // ADD-DEL-ADD-DEL does.
            store.save(&full_record("c1")).unwrap();
            store.remove(&id("c1")).unwrap();
            assert_eq!(store.load(&id("c1")).unwrap(), None);
            assert!(records_in(dir.path()).is_empty());
            assert!(store.list().unwrap().is_empty());
        }
        let deleted = dir.path().join(DELETED_DIR);
        let unlinked = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while !dir_entries(&deleted).is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        });
        assert!(
            unlinked.await.is_ok(),
            "left in deleted/: {:?}",
            dir_entries(&deleted)
        );
    }

    #[test]
    fn open_sweeps_what_a_crash_left_in_deleted_and_keeps_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        let record = full_record("c1");
        store.save(&record).unwrap();
        // A crash between a DEL's rename and its unlink.
        let deleted = dir.path().join(DELETED_DIR);
        fs::write(deleted.join("c1.7.json"), b"{}").unwrap();
        fs::write(deleted.join("c2.8.json"), b"{}").unwrap();
        let reopened = RecordStore::open(dir.path()).unwrap();
        assert!(dir_entries(&deleted).is_empty());
        assert_eq!(reopened.load(&id("c1")).unwrap(), Some(record));
        assert_eq!(records_in(dir.path()), ["c1.json"]);
    }

    #[test]
    fn without_deleted_a_record_is_unlinked_in_place() {
        let dir = tempfile::tempdir().unwrap();
        // Something else took the name: the store still opens, and DEL still removes.
        fs::write(dir.path().join(DELETED_DIR), b"not a directory").unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        store.save(&full_record("c1")).unwrap();
        store.remove(&id("c1")).unwrap();
        assert_eq!(store.load(&id("c1")).unwrap(), None);
        assert!(records_in(dir.path()).is_empty());
        store.remove(&id("c1")).unwrap();
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        let mut valid_json_wrong_shape = serde_json::to_value(full_record("c4")).unwrap();
        valid_json_wrong_shape["runtimeVersion"] = json!("0.2.0");
        let cases: [(&str, Vec<u8>); 4] = [
            ("c1", b"{not json".to_vec()),
            ("c2", Vec::new()),
            (
                "c3",
                serde_json::to_vec(&full_record("c3")).unwrap()[..40].to_vec(),
            ),
            ("c4", serde_json::to_vec(&valid_json_wrong_shape).unwrap()),
        ];
        for (name, bytes) in cases {
            let path = dir.path().join(format!("{name}.json"));
            fs::write(&path, bytes).unwrap();
            match store.load(&id(name)) {
                Err(error @ RecordError::Corrupt { .. }) => {
                    let RecordError::Corrupt { path: named, .. } = &error else {
                        unreachable!()
                    };
                    assert_eq!(named, &path);
                    assert!(
                        error.to_string().contains(&path.display().to_string()),
                        "{error}"
                    );
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn list_returns_every_record_and_the_corrupt_ones_as_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        store.save(&full_record("c1")).unwrap();
        store.save(&PodRecord::test("c3", Vec::new())).unwrap();
        let corrupt = dir.path().join("c2.json");
        fs::write(&corrupt, b"{\"containerId\":").unwrap();
        fs::write(dir.path().join("notes.txt"), b"not a record").unwrap();
        fs::write(dir.path().join("c9.tmp"), b"{").unwrap();

        let mut good: Vec<String> = Vec::new();
        let mut bad: Vec<PathBuf> = Vec::new();
        for entry in store.list().unwrap() {
            match entry {
                Ok(record) => good.push(record.container_id.to_string()),
                Err(RecordError::Corrupt { path, .. }) => bad.push(path),
                Err(other) => panic!("{other}"),
            }
        }
        good.sort();
        assert_eq!(good, ["c1", "c3"]);
        assert_eq!(bad, [corrupt]);
    }

    #[test]
    fn a_record_with_a_device_round_trips_and_one_from_before_devices_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        let mut record = full_record("c1");
        record.attachments[1].delegate.device = Some(crate::devices::Device {
            id: "0000:03:00.2".into(),
            resource: Some("example.com/vf".into()),
            source: crate::devices::DeviceSource::DevicePlugin,
            info_file: Some("/run/devinfo/cni/ns1-mac-c1_data0".into()),
        });
        record.network_status[0].device_info = Some(json!({"type": "pci", "version": "1.1.0"}));
        store.save(&record).unwrap();
        assert_eq!(store.load(&id("c1")).unwrap(), Some(record));

        // Written by a plexusd that knew no devices: no device, no device-info keys.
        let old = full_record("c2");
        let text = serde_json::to_string(&old).unwrap();
        assert!(!text.contains("device"), "{text}");
        fs::write(dir.path().join("c2.json"), text).unwrap();
        assert_eq!(store.load(&id("c2")).unwrap(), Some(old));
    }

    #[test]
    fn a_save_that_fails_leaves_no_temp_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        // A directory where the record should go: the rename over it fails, as a write on a
        // full disk would, after the temp file was created.
        fs::create_dir_all(dir.path().join("c1.json/occupied")).unwrap();
        let error = store.save(&full_record("c1")).unwrap_err();
        assert!(matches!(error, RecordError::Io { .. }), "{error}");
        assert_eq!(records_in(dir.path()), ["c1.json"]);
    }

    #[test]
    fn a_store_in_a_file_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("occupied");
        fs::write(&file, b"").unwrap();
        match RecordStore::open(&file) {
            Err(error @ RecordError::Io { .. }) => {
                assert!(
                    error.to_string().contains(&file.display().to_string()),
                    "{error}"
                )
            }
            other => panic!("{:?}", other.map(|s| s.dir().to_owned())),
        }
    }
}
