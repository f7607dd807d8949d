//! Device networks: NADs naming a device pool (`k8s.v1.cni.cncf.io/resourceName`), whose
//! devices come from device plugins (the test kubelet's PodResources API) or from DRA
//! ResourceClaims and ResourceSlices in the API server. The devices are veths in the node named
//! like their ids; the `netdev` test delegate moves the one it is given into the pod, so the
//! pod's interface (its MAC, its alias) says which device it got.
//!
//! Every test runs plexusd on the kube source, against the test API server or, with
//! PLEXUS_TEST_KUBECONFIG, a real cluster; only the tests that count API reads skip there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use plexus_integration::dra::{self, DRIVER, claim, slice};
use plexus_integration::kubelet::Mode;
use plexus_integration::{Node, NodeBuilder, Pod, binaries};
use serde_json::{Value, json};

use crate::fixtures::{bare, events_for, eventually};

const RESOURCE: &str = "example.com/vf";
const OTHER_RESOURCE: &str = "example.com/vf-west";

/// A kube node with the `netdev` delegate and, with `kubelet`, the test kubelet.
fn device_node(kubelet: bool) -> Node {
    device_node_with(kubelet, |builder| builder)
}

fn device_node_with(kubelet: bool, setup: impl FnOnce(NodeBuilder) -> NodeBuilder) -> Node {
    let builder: NodeBuilder = setup(Node::builder().kube().plugin(
        "netdev",
        &format!("exec '{}' \"$@\"", binaries::netdev().display()),
    ));
    if kubelet {
        builder.kubelet().start()
    } else {
        builder.start()
    }
}

/// A `netdev` network on `subnet` that records its calls in `<node dir>/calls`.
fn netdev(name: &str, subnet: &str) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": name, "type": "netdev", "recordDir": "@DIR@/calls",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": "@IPAM@"}
    })
}

/// A node with the test kubelet and the devices `devices`, NAD `tenant/vf` (`config`) on the
/// pool [`RESOURCE`], and pod `tenant/web` selecting `selection`, to which the kubelet gave the
/// devices `allocated`, with plexusd's caches holding both.
fn pool_world(
    config: &Value,
    devices: &[&str],
    selection: &str,
    allocated: &[&str],
) -> (Node, Pod) {
    pool_world_on(device_node(true), config, devices, selection, allocated)
}

fn pool_world_on(
    node: Node,
    config: &Value,
    devices: &[&str],
    selection: &str,
    allocated: &[&str],
) -> (Node, Pod) {
    let web = Pod::new("tenant", "web");
    for id in devices {
        node.add_device(id);
    }
    node.apply_nad_annotated("tenant", "vf", pool(RESOURCE), config);
    node.apply_pod(&web, networks(selection));
    node.kubelet().allocate(&web, RESOURCE, allocated);
    node.wait_for_readyz("nads=1 pods=1", Duration::from_secs(30));
    (node, web)
}

fn pool(resource: &str) -> Value {
    json!({"k8s.v1.cni.cncf.io/resourceName": resource})
}

fn networks(value: &str) -> Value {
    json!({"k8s.v1.cni.cncf.io/networks": value})
}

