//! The multi-node world of the flannel tests and of `make demo-flannel2`: nodes joined by an
//! underlay, each with two flannel overlays wired the way flanneld's vxlan backend wires them,
//! and a plexusd per node whose cluster network is flannel and which has examples/flannel2's
//! NAD, so every pod can get eth0 on the first overlay and net1 on the second.
//!
//! flanneld is not run: the world does what it would do on each node (the `flannel` CNI plugin
//! is the stand-in in `src/bin/flannel.rs`). For each overlay and node:
//! - a vxlan device `flannel.<VNI>` on the underlay interface (`dev eth0 local <underlay IP>`,
//!   UDP port 8472, `nolearning`, MTU 50 below the underlay's, `accept_ra` 0), holding the
//!   node's lease address, the `.0` of its /24, as a /32, and up;
//! - for every other node: a permanent neighbour entry for that node's `.0` with the MAC of its
//!   vxlan device, an FDB entry sending that MAC to its underlay address, and a route to its
//!   /24 via its `.0`, `onlink`, on the vxlan device (in that order, as flanneld adds them);
//! - the subnet file flanneld writes (`FLANNEL_NETWORK`, `FLANNEL_SUBNET` as the first host
//!   address of the lease, `FLANNEL_MTU`, and `FLANNEL_IPMASQ`: true for the cluster's flannel,
//!   which kube-flannel runs with `--ip-masq`, false for flannel2, whose flanneld in
//!   examples/flannel2/flanneld runs without).
//!
//! What it does not do of flanneld's: leases (they are fixed: node `i` has the `i+1`-th /24),
//! and the iptables rules of `--ip-masq` and `--iptables-forward-rules`; the nodes forward
//! without them (no FORWARD policy drops anything in a fresh namespace).
//!
//! Both overlays use UDP port 8472, as two flanneld instances with their defaults do: the
//! kernel shares one socket between vxlan devices of different VNIs and hands each packet to
//! the device of its VNI.
//!
//! Addresses, all in 198.18.0.0/15 and all inside the world's own namespaces (node `i`
//! counts from 0):
//!
//! | what | range | node `i` |
//! | --- | --- | --- |
//! | underlay | 198.18.250.0/24, bridge `br0` in the switch namespace | `eth0` 198.18.250.(11+i)/24, MTU 1500 |
//! | primary overlay `cbr0`, VNI 1, `flannel.1` | 198.19.0.0/16 | 198.19.(1+i).0/24, bridge `cni0` |
//! | second overlay `flannel2`, VNI 2, `flannel.2` | 198.18.64.0/18 | 198.18.(65+i).0/24, bridge `cni1` |
//!
//! A node's temp dir stands for its root file system: the subnet files are
//! `<dir>/run/flannel/subnet.env` and `<dir>/run/flannel/flannel2.env`, the flannel plugin's
//! dataDirs `<dir>/var/lib/cni/flannel` and `<dir>/var/lib/cni/flannel2`, and host-local's
//! allocations go to the node's IPAM dir (`ipam.dataDir`, which the flannel plugin passes on).
//! The flannel2 NAD is examples/flannel2/nad.yaml with only those paths moved into the node.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::{Netns, Node, Pod, binaries, run};

/// The underlay's network; node `i` has `.(11+i)`.
pub const UNDERLAY: &str = "198.18.250.0/24";
/// The underlay's MTU; the vxlan devices get 50 less.
pub const UNDERLAY_MTU: u32 = 1500;
/// The UDP port of both overlays, the kernel's and flanneld's default.
pub const VXLAN_PORT: u16 = 8472;

/// One flannel overlay, as one flanneld instance runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlay {
    /// The CNI network's name: the cluster conflist's for the primary, the NAD's for flannel2.
    pub name: &'static str,
    pub vni: u32,
    /// The overlay's range (flanneld's `Network`); each node leases a /24 of it.
    pub network: Ipv4Addr,
    pub prefix: u8,
    /// The subnet file, relative to the node's root.
    pub subnet_file: &'static str,
    /// The flannel plugin's dataDir, relative to the node's root.
    pub data_dir: &'static str,
    /// The bridge the flannel plugin's delegate attaches pods to.
    pub bridge: &'static str,
    /// Whether flanneld runs with `--ip-masq` (`FLANNEL_IPMASQ` in the subnet file).
    pub ipmasq: bool,
}

