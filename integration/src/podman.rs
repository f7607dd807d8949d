//! Debian's podman with crun, as the image test runs it on this machine kind: in a mount
//! namespace of its own (see [`crate::mounts`]), and every container without cgroups (the
//! machine's hybrid layout) and with rlimits it may set (it lacks CAP_SYS_RESOURCE, so it
//! cannot raise any above the test's own).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `podman ARGS`, in its own mount namespace, with crun.
pub fn podman(args: &[&str]) -> Command {
    let script = format!(
        "set -e\n{}exec podman --runtime crun \"$@\"\n",
        crate::mounts::PRIVATE_MOUNTS
    );
    let mut command = Command::new("unshare");
    command
        .args([
            "-m",
            "--propagation",
            "unchanged",
            "sh",
            "-c",
            &script,
            "podman",
        ])
        .args(args)
        .stdin(Stdio::null());
    command
}

/// Runs `podman ARGS` to completion; its output, panicking with stderr on failure.
pub fn podman_ok(args: &[&str]) -> Output {
    let output = podman(args).output().expect("run podman");
    assert!(
        output.status.success(),
        "podman {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Which network namespace a container gets. There is no default on purpose: podman's own,
/// the `podman` bridge, would create `cni-podman0`, an address, a route and iptables chains in
/// the machine's namespace, where tests may create nothing.
#[derive(Debug, Clone, Copy)]
pub enum Network<'a> {
    /// Only `lo`.
    None,
    /// A namespace the test made (a node's), as a DaemonSet with `hostNetwork` shares its node's.
    Namespace(&'a Path),
}

impl Network<'_> {
    fn flag(self) -> String {
        match self {
            Self::None => "--network=none".to_owned(),
            Self::Namespace(path) => format!("--network=ns:{}", path.display()),
        }
    }
}

/// The `podman run` flags every container needs here, with its network.
pub fn run_flags(network: Network<'_>) -> Vec<String> {
    vec![
        network.flag(),
        "--cgroups=disabled".into(),
        "--ulimit".into(),
        format!("nofile={0}:{0}", open_files_limit().min(65_536)),
        // Not enforced for the privileged root a DaemonSet runs; any value crun may set will do.
        "--ulimit".into(),
        "nproc=4096:4096".into(),
    ]
}

/// Asserts that podman put no network of its own in the machine's namespace: its default
/// bridge (`cni-podman0`, or `podman0` with netavark) appears there the moment a container
/// runs without a [`Network`] of the test's.
pub fn assert_no_bridge_in_the_machine() {
    let links: Vec<String> = std::fs::read_dir("/sys/class/net")
        .expect("/sys/class/net")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("cni-podman") || name.starts_with("podman"))
        .collect();
    assert!(
        links.is_empty(),
        "podman created {links:?} in the machine's namespace"
    );
}

/// This process's hard limit on open files: a container may not get more.
fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(4)?.parse().ok())
        })
        .unwrap_or(1024)
}

/// The repository's root, where `make image` runs.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_owned()
}

/// Why the image cannot be had here, if podman cannot be installed: the one reason the image
/// tests may skip.
pub fn podman_missing() -> Option<String> {
    let output = Command::new("make")
        .arg("-C")
        .arg(repo_root())
        .args([
            "--no-print-directory",
            "deps",
            "APT_PACKAGES=podman iptables netbase",
            "APT_INSTALL_FLAGS=--no-install-recommends",
        ])
        .output()
        .expect("run make deps");
    let installed = Command::new("podman").arg("--version").output();
    match (output.status.success(), installed) {
        (true, Ok(version)) if version.status.success() => None,
        _ => Some(format!(
            "podman could not be installed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )),
    }
}

/// `make image`, once at a time across test processes; what it printed (the image's size
/// among it).
pub fn make_image() -> String {
    let lock = repo_root().join("target").join("image.lock");
    let _ = std::fs::create_dir_all(lock.parent().expect("target dir"));
    let mut make = Command::new("flock");
    make.arg(&lock)
        .args(["make", "--no-print-directory", "-C"])
        .arg(repo_root())
        .args(["image", "IMAGE_PROFILE=debug"]);
    // What cargo and nextest set for a test would make the release build's fingerprints
    // differ from those of a `make image` run by hand, and everything would be rebuilt.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let from_the_runner = (key.starts_with("CARGO") && key != "CARGO_HOME")
            || key.starts_with("NEXTEST")
            || key.starts_with("RUSTUP_TOOLCHAIN")
            || matches!(
                key.as_str(),
                "LD_LIBRARY_PATH" | "RUST_RECURSION_COUNT" | "MAKEFLAGS" | "MFLAGS" | "MAKELEVEL"
            );
        if from_the_runner {
            make.env_remove(&key);
        }
    }
    let output = make.output().expect("run make image");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "make image failed:\n{printed}");
    printed
}

/// Waits until `check` holds, up to `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("never happened: {what}");
}
