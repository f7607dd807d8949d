//! AdmissionReview bodies shaped as the API server sends them (admission.k8s.io/v1
//! `AdmissionReview` with its `AdmissionRequest`: uid, kind and resource with their request*
//! twins, name, namespace, operation, userInfo, object and oldObject as stored after defaulting,
//! dryRun, options), for the objects the webhook is registered for.

use serde_json::{Value, json};

/// What is being admitted: a NAD, a pod, or a Deployment.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Nad,
    Pod,
    Deployment,
}

impl Kind {
    fn gvk(self) -> Value {
        match self {
            Self::Nad => {
                json!({"group": "k8s.cni.cncf.io", "version": "v1", "kind": "NetworkAttachmentDefinition"})
            }
            Self::Pod => json!({"group": "", "version": "v1", "kind": "Pod"}),
            Self::Deployment => json!({"group": "apps", "version": "v1", "kind": "Deployment"}),
        }
    }

    fn gvr(self) -> Value {
        match self {
            Self::Nad => {
                json!({"group": "k8s.cni.cncf.io", "version": "v1", "resource": "network-attachment-definitions"})
            }
            Self::Pod => json!({"group": "", "version": "v1", "resource": "pods"}),
            Self::Deployment => {
                json!({"group": "apps", "version": "v1", "resource": "deployments"})
            }
        }
    }
}

/// A unique request uid, in the API server's UUID form.
fn uid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), n)
}

/// The review the API server sends for `operation` (`CREATE` or `UPDATE`) of `object`
/// (with `old` on UPDATE), by `kubectl` of a cluster admin.
pub fn review(kind: Kind, operation: &str, object: &Value, old: Option<&Value>) -> Value {
    let options_kind = match operation {
        "UPDATE" => "UpdateOptions",
        _ => "CreateOptions",
    };
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid(),
            "kind": kind.gvk(),
            "resource": kind.gvr(),
            "requestKind": kind.gvk(),
            "requestResource": kind.gvr(),
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "operation": operation,
            "userInfo": {
                "username": "kubernetes-admin",
                "groups": ["kubeadm:cluster-admins", "system:authenticated"]
            },
            "object": stored(object),
            "oldObject": old.map(stored).unwrap_or(Value::Null),
            "dryRun": false,
            "options": {
                "kind": options_kind,
                "apiVersion": "meta.k8s.io/v1",
                "fieldManager": "kubectl-client-side-apply",
                "fieldValidation": "Strict"
            }
        }
    })
}

/// The object as admission sees it: with the metadata the API server fills in.
fn stored(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.entry("uid")
            .or_insert_with(|| json!("6d1c2a77-5b1e-4a8e-9a3f-1f2e3d4c5b6a"));
        meta.entry("creationTimestamp")
            .or_insert_with(|| json!("2025-01-01T00:00:00Z"));
        meta.entry("managedFields").or_insert_with(|| {
            json!([{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1",
                    "time": "2025-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}])
        });
    }
    object
}

/// A NAD with `config` as spec.config (`None`: no spec.config).
pub fn nad(namespace: &str, name: &str, config: Option<&str>) -> Value {
    let spec = match config {
        Some(config) => json!({"config": config}),
        None => json!({}),
    };
    json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": namespace, "generation": 1},
        "spec": spec
    })
}

/// A pod as the API server holds it after defaulting, with `annotations`.
pub fn pod(namespace: &str, name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {
            "containers": [{
                "name": "app", "image": "docker.io/library/busybox:1.36", "command": ["sleep", "infinity"],
                "resources": {}, "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"
            }],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "serviceAccount": "default", "securityContext": {},
            "schedulerName": "default-scheduler", "priority": 0, "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ]
        },
        "status": {"phase": "Pending", "qosClass": "BestEffort"}
    })
}

/// A Deployment whose pod template carries `annotations`.
pub fn deployment(namespace: &str, name: &str, annotations: Value) -> Value {
    let template = pod(namespace, name, annotations);
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "generation": 1},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": template["metadata"]["annotations"]},
                "spec": template["spec"]
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
            "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600
        },
        "status": {}
    })
}
