//! The networks and pods the bench uses. Every address is in 198.18.0.0/15, inside the nodes'
//! own namespaces.

use std::path::PathBuf;

use plexus_integration::{Node, NodeBuilder, Pod, binaries, dra};
use serde_json::{Value, json};

use crate::direct::{Direct, Net};

/// The namespace of the bench's NADs and pods.
pub const NAMESPACE: &str = "bench";
/// Secondary networks per pod, as the issue asks.
pub const CASES: [usize; 4] = [0, 1, 2, 4];
/// The no-op plugin: ADD prints an empty result, everything else nothing; stdin is not read.
pub const NOOP: &str = r#"[ "$CNI_COMMAND" = ADD ] && echo '{"cniVersion":"1.0.0"}'
exit 0"#;

/// The cluster network: bridge cni0 + host-local, as in the tests, with room for the
/// parallel pods.
pub fn cluster() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "cluster",
        "plugins": [{
            "type": "bridge", "bridge": "cni0", "isGateway": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.0.0/22"}]], "dataDir": "@IPAM@"}
        }]
    })
}

/// Secondary network `sec<i>` (1-based): its own bridge and /22.
pub fn secondary(i: usize) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": format!("sec{i}"), "type": "bridge", "bridge": format!("br-sec{i}"),
        "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("198.18.{}.0/22", 4 * i)}]], "dataDir": "@IPAM@"}
    })
}

pub fn noop_network() -> Value {
    json!({"cniVersion": "1.0.0", "name": "noop", "type": "noop"})
}

/// The networks annotation for `k` secondaries (none for 0).
pub fn annotations(k: usize) -> Value {
    if k == 0 {
        return json!({});
    }
    let names: Vec<String> = (1..=k).map(|i| format!("sec{i}")).collect();
    json!({"k8s.v1.cni.cncf.io/networks": names.join(",")})
}

/// A pod that gets the no-op network as its only (cluster) network.
pub fn noop_annotations() -> Value {
    json!({"v1.multus-cni.io/default-network": format!("{NAMESPACE}/noop")})
}

pub fn nad(name: &str, config: &Value) -> Value {
    json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"config": config.to_string()}
    })
}

/// A pod manifest for the files source (identity and annotations is what plexusd reads).
pub fn pod_manifest(pod: &Pod, annotations: &Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid(), "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app"}]}
    })
}

/// A pod as the API server stores it for a Deployment's replica: labels, owner, managed
/// fields, a container with ports, env, resources and mounts, tolerations and a status (about
/// 4 KiB of JSON), so the caches hold and parse what a cluster would send them.
pub fn realistic_pod(namespace: &str, name: &str, node: &str, networks: &str) -> Value {
    let env: Vec<Value> = (0..6)
        .map(|i| json!({"name": format!("SETTING_{i}"), "value": format!("value-{i}-{name}")}))
        .collect();
    let conditions: Vec<Value> = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
        .iter()
        .map(|t| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": "2025-01-01T00:00:00Z"}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "generateName": "web-7d9f8b6c5d-",
            "labels": {"app": "web", "pod-template-hash": "7d9f8b6c5d", "tier": "frontend"},
            "annotations": {
                "k8s.v1.cni.cncf.io/networks": networks,
                "kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"
            },
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8b6c5d", "uid": "0f6c3a52-2f1e-4d9a-9a5e-3f1d2c4b5a69", "controller": true, "blockOwnerDeletion": true}],
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "managedFields": [{
                "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1", "time": "2025-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}, "f:tier": {}}, "f:ownerReferences": {".": {}, "k:{\"uid\":\"0f6c3a52-2f1e-4d9a-9a5e-3f1d2c4b5a69\"}": {}}},
                             "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:env": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {}, "f:ports": {}, "f:resources": {}}}}}
            }]
        },
        "spec": {
            "nodeName": node,
            "containers": [{
                "name": "app",
                "image": "registry.example.com/team/web:1.27.3",
                "imagePullPolicy": "IfNotPresent",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}, {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
                "env": env,
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"}, "periodSeconds": 10},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File"
            }],
            "volumes": [{"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}, {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}],
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ]
        },
        "status": {
            "phase": "Running",
            "conditions": conditions,
            "hostIP": "198.19.0.1",
            "podIP": "198.19.1.7",
            "podIPs": [{"ip": "198.19.1.7"}],
            "startTime": "2025-01-01T00:00:00Z",
            "qosClass": "Burstable",
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "started": true,
                "image": "registry.example.com/team/web:1.27.3", "imageID": "registry.example.com/team/web@sha256:5b0b5e5fb7c3d1a2f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7",
                "containerID": "containerd://1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f",
                "state": {"running": {"startedAt": "2025-01-01T00:00:01Z"}}, "lastState": {}}]
        }
    })
}