/// The cluster network: kube-flannel's defaults, in 198.19.0.0/16.
pub const PRIMARY: Overlay = Overlay {
    name: "cbr0",
    vni: 1,
    network: Ipv4Addr::new(198, 19, 0, 0),
    prefix: 16,
    subnet_file: "run/flannel/subnet.env",
    data_dir: "var/lib/cni/flannel",
    bridge: "cni0",
    ipmasq: true,
};

/// The second overlay of examples/flannel2, in 198.18.64.0/18.
pub const FLANNEL2: Overlay = Overlay {
    name: "flannel2",
    vni: 2,
    network: Ipv4Addr::new(198, 18, 64, 0),
    prefix: 18,
    subnet_file: "run/flannel/flannel2.env",
    data_dir: "var/lib/cni/flannel2",
    bridge: "cni1",
    ipmasq: false,
};

pub const OVERLAYS: [Overlay; 2] = [PRIMARY, FLANNEL2];

impl Overlay {
    /// The vxlan device, `flannel.<VNI>` as flanneld names it.
    pub fn device(&self) -> String {
        format!("flannel.{}", self.vni)
    }

    /// The range in CIDR form, as `FLANNEL_NETWORK`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network, self.prefix)
    }

    /// The `.0` of node `i`'s /24: its lease, and its vxlan device's address.
    pub fn lease(&self, node: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + ((node as u32 + 1) << 8))
    }

    /// Node `i`'s /24.
    pub fn subnet(&self, node: usize) -> String {
        format!("{}/24", self.lease(node))
    }

    /// The gateway on node `i`'s bridge, the `.1` of its /24 (`FLANNEL_SUBNET`'s address).
    pub fn gateway(&self, node: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.lease(node)) + 1)
    }

    /// Whether `address` (bare or CIDR) is in node `i`'s /24.
    pub fn in_subnet(&self, node: usize, address: &str) -> bool {
        let bare = address.split('/').next().unwrap_or(address);
        bare.parse::<Ipv4Addr>()
            .is_ok_and(|a| u32::from(a) >> 8 == u32::from(self.lease(node)) >> 8)
    }

    /// Whether `address` (bare or CIDR) is in the overlay's range.
    pub fn contains(&self, address: &str) -> bool {
        let bare = address.split('/').next().unwrap_or(address);
        let mask = u32::MAX << (32 - u32::from(self.prefix));
        bare.parse::<Ipv4Addr>()
            .is_ok_and(|a| u32::from(a) & mask == u32::from(self.network))
    }

    /// The subnet file flanneld writes for node `i`.
    pub fn subnet_env(&self, node: usize) -> String {
        format!(
            "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}/24\nFLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n",
            self.cidr(),
            self.gateway(node),
            UNDERLAY_MTU - 50,
            self.ipmasq
        )
    }
}

/// Node `i`'s underlay address.
pub fn underlay_ip(node: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 250, 11 + node as u8)
}

/// The cluster network of every node: kube-flannel's `cni-conf.json` (without portmap), with
/// the subnet file, dataDir and host-local's dataDir inside the node.
pub fn primary_conflist() -> Value {
    json!({
        "cniVersion": "0.3.1",
        "name": PRIMARY.name,
        "plugins": [{
            "type": "flannel",
            "subnetFile": format!("@DIR@/{}", PRIMARY.subnet_file),
            "dataDir": format!("@DIR@/{}", PRIMARY.data_dir),
            "ipam": {"dataDir": "@IPAM@"},
            "delegate": {"hairpinMode": true, "isDefaultGateway": true}
        }]
    })
}

/// examples/flannel2/nad.yaml as an operator applies it.
pub fn example_nad() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/flannel2/nad.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The example NAD's `metadata.namespace/metadata.name`, as pods select it.
pub fn example_nad_ref() -> String {
    let nad = example_nad();
    format!(
        "{}/{}",
        nad["metadata"]["namespace"].as_str().unwrap_or("default"),
        nad["metadata"]["name"].as_str().expect("the NAD's name")
    )
}

