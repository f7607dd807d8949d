//! Plexus under a real container runtime: Debian's containerd, driven over the CRI as kubelet
//! drives it, reads Plexus's `00-plexus.conflist` (written by plexusd) and execs the `plexus`
//! shim for every pod sandbox. Assertions look inside the sandbox's own network namespace.

use std::time::Duration;

use plexus_integration::containerd::{self, Containerd, Sandbox, SandboxStatus};
use plexus_integration::{Node, NodeBuilder};
use serde_json::{Value, json};

use crate::fixtures::{bare, bridge, macvlan, metric, nad};

/// Whether containerd and crun are missing; then the test says why and is skipped. `make test`
/// installs them, so this happens only where that install failed.
fn runtime_missing() -> bool {
    match containerd::unavailable() {
        Some(why) => {
            eprintln!("skipped: containerd cannot run here: {why}");
            true
        }
        None => false,
    }
}

/// A node whose plexusd writes `00-plexus.conflist` from the cluster network's config.
fn plexus_node() -> NodeBuilder {
    Node::builder().config_line("writeConflist: true")
}

/// containerd for `node`, recording every call it makes to `plexus`, once it has loaded
/// Plexus's conflist as its pod network.
fn containerd_for(node: &Node) -> Containerd {
    let runtime = Containerd::for_node(node).trace_cni().start();
    runtime.wait_pod_network("plexus", Duration::from_secs(20));
    runtime
}

/// Runs the sandbox and returns its status, asserting it is ready.
fn run(runtime: &Containerd, sandbox: &Sandbox) -> SandboxStatus {
    let id = runtime
        .run_pod_sandbox(sandbox)
        .unwrap_or_else(|e| panic!("RunPodSandbox failed: {e}"));
    let status = runtime.status(&id).expect("PodSandboxStatus");
    assert!(status.ready, "sandbox not ready: {status:?}");
    status
}

fn netns(status: &SandboxStatus) -> &str {
    status.netns.as_deref().expect("the sandbox's netns path")
}

/// The address (CIDR) of `ifname` inside the sandbox.
fn address_in(status: &SandboxStatus, ifname: &str) -> String {
    let links = containerd::links_in(netns(status));
    let link = links
        .iter()
        .find(|l| l.name == ifname)
        .unwrap_or_else(|| panic!("no {ifname} in the sandbox: {links:?}"));
    link.addresses.first().cloned().unwrap_or_default()
}

fn link_names_in(status: &SandboxStatus) -> Vec<String> {
    let mut names: Vec<String> = containerd::links_in(netns(status))
        .into_iter()
        .map(|l| l.name)
        .collect();
    names.sort();
    names
}

/// NAD `tenant/blue`: a bridge network the CRI cases share.
fn blue_nad() -> String {
    nad(
        "tenant",
        "blue",
        &bridge("blue", "br-blue", "198.18.40.0/24"),
    )
}

/// Nothing of a pod is left on the node: no veth, no IP, no record, no CNI result cache.
fn assert_node_clean(node: &Node, runtime: &Containerd) {
    node.assert_clean();
    assert!(
        runtime.cached_results().is_empty(),
        "libcni results left: {:?}",
        runtime.cached_results()
    );
}

/// plexusd's request counter for `command` and `result`, from its /metrics.
fn requests(node: &Node, command: &str, result: &str) -> f64 {
    let (_, metrics) = node.get("/metrics").expect("GET /metrics");
    let prefix = format!(
        r#"plexus_cni_request_duration_seconds_count{{command="{command}",result="{result}"}}"#
    );
    metric(&metrics, &prefix).unwrap_or(0.0)
}

/// A node with two secondaries, `tenant/blue` (bridge) and `tenant/ext` (macvlan on uplink0),
/// and the pod's manifest.
fn node_with_two_secondaries(pod: &Sandbox) -> Node {
    with_two_secondaries(plexus_node(), pod).start()
}

/// `builder` with the two secondaries and the pod's manifest.
fn with_two_secondaries(builder: NodeBuilder, pod: &Sandbox) -> NodeBuilder {
    builder
        .uplink()
        .manifest("blue.yaml", &blue_nad())
        .manifest(
            "ext.yaml",
            &nad("tenant", "ext", &macvlan("ext", "198.18.41.0/24")),
        )
        .manifest("pod.yaml", &pod.manifest())
}

