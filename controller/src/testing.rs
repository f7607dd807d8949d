//! Test-only helpers: an executor that records every delegate call and answers from a script
//! (like youki's `TestHelperSyscall`), so ordering and rollback are tested without root or real
//! plugins; and builders for the objects those tests need.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use crate::cni::result::{Interface, IpConfig};
use crate::cni::version::pick_config_version;
use crate::cni::{CniError, CniResult, CniVersion, Command, DelegateCall, ExecError, Executor};
use plexus_crds::NetworkAttachmentDefinition;

use crate::names::{ContainerId, IfName, Namespace, ObjectName, PodKey};
use crate::records::{Attachment, PodRecord};
use crate::resolve::{Delegate, Network, Unversioned};
use crate::selection::NETWORKS_ANNOTATION;
use crate::source::files::FilesSource;
use crate::source::{PodEvent, PodInfo, Readiness, Source, SourceError};
use crate::status::NetworkStatus;

/// How a scripted plugin answers one command.
#[derive(Debug, Clone)]
pub enum Reply {
    /// ADD: a result in the request's version with one sandbox interface named after
    /// CNI_IFNAME and a 10.0.<call number>.2/24 address; the other commands print nothing.
    Success,
    /// Exits 0 after printing exactly these bytes.
    Prints(Vec<u8>),
    /// Exits 1 with this CNI error object.
    Fails(CniError),
}

/// One call the executor saw.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCall {
    pub plugin: String,
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// CNI_ARGS.
    pub cni_args: String,
    /// The request body, parsed (`Null` if it was not JSON).
    pub stdin: Value,
    /// What the plugin printed on success (parsed; `Null` when nothing or not JSON), or its error.
    pub answer: Result<Value, CniError>,
}

impl RecordedCall {
    pub fn prev_result(&self) -> Option<&Value> {
        self.stdin.get("prevResult")
    }

    pub fn runtime_config(&self) -> Option<&Value> {
        self.stdin.get("runtimeConfig")
    }

    /// `"ADD bridge eth0"`: enough to assert the order of calls at a glance.
    pub fn line(&self) -> String {
        format!("{} {} {}", self.command, self.plugin, self.ifname)
            .trim_end()
            .to_owned()
    }
}

#[derive(Default)]
struct State {
    calls: Vec<RecordedCall>,
    script: HashMap<(String, Command), Reply>,
    versions: HashMap<String, Vec<String>>,
}

/// An [`Executor`] that runs nothing: it records each call in order and answers per
/// (plugin type, command) from its script, [`Reply::Success`] when nothing is scripted.
#[derive(Default)]
pub struct RecordingExecutor {
    state: Mutex<State>,
}

impl RecordingExecutor {
    pub fn new() -> Self {
        Self::default()
    }

    /// `plugin` answers `command` with the CNI error `code`/`msg` from now on.
    pub fn fails(self, plugin: &str, command: Command, code: u32, msg: &str) -> Self {
        self.set(plugin, command, Reply::Fails(CniError::new(code, msg, "")));
        self
    }

    /// `plugin` prints `stdout` for `command` from now on.
    pub fn answers(self, plugin: &str, command: Command, stdout: Value) -> Self {
        self.set(
            plugin,
            command,
            Reply::Prints(stdout.to_string().into_bytes()),
        );
        self
    }

    /// `plugin` prints these exact bytes for `command` from now on.
    pub fn prints(self, plugin: &str, command: Command, stdout: &[u8]) -> Self {
        self.set(plugin, command, Reply::Prints(stdout.to_vec()));
        self
    }

    /// `plugin`'s VERSION answer (`supportedVersions`); unknown plugins answer nothing.
    pub fn speaks(self, plugin: &str, versions: &[&str]) -> Self {
        self.state().versions.insert(
            plugin.to_owned(),
            versions.iter().map(|v| (*v).to_owned()).collect(),
        );
        self
    }

    /// Changes the script while a test runs (a plugin that gets fixed, or breaks).
    pub fn set(&self, plugin: &str, command: Command, reply: Reply) {
        self.state()
            .script
            .insert((plugin.to_owned(), command), reply);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.state().calls.clone()
    }

    /// The calls so far as [`RecordedCall::line`]s.
    pub fn lines(&self) -> Vec<String> {
        self.state().calls.iter().map(RecordedCall::line).collect()
    }

    /// The calls of one command, in order.
    pub fn calls_of(&self, command: Command) -> Vec<RecordedCall> {
        self.state()
            .calls
            .iter()
            .filter(|c| c.command == command)
            .cloned()
            .collect()
    }

