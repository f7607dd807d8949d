//! A pod as the kube source reads it: its identity, its annotations and its resource claims.
//!
//! The watch decodes every event of every pod on the node (kubelet's status updates, our own
//! network-status patch coming back) on the API thread, on the CPUs the pods' delegates want,
//! and the cache holds every pod on the node. Decoded as k8s-openapi's `Pod`, an event built
//! the whole object (the managed fields, the containers, the conditions), and all but a few
//! fields of it were then dropped. This type builds those few (`metadata::Metadata` and the
//! resource claims) and skips the rest, as `dra::ClaimObject` does for claims: 4.7 µs per
//! watch event of a 5 KiB pod instead of 17.9 (README "Performance", the tenth round).

use k8s_openapi::api::core::v1::{Pod, PodResourceClaim, PodResourceClaimStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use super::PodInfo;
use crate::devices::claims::PodClaim;
use crate::names::{Namespace, ObjectName, PodKey};

#[derive(kube::Resource, Deserialize, Clone, Debug)]
#[resource(inherit = "Pod")]
pub(super) struct PodObject {
    #[serde(deserialize_with = "super::metadata::object_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<Spec>,
    #[serde(default)]
    status: Option<Status>,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
struct Spec {
    resource_claims: Option<Vec<PodResourceClaim>>,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
struct Status {
    resource_claim_statuses: Option<Vec<PodResourceClaimStatus>>,
}

impl PodObject {
    pub(super) fn key(&self) -> Option<PodKey> {
        let namespace = Namespace::parse(self.metadata.namespace.as_deref()?).ok()?;
        let name = ObjectName::parse(self.metadata.name.as_deref()?).ok()?;
        Some(PodKey { namespace, name })
    }

    pub(super) fn info(&self) -> Option<PodInfo> {
        Some(PodInfo {
            key: self.key()?,
            uid: self.metadata.uid.clone(),
            annotations: self.metadata.annotations.clone().unwrap_or_default(),
            claims: self.claims(),
        })
    }

    /// The pod's resource claims with the ResourceClaim each stands for: named in the spec,
    /// or generated from a template and named in the status.
    fn claims(&self) -> Vec<PodClaim> {
        let statuses = self
            .status
            .as_ref()
            .and_then(|s| s.resource_claim_statuses.as_deref())
            .unwrap_or_default();
        self.spec
            .as_ref()
            .and_then(|s| s.resource_claims.as_deref())
            .unwrap_or_default()
            .iter()
            .map(|claim| PodClaim {
                name: claim.name.clone(),
                claim: claim.resource_claim_name.clone().or_else(|| {
                    statuses
                        .iter()
                        .find(|s| s.name == claim.name)
                        .and_then(|s| s.resource_claim_name.clone())
                }),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// A pod as the API server sends it once kubelet has started it: managed fields from
    /// three managers, a container with its probes and mounts, the status kubelet writes, and
    /// two resource claims, one named in the spec and one generated from a template.
    fn kubelet_pod() -> Value {
        let fields = |manager: &str, subresource: Option<&str>| {
            json!({
                "manager": manager, "operation": "Update", "apiVersion": "v1",
                "time": "2026-12-07T10:00:00Z", "fieldsType": "FieldsV1",
                "subresource": subresource,
                "fieldsV1": {"f:metadata": {"f:annotations": {".": {},
                    "f:k8s.v1.cni.cncf.io/networks": {}}, "f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {},
                    "f:imagePullPolicy": {}, "f:name": {}, "f:ports": {}, "f:resources": {}}}},
                    "f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {},
                    "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {},
                    "f:type": {}}}, "f:containerStatuses": {}, "f:podIP": {}}}
            })
        };
        let condition = |kind: &str| {
            json!({"type": kind, "status": "True", "lastProbeTime": null,
                "lastTransitionTime": "2026-12-07T10:00:02Z"})
        };
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-0", "namespace": "tenant", "uid": "0b7c3e2a-5d1f-4c7e-9a51-3f2d1c0e9b88",
                "resourceVersion": "48213", "creationTimestamp": "2026-12-07T10:00:00Z",
                "generateName": "web-", "labels": {"app": "web", "pod-template-hash": "7d9f8c6b5"},
                "annotations": {
                    "k8s.v1.cni.cncf.io/networks": "macvlan-net",
                    "k8s.v1.cni.cncf.io/network-status": "[{\"name\":\"cbr0\",\"interface\":\"eth0\",\"ips\":[\"10.244.1.7\"],\"default\":true}]"
                },
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web",
                    "uid": "5e0c1f6d-2b8a-4f0e-8d3c-7a9b1e2f4c60", "controller": true,
                    "blockOwnerDeletion": true}],
                "managedFields": [fields("kube-controller-manager", None),
                    fields("kubelet", Some("status")), fields("plexus", None)]
            },
            "spec": {
                "containers": [{
                    "name": "web", "image": "registry.example/web:1.4.2",
                    "imagePullPolicy": "IfNotPresent",
                    "ports": [{"containerPort": 8080, "protocol": "TCP", "name": "http"}],
                    "env": [{"name": "MODE", "value": "serve"},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"memory": "256Mi"}, "claims": [{"name": "nic"}]},
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP"},
                        "periodSeconds": 5, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
                    "volumeMounts": [{"name": "kube-api-access-x7k2p", "readOnly": true,
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File"
                }],
                "resourceClaims": [{"name": "nic", "resourceClaimName": "web-nic"},
                    {"name": "scratch", "resourceClaimTemplateName": "scratch-nic"}],
                "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420,
                    "sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}],
                "nodeName": "node-a", "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
                "serviceAccountName": "default", "schedulerName": "default-scheduler",
                "terminationGracePeriodSeconds": 30, "enableServiceLinks": true,
                "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                    "effect": "NoExecute", "tolerationSeconds": 300}],
                "priority": 0, "preemptionPolicy": "PreemptLowerPriority"
            },
            "status": {
                "phase": "Running", "qosClass": "Burstable", "hostIP": "192.0.2.10",
                "podIP": "10.244.1.7", "podIPs": [{"ip": "10.244.1.7"}],
                "startTime": "2026-12-07T10:00:00Z",
                "conditions": [condition("PodReadyToStartContainers"), condition("Initialized"),
                    condition("Ready"), condition("ContainersReady"), condition("PodScheduled")],
                "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0, "started": true,
                    "image": "registry.example/web:1.4.2", "imageID": "registry.example/web@sha256:2c4f",
                    "containerID": "containerd://9f8e7d6c5b4a", "lastState": {},
                    "state": {"running": {"startedAt": "2026-12-07T10:00:01Z"}}}],
                "resourceClaimStatuses": [{"name": "scratch", "resourceClaimName": "web-0-scratch-q4m9z"}]
            }
        })
    }

    #[test]
    fn a_pod_is_read_for_its_identity_annotations_claims_and_resource_version_only() {
        let pod: PodObject = serde_json::from_value(kubelet_pod()).unwrap();
        // What the cache holds of it: no managed fields, labels or owners.
        assert!(pod.metadata.managed_fields.is_none());
        assert!(pod.metadata.labels.is_none() && pod.metadata.owner_references.is_none());
        // The watch resumes from it.
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("48213"));
        let info = pod.info().unwrap();
        assert_eq!(info.key.to_string(), "tenant/web-0");
        assert_eq!(
            info.uid.as_deref(),
            Some("0b7c3e2a-5d1f-4c7e-9a51-3f2d1c0e9b88")
        );
        assert_eq!(
            info.annotation("k8s.v1.cni.cncf.io/networks"),
            Some("macvlan-net")
        );
        let claim = |name: &str, claim: &str| PodClaim {
            name: name.into(),
            claim: Some(claim.into()),
        };
        assert_eq!(
            info.claims,
            [
                claim("nic", "web-nic"),
                claim("scratch", "web-0-scratch-q4m9z")
            ]
        );
    }

    #[test]
    fn a_claim_whose_generated_object_is_not_named_yet_has_none() {
        let mut pod = kubelet_pod();
        pod["status"] = json!({"phase": "Pending"});
        let pod: PodObject = serde_json::from_value(pod).unwrap();
        let claims = pod.info().unwrap().claims;
        assert_eq!(claims[1].claim, None);
    }

    #[test]
    fn a_pod_without_spec_or_status_has_no_claims_and_one_without_a_namespace_no_key() {
        let pod: PodObject =
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "n"}})).unwrap();
        assert_eq!(pod.info().unwrap().claims, []);
        let pod: PodObject = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "n", "annotations": null},
            "spec": {"resourceClaims": null}, "status": {"resourceClaimStatuses": null}
        }))
        .unwrap();
        assert_eq!(pod.info().unwrap().claims, []);
        let pod: PodObject = serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
        assert!(pod.key().is_none());
    }
}
