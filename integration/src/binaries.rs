//! Where the built `plexusd` and `plexus` binaries are: `make test` builds them before the
//! tests run, in the workspace's target directory next to the test binary.

use std::path::PathBuf;

fn target_dir() -> PathBuf {
    // The test binary lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .to_path_buf()
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

/// Debian's reference plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
