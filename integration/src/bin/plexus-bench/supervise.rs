//! Stopping cleanly. The release profile aborts on panic, so Drop guards alone cannot promise
//! cleanup: the bench runs as a worker process under a small supervisor. The worker cleans up
//! through its guards when it fails or is interrupted (Ctrl-C sets a flag it checks between
//! steps); whatever an abort left behind, the supervisor removes afterwards: the network
//! namespaces named after the worker's PID (and, by PID, the processes still in them) and the
//! worker's temp dir.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, SigHandler, Signal};
use nix::unistd::Pid;

/// Set in the worker's environment.
pub const WORKER_VAR: &str = "PLEXUS_BENCH_WORKER";

/// SIGINT/SIGTERM received so far.
static SIGNALS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(_: std::ffi::c_int) {
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// SIGINT and SIGTERM only count; the code checks [`interrupted`] where it can stop.
pub fn catch_signals() {
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only touches an atomic, which is async-signal-safe.
        unsafe { signal::signal(sig, SigHandler::Handler(on_signal)) }.expect("install handler");
    }
}

pub fn interrupted() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}

/// `Err` once interrupted, for `?` between steps.
pub fn check() -> Result<(), String> {
    if interrupted() {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

/// How long the worker may take to clean up after the first Ctrl-C before it is killed.
const GRACE: Duration = Duration::from_secs(60);

/// Runs the worker (this program again, with the same arguments) and cleans up after it.
pub fn supervise() -> ExitCode {
    catch_signals();
    let run_dir = match tempfile::Builder::new().prefix("plexus-bench-").tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("plexus-bench: cannot create a temp dir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let exe = std::env::current_exe().expect("own path");
    let spawned = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(WORKER_VAR, "1")
        .env("TMPDIR", run_dir.path())
        // Always the in-process test API server: it is what counts requests.
        .env_remove(plexus_integration::cluster::KUBECONFIG_VAR)
        // Its own process group: Ctrl-C reaches this process only, which forwards it, so the
        // worker's plexusd processes are stopped by the worker, in order.
        .process_group(0)
        .spawn();
    let mut worker = match spawned {
        Ok(child) => child,
        Err(e) => {
            eprintln!("plexus-bench: cannot start the worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pid = Pid::from_raw(worker.id() as i32);
    let mut forwarded = 0;
    let mut deadline: Option<Instant> = None;
    let status = loop {
        match worker.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => {
                eprintln!("plexus-bench: waiting for the worker: {e}");
                break None;
            }
        }
        let seen = SIGNALS.load(Ordering::SeqCst);
        if seen > forwarded {
            forwarded = seen;
            if seen == 1 {
                eprintln!("plexus-bench: interrupted; cleaning up (Ctrl-C again to kill)");
                let _ = signal::kill(pid, Signal::SIGINT);
                deadline = Some(Instant::now() + GRACE);
            } else {
                let _ = signal::kill(pid, Signal::SIGKILL);
            }
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = signal::kill(pid, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    sweep(worker.id());
    remove_dir(run_dir.path());
    match status {
        Some(status) if status.success() => ExitCode::SUCCESS,
        Some(status) if status.code().is_none() => {
            eprintln!("plexus-bench: the worker died ({status})");
            ExitCode::FAILURE
        }
        Some(status) => ExitCode::from(status.code().unwrap_or(1) as u8),
        None => ExitCode::FAILURE,
    }
}

/// `plx<role><pid>-<n>`, as `plexus_integration::unique` names the worker's namespaces.
fn is_workers(name: &str, pid: u32) -> bool {
    let Some(rest) = name.strip_prefix("plx") else {
        return false;
    };
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_lowercase());
    rest.strip_prefix(&format!("{pid}-"))
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

fn ip(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Removes the worker's namespaces that are still there, stopping the processes in them.
fn sweep(worker: u32) {
    let listing = ip(&["netns", "list"]);
    let names: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| is_workers(n, worker))
        .collect();
    for name in names {
        let pids = |name: &str| -> Vec<Pid> {
            ip(&["netns", "pids", name])
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .map(Pid::from_raw)
                .collect()
        };
        for pid in pids(name) {
            eprintln!("plexus-bench: stopping pid {pid} left in {name}");
            let _ = signal::kill(pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while !pids(name).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in pids(name) {
            let _ = signal::kill(pid, Signal::SIGKILL);
        }
        ip(&["netns", "del", name]);
        eprintln!("plexus-bench: removed network namespace {name} left by the worker");
    }
}

fn remove_dir(dir: &Path) {
    if dir.exists() && std::fs::remove_dir_all(dir).is_err() {
        eprintln!("plexus-bench: could not remove {}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_workers_namespaces_are_swept() {
        assert!(super::is_workers("plxnode123-0", 123));
        assert!(super::is_workers("plxpod123-17", 123));
        assert!(!super::is_workers("plxpod1234-17", 123));
        assert!(!super::is_workers("plxpod123-", 123));
        assert!(!super::is_workers("plexus-demo-node-123", 123));
        assert!(!super::is_workers("plxpod123-1x", 123));
    }
}
