//! A node's records directory on a small tmpfs of its own, mounted in a private mount
//! namespace, so a test can fill the disk or make it read-only under plexusd without touching
//! the machine's mounts.
//!
//! A holder process (`unshare --mount … sleep`) keeps the namespace, and with it the tmpfs,
//! alive across plexusd restarts; plexusd is started inside it with `nsenter`. From here the
//! tmpfs is reached through `/proc/<holder>/root`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RecordsMount {
    holder: Child,
    /// The tmpfs mount point, as plexusd sees it.
    mount_point: PathBuf,
}

impl RecordsMount {
    /// Mounts a tmpfs of `size_kib` at `mount_point` (created here) in a new mount namespace.
    pub fn new(mount_point: &Path, size_kib: u64) -> Self {
        std::fs::create_dir_all(mount_point).expect("mkdir the records mount point");
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start the mount namespace holder");
        let mount = Self {
            holder,
            mount_point: mount_point.to_owned(),
        };
        mount.wait_for_own_namespace();
        mount.nsenter(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size_kib}k,mode=0700"),
            "plexus-records",
            &mount_point.display().to_string(),
        ]);
        mount
    }

    fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// `unshare` execs `sleep` once it has its namespace; until then the holder shares ours.
    fn wait_for_own_namespace(&self) {
        let ours = std::fs::read_link("/proc/self/ns/mnt").expect("own mount namespace");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let theirs = std::fs::read_link(format!("/proc/{}/ns/mnt", self.pid()));
            let comm = std::fs::read_to_string(format!("/proc/{}/comm", self.pid()));
            if theirs.is_ok_and(|t| t != ours) && comm.is_ok_and(|c| c.trim() == "sleep") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the mount namespace holder never started"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn nsenter(&self, args: &[&str]) {
        let pid = self.pid().to_string();
        let mut all = vec!["-t", &pid, "-m", "--"];
        all.extend_from_slice(args);
        crate::run("nsenter", &all);
    }

    /// A command that runs `program` inside the mount namespace (nsenter execs it, so the
    /// child's PID is the program's).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .args(["-t", &self.pid().to_string(), "-m", "--"])
            .arg(program);
        command
    }

    /// `path` (inside the tmpfs, as plexusd names it) as this process reaches it.
    pub fn seen_from_here(&self, path: &Path) -> PathBuf {
        let relative = path.strip_prefix("/").unwrap_or(path);
        PathBuf::from(format!("/proc/{}/root", self.pid())).join(relative)
    }

    fn filler(&self) -> PathBuf {
        self.seen_from_here(&self.mount_point.join("filler"))
    }

    /// Fills the tmpfs to the last block: every write under it fails with ENOSPC.
    pub fn fill(&self) {
        // A read-only disk cannot be filled, and needs not be.
        let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
        else {
            return;
        };
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {}
        // The last partial block, byte by byte.
        while file.write_all(&[0]).is_ok() {}
    }

    /// Frees the space `fill` took.
    pub fn drain(&self) {
        let _ = std::fs::remove_file(self.filler());
    }

    /// Makes the tmpfs read-only or writable again. `mount -o remount` also flags the mount
    /// itself, and a mount namespace made while it was read-only (plexusd's, by `ip netns
    /// exec`, when it started then) keeps that flag: `also_in` names such a process, whose
    /// namespace is made writable too.
    pub fn set_read_only(&self, read_only: bool, also_in: Option<u32>) {
        let options = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        let mount_point = self.mount_point.display().to_string();
        if read_only {
            // A file open for writing (a record being saved) makes the remount fail with
            // EBUSY: try again a little later, and give up if the disk stays busy.
            let pid = self.pid().to_string();
            for _ in 0..50 {
                let done = Command::new("nsenter")
                    .args(["-t", &pid, "-m", "--", "mount", "-o", options, &mount_point])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if done {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            return;
        }
        self.nsenter(&["mount", "-o", options, &mount_point]);
        if let (false, Some(pid)) = (read_only, also_in) {
            // Best effort: the process may be gone, or its mount writable already.
            let _ = Command::new("nsenter")
                .args(["-t", &pid.to_string(), "-m", "--"])
                .args(["mount", "-o", options, &mount_point])
                .output();
        }
    }
}

impl Drop for RecordsMount {
    fn drop(&mut self) {
        // The tmpfs goes with the last process in the namespace.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
