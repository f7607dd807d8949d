//! The `kube` source against the test API server: NADs and pods from the API, network-status
//! and events written back, and what happens when the API server misbehaves.

use std::time::Duration;

use plexus_integration::{Node, Pod};
use serde_json::{Value, json};

use crate::fixtures::{bare, bridge, events_for, eventually};

fn networks(value: &str) -> Value {
    json!({"k8s.v1.cni.cncf.io/networks": value})
}

fn network_status_annotation(node: &Node, pod: &Pod) -> Option<Value> {
    let object = node.cluster().object("Pod", &pod.namespace, &pod.name)?;
    let text = object["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"]
        .as_str()?
        .to_owned();
    serde_json::from_str(&text).ok()
}

/// How many NADs plexusd's cache holds: every namespace's, so on a real cluster its own NADs
/// count too, and tests wait for counts relative to this.
fn cached_nads(node: &Node) -> usize {
    let body = node
        .get("/readyz")
        .map(|(_, body)| body)
        .unwrap_or_default();
    body.split_whitespace()
        .find_map(|word| word.strip_prefix("nads=")?.parse().ok())
        .unwrap_or(0)
}

/// Waits until plexusd's caches hold `nads` NADs and `pods` of this node's pods.
fn wait_for_cache(node: &Node, nads: usize, pods: usize) {
    node.wait_for_counts(nads, pods, SYNC);
}

fn kube_node() -> Node {
    Node::builder().kube().start()
}

/// How long plexusd's caches may take to follow the API server. Generous, because after a
/// token rotation kube-rs re-reads the token file only once a minute.
const SYNC: Duration = Duration::from_secs(90);

/// Publishes NAD `tenant/<name>` (a bridge `br-<name>` on `subnet`) and `pod` selecting it,
/// then waits until plexusd's caches hold both.
fn publish_pod_on(node: &Node, pod: &Pod, name: &str, subnet: &str) {
    let nads = cached_nads(node);
    node.apply_nad("tenant", name, &bridge(name, &format!("br-{name}"), subnet));
    node.apply_pod(pod, networks(name));
    wait_for_cache(node, nads + 1, 1);
}

/// ADD gives the pod its net1, and DEL takes everything away again.
fn attach_and_detach(node: &Node, pod: &Pod) {
    node.add(pod).result();
    assert!(pod.link("net1").is_some(), "{:?}", pod.link_names());
    assert!(node.del(pod).success());
    assert!(pod.link_names().is_empty());
}

#[test]
fn a_nad_created_through_the_api_is_used_by_the_next_add_and_status_is_written_back() {
    let web = Pod::new("tenant", "web");
    let node = kube_node();
    publish_pod_on(&node, &web, "east", "198.18.20.0/24");

    node.add(&web).result();
    let eth0 = web.link("eth0").unwrap();
    let net1 = web.link("net1").unwrap();
    assert!(net1.addresses[0].starts_with("198.18.20."));

    let status = eventually("network-status on the pod", || {
        network_status_annotation(&node, &web)
    });
    assert_eq!(
        status,
        json!([
            {"name": "cluster", "interface": "eth0", "ips": [bare(&eth0.addresses[0])], "mac": eth0.mac, "default": true},
            {"name": "tenant/east", "interface": "net1", "ips": [bare(&net1.addresses[0])], "mac": net1.mac, "default": false}
        ])
    );
    let events = eventually("one event per interface", || {
        let events = events_for(&node, &web);
        (events.len() >= 2).then_some(events)
    });
    let notes: Vec<&str> = events.iter().filter_map(|e| e["note"].as_str()).collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("net1") && n.contains("tenant/east")),
        "{notes:?}"
    );
    assert!(
        events
            .iter()
            .all(|e| e["type"] == "Normal" && e["reason"] == "AddedInterface"),
        "{events:?}"
    );
    assert!(node.del(&web).success());
}