#[test]
fn a_pod_without_secondaries_gets_the_cluster_network_and_its_ip_is_the_pod_ip() {
    if runtime_missing() {
        return;
    }
    let web = Sandbox::new("tenant", "web");
    let node = plexus_node().manifest("pod.yaml", &web.manifest()).start();
    let runtime = containerd_for(&node);

    let status = run(&runtime, &web);
    assert_eq!(link_names_in(&status), ["eth0"]);
    let eth0 = address_in(&status, "eth0");
    assert!(eth0.starts_with("198.18.0."), "{eth0}");
    // PodSandboxStatus reports the cluster network's address as the pod IP.
    assert_eq!(status.ip, bare(&eth0));
    assert!(status.additional_ips.is_empty(), "{status:?}");

    // The runtime went through Plexus, with kubelet's pod identity in CNI_ARGS.
    let calls = runtime.cni_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let add = &calls[0];
    assert_eq!(add.command, "ADD");
    assert_eq!(add.ifname, "eth0");
    assert_eq!(add.container_id, status.id);
    assert_eq!(Some(add.netns.as_str()), status.netns.as_deref());
    assert_eq!(add.arg("K8S_POD_NAMESPACE"), Some("tenant"));
    assert_eq!(add.arg("K8S_POD_NAME"), Some("web"));
    assert_eq!(add.arg("K8S_POD_UID"), Some(web.uid.as_str()));
    assert_eq!(
        add.arg("K8S_POD_INFRA_CONTAINER_ID"),
        Some(status.id.as_str())
    );
    assert_eq!(add.arg("IgnoreUnknown"), Some("1"));
    assert_eq!(add.config["type"], "plexus");

    let (_, answer) = node
        .get(&format!("/v1/network-status/{}", status.id))
        .expect("network-status");
    let network_status: Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(network_status[0]["name"], "cluster");
    assert_eq!(network_status[0]["ips"], json!([status.ip]));
}

#[test]
fn two_secondaries_in_the_comma_form_are_inside_the_sandbox() {
    if runtime_missing() {
        return;
    }
    let web = Sandbox::new("tenant", "web").networks("blue,ext@data0");
    let node = node_with_two_secondaries(&web);
    let runtime = containerd_for(&node);

    let status = run(&runtime, &web);
    assert_eq!(link_names_in(&status), ["data0", "eth0", "net1"]);
    assert!(address_in(&status, "net1").starts_with("198.18.40."));
    assert!(address_in(&status, "data0").starts_with("198.18.41."));
    // Only the cluster network's address is the pod IP.
    assert_eq!(status.ip, bare(&address_in(&status, "eth0")));
    assert!(status.additional_ips.is_empty(), "{status:?}");
}

#[test]
fn two_secondaries_in_the_json_form_are_inside_the_sandbox() {
    if runtime_missing() {
        return;
    }
    let web = Sandbox::new("tenant", "web").networks(
        &json!([
            {"name": "blue", "interface": "blue0"},
            {"name": "ext", "namespace": "tenant", "ips": ["198.18.41.77/24"]},
        ])
        .to_string(),
    );
    let mut ext = macvlan("ext", "198.18.41.0/24");
    ext["ipam"] = json!({"type": "static"});
    ext["capabilities"] = json!({"ips": true});
    let node = plexus_node()
        .uplink()
        .manifest("blue.yaml", &blue_nad())
        .manifest("ext.yaml", &nad("tenant", "ext", &ext))
        .manifest("pod.yaml", &web.manifest())
        .start();
    let runtime = containerd_for(&node);

    let status = run(&runtime, &web);
    assert_eq!(link_names_in(&status), ["blue0", "eth0", "net2"]);
    assert!(address_in(&status, "blue0").starts_with("198.18.40."));
    assert_eq!(address_in(&status, "net2"), "198.18.41.77/24");
    assert_eq!(status.ip, bare(&address_in(&status, "eth0")));
}

#[test]
fn a_failing_secondary_fails_run_pod_sandbox_and_leaves_nothing() {
    if runtime_missing() {
        return;
    }
    let web = Sandbox::new("tenant", "web").networks("blue,broken");
    let mut broken = macvlan("broken", "198.18.42.0/24");
    broken["master"] = json!("no-such-if");
    let node = plexus_node()
        .manifest("blue.yaml", &blue_nad())
        .manifest("broken.yaml", &nad("tenant", "broken", &broken))
        .manifest("pod.yaml", &web.manifest())
        .start();
    let runtime = containerd_for(&node);

    let error = runtime.run_pod_sandbox(&web).expect_err("RunPodSandbox");
    assert!(
        error.message.contains("tenant/broken")
            && error.message.contains("macvlan")
            && error.message.contains("net2"),
        "{error}"
    );
    assert!(runtime.sandboxes().expect("list").is_empty());
    // The namespace containerd made for the pod is gone with it.
    let calls = runtime.cni_calls();
    let add = calls
        .iter()
        .find(|c| c.command == "ADD")
        .expect("an ADD reached Plexus");
    assert!(!containerd::is_netns(&add.netns), "{} is left", add.netns);
    assert_node_clean(&node, &runtime);
}