/// The example NAD as the world runs it: its `subnetFile` and `dataDir` moved under the node's
/// root (`@DIR@`), host-local's allocations in the node's IPAM dir. Checks that the example
/// still says what the world provides.
pub fn flannel2_nad() -> Value {
    let mut nad = example_nad();
    let mut config: Value = serde_json::from_str(
        nad["spec"]["config"]
            .as_str()
            .expect("examples/flannel2/nad.yaml has a spec.config"),
    )
    .expect("the example NAD's config is JSON");
    assert_eq!(config["name"], FLANNEL2.name, "examples/flannel2/nad.yaml");
    let plugins = config["plugins"]
        .as_array_mut()
        .expect("the example NAD is a conflist");
    let flannel = plugins
        .iter_mut()
        .find(|p| p["type"] == "flannel")
        .expect("the example NAD has a flannel plugin");
    for (key, expected) in [
        ("subnetFile", FLANNEL2.subnet_file),
        ("dataDir", FLANNEL2.data_dir),
    ] {
        assert_eq!(
            flannel[key].as_str(),
            Some(format!("/{expected}").as_str()),
            "examples/flannel2/nad.yaml: {key}"
        );
        flannel[key] = json!(format!("@DIR@/{expected}"));
    }
    assert_eq!(
        flannel["delegate"]["bridge"], FLANNEL2.bridge,
        "examples/flannel2/nad.yaml: delegate.bridge"
    );
    flannel["ipam"] = json!({"dataDir": "@IPAM@"});
    nad["spec"]["config"] = json!(config.to_string());
    nad
}

/// A pod manifest with the networks annotation (JSON is YAML).
pub fn pod_manifest(pod: &Pod, networks: &str) -> String {
    pod.manifest(networks)
}

pub struct WorldBuilder {
    nodes: usize,
    manifests: Vec<(usize, String, String)>,
}

impl WorldBuilder {
    /// A manifest in node `i`'s manifest dir (e.g. the pods that run there).
    pub fn manifest(mut self, node: usize, file: &str, yaml: &str) -> Self {
        assert!(node < self.nodes, "node {node} of {}", self.nodes);
        self.manifests
            .push((node, file.to_owned(), yaml.to_owned()));
        self
    }

    pub fn start(self) -> World {
        // Built field by field, so whatever exists is dropped again if a step fails.
        let switch = Netns::new("sw");
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        switch.ip(&["link", "set", "br0", "up"]);
        let stand_in = binaries::flannel();
        let nad = flannel2_nad().to_string();
        let mut world = World {
            nodes: Vec::new(),
            vteps: Vec::new(),
            switch,
        };
        for i in 0..self.nodes {
            let mut builder = Node::builder()
                .cluster(primary_conflist())
                .plugin("flannel", &format!("exec '{}' \"$@\"", stand_in.display()))
                .manifest("flannel2.yaml", &nad);
            for (_, file, yaml) in self.manifests.iter().filter(|(n, _, _)| *n == i) {
                builder = builder.manifest(file, yaml);
            }
            world.nodes.push(builder.start());
            world.plug_into_underlay(i);
            let macs = OVERLAYS
                .iter()
                .map(|overlay| world.add_vxlan_device(i, overlay))
                .collect();
            world.vteps.push(macs);
        }
        for i in 0..self.nodes {
            for j in (0..self.nodes).filter(|j| *j != i) {
                for (o, overlay) in OVERLAYS.iter().enumerate() {
                    world.add_remote(i, j, overlay, &world.vteps[j][o].clone());
                }
            }
        }
        world
    }
}

/// N nodes on one underlay with both overlays. Dropping it stops every plexusd and deletes every
/// namespace (the nodes first, then the switch).
pub struct World {
    pub nodes: Vec<Node>,
    /// Per node, per overlay (in `OVERLAYS` order): the vxlan device's MAC.
    vteps: Vec<Vec<String>>,
    /// The underlay's switch: bridge `br0` with port `n<i>` for node `i`.
    pub switch: Netns,
}

/// A vxlan device's packet counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub tx_packets: u64,
    pub rx_packets: u64,
}

