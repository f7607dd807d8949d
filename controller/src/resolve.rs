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
    /// The NAD's `k8s.v1.cni.cncf.io/resourceName`: the pool its delegate takes a device from.
    pub resource_name: Option<String>,
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
            resource_name: None,
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
    /// The device the delegate runs with; its id is in `config` and `runtime_config` already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<crate::devices::Device>,
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
    let mut interfaces = Interfaces::new(&cluster.label, pod.runtime_ifname);
    delegates.push(cluster_delegate(cluster, pod));
    for (selection, network) in secondaries {
        let ifname = interfaces.assign(&network.label, selection.interface.as_ref())?;
        delegates.push(secondary_delegate(
            selection,
            network,
            ifname,
            pod.cni_args,
        )?);
    }
    Ok(delegates)
}

/// The delegate of one selection on `ifname`, with the pod's CNI_ARGS (`pod_cni_args`, as the
/// cluster network got them): the same at ADD and when a running pod gains the selection.
/// Its device, if the network takes one, is given later (`devices::assign`).
pub fn secondary_delegate(
    selection: Selection,
    network: Network,
    ifname: IfName,
    pod_cni_args: &str,
) -> Result<Delegate, ResolveError> {
    let runtime_config = requested_runtime_config(&selection, &network.label, &network.config)?;
    Ok(Delegate {
        cni_args: with_selection_args(pod_cni_args, selection.cni_args.as_ref()),
        network: network.label,
        is_default: false,
        ifname,
        version: network.version,
        config: network.raw,
        runtime_config,
        args_cni: selection.cni_args,
        default_route: selection.default_route,
        device: None,
    })
}

/// Hands out the pod's interface names in attachment order: the runtime's for the cluster
/// network, then each secondary's own or `net<position>` (Multus's numbering, the cluster
/// network being 0). A name handed out twice is an error naming both networks.
pub struct Interfaces {
    taken: Vec<(IfName, String)>,
}

impl Interfaces {
    pub fn new(cluster_label: &str, runtime_ifname: &IfName) -> Self {
        Self {
            taken: vec![(runtime_ifname.clone(), cluster_label.to_owned())],
        }
    }

    /// The next secondary's interface: `wanted`, or `net<position>` without one.
    pub fn assign(
        &mut self,
        network: &str,
        wanted: Option<&IfName>,
    ) -> Result<IfName, ResolveError> {
        let ifname = wanted
            .cloned()
            .unwrap_or_else(|| IfName::numbered(self.taken.len()));
        if let Some((_, other)) = self.taken.iter().find(|(taken, _)| *taken == ifname) {
            return Err(ResolveError::DuplicateInterface {
                network: network.to_owned(),
                ifname,
                other: other.clone(),
            });
        }
        self.taken.push((ifname.clone(), network.to_owned()));
        Ok(ifname)
    }
}

