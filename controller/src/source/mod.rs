//! Where NADs and pods come from. `files` reads manifests from a directory; a Kubernetes
//! source plugs in behind the same trait.

pub mod files;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use plexus_crds::NetworkAttachmentDefinition;

use crate::names::{Namespace, ObjectName, PodKey};

/// What plexusd needs to know about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub key: PodKey,
    pub uid: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

impl PodInfo {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    #[error("source not ready: {0}")]
    NotReady(String),
    #[error("source lookup failed: {0}")]
    Lookup(String),
}

/// Whether the source can answer, and what it found wrong on the way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// What the source holds, for operators, e.g. `nads=3 pods=2`.
    pub summary: String,
    /// Problems that do not stop the source, e.g. a manifest that does not parse.
    pub problems: Vec<String>,
}

/// Answers lookups for resolution. Implementations answer from a cache where they can.
pub trait Source: Send + Sync {
    fn pod<'a>(
        &'a self,
        key: &'a PodKey,
    ) -> BoxFuture<'a, Result<Option<Arc<PodInfo>>, SourceError>>;

    fn nad<'a>(
        &'a self,
        namespace: &'a Namespace,
        name: &'a ObjectName,
    ) -> BoxFuture<'a, Result<Option<Arc<NetworkAttachmentDefinition>>, SourceError>>;

    fn readiness(&self) -> Readiness;
}
