//! The metadata plexusd reads of an object, from the API server or a manifest file alike: its
//! identity, its annotations and the resource version a watch resumes from. Labels, owners
//! and the managed fields (often most of an object's metadata) are skipped while parsing
//! rather than built and thrown away.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct Metadata {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

impl From<Metadata> for ObjectMeta {
    fn from(metadata: Metadata) -> Self {
        let Metadata {
            name,
            namespace,
            uid,
            resource_version,
            annotations,
        } = metadata;
        ObjectMeta {
            name,
            namespace,
            uid,
            resource_version,
            annotations,
            ..ObjectMeta::default()
        }
    }
}

/// For `#[serde(deserialize_with)]` on a kube-rs object's `metadata`: only [`Metadata`] built.
pub(super) fn object_meta<'de, D: Deserializer<'de>>(from: D) -> Result<ObjectMeta, D::Error> {
    Metadata::deserialize(from).map(ObjectMeta::from)
}
