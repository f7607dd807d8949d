//! Debian's containerd with its built-in CRI plugin, run for one node: inside the node's network
//! namespace, with its root, state, sockets and CNI cache in a temp dir of its own, the node's
//! CNI conf dir as its conf dir, and a bin dir holding the real `plexus` shim and Debian's
//! plugins. A small CRI client drives it as kubelet does.
//!
//! How it runs on this machine kind (see issue 8):
//! - crun, not runc (whose nsexec fails here), through a wrapper that disables cgroups, and
//!   containerd's `disable_cgroup`; the hybrid cgroup layout is hidden from crun by unmounting
//!   `/sys/fs/cgroup/unified` in a mount namespace of containerd's own.
//! - That mount namespace keeps `/run/netns` shared with the machine's, so the sandbox network
//!   namespaces containerd mounts there (`cni-<uuid>`) are visible to plexusd (which runs the
//!   delegates) and to the test; every other mount is made a slave, so nothing containerd, its
//!   shims or crun mount reaches the machine's mount table. `/run/containerd` (the shims'
//!   sockets) and `/var/lib/cni` (libcni's result cache) are bind mounts of dirs in the temp
//!   dir there.
//! - The sandbox image is a tiny static pause program, built with `cc` and imported as an OCI
//!   image tar with `ctr`: there is no registry.
//!
//! On drop every sandbox is stopped and removed, containerd is stopped, and every shim and
//! sandbox process it left is killed by PID; any sandbox namespace still mounted is removed.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StatusRequest, StopPodSandboxRequest,
};
use serde_json::{Value, json};
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::pod::Link;
use crate::{Node, binaries, run};

/// The sandbox image every pod runs (imported from the tar the fixture builds).
pub const PAUSE_IMAGE: &str = "localhost/plexus/pause:test";
/// The CRI namespace kubelet's pods live in.
const K8S_NAMESPACE: &str = "k8s.io";
/// The pod annotation that names a pod's secondary networks.
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// How long one CRI call may take before the fixture gives up.
const CRI_TIMEOUT: Duration = Duration::from_secs(60);

/// The programs the fixture needs, with the Debian package each comes from.
const REQUIRED: [(&str, &str); 7] = [
    ("containerd", "containerd"),
    ("containerd-shim-runc-v2", "containerd"),
    ("ctr", "containerd"),
    ("crun", "crun"),
    ("cc", "gcc"),
    ("unshare", "util-linux"),
    ("nsenter", "util-linux"),
];

/// Why containerd cannot be run here (a program is missing), or `None` when it can.
pub fn unavailable() -> Option<String> {
    let missing: Vec<String> = REQUIRED
        .iter()
        .filter(|(program, _)| which(program).is_none())
        .map(|(program, package)| format!("{program} (Debian package {package})"))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "not installed: {}; `make test` installs them (`make deps`)",
            missing.join(", ")
        )
    })
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A pod as kubelet describes it to the runtime: the PodSandboxConfig's metadata and
/// annotations.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub attempt: u32,
    pub annotations: BTreeMap<String, String>,
}

impl Sandbox {
    /// A pod with a unique uid and no annotations.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: crate::unique("uid-"),
            attempt: 0,
            annotations: BTreeMap::new(),
        }
    }

    /// Sets the `k8s.v1.cni.cncf.io/networks` annotation (either form).
    pub fn networks(mut self, networks: &str) -> Self {
        self.annotations
            .insert(NETWORKS_ANNOTATION.to_owned(), networks.to_owned());
        self
    }

    /// The Pod manifest for plexusd's `files` source: the same namespace, name, uid and
    /// annotations (in a cluster they come from the API server).
    pub fn manifest(&self) -> String {
        let annotations = serde_json::to_value(&self.annotations).unwrap_or_default();
        crate::pod::pod_object(&self.namespace, &self.name, &self.uid, annotations, None)
            .to_string()
    }

    fn config(&self) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: self.attempt,
            }),
            hostname: self.name.clone(),
            labels: [
                ("io.kubernetes.pod.name", &self.name),
                ("io.kubernetes.pod.namespace", &self.namespace),
                ("io.kubernetes.pod.uid", &self.uid),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect(),
            annotations: self.annotations.clone().into_iter().collect(),
            ..Default::default()
        }
    }
}