#[test]
fn an_updated_nad_is_used_and_a_deleted_one_does_not_stop_del() {
    let first = Pod::new("tenant", "first");
    let second = Pod::new("tenant", "second");
    let node = kube_node();
    let nads = cached_nads(&node);
    node.apply_nad(
        "tenant",
        "east",
        &bridge("east", "br-old", "198.18.23.0/24"),
    );
    node.apply_pod(&first, networks("east"));
    node.apply_pod(&second, networks("east"));
    wait_for_cache(&node, nads + 1, 2);
    node.add(&first).result();

    node.apply_nad(
        "tenant",
        "east",
        &bridge("east", "br-new", "198.18.24.0/24"),
    );
    eventually("the new config is used", || {
        let out = node.add(&second);
        if out.success()
            && second
                .link("net1")
                .is_some_and(|l| l.addresses[0].starts_with("198.18.24."))
        {
            return Some(());
        }
        node.del(&second);
        None
    });
    assert!(node.netns.links().contains(&"br-new".to_owned()));

    node.cluster()
        .delete("NetworkAttachmentDefinition", "tenant", "east");
    wait_for_cache(&node, nads, 2);
    assert!(node.del(&first).success());
    assert!(node.del(&second).success());
    assert!(first.link_names().is_empty() && second.link_names().is_empty());
    assert!(node.ipam_allocations().is_empty());
}

#[test]
fn namespace_isolation_refuses_other_namespaces_but_not_global_ones() {
    let web = Pod::new("tenant", "web");
    let node = Node::builder()
        .kube()
        .config_line("namespaceIsolation: true")
        .config_line("globalNamespaces: [shared]")
        .start();
    let nads = cached_nads(&node);
    node.apply_nad(
        "other",
        "private",
        &bridge("private", "br-private", "198.18.28.0/24"),
    );
    node.apply_nad(
        "shared",
        "common",
        &bridge("common", "br-common", "198.18.29.0/24"),
    );
    node.apply_pod(&web, networks("other/private"));
    wait_for_cache(&node, nads + 2, 1);

    let error = node.add(&web).error();
    let msg = error["msg"].as_str().unwrap();
    assert!(
        msg.contains("other/private") && msg.contains("namespace isolation"),
        "{msg}"
    );
    assert!(web.link_names().is_empty());
    let warning = eventually("a warning event", || {
        events_for(&node, &web)
            .into_iter()
            .find(|e| e["type"] == "Warning")
    });
    assert!(
        warning["note"].as_str().unwrap().contains("other/private"),
        "{warning}"
    );

    node.apply_pod(&web, networks("shared/common"));
    wait_for_cache(&node, nads + 2, 1);
    eventually("the updated annotation is used", || {
        node.add(&web).success().then_some(())
    });
    assert!(web.link("net1").is_some());
    assert!(node.del(&web).success());
}

#[test]
fn the_multus_default_network_annotation_replaces_the_cluster_network() {
    let web = Pod::new("tenant", "web");
    let node = kube_node();
    let nads = cached_nads(&node);
    node.apply_nad(
        "kube-system",
        "alt",
        &bridge("alt", "br-alt", "198.18.30.0/24"),
    );
    node.apply_pod(&web, json!({"v1.multus-cni.io/default-network": "alt"}));
    wait_for_cache(&node, nads + 1, 1);

    let result = node.add(&web).result();
    let eth0 = web.link("eth0").unwrap();
    assert!(eth0.addresses[0].starts_with("198.18.30."), "{eth0:?}");
    assert_eq!(result["ips"][0]["address"], eth0.addresses[0].as_str());
    let status = eventually("network-status", || network_status_annotation(&node, &web));
    assert_eq!(status[0]["name"], "kube-system/alt");
    assert_eq!(status[0]["default"], true);
    assert!(node.del(&web).success());
}

