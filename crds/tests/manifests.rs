//! Every example manifest parses as the Kubernetes type of its kind, and the deploy manifests
//! say what they must: the generated CRD, least-privilege RBAC, the DaemonSet's mounts, a
//! plexusd config with the planned keys, NAD configs that are CNI configs, and pods whose
//! selections name NADs that exist and declare what the selections ask for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::api::resource::v1::ResourceClaim;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use plexus_crds::NetworkAttachmentDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
const DEFAULT_NETWORK_ANNOTATION: &str = "v1.multus-cni.io/default-network";

/// The example directories whose manifests a user applies. Each group is applied together,
/// so a pod's networks must be found in its group.
const GROUPS: &[&[&str]] = &[
    &[
        "examples/deploy",
        "examples/nads",
        "examples/pods",
        "examples/flannel2",
    ],
    &["examples/standalone/manifests", "examples/standalone/later"],
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crds/ is inside the workspace")
        .to_owned()
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let dir = repo().join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    files
}

/// One parsed document, typed by its kind.
#[derive(Debug, Clone)]
enum Object {
    Namespace(Box<Namespace>),
    ServiceAccount(Box<ServiceAccount>),
    ClusterRole(Box<ClusterRole>),
    ClusterRoleBinding(Box<ClusterRoleBinding>),
    ConfigMap(Box<ConfigMap>),
    DaemonSet(Box<DaemonSet>),
    Pod(Box<Pod>),
    Crd(Box<CustomResourceDefinition>),
    Nad(Box<NetworkAttachmentDefinition>),
    ResourceClaim(Box<ResourceClaim>),
}

#[derive(Debug, Clone)]
struct Manifest {
    /// `file#document`, for messages.
    at: String,
    object: Object,
}

/// Deserializes `doc` as `T` and serializes it back: a key the type does not know (a typo, a
/// field at the wrong level) is lost on the way and fails the comparison.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value, at: &str) -> Box<T> {
    let object: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{at}: {e}"));
    let back = serde_json::to_value(&object).unwrap();
    if let Some(path) = first_difference(doc, &back, String::new()) {
        panic!("{at}: {path} is lost or changed when read as its kind (a typo?)");
    }
    Box::new(object)
}

/// The path of the first value that differs between `written` and `read`.
fn first_difference(written: &Value, read: &Value, path: String) -> Option<String> {
    match (written, read) {
        (Value::Object(w), Value::Object(r)) => w
            .iter()
            .find_map(|(k, v)| match r.get(k) {
                None => Some(format!("{path}.{k}")),
                Some(rv) => first_difference(v, rv, format!("{path}.{k}")),
            })
            .or_else(|| {
                r.keys()
                    .find(|k| !w.contains_key(*k))
                    .map(|k| format!("{path}.{k} (added)"))
            }),
        (Value::Array(w), Value::Array(r)) if w.len() == r.len() => w
            .iter()
            .zip(r)
            .enumerate()
            .find_map(|(i, (wv, rv))| first_difference(wv, rv, format!("{path}[{i}]"))),
        _ if written == read => None,
        _ => Some(if path.is_empty() { ".".into() } else { path }),
    }
}

fn parse_file(path: &Path) -> Vec<Manifest> {
    let text = std::fs::read_to_string(path).unwrap();
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = path.strip_prefix(repo()).unwrap().display().to_string();
    docs.into_iter()
        .enumerate()
        .filter(|(_, doc)| !doc.is_null())
        .map(|(i, doc)| {
            let at = format!("{name}#{}", i + 1);
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            let object = match kind.as_str() {
                "Namespace" => Object::Namespace(typed(&doc, &at)),
                "ServiceAccount" => Object::ServiceAccount(typed(&doc, &at)),
                "ClusterRole" => Object::ClusterRole(typed(&doc, &at)),
                "ClusterRoleBinding" => Object::ClusterRoleBinding(typed(&doc, &at)),
                "ConfigMap" => Object::ConfigMap(typed(&doc, &at)),
                "DaemonSet" => Object::DaemonSet(typed(&doc, &at)),
                "Pod" => Object::Pod(typed(&doc, &at)),
                "CustomResourceDefinition" => Object::Crd(typed(&doc, &at)),
                "ResourceClaim" => Object::ResourceClaim(typed(&doc, &at)),
                "NetworkAttachmentDefinition" => {
                    assert_eq!(doc["apiVersion"], "k8s.cni.cncf.io/v1", "{at}");
                    Object::Nad(typed(&doc, &at))
                }
                other => panic!("{at}: unexpected kind {other:?}"),
            };
            Manifest { at, object }
        })
        .collect()
}