/// A failed CRI call: the gRPC code and containerd's message.
#[derive(Debug, Clone)]
pub struct CriError {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for CriError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for CriError {}

impl From<tonic::Status> for CriError {
    fn from(status: tonic::Status) -> Self {
        Self {
            code: format!("{:?}", status.code()),
            message: status.message().to_owned(),
        }
    }
}

/// What PodSandboxStatus (verbose) tells about a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxStatus {
    pub id: String,
    pub ready: bool,
    /// The pod IP the runtime reports (kubelet's `status.podIP`).
    pub ip: String,
    /// The other pod IPs it reports (kubelet's `status.podIPs` after the first).
    pub additional_ips: Vec<String>,
    /// The sandbox's network namespace, from the runtime spec in the verbose info.
    pub netns: Option<String>,
    /// containerd's verbose `info` JSON (runtime spec, cached CNI result, ...).
    pub info: Value,
}

/// One call the runtime made to the `plexus` binary (recorded with [`ContainerdBuilder::trace_cni`]).
#[derive(Debug, Clone)]
pub struct CniCall {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
    /// The stdin config the runtime passed.
    pub config: Value,
    pub exit_code: i32,
    pub stdout: String,
}

impl CniCall {
    /// The value of `key` in CNI_ARGS.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .split(';')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

pub struct ContainerdBuilder<'a> {
    node: &'a Node,
    trace_cni: bool,
}

impl ContainerdBuilder<'_> {
    /// Puts a wrapper in front of the `plexus` binary that records every call the runtime
    /// makes (environment, stdin, exit code, stdout): see [`Containerd::cni_calls`]. It costs
    /// a shell per call, so benchmarks leave it off.
    pub fn trace_cni(mut self) -> Self {
        self.trace_cni = true;
        self
    }

    /// Builds the pause image, writes the config, starts containerd and imports the image;
    /// returns once the CRI answers.
    pub fn start(self) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("plexus-cri-")
            .tempdir()
            .expect("temp dir");
        for sub in [
            "root",
            "state",
            "runc",
            "cni-bin",
            "run-containerd",
            "var-lib-cni",
        ] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut containerd = Containerd {
            dir,
            node_netns: self.node.netns.path(),
            conf_dir: self.node.dir().join("net.d"),
            child: None,
            runtime,
            client: None,
            seen_netns: std::sync::Mutex::new(Vec::new()),
        };
        containerd.fill_bin_dir(self.node, self.trace_cni);
        containerd.write_config();
        let image = containerd.build_pause_image();
        containerd.start_process();
        run(
            "ctr",
            &[
                "-a",
                &containerd.socket().display().to_string(),
                "-n",
                K8S_NAMESPACE,
                "images",
                "import",
                "--snapshotter",
                "native",
                &image.display().to_string(),
            ],
        );
        containerd
    }
}

/// containerd with its CRI plugin for one node; see the module docs.
pub struct Containerd {
    dir: TempDir,
    node_netns: String,
    conf_dir: PathBuf,
    child: Option<Child>,
    runtime: tokio::runtime::Runtime,
    client: Option<RuntimeServiceClient<Channel>>,
    /// Every sandbox network namespace PodSandboxStatus named, removed on drop if still there.
    seen_netns: std::sync::Mutex<Vec<String>>,
}

impl Containerd {
    /// containerd for `node`: its conf dir is the node's `net.d`, its bin dir holds the node's
    /// plugins, Debian's and the `plexus` shim.
    pub fn for_node(node: &Node) -> ContainerdBuilder<'_> {
        ContainerdBuilder {
            node,
            trace_cni: false,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// containerd's CRI socket.
    pub fn socket(&self) -> PathBuf {
        self.dir().join("containerd.sock")
    }

    /// The one dir containerd looks up CNI plugins in.
    pub fn bin_dir(&self) -> PathBuf {
        self.dir().join("cni-bin")
    }

    /// libcni's result cache (containerd's `/var/lib/cni`, here in the temp dir).
    pub fn cni_cache_dir(&self) -> PathBuf {
        self.dir().join("var-lib-cni")
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("containerd.log")).unwrap_or_default()
    }

