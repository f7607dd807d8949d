//! The intent journal: an ADD's intent made durable by one `fdatasync` of blocks already on
//! disk, instead of a record file's create, fsync, rename and directory fsync.
//!
//! A new file's fsync commits the filesystem's journal (its inode, its blocks, its name), and
//! the rename and the directory's fsync commit it again: ~0.45–0.6 ms here, more while other
//! writers share the disk, and the first plugin waits for it (`cni::gate`). A slot of this
//! file was written once when the file was made, so overwriting it changes no metadata a
//! read needs: its `fdatasync` is one data write and a cache flush (~0.12 ms here).
//!
//! Each slot holds one intent (a record as JSON) behind a header with its length and CRC-32,
//! so a slot torn by a crash reads as empty; nothing was fed to a plugin before the
//! `fdatasync` returned, so an intent lost that way covered nothing. A single writer thread
//! takes every intent waiting and makes them durable with one `fdatasync` (group commit).
//! The file is opened for each batch rather than kept open, so that the records disk can
//! still be remounted read-only, as an operator or a test does to a failing disk.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};

use tokio::sync::oneshot;

/// The journal's name in the records directory.
pub const FILE_NAME: &str = "intents.journal";
/// Bytes per slot: an intent is its delegates' configs and a few hundred bytes more (0.5 KiB
/// for one small plugin). One that is larger is saved as an fsynced record file instead.
const SLOT_SIZE: usize = 8 * 1024;
/// How many intents may be in flight at once before the next ones are fsynced as files: an
/// intent holds its slot from before its first plugin until its record is on disk.
const SLOTS: usize = 64;
const MAGIC: [u8; 4] = *b"PXI1";
/// Magic, payload length and CRC-32 of the payload, little-endian.
const HEADER: usize = 12;

/// A reserved slot: the holder writes its intent there and lets go of it once the record the
/// intent stands for is durable.
#[derive(Debug)]
pub struct Slot {
    index: usize,
}

/// What the writer thread does for one intent.
struct Job {
    slot: usize,
    image: Vec<u8>,
    /// Runs first, on the writer thread: writing the record file the intent stands for. When
    /// it fails the intent is not written.
    before: Box<dyn FnOnce() -> io::Result<()> + Send>,
    done: oneshot::Sender<io::Result<()>>,
}

pub struct Journal {
    path: PathBuf,
    free: Mutex<Vec<usize>>,
    jobs: mpsc::Sender<Job>,
}

/// The intents a journal held when plexusd started.
pub struct Found {
    /// Each intent's slot and payload.
    intents: Vec<(usize, Vec<u8>)>,
    /// The file has this layout, so it is kept, and the intents stay in their slots.
    reusable: bool,
}

impl Found {
    /// Reads the journal under `dir`, if there is one.
    pub fn read(dir: &Path) -> io::Result<Self> {
        let bytes = match fs::read(dir.join(FILE_NAME)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let intents = bytes
            .chunks_exact(SLOT_SIZE)
            .enumerate()
            .filter_map(|(index, slot)| Some((index, payload(slot)?.to_vec())))
            .collect();
        Ok(Self {
            intents,
            reusable: bytes.len() == SLOTS * SLOT_SIZE,
        })
    }
}

#[cfg(test)]
impl Found {
    pub fn is_empty(&self) -> bool {
        self.intents.is_empty()
    }
}

impl Journal {
    /// Starts the journal under `dir`: the one `found` there if it has this layout, with the
    /// slots of its intents still reserved (`claim`), or else a new one.
    pub fn start(dir: &Path, found: &Found) -> io::Result<Self> {
        let path = dir.join(FILE_NAME);
        let mut free: Vec<usize> = (0..SLOTS).rev().collect();
        if found.reusable {
            free.retain(|index| !found.intents.iter().any(|(held, _)| held == index));
        } else {
            make(dir, &path)?;
        }
        let (jobs, queue) = mpsc::channel();
        let writer_path = path.clone();
        std::thread::Builder::new()
            .name("plexus-journal".into())
            .spawn(move || write_batches(&writer_path, &queue))?;
        Ok(Self {
            path,
            free: Mutex::new(free),
            jobs,
        })
    }

    /// The intents `found`, each with its slot where `journal` kept it (let go of it once the
    /// intent is settled); without one, an intent lives only as long as this process.
    pub fn claim(journal: Option<&Journal>, found: Found) -> Vec<(Option<Slot>, Vec<u8>)> {
        let kept = journal.is_some() && found.reusable;
        found
            .intents
            .into_iter()
            .map(|(index, payload)| (kept.then_some(Slot { index }), payload))
            .collect()
    }

