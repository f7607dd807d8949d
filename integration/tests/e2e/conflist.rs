//! plexusd writing the node's 00-plexus.conflist, as a runtime will read it.

use std::time::{Duration, Instant};

use plexus_integration::{Node, Pod};
use serde_json::{Value, json};

fn conflist(node: &Node) -> Option<Value> {
    let text = std::fs::read_to_string(node.dir().join("net.d/00-plexus.conflist")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Waits until the conflist satisfies `check`; plexusd follows the conf dir with inotify.
fn wait_for_conflist(
    node: &Node,
    what: &str,
    check: impl Fn(Option<&Value>) -> bool,
) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let current = conflist(node);
        if check(current.as_ref()) {
            return current;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "the conflist never became: {what}; it is {:?}",
        conflist(node)
    );
}

#[test]
fn plexusd_writes_its_conflist_from_the_cluster_network_and_follows_it() {
    let web = Pod::new("tenant", "web");
    let node = Node::builder()
        .cluster(json!({
            "cniVersion": "0.4.0", "name": "cluster",
            "plugins": [
                {"type": "bridge", "bridge": "cni0", "isGateway": true,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.33.0/24"}]], "dataDir": "@IPAM@"}},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        }))
        .config_line("writeConflist: true")
        .start();

    let written = wait_for_conflist(&node, "written", |c| c.is_some()).unwrap();
    // A runtime that accepts the cluster network accepts Plexus, and still passes hostPorts.
    assert_eq!(written["cniVersion"], "0.4.0");
    assert_eq!(written["plugins"][0]["type"], "plexus");
    assert_eq!(
        written["plugins"][0]["socketPath"],
        node.socket().display().to_string()
    );
    assert_eq!(
        written["plugins"][0]["capabilities"],
        json!({"portMappings": true})
    );

    // The runtime's stdin is the conflist's plugin with the list's name and version.
    let mut stdin = written["plugins"][0].clone();
    stdin["name"] = written["name"].clone();
    stdin["cniVersion"] = written["cniVersion"].clone();
    let result = node.cni("ADD", &web, &stdin).result();
    assert_eq!(result["cniVersion"], "0.4.0");
    assert!(node.cni("DEL", &web, &stdin).success());

    // Another installer rewrites the cluster network: Plexus's file follows.
    node.write_conf(
        "10-cluster.conflist",
        &json!({"cniVersion": "1.0.0", "name": "cluster", "plugins": [{"type": "ptp", "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.34.0/24"}]], "dataDir": "@IPAM@"}}]}).to_string(),
    );
    let rewritten = wait_for_conflist(&node, "version 1.0.0", |c| {
        c.is_some_and(|c| c["cniVersion"] == "1.0.0")
    })
    .unwrap();
    assert!(
        rewritten["plugins"][0].get("capabilities").is_none(),
        "{rewritten}"
    );

    // Without a cluster network, no conflist: pods wait instead of failing.
    std::fs::remove_file(node.dir().join("net.d/10-cluster.conflist")).unwrap();
    wait_for_conflist(&node, "removed", |c| c.is_none());
}