impl World {
    pub fn builder(nodes: usize) -> WorldBuilder {
        assert!((1..=100).contains(&nodes));
        WorldBuilder {
            nodes,
            manifests: Vec::new(),
        }
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// The MAC of node `i`'s vxlan device of `overlay`.
    pub fn vtep_mac(&self, node: usize, overlay: &Overlay) -> &str {
        let o = OVERLAYS.iter().position(|x| x == overlay).expect("overlay");
        &self.vteps[node][o]
    }

    /// Node `i`'s subnet file of `overlay`.
    pub fn subnet_file(&self, node: usize, overlay: &Overlay) -> PathBuf {
        self.nodes[node].dir().join(overlay.subnet_file)
    }

    /// Node `i`'s flannel plugin dataDir of `overlay`.
    pub fn data_dir(&self, node: usize, overlay: &Overlay) -> PathBuf {
        self.nodes[node].dir().join(overlay.data_dir)
    }

    /// The files in node `i`'s dataDir of `overlay` (one per container the plugin attached).
    pub fn data_dir_files(&self, node: usize, overlay: &Overlay) -> Vec<String> {
        let mut files: Vec<String> = std::fs::read_dir(self.data_dir(node, overlay))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        files
    }

    /// The packet counters of node `i`'s vxlan device of `overlay`.
    pub fn counters(&self, node: usize, overlay: &Overlay) -> Counters {
        let json: Value = serde_json::from_str(&self.nodes[node].netns.ip(&[
            "-s",
            "-j",
            "link",
            "show",
            "dev",
            &overlay.device(),
        ]))
        .expect("ip -s -j link");
        let stats = &json[0]["stats64"];
        Counters {
            tx_packets: stats["tx"]["packets"].as_u64().expect("tx packets"),
            rx_packets: stats["rx"]["packets"].as_u64().expect("rx packets"),
        }
    }

    /// The interfaces enslaved to `bridge` in node `i` (`ip link show master BRIDGE`); panics
    /// when there is no such bridge.
    pub fn bridge_members(&self, node: usize, bridge: &str) -> Vec<String> {
        let json: Value = serde_json::from_str(
            &self.nodes[node]
                .netns
                .ip(&["-j", "link", "show", "master", bridge]),
        )
        .expect("ip -j link show master");
        let mut names: Vec<String> = json
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    }

    /// The node-side veth of `pod`'s interface `ifname`, found by the peer's ifindex.
    pub fn host_veth(&self, node: usize, pod: &Pod, ifname: &str) -> String {
        let link: Value =
            serde_json::from_str(&pod.netns.ip(&["-j", "link", "show", "dev", ifname]))
                .expect("ip -j link");
        let peer = link[0]["link_index"]
            .as_u64()
            .unwrap_or_else(|| panic!("{ifname} in the pod is not a veth: {link}"));
        let links: Value =
            serde_json::from_str(&self.nodes[node].netns.ip(&["-j", "link", "show"]))
                .expect("ip -j link");
        links
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["ifindex"].as_u64() == Some(peer))
            .and_then(|l| l["ifname"].as_str())
            .unwrap_or_else(|| panic!("no interface {peer} in node {node}"))
            .to_owned()
    }

    /// A veth from the switch into node `i` (`eth0` there), the underlay address on it, and
    /// forwarding on, as on any Kubernetes node.
    fn plug_into_underlay(&self, i: usize) {
        let node = &self.nodes[i];
        // Loose reverse-path filtering, as systemd's 50-default.conf sets it on most
        // distributions, before any interface exists, so every one inherits it. (The default
        // of a new namespace is copied from the machine's, which varies.)
        for conf in ["all", "default"] {
            sysctl(&node.netns, &format!("net/ipv4/conf/{conf}/rp_filter"), "2")
                .expect("rp_filter");
        }
        let port = format!("n{i}");
        let mtu = UNDERLAY_MTU.to_string();
        self.switch.ip(&[
            "link",
            "add",
            &port,
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "mtu",
            &mtu,
            "netns",
            node.netns.name(),
        ]);
        self.switch
            .ip(&["link", "set", &port, "master", "br0", "up"]);
        node.netns.ip(&[
            "addr",
            "add",
            &format!("{}/24", underlay_ip(i)),
            "dev",
            "eth0",
        ]);
        node.netns.ip(&["link", "set", "eth0", "up"]);
        sysctl(&node.netns, "net/ipv4/ip_forward", "1").expect("ip_forward");
    }