    /// A free slot for an intent of `len` bytes; `None` when it would not fit or every slot is
    /// taken.
    pub fn reserve(&self, len: usize) -> Option<Slot> {
        if HEADER + len > SLOT_SIZE {
            return None;
        }
        let index = self.free.lock().ok()?.pop()?;
        Some(Slot { index })
    }

    /// Runs `before`, then writes `payload` into `slot`, on the writer thread; the answer
    /// comes once the intent is durable. The slot stays reserved either way: let go of it.
    pub fn commit(
        &self,
        slot: &Slot,
        payload: &[u8],
        before: impl FnOnce() -> io::Result<()> + Send + 'static,
    ) -> oneshot::Receiver<io::Result<()>> {
        let (done, answer) = oneshot::channel();
        let job = Job {
            slot: slot.index,
            image: image(payload),
            before: Box::new(before),
            done,
        };
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            let _ = job
                .done
                .send(Err(io::Error::other("the journal's writer is gone")));
        }
        answer
    }

    /// Frees `slot` once the record its intent stood for is durable, or gone. Its header is
    /// cleared without an fsync: should a crash undo that, the intent is found again and
    /// compared with the record (`RecordStore::open`), which is as new or newer.
    pub fn release(&self, slot: Slot) {
        let cleared = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .and_then(|file| file.write_all_at(&[0; HEADER], offset(slot.index)));
        if let Err(error) = cleared {
            tracing::debug!(slot = slot.index, %error, "intent slot not cleared; a restart compares it with its record");
        }
        if let Ok(mut free) = self.free.lock() {
            free.push(slot.index);
        }
    }
}

/// Writes an empty journal at `path` (replacing any other) and fsyncs it: every block is
/// written now, so that writing a slot later allocates nothing.
fn make(dir: &Path, path: &Path) -> io::Result<()> {
    let temp = dir.join(format!("{FILE_NAME}.tmp"));
    let made = File::create(&temp)
        .and_then(|file| {
            file.write_all_at(&vec![0; SLOTS * SLOT_SIZE], 0)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temp, path))
        .and_then(|()| File::open(dir)?.sync_all());
    if made.is_err() {
        let _ = fs::remove_file(&temp);
    }
    made
}

fn offset(slot: usize) -> u64 {
    (slot * SLOT_SIZE) as u64
}

/// A slot's bytes: the header, then the payload.
fn image(payload: &[u8]) -> Vec<u8> {
    let mut image = Vec::with_capacity(HEADER + payload.len());
    image.extend_from_slice(&MAGIC);
    image.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    image.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    image.extend_from_slice(payload);
    image
}

/// The payload of a slot that holds a whole intent.
fn payload(slot: &[u8]) -> Option<&[u8]> {
    let (header, rest) = slot.split_at(HEADER);
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    if header[..4] != MAGIC {
        return None;
    }
    let payload = rest.get(..word(4) as usize)?;
    (crc32fast::hash(payload) == word(8)).then_some(payload)
}

/// The writer thread: every job waiting is written, then one `fdatasync` covers them all.
/// Ends when the journal is dropped.
fn write_batches(path: &Path, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let batch: Vec<Job> = std::iter::once(first).chain(queue.try_iter()).collect();
        let file = OpenOptions::new().write(true).open(path);
        let mut written = Vec::with_capacity(batch.len());
        for job in batch {
            let outcome = (job.before)().and_then(|()| {
                let file = file.as_ref().map_err(copy)?;
                file.write_all_at(&job.image, offset(job.slot))
            });
            match outcome {
                Ok(()) => written.push(job.done),
                Err(error) => {
                    let _ = job.done.send(Err(error));
                }
            }
        }
        let synced = file
            .as_ref()
            .map_err(copy)
            .and_then(|file| file.sync_data());
        for done in written {
            let _ = done.send(synced.as_ref().map(|_| ()).map_err(copy));
        }
    }
}

