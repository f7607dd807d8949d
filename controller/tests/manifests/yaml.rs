//! Reading the repository's YAML manifests.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The workspace root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

/// Every document of every `.yaml` file directly in `dir` (relative to the repository), in
/// file-name order, each with `file#n` to name it in failures.
pub fn documents_in(dir: &str) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let name = file.strip_prefix(repo()).unwrap().display().to_string();
        for (i, doc) in docs.into_iter().enumerate() {
            out.push((format!("{name}#{}", i + 1), doc));
        }
    }
    out
}