/// The requests the delegate recorded for `pod`'s `ifname`, oldest first per command.
fn recorded(node: &Node, pod: &Pod, command: &str, ifname: &str) -> Vec<Value> {
    let prefix = format!("{command}-{}-{ifname}-", pod.container_id);
    let mut files: Vec<PathBuf> = std::fs::read_dir(node.dir().join("calls"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| serde_json::from_slice(&std::fs::read(f).expect("record")).expect("JSON"))
        .collect()
}

/// The device id `ifname` in the pod stands for (the delegate sets it as the link's alias),
/// and its MAC.
fn device_in_pod(pod: &Pod, ifname: &str) -> Option<(String, String)> {
    let shown: Value =
        serde_json::from_str(&pod.netns.ip(&["-j", "link", "show"])).expect("ip -j link");
    shown.as_array()?.iter().find_map(|l| {
        (l["ifname"] == ifname).then(|| {
            (
                l["ifalias"].as_str().unwrap_or_default().to_owned(),
                l["address"].as_str().unwrap_or_default().to_owned(),
            )
        })
    })
}

/// Asserts the node has nothing of the pod left: devices home, no IP, no record, no
/// device-info file.
fn assert_released(node: &Node, devices: &[&str]) {
    let links = node.netns.links();
    for device in devices {
        assert!(
            links.contains(&(*device).to_owned()),
            "{device} is not back: {links:?}"
        );
    }
    node.assert_clean();
    let left: Vec<PathBuf> = std::fs::read_dir(node.device_info_dir().join("cni"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "device-info files left: {left:?}");
}

/// ADD gives each interface (ifname, device id) its device; DEL brings `devices` home and
/// leaves nothing behind.
fn attached_then_released(node: &Node, pod: &Pod, expected: &[(&str, &str)], devices: &[&str]) {
    node.add(pod).result();
    for (ifname, id) in expected {
        let got = device_in_pod(pod, ifname).map(|(id, _)| id);
        assert_eq!(got.as_deref(), Some(*id), "{ifname}");
    }
    assert!(node.del(pod).success());
    assert!(pod.link_names().is_empty(), "{:?}", pod.link_names());
    assert_released(node, devices);
}

#[test]
fn an_sriov_style_nad_gets_the_device_the_kubelet_allocated() {
    let (node, web) = pool_world(
        &netdev("vf", "198.18.40.0/24"),
        &["tdev0", "tdev1"],
        "vf",
        &["tdev0"],
    );

    let mac = node.link_mac("tdev0").expect("tdev0 on the node");
    node.add(&web).result();
    assert_eq!(device_in_pod(&web, "net1"), Some(("tdev0".into(), mac)));
    assert!(web.link("net1").unwrap().addresses[0].starts_with("198.18.40."));
    assert!(!node.netns.links().contains(&"tdev0".to_owned()));
    assert!(
        node.netns.links().contains(&"tdev1".to_owned()),
        "not this pod's"
    );
    let add = &recorded(&node, &web, "ADD", "net1")[0];
    assert_eq!(add["deviceID"], "tdev0");
    assert_eq!(add["pciBusID"], "tdev0");
    // The record keeps the device, for DEL.
    let record = std::fs::read_to_string(
        node.records_dir()
            .join(format!("{}.json", web.container_id)),
    )
    .expect("record");
    let record: Value = serde_json::from_str(&record).unwrap();
    let device = &record["attachments"][1]["delegate"]["device"];
    assert_eq!(device["id"], "tdev0");
    assert_eq!(device["source"]["kind"], "devicePlugin");
    assert!(node.check(&web).success());

    assert!(node.del(&web).success());
    assert_eq!(recorded(&node, &web, "DEL", "net1")[0]["deviceID"], "tdev0");
    assert!(web.link_names().is_empty());
    assert_released(&node, &["tdev0", "tdev1"]);
}

#[test]
fn two_nads_on_one_pool_get_distinct_devices_in_selection_order() {
    let node = device_node(true);
    let web = Pod::new("tenant", "web");
    for id in ["tdev0", "tdev1", "tdev2"] {
        node.add_device(id);
    }
    node.apply_nad_annotated(
        "tenant",
        "vf-a",
        pool(RESOURCE),
        &netdev("vf-a", "198.18.41.0/24"),
    );
    node.apply_nad_annotated(
        "tenant",
        "vf-b",
        pool(RESOURCE),
        &netdev("vf-b", "198.18.42.0/24"),
    );
    node.apply_pod(&web, networks("vf-b@data0,vf-a@data1"));
    node.kubelet().allocate(&web, RESOURCE, &["tdev2", "tdev0"]);
    node.wait_for_readyz("nads=2 pods=1", Duration::from_secs(30));

    attached_then_released(
        &node,
        &web,
        &[("data0", "tdev2"), ("data1", "tdev0")],
        &["tdev0", "tdev1", "tdev2"],
    );
}

#[test]
fn every_plugin_of_a_conflist_gets_the_device_id() {
    let chain = json!({
        "cniVersion": "1.0.0", "name": "vf",
        "plugins": [
            {"type": "netdev", "recordDir": "@DIR@/calls",
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.43.0/24"}]], "dataDir": "@IPAM@"}},
            {"type": "netdev", "mode": "record", "recordDir": "@DIR@/calls",
             "capabilities": {"deviceID": true, "CNIDeviceInfoFile": true}},
            {"type": "tuning", "sysctl": {"net.core.somaxconn": "512"}}
        ]
    });
    let (node, web) = pool_world(&chain, &["tdev0"], "vf", &["tdev0"]);

    node.add(&web).result();
    let calls = recorded(&node, &web, "ADD", "net1");
    assert_eq!(calls.len(), 2, "the mover and the recorder");
    for call in &calls {
        assert_eq!(call["deviceID"], "tdev0", "{call}");
        assert_eq!(call["pciBusID"], "tdev0", "{call}");
    }
    // runtimeConfig only where the capability is declared.
    assert!(calls[0].get("runtimeConfig").is_none(), "{}", calls[0]);
    assert_eq!(calls[1]["runtimeConfig"]["deviceID"], "tdev0");
    assert!(
        calls[1]["runtimeConfig"]["CNIDeviceInfoFile"]
            .as_str()
            .is_some_and(|f| f.ends_with(&format!("tenant-vf-{}_net1", web.container_id))),
        "{}",
        calls[1]
    );
    assert_eq!(calls[1]["prevResult"]["interfaces"][0]["name"], "net1");
    assert_eq!(device_in_pod(&web, "net1").unwrap().0, "tdev0");
    assert!(node.del(&web).success());
    assert_released(&node, &["tdev0"]);
}

#[test]
fn an_explicit_device_id_is_used_as_given_and_counts_as_taken() {
    // The first attachment may take any device of the pool; the second names tdev0, which the
    // kubelet lists first. The named one is reserved before the rest are handed out.
    let (node, web) = pool_world(
        &netdev("vf", "198.18.44.0/24"),
        &["tdev0", "tdev1"],
        r#"[{"name": "vf"}, {"name": "vf", "device-id": "tdev0"}]"#,
        &["tdev0", "tdev1"],
    );

    attached_then_released(
        &node,
        &web,
        &[("net1", "tdev1"), ("net2", "tdev0")],
        &["tdev0", "tdev1"],
    );
}

/// Waits until plexusd has finished a hot-plug change that leaves the pod `count`
/// interfaces: its network-status, read under the pod's lock, lists that many.
fn wait_for_interfaces(node: &Node, pod: &Pod, count: usize) {
    eventually(
        &format!("{count} interfaces in {}'s network-status", pod.name),
        || {
            let status = node.network_status(pod);
            (status.as_array().map(Vec::len) == Some(count)).then_some(())
        },
    );
}

#[test]
fn a_hot_plugged_attachment_gets_a_device_the_pod_does_not_hold_and_gives_it_back() {
    let node = device_node_with(true, |b| b.config_line("dynamicNetworks: true"));
    let (node, web) = pool_world_on(
        node,
        &netdev("vf", "198.18.47.0/24"),
        &["tdev0", "tdev1", "tdev2"],
        "vf",
        &["tdev0", "tdev1"],
    );
    node.add(&web).result();
    assert_eq!(device_in_pod(&web, "net1").unwrap().0, "tdev0");

    // The kubelet lists tdev0 first, but net1 holds it: the new attachment gets tdev1.
    node.apply_pod(&web, networks("vf,vf"));
    wait_for_interfaces(&node, &web, 3);
    assert_eq!(device_in_pod(&web, "net2").unwrap().0, "tdev1");
    assert_eq!(recorded(&node, &web, "ADD", "net2")[0]["deviceID"], "tdev1");
    assert_eq!(device_in_pod(&web, "net1").unwrap().0, "tdev0", "untouched");

    // Detached: the device goes home and its device-info file with it.
    node.apply_pod(&web, networks("vf"));
    wait_for_interfaces(&node, &web, 2);
    assert!(node.netns.links().contains(&"tdev1".to_owned()), "back");
    assert_eq!(recorded(&node, &web, "DEL", "net2")[0]["deviceID"], "tdev1");
    assert_eq!(web.link_names(), ["eth0", "net1"]);

    assert!(node.del(&web).success());
    assert_released(&node, &["tdev0", "tdev1", "tdev2"]);
}

#[test]
fn a_hot_plugged_attachment_without_a_free_device_is_refused_and_warned_about() {
    let node = device_node_with(true, |b| b.config_line("dynamicNetworks: true"));
    let (node, web) = pool_world_on(
        node,
        &netdev("vf", "198.18.48.0/24"),
        &["tdev0", "tdev1"],
        "vf",
        &["tdev0"],
    );
    node.add(&web).result();

    node.apply_pod(&web, networks("vf,vf"));
    let note = eventually("a Warning event for the missing device", || {
        events_for(&node, &web)
            .into_iter()
            .filter(|e| e["type"] == "Warning")
            .filter_map(|e| e["note"].as_str().map(str::to_owned))
            .find(|note| note.contains(RESOURCE))
    });
    assert!(note.contains("tenant/vf"), "{note}");
    assert_eq!(web.link_names(), ["eth0", "net1"], "nothing half-made");
    assert!(
        node.netns.links().contains(&"tdev1".to_owned()),
        "not the pod's"
    );

    assert!(node.del(&web).success());
    assert_released(&node, &["tdev0", "tdev1"]);
}

#[test]
fn an_exhausted_pool_fails_the_add_naming_pod_nad_and_resource_and_leaves_nothing() {
    let (node, web) = pool_world(
        &netdev("vf", "198.18.45.0/24"),
        &["tdev0"],
        "vf,vf",
        &["tdev0"],
    );

    let out = node.add(&web);
    let error = out.error();
    assert_eq!(error["code"], 7, "{error}");
    let msg = error["msg"].as_str().unwrap_or_default();
    for part in ["tenant/web", "tenant/vf", RESOURCE, "tdev0"] {
        assert!(msg.contains(part), "{part} missing in {msg}");
    }
    // Nothing ran: the device lookup comes before any delegate.
    assert!(web.link_names().is_empty(), "{:?}", web.link_names());
    assert_released(&node, &["tdev0"]);
    assert!(node.del(&web).success());
}

#[test]
fn without_a_kubelet_or_with_one_that_hangs_the_add_fails_clearly() {
    let node = device_node(false);
    let web = Pod::new("tenant", "web");
    node.add_device("tdev0");
    node.apply_nad_annotated(
        "tenant",
        "vf",
        pool(RESOURCE),
        &netdev("vf", "198.18.46.0/24"),
    );
    node.apply_pod(&web, networks("vf"));
    node.wait_for_readyz("nads=1 pods=1", Duration::from_secs(30));

    let error = node.add(&web).error();
    assert_eq!(error["code"], 11, "{error}");
    let msg = error["msg"].as_str().unwrap_or_default();
    let socket = node.pod_resources_socket().display().to_string();
    for part in ["tenant/web", "tenant/vf", RESOURCE, socket.as_str()] {
        assert!(msg.contains(part), "{part} missing in {msg}");
    }
    assert!(web.link_names().is_empty());
    assert_released(&node, &["tdev0"]);

    // A kubelet that accepts and never answers: the same failure, after plexusd's deadline.
    let kubelet = plexus_integration::kubelet::Kubelet::start(&node.pod_resources_socket());
    kubelet.set_mode(Mode::Silent);
    let error = node.add(&web).error();
    assert_eq!(error["code"], 11, "{error}");
    assert!(
        error["msg"]
            .as_str()
            .is_some_and(|m| m.contains("no answer within")),
        "{error}"
    );
    assert_released(&node, &["tdev0"]);
}

#[test]
fn a_kubelet_without_get_is_asked_with_list_from_then_on() {
    let node = device_node(true);
    let (first, second) = (Pod::new("tenant", "first"), Pod::new("tenant", "second"));
    node.add_device("tdev0");
    node.add_device("tdev1");
    node.apply_nad_annotated(
        "tenant",
        "vf",
        pool(RESOURCE),
        &netdev("vf", "198.18.47.0/24"),
    );
    node.apply_pod(&first, networks("vf"));
    node.apply_pod(&second, networks("vf"));
    node.kubelet().allocate(&first, RESOURCE, &["tdev0"]);
    node.kubelet().allocate(&second, RESOURCE, &["tdev1"]);
    node.kubelet().set_mode(Mode::WithoutGet);
    node.wait_for_readyz("nads=1 pods=2", Duration::from_secs(30));

    node.add(&first).result();
    node.add(&second).result();
    assert_eq!(device_in_pod(&first, "net1").unwrap().0, "tdev0");
    assert_eq!(device_in_pod(&second, "net1").unwrap().0, "tdev1");
    assert_eq!(node.kubelet().calls(), ["Get", "List", "List"]);
    assert!(node.del(&first).success() && node.del(&second).success());
    assert_released(&node, &["tdev0", "tdev1"]);
}

#[test]
fn del_after_the_kubelet_forgot_the_pod_still_releases_everything() {
    let (node, web) = pool_world(
        &netdev("vf", "198.18.48.0/24"),
        &["tdev0"],
        "vf",
        &["tdev0"],
    );
    node.add(&web).result();
    let asked = node.kubelet().calls().len();

    node.kubelet().forget(&web);
    node.kubelet().set_mode(Mode::Silent);
    assert!(node.del(&web).success());
    assert_eq!(
        node.kubelet().calls().len(),
        asked,
        "DEL never asks the kubelet"
    );
    assert!(web.link_names().is_empty());
    assert_released(&node, &["tdev0"]);
}

#[test]
fn device_info_from_the_device_plugin_reaches_the_delegate_and_network_status() {
    let mut config = netdev("vf", "198.18.49.0/24");
    config["capabilities"] = json!({"CNIDeviceInfoFile": true});
    let (node, web) = pool_world(&config, &["tdev0"], "vf", &["tdev0"]);
    let info = json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:00.2", "pf-pci-address": "0000:03:00.0"}});
    let plugin_file = node
        .device_info_dir()
        .join("dp")
        .join("example.com-vf-tdev0-device.json");
    std::fs::create_dir_all(plugin_file.parent().unwrap()).unwrap();
    std::fs::write(&plugin_file, info.to_string()).unwrap();

    node.add(&web).result();
    let add = &recorded(&node, &web, "ADD", "net1")[0];
    let offered = add["runtimeConfig"]["CNIDeviceInfoFile"]
        .as_str()
        .expect("CNIDeviceInfoFile in runtimeConfig")
        .to_owned();
    assert!(Path::new(&offered).starts_with(node.device_info_dir().join("cni")));
    let copied: Value = serde_json::from_slice(&std::fs::read(&offered).unwrap()).unwrap();
    assert_eq!(copied, info);
    let status = node.network_status(&web);
    assert_eq!(status[1]["name"], "tenant/vf");
    assert_eq!(status[1]["device-info"], info);
    assert!(status[0].get("device-info").is_none());
    let annotation = eventually("network-status on the pod", || {
        let pod = node.cluster().object("Pod", &web.namespace, &web.name)?;
        let text = pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].as_str()?;
        serde_json::from_str::<Value>(text).ok()
    });
    assert_eq!(annotation[1]["device-info"], info);

    assert!(node.del(&web).success());
    assert!(
        !Path::new(&offered).exists(),
        "the CNI-side file goes with DEL"
    );
    assert!(plugin_file.exists(), "the device plugin's file is its own");
    assert_released(&node, &["tdev0"]);
}

// DRA: the devices of a pod's ResourceClaims, described by this node's ResourceSlice.
/// Puts `pod` on the node with these claims (see [`dra::with_claims`]).
fn apply_pod_with_claims(node: &Node, pod: &Pod, annotations: Value, claims: &[(&str, &str)]) {
    node.apply_pod_with(pod, annotations, |object| dra::with_claims(object, claims));
}

/// A kube node serving DRA, or `None` (said so) when the real cluster does not.
fn dra_node() -> Option<Node> {
    let node = device_node(false);
    if !node.cluster().serves_dra() {
        eprintln!("skipped: the cluster does not serve resource.k8s.io/v1");
        return None;
    }
    Some(node)
}

#[test]
fn a_dra_claim_with_two_devices_is_matched_by_resource_name_and_a_warm_add_reads_nothing() {
    let Some(node) = dra_node() else { return };
    let web = Pod::new("tenant", "web");
    let east_mac = node.add_device("tdev0");
    let west_mac = node.add_device("tdev1");
    node.apply_nad_annotated(
        "tenant",
        "east",
        pool(RESOURCE),
        &netdev("east", "198.18.50.0/24"),
    );
    node.apply_nad_annotated(
        "tenant",
        "west",
        pool(OTHER_RESOURCE),
        &netdev("west", "198.18.51.0/24"),
    );
    apply_pod_with_claims(&node, &web, networks("west,east"), &[("nics", "web-nics")]);
    node.cluster().apply_with_status(claim(
        &node,
        &web,
        "web-nics",
        "pool-a",
        &[("vf", &["vf-0", "vf-1"])],
    ));
    node.cluster().apply(slice(
        &node,
        "pool-a",
        &[
            ("vf-0", RESOURCE, "tdev0"),
            ("vf-1", OTHER_RESOURCE, "tdev1"),
        ],
    ));
    node.wait_for_readyz("nads=2 pods=1 claims=1 slices=1", Duration::from_secs(30));
    if let Some(api) = node.cluster().fixture() {
        api.reset_counters();
    }

    node.add(&web).result();
    assert_eq!(
        device_in_pod(&web, "net1"),
        Some(("tdev1".into(), west_mac))
    );
    assert_eq!(
        device_in_pod(&web, "net2"),
        Some(("tdev0".into(), east_mac))
    );
    let add = &recorded(&node, &web, "ADD", "net2")[0];
    assert_eq!(add["deviceID"], "tdev0");
    if let Some(api) = node.cluster().fixture() {
        eventually("the status writes", || {
            (api.counters_for("resourceclaims").writes >= 1).then_some(())
        });
        let reads: u64 = [
            "pods",
            "network-attachment-definitions",
            "resourceclaims",
            "resourceslices",
        ]
        .iter()
        .map(|r| api.counters_for(r).reads)
        .sum();
        assert_eq!(reads, 0, "{:?}", api.requests());
    }
    assert!(node.del(&web).success());
    assert_released(&node, &["tdev0", "tdev1"]);
}

#[test]
fn a_claim_device_whose_resource_name_attribute_differs_is_refused() {
    let Some(node) = dra_node() else { return };
    let (named, unnamed) = (Pod::new("tenant", "named"), Pod::new("tenant", "unnamed"));
    node.add_device("tdev0");
    node.apply_nad_annotated(
        "tenant",
        "east",
        pool(RESOURCE),
        &netdev("east", "198.18.52.0/24"),
    );
    // Both pods' devices belong to another resource than the NAD's.
    apply_pod_with_claims(
        &node,
        &named,
        networks(
            r#"[{"name": "east", "plexus.dev/resource-claim": {"claimName": "nics", "requestName": "vf"}}]"#,
        ),
        &[("nics", "named-nics")],
    );
    apply_pod_with_claims(
        &node,
        &unnamed,
        networks("east"),
        &[("nics", "unnamed-nics")],
    );
    for (pod, claim_name, device) in [
        (&named, "named-nics", "vf-0"),
        (&unnamed, "unnamed-nics", "vf-1"),
    ] {
        node.cluster().apply_with_status(claim(
            &node,
            pod,
            claim_name,
            "pool-a",
            &[("vf", &[device])],
        ));
    }
    node.cluster().apply(slice(
        &node,
        "pool-a",
        &[
            ("vf-0", OTHER_RESOURCE, "tdev0"),
            ("vf-1", OTHER_RESOURCE, "tdev0"),
        ],
    ));
    node.wait_for_readyz("claims=2 slices=1", Duration::from_secs(30));

    let error = node.add(&named).error();
    assert_eq!(error["code"], 7, "{error}");
    let msg = error["msg"].as_str().unwrap_or_default();
    for part in [
        "tenant/named",
        "tenant/east",
        RESOURCE,
        OTHER_RESOURCE,
        "named-nics",
        "vf-0",
    ] {
        assert!(msg.contains(part), "{part} missing in {msg}");
    }
    // Not named: no device of the claims carries the NAD's resource, and no device plugin is
    // there to ask.
    let error = node.add(&unnamed).error();
    assert!(
        error["msg"].as_str().is_some_and(|m| m.contains(RESOURCE)),
        "{error}"
    );
    for pod in [&named, &unnamed] {
        assert!(pod.link_names().is_empty());
        assert!(node.del(pod).success());
    }
    assert_released(&node, &["tdev0"]);
}

#[test]
fn a_selection_naming_a_claim_request_gets_that_requests_device() {
    let Some(node) = dra_node() else { return };
    let web = Pod::new("tenant", "web");
    for id in ["tdev0", "tdev1"] {
        node.add_device(id);
    }
    node.apply_nad_annotated(
        "tenant",
        "vf",
        pool(RESOURCE),
        &netdev("vf", "198.18.53.0/24"),
    );
    // Two claims of the same pool: the selection says which attachment gets which.
    apply_pod_with_claims(
        &node,
        &web,
        networks(
            r#"[{"name": "vf", "interface": "fast", "plexus.dev/resource-claim": {"claimName": "fast", "requestName": "nic"}},
                {"name": "vf", "interface": "slow", "plexus.dev/resource-claim": {"claimName": "slow", "requestName": "nic"}}]"#,
        ),
        &[("slow", "web-slow"), ("fast", "web-fast")],
    );
    node.cluster().apply_with_status(claim(
        &node,
        &web,
        "web-slow",
        "pool-a",
        &[("nic", &["vf-0"])],
    ));
    node.cluster().apply_with_status(claim(
        &node,
        &web,
        "web-fast",
        "pool-a",
        &[("nic", &["vf-1"])],
    ));
    node.cluster().apply(slice(
        &node,
        "pool-a",
        &[("vf-0", RESOURCE, "tdev0"), ("vf-1", RESOURCE, "tdev1")],
    ));
    node.wait_for_readyz("claims=2 slices=1", Duration::from_secs(30));

    attached_then_released(
        &node,
        &web,
        &[("fast", "tdev1"), ("slow", "tdev0")],
        &["tdev0", "tdev1"],
    );
}

/// The `status.devices[]` entry of `device` in claim `tenant/<claim>`, as the API server has it.
fn device_status(node: &Node, claim: &str, device: &str) -> Option<Value> {
    let claim = node.cluster().object("ResourceClaim", "tenant", claim)?;
    claim["status"]["devices"]
        .as_array()?
        .iter()
        .find(|d| d["device"] == device)
        .cloned()
}

#[test]
fn kep_4817_network_data_is_written_to_the_claim_and_released_on_del() {
    let Some(node) = dra_node() else { return };
    let web = Pod::new("tenant", "web");
    node.add_device("tdev0");
    node.apply_nad_annotated(
        "tenant",
        "vf",
        pool(RESOURCE),
        &netdev("vf", "198.18.54.0/24"),
    );
    apply_pod_with_claims(&node, &web, networks("vf"), &[("nics", "web-nics")]);
    let mut allocated = claim(&node, &web, "web-nics", "pool-a", &[("vf", &["vf-0"])]);
    // The DRA driver's own entry for the device, which Plexus must leave as it is.
    let driver_data = json!({"vfIndex": 3, "pf": "ens1f0"});
    allocated["status"]["devices"] = json!([{
        "driver": DRIVER, "pool": "pool-a", "device": "vf-0", "data": driver_data
    }]);
    node.cluster().apply_with_status(allocated);
    node.cluster()
        .apply(slice(&node, "pool-a", &[("vf-0", RESOURCE, "tdev0")]));
    node.wait_for_readyz("claims=1 slices=1", Duration::from_secs(30));

    node.add(&web).result();
    let net1 = web.link("net1").expect("net1");
    let entry = eventually("networkData on the claim", || {
        device_status(&node, "web-nics", "vf-0").filter(|e| e.get("networkData").is_some())
    });
    assert_eq!(
        entry["networkData"],
        json!({"interfaceName": "net1", "ips": [net1.addresses[0]], "hardwareAddress": net1.mac})
    );
    assert!(net1.addresses[0].contains('/'), "CIDR form");
    let ready = &entry["conditions"][0];
    assert_eq!(
        (&ready["type"], &ready["status"]),
        (&json!("Ready"), &json!("True"))
    );
    assert_eq!(
        entry["data"], driver_data,
        "the driver's fields are untouched"
    );
    assert_eq!(entry["pool"], "pool-a");
    let managers = eventually("managed fields", || {
        let claim = node
            .cluster()
            .object("ResourceClaim", "tenant", "web-nics")?;
        let fields = claim["metadata"]["managedFields"].as_array()?.clone();
        Some(fields)
    });
    assert!(
        managers.iter().any(|m| m["manager"] == "plexus"),
        "{managers:?}"
    );
    assert!(bare(&net1.addresses[0]).starts_with("198.18.54."));

    assert!(node.del(&web).success());
    let released = eventually("networkData released", || {
        device_status(&node, "web-nics", "vf-0").filter(|e| e.get("networkData").is_none())
    });
    assert_eq!(released["data"], driver_data);
    assert!(released.get("conditions").is_none(), "{released}");
    assert_released(&node, &["tdev0"]);
}
