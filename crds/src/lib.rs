//! The NetworkAttachmentDefinition custom resource of the NPWG multi-net spec (NPWG §3.1).
//!
//! The CRD YAML in `crd.yaml` is generated from this type by `crdgen`; a test keeps them equal.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `spec` of a NetworkAttachmentDefinition.
///
/// `config` is a JSON CNI config or conflist as a string. It may be absent or empty: then the
/// network is the conf file in the CNI conf dir whose JSON `name` is the object's name
/// (NPWG §3.4.1).
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1",
    kind = "NetworkAttachmentDefinition",
    plural = "network-attachment-definitions",
    singular = "network-attachment-definition",
    shortname = "net-attach-def",
    shortname = "nad",
    namespaced,
    schema = "derived"
)]
pub struct NetworkAttachmentDefinitionSpec {
    /// A JSON-formatted CNI configuration (a single plugin config or a conflist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

impl NetworkAttachmentDefinition {
    /// The inline CNI config, or `None` when the spec leaves it to a conf file.
    pub fn inline_config(&self) -> Option<&str> {
        self.spec.config.as_deref().filter(|c| !c.trim().is_empty())
    }
}

/// The CRD as the YAML document that `kubectl apply` takes.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    use kube::CustomResourceExt;
    serde_saphyr::to_string(&NetworkAttachmentDefinition::crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_crd_yaml_matches_the_rust_type() {
        let generated = crd_yaml().expect("CRD serializes");
        let checked_in = include_str!("../crd.yaml");
        assert_eq!(
            checked_in, generated,
            "crds/crd.yaml is stale: regenerate it with `cargo run -p plexus-crds --bin crdgen > crds/crd.yaml`"
        );
    }

    #[test]
    fn crd_has_the_names_the_spec_requires() {
        use kube::CustomResourceExt;
        let crd = NetworkAttachmentDefinition::crd();
        assert_eq!(crd.spec.group, "k8s.cni.cncf.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, "NetworkAttachmentDefinition");
        assert_eq!(crd.spec.names.plural, "network-attachment-definitions");
        let short = crd.spec.names.short_names.unwrap_or_default();
        assert!(short.contains(&"net-attach-def".to_owned()));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1");
        assert!(version.served && version.storage);
    }

    #[test]
    fn a_nad_without_spec_config_is_accepted() {
        let nad: NetworkAttachmentDefinition = serde_json::from_str(
            r#"{"apiVersion":"k8s.cni.cncf.io/v1","kind":"NetworkAttachmentDefinition",
                "metadata":{"name":"a","namespace":"b"},"spec":{}}"#,
        )
        .unwrap();
        assert_eq!(nad.inline_config(), None);
    }
}