    /// What flanneld's vxlan backend does at start for `overlay` on node `i`; the device's MAC.
    fn add_vxlan_device(&self, i: usize, overlay: &Overlay) -> String {
        let node = &self.nodes[i];
        let device = overlay.device();
        node.netns.ip(&[
            "link",
            "add",
            &device,
            "mtu",
            &(UNDERLAY_MTU - 50).to_string(),
            "type",
            "vxlan",
            "id",
            &overlay.vni.to_string(),
            "dev",
            "eth0",
            "local",
            &underlay_ip(i).to_string(),
            "dstport",
            &VXLAN_PORT.to_string(),
            "nolearning",
        ]);
        // flanneld ignores a failure here too (no IPv6 in the kernel).
        let _ = sysctl(
            &node.netns,
            &format!("net/ipv6/conf/{device}/accept_ra"),
            "0",
        );
        node.netns.ip(&[
            "addr",
            "add",
            &format!("{}/32", overlay.lease(i)),
            "dev",
            &device,
        ]);
        node.netns.ip(&["link", "set", &device, "up"]);
        let file = node.dir().join(overlay.subnet_file);
        std::fs::create_dir_all(file.parent().expect("run/flannel")).expect("mkdir run/flannel");
        std::fs::write(&file, overlay.subnet_env(i)).expect("write the subnet file");
        let link: Value =
            serde_json::from_str(&node.netns.ip(&["-j", "link", "show", "dev", &device]))
                .expect("ip -j link");
        link[0]["address"].as_str().expect("a MAC").to_owned()
    }

    /// What flanneld's vxlan backend does on node `i` when it learns node `j`'s lease: ARP
    /// entry, FDB entry, then the route (so the kernel never has to ARP for the gateway).
    fn add_remote(&self, i: usize, j: usize, overlay: &Overlay, mac: &str) {
        let node = &self.nodes[i];
        let device = overlay.device();
        let gateway = overlay.lease(j).to_string();
        node.netns.ip(&[
            "neigh",
            "replace",
            &gateway,
            "lladdr",
            mac,
            "dev",
            &device,
            "nud",
            "permanent",
        ]);
        run(
            "bridge",
            &[
                "-netns",
                node.netns.name(),
                "fdb",
                "replace",
                mac,
                "dev",
                &device,
                "dst",
                &underlay_ip(j).to_string(),
                "self",
                "permanent",
            ],
        );
        node.netns.ip(&[
            "route",
            "replace",
            &overlay.subnet(j),
            "via",
            &gateway,
            "dev",
            &device,
            "onlink",
        ]);
    }
}

/// Writes `value` to /proc/sys/`key` inside `netns`.
fn sysctl(netns: &Netns, key: &str, value: &str) -> Result<(), String> {
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", netns.name(), "sh", "-c"])
        .arg(format!("echo {value} > /proc/sys/{key}"))
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_leases_its_own_slash_24_of_each_overlay() {
        assert_eq!(PRIMARY.subnet(0), "198.19.1.0/24");
        assert_eq!(PRIMARY.gateway(1), Ipv4Addr::new(198, 19, 2, 1));
        assert_eq!(FLANNEL2.subnet(2), "198.18.67.0/24");
        assert_eq!(FLANNEL2.cidr(), "198.18.64.0/18");
        assert!(FLANNEL2.contains("198.18.100.7/24"));
        assert!(!FLANNEL2.contains("198.18.128.7"));
        assert!(!PRIMARY.contains("198.18.65.2"));
        assert!(FLANNEL2.in_subnet(0, "198.18.65.5/24"));
        assert!(!FLANNEL2.in_subnet(1, "198.18.65.5"));
        assert!(!FLANNEL2.contains(&underlay_ip(0).to_string()));
        assert!(!PRIMARY.contains(&underlay_ip(0).to_string()));
    }

    #[test]
    fn the_subnet_file_is_what_flanneld_writes() {
        assert_eq!(
            FLANNEL2.subnet_env(1),
            "FLANNEL_NETWORK=198.18.64.0/18\nFLANNEL_SUBNET=198.18.66.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
        );
    }

    #[test]
    fn the_world_runs_the_example_nad_with_only_its_node_paths_moved() {
        let nad = flannel2_nad();
        let config: Value = serde_json::from_str(nad["spec"]["config"].as_str().unwrap()).unwrap();
        let flannel = &config["plugins"][0];
        assert_eq!(flannel["subnetFile"], "@DIR@/run/flannel/flannel2.env");
        assert_eq!(flannel["dataDir"], "@DIR@/var/lib/cni/flannel2");
        assert_eq!(flannel["delegate"]["bridge"], "cni1");
        assert_ne!(FLANNEL2.bridge, PRIMARY.bridge);
        assert_eq!(example_nad_ref(), "kube-system/flannel2");
    }
}
