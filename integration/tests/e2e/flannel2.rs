//! A second flannel overlay next to the cluster's flannel, across nodes (issue 5): every node
//! runs plexusd with flannel (VXLAN VNI 1, bridge cni0) as its cluster network and
//! examples/flannel2's NAD (VNI 2, bridge cni1, its own subnet file and dataDir), and pods get
//! eth0 on the first overlay and net1 on the second. The world (underlay, vxlan devices,
//! routes, neighbours, FDB entries, subnet files) is `plexus_integration::overlay`; its address
//! plan is written down there.

use plexus_integration::Pod;
use plexus_integration::overlay::{FLANNEL2, Overlay, PRIMARY, World, example_nad_ref};
use serde_json::{Value, json};

use crate::fixtures::{bare, pod};

/// `pod`'s address on `ifname`, bare.
fn address(pod: &Pod, ifname: &str) -> String {
    let link = pod
        .link(ifname)
        .unwrap_or_else(|| panic!("{} has no {ifname}: {:?}", pod.name, pod.link_names()));
    bare(&link.addresses[0]).to_owned()
}

/// A world of `nodes` nodes with pods placed as `placement` says (node index per pod), each
/// selecting the example NAD; every pod is added on its node.
fn world_with_pods(nodes: usize, placement: &[usize]) -> (World, Vec<Pod>) {
    let pods: Vec<Pod> = (0..placement.len())
        .map(|i| Pod::new("tenant", &format!("web-{i}")))
        .collect();
    let mut builder = World::builder(nodes);
    for (p, &node) in pods.iter().zip(placement) {
        let file = format!("{}.yaml", p.name);
        builder = builder.manifest(node, &file, &pod(p, &example_nad_ref()));
    }
    let world = builder.start();
    for (p, &node) in pods.iter().zip(placement) {
        world.node(node).add(p).result();
    }
    (world, pods)
}

/// Every pod pings every other on eth0 and on net1.
fn assert_everyone_reaches_everyone(pods: &[Pod]) {
    for a in pods {
        for b in pods.iter().filter(|b| b.name != a.name) {
            for ifname in ["eth0", "net1"] {
                let target = address(b, ifname);
                assert!(
                    a.ping(ifname, &target),
                    "{} cannot reach {} ({target}) over {ifname}",
                    a.name,
                    b.name
                );
            }
        }
    }
}

/// `count` pings from `from` out of `ifname` to `to`, 10 ms apart; whether all were answered.
fn burst(from: &Pod, ifname: &str, to: &str, count: u32) -> bool {
    from.netns.exec_ok(&[
        "ping",
        "-q",
        "-c",
        &count.to_string(),
        "-i",
        "0.01",
        "-W",
        "2",
        "-I",
        ifname,
        to,
    ])
}

/// How much each node's vxlan devices sent and received while `action` ran:
/// `[(node, overlay, tx, rx)]`.
fn traffic(world: &World, nodes: usize, action: impl FnOnce()) -> Vec<(usize, u32, u64, u64)> {
    let read = || {
        (0..nodes)
            .flat_map(|n| [PRIMARY, FLANNEL2].map(|o| (n, o.vni, world.counters(n, &o))))
            .collect::<Vec<_>>()
    };
    let before = read();
    action();
    let after = read();
    before
        .iter()
        .zip(&after)
        .map(|((n, vni, b), (_, _, a))| {
            (
                *n,
                *vni,
                a.tx_packets - b.tx_packets,
                a.rx_packets - b.rx_packets,
            )
        })
        .collect()
}

fn assert_nothing_left(world: &World, pods: &[Pod]) {
    for pod in pods {
        assert!(
            pod.link_names().is_empty(),
            "{}: {:?}",
            pod.name,
            pod.link_names()
        );
    }
    for (i, node) in world.nodes.iter().enumerate() {
        assert!(node.veths().is_empty(), "node {i}: {:?}", node.veths());
        assert!(
            node.ipam_allocations().is_empty(),
            "node {i}: {:?}",
            node.ipam_allocations()
        );
        assert!(node.records().is_empty(), "node {i}: {:?}", node.records());
        for overlay in [PRIMARY, FLANNEL2] {
            assert!(
                world.data_dir_files(i, &overlay).is_empty(),
                "node {i}, {}: {:?}",
                overlay.data_dir,
                world.data_dir_files(i, &overlay)
            );
            assert!(world.bridge_members(i, overlay.bridge).is_empty());
        }
    }
}