/// One error told to several waiters.
fn copy(error: &io::Error) -> io::Error {
    io::Error::new(error.kind(), error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(dir: &Path) -> Journal {
        Journal::start(dir, &Found::read(dir).unwrap()).unwrap()
    }

    /// A journal in a new directory.
    fn new_journal() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let journal = start(dir.path());
        (dir, journal)
    }

    /// What a restart finds: payloads by slot.
    fn found(dir: &Path) -> Vec<(usize, Vec<u8>)> {
        Found::read(dir).unwrap().intents
    }

    /// The journal has all its slots, every block written.
    fn assert_whole(dir: &Path) {
        let file = fs::metadata(dir.join(FILE_NAME)).unwrap();
        assert_eq!(file.len(), (SLOTS * SLOT_SIZE) as u64);
        assert!(std::os::unix::fs::MetadataExt::blocks(&file) * 512 >= file.len());
    }

    async fn commit(journal: &Journal, slot: &Slot, payload: &[u8]) {
        journal
            .commit(slot, payload, || Ok(()))
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn committed_intents_are_found_again_and_released_ones_are_not() {
        let (dir, journal) = new_journal();
        let kept = journal.reserve(5).unwrap();
        let released = journal.reserve(3).unwrap();
        commit(&journal, &kept, b"kept!").await;
        commit(&journal, &released, b"bye").await;
        journal.release(released);

        assert_eq!(found(dir.path()), [(kept.index, b"kept!".to_vec())]);
        assert_whole(dir.path());
    }

    #[tokio::test]
    async fn a_restart_keeps_the_slots_of_the_intents_it_found_until_they_are_let_go_of() {
        let dir = tempfile::tempdir().unwrap();
        let first = start(dir.path());
        let slot = first.reserve(6).unwrap();
        commit(&first, &slot, b"intent").await;

        let restarted = start(dir.path());
        let claimed = Journal::claim(Some(&restarted), Found::read(dir.path()).unwrap());
        assert_eq!(claimed.len(), 1);
        let (held, payload) = claimed.into_iter().next().unwrap();
        let held = held.unwrap();
        assert_eq!(
            (held.index, payload.as_slice()),
            (slot.index, &b"intent"[..])
        );
        // Every other slot is free, that one is not.
        let others: Vec<Slot> = (1..SLOTS).map(|_| restarted.reserve(1).unwrap()).collect();
        assert!(others.iter().all(|other| other.index != held.index));
        assert!(restarted.reserve(1).is_none());
        restarted.release(held);
        assert!(found(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn intents_committed_together_are_all_durable() {
        let (dir, journal) = new_journal();
        let slots: Vec<Slot> = (0..10).map(|_| journal.reserve(8).unwrap()).collect();
        let answers: Vec<_> = slots
            .iter()
            .map(|slot| journal.commit(slot, format!("intent{}", slot.index).as_bytes(), || Ok(())))
            .collect();
        for answer in answers {
            answer.await.unwrap().unwrap();
        }
        assert_eq!(found(dir.path()).len(), 10);
    }

    #[tokio::test]
    async fn a_torn_slot_reads_as_empty() {
        let (dir, journal) = new_journal();
        let slot = journal.reserve(8).unwrap();
        commit(&journal, &slot, b"intended").await;
        // A crash tore the write: the header made it to disk, the payload's end did not.
        let file = OpenOptions::new()
            .write(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap();
        file.write_all_at(b"XX", offset(slot.index) + (HEADER + 6) as u64)
            .unwrap();

        assert!(found(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn a_journal_of_another_layout_is_made_anew_and_its_intents_are_slotless() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = image(b"from an older plexusd");
        old.resize(SLOT_SIZE * 2, 0);
        fs::write(dir.path().join(FILE_NAME), old).unwrap();

        let found = Found::read(dir.path()).unwrap();
        let journal = Journal::start(dir.path(), &found).unwrap();
        let claimed = Journal::claim(Some(&journal), found);
        assert!(
            matches!(claimed.as_slice(), [(None, payload)] if payload == b"from an older plexusd")
        );
        assert_whole(dir.path());
    }

    #[tokio::test]
    async fn an_intent_too_large_or_beyond_the_last_slot_gets_none() {
        let (_dir, journal) = new_journal();
        assert!(journal.reserve(SLOT_SIZE).is_none());
        let all: Vec<Slot> = (0..SLOTS).map(|_| journal.reserve(1).unwrap()).collect();
        assert!(journal.reserve(1).is_none());
        journal.release(all.into_iter().next().unwrap());
        assert!(journal.reserve(1).is_some());
    }

    #[tokio::test]
    async fn a_failed_write_before_the_intent_keeps_the_intent_out() {
        let (dir, journal) = new_journal();
        let slot = journal.reserve(4).unwrap();
        let answer = journal
            .commit(&slot, b"data", || Err(io::Error::other("disk full")))
            .await
            .unwrap();
        assert_eq!(answer.unwrap_err().to_string(), "disk full");
        assert!(found(dir.path()).is_empty());
    }

    #[test]
    fn no_journal_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(found(dir.path()).is_empty());
    }
}
