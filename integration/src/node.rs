//! A node: a network namespace with its own plexusd, CNI conf dir, manifest dir, records and
//! IPAM state, all in a temp dir that goes away with the node.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::apiserver::ApiServer;
use crate::cluster::Cluster;
use crate::kubelet::Kubelet;
use crate::records_mount::RecordsMount;
use crate::shim::{self, CniEnv, ShimOutput};
use crate::{Netns, Pod, binaries};

/// The subnet of the default cluster network each test node gets.
pub const CLUSTER_SUBNET: &str = "198.18.0.0/24";

/// plexusd's intent journal in the records dir: always there, and not a record.
pub const INTENT_JOURNAL: &str = "intents.journal";
/// Where plexusd moves a record DEL removed, to unlink it in the background.
pub const DELETED_RECORDS: &str = "deleted";

pub struct NodeBuilder {
    cluster_conf: Option<Value>,
    manifests: Vec<(String, String)>,
    extra_conf_files: Vec<(String, String)>,
    config: Vec<String>,
    uplink: bool,
    plugins: Vec<(String, String)>,
    kube: bool,
    real_cluster: Option<PathBuf>,
    rust_log: String,
    kubelet: bool,
    records_tmpfs: Option<u64>,
    delegate_timeout_seconds: u64,
}

impl NodeBuilder {
    /// A test kubelet serving the PodResources API on the socket plexusd is configured with.
    pub fn kubelet(mut self) -> Self {
        self.kubelet = true;
        self
    }

    /// The records directory on a tmpfs of `size_kib` in a private mount namespace that
    /// plexusd runs in, so the test can fill it or make it read-only (`Node::records_mount`).
    pub fn records_tmpfs(mut self, size_kib: u64) -> Self {
        self.records_tmpfs = Some(size_kib);
        self
    }

    /// plexusd's `delegateTimeoutSeconds` (20 unless set).
    pub fn delegate_timeout_seconds(mut self, seconds: u64) -> Self {
        self.delegate_timeout_seconds = seconds;
        self
    }

    /// plexusd's `RUST_LOG`; `debug` unless set (the bench runs it at plexusd's default, `info`).
    pub fn rust_log(mut self, filter: &str) -> Self {
        self.rust_log = filter.to_owned();
        self
    }

    /// plexusd on the `kube` source, against a test API server in the node's namespace, with
    /// a kubeconfig whose token file the test can rotate.
    pub fn kube(mut self) -> Self {
        self.kube = true;
        self
    }

    /// plexusd on the `kube` source against the cluster `kubeconfig` names, as in the
    /// real-cluster mode of the tests (see `cluster`).
    pub fn real_cluster(mut self, kubeconfig: &Path) -> Self {
        self.real_cluster = Some(kubeconfig.to_owned());
        self
    }

    /// A shell-script plugin in a plugin dir searched before Debian's. `@DIR@` in the script is
    /// replaced by the node's temp dir.
    pub fn plugin(mut self, name: &str, script: &str) -> Self {
        self.plugins.push((name.to_owned(), script.to_owned()));
        self
    }

    /// The cluster network's conflist (`@IPAM@` and `@DIR@` are filled in, as for `conf_file`).
    pub fn cluster(mut self, conflist: Value) -> Self {
        self.cluster_conf = Some(conflist);
        self
    }

    /// A manifest file in the node's manifest dir. `@IPAM@` is replaced by the node's IPAM dir,
    /// `@DIR@` by its temp dir.
    pub fn manifest(mut self, file: &str, yaml: &str) -> Self {
        self.manifests.push((file.to_owned(), yaml.to_owned()));
        self
    }

    /// Another file in the CNI conf dir. `@IPAM@` is replaced by the node's IPAM dir, `@DIR@` by
    /// its temp dir.
    pub fn conf_file(mut self, file: &str, body: &str) -> Self {
        self.extra_conf_files
            .push((file.to_owned(), body.to_owned()));
        self
    }

    /// A raw line for plexusd's config file, e.g. `clusterNetwork: cbr0`.
    pub fn config_line(mut self, line: &str) -> Self {
        self.config.push(line.to_owned());
        self
    }

