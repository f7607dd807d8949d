//! Test worlds for Plexus: a "node" is a network namespace running its own plexusd, a "pod" is
//! another namespace; nothing is created in the machine's own namespace, and everything is
//! removed again by Drop guards, also when a test fails.

pub mod apiserver;
pub mod binaries;
pub mod cluster;
pub mod containerd;
pub mod cri_bench;
pub mod dra;
pub mod kubelet;
pub mod mounts;
pub mod multus;
pub mod netns;
pub mod node;
pub mod overlay;
pub mod pod;
pub mod podman;
pub mod records_mount;
pub mod shim;
pub mod soak;
pub mod webhook;

pub use netns::Netns;
pub use node::{INTENT_JOURNAL, Node, NodeBuilder};
pub use pod::Pod;
pub use shim::ShimOutput;

use std::process::Command;

/// Runs a command and returns its stdout; panics with its stderr on failure (test code).
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `command` with `stdin` as its standard input and collects stdout and stderr (test
/// code: panics when it cannot be run).
pub fn run_with_stdin(mut command: Command, stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("output")
}

/// A name unique across test processes and tests: `prefix-pid-counter`.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Stops a process we started, by its PID: SIGTERM, and SIGKILL if it is still there after
/// `grace`.
pub fn stop(mut child: std::process::Child, grace: std::time::Duration) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}
