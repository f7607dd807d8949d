//! plexusd's configuration file and its defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::names::{Namespace, NetworkRef};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where NADs and pods come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The manifest directory (`manifestDir`): no cluster needed.
    #[default]
    Files,
    /// The Kubernetes API server.
    Kube,
}

/// Everything plexusd reads from its config file (YAML; JSON is YAML too).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// The unix socket the shim talks to.
    pub socket_path: PathBuf,
    /// Who may call plexusd on its socket: the caller's uid (SO_PEERCRED) must be listed.
    pub socket_allowed_uids: Vec<u32>,
    /// Connections open on the socket at once; more are answered "try again later".
    pub socket_max_connections: usize,
    /// CNI requests served at once; more are answered "try again later".
    pub socket_max_requests: usize,
    /// The largest request body the socket accepts, in bytes.
    pub socket_max_request_bytes: usize,
    /// How long a client may take to send its request, and an idle connection may stay open.
    pub socket_read_timeout_seconds: u64,
    /// Where the runtime's CNI configs live; the cluster network is found here.
    pub cni_conf_dir: PathBuf,
    /// Where delegate plugin binaries are looked up, in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Where attachment records are kept; must survive plexusd restarts.
    pub records_dir: PathBuf,
    /// Where NADs and pods come from.
    pub source: SourceKind,
    /// The directory of NAD and Pod manifests (the `files` source).
    pub manifest_dir: PathBuf,
    /// The API server's kubeconfig (`kube` source). Empty: the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (`kube` source). Empty: `$NODE_NAME`, else the host name.
    pub node_name: Option<String>,
    /// The cluster network, as Multus's `clusterNetwork`: a conf file path, a NAD
    /// (`namespace/name`), the JSON `name` of a conf in `cni_conf_dir`, or a NAD name in
    /// `systemNamespace`, tried in that order. Empty: the first conf file in `cni_conf_dir`
    /// that is not Plexus's own.
    pub cluster_network: Option<String>,
    /// NADs attached to every pod after the cluster network and before its own selections.
    /// Without a namespace they are looked up in `systemNamespace`, as Multus does.
    pub default_networks: Vec<String>,
    /// Where NADs named by plexusd's own config live when they name no namespace (Multus's
    /// `multusNamespace`).
    pub system_namespace: Namespace,
    /// Pods may only use NADs of their own namespace and of `globalNamespaces`.
    pub namespace_isolation: bool,
    /// Namespaces whose NADs every pod may use under `namespaceIsolation`.
    pub global_namespaces: Vec<Namespace>,
    /// Write `conflistName` into `cniConfDir` from the cluster network's config, and keep it
    /// current, as Multus's auto-config does.
    pub write_conflist: bool,
    /// Plexus's conflist in `cniConfDir`; its name must sort first.
    pub conflist_name: String,
    /// A TCP address for /healthz, /readyz and /metrics (never CNI), e.g. `127.0.0.1:9091`.
    /// Empty: they are served on the socket only.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// The deadline for one delegate call, in seconds.
    pub delegate_timeout_seconds: u64,
    /// Start each delegate's process while the one before it runs, holding back only its
    /// config (`cni::lookahead`). Off for plugins that act before reading their config.
    pub delegate_start_ahead: bool,
    pub log_format: LogFormat,
    /// The kubelet's PodResources socket: which device-plugin devices a pod was given.
    pub pod_resources_socket: PathBuf,
    /// How long one PodResources lookup may take, in seconds, connecting included.
    pub pod_resources_timeout_seconds: u64,
    /// The NPWG device-info directory: device plugins write `dp/`, Plexus writes `cni/`.
    pub device_info_dir: PathBuf,
    /// Look devices up in the pods' DRA ResourceClaims (`kube` source, when the API server
    /// serves resource.k8s.io/v1), and write their KEP-4817 network data back.
    pub dra: bool,
    /// Multus's cache dir (its `cniDir`, e.g. `/var/lib/cni/multus`): the pods Multus attached
    /// are adopted from it, at start and on DEL. Empty: off.
    pub multus_cache_dir: Option<PathBuf>,
    /// Running pods follow their networks annotation: selections added to it are attached,
    /// selections removed from it are detached. Off by default, as in Multus.
    pub dynamic_networks: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            socket_path: "/run/plexus/plexus.sock".into(),
            socket_allowed_uids: vec![0],
            socket_max_connections: 1024,
            socket_max_requests: 128,
            socket_max_request_bytes: 1 << 20,
            socket_read_timeout_seconds: 10,
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            records_dir: "/var/lib/plexus/records".into(),
            source: SourceKind::Files,
            manifest_dir: "/etc/plexus/manifests".into(),
            kubeconfig: None,
            node_name: None,
            cluster_network: None,
            default_networks: Vec::new(),
            system_namespace: Namespace::well_known("kube-system"),
            namespace_isolation: false,
            global_namespaces: vec![Namespace::well_known("default")],
            write_conflist: false,
            conflist_name: crate::conflist::DEFAULT_FILE_NAME.into(),
            metrics_address: None,
            delegate_timeout_seconds: 60,
            delegate_start_ahead: true,
            log_format: LogFormat::Text,
            pod_resources_socket: "/var/lib/kubelet/pod-resources/kubelet.sock".into(),
            pod_resources_timeout_seconds: 3,
            device_info_dir: "/var/run/k8s.cni.cncf.io/devinfo".into(),
            dra: true,
            multus_cache_dir: None,
            dynamic_networks: false,
        }
    }
}