#[test]
fn stop_then_remove_deletes_twice_and_leaves_nothing() {
    if runtime_missing() {
        return;
    }
    let web = Sandbox::new("tenant", "web").networks("blue,ext");
    let node = node_with_two_secondaries(&web);
    let runtime = containerd_for(&node);
    let status = run(&runtime, &web);
    let path = netns(&status).to_owned();

    runtime.stop(&status.id).expect("StopPodSandbox");
    assert!(!containerd::is_netns(&path), "{path} is left");
    assert_node_clean(&node, &runtime);
    runtime.remove(&status.id).expect("RemovePodSandbox");
    assert!(runtime.sandboxes().expect("list").is_empty());
    assert_node_clean(&node, &runtime);

    // StopPodSandbox sends DEL with the namespace and the cached result; RemovePodSandbox
    // sends it again, without either.
    let dels: Vec<_> = runtime
        .cni_calls()
        .into_iter()
        .filter(|c| c.command == "DEL")
        .collect();
    assert_eq!(dels.len(), 2, "{dels:?}");
    assert!(dels.iter().all(|d| d.exit_code == 0), "{dels:?}");
    assert_eq!(dels[0].netns, path);
    assert_eq!(
        dels[0].config["prevResult"]["ips"][0]["address"],
        format!("{}/24", status.ip)
    );
    assert_eq!(dels[1].netns, "");
    assert!(dels[1].config.get("prevResult").is_none(), "{dels:?}");
    assert_eq!(requests(&node, "DEL", "success"), 2.0);
}

#[test]
fn a_containerd_restart_between_run_and_stop_still_cleans_up() {
    if runtime_missing() {
        return;
    }
    let web = Sandbox::new("tenant", "web").networks("blue,ext");
    let node = node_with_two_secondaries(&web);
    let mut runtime = containerd_for(&node);
    let before = run(&runtime, &web);

    runtime.restart();
    let after = runtime.status(&before.id).expect("PodSandboxStatus");
    assert!(after.ready, "{after:?}");
    assert_eq!(after.ip, before.ip);
    assert_eq!(after.netns, before.netns);
    assert_eq!(link_names_in(&after), ["eth0", "net1", "net2"]);

    runtime.stop(&before.id).expect("StopPodSandbox");
    runtime.remove(&before.id).expect("RemovePodSandbox");
    assert!(!containerd::is_netns(netns(&before)));
    assert_node_clean(&node, &runtime);
    assert!(runtime.shim_pids().is_empty(), "{:?}", runtime.shim_pids());
}

#[test]
fn plexusd_down_during_run_pod_sandbox_fails_naming_the_socket_and_attaches_nothing() {
    if runtime_missing() {
        return;
    }
    let web = Sandbox::new("tenant", "web").networks("blue,ext");
    let node = node_with_two_secondaries(&web);
    let runtime = containerd_for(&node);
    node.stop_plexusd();

    let error = runtime.run_pod_sandbox(&web).expect_err("RunPodSandbox");
    let socket = node.socket().display().to_string();
    assert!(error.message.contains(&socket), "{error}");
    let calls = runtime.cni_calls();
    let add = calls.iter().find(|c| c.command == "ADD").expect("an ADD");
    assert_eq!(add.exit_code, 1, "{add:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&add.stdout).unwrap()["code"],
        11
    );
    // Nothing was attached. containerd's own cleanup DEL failed the same way, so it keeps the
    // sandbox (not ready) and its namespace until a DEL succeeds, as kubelet's next
    // StopPodSandbox will do.
    assert_node_clean(&node, &runtime);
    let kept = runtime.sandboxes().expect("list");
    assert_eq!(kept.len(), 1, "{kept:?}");
    let failed = runtime.status(&kept[0]).expect("PodSandboxStatus");
    assert!(!failed.ready, "{failed:?}");
    assert!(failed.ip.is_empty(), "{failed:?}");

    // Once plexusd is back, kubelet cleans the failed sandbox up and its retry starts the pod.
    node.restart_plexusd();
    runtime.stop(&failed.id).expect("StopPodSandbox");
    runtime.remove(&failed.id).expect("RemovePodSandbox");
    assert!(!containerd::is_netns(&add.netns), "{} is left", add.netns);
    assert!(runtime.sandboxes().expect("list").is_empty());
    let status = run(&runtime, &web);
    assert_eq!(link_names_in(&status), ["eth0", "net1", "net2"]);
}