/// The runtimeConfig a selection asks of network `label`. A key the network cannot honour
/// fails the attachment (NPWG §4.1.2.1.x.2); per-plugin filtering happens when each request is
/// built.
pub fn requested_runtime_config(
    selection: &Selection,
    label: &str,
    config: &NetworkConfig,
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
        if !config.declares(capability) {
            return Err(ResolveError::MissingCapability {
                network: label.to_owned(),
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

/// The cluster network on the runtime's interface, with the runtime's runtimeConfig (only this
/// network may see it, NPWG §7.5).
pub fn cluster_delegate(cluster: Network, pod: &PodContext<'_>) -> Delegate {
    Delegate {
        network: cluster.label,
        is_default: true,
        ifname: pod.runtime_ifname.clone(),
        version: cluster.version,
        config: cluster.raw,
        runtime_config: pod.runtime_config.clone(),
        args_cni: None,
        cni_args: pod.cni_args.to_owned(),
        default_route: None,
        device: None,
    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cni::code;
    use crate::selection::parse_networks;
    use crate::testing::chain;

    fn ifname(name: &str) -> IfName {
        IfName::parse(name).unwrap()
    }

    fn cluster() -> Network {
        Network::test(
            "cluster",
            json!({
                "cniVersion": "1.0.0",
                "name": "cluster",
                "plugins": [{"type": "bridge"}, {"type": "portmap", "capabilities": {"portMappings": true}}],
            }),
        )
    }

    /// Each selection of `annotation` paired with a network named after it.
    fn selected(annotation: &str, config: impl Fn(&str) -> Value) -> Vec<(Selection, Network)> {
        parse_networks(annotation)
            .unwrap()
            .into_iter()
            .map(|selection| {
                let name = selection.network.name.to_string();
                let network = Network::test(&format!("ns1/{name}"), config(&name));
                (selection, network)
            })
            .collect()
    }

    fn macvlan(name: &str) -> Value {
        chain(name, "1.0.0", &["macvlan"])
    }

    /// The rest of the request, for tests that do not look at it.
    fn plan_for(
        annotation: &str,
        config: impl Fn(&str) -> Value,
    ) -> Result<Vec<Delegate>, ResolveError> {
        let runtime_ifname = ifname("eth0");
        let runtime_config = Map::new();
        let pod = PodContext {
            runtime_ifname: &runtime_ifname,
            runtime_config: &runtime_config,
            cni_args: "IgnoreUnknown=1",
        };
        plan(cluster(), selected(annotation, config), &pod)
    }

    #[test]
    fn interfaces_are_the_runtimes_for_the_cluster_then_net_n_by_position() {
        let cases: [(&str, &[&str]); 6] = [
            ("", &["eth0"]),
            ("a", &["eth0", "net1"]),
            ("a,b,c", &["eth0", "net1", "net2", "net3"]),
            ("a@foo,b", &["eth0", "foo", "net2"]),
            ("a,b@foo,c", &["eth0", "net1", "foo", "net3"]),
            // The same network twice is two attachments.
            ("a,a", &["eth0", "net1", "net2"]),
        ];
        for (annotation, expected) in cases {
            let delegates = plan_for(annotation, macvlan).unwrap();
            let names: Vec<&str> = delegates.iter().map(|d| d.ifname.as_str()).collect();
            assert_eq!(names, expected, "{annotation:?}");
        }
    }

    #[test]
    fn the_cluster_network_comes_first_and_is_the_only_default() {
        let delegates = plan_for("a,ns2/b", macvlan).unwrap();
        let summary: Vec<(&str, bool, &str)> = delegates
            .iter()
            .map(|d| (d.network.as_str(), d.is_default, d.cni_name()))
            .collect();
        assert_eq!(
            summary,
            [
                ("cluster", true, "cluster"),
                ("ns1/a", false, "a"),
                ("ns1/b", false, "b")
            ]
        );
        assert_eq!(delegates[1].config, macvlan("a"));
        assert!(delegates.iter().all(|d| d.version == CniVersion::V1_0_0));
    }

    #[test]
    fn an_interface_used_twice_is_an_error_naming_both_networks() {
        let cases = [
            // explicit after generated
            ("a,b@net1", "ns1/b", "net1", "ns1/a"),
            // generated after explicit
            ("a@net2,b", "ns1/b", "net2", "ns1/a"),
            // explicit against the runtime's
            ("a@eth0", "ns1/a", "eth0", "cluster"),
        ];
        for (annotation, network, interface, other) in cases {
            let error = plan_for(annotation, macvlan).unwrap_err();
            match &error {
                ResolveError::DuplicateInterface {
                    network: n,
                    ifname: i,
                    other: o,
                } => assert_eq!(
                    (n.as_str(), i.as_str(), o.as_str()),
                    (network, interface, other),
                    "{annotation}"
                ),
                other => panic!("{annotation}: {other:?}"),
            }
            let text = error.to_string();
            assert!(
                text.contains(network) && text.contains(other) && text.contains(interface),
                "{text}"
            );
            assert_eq!(error.cni_code(), code::INVALID_CONFIG);
        }
    }

    /// (selection keys, the key as the user wrote it, capability, runtimeConfig value)
    fn capability_requests() -> Vec<(&'static str, &'static str, &'static str, Value)> {
        vec![
            (
                r#""ips": ["10.1.0.5/24", "fd00::5"]"#,
                "ips",
                "ips",
                json!(["10.1.0.5/24", "fd00::5"]),
            ),
            (
                r#""mac": "C2:11:22:33:44:55""#,
                "mac",
                "mac",
                json!("c2:11:22:33:44:55"),
            ),
            (
                r#""portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "UDP"}]"#,
                "portMappings",
                "portMappings",
                json!([{"hostPort": 8080, "containerPort": 80, "protocol": "udp"}]),
            ),
            (
                r#""bandwidth": {"ingressRate": 1000, "ingressBurst": 2000}"#,
                "bandwidth",
                "bandwidth",
                json!({"ingressRate": 1000, "ingressBurst": 2000}),
            ),
            (
                r#""infiniband-guid": "00:11:22:33:44:55:66:77""#,
                "infiniband-guid",
                "infinibandGUID",
                json!("00:11:22:33:44:55:66:77"),
            ),
        ]
    }

    #[test]
    fn a_selection_asking_for_an_undeclared_capability_fails_naming_key_and_capability() {
        for (keys, key, capability, _) in capability_requests() {
            let annotation = format!(r#"[{{"name": "a", {keys}}}]"#);
            // A capability declared false, or under another name, is not declared.
            let config = |name: &str| {
                json!({
                    "cniVersion": "1.0.0",
                    "name": name,
                    "plugins": [
                        {"type": "macvlan", "capabilities": {capability: false}},
                        {"type": "tuning", "capabilities": {capability.to_lowercase() + "x": true}},
                    ],
                })
            };
            let error = plan_for(&annotation, config).unwrap_err();
            match &error {
                ResolveError::MissingCapability {
                    network,
                    key: k,
                    capability: c,
                } => assert_eq!((network.as_str(), *k, *c), ("ns1/a", key, capability)),
                other => panic!("{keys}: {other:?}"),
            }
            let text = error.to_string();
            assert!(text.contains(key) && text.contains(capability), "{text}");
            assert_eq!(error.cni_code(), code::INVALID_CONFIG);
        }
    }

    #[test]
    fn a_capability_declared_by_any_plugin_of_the_chain_fills_runtime_config() {
        for (keys, _, capability, value) in capability_requests() {
            let annotation = format!(r#"[{{"name": "a", {keys}}}]"#);
            let config = |name: &str| {
                json!({
                    "cniVersion": "1.0.0",
                    "name": name,
                    "plugins": [
                        {"type": "macvlan"},
                        {"type": "tuning", "capabilities": {capability: true}},
                    ],
                })
            };
            let delegates = plan_for(&annotation, config).unwrap();
            let mut expected = Map::new();
            expected.insert(capability.to_owned(), value);
            assert_eq!(delegates[1].runtime_config, expected, "{keys}");
        }
    }

    #[test]
    fn a_device_id_needs_no_capability() {
        for key in ["device-id", "deviceID"] {
            let annotation = format!(r#"[{{"name": "a", "{key}": "0000:03:00.1"}}]"#);
            let delegates = plan_for(&annotation, macvlan).unwrap();
            assert_eq!(
                Value::Object(delegates[1].runtime_config.clone()),
                json!({"deviceID": "0000:03:00.1"}),
                "{key}"
            );
        }
    }

    #[test]
    fn the_runtimes_runtime_config_goes_to_the_cluster_network_only() {
        let runtime_ifname = ifname("eth0");
        let runtime_config = json!({
            "portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}],
            "bandwidth": {"egressRate": 5},
            "dns": {"servers": ["10.96.0.10"]},
        })
        .as_object()
        .unwrap()
        .clone();
        let pod = PodContext {
            runtime_ifname: &runtime_ifname,
            runtime_config: &runtime_config,
            cni_args: "IgnoreUnknown=1",
        };
        let declares_all = |name: &str| {
            json!({
                "cniVersion": "1.0.0",
                "name": name,
                "plugins": [{"type": "macvlan"}, {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": true, "dns": true}}],
            })
        };
        let annotation = r#"[{"name": "a"}, {"name": "b", "portMappings": [{"hostPort": 9090, "containerPort": 90}]}]"#;
        let delegates = plan(cluster(), selected(annotation, declares_all), &pod).unwrap();
        assert_eq!(delegates[0].runtime_config, runtime_config);
        assert!(delegates[1].runtime_config.is_empty(), "{:?}", delegates[1]);
        assert_eq!(
            Value::Object(delegates[2].runtime_config.clone()),
            json!({"portMappings": [{"hostPort": 9090, "containerPort": 90, "protocol": "tcp"}]}),
            "only the selection's own request"
        );
    }

    #[test]
    fn cni_args_go_to_args_cni_and_their_scalar_values_also_to_cni_args() {
        let annotation = r#"[{"name": "a", "cni-args": {
            "text": "v", "number": 5, "flag": true,
            "list": [1], "object": {"x": 1}, "null": null,
            "semi": "a;b", "equals": "a=b", "k=ey": "v", "k;ey": "v"
        }}, {"name": "b"}]"#;
        let delegates = plan_for(annotation, macvlan).unwrap();
        let selection = parse_networks(annotation).unwrap();
        assert_eq!(
            delegates[1].args_cni, selection[0].cni_args,
            "args.cni gets all"
        );
        let base = "IgnoreUnknown=1;";
        let extra = delegates[1]
            .cni_args
            .strip_prefix(base)
            .unwrap_or_else(|| panic!("{} lost the pod's args", delegates[1].cni_args));
        let mut pairs: Vec<&str> = extra.split(';').collect();
        pairs.sort_unstable();
        assert_eq!(pairs, ["flag=true", "number=5", "text=v"]);
        for other in [&delegates[0], &delegates[2]] {
            assert_eq!(other.cni_args, "IgnoreUnknown=1", "{}", other.network);
            assert_eq!(other.args_cni, None, "{}", other.network);
        }
    }

    #[test]
    fn the_selections_default_route_is_kept_for_its_delegate() {
        let annotation = r#"[{"name": "a"}, {"name": "b", "default-route": ["10.1.0.1"]}]"#;
        let delegates = plan_for(annotation, macvlan).unwrap();
        let routes: Vec<Option<Vec<IpAddr>>> =
            delegates.iter().map(|d| d.default_route.clone()).collect();
        assert_eq!(
            routes,
            [None, None, Some(vec!["10.1.0.1".parse().unwrap()])]
        );
    }

    #[test]
    fn delegate_cni_args_adds_ignore_unknown_once_and_the_pod_uid_when_missing() {
        let cases = [
            ("", None, "IgnoreUnknown=1"),
            ("", Some("u1"), "IgnoreUnknown=1;K8S_POD_UID=u1"),
            (
                "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web",
                Some("u1"),
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web;K8S_POD_UID=u1",
            ),
            (
                "K8S_POD_NAME=web;IgnoreUnknown=true;K8S_POD_UID=u0",
                Some("u1"),
                "K8S_POD_NAME=web;IgnoreUnknown=true;K8S_POD_UID=u0",
            ),
            (
                ";;K8S_POD_NAME=web;",
                None,
                "IgnoreUnknown=1;K8S_POD_NAME=web",
            ),
            // A key that merely starts like one is another key.
            (
                "IgnoreUnknownX=1;K8S_POD_UIDX=u0",
                Some("u1"),
                "IgnoreUnknown=1;IgnoreUnknownX=1;K8S_POD_UIDX=u0;K8S_POD_UID=u1",
            ),
        ];
        for (runtime, uid, expected) in cases {
            let once = delegate_cni_args(runtime, uid);
            assert_eq!(once, expected, "{runtime:?} {uid:?}");
            assert_eq!(
                delegate_cni_args(&once, uid),
                once,
                "not idempotent for {runtime:?}"
            );
        }
    }

    #[test]
    fn a_config_without_a_name_gets_the_nads() {
        let cases = [
            (
                json!({"cniVersion": "1.0.0", "type": "macvlan"}),
                "nad-name",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "", "type": "macvlan"}),
                "nad-name",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": null, "type": "macvlan"}),
                "nad-name",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "own", "type": "macvlan"}),
                "own",
            ),
        ];
        for (config, name) in cases {
            let parsed =
                Unversioned::parse("ns1/nad-name", "nad-name", config.to_string().as_bytes())
                    .unwrap();
            assert_eq!(parsed.config.name.as_deref(), Some(name), "{config}");
            assert_eq!(parsed.raw["name"], name, "{config}");
            assert_eq!(parsed.raw["type"], "macvlan");
            assert_eq!(parsed.label, "ns1/nad-name");
        }
    }

    #[test]
    fn the_version_is_the_highest_of_cni_version_and_cni_versions() {
        let cases = [
            (json!({"cniVersion": "0.4.0"}), Some(CniVersion::V0_4_0)),
            (
                json!({"cniVersion": "0.4.0", "cniVersions": ["1.0.0", "1.1.0"]}),
                Some(CniVersion::V1_1_0),
            ),
            (
                json!({"cniVersions": ["0.3.1", "9.9.9"]}),
                Some(CniVersion::V0_3_1),
            ),
            (json!({"cniVersion": "2.0.0"}), None),
            (json!({"cniVersion": "0.2.0"}), None),
            (json!({}), None),
        ];
        for (mut config, version) in cases {
            config["type"] = json!("macvlan");
            let parsed = Unversioned::parse("n", "n", config.to_string().as_bytes()).unwrap();
            assert_eq!(parsed.version, version, "{config}");
        }
    }

    #[test]
    fn an_unusable_config_is_an_error_naming_the_network() {
        for (bytes, code) in [(&b"{nope"[..], 6), (br#"{"name": "n"}"#, 7)] {
            let error = Unversioned::parse("ns1/broken", "broken", bytes).unwrap_err();
            assert!(matches!(error, ResolveError::Config { .. }), "{error:?}");
            assert_eq!(error.cni_code(), code);
            assert!(error.to_string().contains("ns1/broken"), "{error}");
        }
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_plugins_version_answer_settles_a_config_without_a_usable_version() {
        let cases: [(Value, &[&str], CniVersion); 4] = [
            (json!({}), &["0.3.1", "0.4.0", "1.0.0"], CniVersion::V1_0_0),
            (
                json!({"cniVersion": "2.0.0"}),
                &["0.1.0", "1.1.0", "2.0.0"],
                CniVersion::V1_1_0,
            ),
            // A version from the config wins; the answer is not even needed.
            (json!({"cniVersion": "0.4.0"}), &[], CniVersion::V0_4_0),
            (
                json!({"cniVersion": "0.3.1"}),
                &["1.1.0"],
                CniVersion::V0_3_1,
            ),
        ];
        for (mut config, supported, expected) in cases {
            config["type"] = json!("macvlan");
            let network = Unversioned::parse("ns1/n", "n", config.to_string().as_bytes())
                .unwrap()
                .with_plugin_versions(&strings(supported))
                .unwrap();
            assert_eq!(network.version, expected, "{config} {supported:?}");
            assert_eq!(network.label, "ns1/n");
            assert_eq!(network.raw["name"], "n");
        }
    }

    #[test]
    fn no_common_version_is_an_error_naming_network_plugin_and_config_version() {
        let cases: [(Value, &[&str], &str); 3] = [
            (
                json!({"type": "old-plugin"}),
                &["0.1.0", "0.2.0"],
                "nothing",
            ),
            (json!({"type": "old-plugin"}), &[], "nothing"),
            (
                json!({"cniVersion": "2.0.0", "plugins": [{"type": "old-plugin"}, {"type": "tuning"}]}),
                &["0.2.0"],
                "2.0.0",
            ),
        ];
        for (config, supported, asked) in cases {
            let error = Unversioned::parse("ns1/n", "n", config.to_string().as_bytes())
                .unwrap()
                .with_plugin_versions(&strings(supported))
                .unwrap_err();
            match &error {
                ResolveError::NoCommonVersion {
                    network,
                    plugin,
                    asked: a,
                } => assert_eq!(
                    (network.as_str(), plugin.as_str(), a.as_str()),
                    ("ns1/n", "old-plugin", asked)
                ),
                other => panic!("{config}: {other:?}"),
            }
            assert_eq!(error.cni_code(), code::INCOMPATIBLE_VERSION);
            let text = error.to_string();
            assert!(
                text.contains("ns1/n") && text.contains("old-plugin"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_delegate_survives_the_record_round_trip() {
        let annotation = r#"[{"name": "a", "interface": "data0", "cni-args": {"k": "v"}, "default-route": ["10.1.0.1"], "mac": "c2:11:22:33:44:55"}]"#;
        let with_mac = |name: &str| json!({"cniVersion": "1.1.0", "name": name, "type": "macvlan", "capabilities": {"mac": true}});
        let delegates = plan_for(annotation, with_mac).unwrap();
        for delegate in delegates {
            let text = serde_json::to_string(&delegate).unwrap();
            let back: Delegate = serde_json::from_str(&text).unwrap();
            assert_eq!(back, delegate);
            let netconf = back.netconf().unwrap();
            assert_eq!(netconf.name.as_deref(), Some(back.cni_name()));
        }
    }
}
