//! An ADD's intent: made durable through the journal (`journal`), let go of once its record
//! is, and turned back into a record when plexusd starts after a crash.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use super::journal;
use super::{ContainerId, PodRecord, RecordError, RecordStore};

/// What made an ADD's intent durable; let go of it (`RecordStore::settle`) once its record is.
#[derive(Debug)]
#[must_use = "a journaled intent holds its slot until it is let go of"]
pub enum Intent {
    Journaled(journal::Slot),
    /// The record file itself, fsynced: nothing to let go of.
    Filed,
}

/// A record that could not be written durably, standing for its file in this process while
/// its intent keeps its slot: an intent found at start that could not be written as its
/// record, or an ADD's record that could not be settled.
pub(super) struct Unrestored {
    pub(super) record: PodRecord,
    pub(super) slot: Option<journal::Slot>,
}

impl RecordStore {
    /// An intent found in the journal at start. The record file may be missing (a machine
    /// crash lost it from the page cache), unreadable (half written back), older (from an ADD
    /// this one replaced), or the intent's own or newer: the older the file, the more the
    /// intent knows, and DEL of a delegate that never acted is harmless. An intent that cannot
    /// be written as a record stays in its slot and stands for the record meanwhile, so that
    /// plexusd still starts and DEL still finds it.
    pub(super) fn restore(&self, slot: Option<journal::Slot>, payload: &[u8]) {
        let Ok(intent) = serde_json::from_slice::<PodRecord>(payload) else {
            tracing::warn!(dir = %self.dir.display(), "an intent in the journal is not a record; dropped");
            return self.let_go_of(slot);
        };
        let newer_on_disk = match self.load(&intent.container_id) {
            Ok(record) => record.and_then(|r| r.intent) >= intent.intent,
            Err(RecordError::Corrupt { .. }) => false,
            Err(error) => return self.keep_standing_in(intent, slot, &error),
        };
        if newer_on_disk {
            return self.let_go_of(slot);
        }
        match self.save(&intent) {
            Ok(()) => {
                tracing::warn!(container = %intent.container_id, "record restored from the intent journal: a crash lost it before it reached the disk");
                self.let_go_of(slot);
            }
            Err(error) => self.keep_standing_in(intent, slot, &error),
        }
    }

    fn keep_standing_in(
        &self,
        intent: PodRecord,
        slot: Option<journal::Slot>,
        error: &RecordError,
    ) {
        tracing::error!(container = %intent.container_id, %error, "an intent from the journal cannot be written as its record; it stands for it until the container's DEL");
        if let Ok(mut unrestored) = self.unrestored.lock() {
            let id = intent.container_id.clone();
            unrestored.insert(
                id,
                Unrestored {
                    record: intent,
                    slot,
                },
            );
        }
    }

    fn let_go_of(&self, slot: Option<journal::Slot>) {
        if let (Some(slot), Some(journal)) = (slot, &self.journal) {
            journal.release(slot);
        }
    }

    /// Drops the stand-in of a container whose record was saved or removed.
    pub(super) fn settle_unrestored(&self, id: &ContainerId) {
        let gone = self.unrestored.lock().ok().and_then(|mut u| u.remove(id));
        if let Some(gone) = gone {
            self.let_go_of(gone.slot);
        }
    }

    pub(super) fn stand_in(&self, id: &ContainerId) -> Option<PodRecord> {
        let unrestored = self.unrestored.lock().ok()?;
        unrestored.get(id).map(|entry| entry.record.clone())
    }