/// A node at plexusd's default log level, with the no-op plugin and the bench's networks: the
/// cluster network in its conf dir, `sec1`..`sec4` and `noop` as NADs (manifests for the
/// files source, API objects for kube), `pods` with the annotations given, and `config`
/// added to plexusd's config.
pub fn node(kube: bool, pods: &[(&Pod, Value)], config: &[String]) -> Node {
    let mut nads: Vec<(String, Value)> =
        (1..=4).map(|i| (format!("sec{i}"), secondary(i))).collect();
    nads.push(("noop".into(), noop_network()));
    let builder: NodeBuilder = Node::builder()
        .rust_log("info")
        .cluster(cluster())
        .plugin("noop", NOOP)
        .config_lines(config);
    if !kube {
        let mut builder = builder;
        let docs: Vec<String> = nads.iter().map(|(n, c)| nad(n, c).to_string()).collect();
        builder = builder.manifest("nads.yaml", &docs.join("\n---\n"));
        let docs: Vec<String> = pods
            .iter()
            .map(|(p, a)| pod_manifest(p, a).to_string())
            .collect();
        builder = builder.manifest("pods.yaml", &docs.join("\n---\n"));
        let node = builder.start();
        node.wait_for_readyz(
            &format!("nads={} pods={}\n", nads.len(), pods.len()),
            std::time::Duration::from_secs(20),
        );
        return node;
    }
    let node = builder.kube().start();
    for (name, config) in &nads {
        node.apply_nad(NAMESPACE, name, config);
    }
    for (pod, annotations) in pods {
        node.apply_pod(pod, annotations.clone());
    }
    // The kube source's summary goes on with the DRA counts.
    node.wait_for_readyz(
        &format!("nads={} pods={} ", nads.len(), pods.len()),
        std::time::Duration::from_secs(20),
    );
    node
}

/// The resource of the device check's pool.
pub const DEVICE_RESOURCE: &str = "example.com/bench-vf";

/// The device check of the kube source: a node with the `netdev` test delegate and a test
/// kubelet, NAD `vf` on a device pool, and two pods on it: `from_claim` takes its device from a
/// ResourceClaim that this node's ResourceSlice describes, `from_plugin` from the kubelet.
pub fn device_node(from_claim: &Pod, from_plugin: &Pod) -> Node {
    let netdev = format!("exec '{}' \"$@\"", binaries::netdev().display());
    let node = Node::builder()
        .rust_log("info")
        .cluster(cluster())
        .plugin("netdev", &netdev)
        .kube()
        .kubelet()
        .start();
    node.add_device("bdev0");
    node.add_device("bdev1");
    let vf = json!({
        "cniVersion": "1.0.0", "name": "vf", "type": "netdev",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.32.0/24"}]], "dataDir": "@IPAM@"}
    });
    node.apply_nad_annotated(
        NAMESPACE,
        "vf",
        json!({"k8s.v1.cni.cncf.io/resourceName": DEVICE_RESOURCE}),
        &vf,
    );
    let networks = json!({"k8s.v1.cni.cncf.io/networks": "vf"});
    node.apply_pod_with(from_claim, networks.clone(), |object| {
        dra::with_claims(object, &[("nic", "bench-nic")])
    });
    node.cluster().apply_with_status(dra::claim(
        &node,
        from_claim,
        "bench-nic",
        "pool-a",
        &[("vf", &["vf-0"])],
    ));
    node.cluster().apply(dra::slice(
        &node,
        "pool-a",
        &[("vf-0", DEVICE_RESOURCE, "bdev0")],
    ));
    node.apply_pod(from_plugin, networks);
    node.kubelet()
        .allocate(from_plugin, DEVICE_RESOURCE, &["bdev1"]);
    node.wait_for_readyz(
        "nads=1 pods=2 claims=1 slices=1",
        std::time::Duration::from_secs(20),
    );
    node
}

/// The bench's own executor, with plexusd's plugin dirs for this node.
pub fn direct(node: &Node) -> Direct {
    Direct::new(vec![
        node.dir().join("bin"),
        PathBuf::from(binaries::CNI_BIN_DIR),
    ])
}

/// The networks of a pod with `k` secondaries, as plexusd resolves them: the cluster network
/// on eth0, then sec1..sec<k> on net1..net<k>.
pub fn nets(node: &Node, k: usize) -> Vec<Net> {
    let fill = |v: Value| -> Value {
        let text = v
            .to_string()
            .replace("@IPAM@", &node.ipam_dir().display().to_string());
        serde_json::from_str(&text).expect("filled config")
    };
    let mut nets = vec![Net {
        config: fill(cluster()),
        ifname: "eth0".into(),
    }];
    nets.extend((1..=k).map(|i| Net {
        config: fill(secondary(i)),
        ifname: format!("net{i}"),
    }));
    nets
}
