//! Multus's per-container cache, read so plexusd can adopt the pods Multus attached before the
//! switch. Plexus only reads these files; they stay for the operator to remove.
//!
//! What Multus 4.x (thin and thick alike) leaves in its `cniDir` (default `/var/lib/cni/multus`):
//! - `<cniDir>/<containerID>`: a JSON array of Multus's delegate records, in the order it ran
//!   them. The first is the cluster network (Multus's "master plugin"; the flag itself is not
//!   written, Multus marks the first again when it reads the file). Each holds the conf or
//!   conflist as Go writes bytes (`Bytes`, base64), `Name` (a NAD's `namespace/name`),
//!   `ifnameRequest`, and the requests it turned into runtimeConfig (`macRequest`,
//!   `ipRequest`, `infinibandGUIDRequest`, `deviceID`) and routes (`default-route`).
//!   Interfaces: `ifnameRequest` if set, the runtime's for the first, else `net<position>`.
//! - `<cniDir>/results/<network>-<containerID>-<ifname>`: libcni's result cache (`kind`
//!   `cniCacheV1`) of each delegate: the CNI_ARGS and runtimeConfig it ran with, the netns,
//!   and its ADD result.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine;
use serde_json::{Map, Value};

use crate::cni::NetworkConfig;
use crate::cni::version::pick_config_version;
use crate::names::{ContainerId, IfName};

/// libcni's result cache format, the only one it has written since CNI 0.7.
const RESULT_CACHE_KIND: &str = "cniCacheV1";

#[derive(Debug, thiserror::Error)]
pub enum MultusError {
    #[error("cannot read Multus cache {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("Multus cache {path} is malformed: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("Multus cache {path} is in a format Plexus does not know: {reason}")]
    UnknownVersion { path: PathBuf, reason: String },
}

/// Multus's cache directory (`cniDir`).
#[derive(Debug, Clone)]
pub struct MultusCache {
    dir: PathBuf,
}

/// One container as Multus cached it.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedPod {
    pub path: PathBuf,
    /// When Multus wrote the file: just before it ran the delegates.
    pub written: SystemTime,
    pub delegates: Vec<CachedDelegate>,
    /// Result caches that were skipped, and why (the delegates still count).
    pub notes: Vec<String>,
}

/// One delegate Multus ran for the container.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedDelegate {
    /// How Multus named it: a NAD's `namespace/name`, else the config's name.
    pub network: String,
    /// The config's own `name`, which names libcni's result cache.
    pub config_name: String,
    /// The conf or conflist, as Multus ran it.
    pub config: Vec<u8>,
    /// The interface Multus gave it; `None` for the cluster network without a request: the
    /// runtime's CNI_IFNAME, which the result cache names if there is one.
    pub ifname: Option<IfName>,
    /// runtimeConfig from Multus's requests (superseded by the result cache's).
    pub requests: Map<String, Value>,
    pub default_route: Option<Vec<IpAddr>>,
    pub cached: Option<CachedResult>,
}

/// libcni's result cache of one delegate.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedResult {
    pub ifname: IfName,
    /// `KEY=VALUE;...`, as the delegate got it.
    pub cni_args: String,
    pub runtime_config: Map<String, Value>,
    pub netns: Option<String>,
    pub result: Option<Value>,
}

impl MultusCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, id: &ContainerId) -> PathBuf {
        self.dir.join(id.as_str())
    }

    /// The containers Multus has a cache file for; none when the directory does not exist.
    pub fn containers(&self) -> Result<Vec<ContainerId>, MultusError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(MultusError::Read {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut ids: Vec<ContainerId> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| ContainerId::parse(&e.file_name().to_string_lossy()).ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The container's cache, or `None` when Multus has none for it.
    pub fn read(&self, id: &ContainerId) -> Result<Option<CachedPod>, MultusError> {
        let path = self.path(id);
        let read_err = |source| MultusError::Read {
            path: path.clone(),
            source,
        };
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(read_err(source)),
        };
        let written = fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(read_err)?;
        let entries = delegate_entries(&path, &bytes)?;
        let mut pod = CachedPod {
            path: path.clone(),
            written,
            delegates: Vec::with_capacity(entries.len()),
            notes: Vec::new(),
        };
        for (position, entry) in entries.iter().enumerate() {
            let mut delegate = parse_delegate(&path, position, entry)?;
            delegate.cached = self.result_cache(id, &delegate, &mut pod.notes);
            pod.delegates.push(delegate);
        }
        Ok(Some(pod))
    }

    /// libcni's result cache for the delegate, if there is a readable one.
    fn result_cache(
        &self,
        id: &ContainerId,
        delegate: &CachedDelegate,
        notes: &mut Vec<String>,
    ) -> Option<CachedResult> {
        let results = self.dir.join("results");
        let prefix = format!("{}-{id}-", delegate.config_name);
        let path = match &delegate.ifname {
            Some(ifname) => results.join(format!("{prefix}{ifname}")),
            // The runtime's interface is only in the file name.
            None => {
                let mut names: Vec<String> = fs::read_dir(&results)
                    .ok()?
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&prefix))
                    .collect();
                names.sort();
                results.join(names.first()?)
            }
        };
        let bytes = fs::read(&path).ok()?;
        match parse_result_cache(&bytes) {
            Ok(cached) => Some(cached),
            Err(reason) => {
                notes.push(format!("result cache {} skipped: {reason}", path.display()));
                None
            }
        }
    }
}

