//! Manifests and configs the tests share.

use plexus_integration::{Node, Pod};
use serde_json::{Value, json};

/// A NAD manifest (JSON is YAML) with `config` as its spec.config.
pub fn nad(namespace: &str, name: &str, config: &Value) -> String {
    json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"config": config.to_string()}
    })
    .to_string()
}

/// A NAD with no spec.config: its network is the conf file of that name.
pub fn nad_without_config(namespace: &str, name: &str) -> String {
    json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {}
    })
    .to_string()
}

/// A Pod manifest carrying the networks annotation.
pub fn pod(pod: &Pod, networks: &str) -> String {
    pod.manifest(networks)
}

/// A bridge network with host-local IPAM in the node's IPAM dir.
pub fn bridge(name: &str, bridge: &str, subnet: &str) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": bridge,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": "@IPAM@"}
    })
}

/// A macvlan network on the node's `uplink0`.
pub fn macvlan(name: &str, subnet: &str) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": "uplink0", "mode": "bridge",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": "@IPAM@"}
    })
}

/// The events about `pod` in the node's API server (events.k8s.io or core): by uid, so a pod
/// of the same name from an earlier run against the same cluster (whose events outlive it), or
/// recreated in the same test, does not count.
pub fn events_for(node: &Node, pod: &Pod) -> Vec<Value> {
    let uid = pod.uid();
    node.cluster()
        .events()
        .into_iter()
        .filter(|e| {
            e["regarding"]["uid"] == uid.as_str() || e["involvedObject"]["uid"] == uid.as_str()
        })
        .collect()
}

/// The value of the first sample of plexusd's /metrics whose name and labels start with
/// `prefix`.
pub fn metric(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits until `check` holds: API writes and watches are asynchronous by design.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Some(found) = check() {
            return found;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("never happened: {what}");
}

/// The address part of `a.b.c.d/nn`.
pub fn bare(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}