/// The real-cluster mode (`PLEXUS_TEST_KUBECONFIG`) end to end, with the test API server
/// standing in for the real one in a namespace of its own: objects go through kube-rs, and
/// plexusd reaches the server only through the forwarder in its node.
#[test]
fn the_real_cluster_mode_reaches_its_api_server_through_the_forwarder() {
    let host = plexus_integration::Netns::new("apihost");
    let api = plexus_integration::apiserver::ApiServer::start_in(&host.path());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(&dir.path().join("kubeconfig"));
    plexus_integration::apiserver::in_netns(&host.path(), || {
        let web = Pod::new("tenant", "web");
        let node = Node::builder().real_cluster(&kubeconfig).start();
        assert!(node.cluster().fixture().is_none());
        publish_pod_on(&node, &web, "east", "198.18.31.0/24");
        node.add(&web).result();
        assert!(web.link("net1").is_some());
        let status = eventually("network-status", || network_status_annotation(&node, &web));
        assert_eq!(status[1]["name"], "tenant/east");
        eventually("events", || {
            (!events_for(&node, &web).is_empty()).then_some(())
        });
        assert!(node.del(&web).success());
        drop(node);
        // What the test created is gone again.
        assert!(api.object("Pod", "tenant", "web").is_none());
        assert!(
            api.object("NetworkAttachmentDefinition", "tenant", "east")
                .is_none()
        );
    });
}

/// The real-cluster mode twice against one cluster that keeps what the first run left (the
/// test API server in a namespace of its own stands in for it): every test that runs there
/// passes the second time too, though the first run's events are still in the cluster.
#[test]
fn the_real_cluster_tests_pass_a_second_time_against_the_same_cluster() {
    let real_cluster_tests: [(&str, fn()); 4] = [
        (
            "a_nad_created_through_the_api_is_used_by_the_next_add_and_status_is_written_back",
            a_nad_created_through_the_api_is_used_by_the_next_add_and_status_is_written_back,
        ),
        (
            "an_updated_nad_is_used_and_a_deleted_one_does_not_stop_del",
            an_updated_nad_is_used_and_a_deleted_one_does_not_stop_del,
        ),
        (
            "namespace_isolation_refuses_other_namespaces_but_not_global_ones",
            namespace_isolation_refuses_other_namespaces_but_not_global_ones,
        ),
        (
            "the_multus_default_network_annotation_replaces_the_cluster_network",
            the_multus_default_network_annotation_replaces_the_cluster_network,
        ),
    ];
    let host = plexus_integration::Netns::new("apihost");
    let api = plexus_integration::apiserver::ApiServer::start_in(&host.path());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(&dir.path().join("kubeconfig"));
    plexus_integration::apiserver::in_netns(&host.path(), || {
        plexus_integration::cluster::with_real_cluster(&kubeconfig, || {
            for run in 1..=2 {
                for (name, test) in &real_cluster_tests {
                    eprintln!("run {run}: {name}");
                    test();
                }
            }
        })
    });
    assert!(
        !api.events().is_empty(),
        "the runs left events behind, as a real cluster keeps them"
    );
}

/// Tests that steer the test API server (pause it, count its requests, compact its history,
/// rotate its token). They cannot run against a real cluster: the `real-cluster` nextest profile
/// skips them (see .config/nextest.toml), and run there without it they fail, never pass.
mod steering {
    use super::*;

    #[test]
    fn a_warm_add_makes_no_read_of_the_api_server() {
        let web = Pod::new("tenant", "web");
        let node = kube_node();
        let api = node.fixture();
        publish_pod_on(&node, &web, "east", "198.18.21.0/24");
        api.reset_counters();

        node.add(&web).result();
        eventually("status written", || network_status_annotation(&node, &web));
        let counters = api.counters();
        assert_eq!(counters.reads, 0, "{:?}", api.requests());
        assert!(counters.writes >= 1, "the status patch is a write");
        assert!(node.del(&web).success());
    }

    #[test]
    fn a_pod_missing_from_the_cache_costs_exactly_one_get() {
        let web = Pod::new("tenant", "web");
        let node = kube_node();
        let api = node.fixture();
        node.apply_nad(
            "tenant",
            "east",
            &bridge("east", "br-east", "198.18.22.0/24"),
        );
        // Scheduled elsewhere, so the node's field-selected watch never brings it: as when kubelet
        // runs CNI before the watch event arrives.
        node.apply_pod_on(&web, networks("east"), "node-b");
        node.wait_for_readyz("nads=1 pods=0", Duration::from_secs(10));
        api.reset_counters();

        node.add(&web).result();
        assert!(web.link("net1").is_some());
        assert_eq!(api.counters_for("pods").reads, 1, "{:?}", api.requests());
        assert!(node.del(&web).success());
    }

