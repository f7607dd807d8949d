//! Turns a pod's selections and the networks they name into delegates: the config each
//! delegate runs with, its interface name, runtimeConfig and CNI_ARGS. Pure: the caller has
//! already fetched the NADs and conf files.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cni::version::pick_config_version;
use crate::cni::{CniVersion, NetconfError, NetworkConfig};
use crate::names::IfName;
use crate::selection::Selection;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("network {network}: invalid config: {source}")]
    Config {
        network: String,
        source: NetconfError,
    },
    #[error(
        "network {network}: no CNI version both Plexus and plugin {plugin:?} speak (config asks for {asked})"
    )]
    NoCommonVersion {
        network: String,
        plugin: String,
        asked: String,
    },
    #[error("network {network}: interface {ifname} is already used by network {other}")]
    DuplicateInterface {
        network: String,
        ifname: IfName,
        other: String,
    },
    #[error(
        "network {network}: the selection asks for {key} but no plugin of the network declares the {capability:?} capability"
    )]
    MissingCapability {
        network: String,
        key: &'static str,
        capability: &'static str,
    },
}

impl ResolveError {
    pub fn cni_code(&self) -> u32 {
        match self {
            Self::Config { source, .. } => source.cni_code(),
            Self::NoCommonVersion { .. } => crate::cni::code::INCOMPATIBLE_VERSION,
            Self::DuplicateInterface { .. } | Self::MissingCapability { .. } => {
                crate::cni::code::INVALID_CONFIG
            }
        }
    }
}

/// A network whose config has been read and whose version is chosen.
#[derive(Debug, Clone)]
pub struct Network {
    /// How operators name it: `namespace/name` for a NAD, the CNI name for a conf file.
    pub label: String,
    pub config: NetworkConfig,
    /// The config object with its `name` filled in; what the delegate's requests start from.
    pub raw: Value,
    pub version: CniVersion,
}

/// A network config before its version is known: `version` is `None` when the config names
/// none Plexus speaks, and the plugin has to be asked (DESIGN: missing cniVersion).
#[derive(Debug, Clone)]
pub struct Unversioned {
    pub label: String,
    pub config: NetworkConfig,
    pub raw: Value,
    pub version: Option<CniVersion>,
}

impl Unversioned {
    /// Parses a config; a config without `name` gets `default_name` (NPWG §3.4.2).
    pub fn parse(label: &str, default_name: &str, bytes: &[u8]) -> Result<Self, ResolveError> {
        let config_err = |source| ResolveError::Config {
            network: label.to_owned(),
            source,
        };
        let mut config = NetworkConfig::parse(bytes).map_err(config_err)?;
        // NetworkConfig::parse accepted the bytes, so they are a JSON object.
        let mut raw: Value = serde_json::from_slice(bytes).unwrap_or_default();
        if config.name.is_none() {
            config.name = Some(default_name.to_owned());
            if let Some(object) = raw.as_object_mut() {
                object.insert("name".into(), default_name.into());
            }
        }
        let version = pick_config_version(config.cni_version.as_deref(), &config.cni_versions);
        Ok(Self {
            label: label.to_owned(),
            config,
            raw,
            version,
        })
    }

    /// Settles the version with the plugin's own VERSION answer when the config has none.
    pub fn with_plugin_versions(
        self,
        plugin_supported: &[String],
    ) -> Result<Network, ResolveError> {
        let version = match self.version {
            Some(version) => version,
            None => crate::cni::version::highest_common(plugin_supported).ok_or_else(|| {
                ResolveError::NoCommonVersion {
                    network: self.label.clone(),
                    plugin: self.first_plugin().to_owned(),
                    asked: self
                        .config
                        .cni_version
                        .clone()
                        .unwrap_or_else(|| "nothing".into()),
                }
            })?,
        };
        Ok(Network {
            label: self.label,
            config: self.config,
            raw: self.raw,
            version,
        })
    }

    pub fn first_plugin(&self) -> &str {
        self.config
            .plugins
            .first()
            .map(|p| p.plugin_type.as_str())
            .unwrap_or_default()
    }
}

/// One delegate of a pod as it was resolved at ADD; stored in the record and reused verbatim
/// by DEL, CHECK and GC (CNI §3: the config must not change between ADD and DEL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delegate {
    pub network: String,
    pub is_default: bool,
    pub ifname: IfName,
    pub version: CniVersion,
    pub config: Value,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub runtime_config: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_cni: Option<Map<String, Value>>,
    pub cni_args: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_route: Option<Vec<IpAddr>>,
}

impl Delegate {
    pub fn netconf(&self) -> Result<NetworkConfig, NetconfError> {
        NetworkConfig::parse(self.config.to_string().as_bytes())
    }