    /// Every stand-in, by container.
    pub(super) fn stand_ins(&self) -> HashMap<ContainerId, PodRecord> {
        self.unrestored
            .lock()
            .map(|u| {
                u.iter()
                    .map(|(id, entry)| (id.clone(), entry.record.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Writes `record`, an ADD's intent, and makes it durable: into the journal, with the
    /// record file written but not fsynced, or (no free slot, too large, no journal) as an
    /// fsynced record file. Numbers the intent. It is serialized once, compact, for the slot
    /// and the file alike (the record with the results is written pretty). Everything that
    /// can block runs off the async workers, and what is sent to the journal's writer goes
    /// before the first await, so the write is under way before the caller's next future
    /// starts.
    pub async fn save_intent(&self, record: &mut PodRecord) -> Result<Intent, RecordError> {
        record.intent = Some(next_intent());
        let id = record.container_id.clone();
        let io_err = |source| self.io_error(&id, source);
        let payload = serde_json::to_vec(record).map_err(|e| io_err(io::Error::other(e)))?;
        let journaled = self.journal.as_ref().and_then(|journal| {
            let slot = journal.reserve(payload.len())?;
            let (store, id, file) = (self.clone(), id.clone(), payload.clone());
            let durable = journal.commit(&slot, &payload, move || store.write(&id, &file, false));
            Some((journal, slot, durable))
        });
        let Some((journal, slot, durable)) = journaled else {
            let (store, id) = (self.clone(), id.clone());
            return tokio::task::spawn_blocking(move || store.write(&id, &payload, true))
                .await
                .map_err(|join| io_err(io::Error::other(join)))?
                .map(|()| Intent::Filed)
                .map_err(io_err);
        };
        let written = durable
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the journal's writer is gone")));
        match written {
            Ok(()) => Ok(Intent::Journaled(slot)),
            Err(source) => {
                // Nothing may act on an intent that is not durable, so its record file, if
                // it was written before the journal failed, stands for nothing.
                let _ = std::fs::remove_file(self.path(&id));
                journal.release(slot);
                Err(io_err(source))
            }
        }
    }

    /// Saves `record` (fsynced) and lets go of the intent it carries on. When the save fails
    /// the intent stays in the journal, so that a crash still finds it.
    pub fn settle(&self, record: &PodRecord, intent: Intent) -> Result<(), RecordError> {
        self.settle_then(record, intent, || ())
    }

    /// `settle`, calling `visible` as soon as every read sees `record`. A journaled intent
    /// covers a crash until its record is durable, so the record is renamed into place first
    /// and fsynced after `visible`: whoever waits for it (the container's next DEL, queued on
    /// the container's lock) need not wait for the disk's flush as well. A filed intent has no
    /// such cover, so its record is durable before `visible`.
    pub fn settle_then(
        &self,
        record: &PodRecord,
        intent: Intent,
        visible: impl FnOnce(),
    ) -> Result<(), RecordError> {
        let Intent::Journaled(slot) = intent else {
            let saved = self.save(record);
            visible();
            return saved;
        };
        let published = self.publish(record);
        visible();
        match published.and_then(|unsynced| unsynced.sync()) {
            Ok(()) => {
                self.let_go_of(Some(slot));
                Ok(())
            }
            Err(error) => {
                self.keep_unsettled(record, slot);
                Err(error)
            }
        }
    }

    /// After `record` could not be made durable (a full disk, an I/O error): its intent keeps
    /// its slot, so that a crash still finds everything the ADD covered, and the record stands
    /// for its file in this process, until the container's record is next written or removed
    /// (its DEL). Letting the slot go instead would lose the crash's cover; dropping it would
    /// hold it until plexusd restarts, and enough such failures would leave every later intent
    /// without a slot.
    ///
    /// The container's lock is let go of once the record is visible, so its DEL, or a new ADD,
    /// may have run meanwhile; then the record on disk is gone or carries another intent's
    /// number, and the slot is let go of. That is decided under the stand-ins' lock, and
    /// `remove` takes the file away before it drops stand-ins under that lock, so a stand-in
    /// put in before the removal is dropped by it.
    fn keep_unsettled(&self, record: &PodRecord, slot: journal::Slot) {
        let id = &record.container_id;
        // Poisoned (never, nothing panics under it): the slot stays taken until a restart,
        // which keeps the crash's cover.
        let Ok(mut unrestored) = self.unrestored.lock() else {
            return;
        };
        let still_its = match super::read_record(&self.path(id)) {
            Ok(on_disk) => on_disk.is_some_and(|r| r.intent == record.intent),
            // Not readable is not someone else's: keep the cover.
            Err(_) => true,
        };
        if !still_its {
            drop(unrestored);
            return self.let_go_of(Some(slot));
        }
        let stand_in = Unrestored {
            record: record.clone(),
            slot: Some(slot),
        };
        unrestored.insert(id.clone(), stand_in);
    }

    /// Removes the record of an ADD that left nothing attached and lets go of its intent. When
    /// the record cannot be removed, the intent keeps standing with it, as after a failed
    /// settle.
    pub fn remove_settled(&self, record: &PodRecord, intent: Intent) -> Result<(), RecordError> {
        let removed = self.remove(&record.container_id);
        match (&removed, intent) {
            (Ok(()), intent) => self.let_go(intent),
            (Err(_), Intent::Journaled(slot)) => self.keep_unsettled(record, slot),
            (Err(_), Intent::Filed) => {}
        }
        removed
    }

    /// Lets go of an intent whose record is durable, or gone with everything it covered.
    pub fn let_go(&self, intent: Intent) {
        if let Intent::Journaled(slot) = intent {
            self.let_go_of(Some(slot));
        }
    }
}

/// Intent numbers: the clock's nanoseconds, so that they keep growing across restarts, and
/// never the same twice in one run.
fn next_intent() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let next = |last: u64| now.max(last + 1);
    // The closure never declines, so this is always `Ok` with the number before ours.
    let last = LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
        Some(next(last))
    });
    next(last.unwrap_or_else(|last| last))
}

/// The journal's side of a crash: the record file an ADD's intent wrote went with the page
/// cache, or an older one came back, or the intent had already been let go of.
#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;
    use crate::records::tests::{full_record, id, records_in};

    /// A store in a new directory.
    fn new_store() -> (tempfile::TempDir, RecordStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        (dir, store)
    }

    /// A store in a new directory, with `record`'s intent saved.
    async fn with_intent(
        mut record: PodRecord,
    ) -> (tempfile::TempDir, RecordStore, PodRecord, Intent) {
        let (dir, store) = new_store();
        let intent = store.save_intent(&mut record).await.unwrap();
        (dir, store, record, intent)
    }

    /// The record an ADD that started with `intent` finishes with: the same, with results.
    fn with_results(intent: PodRecord) -> PodRecord {
        PodRecord {
            network_status: full_record(intent.container_id.as_str()).network_status,
            ..intent
        }
    }

    /// Reopens the store as plexusd does when it starts after a crash.
    fn after_a_crash(dir: &Path) -> RecordStore {
        RecordStore::open(dir).unwrap()
    }

    #[tokio::test]
    async fn an_intent_is_a_record_at_once_and_survives_the_loss_of_its_file() {
        let (dir, store, record, intent) = with_intent(full_record("c1")).await;
        assert!(matches!(intent, Intent::Journaled(_)), "{intent:?}");
        assert!(record.intent.is_some());
        assert_eq!(store.load(&id("c1")).unwrap().as_ref(), Some(&record));

        fs::remove_file(dir.path().join("c1.json")).unwrap();
        let reopened = after_a_crash(dir.path());
        assert_eq!(reopened.load(&id("c1")).unwrap(), Some(record));
        assert!(journal::Found::read(dir.path()).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_record_file_older_than_the_intent_or_half_written_is_replaced() {
        for stale in [
            serde_json::to_vec(&PodRecord {
                intent: Some(1),
                ..PodRecord::test("c1", Vec::new())
            })
            .unwrap(),
            Vec::new(),
        ] {
            let (dir, _store, record, _intent) = with_intent(full_record("c1")).await;
            fs::write(dir.path().join("c1.json"), stale).unwrap();

            let reopened = after_a_crash(dir.path());
            assert_eq!(reopened.load(&id("c1")).unwrap(), Some(record));
        }
    }

    #[tokio::test]
    async fn the_intent_s_own_record_with_its_results_is_kept() {
        let (dir, store, record, _intent) = with_intent(PodRecord::test("c1", Vec::new())).await;
        let finished = with_results(record);
        store.save(&finished).unwrap();

        let reopened = after_a_crash(dir.path());
        assert_eq!(reopened.load(&id("c1")).unwrap(), Some(finished));
    }

    #[tokio::test]
    async fn a_settled_intent_is_not_restored_after_its_record_was_deleted() {
        let (dir, store, record, intent) = with_intent(full_record("c1")).await;
        store.settle(&record, intent).unwrap();
        store.remove(&id("c1")).unwrap();

        let reopened = after_a_crash(dir.path());
        assert_eq!(reopened.load(&id("c1")).unwrap(), None);
        assert!(records_in(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn a_settling_record_is_seen_before_it_is_durable_and_the_intent_covers_it_meanwhile() {
        let (dir, store, record, intent) = with_intent(PodRecord::test("c1", Vec::new())).await;
        let finished = with_results(record);
        let mut seen = None;
        store
            .settle_then(&finished, intent, || {
                let covered = !journal::Found::read(dir.path()).unwrap().is_empty();
                seen = Some((store.load(&id("c1")).unwrap(), covered));
            })
            .unwrap();
        assert_eq!(seen, Some((Some(finished.clone()), true)));
        assert!(journal::Found::read(dir.path()).unwrap().is_empty());
        assert_eq!(
            after_a_crash(dir.path()).load(&id("c1")).unwrap(),
            Some(finished)
        );
    }

    #[tokio::test]
    async fn a_record_deleted_while_it_settles_stays_deleted() {
        let (dir, store, record, intent) = with_intent(full_record("c1")).await;
        store
            .settle_then(&record, intent, || store.remove(&id("c1")).unwrap())
            .unwrap();
        assert_eq!(store.load(&id("c1")).unwrap(), None);

        let reopened = after_a_crash(dir.path());
        assert_eq!(reopened.load(&id("c1")).unwrap(), None);
        assert!(records_in(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn an_intent_too_large_for_a_slot_is_an_fsynced_record_file() {
        let (_dir, store) = new_store();
        let mut record = full_record("c1");
        record.netns = "x".repeat(16 * 1024);
        let intent = store.save_intent(&mut record).await.unwrap();
        assert!(matches!(intent, Intent::Filed), "{intent:?}");
        assert_eq!(store.load(&id("c1")).unwrap(), Some(record));
    }

    #[tokio::test]
    async fn without_a_journal_every_intent_is_an_fsynced_record_file() {
        let dir = tempfile::tempdir().unwrap();
        // Where the new journal is written first: it cannot be.
        fs::create_dir(dir.path().join(format!("{}.tmp", journal::FILE_NAME))).unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        let mut record = full_record("c1");
        let intent = store.save_intent(&mut record).await.unwrap();
        assert!(matches!(intent, Intent::Filed), "{intent:?}");
        assert_eq!(store.load(&id("c1")).unwrap(), Some(record));
    }

    #[tokio::test]
    async fn an_intent_that_cannot_be_restored_stands_for_its_record_until_removed() {
        let (dir, _store, record, _intent) = with_intent(full_record("c1")).await;
        fs::remove_file(dir.path().join("c1.json")).unwrap();
        // The record cannot be written: a directory has its temp file's name.
        fs::create_dir(dir.path().join("c1.tmp")).unwrap();

        for _ in 0..2 {
            let reopened = after_a_crash(dir.path());
            assert_eq!(reopened.load(&id("c1")).unwrap().as_ref(), Some(&record));
            let listed: Vec<PodRecord> = reopened
                .list()
                .unwrap()
                .into_iter()
                .map(Result::unwrap)
                .collect();
            assert_eq!(listed, std::slice::from_ref(&record));
            assert_eq!(reopened.ids().unwrap(), [id("c1")]);
            assert_eq!(reopened.count(), 1);
        }

        let reopened = after_a_crash(dir.path());
        reopened.remove(&id("c1")).unwrap();
        assert_eq!(reopened.load(&id("c1")).unwrap(), None);
        assert!(journal::Found::read(dir.path()).unwrap().is_empty());
        assert_eq!(after_a_crash(dir.path()).count(), 0);
    }

    #[tokio::test]
    async fn an_intent_the_journal_cannot_take_fails_and_leaves_no_record_file() {
        let (dir, store) = new_store();
        // The journal's file is gone, and nothing can be opened in its place.
        fs::remove_file(dir.path().join(journal::FILE_NAME)).unwrap();
        fs::create_dir(dir.path().join(journal::FILE_NAME)).unwrap();

        let error = store.save_intent(&mut full_record("c1")).await.unwrap_err();
        assert!(matches!(error, RecordError::Io { .. }), "{error}");
        assert_eq!(store.load(&id("c1")).unwrap(), None);
        assert!(records_in(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn an_unwritable_record_fails_the_intent_and_frees_its_slot() {
        let (dir, store) = new_store();
        fs::create_dir(dir.path().join("c1.tmp")).unwrap();
        for _ in 0..100 {
            let error = store.save_intent(&mut full_record("c1")).await.unwrap_err();
            assert!(matches!(error, RecordError::Io { .. }), "{error}");
        }
        fs::remove_dir(dir.path().join("c1.tmp")).unwrap();
        let intent = store.save_intent(&mut full_record("c1")).await.unwrap();
        assert!(matches!(intent, Intent::Journaled(_)), "{intent:?}");
        assert!(after_a_crash(dir.path()).load(&id("c1")).unwrap().is_some());
    }

    /// Makes every write of `container`'s record fail (its temp file's name is taken by a
    /// directory) until the returned guard is dropped.
    fn unwritable(dir: &Path, container: &str) -> impl Drop {
        struct Unblock(std::path::PathBuf);
        impl Drop for Unblock {
            fn drop(&mut self) {
                let _ = fs::remove_dir(&self.0);
            }
        }
        let blocker = dir.join(format!("{container}.tmp"));
        fs::create_dir(&blocker).unwrap();
        Unblock(blocker)
    }

    #[tokio::test]
    async fn a_record_that_cannot_be_settled_stands_for_its_file_and_its_intent_until_its_del() {
        let (dir, store, record, intent) = with_intent(full_record("c1")).await;
        let finished = with_results(record);
        let blocked = unwritable(dir.path(), "c1");
        assert!(store.settle(&finished, intent).is_err());

        assert_eq!(store.load(&id("c1")).unwrap(), Some(finished.clone()));
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(!journal::Found::read(dir.path()).unwrap().is_empty());

        drop(blocked);
        store.remove(&id("c1")).unwrap();
        assert_eq!(store.load(&id("c1")).unwrap(), None);
        assert!(journal::Found::read(dir.path()).unwrap().is_empty());
    }

    #[tokio::test]
    async fn failed_settles_do_not_use_up_the_journal() {
        let (dir, store) = new_store();
        for n in 0..100 {
            let container = format!("c{n}");
            let mut record = full_record(&container);
            let intent = store.save_intent(&mut record).await.unwrap();
            assert!(
                matches!(intent, Intent::Journaled(_)),
                "intent {n}: {intent:?}"
            );
            let blocked = unwritable(dir.path(), &container);
            assert!(store.settle(&with_results(record), intent).is_err());
            drop(blocked);
            store.remove(&id(&container)).unwrap();
        }
        assert!(journal::Found::read(dir.path()).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_record_replaced_while_it_failed_to_settle_is_not_stood_in_for() {
        let (dir, store, record, intent) = with_intent(full_record("c1")).await;
        let mut newer = full_record("c1");
        newer.intent = record.intent.map(|n| n + 1);
        let blocked = unwritable(dir.path(), "c1");
        let settled = store.settle_then(&with_results(record), intent, || {
            // The container's next ADD, once the lock is let go of.
            fs::remove_dir(dir.path().join("c1.tmp")).unwrap();
            store.remove(&id("c1")).unwrap();
            store.save(&newer).unwrap();
        });
        drop(blocked);
        assert!(settled.is_err());
        assert_eq!(store.load(&id("c1")).unwrap(), Some(newer));
        assert!(journal::Found::read(dir.path()).unwrap().is_empty());
    }
}