fn delegate_entries(path: &Path, bytes: &[u8]) -> Result<Vec<Map<String, Value>>, MultusError> {
    let malformed = |reason: String| MultusError::Malformed {
        path: path.to_owned(),
        reason,
    };
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| malformed(format!("not JSON: {e}")))?;
    let Value::Array(items) = value else {
        return Err(malformed("not a JSON array of delegates".into()));
    };
    if items.is_empty() {
        return Err(malformed("no delegates".into()));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(entry) => Ok(entry),
            other => Err(malformed(format!("delegate {i} is {other}, not an object"))),
        })
        .collect()
}

fn parse_delegate(
    path: &Path,
    position: usize,
    entry: &Map<String, Value>,
) -> Result<CachedDelegate, MultusError> {
    let malformed = |reason: String| MultusError::Malformed {
        path: path.to_owned(),
        reason: format!("delegate {position}: {reason}"),
    };
    let unknown = |reason: String| MultusError::UnknownVersion {
        path: path.to_owned(),
        reason: format!("delegate {position}: {reason}"),
    };
    let Some(Value::String(encoded)) = entry.get("Bytes") else {
        return Err(unknown(
            "no \"Bytes\" (the config Multus 3.x and 4.x keep there)".into(),
        ));
    };
    let config = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| malformed(format!("\"Bytes\" is not base64: {e}")))?;
    let parsed = NetworkConfig::parse(&config)
        .map_err(|e| malformed(format!("its config is invalid: {e}")))?;
    if let Some(version) = &parsed.cni_version
        && pick_config_version(Some(version), &parsed.cni_versions).is_none()
    {
        return Err(unknown(format!(
            "its config's cniVersion {version:?} is not one Plexus speaks"
        )));
    }
    let config_name = parsed
        .name
        .clone()
        .ok_or_else(|| malformed("its config has no name".into()))?;
    let network = match entry.get("Name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => config_name.clone(),
    };
    let ifname = match entry.get("ifnameRequest").and_then(Value::as_str) {
        Some(request) if !request.is_empty() => {
            Some(IfName::parse(request).map_err(|e| malformed(format!("ifnameRequest: {e}")))?)
        }
        _ if position == 0 => None,
        _ => Some(IfName::numbered(position)),
    };
    let default_route = match entry.get("default-route") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            serde_json::from_value(value.clone())
                .map_err(|e| malformed(format!("default-route: {e}")))?,
        ),
    };
    Ok(CachedDelegate {
        network,
        config_name,
        config,
        ifname,
        requests: requests(entry),
        default_route,
        cached: None,
    })
}

/// The runtimeConfig keys Multus builds from a delegate's requests.
fn requests(entry: &Map<String, Value>) -> Map<String, Value> {
    let mut runtime_config = Map::new();
    let wanted = [
        ("macRequest", "mac"),
        ("ipRequest", "ips"),
        ("infinibandGUIDRequest", "infinibandGUID"),
        ("deviceID", "deviceID"),
    ];
    for (key, capability) in wanted {
        match entry.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(value) => {
                runtime_config.insert(capability.to_owned(), value.clone());
            }
        }
    }
    runtime_config
}

