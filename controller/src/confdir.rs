//! The CNI conf dir: where the cluster network's config lives, and where a NAD with an empty
//! `spec.config` finds its network (NPWG §3.4.1).

use std::path::{Path, PathBuf};

use crate::cni::NetworkConfig;

/// The plugin type of Plexus's own conflist, which is never the cluster network.
pub const PLEXUS_TYPE: &str = "plexus";

/// Meta-plugins that are never the cluster network either: a Multus config left on a node
/// that moved to Plexus must not be mistaken for it.
const META_TYPES: [&str; 3] = [PLEXUS_TYPE, "multus", "multus-shim"];

#[derive(Debug, thiserror::Error)]
pub enum ConfDirError {
    #[error("cannot read CNI conf dir {dir}: {source}")]
    Unreadable {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("no CNI network named {name:?} in {dir}")]
    NoSuchNetwork { dir: PathBuf, name: String },
    #[error("CNI config {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("no cluster network: {dir} holds no CNI config besides Plexus's own")]
    NoClusterNetwork { dir: PathBuf },
}

/// A network config read from a file.
#[derive(Debug, Clone)]
pub struct ConfFile {
    pub path: PathBuf,
    pub config: NetworkConfig,
    pub bytes: Vec<u8>,
}

impl ConfFile {
    /// Plexus's own config or a Multus one: never a network to attach.
    pub fn is_meta_plugin(&self) -> bool {
        self.config
            .plugins
            .iter()
            .any(|p| META_TYPES.contains(&p.plugin_type.as_str()))
    }

    pub fn name(&self) -> Option<&str> {
        self.config.name.as_deref()
    }
}

/// The conf file whose JSON `name` is `name`: a `.conflist` wins over a `.conf`/`.json`, and
/// the file's own name does not matter (NPWG §3.4.1).
pub fn find_by_name(dir: &Path, name: &str) -> Result<ConfFile, ConfDirError> {
    let files = conf_files(dir)?;
    files
        .into_iter()
        .filter(|f| f.name() == Some(name))
        .min_by_key(|f| !is_conflist(&f.path))
        .ok_or_else(|| ConfDirError::NoSuchNetwork {
            dir: dir.to_owned(),
            name: name.to_owned(),
        })
}

/// The cluster network: the one named in plexusd's config, else the first config file (in
/// file-name order, as runtimes pick) that is not a meta-plugin's (Plexus's own, Multus's).
pub fn cluster_network(dir: &Path, name: Option<&str>) -> Result<ConfFile, ConfDirError> {
    if let Some(name) = name {
        return find_by_name(dir, name);
    }
    conf_files(dir)?
        .into_iter()
        .find(|f| !f.is_meta_plugin())
        .ok_or_else(|| ConfDirError::NoClusterNetwork {
            dir: dir.to_owned(),
        })
}

fn is_conflist(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "conflist")
}

/// Every readable config in file-name order; a file that does not parse is logged and skipped,
/// as runtimes skip it.
fn conf_files(dir: &Path) -> Result<Vec<ConfFile>, ConfDirError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ConfDirError::Unreadable {
        dir: dir.to_owned(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist" | "json")
            )
        })
        .collect();
    paths.sort();
    Ok(paths.into_iter().filter_map(read_conf).collect())
}

fn read_conf(path: PathBuf) -> Option<ConfFile> {
    load(&path)
        .map_err(|problem| tracing::warn!(%problem, "CNI config skipped"))
        .ok()
}

/// One config file, by path (Multus's `clusterNetwork` may name one).
pub fn load(path: &Path) -> Result<ConfFile, ConfDirError> {
    let invalid = |reason: String| ConfDirError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
    let config = NetworkConfig::parse(&bytes).map_err(|e| invalid(e.to_string()))?;
    Ok(ConfFile {
        path: path.to_owned(),
        config,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, body: &str) {
        std::fs::write(dir.join(file), body).unwrap();
    }

    #[test]
    fn the_json_name_matches_not_the_file_name_and_a_conflist_wins() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "foo.conf",
            r#"{"cniVersion":"1.0.0","name":"bar","type":"bridge"}"#,
        );
        write(
            dir.path(),
            "10-foo.conf",
            r#"{"cniVersion":"1.0.0","name":"foo","type":"ptp"}"#,
        );
        write(
            dir.path(),
            "99-x.conflist",
            r#"{"cniVersion":"1.0.0","name":"foo","plugins":[{"type":"macvlan"}]}"#,
        );
        let found = find_by_name(dir.path(), "foo").unwrap();
        assert!(found.path.ends_with("99-x.conflist"));
        assert_eq!(
            find_by_name(dir.path(), "bar").unwrap().config.plugins[0].plugin_type,
            "bridge"
        );
        assert!(matches!(
            find_by_name(dir.path(), "nope"),
            Err(ConfDirError::NoSuchNetwork { .. })
        ));
    }

    #[test]
    fn the_cluster_network_is_the_first_config_that_is_not_plexus() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "00-plexus.conflist",
            r#"{"cniVersion":"1.0.0","name":"plexus","plugins":[{"type":"plexus"}]}"#,
        );
        write(dir.path(), "05-broken.conf", "{not json");
        write(
            dir.path(),
            "07-multus.conf",
            r#"{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus"}"#,
        );
        write(
            dir.path(),
            "10-cluster.conflist",
            r#"{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge"}]}"#,
        );
        write(
            dir.path(),
            "20-other.conf",
            r#"{"cniVersion":"1.0.0","name":"other","type":"ptp"}"#,
        );
        assert_eq!(
            cluster_network(dir.path(), None).unwrap().name(),
            Some("cbr0")
        );
        assert_eq!(
            cluster_network(dir.path(), Some("other")).unwrap().name(),
            Some("other")
        );
    }

    #[test]
    fn only_plexus_means_no_cluster_network() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "00-plexus.conflist",
            r#"{"cniVersion":"1.0.0","name":"plexus","plugins":[{"type":"plexus"}]}"#,
        );
        assert!(matches!(
            cluster_network(dir.path(), None),
            Err(ConfDirError::NoClusterNetwork { .. })
        ));
    }
}
