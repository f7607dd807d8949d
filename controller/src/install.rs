//! Files plexusd puts on the node: the `plexus` shim in the CNI bin dir (the DaemonSet's init
//! container), and any file that must be replaced whole (the generated conflist).
//!
//! A runtime may exec the shim or read the conflist at any moment, so neither is ever written
//! in place: the new content goes to a temp file in the same directory, is fsynced, and is
//! renamed over the old one. A reader sees the old file or the new one, never half of either.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The shim's file name in the CNI bin dir: the `type` of Plexus's conflist.
pub const SHIM_NAME: &str = "plexus";

/// Copies the shim binary `source` to `bin_dir/plexus` (mode 0755), replacing any older one
/// atomically; creates `bin_dir` when it is missing. Returns the installed path.
pub fn install_shim(source: &Path, bin_dir: &Path) -> io::Result<PathBuf> {
    let mut from = File::open(source).map_err(|e| with_path(e, "cannot open", source))?;
    fs::create_dir_all(bin_dir).map_err(|e| with_path(e, "cannot create", bin_dir))?;
    let target = bin_dir.join(SHIM_NAME);
    replace_file(&target, 0o755, |to| io::copy(&mut from, to).map(drop))?;
    Ok(target)
}

/// Replaces `path` with what `fill` writes, atomically: a temp file next to it (a hidden name
/// with no `.conf`/`.conflist`/`.json` extension, so no runtime ever loads it), created with
/// `mode`, fsynced, renamed over `path`, and the directory fsynced. On failure the temp file
/// is removed and `path` is untouched.
pub fn replace_file(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let (temp, mut file) = create_temp(dir, &name.to_string_lossy(), mode)?;
    let written = fill(&mut file)
        // The umask may have narrowed the mode given at creation.
        .and_then(|()| file.set_permissions(fs::Permissions::from_mode(mode)))
        .and_then(|()| file.flush())
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&temp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(with_path(e, "cannot write", path));
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_path(e, "cannot sync", dir))
}

/// A new temp file in `dir`, named so that two writers (two plexusd pods during a rolling
/// update, both maybe PID 1 in their containers) never share one.
fn create_temp(dir: &Path, name: &str, mode: u32) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut last_error = None;
    for _ in 0..8 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let unique = format!(
            "{}-{nanos:x}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let temp = dir.join(format!(".{name}.{unique}.tmp"));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(with_path(e, "cannot create", &temp)),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no free temp file name")))
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::dir_entries;

    #[test]
    fn the_shim_is_installed_executable_and_replaces_an_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("plexus-new");
        fs::write(&source, b"#!/bin/sh\necho new\n").unwrap();
        let bin = dir.path().join("opt/cni/bin");

        let installed = install_shim(&source, &bin).unwrap();
        assert_eq!(installed, bin.join("plexus"));
        assert_eq!(fs::read(&installed).unwrap(), b"#!/bin/sh\necho new\n");
        let mode = fs::metadata(&installed).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);

        // A runtime that opened the old binary keeps it whole: the new one is a new inode.
        let old = File::open(&installed).unwrap();
        let old_inode = std::os::unix::fs::MetadataExt::ino(&old.metadata().unwrap());
        fs::write(&source, b"#!/bin/sh\necho newer\n").unwrap();
        install_shim(&source, &bin).unwrap();
        assert_eq!(fs::read(&installed).unwrap(), b"#!/bin/sh\necho newer\n");
        let new_inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&installed).unwrap());
        assert_ne!(
            old_inode, new_inode,
            "replaced by rename, not rewritten in place"
        );
        assert_eq!(dir_entries(&bin), ["plexus"], "no temp file is left behind");
    }

    #[test]
    fn a_missing_source_fails_naming_it_and_leaves_the_bin_dir_alone() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("plexus"), b"old").unwrap();
        let err = install_shim(&dir.path().join("nope"), dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("nope"), "{err}");
        assert_eq!(fs::read(dir.path().join("plexus")).unwrap(), b"old");
        assert_eq!(dir_entries(dir.path()), ["plexus"]);
    }

    #[test]
    fn a_failed_fill_keeps_the_old_file_and_removes_the_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00-plexus.conflist");
        fs::write(&path, b"old").unwrap();
        let err = replace_file(&path, 0o644, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("00-plexus.conflist"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(dir_entries(dir.path()), ["00-plexus.conflist"]);
    }
}
