//! Where the built `plexusd` and `plexus` binaries are: `make test` builds them before the
//! tests run, in the workspace's target directory next to the test binary.

use std::fs;
use std::path::{Path, PathBuf};

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

/// The shim as shipped, linked statically (`make` builds it into target/static-shim/, see the
/// Makefile), unless the workspace's own build of it is newer: then the shim's code changed
/// since (a bare `cargo nextest run` rebuilds only that one), and the newer code is tested.
pub fn shim() -> PathBuf {
    let workspace = binary("plexus");
    let shipped = static_shim();
    let modified = |path: &Path| fs::metadata(path).and_then(|m| m.modified()).ok();
    match (modified(&shipped), modified(&workspace)) {
        (Some(shipped_at), Some(workspace_at)) if shipped_at >= workspace_at => shipped,
        _ => workspace,
    }
}

/// Where `make` puts the statically linked shim of this profile.
pub fn static_shim() -> PathBuf {
    let dir = target_dir();
    let profile = dir.file_name().expect("profile dir");
    dir.parent()
        .expect("target dir")
        .join("static-shim")
        .join(profile)
        .join("plexus")
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