    /// Every one of `lines` (`config_line`), as the benches' `--plexusd-config` give them.
    pub fn config_lines(self, lines: &[String]) -> Self {
        lines
            .iter()
            .fold(self, |builder, line| builder.config_line(line))
    }

    /// A veth pair `uplink0`/`uplink0p` in the node, as the master of macvlan networks.
    pub fn uplink(mut self) -> Self {
        self.uplink = true;
        self
    }

    pub fn start(self) -> Node {
        let netns = Netns::new("node");
        let dir = tempfile::Builder::new()
            .prefix("plexus-test-")
            .tempdir()
            .expect("temp dir");
        let api = match (&self.real_cluster, self.kube) {
            (Some(kubeconfig), _) => Some(Cluster::real(kubeconfig, &netns.path())),
            (None, true) => Some(Cluster::for_node(&netns.path())),
            (None, false) => None,
        };
        let mut node = Node {
            plexusd: Mutex::new(None),
            netns,
            dir,
            config: self.config,
            api,
            name: crate::unique("node-"),
            rust_log: self.rust_log,
            kubelet: None,
            records_mount: None,
            delegate_timeout_seconds: self.delegate_timeout_seconds,
        };
        if node.api.is_some() {
            node.connect_to_api();
        }
        for sub in ["net.d", "manifests", "records", "ipam", "bin"] {
            std::fs::create_dir_all(node.dir.path().join(sub)).expect("mkdir");
        }
        if let Some(size_kib) = self.records_tmpfs {
            let mount_point = node.dir().join("records-fs");
            node.records_mount = Some(RecordsMount::new(&mount_point, size_kib));
        }
        for (name, script) in &self.plugins {
            use std::os::unix::fs::PermissionsExt;
            let path = node.dir().join("bin").join(name);
            let script = script.replace("@DIR@", &node.dir().display().to_string());
            std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write plugin");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let cluster = self.cluster_conf.unwrap_or_else(default_cluster);
        node.write_conf("10-cluster.conflist", &cluster.to_string());
        for (file, body) in &self.extra_conf_files {
            node.write_conf(file, body);
        }
        for (file, yaml) in &self.manifests {
            node.write_manifest(file, yaml);
        }
        if self.uplink {
            node.netns.ip(&[
                "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink0p",
            ]);
            node.netns.ip(&["link", "set", "uplink0", "up"]);
            node.netns.ip(&["link", "set", "uplink0p", "up"]);
        }
        if self.kubelet {
            node.kubelet = Some(Kubelet::start(&node.pod_resources_socket()));
        }
        node.start_plexusd();
        node
    }
}

fn default_cluster() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "cluster",
        "plugins": [{
            "type": "bridge", "bridge": "cni0", "isGateway": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": CLUSTER_SUBNET}]], "dataDir": "@IPAM@"}
        }]
    })
}

pub struct Node {
    /// Behind a lock, so that one thread can kill and restart plexusd while others call it.
    plexusd: Mutex<Option<Child>>,
    pub netns: Netns,
    dir: TempDir,
    config: Vec<String>,
    /// The API server of a `kube` node; dropped after plexusd is stopped.
    api: Option<Cluster>,
    /// This node's name in the API server.
    name: String,
    rust_log: String,
    /// The test kubelet of a node built with `.kubelet()`.
    kubelet: Option<Kubelet>,
    /// The tmpfs the records live on, for a node built with `records_tmpfs`.
    records_mount: Option<RecordsMount>,
    delegate_timeout_seconds: u64,
}

