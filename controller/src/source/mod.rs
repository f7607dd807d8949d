//! Where NADs and pods come from. `files` reads manifests from a directory; `kube` follows the
//! API server. Both sit behind one trait, so resolution never knows which one it talks to.

mod claim_status;
mod dra;
mod events;
pub mod files;
pub mod kube;
mod metadata;
mod pod_object;
pub mod writes;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use plexus_crds::NetworkAttachmentDefinition;

use crate::devices::claims::{ClaimCatalog, ClaimRef, DeviceNetworkData, PodClaim};
use crate::names::{Namespace, ObjectName, PodKey};
use crate::status::NetworkStatus;

/// What plexusd needs to know about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub key: PodKey,
    pub uid: Option<String>,
    pub annotations: BTreeMap<String, String>,
    /// Its DRA resource claims (the kube source only).
    pub claims: Vec<PodClaim>,
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
    /// The source has loaded once and can serve ADD (from its cache, at worst stale).
    pub ready: bool,
    /// The source is following its origin right now; false while, say, the API server is
    /// unreachable and the caches age.
    pub connected: bool,
    /// How many objects of each kind the source holds.
    pub counts: Vec<(&'static str, usize)>,
    /// Problems that do not stop the source, e.g. a manifest that does not parse.
    pub problems: Vec<String>,
}

impl Readiness {
    /// What the source holds, for operators: `nads=3 pods=2`.
    pub fn summary(&self) -> String {
        self.counts
            .iter()
            .map(|(kind, n)| format!("{kind}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// An event about a pod, for the people who run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub action: &'static str,
    pub message: String,
}

/// Answers lookups for resolution, and takes what Plexus reports back about pods.
/// Implementations answer from a cache where they can.
pub trait Source: Send + Sync {
    /// The pod `key`; with `uid`, an older pod of the same name does not count.
    fn pod<'a>(
        &'a self,
        key: &'a PodKey,
        uid: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Arc<PodInfo>>, SourceError>>;

    fn nad<'a>(
        &'a self,
        namespace: &'a Namespace,
        name: &'a ObjectName,
    ) -> BoxFuture<'a, Result<Option<Arc<NetworkAttachmentDefinition>>, SourceError>>;

    fn readiness(&self) -> Readiness;

    /// Publishes a pod's network-status. It must not delay the CNI answer: implementations
    /// write in the background and retry. A source without pod objects to write to keeps
    /// nothing; the record holds the status either way.
    fn publish_status(
        self: Arc<Self>,
        _pod: &PodKey,
        _uid: Option<&str>,
        _status: &[NetworkStatus],
    ) {
    }

    /// Records an event on the pod, best effort, in the background.
    fn publish_event(self: Arc<Self>, _pod: &PodKey, _uid: Option<&str>, _event: PodEvent) {}

    /// The pods that changed (or appeared, or went) from now on, each once its new state is
    /// what [`Source::pod`] answers. A receiver that falls behind is told it lagged and must
    /// look at every pod again. `None`: this source does not follow pods.
    fn pod_updates(&self) -> Option<tokio::sync::broadcast::Receiver<PodKey>> {
        None
    }

    /// The pods' DRA ResourceClaims and the ResourceSlices describing their devices, when the
    /// source follows them.
    fn claims(&self) -> Option<&dyn ClaimCatalog> {
        None
    }

    /// Publishes the KEP-4817 status of the devices Plexus attached from `claim` (none: it has
    /// none attached any more). Like network-status, in the background and retried.
    fn publish_claim_status(self: Arc<Self>, _claim: &ClaimRef, _devices: Vec<DeviceNetworkData>) {}
}

/// How many pod updates may wait for a slow listener before it is told it lagged.
pub const POD_UPDATES_BACKLOG: usize = 4096;