fn group(dirs: &[&str]) -> Vec<Manifest> {
    dirs.iter()
        .flat_map(|dir| yaml_files(dir))
        .flat_map(|file| parse_file(&file))
        .collect()
}

fn deploy() -> Vec<Manifest> {
    group(&["examples/deploy"])
}

fn only<T>(manifests: &[Manifest], pick: impl Fn(&Object) -> Option<&T>) -> &T {
    let found: Vec<&T> = manifests.iter().filter_map(|m| pick(&m.object)).collect();
    assert_eq!(found.len(), 1, "expected exactly one of the kind");
    found[0]
}

#[test]
fn every_example_manifest_parses_as_its_kind() {
    let mut kinds = BTreeMap::<&str, usize>::new();
    for dirs in GROUPS {
        for manifest in group(dirs) {
            let kind = match &manifest.object {
                Object::Namespace(ns) => {
                    assert!(ns.metadata.name.is_some(), "{}", manifest.at);
                    "Namespace"
                }
                Object::ServiceAccount(_) => "ServiceAccount",
                Object::ClusterRole(_) => "ClusterRole",
                Object::ClusterRoleBinding(_) => "ClusterRoleBinding",
                Object::ConfigMap(_) => "ConfigMap",
                Object::DaemonSet(_) => "DaemonSet",
                Object::Pod(_) => "Pod",
                Object::Crd(crd) => {
                    assert_eq!(crd.spec.group, "k8s.cni.cncf.io", "{}", manifest.at);
                    "CustomResourceDefinition"
                }
                Object::Nad(_) => "NetworkAttachmentDefinition",
                Object::ResourceClaim(claim) => {
                    let requests = claim
                        .spec
                        .as_ref()
                        .and_then(|s| s.devices.as_ref())
                        .and_then(|d| d.requests.as_ref());
                    assert!(requests.is_some_and(|r| !r.is_empty()), "{}", manifest.at);
                    "ResourceClaim"
                }
            };
            *kinds.entry(kind).or_default() += 1;
        }
    }
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
        "CustomResourceDefinition",
    ] {
        assert_eq!(kinds.get(kind), Some(&1), "{kind}: {kinds:?}");
    }
    assert!(kinds["NetworkAttachmentDefinition"] >= 10, "{kinds:?}");
    assert!(kinds["Pod"] >= 5, "{kinds:?}");
}

#[test]
fn the_deploy_crd_is_the_generated_one() {
    let checked_in = std::fs::read_to_string(repo().join("examples/deploy/10-crd.yaml")).unwrap();
    assert_eq!(
        checked_in,
        plexus_crds::crd_yaml().unwrap(),
        "examples/deploy/10-crd.yaml is stale: run `make crd`"
    );
}

