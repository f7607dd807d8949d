//! Adopting the pods Multus attached: its per-container cache becomes a Plexus record, so DEL,
//! CHECK, GC and the network-status read-back work for them exactly as for Plexus's own.
//!
//! At start every container in Multus's cache that has no record is adopted; a DEL for a
//! container without a record looks there too. Multus's files stay where they are; a marker
//! per adopted container (`recordsDir/adopted/<id>`) keeps a pod that Plexus has deleted
//! from being adopted again at the next start. A marker goes when Multus's file does.

use std::fs;
use std::io;
use std::path::PathBuf;

use serde_json::Value;

use super::{Error, Plexus};
use crate::attach::normalize_result;
use crate::clock::Timestamp;
use crate::cni::{CniResult, CniVersion};
use crate::multus::{CachedDelegate, CachedPod, MultusCache, MultusError};
use crate::names::{ContainerId, IfName};
use crate::records::{Adoption, Attached, Attachment, Origin, PodRecord, RecordError};
use crate::request::{CniArgs, CniRequest};
use crate::resolve::{self, Delegate, Unversioned};
use crate::status::{self, NetworkStatus};

#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error(transparent)]
    Cache(#[from] MultusError),
    #[error("Multus cache {path}: {source}")]
    Network { path: PathBuf, source: Box<Error> },
    #[error("Multus cache {path}: its pod is named in CNI_ARGS, but not validly: {reason}")]
    Pod { path: PathBuf, reason: String },
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error("cannot mark {path} as adopted: {source}")]
    Mark { path: PathBuf, source: io::Error },
}

/// What the start-up pass did, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Adopted {
    pub adopted: usize,
    pub skipped: usize,
}

/// What a DEL knows about the container that the cache may not: the runtime's interface,
/// netns, CNI_ARGS and version.
struct Runtime<'a> {
    ifname: Option<&'a IfName>,
    netns: &'a str,
    args: CniArgs,
    version: Option<CniVersion>,
}

impl Plexus {
    fn multus_cache(&self) -> Option<MultusCache> {
        self.config.multus_cache_dir.as_ref().map(MultusCache::new)
    }

    fn adoption_marks(&self) -> PathBuf {
        self.records.dir().join("adopted")
    }

    /// At start: adopts every container of Multus's cache that Plexus has no record of and
    /// has not adopted before. A cache that cannot be read is logged and skipped.
    pub async fn adopt_from_multus(&self) -> Adopted {
        let mut done = Adopted::default();
        let Some(cache) = self.multus_cache() else {
            return done;
        };
        let ids = match cache.containers() {
            Ok(ids) => ids,
            Err(error) => {
                tracing::warn!(%error, "cannot list Multus's cache; nothing adopted");
                return done;
            }
        };
        self.forget_marks_without_cache(&cache);
        for id in ids {
            let _container = self.locks.lock(&id).await;
            match self.adopt_unless_known(&cache, &id).await {
                Ok(true) => done.adopted += 1,
                Ok(false) => {}
                Err(error) => {
                    done.skipped += 1;
                    tracing::warn!(container = %id, %error, "Multus cache skipped");
                }
            }
        }
        if done != Adopted::default() {
            tracing::info!(
                adopted = done.adopted,
                skipped = done.skipped,
                dir = %cache.dir().display(),
                "pods attached by Multus adopted"
            );
        }
        done
    }

    async fn adopt_unless_known(
        &self,
        cache: &MultusCache,
        id: &ContainerId,
    ) -> Result<bool, AdoptError> {
        if let Some(record) = self.records.load(id)? {
            // A crash between writing an adopted record and its mark.
            if record.adopted.is_some() {
                self.mark_adopted(id)?;
            }
            return Ok(false);
        }
        if self.was_adopted(id) {
            return Ok(false);
        }
        let Some(pod) = cache.read(id)? else {
            return Ok(false);
        };
        let runtime = Runtime {
            ifname: None,
            netns: "",
            args: CniArgs::default(),
            version: None,
        };
        self.adopt(id, pod, &runtime).await?;
        Ok(true)
    }

    /// DEL of a container without a record: Multus's cache, if it has one Plexus has not
    /// adopted yet, becomes its record first. `None` when there is nothing to adopt; a cache
    /// that cannot be read is logged and the DEL goes on without it.
    pub(super) async fn adopt_for_del(&self, request: &CniRequest) -> Option<PodRecord> {
        let cache = self.multus_cache()?;
        let id = request.container_id.as_ref()?;
        if self.was_adopted(id) {
            return None;
        }
        let runtime = Runtime {
            ifname: request.ifname.as_ref(),
            netns: &request.netns,
            args: request.args.clone(),
            version: Some(request.conf.cni_version),
        };
        let adopted = match cache.read(id) {
            Ok(Some(pod)) => self.adopt(id, pod, &runtime).await,
            Ok(None) => return None,
            Err(error) => Err(error.into()),
        };
        adopted
            .inspect_err(|error| tracing::warn!(container = %id, %error, "Multus cache skipped; DEL goes on without it"))
            .ok()
    }

    async fn adopt(
        &self,
        id: &ContainerId,
        pod: CachedPod,
        runtime: &Runtime<'_>,
    ) -> Result<PodRecord, AdoptError> {
        for note in &pod.notes {
            tracing::warn!(container = %id, "{note}");
        }
        let record = self.adopted_record(id, &pod, runtime).await?;
        self.records.save(&record)?;
        self.mark_adopted(id)?;
        tracing::info!(container = %id, pod = ?record.pod.as_ref().map(ToString::to_string), from = %pod.path.display(), attachments = record.attachments.len(), "adopted a pod Multus attached");
        Ok(record)
    }

