//! One soak run's world: a node (files or kube source) with its records on a small tmpfs,
//! NADs over bridge, macvlan, ptp, a conflist and the fault delegate, and pods with 0-4
//! secondaries each. Everything a run changes goes through public surfaces: manifests or API
//! objects, files the fault delegate reads, the records mount, the plexusd process.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::{Node, Pod};

/// The namespace of the soak's NADs and pods.
pub const NAMESPACE: &str = "soak";

/// A plugin wrapping ptp with faults, read per call from `@DIR@/fault/<container id>`, else
/// `@DIR@/fault/all` (missing: no fault). ADD faults strike after ptp did its work, so what
/// plexusd has to clean up is real: `fail` (a CNI error before any work), `slow` and `hang`
/// (they first touch `fault/running-<container id>`, for the harness to kill plexusd in the
/// middle), `signal` (the plugin dies of SIGKILL), `garbage` and `invalid` (a result that is
/// not JSON, or not a valid result). `fail-del` makes DEL fail; CHECK fails under `fail`.
pub const FAULT_PLUGIN: &str = r#"cid=$CNI_CONTAINERID
mode=ok
[ -f @DIR@/fault/all ] && mode=$(cat @DIR@/fault/all)
[ -f "@DIR@/fault/$cid" ] && mode=$(cat "@DIR@/fault/$cid")
conf=$(cat)
real() { printf '%s' "$conf" | /usr/lib/cni/ptp; }
injected() { echo "{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"injected $1 failure\"}"; exit 1; }
case "$CNI_COMMAND" in
  ADD) ;;
  DEL) [ "$mode" = fail-del ] && injected DEL
       real; exit $? ;;
  *) [ "$mode" = fail ] && injected "$CNI_COMMAND"
     real; exit $? ;;
esac
[ "$mode" = fail ] && injected ADD
out=$(real) || { printf '%s' "$out"; exit 1; }
case "$mode" in
  slow) touch "@DIR@/fault/running-$cid"; sleep 2 ;;
  hang) touch "@DIR@/fault/running-$cid"; exec sleep 120 ;;
  signal) kill -KILL $$ ;;
  garbage) echo 'this is not a CNI result'; exit 0 ;;
  invalid) echo '{"cniVersion":"1.0.0","ips":[{"address":"300.1.2.3/24"}]}'; exit 0 ;;
esac
printf '%s' "$out""#;

/// The fault delegate's modes, as the harness sets them for a while (`fault/all`).
pub const FAULT_MODES: [&str; 7] = [
    "fail", "slow", "hang", "signal", "garbage", "invalid", "fail-del",
];

/// The secondary networks: name, and its config in two variants (an edit flips between them).
pub const NETWORKS: [&str; 5] = ["br", "mv", "p2p", "chain", "flaky"];

/// The network every kill-during-a-delegate needs in the pod's selection.
pub const FAULT_NETWORK: &str = "flaky";

fn ipam(subnet: &str) -> Value {
    json!({"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": "@IPAM@"})
}

/// The config of `network`, variant 0 or 1. Variants keep the CNI name (so the IPAM state
/// and the records stay comparable) and change what an edit would: a subnet, an MTU, a
/// sysctl.
pub fn network_config(network: &str, variant: usize) -> Value {
    let alt = variant % 2 == 1;
    match network {
        "br" => json!({
            "cniVersion": "1.0.0", "name": "br", "type": "bridge", "bridge": "br-soak",
            "mtu": if alt { 1400 } else { 1500 },
            "ipam": ipam(if alt { "198.18.9.0/24" } else { "198.18.8.0/24" })
        }),
        "mv" => json!({
            "cniVersion": "1.0.0", "name": "mv", "type": "macvlan", "master": "uplink0",
            "mode": if alt { "private" } else { "bridge" },
            "ipam": ipam("198.18.10.0/24")
        }),
        "p2p" => json!({
            "cniVersion": if alt { "0.4.0" } else { "1.0.0" }, "name": "p2p", "type": "ptp",
            "ipam": ipam("198.18.11.0/24")
        }),
        "chain" => json!({
            "cniVersion": "1.0.0", "name": "chain",
            "plugins": [
                {"type": "bridge", "bridge": "br-chain", "ipam": ipam("198.18.12.0/24")},
                {"type": "tuning", "sysctl": {"net.ipv4.conf.all.log_martians": if alt { "1" } else { "0" }}}
            ]
        }),
        _ => json!({
            "cniVersion": "1.0.0", "name": "flaky", "type": "fault",
            "ipam": ipam(if alt { "198.18.14.0/24" } else { "198.18.13.0/24" })
        }),
    }
}

/// A pod of the run: what its annotation asks for, and so which interfaces a successful
/// ADD must give it.
pub struct SoakPod {
    pub pod: Pod,
    pub annotation: String,
    pub networks: Vec<&'static str>,
    /// eth0, then the secondaries' interfaces, sorted.
    pub expected: Vec<String>,
}

impl SoakPod {
    /// A pod selecting `networks` (in order), in the comma or the JSON form, with some
    /// interfaces named in the selection.
    pub fn new(index: usize, networks: Vec<&'static str>, rng: &mut fastrand::Rng) -> Self {
        let pod = Pod::new(NAMESPACE, &format!("pod-{index}"));
        let named: Vec<Option<String>> = (0..networks.len())
            .map(|i| {
                rng.bool()
                    .then(|| format!("data{i}"))
                    .filter(|_| rng.bool())
            })
            .collect();
        let annotation = if rng.bool() {
            networks
                .iter()
                .zip(&named)
                .map(|(n, ifname)| match ifname {
                    Some(ifname) => format!("{n}@{ifname}"),
                    None => (*n).to_owned(),
                })
                .collect::<Vec<_>>()
                .join(",")
        } else {
            let entries: Vec<Value> = networks
                .iter()
                .zip(&named)
                .map(|(n, ifname)| match ifname {
                    Some(ifname) => json!({"name": n, "interface": ifname}),
                    None => json!({"name": n, "namespace": NAMESPACE}),
                })
                .collect();
            Value::Array(entries).to_string()
        };
        let mut expected: Vec<String> = named
            .iter()
            .enumerate()
            .map(|(i, ifname)| ifname.clone().unwrap_or_else(|| format!("net{}", i + 1)))
            .collect();
        expected.push("eth0".into());
        expected.sort();
        Self {
            pod,
            annotation,
            networks,
            expected,
        }
    }

