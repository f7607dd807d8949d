//! Plexus's own conflist, `00-plexus.conflist`: generated from the node's cluster network
//! config and kept current, as Multus's auto-config does.
//!
//! The runtime uses the first config in its conf dir, and fills `runtimeConfig` only for the
//! capabilities that config declares (SPECS §19), so Plexus's conflist declares every
//! capability of the cluster network, and a version that the runtime already accepts for it
//! (SPECS §2). It is written only once the cluster network's config exists, and removed when
//! that config goes away, so the node reports "network not ready" instead of failing pods
//! (NPWG §6.1). Another CNI rewriting the conf dir, or removing Plexus's file, is undone at once.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::dirwatch::DirChanges;
use serde_json::{Map, Value, json};

use crate::cni::NetworkConfig;
use crate::cni::version::{CniVersion, pick_config_version};
use crate::confdir::{self, ConfDirError, PLEXUS_TYPE};
use crate::install::replace_file;

/// The conflist's file name: sorts before every usual CNI config, so the runtime picks it.
pub const DEFAULT_FILE_NAME: &str = "00-plexus.conflist";
/// The conflist's network `name`.
pub const NETWORK_NAME: &str = "plexus";
/// The version declared when the cluster network's config names none Plexus speaks.
const FALLBACK_VERSION: CniVersion = CniVersion::V1_0_0;
/// Wait this long after a change for a writer to finish before reading the dir.
const SETTLE: Duration = Duration::from_millis(100);
/// Check again this often even without an event (a missed or overflowed inotify queue).
const RESYNC: Duration = Duration::from_secs(60);

/// Plexus's conflist for `cluster`, the cluster network's config:
/// - `cniVersion`: the cluster config's own `cniVersion` (older runtimes such as containerd
///   1.6 read only this key and know nothing past 1.0.0); if it has none Plexus speaks, the
///   highest of its `cniVersions`; else 1.0.0.
/// - `cniVersions`: every version Plexus speaks up to the highest the cluster config uses, so
///   a runtime that reads this key picks for Plexus what it would pick for the cluster network
///   (older runtimes ignore unknown keys).
/// - one plugin, type `plexus`, with the socket and the union of the capabilities any plugin
///   of the cluster network declares true (left out when there are none).
pub fn render(cluster: &NetworkConfig, socket_path: &Path) -> Value {
    let (declared, highest) =
        conflist_versions(cluster).unwrap_or((FALLBACK_VERSION, FALLBACK_VERSION));
    let versions: Vec<&str> = CniVersion::ALL
        .into_iter()
        .filter(|v| *v <= highest)
        .map(CniVersion::as_str)
        .collect();
    let capabilities: Map<String, Value> = cluster
        .plugins
        .iter()
        .flat_map(|p| &p.capabilities)
        .filter(|(_, declared)| **declared)
        .map(|(cap, _)| (cap.clone(), Value::Bool(true)))
        .collect();
    let mut plugin = json!({
        "type": PLEXUS_TYPE,
        "socketPath": socket_path.to_string_lossy(),
    });
    if !capabilities.is_empty() {
        plugin["capabilities"] = Value::Object(capabilities);
    }
    json!({
        "cniVersion": declared.as_str(),
        "cniVersions": versions,
        "name": NETWORK_NAME,
        "plugins": [plugin],
    })
}

/// The `cniVersion` to declare and the highest version to list; `None` when the cluster
/// config names no version Plexus speaks.
fn conflist_versions(cluster: &NetworkConfig) -> Option<(CniVersion, CniVersion)> {
    let highest = pick_config_version(cluster.cni_version.as_deref(), &cluster.cni_versions)?;
    let declared = cluster
        .cni_version
        .as_deref()
        .and_then(|v| CniVersion::parse(v).ok())
        .unwrap_or(highest);
    Some((declared, highest))
}