#[test]
fn the_cluster_role_grants_exactly_what_plexusd_needs() {
    let manifests = deploy();
    let role = only(&manifests, |o| match o {
        Object::ClusterRole(r) => Some(r.as_ref()),
        _ => None,
    });
    let granted: BTreeSet<(String, String, String)> = role
        .rules
        .iter()
        .flatten()
        .flat_map(|rule| {
            assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
            let groups = rule.api_groups.clone().unwrap_or_default();
            let resources = rule.resources.clone().unwrap_or_default();
            let mut out = Vec::new();
            for g in &groups {
                for r in &resources {
                    for v in &rule.verbs {
                        out.push((g.clone(), r.clone(), v.clone()));
                    }
                }
            }
            out
        })
        .collect();
    let expected: BTreeSet<(String, String, String)> = [
        ("k8s.cni.cncf.io", "network-attachment-definitions", "get"),
        ("k8s.cni.cncf.io", "network-attachment-definitions", "list"),
        ("k8s.cni.cncf.io", "network-attachment-definitions", "watch"),
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods", "patch"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
        ("", "events", "create"),
        ("", "events", "patch"),
        ("resource.k8s.io", "resourceclaims", "get"),
        ("resource.k8s.io", "resourceclaims", "list"),
        ("resource.k8s.io", "resourceclaims", "watch"),
        ("resource.k8s.io", "resourceslices", "get"),
        ("resource.k8s.io", "resourceslices", "list"),
        ("resource.k8s.io", "resourceslices", "watch"),
        ("resource.k8s.io", "resourceclaims/status", "patch"),
        (
            "resource.k8s.io",
            "resourceclaims/driver",
            "associated-node:patch",
        ),
    ]
    .into_iter()
    .map(|(g, r, v)| (g.to_owned(), r.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(granted, expected);
    assert!(
        !granted
            .iter()
            .any(|(g, r, v)| g == "*" || r == "*" || v == "*")
    );

    let binding = only(&manifests, |o| match o {
        Object::ClusterRoleBinding(b) => Some(b.as_ref()),
        _ => None,
    });
    let account = only(&manifests, |o| match o {
        Object::ServiceAccount(a) => Some(a.as_ref()),
        _ => None,
    });
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!(subject.kind, "ServiceAccount");
    assert_eq!(Some(&subject.name), account.metadata.name.as_ref());
    assert_eq!(subject.namespace, account.metadata.namespace);
}

fn plexusd_yaml(manifests: &[Manifest]) -> (String, serde_json::Map<String, Value>) {
    let config_map = only(manifests, |o| match o {
        Object::ConfigMap(c) => Some(c.as_ref()),
        _ => None,
    });
    let text = config_map
        .data
        .as_ref()
        .and_then(|d| d.get("plexusd.yaml"))
        .expect("the ConfigMap has a plexusd.yaml key");
    let value: Value = serde_saphyr::from_str(text).expect("plexusd.yaml is YAML");
    let Value::Object(map) = value else {
        panic!("plexusd.yaml is not a mapping");
    };
    (config_map.metadata.name.clone().unwrap(), map)
}

#[test]
fn the_config_map_holds_the_cluster_config_for_plexusd() {
    let (_, config) = plexusd_yaml(&deploy());
    let expected = json!({
        "source": "kube",
        "socketPath": "/run/plexus/plexus.sock",
        "cniConfDir": "/etc/cni/net.d",
        "cniBinDirs": ["/opt/cni/bin"],
        "recordsDir": "/var/lib/plexus/records",
        "writeConflist": true,
        "conflistName": "00-plexus.conflist",
        "defaultNetworks": [],
        "systemNamespace": "kube-system",
        "namespaceIsolation": false,
        "globalNamespaces": ["kube-system", "default"],
        "delegateTimeoutSeconds": 60,
        "podResourcesSocket": "/var/lib/kubelet/pod-resources/kubelet.sock",
        "podResourcesTimeoutSeconds": 3,
        "deviceInfoDir": "/var/run/k8s.cni.cncf.io/devinfo",
        "dra": true,
        "dynamicNetworks": false,
        "logFormat": "json",
        "multusCacheDir": "/var/lib/cni/multus",
    });
    assert_eq!(Value::Object(config.clone()), expected);
    // In-cluster credentials and the node name from $NODE_NAME: neither key is set.
    assert!(!config.contains_key("kubeconfig") && !config.contains_key("nodeName"));
}

fn plexusd_container(daemon_set: &DaemonSet) -> &Container {
    let spec = daemon_set.spec.template.spec.as_ref().unwrap();
    spec.containers
        .iter()
        .find(|c| c.name == "plexusd")
        .expect("a container named plexusd")
}

#[test]
fn the_daemon_set_runs_plexusd_on_the_host_network_with_the_node_dirs() {
    let manifests = deploy();
    let daemon_set = only(&manifests, |o| match o {
        Object::DaemonSet(d) => Some(d.as_ref()),
        _ => None,
    });
    let pod = daemon_set.spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.service_account_name.as_deref(), Some("plexus"));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    let tolerations = pod.tolerations.as_ref().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()),
        "tolerates every taint"
    );

    // volume name -> host path
    let host_paths: BTreeMap<&str, &str> = pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| Some((v.name.as_str(), v.host_path.as_ref()?.path.as_str())))
        .collect();
    let mounts_of = |container: &Container| -> BTreeMap<String, (String, Option<String>)> {
        container
            .volume_mounts
            .iter()
            .flatten()
            .filter_map(|m| {
                let host = host_paths.get(m.name.as_str())?;
                Some((
                    (*host).to_owned(),
                    (m.mount_path.clone(), m.mount_propagation.clone()),
                ))
            })
            .collect()
    };

    let plexusd = plexusd_container(daemon_set);
    assert_eq!(
        plexusd.security_context.as_ref().unwrap().privileged,
        Some(true)
    );
    let mounts = mounts_of(plexusd);
    for host in [
        "/opt/cni/bin",
        "/etc/cni/net.d",
        "/run/plexus",
        "/var/lib/plexus",
        "/var/lib/cni",
        "/var/lib/kubelet/pod-resources",
        "/var/run/k8s.cni.cncf.io/devinfo",
    ] {
        let (in_container, _) = mounts
            .get(host)
            .unwrap_or_else(|| panic!("plexusd does not mount {host}: {mounts:?}"));
        assert_eq!(in_container, host, "mounted at the node's own path");
    }
    let (_, propagation) = &mounts["/var/run/netns"];
    assert_eq!(propagation.as_deref(), Some("HostToContainer"));
    let env: BTreeMap<&str, &str> = plexusd
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            let field = e.value_from.as_ref()?.field_ref.as_ref()?;
            Some((e.name.as_str(), field.field_path.as_str()))
        })
        .collect();
    assert_eq!(env.get("NODE_NAME"), Some(&"spec.nodeName"));
    let command = plexusd.command.clone().unwrap_or_default();
    assert_eq!(command, ["plexusd", "--config", "/etc/plexus/plexusd.yaml"]);
    for probe in [&plexusd.liveness_probe, &plexusd.readiness_probe] {
        let exec = probe.as_ref().unwrap().exec.as_ref().unwrap();
        let command = exec.command.as_ref().unwrap();
        assert_eq!(&command[..2], ["plexusd", "probe"]);
    }
    let requests = plexusd
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap();
    assert_eq!(requests["cpu"].0, "10m");
    assert_eq!(requests["memory"].0, "32Mi");

    // The config map mounted at /etc/plexus is the one with plexusd.yaml, and its paths are
    // the mounted node paths.
    let (config_map_name, config) = plexusd_yaml(&manifests);
    let config_volume = plexusd
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/etc/plexus")
        .expect("the config is mounted at /etc/plexus");
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == config_volume.name)
        .unwrap();
    assert_eq!(
        volume.config_map.as_ref().map(|c| c.name.as_str()),
        Some(config_map_name.as_str())
    );
    let socket = config["socketPath"].as_str().unwrap();
    assert!(socket.starts_with("/run/plexus/"), "{socket}");
    let records = config["recordsDir"].as_str().unwrap();
    assert!(records.starts_with("/var/lib/plexus/"), "{records}");

    // The init container installs the shim into the mounted bin dir.
    let init = pod.init_containers.as_ref().unwrap();
    assert_eq!(init.len(), 1);
    let command = init[0].command.clone().unwrap_or_default();
    assert_eq!(
        command,
        [
            "plexusd",
            "install-shim",
            "--from",
            "/usr/local/bin/plexus",
            "--to",
            "/opt/cni/bin"
        ]
    );
    assert_eq!(mounts_of(&init[0])["/opt/cni/bin"].0, "/opt/cni/bin");
    assert_eq!(init[0].image, plexusd.image);
}