    pub fn annotations(&self) -> Value {
        if self.networks.is_empty() {
            return json!({});
        }
        json!({"k8s.v1.cni.cncf.io/networks": self.annotation})
    }

    pub fn uses_fault_network(&self) -> bool {
        self.networks.contains(&FAULT_NETWORK)
    }

    fn manifest_file(&self) -> String {
        format!("{}.yaml", self.pod.name)
    }
}

/// `count` pods with 0-4 distinct secondaries each; the first few always include the fault
/// network, so that kills during a delegate have pods to strike.
pub fn pods(count: usize, rng: &mut fastrand::Rng) -> Vec<SoakPod> {
    (0..count)
        .map(|index| {
            let mut networks: Vec<&'static str> = NETWORKS.to_vec();
            rng.shuffle(&mut networks);
            networks.truncate(rng.usize(0..=4));
            if index < 4 && !networks.contains(&FAULT_NETWORK) {
                networks.truncate(3);
                networks.push(FAULT_NETWORK);
            }
            SoakPod::new(index, networks, rng)
        })
        .collect()
}

/// Where the run's NADs and pods live: the manifest directory or the test API server.
pub struct World {
    pub node: Node,
    pub pods: Vec<SoakPod>,
    pub kube: bool,
}

fn nad_manifest(network: &str, config: &Value) -> String {
    json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": network, "namespace": NAMESPACE},
        "spec": {"config": config.to_string()}
    })
    .to_string()
}

/// How long plexusd's caches may take to see the run's objects.
const SYNC: Duration = Duration::from_secs(60);

impl World {
    pub fn start(kube: bool, pods: Vec<SoakPod>, delegate_timeout_seconds: u64) -> Self {
        let mut builder = Node::builder()
            .uplink()
            .records_tmpfs(1024)
            .delegate_timeout_seconds(delegate_timeout_seconds)
            .plugin("fault", FAULT_PLUGIN)
            .rust_log("info");
        if kube {
            builder = builder.kube();
        } else {
            for network in NETWORKS {
                builder = builder.manifest(
                    &format!("nad-{network}.yaml"),
                    &nad_manifest(network, &network_config(network, 0)),
                );
            }
            for pod in &pods {
                builder = builder.manifest(
                    &pod.manifest_file(),
                    &crate::pod::pod_object(
                        NAMESPACE,
                        &pod.pod.name,
                        &pod.pod.uid(),
                        pod.annotations(),
                        None,
                    )
                    .to_string(),
                );
            }
        }
        let node = builder.start();
        std::fs::create_dir_all(node.dir().join("fault")).expect("mkdir fault");
        let world = Self { node, pods, kube };
        if kube {
            for network in NETWORKS {
                world.set_network(network, 0);
            }
            for pod in &world.pods {
                world.node.apply_pod(&pod.pod, pod.annotations());
            }
            world.node.wait_for_readyz(
                &format!("nads={} pods={}", NETWORKS.len(), world.pods.len()),
                SYNC,
            );
        }
        world
    }

    /// Creates or replaces `network` with a config variant (an edit, or a NAD coming back).
    pub fn set_network(&self, network: &str, variant: usize) {
        let config = network_config(network, variant);
        if self.kube {
            self.node.apply_nad(NAMESPACE, network, &config);
        } else {
            self.node.write_manifest(
                &format!("nad-{network}.yaml"),
                &nad_manifest(network, &config),
            );
        }
    }

    pub fn delete_network(&self, network: &str) {
        if self.kube {
            self.node
                .cluster()
                .delete("NetworkAttachmentDefinition", NAMESPACE, network);
        } else {
            let _ = std::fs::remove_file(
                self.node
                    .dir()
                    .join("manifests")
                    .join(format!("nad-{network}.yaml")),
            );
        }
    }

    pub fn delete_pod_object(&self, pod: &SoakPod) {
        if self.kube {
            self.node.cluster().delete("Pod", NAMESPACE, &pod.pod.name);
        } else {
            let _ =
                std::fs::remove_file(self.node.dir().join("manifests").join(pod.manifest_file()));
        }
    }

    fn fault_dir(&self) -> PathBuf {
        self.node.dir().join("fault")
    }

    /// The fault delegate's mode for every container (`None`: no fault).
    pub fn set_fault_mode(&self, mode: Option<&str>) {
        self.set_fault_file("all", mode);
    }

    /// The fault delegate's mode for one container, over the one for all.
    pub fn set_container_fault(&self, pod: &SoakPod, mode: Option<&str>) {
        self.set_fault_file(&pod.pod.container_id, mode);
        let _ = std::fs::remove_file(self.running_marker(pod));
    }

    fn set_fault_file(&self, name: &str, mode: Option<&str>) {
        let path = self.fault_dir().join(name);
        match mode {
            Some(mode) => std::fs::write(&path, mode).expect("write fault mode"),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// Touched by the fault delegate once its slow or hanging ADD has done its work.
    pub fn running_marker(&self, pod: &SoakPod) -> PathBuf {
        self.fault_dir()
            .join(format!("running-{}", pod.pod.container_id))
    }
}