    pub fn cni_name(&self) -> &str {
        self.config
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// What resolution needs from the request.
pub struct PodContext<'a> {
    pub runtime_ifname: &'a IfName,
    /// The runtime's runtimeConfig for Plexus: only the cluster network may see it (NPWG §7.5).
    pub runtime_config: &'a Map<String, Value>,
    /// The runtime's CNI_ARGS, with IgnoreUnknown=1 and the pod UID already in.
    pub cni_args: &'a str,
}

/// The delegates of a pod: the cluster network on the runtime's interface, then each
/// selection on its own interface (`net<position>` unless it names one, as Multus does).
pub fn plan(
    cluster: Network,
    secondaries: Vec<(Selection, Network)>,
    pod: &PodContext<'_>,
) -> Result<Vec<Delegate>, ResolveError> {
    let mut delegates = Vec::with_capacity(secondaries.len() + 1);
    delegates.push(Delegate {
        network: cluster.label,
        is_default: true,
        ifname: pod.runtime_ifname.clone(),
        version: cluster.version,
        config: cluster.raw,
        runtime_config: pod.runtime_config.clone(),
        args_cni: None,
        cni_args: pod.cni_args.to_owned(),
        default_route: None,
    });
    for (position, (selection, network)) in secondaries.into_iter().enumerate() {
        let ifname = selection
            .interface
            .clone()
            .unwrap_or_else(|| IfName::numbered(position + 1));
        if let Some(other) = delegates.iter().find(|d| d.ifname == ifname) {
            return Err(ResolveError::DuplicateInterface {
                network: network.label,
                ifname,
                other: other.network.clone(),
            });
        }
        let runtime_config = selection_runtime_config(&selection, &network)?;
        delegates.push(Delegate {
            cni_args: with_selection_args(pod.cni_args, selection.cni_args.as_ref()),
            network: network.label,
            is_default: false,
            ifname,
            version: network.version,
            config: network.raw,
            runtime_config,
            args_cni: selection.cni_args,
            default_route: selection.default_route,
        });
    }
    Ok(delegates)
}

/// The runtimeConfig a selection asks for. A key the network cannot honour fails the
/// attachment (NPWG §4.1.2.1.x.2); per-plugin filtering happens when each request is built.
fn selection_runtime_config(
    selection: &Selection,
    network: &Network,
) -> Result<Map<String, Value>, ResolveError> {
    let mut wanted: Vec<(&'static str, &'static str, Value)> = Vec::new();
    if !selection.ips.is_empty() {
        wanted.push((
            "ips",
            "ips",
            selection
                .ips
                .iter()
                .map(|ip| Value::String(ip.to_string()))
                .collect(),
        ));
    }
    if let Some(mac) = &selection.mac {
        wanted.push(("mac", "mac", mac.to_string().into()));
    }
    if !selection.port_mappings.is_empty() {
        wanted.push((
            "portMappings",
            "portMappings",
            serde_json::to_value(&selection.port_mappings).unwrap_or_default(),
        ));
    }
    if let Some(bandwidth) = &selection.bandwidth {
        wanted.push((
            "bandwidth",
            "bandwidth",
            serde_json::to_value(bandwidth).unwrap_or_default(),
        ));
    }
    if let Some(guid) = &selection.infiniband_guid {
        wanted.push(("infiniband-guid", "infinibandGUID", guid.clone().into()));
    }
    let mut runtime_config = Map::new();
    for (key, capability, value) in wanted {
        if !network.config.declares(capability) {
            return Err(ResolveError::MissingCapability {
                network: network.label.clone(),
                key,
                capability,
            });
        }
        runtime_config.insert(capability.to_owned(), value);
    }
    // A device id is not a request the network may refuse: SR-IOV style plugins read it when
    // they declare it, others ignore it.
    if let Some(device_id) = &selection.device_id {
        runtime_config.insert("deviceID".into(), device_id.clone().into());
    }
    Ok(runtime_config)
}

/// CNI_ARGS for a secondary: the pod's, plus the selection's scalar cni-args (they also go
/// into `args.cni`, where the spec puts them; CNI_ARGS carries them for older plugins).
fn with_selection_args(base: &str, cni_args: Option<&Map<String, Value>>) -> String {
    let mut args = base.to_owned();
    for (key, value) in cni_args.into_iter().flatten() {
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        if key.contains(['=', ';']) || value.contains(['=', ';']) {
            continue;
        }
        args.push_str(&format!(";{key}={value}"));
    }
    args
}

/// The runtime's CNI_ARGS as delegates get them: `IgnoreUnknown=1` first, so plugins built on
/// libcni accept the Kubernetes keys, and the pod UID when the runtime did not send one.
pub fn delegate_cni_args(runtime_args: &str, pod_uid: Option<&str>) -> String {
    let pairs: Vec<&str> = runtime_args.split(';').filter(|p| !p.is_empty()).collect();
    let has = |key: &str| {
        pairs
            .iter()
            .any(|p| p.split_once('=').is_some_and(|(k, _)| k == key))
    };
    let mut args = Vec::with_capacity(pairs.len() + 2);
    if !has("IgnoreUnknown") {
        args.push("IgnoreUnknown=1".to_owned());
    }
    args.extend(pairs.iter().map(|p| (*p).to_owned()));
    if let Some(uid) = pod_uid.filter(|_| !has("K8S_POD_UID")) {
        args.push(format!("K8S_POD_UID={uid}"));
    }
    args.join(";")
}
