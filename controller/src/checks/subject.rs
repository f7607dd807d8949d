//! The objects the rules look at, read from JSON as the API server or a manifest holds them:
//! NADs, pods, and the pod templates of the workloads that create pods.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::names::Namespace;
use crate::selection::NETWORKS_ANNOTATION;
use crate::service::DEFAULT_NETWORK_ANNOTATION;

/// An object the rules have something to say about.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    Nad(NadSubject),
    Pod(PodSubject),
}

/// A NetworkAttachmentDefinition, as far as the rules read it.
#[derive(Debug, Clone, PartialEq)]
pub struct NadSubject {
    pub namespace: String,
    pub name: String,
    pub annotations: BTreeMap<String, String>,
    /// `spec.config` as written; `None` when absent.
    pub config: Option<String>,
}

impl NadSubject {
    /// `namespace/name`, as plexusd names networks.
    pub fn label(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The inline config, `None` when the NAD leaves it to a conf file on the nodes.
    pub fn inline_config(&self) -> Option<&str> {
        self.config.as_deref().filter(|c| !c.trim().is_empty())
    }
}

/// A pod, or the pod template of a workload, as far as the rules read it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSubject {
    /// `namespace/name` for a pod; for a template, the workload's, and which workload it is.
    pub label: String,
    pub namespace: Namespace,
    pub annotations: BTreeMap<String, String>,
    /// Where the pod metadata sits in the object (`metadata`, `spec.template.metadata`).
    pub metadata_at: &'static [&'static str],
    /// A workload's template: the pods come later, from a controller.
    pub is_template: bool,
}

/// Why an object cannot be read as its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SubjectError {
    /// Dotted path of the field at fault.
    pub field: String,
    pub problem: String,
    /// The same path as keys, to find the field in a file.
    pub path: Vec<String>,
}

/// Workloads whose pod template carries the pods' annotations, and where the template's
/// metadata is.
const TEMPLATES: &[(&str, &str, &[&str])] = &[
    ("apps/v1", "Deployment", &["spec", "template", "metadata"]),
    ("apps/v1", "ReplicaSet", &["spec", "template", "metadata"]),
    ("apps/v1", "StatefulSet", &["spec", "template", "metadata"]),
    ("apps/v1", "DaemonSet", &["spec", "template", "metadata"]),
    ("batch/v1", "Job", &["spec", "template", "metadata"]),
    (
        "batch/v1",
        "CronJob",
        &["spec", "jobTemplate", "spec", "template", "metadata"],
    ),
    (
        "v1",
        "ReplicationController",
        &["spec", "template", "metadata"],
    ),
    ("v1", "PodTemplate", &["template", "metadata"]),
];

const NAD_API_VERSION: &str = "k8s.cni.cncf.io/v1";

/// The annotations whose values the rules parse: they must be strings.
const CHECKED_ANNOTATIONS: &[&str] = &[
    NETWORKS_ANNOTATION,
    DEFAULT_NETWORK_ANNOTATION,
    super::nad::RESOURCE_NAME_ANNOTATION,
];

impl Subject {
    /// The object as the rules see it; `Ok(None)` for a kind they do not look at.
    /// `namespace` is where the object lives when it names no namespace itself (the request's
    /// namespace, or `default` as for `kubectl apply`).
    pub fn from_object(object: &Value, namespace: &str) -> Result<Option<Self>, SubjectError> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object_name(&object["metadata"]);
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .filter(|ns| !ns.is_empty())
            .unwrap_or(namespace)
            .to_owned();
        if kind == "NetworkAttachmentDefinition" && api_version == NAD_API_VERSION {
            let config = match &object["spec"]["config"] {
                Value::Null => None,
                Value::String(config) => Some(config.clone()),
                other => return Err(not_a_string(&["spec", "config"], other)),
            };
            return Ok(Some(Self::Nad(NadSubject {
                annotations: annotations(&object["metadata"], &["metadata"])?,
                namespace,
                name,
                config,
            })));
        }
        let (metadata_at, is_template): (&'static [&'static str], bool) =
            if kind == "Pod" && api_version == "v1" {
                (&["metadata"], false)
            } else if let Some((_, _, at)) = TEMPLATES
                .iter()
                .find(|(v, k, _)| *v == api_version && *k == kind)
            {
                (at, true)
            } else {
                return Ok(None);
            };
        let metadata = metadata_at.iter().fold(object, |value, key| &value[*key]);
        let parsed_namespace = Namespace::parse(&namespace).map_err(|e| SubjectError {
            field: "metadata.namespace".into(),
            problem: e.to_string(),
            path: vec!["metadata".into(), "namespace".into()],
        })?;
        let label = if is_template {
            format!("{namespace}/{name} ({kind}'s pod template)")
        } else {
            format!("{namespace}/{name}")
        };
        Ok(Some(Self::Pod(PodSubject {
            label,
            namespace: parsed_namespace,
            annotations: annotations(metadata, metadata_at)?,
            metadata_at,
            is_template,
        })))
    }
}