impl Node {
    pub fn builder() -> NodeBuilder {
        NodeBuilder {
            cluster_conf: None,
            manifests: Vec::new(),
            extra_conf_files: Vec::new(),
            config: Vec::new(),
            uplink: false,
            plugins: Vec::new(),
            kube: false,
            real_cluster: None,
            rust_log: "debug".to_owned(),
            kubelet: false,
            records_tmpfs: None,
            delegate_timeout_seconds: 20,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The API server of a `kube` node.
    pub fn cluster(&self) -> &Cluster {
        self.api.as_ref().expect("a node built with .kube()")
    }

    /// The test API server, for tests that steer it (pause, count, compact, rotate tokens).
    /// Against a real cluster such a test cannot run: the `real-cluster` nextest profile skips
    /// it, and anywhere else it fails here rather than pass without having tested anything.
    pub fn fixture(&self) -> &ApiServer {
        match self.cluster().fixture() {
            Some(api) => api,
            None => panic!(
                "this test steers the test API server, so it cannot run against {}'s cluster: run the real-cluster tests with `cargo nextest run --profile real-cluster`, which skips it",
                crate::cluster::KUBECONFIG_VAR
            ),
        }
    }

    /// This node's name in the API server (pods scheduled here have it as spec.nodeName).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn connect_to_api(&mut self) {
        let token_file = self.dir().join("token");
        std::fs::write(&token_file, "token-1").expect("write token");
        if let Some(api) = self.cluster().fixture() {
            api.set_token(Some("token-1"));
        }
        let kubeconfig = self
            .cluster()
            .write_kubeconfig(&self.dir().join("kubeconfig"), &token_file);
        let kube_lines = [
            "source: kube".to_owned(),
            format!("kubeconfig: {}", kubeconfig.display()),
            format!("nodeName: {}", self.name),
        ];
        self.config.extend(kube_lines);
    }

    /// Rotates the service account token: the API server accepts only the new one, and the
    /// token file plexusd reads now holds it.
    pub fn rotate_token(&self, api: &ApiServer, token: &str) {
        std::fs::write(self.dir().join("token"), token).expect("write token");
        api.set_token(Some(token));
    }

    /// Creates or replaces the pod in the API server, scheduled on this node.
    pub fn apply_pod(&self, pod: &Pod, annotations: Value) {
        self.apply_pod_on(pod, annotations, &self.name);
    }

    /// Creates or replaces the pod in the API server, scheduled on `node`; the pod takes the
    /// uid the API server holds.
    pub fn apply_pod_on(&self, pod: &Pod, annotations: Value, node: &str) {
        let object = crate::pod::pod_object(
            &pod.namespace,
            &pod.name,
            &pod.uid(),
            annotations,
            Some(node),
        );
        let stored = self.cluster().apply(object);
        if let Some(uid) = stored["metadata"]["uid"].as_str() {
            pod.set_uid(uid);
        }
    }

    /// Creates or replaces a NAD in the API server; `@IPAM@` in its config is filled in.
    pub fn apply_nad(&self, namespace: &str, name: &str, config: &Value) {
        self.apply_nad_annotated(namespace, name, json!({}), config);
    }

    /// A NAD with annotations, e.g. `k8s.v1.cni.cncf.io/resourceName`.
    pub fn apply_nad_annotated(
        &self,
        namespace: &str,
        name: &str,
        annotations: Value,
        config: &Value,
    ) {
        self.cluster().apply(json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "spec": {"config": self.fill(&config.to_string())}
        }));
    }

    /// Creates or replaces the pod, scheduled on this node, after `edit` has had its way with
    /// the object (resource claims in its spec, their statuses in its status).
    pub fn apply_pod_with(&self, pod: &Pod, annotations: Value, edit: impl FnOnce(&mut Value)) {
        let mut object = crate::pod::pod_object(
            &pod.namespace,
            &pod.name,
            &pod.uid(),
            annotations,
            Some(&self.name),
        );
        edit(&mut object);
        let stored = self.cluster().apply_with_status(object);
        if let Some(uid) = stored["metadata"]["uid"].as_str() {
            pod.set_uid(uid);
        }
    }

    /// Waits until plexusd's /readyz body contains `text` (e.g. `nads=2 `, `degraded`).
    pub fn wait_for_readyz(&self, text: &str, timeout: Duration) -> String {
        self.wait_for_readyz_where(text, timeout, |body| body.contains(text))
    }

    /// Waits until plexusd's /readyz counts exactly `nads` NADs and `pods` pods, whatever else
    /// it counts (claims, slices) and in whatever order.
    pub fn wait_for_counts(&self, nads: usize, pods: usize, timeout: Duration) -> String {
        let wanted = [format!("nads={nads}"), format!("pods={pods}")];
        self.wait_for_readyz_where(&wanted.join(" "), timeout, |body| {
            let words: Vec<&str> = body.split_whitespace().collect();
            wanted.iter().all(|w| words.contains(&w.as_str()))
        })
    }

    fn wait_for_readyz_where(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            last = self.get("/readyz");
            if let Some((_, body)) = &last
                && done(body)
            {
                return body.clone();
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("/readyz never said {what:?}; last: {last:?}");
    }

    pub fn socket(&self) -> PathBuf {
        self.dir().join("plexus.sock")
    }

    /// The test kubelet of a node built with `.kubelet()`.
    pub fn kubelet(&self) -> &Kubelet {
        self.kubelet.as_ref().expect("a node built with .kubelet()")
    }

    /// Where plexusd looks for the kubelet's PodResources socket.
    pub fn pod_resources_socket(&self) -> PathBuf {
        self.dir().join("pod-resources").join("kubelet.sock")
    }

    /// plexusd's device-info directory (the node's /var/run/k8s.cni.cncf.io/devinfo).
    pub fn device_info_dir(&self) -> PathBuf {
        self.dir().join("devinfo")
    }

    /// A device the node offers: a veth named `id` (its peer `<id>p` stays behind), as the
    /// `netdev` test delegate takes devices. Returns its MAC address.
    pub fn add_device(&self, id: &str) -> String {
        let peer = format!("{id}p");
        self.netns
            .ip(&["link", "add", id, "type", "veth", "peer", "name", &peer]);
        self.link_mac(id).expect("the device just added")
    }

    /// The MAC address of link `name` in the node, if it is there.
    pub fn link_mac(&self, name: &str) -> Option<String> {
        let shown: Value =
            serde_json::from_str(&self.netns.ip(&["-j", "link", "show"])).expect("ip -j link");
        shown.as_array()?.iter().find_map(|l| {
            (l["ifname"] == name).then(|| l["address"].as_str().unwrap_or_default().to_owned())
        })
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.dir().join("ipam")
    }

    /// The records directory as this process reaches it.
    pub fn records_dir(&self) -> PathBuf {
        let dir = self.plexusd_records_dir();
        match &self.records_mount {
            Some(mount) => mount.seen_from_here(&dir),
            None => dir,
        }
    }

    /// The records directory as plexusd names it (its config's `recordsDir`).
    pub fn plexusd_records_dir(&self) -> PathBuf {
        match &self.records_mount {
            Some(_) => self.dir().join("records-fs").join("records"),
            None => self.dir().join("records"),
        }
    }

    /// The tmpfs under the records, for a node built with `records_tmpfs`.
    pub fn records_mount(&self) -> &RecordsMount {
        self.records_mount
            .as_ref()
            .expect("a node built with .records_tmpfs()")
    }

    fn fill(&self, text: &str) -> String {
        text.replace("@IPAM@", &self.ipam_dir().display().to_string())
            .replace("@DIR@", &self.dir().display().to_string())
    }

    pub fn write_conf(&self, file: &str, body: &str) {
        std::fs::write(self.dir().join("net.d").join(file), self.fill(body)).expect("write conf");
    }

    pub fn write_manifest(&self, file: &str, yaml: &str) {
        // Written aside and renamed in, as an editor or `kubectl`-style tool would, so the
        // watcher never reads half a file.
        let tmp = self.dir().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, self.fill(yaml)).expect("write manifest");
        std::fs::rename(&tmp, self.dir().join("manifests").join(file)).expect("rename manifest");
    }

    pub fn remove_manifest(&self, file: &str) {
        std::fs::remove_file(self.dir().join("manifests").join(file)).expect("remove manifest");
    }

    /// Starts plexusd (after `kill_plexusd` or `stop_plexusd`) and waits until it is ready.
    pub fn start_plexusd(&self) {
        let dir = self.dir().to_path_buf();
        // The kubelet socket and the device-info dir live in the node's dir too, so no test
        // ever touches the machine's own.
        let mut config = format!(
            "socketPath: {sock}\ncniConfDir: {d}/net.d\ncniBinDirs: [{d}/bin, {bin}]\nrecordsDir: {records}\nmanifestDir: {d}/manifests\ndelegateTimeoutSeconds: {timeout}\npodResourcesSocket: {kubelet}\npodResourcesTimeoutSeconds: 2\ndeviceInfoDir: {d}/devinfo\n",
            sock = self.socket().display(),
            d = dir.display(),
            bin = binaries::CNI_BIN_DIR,
            records = self.plexusd_records_dir().display(),
            timeout = self.delegate_timeout_seconds,
            kubelet = self.pod_resources_socket().display(),
        );
        for line in &self.config {
            config.push_str(&self.fill(line));
            config.push('\n');
        }
        std::fs::write(dir.join("plexusd.yaml"), config).expect("write config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("plexusd.log"))
            .expect("log file");
        let mut command = match &self.records_mount {
            Some(mount) => mount.command("ip"),
            None => Command::new("ip"),
        };
        let child = command
            .args(["netns", "exec", self.netns.name()])
            .arg(binaries::plexusd())
            .arg("--config")
            .arg(dir.join("plexusd.yaml"))
            .env("RUST_LOG", &self.rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start plexusd");
        *self.child() = Some(child);
        self.wait_ready();
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.plexusd.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let exited = self.child().as_mut().map(Child::try_wait);
            if let Some(Ok(Some(status))) = exited {
                panic!("plexusd exited with {status}: {}", self.log());
            }
            if self.get("/readyz").is_some_and(|(status, _)| status == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("plexusd did not become ready: {}", self.log());
    }

    /// The running plexusd's PID (`ip netns exec` execs it, so its child is plexusd itself).
    pub fn plexusd_pid(&self) -> Option<u32> {
        self.child().as_ref().map(Child::id)
    }

    /// plexusd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("plexusd.log")).unwrap_or_default()
    }

    /// Stops plexusd (SIGTERM, then SIGKILL), by its PID.
    pub fn stop_plexusd(&self) {
        let child = self.child().take();
        if let Some(child) = child {
            crate::stop(child, Duration::from_secs(5));
        }
    }

    /// Kills plexusd without warning, as a crash would.
    pub fn kill_plexusd(&self) {
        let child = self.child().take();
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart_plexusd(&self) {
        self.stop_plexusd();
        self.start_plexusd();
    }

    /// `plexusd inspect ARGS` against this node's socket, as root: stdout, or stderr on failure.
    pub fn inspect(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new(binaries::plexusd())
            .arg("inspect")
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("run plexusd inspect");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// `plexusd inspect -o json` for one pod.
    pub fn inspect_json(&self, pod: &Pod) -> Value {
        let pod = format!("{}/{}", pod.namespace, pod.name);
        let text = self
            .inspect(&["--pod", &pod, "-o", "json"])
            .unwrap_or_else(|e| panic!("plexusd inspect failed: {e}"));
        serde_json::from_str(&text).expect("inspect JSON")
    }

    /// A GET on plexusd's socket: status code and body.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = UnixStream::connect(self.socket()).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: plexus\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).ok()?;
        let status = reply.split(' ').nth(1)?.parse().ok()?;
        let body = reply
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Some((status, dechunk(&body)))
    }

    /// The network-status plexusd recorded for a pod.
    pub fn network_status(&self, pod: &Pod) -> Value {
        let (status, body) = self
            .get(&format!("/v1/network-status/{}", pod.container_id))
            .expect("GET network-status");
        assert_eq!(status, 200, "network-status: {body}");
        serde_json::from_str(&body).expect("network-status JSON")
    }

    /// Waits until plexusd's manifest catalog reports `nads` NADs (after a manifest change).
    pub fn wait_for_nads(&self, nads: usize) {
        let want = format!("nads={nads} ");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self
                .get("/readyz")
                .is_some_and(|(_, body)| body.contains(&want))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("plexusd never reported {want}: {:?}", self.get("/readyz"));
    }

    /// Plexus's own stdin config, as the runtime passes it from 00-plexus.conflist.
    pub fn plexus_conf(&self, cni_version: &str) -> Value {
        json!({"cniVersion": cni_version, "name": "plexus", "type": "plexus", "socketPath": self.socket()})
    }

    pub fn cni(&self, command: &str, pod: &Pod, conf: &Value) -> ShimOutput {
        let env = CniEnv {
            command: command.to_owned(),
            container_id: pod.container_id.clone(),
            netns: pod.netns.path(),
            ifname: "eth0".to_owned(),
            args: pod.cni_args(),
            path: binaries::CNI_BIN_DIR.to_owned(),
        };
        shim::exec(&env, &conf.to_string())
    }

    pub fn add(&self, pod: &Pod) -> ShimOutput {
        self.cni("ADD", pod, &self.plexus_conf("1.1.0"))
    }

    pub fn del(&self, pod: &Pod) -> ShimOutput {
        self.cni("DEL", pod, &self.plexus_conf("1.1.0"))
    }

    pub fn check(&self, pod: &Pod) -> ShimOutput {
        self.cni("CHECK", pod, &self.plexus_conf("1.1.0"))
    }

    /// STATUS (CNI 1.1): whether plexusd can serve ADD.
    pub fn status(&self) -> ShimOutput {
        let env = CniEnv {
            command: "STATUS".into(),
            path: binaries::CNI_BIN_DIR.into(),
            ..Default::default()
        };
        shim::exec(&env, &self.plexus_conf("1.1.0").to_string())
    }

    /// GC with the given pods as the still-valid attachments.
    pub fn gc(&self, valid: &[&Pod]) -> ShimOutput {
        let mut conf = self.plexus_conf("1.1.0");
        conf["cni.dev/valid-attachments"] = valid
            .iter()
            .map(|p| json!({"containerID": p.container_id, "ifname": "eth0"}))
            .collect();
        let env = CniEnv {
            command: "GC".into(),
            path: binaries::CNI_BIN_DIR.into(),
            ..Default::default()
        };
        shim::exec(&env, &conf.to_string())
    }

    /// IPs host-local has handed out (files named after addresses) in every network's dir.
    pub fn ipam_allocations(&self) -> Vec<String> {
        let mut found = Vec::new();
        for network in std::fs::read_dir(self.ipam_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            for file in std::fs::read_dir(network.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = file.file_name().to_string_lossy().into_owned();
                if name.parse::<std::net::IpAddr>().is_ok() {
                    found.push(format!("{}/{name}", network.file_name().to_string_lossy()));
                }
            }
        }
        found.sort();
        found
    }

    /// The addresses host-local has handed out, bare and sorted, whatever their network.
    pub fn allocated_addresses(&self) -> Vec<String> {
        let mut found: Vec<String> = self
            .ipam_allocations()
            .iter()
            .filter_map(|a| a.rsplit('/').next())
            .map(str::to_owned)
            .collect();
        found.sort();
        found
    }

    /// Record files in the store (not the marks of pods adopted from Multus, in `adopted/`).
    pub fn records(&self) -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(self.records_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            // Not records: Multus adoption marks, and the intent journal and the directory of
            // removed records, which are always there.
            .filter(|name| !["adopted", INTENT_JOURNAL, DELETED_RECORDS].contains(&name.as_str()))
            .collect();
        found.sort();
        found
    }

    /// Asserts that no pod left anything on the node: no veth, no IP, no record.
    pub fn assert_clean(&self) {
        assert!(self.veths().is_empty(), "veths left: {:?}", self.veths());
        assert!(
            self.ipam_allocations().is_empty(),
            "IPs left: {:?}",
            self.ipam_allocations()
        );
        assert!(
            self.records().is_empty(),
            "records left: {:?}",
            self.records()
        );
        // DEL unlinks what it removed just after its answer.
        let deleted = self.records_dir().join(DELETED_RECORDS);
        crate::podman::wait_until(
            &format!("removed records unlinked in {}", deleted.display()),
            Duration::from_secs(10),
            || std::fs::read_dir(&deleted).map_or(true, |mut e| e.next().is_none()),
        );
    }

    /// Host-side veth interfaces in the node (what bridge and ptp plugins leave per pod).
    pub fn veths(&self) -> Vec<String> {
        self.netns
            .links()
            .into_iter()
            .filter(|l| l.starts_with("veth"))
            .collect()
    }
}

fn dechunk(body: &str) -> String {
    // axum answers small bodies with Content-Length; chunked bodies start with a hex size.
    let mut lines = body.split("\r\n");
    let Some(first) = lines.next() else {
        return String::new();
    };
    if usize::from_str_radix(first.trim(), 16).is_err() || !body.contains("\r\n") {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || tail.len() < size {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_plexusd();
        if std::thread::panicking() {
            eprintln!(
                "---- plexusd log ({}) ----\n{}",
                self.netns.name(),
                self.log()
            );
        }
    }
}