    /// Forgets the calls so far (the script stays).
    pub fn clear(&self) {
        self.state().calls.clear();
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; keep the data.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn answer(&self, call: DelegateCall) -> Result<Vec<u8>, ExecError> {
        let mut state = self.state();
        let number = state.calls.len();
        let stdin: Value = serde_json::from_slice(&call.stdin).unwrap_or(Value::Null);
        let reply = state
            .script
            .get(&(call.plugin_type.clone(), call.command))
            .cloned()
            .unwrap_or(Reply::Success);
        let outcome = match reply {
            Reply::Success if call.command == Command::Add => {
                Ok(canned_result(&call, &stdin, number)
                    .to_string()
                    .into_bytes())
            }
            Reply::Success => Ok(Vec::new()),
            Reply::Prints(bytes) => Ok(bytes),
            Reply::Fails(error) => Err(error),
        };
        state.calls.push(RecordedCall {
            plugin: call.plugin_type.clone(),
            command: call.command,
            container_id: call.container_id.clone(),
            netns: call.netns.clone(),
            ifname: call.ifname.clone(),
            cni_args: call.cni_args.clone(),
            stdin,
            answer: outcome
                .as_ref()
                .map(|out| serde_json::from_slice(out).unwrap_or(Value::Null))
                .map_err(Clone::clone),
        });
        outcome.map_err(|error| ExecError::Failed {
            stderr: format!("{} {} failed on purpose", call.plugin_type, call.command),
            plugin: call.plugin_type,
            error,
        })
    }
}

/// The result a well-behaved plugin prints for ADD: in the request's version, one interface
/// inside the pod named after CNI_IFNAME, and an address unique to this call.
fn canned_result(call: &DelegateCall, stdin: &Value, number: usize) -> Value {
    let version = stdin
        .get("cniVersion")
        .and_then(Value::as_str)
        .and_then(|v| CniVersion::parse(v).ok())
        .unwrap_or(CniVersion::LATEST);
    let octet = number % 250 + 1;
    let result = CniResult {
        interfaces: vec![Interface {
            name: call.ifname.clone(),
            mac: Some(format!("02:00:00:00:00:{octet:02x}")),
            sandbox: Some(call.netns.clone()).filter(|n| !n.is_empty()),
            ..Interface::default()
        }],
        ips: vec![IpConfig {
            address: format!("10.0.{octet}.2/24")
                .parse()
                .expect("a valid prefix"),
            gateway: Some(format!("10.0.{octet}.1").parse().expect("a valid address")),
            interface: Some(0),
        }],
        ..CniResult::default()
    };
    result.to_json(version)
}

impl Executor for RecordingExecutor {
    fn run(&self, call: DelegateCall) -> BoxFuture<'_, Result<Vec<u8>, ExecError>> {
        let outcome = self.answer(call);
        Box::pin(async move { outcome })
    }

    fn supported_versions<'a>(&'a self, plugin_type: &'a str) -> BoxFuture<'a, Vec<String>> {
        let versions = self
            .state()
            .versions
            .get(plugin_type)
            .cloned()
            .unwrap_or_default();
        Box::pin(async move { versions })
    }
}

/// A conflist named `name` at `version` whose plugins are bare objects of these types.
pub fn chain(name: &str, version: &str, types: &[&str]) -> Value {
    let plugins: Vec<Value> = types.iter().map(|t| json!({ "type": t })).collect();
    json!({ "cniVersion": version, "name": name, "plugins": plugins })
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected a JSON object, got {other}"),
    }
}

impl Delegate {
    /// A secondary delegate for `config` on net1, at the highest version the config names.
    pub fn test(network: &str, config: Value) -> Self {
        let netconf = crate::cni::NetworkConfig::parse(config.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("test config for {network} is invalid: {e}"));
        let version = pick_config_version(netconf.cni_version.as_deref(), &netconf.cni_versions)
            .unwrap_or_else(|| panic!("test config for {network} names no usable cniVersion"));
        Self {
            network: network.to_owned(),
            is_default: false,
            ifname: IfName::numbered(1),
            version,
            config,
            runtime_config: Map::new(),
            args_cni: None,
            cni_args: "IgnoreUnknown=1".to_owned(),
            default_route: None,
            device: None,
        }
    }

    /// The cluster default network's delegate, on eth0.
    pub fn cluster(mut self) -> Self {
        self.is_default = true;
        self.on("eth0")
    }

    pub fn on(mut self, ifname: &str) -> Self {
        self.ifname = IfName::parse(ifname).expect("a valid test interface name");
        self
    }

    pub fn with_runtime_config(mut self, runtime_config: Value) -> Self {
        self.runtime_config = object(runtime_config);
        self
    }

    pub fn with_args_cni(mut self, args: Value) -> Self {
        self.args_cni = Some(object(args));
        self
    }

    pub fn with_cni_args(mut self, cni_args: &str) -> Self {
        self.cni_args = cni_args.to_owned();
        self
    }

    pub fn with_default_route(mut self, gateways: &[&str]) -> Self {
        self.default_route = Some(
            gateways
                .iter()
                .map(|gw| gw.parse().expect("a valid test gateway"))
                .collect(),
        );
        self
    }
}

impl Network {
    /// A network whose config names its version (panics otherwise), labelled `label`.
    pub fn test(label: &str, config: Value) -> Self {
        Unversioned::parse(label, label, config.to_string().as_bytes())
            .and_then(|n| n.with_plugin_versions(&[]))
            .unwrap_or_else(|e| panic!("test network {label}: {e}"))
    }
}