/// `metadata.name`, or for an object whose name the API server will generate, its prefix.
fn object_name(metadata: &Value) -> String {
    match (metadata["name"].as_str(), metadata["generateName"].as_str()) {
        (Some(name), _) if !name.is_empty() => name.to_owned(),
        (_, Some(prefix)) if !prefix.is_empty() => format!("{prefix}(generated)"),
        _ => "(unnamed)".to_owned(),
    }
}

fn annotations(
    metadata: &Value,
    metadata_at: &[&str],
) -> Result<BTreeMap<String, String>, SubjectError> {
    let mut out = BTreeMap::new();
    let Some(map) = metadata["annotations"].as_object() else {
        return Ok(out);
    };
    for (key, value) in map {
        match value {
            Value::String(text) => {
                out.insert(key.clone(), text.clone());
            }
            other if CHECKED_ANNOTATIONS.contains(&key.as_str()) => {
                let mut path: Vec<&str> = metadata_at.to_vec();
                path.extend(["annotations", key.as_str()]);
                return Err(not_a_string(&path, other));
            }
            _ => {}
        }
    }
    Ok(out)
}

fn not_a_string(path: &[&str], found: &Value) -> SubjectError {
    SubjectError {
        field: path.join("."),
        problem: format!("is {found}, not a string"),
        path: path.iter().map(|k| (*k).to_owned()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nads_pods_and_pod_templates_are_read_other_kinds_are_not() {
        let nad = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "a", "annotations": {"x": "y"}}, "spec": {"config": "{}"}});
        let Some(Subject::Nad(nad)) = Subject::from_object(&nad, "default").unwrap() else {
            panic!("not a NAD");
        };
        assert_eq!(nad.label(), "default/a");
        assert_eq!(nad.config.as_deref(), Some("{}"));

        let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c", "namespace": "t"},
            "spec": {"jobTemplate": {"spec": {"template": {"metadata": {"annotations": {NETWORKS_ANNOTATION: "a"}}}}}}});
        let Some(Subject::Pod(pod)) = Subject::from_object(&cron, "default").unwrap() else {
            panic!("not a pod template");
        };
        assert_eq!(pod.label, "t/c (CronJob's pod template)");
        assert!(pod.is_template);
        assert_eq!(pod.annotations[NETWORKS_ANNOTATION], "a");

        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"}});
        let Some(Subject::Pod(pod)) = Subject::from_object(&pod, "tenant").unwrap() else {
            panic!("not a pod");
        };
        assert_eq!(pod.label, "tenant/web-(generated)");
        assert!(!pod.is_template);

        for other in [
            json!({"apiVersion": "v1", "kind": "ConfigMap"}),
            json!({"apiVersion": "example.com/v1", "kind": "Pod"}),
            json!({"name": "a plexusd config"}),
        ] {
            assert_eq!(
                Subject::from_object(&other, "default").unwrap(),
                None,
                "{other}"
            );
        }
    }

    #[test]
    fn a_checked_value_that_is_not_a_string_is_an_error_naming_the_field() {
        let nad = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "a"}, "spec": {"config": {"type": "bridge"}}});
        let error = Subject::from_object(&nad, "default").unwrap_err();
        assert_eq!(error.field, "spec.config");
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "annotations": {NETWORKS_ANNOTATION: ["a"], "other": 1}}});
        let error = Subject::from_object(&pod, "default").unwrap_err();
        assert_eq!(error.path, ["metadata", "annotations", NETWORKS_ANNOTATION]);
        assert!(error.to_string().contains("not a string"), "{error}");
    }
}
