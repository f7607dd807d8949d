//! Delegates that an earlier plexusd left running when it died (a SIGKILL, an OOM kill).
//!
//! A delegate is not killed with plexusd: a plugin stopped halfway through its ADD can leave
//! what its own DEL cannot find (a veth still under its temporary name, say), while one left
//! to finish leaves exactly what the record's DEL undoes. But one that hangs must not run
//! forever, and its deadline died with the plexusd that was keeping it. So every delegate
//! carries its owner in its environment, and a starting plexusd finds the delegates of its
//! owner still running, waits for them before it serves, and kills each that is still running
//! when its deadline, counted from its own start, is up.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The variable that names a delegate's owner: plexusd's records directory, which one
/// plexusd alone uses.
pub const OWNER_VAR: &str = "PLEXUS_DELEGATE_OF";

/// `/proc/<pid>/stat` counts in USER_HZ, which Linux fixes at 100 for user space.
const TICKS_PER_SECOND: u64 = 100;

/// A running delegate of an earlier plexusd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub pid: i32,
    /// When it started, in ticks since boot: tells it apart from a later process that got
    /// the same PID.
    start_ticks: u64,
    /// How long it has been running.
    pub age: Duration,
}

/// The running delegates whose owner is `owner`, other than this process's own children.
pub fn find(owner: &str) -> Vec<Orphan> {
    find_in(Path::new("/proc"), owner)
}

fn find_in(proc: &Path, owner: &str) -> Vec<Orphan> {
    let marker = format!("{OWNER_VAR}={owner}");
    let Some(now_ticks) = uptime_ticks(proc) else {
        return Vec::new();
    };
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid: i32 = name.parse().ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let owned = environ
                .split(|b| *b == 0)
                .any(|var| var == marker.as_bytes());
            if !owned {
                return None;
            }
            let (parent, start_ticks) = stat(&entry.path())?;
            // A delegate this plexusd started (none at start-up, but say so).
            if parent == me {
                return None;
            }
            let age = Duration::from_millis(
                now_ticks.saturating_sub(start_ticks) * 1000 / TICKS_PER_SECOND,
            );
            Some(Orphan {
                pid,
                start_ticks,
                age,
            })
        })
        .collect()
}

fn uptime_ticks(proc: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(proc.join("uptime")).ok()?;
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((seconds * TICKS_PER_SECOND as f64) as u64)
}

/// The parent PID and the start time (ticks since boot) from `/proc/<pid>/stat`.
fn stat(dir: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(dir.join("stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields follow the last ')'.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    // state is field 3 of stat(5), ppid 4, starttime 22: here 0, 1 and 19.
    let parent = fields.get(1)?.to_string();
    let start_ticks = fields.get(19)?.parse().ok()?;
    Some((parent, start_ticks))
}

/// Waits until every orphan has finished, killing the process group of each that is still
/// running when it has run for `deadline`, as the plexusd that started it would have. Until
/// then nothing may be served: a DEL or GC now would race the orphan's own ADD and leave
/// what it creates after the DEL.
pub async fn settle(orphans: Vec<Orphan>, deadline: Duration) {
    let waits = orphans.into_iter().map(|orphan| async move {
        tracing::warn!(
            pid = orphan.pid,
            age_ms = orphan.age.as_millis() as u64,
            "a delegate of the previous plexusd is still running; waiting for it (at most until its deadline) before serving"
        );
        let due = tokio::time::Instant::now() + deadline.saturating_sub(orphan.age);
        while orphan.running() {
            if tokio::time::Instant::now() >= due {
                tracing::warn!(pid = orphan.pid, "killing a delegate of the previous plexusd at its deadline");
                // The delegate leads its own process group, as every delegate does.
                let _ = killpg(Pid::from_raw(orphan.pid), Signal::SIGKILL);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    futures::future::join_all(waits).await;
}

impl Orphan {
    /// Still there (and not a zombie waiting for init), and not a later process on its PID.
    fn running(&self) -> bool {
        let dir = Path::new("/proc").join(self.pid.to_string());
        let zombie = std::fs::read_to_string(dir.join("stat")).is_ok_and(|text| {
            text.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        });
        !zombie && stat(&dir).is_some_and(|(_, start)| start == self.start_ticks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /proc with one process: its environ, and a stat line whose name has a ')'.
    fn fake_proc(pid: i32, environ: &str, parent: u32, start_ticks: u64) -> tempfile::TempDir {
        let proc = tempfile::tempdir().unwrap();
        std::fs::write(proc.path().join("uptime"), "1000.50 1.00\n").unwrap();
        let dir = proc.path().join(pid.to_string());
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("environ"), environ.replace(';', "\0")).unwrap();
        std::fs::write(
            dir.join("stat"),
            format!("{pid} (odd) name) S {parent} {pid} {pid} 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 {start_ticks} 0 0"),
        )
        .unwrap();
        proc
    }

    #[test]
    fn a_delegate_of_this_owner_is_found_with_its_age() {
        let proc = fake_proc(
            42,
            "CNI_COMMAND=ADD;PLEXUS_DELEGATE_OF=/var/lib/plexus/records;",
            1,
            99_050,
        );
        let found = find_in(proc.path(), "/var/lib/plexus/records");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, 42);
        assert_eq!(found[0].age, Duration::from_secs(10));
    }

    #[test]
    fn another_owners_delegates_and_other_processes_are_not_found() {
        let other = fake_proc(42, "PLEXUS_DELEGATE_OF=/other/records;", 1, 99_050);
        assert!(find_in(other.path(), "/var/lib/plexus/records").is_empty());
        let plain = fake_proc(43, "PATH=/bin;", 1, 99_050);
        assert!(find_in(plain.path(), "/var/lib/plexus/records").is_empty());
        let prefix = fake_proc(
            44,
            "PLEXUS_DELEGATE_OF=/var/lib/plexus/records-2;",
            1,
            99_050,
        );
        assert!(find_in(prefix.path(), "/var/lib/plexus/records").is_empty());
    }
}