    /// containerd's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn fill_bin_dir(&self, node: &Node, trace: bool) {
        let bin = self.bin_dir();
        // The node's own test plugins first, then Debian's: containerd has one bin dir.
        for dir in [node.dir().join("bin"), PathBuf::from(binaries::CNI_BIN_DIR)] {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let link = bin.join(entry.file_name());
                if !link.exists() {
                    std::os::unix::fs::symlink(entry.path(), link).expect("symlink plugin");
                }
            }
        }
        let shim = binaries::shim();
        if trace {
            let log = self.dir().join("cni-calls.log");
            let script = format!(
                r#"#!/bin/sh
# Records one runtime call of the plexus shim, then passes it on unchanged.
input=$(cat)
output=$(printf '%s' "$input" | {shim})
code=$?
printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" "$CNI_PATH" "$code" "$(printf '%s' "$input" | tr -d '\n\t')" "$(printf '%s' "$output" | tr -d '\n\t')" >> {log}
printf '%s' "$output"
exit $code
"#,
                shim = shim.display(),
                log = log.display()
            );
            let path = bin.join("plexus");
            std::fs::write(&path, script).expect("write trace wrapper");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        } else {
            std::os::unix::fs::symlink(shim, bin.join("plexus")).expect("symlink shim");
        }
    }

    fn write_config(&self) {
        let d = self.dir().display().to_string();
        let crun = self.dir().join("crun");
        std::fs::write(
            &crun,
            "#!/bin/sh\nexec crun --cgroup-manager=disabled \"$@\"\n",
        )
        .expect("write crun wrapper");
        std::fs::set_permissions(&crun, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.overlayfs", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  level = "debug"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE_IMAGE}"
    disable_cgroup = true
    restrict_oom_score_adj = true
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "native"
      default_runtime_name = "crun"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]
          BinaryName = "{crun}"
          Root = "{d}/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{d}/cni-bin"
      conf_dir = "{conf}"
      max_conf_num = 1
"#,
            crun = crun.display(),
            conf = self.conf_dir.display(),
        );
        std::fs::write(self.dir().join("config.toml"), config).expect("write containerd config");
    }

    /// Builds the pause program and packs it as an OCI image layout tar; returns the tar.
    fn build_pause_image(&self) -> PathBuf {
        let work = self.dir().join("image");
        let rootfs = work.join("rootfs");
        let blobs = work.join("layout/blobs/sha256");
        std::fs::create_dir_all(&rootfs).expect("mkdir");
        std::fs::create_dir_all(&blobs).expect("mkdir");
        let source = work.join("pause.c");
        std::fs::write(&source, PAUSE_C).expect("write pause.c");
        run(
            "cc",
            &[
                "-static",
                "-Os",
                "-s",
                "-o",
                &rootfs.join("pause").display().to_string(),
                &source.display().to_string(),
            ],
        );
        let layer = work.join("layer.tar");
        run(
            "tar",
            &[
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--mtime=@0",
                "-C",
                &rootfs.display().to_string(),
                "-cf",
                &layer.display().to_string(),
                "pause",
            ],
        );
        let layer = add_blob(&blobs, &std::fs::read(&layer).expect("read layer"));
        let config = add_blob(
            &blobs,
            json!({
                "architecture": go_arch(), "os": "linux",
                "config": {"Entrypoint": ["/pause"]},
                "rootfs": {"type": "layers", "diff_ids": [layer.0]},
            })
            .to_string()
            .as_bytes(),
        );
        let manifest = add_blob(
            &blobs,
            json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.0, "size": layer.1}],
            })
            .to_string()
            .as_bytes(),
        );
        let layout = work.join("layout");
        std::fs::write(
            layout.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("write oci-layout");
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest.0, "size": manifest.1,
                "annotations": {"io.containerd.image.name": PAUSE_IMAGE, "org.opencontainers.image.ref.name": "test"},
            }],
        });
        std::fs::write(layout.join("index.json"), index.to_string()).expect("write index.json");
        let tar = work.join("pause.tar");
        run(
            "tar",
            &[
                "-C",
                &layout.display().to_string(),
                "-cf",
                &tar.display().to_string(),
                "oci-layout",
                "index.json",
                "blobs",
            ],
        );
        tar
    }

    fn start_process(&mut self) {
        let d = self.dir().display().to_string();
        // In a mount namespace of its own: every mount but /run/netns (and the namespaces
        // mounted under it) becomes a slave, so what happens here stays here; /run/netns stays
        // shared with the machine's, so sandbox namespaces are seen by plexusd and the test.
        let script = format!(
            r#"set -e
{private}mkdir -p /run/containerd /var/lib/cni
mount --bind {d}/run-containerd /run/containerd
mount --bind {d}/var-lib-cni /var/lib/cni
exec nsenter --net={netns} containerd --config {d}/config.toml
"#,
            private = crate::mounts::PRIVATE_MOUNTS,
            netns = self.node_netns,
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("containerd.log"))
            .expect("containerd log");
        let mut command = Command::new("unshare");
        command
            .args(["-m", "--propagation", "unchanged", "sh", "-c", &script])
            .stdin(Stdio::null());
        // If the test process dies outright, containerd goes with it (its shims do not: drop
        // kills those).
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let child = command
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the CRI answers Status with the runtime ready.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("containerd exited with {status}:\n{}", self.log());
            }
            if self.socket().exists() {
                match self.connect() {
                    Ok(client) => {
                        self.client = Some(client);
                        match self.runtime_status() {
                            Ok(status) if status.0 => return,
                            Ok(status) => last = status.1.to_string(),
                            Err(e) => last = e.to_string(),
                        }
                    }
                    Err(e) => last = e,
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "containerd's CRI did not become ready: {last}\n{}",
            self.log()
        );
    }

    fn connect(&self) -> Result<RuntimeServiceClient<Channel>, String> {
        let path = self.socket();
        let channel = self.runtime.block_on(async move {
            Endpoint::try_from("http://containerd.invalid")
                .map_err(|e| e.to_string())?
                .timeout(CRI_TIMEOUT)
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
                .await
                .map_err(|e| e.to_string())
        })?;
        Ok(RuntimeServiceClient::new(channel))
    }

    fn client(&self) -> RuntimeServiceClient<Channel> {
        self.client.clone().expect("containerd is running")
    }

    /// CRI Status (verbose): whether RuntimeReady holds, and the whole answer as JSON
    /// (conditions, and containerd's info such as the CNI config it loaded).
    pub fn runtime_status(&self) -> Result<(bool, Value), CriError> {
        let mut client = self.client();
        let response = self
            .runtime
            .block_on(client.status(StatusRequest { verbose: true }))?
            .into_inner();
        let conditions = response.status.map(|s| s.conditions).unwrap_or_default();
        let ready = conditions
            .iter()
            .any(|c| c.r#type == "RuntimeReady" && c.status);
        let info: serde_json::Map<String, Value> = response
            .info
            .into_iter()
            .map(|(k, v)| {
                let value = serde_json::from_str(&v).unwrap_or(Value::String(v));
                (k, value)
            })
            .collect();
        let conditions: Vec<Value> = conditions
            .into_iter()
            .map(|c| json!({"type": c.r#type, "status": c.status, "reason": c.reason, "message": c.message}))
            .collect();
        Ok((ready, json!({"conditions": conditions, "info": info})))
    }

    /// Waits until the CRI reports NetworkReady (a CNI config loaded from the conf dir).
    pub fn wait_network_ready(&self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, status) = self.runtime_status().expect("CRI Status");
            let ready = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "NetworkReady" && c["status"] == true);
            if ready {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "containerd's network never became ready: {status:#}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until containerd's pod network (the config it uses for eth0) is the CNI network
    /// `name`, e.g. `plexus` once plexusd has written its conflist; returns the CRI status.
    pub fn wait_pod_network(&self, name: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.wait_network_ready(timeout);
            let current = status["info"]["cniconfig"]["Networks"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|n| n["IFName"] == "eth0")
                .map(|n| n["Config"]["Name"].clone());
            if current.as_ref().is_some_and(|n| n == name) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "containerd's pod network is {current:?}, not {name:?}: {status:#}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// RunPodSandbox, as kubelet calls it: the sandbox id, or containerd's error.
    pub fn run_pod_sandbox(&self, sandbox: &Sandbox) -> Result<String, CriError> {
        let mut client = self.client();
        let id = self
            .runtime
            .block_on(client.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox.config()),
                runtime_handler: String::new(),
            }))?
            .into_inner()
            .pod_sandbox_id;
        // Learn its namespace now, so that drop can remove it whatever happens to containerd.
        let _ = self.status(&id);
        Ok(id)
    }

    /// PodSandboxStatus (verbose).
    pub fn status(&self, id: &str) -> Result<SandboxStatus, CriError> {
        let mut client = self.client();
        let response = self
            .runtime
            .block_on(client.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.to_owned(),
                verbose: true,
            }))?
            .into_inner();
        let status = response.status.unwrap_or_default();
        let network = status.network.unwrap_or_default();
        let info: Value = response
            .info
            .get("info")
            .and_then(|i| serde_json::from_str(i).ok())
            .unwrap_or(Value::Null);
        let netns = info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|ns| ns["type"] == "network")
            .and_then(|ns| ns["path"].as_str())
            .filter(|path| !path.is_empty())
            .map(str::to_owned);
        if let Some(path) = &netns {
            let mut seen = self.seen_netns.lock().unwrap_or_else(|p| p.into_inner());
            if !seen.contains(path) {
                seen.push(path.clone());
            }
        }
        Ok(SandboxStatus {
            id: status.id,
            ready: status.state == k8s_cri::v1::PodSandboxState::SandboxReady as i32,
            ip: network.ip,
            additional_ips: network.additional_ips.into_iter().map(|ip| ip.ip).collect(),
            netns,
            info,
        })
    }

    /// StopPodSandbox.
    pub fn stop(&self, id: &str) -> Result<(), CriError> {
        let mut client = self.client();
        self.runtime
            .block_on(client.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            }))?;
        Ok(())
    }

    /// RemovePodSandbox.
    pub fn remove(&self, id: &str) -> Result<(), CriError> {
        let mut client = self.client();
        self.runtime
            .block_on(client.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            }))?;
        Ok(())
    }

    /// The ids of every sandbox containerd knows.
    pub fn sandboxes(&self) -> Result<Vec<String>, CriError> {
        let mut client = self.client();
        let items = self
            .runtime
            .block_on(client.list_pod_sandbox(ListPodSandboxRequest { filter: None }))?
            .into_inner()
            .items;
        Ok(items.into_iter().map(|s| s.id).collect())
    }

    /// Stops containerd (SIGTERM, then SIGKILL) and leaves its shims and sandboxes running,
    /// as a containerd upgrade or crash does.
    pub fn stop_containerd(&mut self) {
        self.client = None;
        if let Some(child) = self.child.take() {
            crate::stop(child, Duration::from_secs(10));
        }
    }

    /// Stops containerd and starts it again on the same root, state and sockets.
    pub fn restart(&mut self) {
        self.stop_containerd();
        self.start_process();
    }

    /// Every call the runtime made to `plexus` so far (needs [`ContainerdBuilder::trace_cni`]).
    pub fn cni_calls(&self) -> Vec<CniCall> {
        let text = std::fs::read_to_string(self.dir().join("cni-calls.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split('\t').collect();
                let [command, id, netns, ifname, args, path, code, config, stdout] = f[..] else {
                    return None;
                };
                Some(CniCall {
                    command: command.to_owned(),
                    container_id: id.to_owned(),
                    netns: netns.to_owned(),
                    ifname: ifname.to_owned(),
                    args: args.to_owned(),
                    path: path.to_owned(),
                    config: serde_json::from_str(config).unwrap_or(Value::Null),
                    exit_code: code.parse().unwrap_or(-1),
                    stdout: stdout.to_owned(),
                })
            })
            .collect()
    }

    /// The files in libcni's result cache (`results/<network>-<container>-<ifname>`).
    pub fn cached_results(&self) -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(self.cni_cache_dir().join("results"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        found.sort();
        found
    }

    /// The sandbox network namespaces containerd has mounted under /run/netns right now, of
    /// those this fixture has seen.
    pub fn live_sandbox_netns(&self) -> Vec<String> {
        self.seen_netns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|path| is_netns(path))
            .cloned()
            .collect()
    }

    /// PIDs of the shims this containerd started (found by their `-address` argument).
    pub fn shim_pids(&self) -> Vec<i32> {
        let address = self.socket().display().to_string();
        processes()
            .into_iter()
            .filter(|(_, cmdline)| {
                cmdline
                    .first()
                    .is_some_and(|exe| exe.ends_with("containerd-shim-runc-v2"))
                    && cmdline
                        .windows(2)
                        .any(|w| w[0] == "-address" && w[1] == address)
            })
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Removes every sandbox it can through the CRI, then stops containerd and kills whatever
    /// it left running, by PID; removes any sandbox namespace still mounted.
    fn shut_down(&mut self) {
        if self.client.is_some()
            && let Ok(ids) = self.sandboxes()
        {
            for id in ids {
                // Learn its namespace first: stopping fails when its DEL fails.
                let _ = self.status(&id);
                let _ = self.stop(&id);
                let _ = self.remove(&id);
            }
        }
        self.stop_containerd();
        let shims = self.shim_pids();
        let mut doomed: Vec<i32> = shims.iter().flat_map(|pid| descendants(*pid)).collect();
        // The sandboxes' namespaces, known by the processes in them.
        let held: Vec<u64> = doomed
            .iter()
            .filter_map(|pid| netns_inode(&format!("/proc/{pid}/ns/net")))
            .collect();
        doomed.extend(&shims);
        for pid in &doomed {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while doomed
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut leftovers = self.live_sandbox_netns();
        for entry in std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path().display().to_string();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("cni-") && netns_inode(&path).is_some_and(|ino| held.contains(&ino))
            {
                leftovers.push(path);
            }
        }
        for path in leftovers {
            if let Some(name) = Path::new(&path).file_name().and_then(|n| n.to_str()) {
                let _ = Command::new("ip").args(["netns", "del", name]).output();
            }
        }
    }
}