#[test]
fn deploy_objects_live_in_kube_system() {
    for manifest in deploy() {
        let namespace = match &manifest.object {
            Object::ServiceAccount(o) => o.metadata.namespace.clone(),
            Object::ConfigMap(o) => o.metadata.namespace.clone(),
            Object::DaemonSet(o) => o.metadata.namespace.clone(),
            Object::ClusterRole(_) | Object::ClusterRoleBinding(_) | Object::Crd(_) => continue,
            other => panic!("{}: unexpected in deploy: {other:?}", manifest.at),
        };
        assert_eq!(namespace.as_deref(), Some("kube-system"), "{}", manifest.at);
    }
}

/// A NAD of a group: its config as JSON (`None` for an empty config) and its capabilities.
struct Nad {
    config: Option<serde_json::Map<String, Value>>,
}

impl Nad {
    fn declares(&self, capability: &str) -> bool {
        let Some(config) = &self.config else {
            return true; // a conf file on the node: not known here
        };
        let plugins = match config.get("plugins") {
            Some(Value::Array(list)) => list.iter().collect(),
            _ => vec![&Value::Null],
        };
        let single = Value::Object(config.clone());
        plugins
            .into_iter()
            .map(|p| if p.is_null() { &single } else { p })
            .any(|p| p["capabilities"][capability] == true)
    }
}