#[test]
fn plexus_declares_the_cluster_networks_cni_version_and_containerd_runs_pods_at_it() {
    if runtime_missing() {
        return;
    }
    let web = Sandbox::new("tenant", "web").networks("blue");
    let mut blue = bridge("blue", "br-blue", "198.18.40.0/24");
    blue["cniVersion"] = json!("0.4.0");
    let node = plexus_node()
        .cluster(json!({
            "cniVersion": "0.3.1",
            "name": "cluster",
            "plugins": [{
                "type": "bridge", "bridge": "cni0", "isGateway": true,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.0.0/24"}]], "dataDir": "@IPAM@"}
            }]
        }))
        .manifest("blue.yaml", &nad("tenant", "blue", &blue))
        .manifest("pod.yaml", &web.manifest())
        .start();
    let runtime = containerd_for(&node);

    let conflist: Value = serde_json::from_slice(
        &std::fs::read(node.dir().join("net.d/00-plexus.conflist")).expect("00-plexus.conflist"),
    )
    .expect("JSON");
    assert_eq!(conflist["cniVersion"], "0.3.1");
    // containerd loaded Plexus's conflist, at that version, as its pod network.
    let (_, cri) = runtime.runtime_status().expect("CRI Status");
    let loaded = &cri["info"]["cniconfig"]["Networks"];
    let plexus = loaded
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["IFName"] == "eth0")
        .unwrap_or_else(|| panic!("no eth0 network: {loaded}"));
    assert_eq!(plexus["Config"]["Name"], "plexus");
    assert_eq!(plexus["Config"]["CNIVersion"], "0.3.1");

    let status = run(&runtime, &web);
    assert_eq!(link_names_in(&status), ["eth0", "net1"]);
    assert_eq!(status.ip, bare(&address_in(&status, "eth0")));
    let add = &runtime.cni_calls()[0];
    assert_eq!(add.config["cniVersion"], "0.3.1");
    let result: Value = serde_json::from_str(&add.stdout).expect("result");
    assert_eq!(result["cniVersion"], "0.3.1");
    runtime.stop(&status.id).expect("StopPodSandbox");
    runtime.remove(&status.id).expect("RemovePodSandbox");
    assert_node_clean(&node, &runtime);
}

#[test]
fn a_running_sandbox_follows_its_annotation_and_stop_removes_everything() {
    if runtime_missing() {
        return;
    }
    let web = Sandbox::new("tenant", "web").networks("blue");
    let node =
        with_two_secondaries(plexus_node().config_line("dynamicNetworks: true"), &web).start();
    let runtime = containerd_for(&node);
    let status = run(&runtime, &web);
    assert_eq!(link_names_in(&status), ["eth0", "net1"]);
    let net1 = address_in(&status, "net1");

    // The pod's annotation is edited while its sandbox runs (the files source's manifest
    // stands in for the API server's pod).
    let edited = web.clone().networks("blue,ext");
    node.write_manifest("pod.yaml", &edited.manifest());
    // Until net2 is in the sandbox and plexusd has recorded the change (its network-status,
    // read under the pod's lock, has three entries): then addresses and allocations are final.
    let recorded = || {
        node.get(&format!("/v1/network-status/{}", status.id))
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .and_then(|s| s.as_array().map(Vec::len))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while link_names_in(&status) != ["eth0", "net1", "net2"] || recorded() != Some(3) {
        assert!(
            std::time::Instant::now() < deadline,
            "net2 never appeared in the sandbox: {:?}",
            link_names_in(&status)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let net2 = address_in(&status, "net2");
    assert!(net2.starts_with("198.18.41."), "{net2}");
    assert_eq!(address_in(&status, "net1"), net1);
    let mut inside = vec![
        bare(&address_in(&status, "eth0")).to_owned(),
        bare(&net1).to_owned(),
        bare(&net2).to_owned(),
    ];
    inside.sort();
    assert_eq!(node.allocated_addresses(), inside);
    // The runtime still reports the cluster network's address as the pod IP.
    let again = runtime.status(&status.id).expect("PodSandboxStatus");
    assert_eq!(again.ip, bare(&address_in(&status, "eth0")));

    // StopPodSandbox's DEL carries only the ADD's result; Plexus's record has the rest.
    let path = netns(&status).to_owned();
    runtime.stop(&status.id).expect("StopPodSandbox");
    assert!(!containerd::is_netns(&path), "{path} is left");
    runtime.remove(&status.id).expect("RemovePodSandbox");
    assert_node_clean(&node, &runtime);
}