    async fn adopted_record(
        &self,
        id: &ContainerId,
        pod: &CachedPod,
        runtime: &Runtime<'_>,
    ) -> Result<PodRecord, AdoptError> {
        let cluster_cache = pod.delegates.first().and_then(|d| d.cached.as_ref());
        // The runtime's own CNI_ARGS name the pod; without a DEL, the cluster network's
        // result cache holds the ones Multus got.
        let args = match cluster_cache {
            Some(cached) if runtime.args.raw.is_empty() => CniArgs::parse(&cached.cni_args),
            _ => runtime.args.clone(),
        };
        let pod_key = args.pod().map_err(|e| AdoptError::Pod {
            path: pod.path.clone(),
            reason: e.details,
        })?;
        let uid = args.get("K8S_POD_UID").map(str::to_owned);
        let runtime_ifname = runtime
            .ifname
            .cloned()
            .or_else(|| cluster_cache.map(|c| c.ifname.clone()))
            .unwrap_or_else(kubernetes_ifname);
        let attached = Attached {
            at: Timestamp::from_system(pod.written),
            took_us: None,
        };
        let mut attachments = Vec::with_capacity(pod.delegates.len());
        let mut statuses = Vec::with_capacity(pod.delegates.len());
        for (position, cached) in pod.delegates.iter().enumerate() {
            let delegate = self
                .adopted_delegate(pod, position, cached, &runtime_ifname, &args)
                .await?;
            let result = cached
                .cached
                .as_ref()
                .and_then(|c| c.result.as_ref())
                .and_then(|r| normalize_result(r.to_string().as_bytes(), delegate.version).ok());
            statuses.push(status_of(&delegate, result.as_ref()));
            attachments.push(Attachment {
                delegate,
                result,
                // Multus's cache does not say which delegates came from its defaultNetworks:
                // hot-plug tells them apart by plexusd's own `defaultNetworks`.
                origin: (position == 0).then_some(Origin::ClusterNetwork),
                pending: None,
                attached: Some(attached),
            });
        }
        let netns = cluster_cache
            .and_then(|c| c.netns.clone())
            .filter(|_| runtime.netns.is_empty())
            .unwrap_or_else(|| runtime.netns.to_owned());
        let runtime_version = runtime
            .version
            .or_else(|| attachments.first().map(|a| a.delegate.version))
            .unwrap_or(CniVersion::LATEST);
        Ok(PodRecord {
            container_id: id.clone(),
            ifname: runtime_ifname,
            netns,
            pod: pod_key,
            pod_uid: uid,
            adopted: Some(Adoption {
                from: pod.path.clone(),
                at: Timestamp::now(),
            }),
            runtime_version,
            attachments,
            network_status: statuses,
            deleting: false,
            intent: None,
        })
    }

    /// One of Multus's delegates as Plexus would have resolved it: the same config, interface,
    /// CNI_ARGS and runtimeConfig, so its DEL is the one Multus would have sent.
    async fn adopted_delegate(
        &self,
        pod: &CachedPod,
        position: usize,
        cached: &CachedDelegate,
        runtime_ifname: &IfName,
        args: &CniArgs,
    ) -> Result<Delegate, AdoptError> {
        let network_err = |source: Error| AdoptError::Network {
            path: pod.path.clone(),
            source: Box::new(source),
        };
        let unversioned = Unversioned::parse(&cached.network, &cached.config_name, &cached.config)
            .map_err(|e| network_err(e.into()))?;
        let network = self
            .settle_version(unversioned)
            .await
            .map_err(network_err)?;
        let (cni_args, runtime_config) = match &cached.cached {
            Some(c) => (c.cni_args.clone(), c.runtime_config.clone()),
            None => (
                resolve::delegate_cni_args(&args.raw, None),
                cached.requests.clone(),
            ),
        };
        Ok(Delegate {
            network: network.label,
            is_default: position == 0,
            ifname: cached
                .ifname
                .clone()
                .unwrap_or_else(|| runtime_ifname.clone()),
            version: network.version,
            config: network.raw,
            runtime_config,
            args_cni: None,
            cni_args,
            default_route: cached.default_route.clone(),
            // Multus put any device id into the cached config already; the device-info file
            // it wrote stays Multus's.
            device: None,
        })
    }

    fn mark_path(&self, id: &ContainerId) -> PathBuf {
        self.adoption_marks().join(id.as_str())
    }

    fn was_adopted(&self, id: &ContainerId) -> bool {
        self.mark_path(id).exists()
    }

    fn mark_adopted(&self, id: &ContainerId) -> Result<(), AdoptError> {
        let path = self.mark_path(id);
        let mark_err = |source| AdoptError::Mark {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(self.adoption_marks()).map_err(mark_err)?;
        fs::write(&path, b"").map_err(mark_err)
    }

    /// Marks whose Multus file the operator has removed are no longer needed.
    fn forget_marks_without_cache(&self, cache: &MultusCache) {
        let Ok(entries) = fs::read_dir(self.adoption_marks()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !cache.dir().join(&name).exists() {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// The network-status entry of an adopted attachment, from its ADD result when cached.
fn status_of(delegate: &Delegate, result: Option<&Value>) -> NetworkStatus {
    let parsed = result
        .and_then(|r| CniResult::parse(r.to_string().as_bytes(), delegate.version).ok())
        .map(|(r, _)| r);
    status::status_entry(
        &delegate.network,
        delegate.is_default,
        parsed.as_ref(),
        delegate.default_route.as_deref(),
    )
}

/// The runtime's interface when nothing says otherwise: Kubernetes always asks for eth0.
fn kubernetes_ifname() -> IfName {
    IfName::parse("eth0").unwrap_or_else(|_| IfName::numbered(0))
}
