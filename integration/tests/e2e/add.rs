//! ADD with real plugins: what the pod gets, what the runtime is told, what is recorded.

use plexus_integration::{Node, Pod};
use serde_json::json;

use crate::fixtures::{bare, bridge, macvlan, nad, nad_without_config, pod};

#[test]
fn bridge_cluster_network_and_macvlan_secondary_appear_in_the_pod() {
    let web = Pod::new("tenant", "web");
    let node = Node::builder()
        .uplink()
        .manifest(
            "nads.yaml",
            &nad("tenant", "data", &macvlan("data", "198.18.1.0/24")),
        )
        .manifest("pods.yaml", &pod(&web, "data"))
        .start();

    let result = node.add(&web).result();

    assert_eq!(web.link_names(), ["eth0", "net1"]);
    let eth0 = web.link("eth0").unwrap();
    let net1 = web.link("net1").unwrap();
    assert!(eth0.addresses[0].starts_with("198.18.0."), "{eth0:?}");
    assert!(net1.addresses[0].starts_with("198.18.1."), "{net1:?}");
    // The runtime gets every interface but only the cluster network's addresses.
    assert_eq!(result["cniVersion"], "1.1.0");
    let ips: Vec<&str> = result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| ip["address"].as_str().unwrap())
        .collect();
    assert_eq!(ips, [eth0.addresses[0].as_str()]);
    let interfaces: Vec<&str> = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(
        interfaces.contains(&"eth0") && interfaces.contains(&"net1"),
        "{interfaces:?}"
    );
    // The cluster IP's interface index points at eth0 in the merged list.
    let index = result["ips"][0]["interface"].as_u64().unwrap() as usize;
    assert_eq!(result["interfaces"][index]["name"], "eth0");
    assert_eq!(node.ipam_allocations().len(), 2);
    assert_eq!(node.records(), [format!("{}.json", web.container_id)]);

    let status = node.network_status(&web);
    assert_eq!(
        status,
        json!([
            {"name": "cluster", "interface": "eth0", "ips": [bare(&eth0.addresses[0])], "mac": eth0.mac, "default": true},
            {"name": "tenant/data", "interface": "net1", "ips": [bare(&net1.addresses[0])], "mac": net1.mac, "default": false}
        ])
    );

    assert!(node.del(&web).success());
    assert!(web.link_names().is_empty());
    assert!(node.ipam_allocations().is_empty());
    assert!(node.records().is_empty());
    assert!(node.veths().is_empty(), "{:?}", node.veths());
}

#[test]
fn two_pods_reach_each_other_over_a_bridge_secondary() {
    let a = Pod::new("tenant", "a");
    let b = Pod::new("tenant", "b");
    let node = Node::builder()
        .manifest(
            "nads.yaml",
            &nad(
                "tenant",
                "east",
                &bridge("east", "br-east", "198.18.2.0/24"),
            ),
        )
        .manifest("a.yaml", &pod(&a, "east"))
        .manifest("b.yaml", &pod(&b, "east"))
        .start();
    node.add(&a).result();
    node.add(&b).result();

    let b_net1 = b.link("net1").unwrap().addresses[0].clone();
    assert!(a.ping("net1", bare(&b_net1)), "a cannot reach b over net1");
    assert!(node.netns.links().contains(&"br-east".to_owned()));

    assert!(node.del(&a).success());
    assert!(node.del(&b).success());
    assert!(node.ipam_allocations().is_empty());
}

#[test]
fn ptp_secondary_gets_its_address() {
    let web = Pod::new("tenant", "web");
    let ptp = json!({
        "cniVersion": "1.0.0", "name": "p2p", "type": "ptp",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.3.0/24"}]], "dataDir": "@IPAM@"}
    });
    let node = Node::builder()
        .manifest("n.yaml", &nad("tenant", "p2p", &ptp))
        .manifest("p.yaml", &pod(&web, "p2p"))
        .start();
    node.add(&web).result();
    assert!(web.link("net1").unwrap().addresses[0].starts_with("198.18.3."));
    assert!(node.del(&web).success());
    assert!(node.veths().is_empty());
}

#[test]
fn static_ips_and_mac_from_the_annotation_reach_the_pod() {
    let web = Pod::new("tenant", "web");
    // macvlan + static IPAM takes `ips`; tuning after it takes `mac`.
    let chain = json!({
        "cniVersion": "1.0.0", "name": "fixed",
        "plugins": [
            {"type": "macvlan", "master": "uplink0", "mode": "bridge", "capabilities": {"ips": true},
             "ipam": {"type": "static"}},
            {"type": "tuning", "capabilities": {"mac": true}, "sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1"}}
        ]
    });
    let annotation = json!([{"name": "fixed", "ips": ["198.18.4.10/24"], "mac": "c2:11:22:33:44:55", "interface": "fixed0"}]);
    let node = Node::builder()
        .uplink()
        .manifest("n.yaml", &nad("tenant", "fixed", &chain))
        .manifest("p.yaml", &pod(&web, &annotation.to_string()))
        .start();
    node.add(&web).result();
    let fixed = web.link("fixed0").expect("fixed0 in the pod");
    assert_eq!(fixed.addresses, ["198.18.4.10/24"]);
    assert_eq!(fixed.mac, "c2:11:22:33:44:55");
    let status = node.network_status(&web);
    assert_eq!(status[1]["ips"], json!(["198.18.4.10"]));
    assert_eq!(status[1]["mac"], "c2:11:22:33:44:55");
    assert!(node.del(&web).success());
}