    #[test]
    fn with_the_api_server_down_a_warm_add_and_del_still_work_and_readiness_says_why() {
        let web = Pod::new("tenant", "web");
        let node = kube_node();
        let api = node.fixture();
        publish_pod_on(&node, &web, "east", "198.18.25.0/24");

        api.pause();
        node.add(&web).result();
        assert!(web.link("net1").is_some());
        let readyz = node.wait_for_readyz("degraded", Duration::from_secs(30));
        assert!(readyz.contains("watch"), "{readyz}");
        assert_eq!(node.get("/readyz").unwrap().0, 503);
        // STATUS means "can serve ADD", which it still can.
        assert!(
            node.cni("STATUS", &web, &node.plexus_conf("1.1.0"))
                .success()
        );

        // The status write was retried in the background and lands once the API is back.
        api.resume();
        eventually("network-status after the API server came back", || {
            network_status_annotation(&node, &web)
        });
        node.wait_for_readyz("ready nads=1", Duration::from_secs(30));

        api.pause();
        assert!(node.del(&web).success(), "DEL never needs the API server");
        assert!(node.ipam_allocations().is_empty());
        api.resume();
    }

    #[test]
    fn status_changes_while_the_api_server_is_away_land_as_one_patch_of_the_latest() {
        let web = Pod::new("tenant", "web");
        let node = kube_node();
        let api = node.fixture();
        publish_pod_on(&node, &web, "east", "198.18.27.0/24");

        // Four ADDs without DEL: each re-attaches the pod, and host-local hands out the next
        // address, so each has a network-status of its own. None can be written yet.
        api.pause();
        let mut statuses = Vec::new();
        for _ in 0..4 {
            node.add(&web).result();
            statuses.push(node.network_status(&web));
        }
        statuses.dedup();
        assert_eq!(
            statuses.len(),
            4,
            "every ADD changed the status: {statuses:?}"
        );
        let latest = statuses.last().cloned();

        api.reset_counters();
        api.resume();
        eventually("the latest network-status on the pod", || {
            network_status_annotation(&node, &web).filter(|s| Some(s) == latest.as_ref())
        });
        let patches = || {
            api.requests()
                .into_iter()
                .filter(|r| r.starts_with("PATCH") && r.contains("/pods/web"))
                .count()
        };
        assert_eq!(
            patches(),
            1,
            "only the latest was written: {:?}",
            api.requests()
        );
        // With the API server up, the next change is written as before.
        node.add(&web).result();
        let newest = node.network_status(&web);
        eventually("the newest network-status on the pod", || {
            network_status_annotation(&node, &web).filter(|s| *s == newest)
        });
        assert_eq!(patches(), 2, "{:?}", api.requests());
        assert!(node.del(&web).success());
    }

    #[test]
    fn after_a_410_the_watch_relists_and_sees_new_nads() {
        let web = Pod::new("tenant", "web");
        let node = kube_node();
        let api = node.fixture();
        node.wait_for_readyz("nads=0 pods=0", Duration::from_secs(10));
        api.compact();
        publish_pod_on(&node, &web, "late", "198.18.26.0/24");
        attach_and_detach(&node, &web);
    }

    #[test]
    fn a_rotated_token_is_picked_up_from_the_token_file() {
        let web = Pod::new("tenant", "web");
        let node = kube_node();
        let api = node.fixture();
        node.wait_for_readyz("nads=0 pods=0", Duration::from_secs(10));
        node.rotate_token(api, "token-2");
        // Open watches outlive a rotation; a 410 makes plexusd list again, with whatever token
        // it holds. kube-rs re-reads a token file at most once a minute, so until then it fails.
        api.compact();
        node.wait_for_readyz("degraded", Duration::from_secs(10));
        publish_pod_on(&node, &web, "east", "198.18.27.0/24");
        attach_and_detach(&node, &web);
    }
}