/// The inode of the network namespace at `path` (a `/proc/PID/ns/net` link or a mounted
/// namespace file); `None` when it is none.
fn netns_inode(path: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    // A mounted namespace is on nsfs (device 0:4 here, but not always): an unmounted
    // left-over file is a plain, empty file on the host's disk.
    (meta.len() == 0 && meta.dev() != std::fs::metadata("/run/netns").ok()?.dev())
        .then(|| meta.ino())
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "---- containerd log (last lines, {}) ----\n{}",
                self.dir().display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        self.shut_down();
    }
}

/// Whether `path` is a mounted network namespace (not a left-over empty file).
pub fn is_netns(path: &str) -> bool {
    Command::new("nsenter")
        .arg(format!("--net={path}"))
        .arg("true")
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The interfaces in the network namespace at `path` besides loopback (`nsenter --net=PATH ip
/// -j addr`), with their addresses in CIDR form.
pub fn links_in(path: &str) -> Vec<Link> {
    crate::pod::parse_links(&run(
        "nsenter",
        &[&format!("--net={path}"), "ip", "-j", "addr", "show"],
    ))
}

const PAUSE_C: &str = r#"#include <signal.h>
#include <unistd.h>
static void done(int sig) { (void)sig; _exit(0); }
int main(void) {
  signal(SIGINT, done);
  signal(SIGTERM, done);
  for (;;) pause();
}
"#;

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Writes `bytes` as a blob; returns its digest (`sha256:…`) and size.
fn add_blob(blobs: &Path, bytes: &[u8]) -> (String, usize) {
    let tmp = blobs.join(".new");
    std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .expect("write blob");
    let sum = run("sha256sum", &[&tmp.display().to_string()]);
    let hex = sum.split_whitespace().next().expect("sha256sum output");
    std::fs::rename(&tmp, blobs.join(hex)).expect("rename blob");
    (format!("sha256:{hex}"), bytes.len())
}

/// Every process: PID and command line.
fn processes() -> Vec<(i32, Vec<String>)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let args = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some((pid, args))
        })
        .collect()
}

/// The PIDs of every process below `pid`, children before grandchildren.
fn descendants(pid: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let child: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((child, ppid))
        })
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (child, _) in parents.iter().filter(|(_, ppid)| *ppid == parent) {
            found.push(*child);
            frontier.push(*child);
        }
    }
    found
}