impl Config {
    /// Reads the file; a missing `path` means the defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Self = serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.cni_bin_dirs.is_empty() {
            return Err("cniBinDirs must name at least one directory".into());
        }
        if self.conflist_name.is_empty() || self.conflist_name.contains('/') {
            return Err("conflistName must be a plain file name".into());
        }
        if self.delegate_timeout_seconds == 0 {
            return Err("delegateTimeoutSeconds must be at least 1".into());
        }
        if self.pod_resources_timeout_seconds == 0 {
            return Err("podResourcesTimeoutSeconds must be at least 1".into());
        }
        if self
            .multus_cache_dir
            .as_ref()
            .is_some_and(|d| d.is_relative())
        {
            return Err("multusCacheDir must be an absolute path".into());
        }
        self.validate_socket()?;
        self.default_network_refs().map(drop)
    }

    fn validate_socket(&self) -> Result<(), String> {
        if self.socket_allowed_uids.is_empty() {
            return Err("socketAllowedUids must name at least one uid".into());
        }
        let at_least_one = [
            ("socketMaxConnections", self.socket_max_connections as u64),
            ("socketMaxRequests", self.socket_max_requests as u64),
            ("socketReadTimeoutSeconds", self.socket_read_timeout_seconds),
        ];
        if let Some((key, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
            return Err(format!("{key} must be at least 1"));
        }
        // A bound, not a target: each slot is a semaphore permit and a file descriptor.
        const MOST: usize = 1 << 20;
        if self.socket_max_connections > MOST || self.socket_max_requests > MOST {
            return Err(format!(
                "socketMaxConnections and socketMaxRequests must be at most {MOST}"
            ));
        }
        // Below this not even a minimal CNI request fits.
        if self.socket_max_request_bytes < 1024 {
            return Err("socketMaxRequestBytes must be at least 1024".into());
        }
        Ok(())
    }

    pub fn socket_read_timeout(&self) -> Duration {
        Duration::from_secs(self.socket_read_timeout_seconds)
    }

    /// This node's name for the `kube` source.
    pub fn node_name(&self) -> String {
        self.node_name
            .clone()
            .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .unwrap_or_default()
    }

    /// Whether a pod in `pod_namespace` may use a NAD in `nad_namespace`.
    pub fn may_use(&self, pod_namespace: &Namespace, nad_namespace: &Namespace) -> bool {
        !self.namespace_isolation
            || pod_namespace == nad_namespace
            || self.global_namespaces.contains(nad_namespace)
    }

    pub fn default_network_refs(&self) -> Result<Vec<NetworkRef>, String> {
        self.default_networks
            .iter()
            .map(|n| {
                let mut network =
                    NetworkRef::parse(n).map_err(|e| format!("defaultNetworks: {e}"))?;
                network
                    .namespace
                    .get_or_insert_with(|| self.system_namespace.clone());
                Ok(network)
            })
            .collect()
    }

    pub fn delegate_timeout(&self) -> Duration {
        Duration::from_secs(self.delegate_timeout_seconds)
    }

    pub fn pod_resources_timeout(&self) -> Duration {
        Duration::from_secs(self.pod_resources_timeout_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plexusd.yaml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path))
    }

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let config = parse("socketPath: /tmp/x.sock\ndefaultNetworks: [storage, tenant/extra]\n");
        let config = config.unwrap();
        assert_eq!(config.socket_path, PathBuf::from("/tmp/x.sock"));
        assert_eq!(config.cni_conf_dir, PathBuf::from("/etc/cni/net.d"));
        let refs: Vec<String> = config
            .default_network_refs()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        // Like Multus, a default network without a namespace lives in the system namespace.
        assert_eq!(refs, ["kube-system/storage", "tenant/extra"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_path() {
        let err = parse("sockPath: /x\n").unwrap_err().to_string();
        assert!(err.contains("plexusd.yaml"), "{err}");
        assert!(parse("defaultNetworks: [Bad_Name]\n").is_err());
        assert!(parse("cniBinDirs: []\n").is_err());
        assert!(parse("delegateTimeoutSeconds: 0\n").is_err());
        assert!(parse("podResourcesTimeoutSeconds: 0\n").is_err());
        assert!(parse("multusCacheDir: var/lib/cni/multus\n").is_err());
        assert!(parse("socketAllowedUids: []\n").is_err());
        assert!(parse("socketMaxConnections: 0\n").is_err());
        assert!(parse("socketMaxRequests: 0\n").is_err());
        assert!(parse("socketMaxConnections: 99999999999\n").is_err());
        assert!(parse("socketMaxRequestBytes: 100\n").is_err());
        assert!(parse("socketReadTimeoutSeconds: 0\n").is_err());
        let socket = parse("socketAllowedUids: [0, 1000]\nsocketMaxRequests: 8\n").unwrap();
        assert_eq!(socket.socket_allowed_uids, [0, 1000]);
        assert_eq!(socket.socket_max_requests, 8);
    }

    #[test]
    fn no_file_means_defaults() {
        let config = Config::load(None).unwrap();
        assert_eq!(config.delegate_timeout(), Duration::from_secs(60));
        assert_eq!(
            config.multus_cache_dir, None,
            "adopting from Multus is off by default"
        );
        assert!(!config.dynamic_networks, "hot-plug is opt-in");
    }

    #[test]
    fn dynamic_networks_is_a_boolean() {
        assert!(parse("dynamicNetworks: true\n").unwrap().dynamic_networks);
        assert!(!parse("dynamicNetworks: false\n").unwrap().dynamic_networks);
        assert!(parse("dynamicNetworks: sometimes\n").is_err());
    }
}