#[test]
fn pods_on_two_nodes_reach_each_other_over_both_overlays_in_both_directions() {
    let (_world, pods) = world_with_pods(2, &[0, 1]);

    for (node, pod) in pods.iter().enumerate() {
        assert_eq!(pod.link_names(), ["eth0", "net1"]);
        let eth0 = address(pod, "eth0");
        let net1 = address(pod, "net1");
        assert!(PRIMARY.in_subnet(node, &eth0), "{eth0} on node {node}");
        assert!(FLANNEL2.in_subnet(node, &net1), "{net1} on node {node}");
    }
    assert_everyone_reaches_everyone(&pods);
}

#[test]
fn pods_on_three_nodes_reach_each_other_over_both_overlays_in_both_directions() {
    let (_world, pods) = world_with_pods(3, &[0, 1, 2]);

    for (node, pod) in pods.iter().enumerate() {
        assert!(PRIMARY.in_subnet(node, &address(pod, "eth0")));
        assert!(FLANNEL2.in_subnet(node, &address(pod, "net1")));
    }
    assert_everyone_reaches_everyone(&pods);
}

#[test]
fn net1_traffic_crosses_nodes_on_vni_2_and_eth0_traffic_on_vni_1() {
    let (world, pods) = world_with_pods(2, &[0, 1]);
    let (a, b) = (&pods[0], &pods[1]);
    // Neighbours resolved first, so the bursts below are all the traffic there is.
    assert!(a.ping("net1", &address(b, "net1")) && a.ping("eth0", &address(b, "eth0")));

    let on_net1 = traffic(&world, 2, || {
        assert!(burst(a, "net1", &address(b, "net1"), 20));
    });
    for (node, vni, tx, rx) in on_net1 {
        if vni == FLANNEL2.vni {
            // Echo requests out of node 0 and into node 1; the replies the other way.
            assert!(
                tx >= 20 && rx >= 20,
                "flannel.2 on node {node}: tx {tx} rx {rx}"
            );
        } else {
            assert_eq!(
                (tx, rx),
                (0, 0),
                "flannel.1 on node {node} carried net1 traffic"
            );
        }
    }

    let on_eth0 = traffic(&world, 2, || {
        assert!(burst(a, "eth0", &address(b, "eth0"), 20));
    });
    for (node, vni, tx, rx) in on_eth0 {
        if vni == PRIMARY.vni {
            assert!(
                tx >= 20 && rx >= 20,
                "flannel.1 on node {node}: tx {tx} rx {rx}"
            );
        } else {
            assert_eq!(
                (tx, rx),
                (0, 0),
                "flannel.2 on node {node} carried eth0 traffic"
            );
        }
    }
}

#[test]
fn the_nads_bridge_is_not_the_cluster_networks_and_each_holds_its_own_pods() {
    let placement = [0, 0, 1];
    let (world, pods) = world_with_pods(2, &placement);
    assert_ne!(FLANNEL2.bridge, PRIMARY.bridge);

    for node in 0..2 {
        let here: Vec<&Pod> = pods
            .iter()
            .zip(placement)
            .filter(|(_, n)| *n == node)
            .map(|(p, _)| p)
            .collect();
        let mut eth0_veths: Vec<String> = here
            .iter()
            .map(|p| world.host_veth(node, p, "eth0"))
            .collect();
        let mut net1_veths: Vec<String> = here
            .iter()
            .map(|p| world.host_veth(node, p, "net1"))
            .collect();
        eth0_veths.sort();
        net1_veths.sort();
        assert_eq!(world.bridge_members(node, PRIMARY.bridge), eth0_veths);
        assert_eq!(world.bridge_members(node, FLANNEL2.bridge), net1_veths);
        // Each bridge is its network's gateway on this node.
        for overlay in [PRIMARY, FLANNEL2] {
            let addresses =
                world
                    .node(node)
                    .netns
                    .ip(&["-br", "addr", "show", "dev", overlay.bridge]);
            let gateway = format!("{}/24", overlay.gateway(node));
            assert!(addresses.contains(&gateway), "{addresses}");
        }
    }
}