#[test]
fn a_0_3_1_delegate_result_is_converted_to_the_runtimes_version() {
    let web = Pod::new("tenant", "web");
    let mut old = bridge("old", "br-old", "198.18.5.0/24");
    old["cniVersion"] = json!("0.3.1");
    let node = Node::builder()
        .manifest("n.yaml", &nad("tenant", "old", &old))
        .manifest("p.yaml", &pod(&web, "old"))
        .start();
    let result = node.add(&web).result();
    assert_eq!(result["cniVersion"], "1.1.0");
    // 1.x results carry no `version` on ips; the record keeps the delegate's own 0.3.1 form.
    assert!(
        result["ips"]
            .as_array()
            .unwrap()
            .iter()
            .all(|ip| ip.get("version").is_none())
    );
    // The results are recorded just after the reply; the read-back waits for that.
    node.network_status(&web);
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            node.records_dir()
                .join(format!("{}.json", web.container_id)),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(record["attachments"][1]["result"]["cniVersion"], "0.3.1");
    assert_eq!(record["attachments"][1]["result"]["ips"][0]["version"], "4");
    assert!(node.del(&web).success());
}

#[test]
fn the_runtime_gets_its_own_older_version_back() {
    let web = Pod::new("tenant", "web");
    let node = Node::builder().start();
    let result = node.cni("ADD", &web, &node.plexus_conf("0.4.0")).result();
    assert_eq!(result["cniVersion"], "0.4.0");
    assert_eq!(result["ips"][0]["version"], "4");
    assert!(node.cni("DEL", &web, &node.plexus_conf("0.4.0")).success());
}

#[test]
fn a_nad_with_empty_config_uses_the_conf_file_with_that_json_name() {
    let web = Pod::new("tenant", "web");
    let node = Node::builder()
        .conf_file(
            "50-any-file-name.conf",
            &bridge("storage", "br-storage", "198.18.6.0/24").to_string(),
        )
        .manifest("n.yaml", &nad_without_config("tenant", "storage"))
        .manifest("p.yaml", &pod(&web, "storage"))
        .start();
    node.add(&web).result();
    assert!(web.link("net1").unwrap().addresses[0].starts_with("198.18.6."));
    assert!(node.netns.links().contains(&"br-storage".to_owned()));
    assert!(node.del(&web).success());
}

#[test]
fn default_route_moves_to_the_selected_network() {
    let web = Pod::new("tenant", "web");
    let mut east = bridge("east", "br-east", "198.18.7.0/24");
    east["isGateway"] = json!(true);
    let annotation = json!([{"name": "east", "default-route": ["198.18.7.1"]}]);
    let node = Node::builder()
        .cluster(json!({
            "cniVersion": "1.0.0", "name": "cluster",
            "plugins": [{"type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.0.0/24", "gateway": "198.18.0.1"}]], "dataDir": "@IPAM@"}}]
        }))
        .manifest("n.yaml", &nad("tenant", "east", &east))
        .manifest("p.yaml", &pod(&web, &annotation.to_string()))
        .start();
    let result = node.add(&web).result();
    let defaults: Vec<_> = web
        .routes()
        .into_iter()
        .filter(|r| r["dst"] == "default")
        .collect();
    assert_eq!(defaults.len(), 1, "{defaults:?}");
    assert_eq!(defaults[0]["gateway"], "198.18.7.1");
    assert_eq!(defaults[0]["dev"], "net1");
    let routes = result["routes"].as_array().cloned().unwrap_or_default();
    assert!(
        routes.iter().all(|r| r["dst"] != "0.0.0.0/0"),
        "cluster default route still reported: {routes:?}"
    );
    let status = node.network_status(&web);
    assert_eq!(status[1]["default-route"], json!(["198.18.7.1"]));
    assert!(status[0].get("default-route").is_none());
    assert!(node.del(&web).success());
}

#[test]
fn pods_added_and_deleted_at_the_same_time_each_get_their_own_addresses() {
    let pods: Vec<Pod> = (0..6)
        .map(|i| Pod::new("tenant", &format!("p{i}")))
        .collect();
    let mut builder = Node::builder().manifest(
        "n.yaml",
        &nad(
            "tenant",
            "east",
            &bridge("east", "br-east", "198.18.18.0/24"),
        ),
    );
    for (i, p) in pods.iter().enumerate() {
        builder = builder.manifest(&format!("p{i}.yaml"), &pod(p, "east"));
    }
    let node = builder.start();

    let outputs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = pods.iter().map(|p| s.spawn(|| node.add(p))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for output in &outputs {
        output.result();
    }
    let mut addresses: Vec<String> = pods
        .iter()
        .flat_map(|p| p.links())
        .flat_map(|l| l.addresses)
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 12, "{addresses:?}");

    std::thread::scope(|s| {
        for p in &pods {
            s.spawn(|| assert!(node.del(p).success()));
        }
    });
    assert!(node.ipam_allocations().is_empty());
    assert!(node.records().is_empty());
    assert!(node.veths().is_empty());
}