fn nads(manifests: &[Manifest]) -> BTreeMap<(String, String), Nad> {
    let mut out = BTreeMap::new();
    for manifest in manifests {
        let Object::Nad(nad) = &manifest.object else {
            continue;
        };
        let at = &manifest.at;
        let name = nad.metadata.name.clone().unwrap();
        let namespace = nad
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let config = match nad.spec.config.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => {
                let value: Value = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("{at}: spec.config is not JSON: {e}"));
                let Value::Object(config) = value else {
                    panic!("{at}: spec.config is not a JSON object");
                };
                let plugins_ok = matches!(config.get("plugins"), Some(Value::Array(p)) if !p.is_empty()
                    && p.iter().all(|p| p["type"].is_string()));
                let type_ok = config.get("type").is_some_and(Value::is_string);
                assert!(
                    plugins_ok || type_ok,
                    "{at}: spec.config has neither a plugins list nor a type"
                );
                assert!(config["cniVersion"].is_string(), "{at}: no cniVersion");
                assert_eq!(config["name"], name, "{at}: the config's name is the NAD's");
                Some(config)
            }
        };
        let previous = out.insert((namespace, name), Nad { config });
        assert!(previous.is_none(), "{at}: a second NAD of that name");
    }
    out
}

/// `(namespace, name, asks)` for every network a pod selects; `asks` lists the capabilities
/// its selection requests.
fn selections(pod: &Pod, at: &str) -> Vec<(String, String, Vec<&'static str>)> {
    let namespace = pod.metadata.namespace.clone().unwrap_or("default".into());
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let mut out = Vec::new();
    let reference = |text: &str| match text.split_once('/') {
        Some((ns, name)) => (ns.to_owned(), name.to_owned()),
        None => (namespace.clone(), text.to_owned()),
    };
    if let Some(default) = annotations.get(DEFAULT_NETWORK_ANNOTATION) {
        let (ns, name) = reference(default.trim());
        out.push((ns, name, Vec::new()));
    }
    let Some(networks) = annotations.get(NETWORKS_ANNOTATION) else {
        return out;
    };
    let networks = networks.trim();
    if networks.starts_with('[') {
        let list: Vec<serde_json::Map<String, Value>> = serde_json::from_str(networks)
            .unwrap_or_else(|e| panic!("{at}: the networks annotation is not a JSON list: {e}"));
        for entry in list {
            let name = entry["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{at}: an entry without a name"));
            let ns = entry
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or(&namespace);
            let asks = [
                ("ips", "ips"),
                ("mac", "mac"),
                ("portMappings", "portMappings"),
                ("bandwidth", "bandwidth"),
                ("infiniband-guid", "infinibandGUID"),
            ]
            .into_iter()
            .filter(|(key, _)| entry.contains_key(*key))
            .map(|(_, capability)| capability)
            .collect();
            out.push((ns.to_owned(), name.to_owned(), asks));
        }
    } else {
        for element in networks.split(',') {
            let element = element.trim();
            let network = element.split_once('@').map_or(element, |(n, _)| n);
            let (ns, name) = reference(network);
            out.push((ns, name, Vec::new()));
        }
    }
    out
}

#[test]
fn nad_configs_are_cni_configs_and_pods_select_nads_that_exist() {
    for dirs in GROUPS {
        let manifests = group(dirs);
        let nads = nads(&manifests);
        let mut pods = 0;
        for manifest in &manifests {
            let Object::Pod(pod) = &manifest.object else {
                continue;
            };
            pods += 1;
            let at = &manifest.at;
            let selected = selections(pod, at);
            assert!(!selected.is_empty(), "{at}: selects no network");
            for (namespace, name, asks) in selected {
                let nad = nads
                    .get(&(namespace.clone(), name.clone()))
                    .unwrap_or_else(|| panic!("{at}: no NAD {namespace}/{name} in {dirs:?}"));
                for capability in asks {
                    assert!(
                        nad.declares(capability),
                        "{at}: asks {namespace}/{name} for {capability}, which it does not declare"
                    );
                }
            }
        }
        assert!(pods > 0, "{dirs:?} has no pods");
    }
}
