//! DRA objects as a DRA driver, the scheduler and the resource claim controller would leave
//! them for a pod on a test node: this node's ResourceSlice, a ResourceClaim allocated on the
//! node and reserved for the pod, and the pod's own claim references.

use serde_json::{Value, json};

use crate::{Node, Pod};

/// The made-up DRA driver of the tests and the bench.
pub const DRIVER: &str = "net.example.com";

/// This node's ResourceSlice of `pool`: (device name, `k8s.cni.cncf.io/resourceName`,
/// `k8s.cni.cncf.io/deviceID`) per device.
pub fn slice(node: &Node, pool: &str, devices: &[(&str, &str, &str)]) -> Value {
    let devices: Vec<Value> = devices
        .iter()
        .map(|(name, resource, id)| {
            json!({"name": name, "attributes": {
                "k8s.cni.cncf.io/resourceName": {"string": resource},
                "k8s.cni.cncf.io/deviceID": {"string": id},
                "model": {"string": "test-vf"}
            }})
        })
        .collect();
    json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
        "metadata": {"name": format!("{}-{pool}", node.name())},
        "spec": {
            "driver": DRIVER, "nodeName": node.name(),
            "pool": {"name": pool, "generation": 1, "resourceSliceCount": 1},
            "devices": devices
        }
    })
}

/// ResourceClaim `name`, allocated on this node and reserved for `pod`: `requests` are
/// (request name, the devices of `pool` allocated for it).
pub fn claim(
    node: &Node,
    pod: &Pod,
    name: &str,
    pool: &str,
    requests: &[(&str, &[&str])],
) -> Value {
    let spec: Vec<Value> = requests
        .iter()
        .map(|(request, devices)| {
            json!({"name": request, "exactly": {
                "deviceClassName": "vf.example.com", "allocationMode": "ExactCount", "count": devices.len()
            }})
        })
        .collect();
    let results: Vec<Value> = requests
        .iter()
        .flat_map(|(request, devices)| {
            devices.iter().map(move |device| {
                json!({"request": request, "driver": DRIVER, "pool": pool, "device": device})
            })
        })
        .collect();
    json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": pod.namespace},
        "spec": {"devices": {"requests": spec}},
        "status": {
            "allocation": {
                "devices": {"results": results},
                "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": [node.name()]}
                ]}]}
            },
            "reservedFor": [{"resource": "pods", "name": pod.name, "uid": pod.uid()}]
        }
    })
}

/// Gives a Pod object these resource claims, (name in the pod, ResourceClaim): the first as
/// if generated from a template (named in the pod's `status.resourceClaimStatuses`), the
/// others named in its spec directly. For [`Node::apply_pod_with`].
pub fn with_claims(object: &mut Value, claims: &[(&str, &str)]) {
    let mut spec = Vec::new();
    let mut statuses = Vec::new();
    for (i, (name, claim)) in claims.iter().enumerate() {
        if i == 0 {
            spec.push(json!({"name": name, "resourceClaimTemplateName": "vf-template"}));
            statuses.push(json!({"name": name, "resourceClaimName": claim}));
        } else {
            spec.push(json!({"name": name, "resourceClaimName": claim}));
        }
    }
    object["spec"]["resourceClaims"] = Value::Array(spec);
    object["status"] = json!({"resourceClaimStatuses": statuses});
}
