//! Following a directory: inotify events, filtered to real changes and left to settle.

use std::path::Path;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// Changes in one directory, for as long as this lives.
pub struct DirChanges {
    _watcher: RecommendedWatcher,
    changes: UnboundedReceiver<()>,
}

impl DirChanges {
    pub fn watch(dir: &Path) -> notify::Result<Self> {
        let (tx, changes) = unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // An error (a queue overflow, say) may hide a change: count it as one.
                if event.as_ref().map_or(true, is_change) {
                    let _ = tx.send(());
                }
            })?;
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(Self {
            _watcher: watcher,
            changes,
        })
    }

    /// Waits for the next change and then until the directory has been quiet for `settle`,
    /// because editors and tools write a file in several steps. `None` when watching ended.
    pub async fn next(&mut self, settle: Duration) -> Option<()> {
        self.changes.recv().await?;
        loop {
            tokio::time::sleep(settle).await;
            let mut more = false;
            while self.changes.try_recv().is_ok() {
                more = true;
            }
            if !more {
                return Some(());
            }
        }
    }
}

/// Opening or reading a file (our own reloads included) changes nothing; notify reports those
/// too, and reacting to them would reload forever.
fn is_change(event: &notify::Event) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reading_a_file_is_not_a_change_but_writing_one_is() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "1").unwrap();
        let mut changes = DirChanges::watch(dir.path()).unwrap();
        std::fs::read(dir.path().join("a")).unwrap();
        let quiet = tokio::time::timeout(
            Duration::from_millis(300),
            changes.next(Duration::from_millis(10)),
        )
        .await;
        assert!(quiet.is_err(), "a read counted as a change");
        std::fs::write(dir.path().join("b"), "2").unwrap();
        let seen = tokio::time::timeout(
            Duration::from_secs(5),
            changes.next(Duration::from_millis(10)),
        )
        .await;
        assert_eq!(seen, Ok(Some(())));
    }
}