fn parse_result_cache(bytes: &[u8]) -> Result<CachedResult, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind != RESULT_CACHE_KIND {
        return Err(format!(
            "kind {kind:?} is not the {RESULT_CACHE_KIND:?} Plexus reads"
        ));
    }
    let ifname = value
        .get("ifName")
        .and_then(Value::as_str)
        .ok_or("no ifName")
        .and_then(|name| IfName::parse(name).map_err(|_| "an invalid ifName"))?;
    let cni_args = match value.get("cniArgs") {
        None | Some(Value::Null) => String::new(),
        Some(args) => serde_json::from_value::<Vec<(String, String)>>(args.clone())
            .map_err(|e| format!("cniArgs: {e}"))?
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";"),
    };
    let runtime_config = match value.get("capabilityArgs") {
        Some(Value::Object(args)) => args.clone(),
        _ => Map::new(),
    };
    Ok(CachedResult {
        ifname,
        cni_args,
        runtime_config,
        netns: value
            .get("netns")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_owned),
        result: value.get("result").filter(|r| r.is_object()).cloned(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn b64(value: &Value) -> String {
        base64::engine::general_purpose::STANDARD.encode(value.to_string())
    }

    fn bridge(name: &str) -> Value {
        json!({"cniVersion": "1.0.0", "name": name, "plugins": [{"type": "bridge"}, {"type": "portmap", "capabilities": {"portMappings": true}}]})
    }

    fn macvlan(name: &str) -> Value {
        json!({"cniVersion": "0.3.1", "name": name, "type": "macvlan", "master": "eth9"})
    }

    /// A delegate record as Multus 4.x marshals it (Go field names, base64 bytes).
    fn entry(name: &str, config: &Value) -> Value {
        json!({
            "Conf": {"cniVersion": config["cniVersion"], "name": config["name"], "type": config["type"]},
            "ConfList": {"cniVersion": config["cniVersion"], "name": config["name"], "plugins": config["plugins"]},
            "CNINetworkConfigList": {"Name": "", "CNIVersion": "", "DisableCheck": false, "DisableGC": false, "Plugins": null, "Bytes": null},
            "Name": name,
            "IsFilterV4Gateway": false,
            "IsFilterV6Gateway": false,
            "Bytes": b64(config),
        })
    }

    struct Cache {
        dir: tempfile::TempDir,
    }

    impl Cache {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn write(&self, id: &str, delegates: &Value) {
            fs::write(self.dir.path().join(id), delegates.to_string()).unwrap();
        }

        fn write_result(&self, file: &str, cache: &Value) {
            let results = self.dir.path().join("results");
            fs::create_dir_all(&results).unwrap();
            fs::write(results.join(file), cache.to_string()).unwrap();
        }

        fn read(&self, id: &str) -> Result<Option<CachedPod>, MultusError> {
            MultusCache::new(self.dir.path()).read(&ContainerId::parse(id).unwrap())
        }
    }

    #[test]
    fn interfaces_are_the_runtimes_then_net_by_position_unless_requested() {
        let cache = Cache::new();
        let mut requested = entry("tenant/b", &macvlan("b"));
        requested["ifnameRequest"] = json!("data0");
        cache.write(
            "c1",
            &json!([
                entry("", &bridge("cluster")),
                entry("tenant/a", &macvlan("a")),
                requested,
                entry("tenant/c", &macvlan("c")),
            ]),
        );
        let pod = cache.read("c1").unwrap().unwrap();
        let names: Vec<Option<&str>> = pod
            .delegates
            .iter()
            .map(|d| d.ifname.as_ref().map(IfName::as_str))
            .collect();
        assert_eq!(names, [None, Some("net1"), Some("data0"), Some("net3")]);
        let networks: Vec<&str> = pod.delegates.iter().map(|d| d.network.as_str()).collect();
        assert_eq!(networks, ["cluster", "tenant/a", "tenant/b", "tenant/c"]);
        assert_eq!(
            serde_json::from_slice::<Value>(&pod.delegates[0].config).unwrap(),
            bridge("cluster")
        );
        assert!(pod.notes.is_empty());
    }

    #[test]
    fn the_result_cache_gives_args_runtime_config_netns_result_and_the_runtimes_interface() {
        let cache = Cache::new();
        cache.write(
            "c1",
            &json!([
                entry("", &bridge("cluster")),
                entry("tenant/a", &macvlan("a"))
            ]),
        );
        let args = json!([
            ["IgnoreUnknown", "true"],
            ["K8S_POD_NAMESPACE", "tenant"],
            ["K8S_POD_NAME", "web"],
            ["K8S_POD_UID", "u-1"]
        ]);
        cache.write_result(
            "cluster-c1-eth0",
            &json!({"kind": "cniCacheV1", "containerId": "c1", "config": b64(&bridge("cluster")), "ifName": "eth0",
                "networkName": "cluster", "netns": "/run/netns/p", "cniArgs": args,
                "capabilityArgs": {"portMappings": [{"hostPort": 80, "containerPort": 8080}]},
                "result": {"cniVersion": "1.0.0", "ips": [{"address": "198.18.0.2/24"}]}}),
        );
        cache.write_result(
            "a-c1-net1",
            &json!({"kind": "cniCacheV1", "ifName": "net1", "networkName": "a", "cniArgs": args,
                "result": {"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "198.18.1.2/24"}]}}),
        );
        let pod = cache.read("c1").unwrap().unwrap();
        let cluster = pod.delegates[0].cached.as_ref().unwrap();
        assert_eq!(cluster.ifname.as_str(), "eth0");
        assert_eq!(
            cluster.cni_args,
            "IgnoreUnknown=true;K8S_POD_NAMESPACE=tenant;K8S_POD_NAME=web;K8S_POD_UID=u-1"
        );
        assert_eq!(cluster.netns.as_deref(), Some("/run/netns/p"));
        assert!(cluster.runtime_config.contains_key("portMappings"));
        let a = pod.delegates[1].cached.as_ref().unwrap();
        assert_eq!(
            a.result.as_ref().unwrap()["ips"][0]["address"],
            "198.18.1.2/24"
        );
    }

    #[test]
    fn requests_become_runtime_config_and_default_route_is_kept() {
        let cache = Cache::new();
        let mut a = entry("tenant/a", &macvlan("a"));
        a["macRequest"] = json!("02:00:00:00:00:0a");
        a["ipRequest"] = json!(["198.18.1.9/24"]);
        a["deviceID"] = json!("0000:03:00.1");
        a["default-route"] = json!(["198.18.1.1"]);
        cache.write("c1", &json!([entry("", &bridge("cluster")), a]));
        let pod = cache.read("c1").unwrap().unwrap();
        let a = &pod.delegates[1];
        assert_eq!(
            Value::Object(a.requests.clone()),
            json!({"mac": "02:00:00:00:00:0a", "ips": ["198.18.1.9/24"], "deviceID": "0000:03:00.1"})
        );
        assert_eq!(a.default_route, Some(vec!["198.18.1.1".parse().unwrap()]));
    }

    #[test]
    fn malformed_and_unknown_caches_are_errors_naming_the_file() {
        let cache = Cache::new();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("bad-json", b"[{".to_vec(), "malformed"),
            ("not-array", br#"{"Bytes": ""}"#.to_vec(), "malformed"),
            ("empty", b"[]".to_vec(), "malformed"),
            (
                "no-bytes",
                br#"[{"Conf": {"type": "bridge"}}]"#.to_vec(),
                "does not know",
            ),
            ("bad-b64", br#"[{"Bytes": "!!"}]"#.to_vec(), "malformed"),
            (
                "future",
                json!([entry(
                    "",
                    &json!({"cniVersion": "9.9.9", "name": "x", "type": "bridge"})
                )])
                .to_string()
                .into_bytes(),
                "does not know",
            ),
            (
                "bad-ifname",
                {
                    let mut e = entry("tenant/a", &macvlan("a"));
                    e["ifnameRequest"] = json!("a/b");
                    json!([entry("", &bridge("cluster")), e])
                        .to_string()
                        .into_bytes()
                },
                "malformed",
            ),
        ];
        for (id, bytes, kind) in cases {
            fs::write(cache.dir.path().join(id), bytes).unwrap();
            let error = cache.read(id).unwrap_err().to_string();
            assert!(error.contains(kind), "{id}: {error}");
            assert!(error.contains(id), "{id}: {error}");
        }
    }

    #[test]
    fn an_unknown_result_cache_is_noted_and_the_delegate_kept() {
        let cache = Cache::new();
        cache.write("c1", &json!([entry("", &bridge("cluster"))]));
        cache.write_result(
            "cluster-c1-eth0",
            &json!({"kind": "cniCacheV9", "ifName": "eth0"}),
        );
        let pod = cache.read("c1").unwrap().unwrap();
        assert_eq!(pod.delegates[0].cached, None);
        assert!(pod.notes[0].contains("cniCacheV9"), "{:?}", pod.notes);
    }

    #[test]
    fn containers_are_the_cache_files_and_a_missing_dir_has_none() {
        let cache = Cache::new();
        cache.write("c2", &json!([]));
        cache.write("c1", &json!([]));
        cache.write_result("x-c1-eth0", &json!({}));
        let ids = MultusCache::new(cache.dir.path()).containers().unwrap();
        let ids: Vec<&str> = ids.iter().map(ContainerId::as_str).collect();
        assert_eq!(ids, ["c1", "c2"]);
        let missing = MultusCache::new(cache.dir.path().join("absent"));
        assert!(missing.containers().unwrap().is_empty());
        assert_eq!(cache.read("absent").unwrap(), None);
    }
}