#[test]
fn each_network_keeps_the_delegate_config_it_ran_in_its_own_data_dir() {
    // On the second node, so the subnets are not the first ones by accident.
    let (world, pods) = world_with_pods(2, &[1]);
    let web = &pods[0];
    let saved = |overlay: &Overlay| -> Value {
        assert_eq!(
            world.data_dir_files(1, overlay),
            [web.container_id.as_str()]
        );
        let path = world.data_dir(1, overlay).join(&web.container_id);
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let ipam = world.node(1).ipam_dir().display().to_string();

    let flannel2 = saved(&FLANNEL2);
    assert_eq!(
        flannel2,
        json!({
            "cniVersion": "0.3.1", "name": "flannel2", "type": "bridge", "bridge": "cni1",
            "hairpinMode": true, "isDefaultGateway": false, "isGateway": true,
            "ipMasq": false, "mtu": 1450,
            "ipam": {
                "type": "host-local", "dataDir": ipam,
                "ranges": [[{"subnet": "198.18.66.0/24"}]],
                "routes": [{"dst": "198.18.64.0/18"}]
            }
        })
    );
    let primary = saved(&PRIMARY);
    assert_eq!(primary["name"], "cbr0");
    assert_eq!(primary["type"], "bridge");
    assert!(
        primary.get("bridge").is_none(),
        "the bridge plugin's default, cni0"
    );
    assert_eq!(primary["isDefaultGateway"], true);
    assert_eq!(
        primary["ipam"]["ranges"],
        json!([[{"subnet": "198.19.2.0/24"}]])
    );
    assert_eq!(primary["ipam"]["routes"], json!([{"dst": "198.19.0.0/16"}]));

    // What the pod got from those: the default route on eth0, the second overlay on net1.
    let routes = web.routes();
    let route = |dst: &str| routes.iter().find(|r| r["dst"] == dst).cloned();
    let default = route("default").expect("a default route");
    assert_eq!(
        (default["gateway"].as_str(), default["dev"].as_str()),
        (Some("198.19.2.1"), Some("eth0"))
    );
    let second = route("198.18.64.0/18").expect("a route to the second overlay");
    assert_eq!(
        (second["gateway"].as_str(), second["dev"].as_str()),
        (Some("198.18.66.1"), Some("net1"))
    );
    let status = world.node(1).network_status(web);
    assert_eq!(status[0]["name"], "cbr0");
    assert_eq!(status[0]["interface"], "eth0");
    assert_eq!(status[1]["name"], "kube-system/flannel2");
    assert_eq!(status[1]["interface"], "net1");
    assert_eq!(status[1]["ips"], json!([address(web, "net1")]));
    assert_eq!(status[1]["default"], false);
}

#[test]
fn del_on_every_node_leaves_nothing_behind() {
    let placement = [0, 1, 1, 2];
    let (world, pods) = world_with_pods(3, &placement);
    assert_everyone_reaches_everyone(&pods);

    for (p, &node) in pods.iter().zip(&placement) {
        assert!(world.node(node).del(p).success());
    }

    assert_nothing_left(&world, &pods);
    // DEL is idempotent: again, with nothing recorded, it still succeeds.
    for (p, &node) in pods.iter().zip(&placement) {
        assert!(world.node(node).del(p).success());
    }
}

#[test]
fn del_after_plexusd_restarted_still_cleans_up_everything() {
    let placement = [0, 1];
    let (mut world, pods) = world_with_pods(2, &placement);
    assert_everyone_reaches_everyone(&pods);

    for node in world.nodes.iter_mut() {
        node.restart_plexusd();
    }
    for (p, &node) in pods.iter().zip(&placement) {
        assert!(world.node(node).del(p).success());
    }

    assert_nothing_left(&world, &pods);
}

/// A pod whose manifest selects no network: it gets the cluster network only.
fn world_with_a_flannel2_pod_and_a_plain_one() -> (World, Pod, Pod) {
    let web = Pod::new("tenant", "web");
    let plain = Pod::new("tenant", "plain");
    let world = World::builder(2)
        .manifest(1, "web.yaml", &pod(&web, &example_nad_ref()))
        .start();
    world.node(1).add(&web).result();
    world.node(0).add(&plain).result();
    (world, web, plain)
}

#[test]
fn a_pod_only_on_the_primary_network_has_no_interface_address_or_route_on_flannel2() {
    let (world, web, plain) = world_with_a_flannel2_pod_and_a_plain_one();

    assert_eq!(plain.link_names(), ["eth0"]);
    let addresses: Vec<String> = plain
        .links()
        .into_iter()
        .flat_map(|l| l.addresses)
        .collect();
    assert!(
        addresses.iter().all(|a| !FLANNEL2.contains(a)),
        "{addresses:?}"
    );
    let routes = plain.routes();
    assert!(
        routes
            .iter()
            .all(|r| !FLANNEL2.contains(r["dst"].as_str().unwrap_or_default())),
        "{routes:?}"
    );
    // A flannel2 address is, for this pod, just somewhere beyond its default gateway on eth0.
    let target = address(&web, "net1");
    let route: Value =
        serde_json::from_str(&plain.netns.ip(&["-j", "route", "get", &target])).unwrap();
    assert_eq!(route[0]["dev"], "eth0");
    assert_eq!(route[0]["gateway"], PRIMARY.gateway(0).to_string());
    // Its node has no flannel2 bridge at all: no pod there asked for the network.
    assert!(
        !world
            .node(0)
            .netns
            .links()
            .contains(&FLANNEL2.bridge.to_owned())
    );
}

/// What the issue expected ("a pod only on the primary network cannot reach a flannel2
/// address") is not what flannel does, and this test says so: a node routes between its
/// overlays like between any of its networks (a real flannel node also masquerades the traffic
/// with flanneld's `--ip-masq` rules). Keeping the networks apart is a policy matter
/// (NetworkPolicy, or FORWARD rules on the nodes), as examples/flannel2/README.md explains.
#[test]
fn nodes_route_between_the_overlays_so_flannel2_is_not_an_isolation_boundary() {
    let (world, web, plain) = world_with_a_flannel2_pod_and_a_plain_one();
    let target = address(&web, "net1");
    assert!(plain.ping("eth0", &target));

    let counted = traffic(&world, 2, || assert!(burst(&plain, "eth0", &target, 10)));
    let on = |node: usize, vni: u32| {
        counted
            .iter()
            .find(|(n, v, _, _)| *n == node && *v == vni)
            .map(|(_, _, tx, _)| *tx)
            .unwrap()
    };
    // The requests leave the plain pod's node on VNI 2 (its node routes them there), the
    // replies leave the flannel2 pod's node on VNI 1 (the reply goes to an eth0 address).
    assert!(on(0, FLANNEL2.vni) >= 10, "{counted:?}");
    assert!(on(1, PRIMARY.vni) >= 10, "{counted:?}");
}

/// examples/flannel2/flanneld/*.yaml as JSON.
fn flanneld_manifest(file: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/flannel2/flanneld")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_example_second_flanneld_writes_the_subnet_file_the_nad_reads_on_its_own_vni() {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::ConfigMap;

    let config_map: ConfigMap =
        serde_json::from_value(flanneld_manifest("10-configmap.yaml")).unwrap();
    let daemon_set: DaemonSet =
        serde_json::from_value(flanneld_manifest("20-daemonset.yaml")).unwrap();
    let data = config_map.data.unwrap();
    let net_conf: Value = serde_json::from_str(&data["net-conf.json"]).unwrap();
    assert_eq!(net_conf["Network"], "10.245.0.0/16");
    assert_eq!(net_conf["Backend"]["Type"], "vxlan");
    assert_eq!(net_conf["Backend"]["VNI"], FLANNEL2.vni);
    assert_eq!(
        net_conf["Backend"]["Port"],
        plexus_integration::overlay::VXLAN_PORT
    );
    assert_ne!(net_conf["EnableNFTables"], true);
    assert_ne!(
        data["etcd-prefix"], "/coreos.com/network",
        "flanneld's default prefix"
    );

    let pod = daemon_set.spec.template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    let flanneld = &pod.containers[0];
    let args = flanneld.args.clone().unwrap();
    let nad: Value = serde_json::from_str(
        plexus_integration::overlay::example_nad()["spec"]["config"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let subnet_file = nad["plugins"][0]["subnetFile"].as_str().unwrap();
    assert!(
        args.contains(&format!("--subnet-file={subnet_file}")),
        "{args:?}"
    );
    assert!(
        args.contains(&"--etcd-prefix=$(ETCD_PREFIX)".to_owned()),
        "{args:?}"
    );
    assert!(
        !args.iter().any(|a| a.starts_with("--kube-subnet-mgr")),
        "{args:?}"
    );
    // The world writes the subnet file this flanneld would: FLANNEL_IPMASQ as its flags say.
    assert_eq!(args.iter().any(|a| a == "--ip-masq"), FLANNEL2.ipmasq);
    let run = flanneld
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/run/flannel")
        .expect("/run/flannel is mounted");
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == run.name)
        .unwrap();
    assert_eq!(volume.host_path.as_ref().unwrap().path, "/run/flannel");
    // The init container puts net-conf.json where etcd-mode flanneld reads it.
    let init = &pod.init_containers.unwrap()[0];
    assert!(init.args.clone().unwrap()[0].contains("put \"$ETCD_PREFIX/config\""));
}
