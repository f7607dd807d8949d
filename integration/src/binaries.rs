//! Where the built `plexusd` and `plexus` binaries are: `make test` builds them before the
//! tests run, in the workspace's target directory next to the test binary.

use std::path::PathBuf;

fn target_dir() -> PathBuf {
    // A test binary lives in target/<profile>/deps/, a bin of this crate (the demos) in
    // target/<profile>/ itself.
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().expect("target dir");
    match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().expect("target dir").to_path_buf(),
        _ => dir.to_path_buf(),
    }
}

fn binary(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo build --workspace --bins`, as `make test` does)",
        path.display()
    );
    path
}

pub fn plexusd() -> PathBuf {
    binary("plexusd")
}

pub fn shim() -> PathBuf {
    binary("plexus")
}

/// The test stand-in for the flannel CNI plugin (`src/bin/flannel.rs`).
pub fn flannel() -> PathBuf {
    binary("flannel")
}

/// The test delegate that takes devices by id (`src/bin/netdev.rs`).
pub fn netdev() -> PathBuf {
    binary("netdev")
}

/// Debian's reference plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
