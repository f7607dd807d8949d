//! Both annotation forms, namespaces and interface naming, as Multus users write them.

use plexus_integration::{Node, Pod};
use serde_json::json;

use crate::fixtures::{bridge, nad, pod};

/// NADs `tenant/net-a` and `shared/net-b`, and the pods with their annotations.
fn node_with_networks(pods: &[(&Pod, &str)]) -> Node {
    node_with_networks_and(pods, &[])
}

fn node_with_networks_and(pods: &[(&Pod, &str)], config_lines: &[&str]) -> Node {
    let mut builder = Node::builder()
        .manifest(
            "a.yaml",
            &nad("tenant", "net-a", &bridge("net-a", "br-a", "198.18.8.0/24")),
        )
        .manifest(
            "b.yaml",
            &nad("shared", "net-b", &bridge("net-b", "br-b", "198.18.9.0/24")),
        );
    for (i, (p, networks)) in pods.iter().enumerate() {
        builder = builder.manifest(&format!("pod{i}.yaml"), &pod(p, networks));
    }
    for line in config_lines {
        builder = builder.config_line(line);
    }
    builder.start()
}

#[test]
fn comma_form_with_a_cross_namespace_reference_and_an_interface_name() {
    let web = Pod::new("tenant", "web");
    let node = node_with_networks(&[(&web, " net-a , shared/net-b@storage0 ")]);
    node.add(&web).result();
    assert_eq!(web.link_names(), ["eth0", "net1", "storage0"]);
    assert!(web.link("storage0").unwrap().addresses[0].starts_with("198.18.9."));
    let status = node.network_status(&web);
    assert_eq!(status[2]["name"], "shared/net-b");
    assert!(node.del(&web).success());
}

#[test]
fn json_form_names_interfaces_and_the_same_nad_twice_gives_two_attachments() {
    let web = Pod::new("tenant", "web");
    let annotation = json!([
        {"name": "net-a", "interface": "first"},
        {"name": "net-a"},
        {"name": "net-b", "namespace": "shared"}
    ]);
    let node = node_with_networks(&[(&web, &annotation.to_string())]);
    node.add(&web).result();
    // Positions count even when named: [a@first, a, b] -> first, net2, net3 (Multus's scheme).
    assert_eq!(web.link_names(), ["eth0", "first", "net2", "net3"]);
    let status = node.network_status(&web);
    assert_eq!(status.as_array().unwrap().len(), 4);
    assert_eq!(
        status
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["default"] == true)
            .count(),
        1
    );
    assert!(node.del(&web).success());
    assert!(node.ipam_allocations().is_empty());
}

#[test]
fn a_pod_without_the_annotation_gets_only_the_cluster_network() {
    let web = Pod::new("tenant", "web");
    let node = node_with_networks(&[]);
    node.add(&web).result();
    assert_eq!(web.link_names(), ["eth0"]);
    assert!(node.del(&web).success());
}

#[test]
fn default_networks_from_the_config_come_before_the_selections() {
    let web = Pod::new("tenant", "web");
    let node = node_with_networks_and(
        &[(&web, "net-a")],
        &["defaultNetworks: [net-b]", "systemNamespace: shared"],
    );
    node.add(&web).result();
    assert!(web.link("net1").unwrap().addresses[0].starts_with("198.18.9."));
    assert!(web.link("net2").unwrap().addresses[0].starts_with("198.18.8."));
    assert!(node.del(&web).success());
}

#[test]
fn a_new_nad_manifest_is_used_by_the_next_add_without_a_restart() {
    let web = Pod::new("tenant", "web");
    let node = Node::builder()
        .manifest("p.yaml", &pod(&web, "late"))
        .start();
    let error = node.add(&web).error();
    assert!(
        error["msg"].as_str().unwrap().contains("tenant/late"),
        "{error}"
    );
    node.write_manifest(
        "late.yaml",
        &nad(
            "tenant",
            "late",
            &bridge("late", "br-late", "198.18.10.0/24"),
        ),
    );
    node.wait_for_nads(1);
    node.add(&web).result();
    assert!(web.link("net1").is_some());
    assert!(node.del(&web).success());
}