/// The bytes written for `content`: pretty JSON and a newline.
fn to_bytes(content: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(content).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Writes `content` to `conf_dir/file_name` atomically (temp file in the same dir, fsync,
/// rename), only when the file's bytes differ. Returns whether it wrote.
pub fn write_if_changed(conf_dir: &Path, file_name: &str, content: &Value) -> io::Result<bool> {
    let path = conf_dir.join(file_name);
    let bytes = to_bytes(content);
    if fs::read(&path).is_ok_and(|current| current == bytes) {
        return Ok(false);
    }
    replace_file(&path, 0o644, |file| file.write_all(&bytes))?;
    Ok(true)
}

/// What one [`sync`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The conflist was written from the cluster network's config at `cluster`.
    Written { cluster: PathBuf },
    /// The conflist was already current.
    Unchanged { cluster: PathBuf },
    /// The cluster network's config is gone, so Plexus's conflist was removed.
    Removed { why: String },
    /// No cluster network config yet, and no conflist of Plexus's: nothing is written.
    Waiting { why: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ConflistError {
    #[error(transparent)]
    ConfDir(ConfDirError),
    #[error("cannot update {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Brings `conf_dir/file_name` in line with the cluster network's config once: written when
/// the config exists (and the file differs), removed when it does not.
///
/// `cluster_network` chooses the config as plexusd's `clusterNetwork` does for a conf: an
/// absolute file path, or the JSON `name` of a conf in `conf_dir`; `None` means the first
/// config there that is not Plexus's own. Plexus's own conflist is never the cluster network.
pub fn sync(
    conf_dir: &Path,
    cluster_network: Option<&str>,
    socket_path: &Path,
    file_name: &str,
) -> Result<Outcome, ConflistError> {
    let path = conf_dir.join(file_name);
    let io_err = |source| ConflistError::Io {
        path: path.clone(),
        source,
    };
    let why = match find_cluster_network(conf_dir, cluster_network) {
        Ok((cluster_path, cluster)) => {
            let content = render(&cluster, socket_path);
            if conflist_versions(&cluster).is_none() {
                tracing::warn!(
                    cluster = %cluster_path.display(),
                    version = ?cluster.cni_version,
                    "the cluster network's config names no CNI version Plexus speaks; declaring {FALLBACK_VERSION}"
                );
            }
            let wrote = write_if_changed(conf_dir, file_name, &content).map_err(io_err)?;
            return Ok(if wrote {
                Outcome::Written {
                    cluster: cluster_path,
                }
            } else {
                Outcome::Unchanged {
                    cluster: cluster_path,
                }
            });
        }
        Err(e @ ConfDirError::Unreadable { .. }) => return Err(ConflistError::ConfDir(e)),
        Err(missing) => missing.to_string(),
    };
    match fs::remove_file(&path) {
        Ok(()) => {
            fs::File::open(conf_dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err)?;
            Ok(Outcome::Removed { why })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Outcome::Waiting { why }),
        Err(e) => Err(io_err(e)),
    }
}

fn find_cluster_network(
    conf_dir: &Path,
    cluster_network: Option<&str>,
) -> Result<(PathBuf, NetworkConfig), ConfDirError> {
    let found = match cluster_network {
        Some(file) if Path::new(file).is_absolute() => confdir::load(Path::new(file))?,
        name => confdir::cluster_network(conf_dir, name)?,
    };
    if found.is_meta_plugin() {
        return Err(ConfDirError::NoClusterNetwork {
            dir: conf_dir.to_owned(),
        });
    }
    Ok((found.path, found.config))
}

/// Keeps `conf_dir/file_name` current: a [`sync`] now, again whenever anything in `conf_dir`
/// changes (inotify, settled for 100 ms), and once a minute regardless. Runs until dropped;
/// fails only when `conf_dir` cannot be created or watched.
pub async fn keep_current(
    conf_dir: PathBuf,
    cluster_network: Option<String>,
    socket_path: PathBuf,
    file_name: String,
) -> notify::Result<()> {
    fs::create_dir_all(&conf_dir).map_err(notify::Error::io)?;
    let mut changes = DirChanges::watch(&conf_dir)?;
    tracing::info!(dir = %conf_dir.display(), file = %file_name, "keeping Plexus's conflist current");

    let mut reporter = Reporter::default();
    loop {
        let (dir, cluster, socket, file) = (
            conf_dir.clone(),
            cluster_network.clone(),
            socket_path.clone(),
            file_name.clone(),
        );
        let outcome = tokio::task::spawn_blocking(move || {
            let outcome = sync(&dir, cluster.as_deref(), &socket, &file);
            let shadow = shadowing_config(&dir, &file);
            (outcome, shadow)
        })
        .await;
        if let Ok((outcome, shadow)) = outcome {
            reporter.report(&conf_dir.join(&file_name), outcome, shadow);
        }

        tokio::select! {
            change = changes.next(SETTLE) => {
                if change.is_none() {
                    return Ok(());
                }
            }
            () = tokio::time::sleep(RESYNC) => {}
        }
    }
}

/// A config the runtime would pick instead of Plexus's: one that sorts before it.
fn shadowing_config(conf_dir: &Path, file_name: &str) -> Option<PathBuf> {
    let mut earlier: Vec<PathBuf> = fs::read_dir(conf_dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist" | "json")
            ) && p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().as_ref() < file_name)
        })
        .collect();
    earlier.sort();
    earlier.into_iter().next()
}

/// Logs what changed, not every pass.
#[derive(Default)]
struct Reporter {
    last: Option<String>,
    last_shadow: Option<PathBuf>,
}

impl Reporter {
    fn report(
        &mut self,
        path: &Path,
        outcome: Result<Outcome, ConflistError>,
        shadow: Option<PathBuf>,
    ) {
        let file = path.display();
        let key = match &outcome {
            Ok(Outcome::Written { cluster }) => {
                tracing::info!(%file, cluster = %cluster.display(), "Plexus's conflist written from the cluster network's config");
                None
            }
            Ok(Outcome::Unchanged { .. }) => Some("current".to_owned()),
            Ok(Outcome::Removed { why }) => {
                tracing::warn!(%file, %why, "Plexus's conflist removed: the cluster network's config is gone; the node reports its network not ready until it is back");
                None
            }
            Ok(Outcome::Waiting { why }) => {
                let key = format!("waiting: {why}");
                if self.last.as_ref() != Some(&key) {
                    tracing::info!(%file, %why, "Plexus's conflist not written until the cluster network's config exists");
                }
                Some(key)
            }
            Err(e) => {
                let key = format!("error: {e}");
                if self.last.as_ref() != Some(&key) {
                    tracing::error!(%file, error = %e, "cannot update Plexus's conflist");
                }
                Some(key)
            }
        };
        self.last = key;
        let written = matches!(
            outcome,
            Ok(Outcome::Written { .. } | Outcome::Unchanged { .. })
        );
        let shadow = shadow.filter(|_| written);
        if shadow.is_some() && shadow != self.last_shadow {
            tracing::warn!(
                %file,
                earlier = %shadow.as_deref().unwrap_or(Path::new("")).display(),
                "a CNI config sorts before Plexus's: the runtime uses that one, not Plexus"
            );
        }
        self.last_shadow = shadow;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCKET: &str = "/run/plexus/plexus.sock";

    fn conf(value: Value) -> NetworkConfig {
        NetworkConfig::parse(&serde_json::to_vec(&value).unwrap()).unwrap()
    }

    fn write(dir: &Path, file: &str, value: &Value) {
        fs::write(dir.join(file), serde_json::to_vec(value).unwrap()).unwrap();
    }

    fn read(dir: &Path) -> Option<Value> {
        let bytes = fs::read(dir.join(DEFAULT_FILE_NAME)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn sync_dir(dir: &Path) -> Outcome {
        sync(dir, None, Path::new(SOCKET), DEFAULT_FILE_NAME).unwrap()
    }

    fn flannel() -> Value {
        json!({
            "cniVersion": "0.3.1",
            "name": "cbr0",
            "plugins": [
                {"type": "flannel", "delegate": {"hairpinMode": true, "isDefaultGateway": true}},
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ]
        })
    }

    #[test]
    fn capabilities_are_the_union_of_what_any_plugin_declares_true() {
        let cluster = conf(json!({
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "plugins": [
                {"type": "calico", "capabilities": {"ips": false}},
                {"type": "bandwidth", "capabilities": {"bandwidth": true}},
                {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": true}},
                {"type": "tuning", "capabilities": {"mac": false}},
            ]
        }));
        let rendered = render(&cluster, Path::new(SOCKET));
        assert_eq!(
            rendered,
            json!({
                "cniVersion": "1.0.0",
                "cniVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"],
                "name": "plexus",
                "plugins": [{
                    "type": "plexus",
                    "socketPath": SOCKET,
                    "capabilities": {"bandwidth": true, "portMappings": true},
                }],
            })
        );
        let plain = conf(json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge"}));
        let rendered = render(&plain, Path::new(SOCKET));
        assert!(
            rendered["plugins"][0].get("capabilities").is_none(),
            "{rendered}"
        );
    }

    #[test]
    fn the_version_is_the_one_the_cluster_config_uses() {
        let cases = [
            // containerd 1.6 reads only cniVersion: Plexus declares exactly the cluster's.
            (json!({"cniVersion": "0.3.1"}), "0.3.1", "0.3.1"),
            (json!({"cniVersion": "1.0.0"}), "1.0.0", "1.0.0"),
            (json!({"cniVersion": "1.1.0"}), "1.1.0", "1.1.0"),
            // A runtime reading cniVersions picks for Plexus what it picks for the cluster.
            (
                json!({"cniVersion": "0.4.0", "cniVersions": ["1.0.0", "1.1.0", "2.0.0"]}),
                "0.4.0",
                "1.1.0",
            ),
            (json!({"cniVersions": ["0.3.1", "1.0.0"]}), "1.0.0", "1.0.0"),
            (
                json!({"cniVersion": "9.9.9", "cniVersions": ["0.4.0"]}),
                "0.4.0",
                "0.4.0",
            ),
            // Nothing Plexus speaks: the fallback.
            (json!({}), "1.0.0", "1.0.0"),
            (json!({"cniVersion": "0.2.0"}), "1.0.0", "1.0.0"),
        ];
        for (versions, declared, highest) in cases {
            let mut value = json!({"name": "cluster", "plugins": [{"type": "bridge"}]});
            for (k, v) in versions.as_object().unwrap() {
                value[k] = v.clone();
            }
            let rendered = render(&conf(value), Path::new(SOCKET));
            assert_eq!(rendered["cniVersion"], declared, "{versions}");
            let listed = rendered["cniVersions"].as_array().unwrap();
            assert_eq!(listed.last().unwrap(), highest, "{versions}");
            assert_eq!(listed.first().unwrap(), "0.3.0", "{versions}");
            assert!(listed.contains(&rendered["cniVersion"]), "{versions}");
        }
    }

    #[test]
    fn the_conflist_parses_as_a_plexus_network_config() {
        let rendered = render(&conf(flannel()), Path::new(SOCKET));
        let parsed = NetworkConfig::parse(&to_bytes(&rendered)).unwrap();
        assert_eq!(parsed.name.as_deref(), Some("plexus"));
        assert_eq!(parsed.plugins.len(), 1);
        assert_eq!(parsed.plugins[0].plugin_type, PLEXUS_TYPE);
        assert!(parsed.declares("portMappings"));
    }

    #[test]
    fn unchanged_content_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let content = render(&conf(flannel()), Path::new(SOCKET));
        assert!(write_if_changed(dir.path(), DEFAULT_FILE_NAME, &content).unwrap());
        let path = dir.path().join(DEFAULT_FILE_NAME);
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
        assert!(!write_if_changed(dir.path(), DEFAULT_FILE_NAME, &content).unwrap());
        let after = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
        assert_eq!(inode, after, "the file was not replaced");
        let mode = fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o644
        );

        fs::write(&path, b"{}").unwrap();
        assert!(write_if_changed(dir.path(), DEFAULT_FILE_NAME, &content).unwrap());
        assert_eq!(fs::read(&path).unwrap(), to_bytes(&content));
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file is left behind");
    }

    #[test]
    fn nothing_is_written_without_a_cluster_network() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(sync_dir(dir.path()), Outcome::Waiting { .. }));
        assert_eq!(read(dir.path()), None);
        // A named cluster network that is not there yet does not fall back to another.
        write(
            dir.path(),
            "10-other.conf",
            &json!({"cniVersion": "1.0.0", "name": "other", "type": "ptp"}),
        );
        let outcome = sync(
            dir.path(),
            Some("cbr0"),
            Path::new(SOCKET),
            DEFAULT_FILE_NAME,
        );
        assert!(
            matches!(outcome, Ok(Outcome::Waiting { .. })),
            "{outcome:?}"
        );
        assert_eq!(read(dir.path()), None);
    }

    #[test]
    fn the_cluster_network_is_never_plexus_itself() {
        let dir = tempfile::tempdir().unwrap();
        let ours =
            json!({"cniVersion": "1.0.0", "name": "plexus", "plugins": [{"type": "plexus"}]});
        write(dir.path(), "99-stale-plexus.conflist", &ours);
        assert!(matches!(sync_dir(dir.path()), Outcome::Waiting { .. }));
        let path = dir.path().join("99-stale-plexus.conflist");
        let by_path = sync(
            dir.path(),
            Some(path.to_str().unwrap()),
            Path::new(SOCKET),
            DEFAULT_FILE_NAME,
        );
        assert!(
            matches!(by_path, Ok(Outcome::Waiting { .. })),
            "{by_path:?}"
        );
    }

    #[test]
    fn the_conflist_follows_the_cluster_config_and_goes_away_with_it() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "10-flannel.conflist", &flannel());
        assert!(matches!(sync_dir(dir.path()), Outcome::Written { .. }));
        let first = read(dir.path()).unwrap();
        assert_eq!(first["cniVersion"], "0.3.1");
        assert_eq!(
            first["plugins"][0]["capabilities"],
            json!({"portMappings": true})
        );
        assert!(matches!(sync_dir(dir.path()), Outcome::Unchanged { .. }));

        // Another installer rewrites the cluster network's config.
        let mut changed = flannel();
        changed["cniVersion"] = json!("1.0.0");
        changed["plugins"][1]["capabilities"]["bandwidth"] = json!(true);
        write(dir.path(), "10-flannel.conflist", &changed);
        assert!(matches!(sync_dir(dir.path()), Outcome::Written { .. }));
        let second = read(dir.path()).unwrap();
        assert_eq!(second["cniVersion"], "1.0.0");
        assert_eq!(
            second["plugins"][0]["capabilities"],
            json!({"bandwidth": true, "portMappings": true})
        );

        fs::remove_file(dir.path().join("10-flannel.conflist")).unwrap();
        assert!(matches!(sync_dir(dir.path()), Outcome::Removed { .. }));
        assert_eq!(read(dir.path()), None);
        assert!(matches!(sync_dir(dir.path()), Outcome::Waiting { .. }));
    }

    #[test]
    fn a_cluster_network_named_by_name_or_path_is_used() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "10-flannel.conflist", &flannel());
        let other = json!({"cniVersion": "0.4.0", "name": "other", "type": "ptp", "capabilities": {"ips": true}});
        write(dir.path(), "20-other.conf", &other);
        sync(
            dir.path(),
            Some("other"),
            Path::new(SOCKET),
            DEFAULT_FILE_NAME,
        )
        .unwrap();
        assert_eq!(read(dir.path()).unwrap()["cniVersion"], "0.4.0");
        let path = dir.path().join("10-flannel.conflist");
        sync(
            dir.path(),
            Some(path.to_str().unwrap()),
            Path::new(SOCKET),
            DEFAULT_FILE_NAME,
        )
        .unwrap();
        assert_eq!(read(dir.path()).unwrap()["cniVersion"], "0.3.1");
    }

    #[test]
    fn a_config_sorting_before_plexus_is_found() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "10-flannel.conflist", &flannel());
        assert_eq!(shadowing_config(dir.path(), DEFAULT_FILE_NAME), None);
        write(
            dir.path(),
            "00-aaa.conf",
            &json!({"name": "a", "type": "ptp"}),
        );
        fs::write(dir.path().join("00-notes.txt"), b"").unwrap();
        assert_eq!(
            shadowing_config(dir.path(), DEFAULT_FILE_NAME),
            Some(dir.path().join("00-aaa.conf"))
        );
    }

    /// Polls `check` for up to ten seconds.
    async fn eventually(what: &str, check: impl Fn() -> bool) {
        for _ in 0..500 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out waiting for: {what}");
    }

    #[tokio::test]
    async fn keep_current_follows_changes_in_the_conf_dir() {
        let dir = tempfile::tempdir().unwrap();
        let conf_dir = dir.path().join("net.d");
        let task = tokio::spawn(keep_current(
            conf_dir.clone(),
            None,
            PathBuf::from(SOCKET),
            DEFAULT_FILE_NAME.to_owned(),
        ));
        eventually("the conf dir is created", || conf_dir.is_dir()).await;

        write(&conf_dir, "10-flannel.conflist", &flannel());
        eventually("the conflist is written", || read(&conf_dir).is_some()).await;
        assert_eq!(read(&conf_dir).unwrap()["cniVersion"], "0.3.1");

        let mut changed = flannel();
        changed["cniVersion"] = json!("1.0.0");
        write(&conf_dir, "10-flannel.conflist", &changed);
        eventually("the conflist follows the cluster config", || {
            read(&conf_dir).is_some_and(|c| c["cniVersion"] == "1.0.0")
        })
        .await;

        fs::write(conf_dir.join(DEFAULT_FILE_NAME), b"{\"overwritten\": true}").unwrap();
        eventually("an overwritten conflist is restored", || {
            read(&conf_dir).is_some_and(|c| c["name"] == "plexus")
        })
        .await;
        fs::remove_file(conf_dir.join(DEFAULT_FILE_NAME)).unwrap();
        eventually("a removed conflist is restored", || {
            read(&conf_dir).is_some()
        })
        .await;

        fs::remove_file(conf_dir.join("10-flannel.conflist")).unwrap();
        eventually("the conflist goes away with the cluster network", || {
            !conf_dir.join(DEFAULT_FILE_NAME).exists()
        })
        .await;
        assert!(!task.is_finished(), "{:?}", task.await);
        task.abort();
    }
}