impl PodRecord {
    /// The record of container `id` on eth0, in netns /var/run/netns/<id>, runtime version 1.1.0.
    pub fn test(id: &str, attachments: Vec<Attachment>) -> Self {
        Self {
            container_id: ContainerId::parse(id).expect("a valid test container id"),
            ifname: IfName::parse("eth0").expect("eth0 is valid"),
            netns: format!("/var/run/netns/{id}"),
            pod: None,
            pod_uid: None,
            adopted: None,
            runtime_version: CniVersion::V1_1_0,
            attachments,
            network_status: Vec::new(),
            deleting: false,
            intent: None,
        }
    }
}

/// The names in a directory, sorted: what a test sees with `ls`.
pub fn dir_entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// A [`Source`] the test fills by hand: a [`FilesSource`] over a temp dir of manifests, which
/// keeps what Plexus tells pods (network-status and events) for the test to look at.
pub struct TestSource {
    dir: tempfile::TempDir,
    files: Arc<FilesSource>,
    statuses: Mutex<Vec<Vec<NetworkStatus>>>,
    events: Mutex<Vec<PodEvent>>,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Default for TestSource {
    fn default() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = FilesSource::load(dir.path());
        Self {
            dir,
            files,
            statuses: Mutex::default(),
            events: Mutex::default(),
        }
    }
}

impl TestSource {
    fn write(&self, file: &str, manifest: Value) {
        std::fs::write(self.dir.path().join(file), manifest.to_string()).expect("write manifest");
        self.files.reload();
    }

    /// Pod `namespace/name` with uid `uid` and this networks annotation (none if empty).
    pub fn set_pod(&self, namespace: &str, name: &str, uid: &str, networks: &str) {
        let annotations = [(NETWORKS_ANNOTATION, networks)];
        let given = if networks.is_empty() {
            &[][..]
        } else {
            &annotations[..]
        };
        self.set_pod_with(namespace, name, uid, given);
    }

    /// Pod `namespace/name` with uid `uid` and these annotations.
    pub fn set_pod_with(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        annotations: &[(&str, &str)],
    ) {
        let annotations: BTreeMap<&str, &str> = annotations.iter().copied().collect();
        let metadata =
            json!({"name": name, "namespace": namespace, "uid": uid, "annotations": annotations});
        self.write(
            &format!("pod-{namespace}-{name}.json"),
            json!({"kind": "Pod", "metadata": metadata}),
        );
    }

    /// The pod as the source answers for it.
    pub async fn pod_info(&self, namespace: &str, name: &str) -> Arc<PodInfo> {
        let key = PodKey {
            namespace: Namespace::parse(namespace).expect("test namespace"),
            name: ObjectName::parse(name).expect("test pod name"),
        };
        self.files
            .pod(&key, None)
            .await
            .ok()
            .flatten()
            .expect("a pod the test set")
    }

    /// NAD `namespace/name` with `config` inline.
    pub fn set_nad(&self, namespace: &str, name: &str, config: &Value) {
        let manifest = json!({
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"config": config.to_string()},
        });
        self.write(&format!("nad-{namespace}-{name}.json"), manifest);
    }

    /// Every network-status published, oldest first.
    pub fn statuses(&self) -> Vec<Vec<NetworkStatus>> {
        locked(&self.statuses).clone()
    }

    /// Every event published, oldest first.
    pub fn events(&self) -> Vec<PodEvent> {
        locked(&self.events).clone()
    }
}

impl Source for TestSource {
    fn pod<'a>(
        &'a self,
        key: &'a PodKey,
        uid: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Arc<PodInfo>>, SourceError>> {
        self.files.pod(key, uid)
    }

    fn nad<'a>(
        &'a self,
        namespace: &'a Namespace,
        name: &'a ObjectName,
    ) -> BoxFuture<'a, Result<Option<Arc<NetworkAttachmentDefinition>>, SourceError>> {
        self.files.nad(namespace, name)
    }

    fn readiness(&self) -> Readiness {
        self.files.readiness()
    }

    fn publish_status(
        self: Arc<Self>,
        _pod: &PodKey,
        _uid: Option<&str>,
        status: &[NetworkStatus],
    ) {
        locked(&self.statuses).push(status.to_vec());
    }

    fn publish_event(self: Arc<Self>, _pod: &PodKey, _uid: Option<&str>, event: PodEvent) {
        locked(&self.events).push(event);
    }
}

/// plexusd's config for a node under `root`: its net.d holds a cluster network of one
/// `bridge` plugin, its records go to `root/records`.
pub fn node_config(root: &std::path::Path) -> crate::config::Config {
    let conf_dir = root.join("net.d");
    std::fs::create_dir_all(&conf_dir).expect("net.d");
    std::fs::write(
        conf_dir.join("10-cluster.conflist"),
        chain("cluster", "1.0.0", &["bridge"]).to_string(),
    )
    .expect("the cluster conflist");
    crate::config::Config {
        cni_conf_dir: conf_dir,
        records_dir: root.join("records"),
        ..crate::config::Config::default()
    }
}
