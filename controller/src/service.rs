//! The CNI commands as plexusd carries them out: source -> selection -> resolution ->
//! attachment -> records. The server turns requests into calls here and errors into answers.

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value;
use tracing::Instrument;

use crate::attach::{self, AttachError, DetachFailure, Target};
use crate::cni::{CniError, CniResult, Executor, code};
use crate::confdir::{self, ConfDirError};
use crate::config::Config;
use crate::locks::{ContainerGuard, ContainerLocks};
use crate::names::{ContainerId, IfName, NameError, Namespace, NetworkRef, ObjectName, PodKey};
use crate::netlink::{self, NetlinkError};
use crate::records::{Attachment, PodRecord, RecordError, RecordStore};
use crate::request::CniRequest;
use crate::resolve::{self, Delegate, Network, PodContext, ResolveError, Unversioned};
use crate::selection::{self, NETWORKS_ANNOTATION, Selection, SelectionError};
use crate::source::{PodEvent, PodInfo, Source, SourceError};
use crate::status::{self, NetworkStatus};

/// The namespace of a pod the runtime did not name (no K8S_POD_NAMESPACE in CNI_ARGS).
const FALLBACK_NAMESPACE: &str = "default";

/// Multus's annotation that replaces the cluster network for one pod.
pub const DEFAULT_NETWORK_ANNOTATION: &str = "v1.multus-cni.io/default-network";

/// Who a network is resolved for, for isolation checks and error messages.
#[derive(Clone, Copy)]
struct Asking<'a> {
    pod: &'a str,
    namespace: &'a Namespace,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Request(CniError),
    #[error("pod {pod}: invalid {NETWORKS_ANNOTATION} annotation: {source}")]
    Selection {
        pod: String,
        source: Box<SelectionError>,
    },
    #[error("pod {pod}: network {network} not found: no NetworkAttachmentDefinition {network}")]
    UnknownNetwork { pod: String, network: String },
    #[error("pod {pod}: {source}")]
    Source { pod: String, source: SourceError },
    #[error("pod {pod}: invalid {DEFAULT_NETWORK_ANNOTATION} annotation: {source}")]
    DefaultNetwork { pod: String, source: NameError },
    #[error(
        "pod {pod} may not use network {network}: namespace isolation allows only the pod's own namespace and the global namespaces"
    )]
    Isolated { pod: String, network: String },
    #[error("network {network}: {source}")]
    ConfDir {
        network: String,
        source: ConfDirError,
    },
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error("network {network}: cannot move the default route to {ifname}: {source}")]
    DefaultRoute {
        network: String,
        ifname: IfName,
        source: NetlinkError,
    },
    #[error(
        "network {network}: default-route asks for the result's gateway, but the result has none"
    )]
    NoGateway { network: String },
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error("{} of the pod's attachments could not be deleted: {}", .0.len(), join(.0))]
    Detach(Vec<DetachFailure>),
    #[error("container {0} has no attachments to check")]
    UnknownContainer(ContainerId),
    #[error("not ready: {0}")]
    NotReady(String),
}

fn join(failures: &[DetachFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// The CNI error the runtime gets; a delegate's own code is kept.
    pub fn to_cni(&self) -> CniError {
        if let Self::Request(e) = self {
            return e.clone();
        }
        let details = match self {
            Self::Attach(e) => e.stderr().trim().to_owned(),
            _ => String::new(),
        };
        CniError::new(self.cni_code(), self.to_string(), details)
    }

    pub fn cni_code(&self) -> u32 {
        match self {
            Self::Request(e) => e.code,
            Self::Selection { .. }
            | Self::DefaultNetwork { .. }
            | Self::Isolated { .. }
            | Self::UnknownNetwork { .. }
            | Self::ConfDir { .. }
            | Self::NoGateway { .. } => code::INVALID_CONFIG,
            Self::Source { .. } => code::TRY_AGAIN_LATER,
            Self::Resolve(e) => e.cni_code(),
            Self::Attach(e) => e.cni_code(),
            Self::DefaultRoute { .. } | Self::Records(_) => code::IO_FAILURE,
            Self::Detach(failures) => failures
                .first()
                .map_or(code::INTERNAL, |f| f.error.cni_code()),
            Self::UnknownContainer(_) => code::UNKNOWN_CONTAINER,
            Self::NotReady(_) => code::NOT_AVAILABLE,
        }
    }

    /// A short, fixed label per kind of failure, for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Request(_) => "request",
            Self::Selection { .. } | Self::DefaultNetwork { .. } => "selection",
            Self::Isolated { .. } => "isolation",
            Self::UnknownNetwork { .. } => "unknown_network",
            Self::Source { .. } => "source",
            Self::ConfDir { .. } => "conf_dir",
            Self::Resolve(_) => "resolve",
            Self::Attach(_) => "delegate",
            Self::DefaultRoute { .. } | Self::NoGateway { .. } => "default_route",
            Self::Records(_) => "records",
            Self::Detach(_) => "detach",
            Self::UnknownContainer(_) => "unknown_container",
            Self::NotReady(_) => "not_ready",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a CNI command needs, shared by all requests.
pub struct Plexus {
    config: Config,
    default_networks: Vec<NetworkRef>,
    source: Arc<dyn Source>,
    executor: Arc<dyn Executor>,
    records: RecordStore,
    locks: ContainerLocks,
    /// GC excludes ADD and DEL (CNI §3 Lifecycle, exception): they hold it shared, GC alone.
    gc_gate: Arc<tokio::sync::RwLock<()>>,
}

impl Plexus {
    pub fn new(
        config: Config,
        source: Arc<dyn Source>,
        executor: Arc<dyn Executor>,
        records: RecordStore,
    ) -> Result<Self, String> {
        let default_networks = config.default_network_refs()?;
        Ok(Self {
            config,
            default_networks,
            source,
            executor,
            records,
            locks: ContainerLocks::default(),
            gc_gate: Default::default(),
        })
    }

    pub fn source(&self) -> &dyn Source {
        self.source.as_ref()
    }

    fn attachment_of(request: &CniRequest) -> Result<(&ContainerId, &IfName)> {
        // CniRequest::parse guarantees both for ADD, DEL and CHECK.
        match (&request.container_id, &request.ifname) {
            (Some(id), Some(ifname)) => Ok((id, ifname)),
            _ => Err(Error::Request(CniError::new(
                code::INVALID_ENVIRONMENT,
                "CNI_CONTAINERID and CNI_IFNAME are required",
                "",
            ))),
        }
    }

    /// ADD: attaches every network and returns the result for the runtime. What happened is
    /// also told to the pod: its network-status and an event per interface or failure.
    pub async fn add(&self, request: &CniRequest) -> Result<Vec<u8>> {
        let (id, ifname) = Self::attachment_of(request)?;
        let container = self.locks.lock(id).await;
        let gc = Arc::clone(&self.gc_gate).read_owned().await;
        self.clean_leftovers(id, &request.netns).await?;
        let pod_key = request.args.pod().map_err(Error::Request)?;
        let runtime_uid = request.args.get("K8S_POD_UID");
        let pod = self.pod_info(pod_key.as_ref(), runtime_uid).await?;
        let uid = runtime_uid.or_else(|| pod.as_ref().and_then(|p| p.uid.as_deref()));
        let outcome = self
            .attach_pod(request, id, ifname, pod_key.as_ref(), pod.as_deref())
            .await;
        if let Some(key) = &pod_key {
            match &outcome {
                Ok((_, record)) => self.tell_pod_attached(key, uid, &record.network_status),
                Err(error) => self.tell_pod_failed(key, uid, error),
            }
        }
        let (reply, record) = outcome?;
        self.save_after_reply(record, container, gc);
        Ok(reply)
    }

    /// Writes the record with the results once the reply is on its way. The intent, written
    /// and fsynced before any delegate ran, already lets DEL and GC undo everything after a
    /// crash, so the runtime does not wait for a second round of fsyncs; what a crash in between
    /// loses is only the results, which CHECK and the network-status read-back use. The
    /// container's lock and the GC gate stay held until the write is done, so every later
    /// operation on the container (DEL, CHECK, GC, another ADD, the read-back) sees it.
    fn save_after_reply(
        &self,
        record: PodRecord,
        container: ContainerGuard,
        gc: tokio::sync::OwnedRwLockReadGuard<()>,
    ) {
        let records = self.records.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(error) = records.save(&record) {
                tracing::error!(container = %record.container_id, %error, "the ADD's results were not recorded; DEL and GC still work from its intent");
            }
            drop((container, gc));
        });
    }

    async fn attach_pod(
        &self,
        request: &CniRequest,
        id: &ContainerId,
        ifname: &IfName,
        pod_key: Option<&PodKey>,
        pod: Option<&PodInfo>,
    ) -> Result<(Vec<u8>, PodRecord)> {
        let delegates = self.resolve(request, ifname, pod_key, pod).await?;
        let mut record = PodRecord {
            container_id: id.clone(),
            ifname: ifname.clone(),
            netns: request.netns.clone(),
            pod: pod_key.cloned(),
            runtime_version: request.conf.cni_version,
            attachments: delegates
                .iter()
                .cloned()
                .map(Attachment::intended)
                .collect(),
            network_status: Vec::new(),
        };
        // The intent covers every delegate before any runs: after a crash, DEL undoes them all,
        // and DEL of a delegate that never ran is harmless.
        self.records.save(&record)?;
        let target = Target {
            container_id: id.as_str(),
            netns: &request.netns,
        };
        let results = match self.attach_and_route(&delegates, target).await {
            Ok(results) => results,
            Err((error, leftovers)) => {
                self.keep_only(record, leftovers)?;
                return Err(error);
            }
        };
        let (reply, statuses) = self.report(request, &delegates, &results)?;
        for (attachment, result) in record.attachments.iter_mut().zip(results) {
            attachment.result = Some(result);
        }
        record.network_status = statuses;
        Ok((reply, record))
    }

    fn tell_pod_attached(&self, pod: &PodKey, uid: Option<&str>, statuses: &[NetworkStatus]) {
        Arc::clone(&self.source).publish_status(pod, uid, statuses);
        for status in statuses {
            let message = format!(
                "Add {} [{}] from {}",
                status.interface.as_deref().unwrap_or("-"),
                status.ips.join(","),
                status.name
            );
            let event = PodEvent {
                warning: false,
                reason: "AddedInterface",
                action: "Attach",
                message,
            };
            Arc::clone(&self.source).publish_event(pod, uid, event);
        }
    }

    fn tell_pod_failed(&self, pod: &PodKey, uid: Option<&str>, error: &Error) {
        let message = error.to_string();
        let event = PodEvent {
            warning: true,
            reason: "NetworkAttachFailed",
            action: "Attach",
            message,
        };
        Arc::clone(&self.source).publish_event(pod, uid, event);
    }

    /// A record left by an ADD that crashed or was retried without DEL: undo it first, so the
    /// new ADD starts clean and nothing of the old one leaks.
    async fn clean_leftovers(&self, id: &ContainerId, netns: &str) -> Result<()> {
        if let Some(stale) = self.records.load(id)? {
            tracing::warn!(container = %id, "ADD for a container that has a record; deleting the old attachments first");
            self.detach_record(stale, netns).await?;
        }
        Ok(())
    }

    /// Runs the delegates and moves the default route. On failure everything is rolled back,
    /// and what the rollback could not remove comes back with the error.
    async fn attach_and_route(
        &self,
        delegates: &[Delegate],
        target: Target<'_>,
    ) -> Result<Vec<Value>, (Error, Vec<Attachment>)> {
        let exec = self.executor.as_ref();
        let results = attach::attach_all(exec, delegates, target)
            .await
            .map_err(|failure| (Error::Attach(failure.error), failure.leftovers))?;
        if let Err(error) = self
            .move_default_route(delegates, &results, target.netns)
            .await
        {
            let done = delegates
                .iter()
                .cloned()
                .zip(results)
                .map(|(d, r)| Attachment::added(d, r));
            let leftovers = attach::rollback(exec, done.collect(), target).await;
            return Err((error, leftovers));
        }
        Ok(results)
    }

    /// After a failed ADD: the record keeps only what the rollback could not remove, so the
    /// runtime's DEL retries exactly that; with nothing left, the record goes.
    fn keep_only(&self, mut record: PodRecord, leftovers: Vec<Attachment>) -> Result<()> {
        if leftovers.is_empty() {
            return Ok(self.records.remove(&record.container_id)?);
        }
        record.attachments = leftovers;
        Ok(self.records.save(&record)?)
    }

    async fn move_default_route(
        &self,
        delegates: &[Delegate],
        results: &[Value],
        netns: &str,
    ) -> Result<()> {
        let Some((delegate, result)) = delegates
            .iter()
            .zip(results)
            .find(|(d, _)| d.default_route.is_some())
        else {
            return Ok(());
        };
        let mut gateways: Vec<IpAddr> = delegate.default_route.clone().unwrap_or_default();
        if gateways.is_empty() {
            // An empty list is not defined by the spec; like Multus, use the result's gateways.
            gateways = parse_result(delegate, result)?
                .ips
                .iter()
                .filter_map(|ip| ip.gateway)
                .collect();
        }
        if gateways.is_empty() {
            return Err(Error::NoGateway {
                network: delegate.network.clone(),
            });
        }
        netlink::move_default_route(netns, delegate.ifname.as_str(), gateways)
            .await
            .map_err(|source| Error::DefaultRoute {
                network: delegate.network.clone(),
                ifname: delegate.ifname.clone(),
                source,
            })
    }

    /// The runtime's reply and the network-status entries, from the delegates' results.
    fn report(
        &self,
        request: &CniRequest,
        delegates: &[Delegate],
        results: &[Value],
    ) -> Result<(Vec<u8>, Vec<NetworkStatus>)> {
        let mut parsed = Vec::with_capacity(results.len());
        let mut statuses = Vec::with_capacity(results.len());
        for (delegate, result) in delegates.iter().zip(results) {
            let result = parse_result(delegate, result)?;
            let moved = delegate
                .default_route
                .as_ref()
                .map(|_| delegate_gateways(delegate, &result));
            statuses.push(status::status_entry(
                &delegate.network,
                delegate.is_default,
                Some(&result),
                moved.as_deref(),
            ));
            parsed.push(result);
        }
        let prev = match &request.conf.prev_result {
            Some(prev) => Some(
                CniResult::parse(prev.to_string().as_bytes(), request.conf.cni_version)
                    .map(|(r, _)| r)
                    .map_err(|e| {
                        Error::Request(CniError::new(
                            code::DECODING_FAILURE,
                            "cannot decode prevResult",
                            e.to_string(),
                        ))
                    })?,
            ),
            None => None,
        };
        let moved_gateways: Vec<IpAddr> = statuses
            .iter()
            .flat_map(|s| s.default_route.iter().flatten())
            .filter_map(|gw| gw.parse().ok())
            .collect();
        let mut parsed = parsed.into_iter();
        let cluster = parsed.next().unwrap_or_default();
        let merged = status::merged_result(prev, cluster, parsed.collect(), &moved_gateways);
        Ok((merged.to_bytes(request.conf.cni_version), statuses))
    }

    async fn pod_info(
        &self,
        key: Option<&PodKey>,
        uid: Option<&str>,
    ) -> Result<Option<Arc<PodInfo>>> {
        let Some(key) = key else { return Ok(None) };
        let pod = self
            .source
            .pod(key, uid)
            .await
            .map_err(|source| Error::Source {
                pod: key.to_string(),
                source,
            })?;
        if pod.is_none() {
            tracing::info!(pod = %key, "pod not known to the source; attaching the cluster network only");
        }
        Ok(pod)
    }

    /// The pod's delegates: cluster network, default networks, then its selections.
    async fn resolve(
        &self,
        request: &CniRequest,
        ifname: &IfName,
        pod_key: Option<&PodKey>,
        pod: Option<&PodInfo>,
    ) -> Result<Vec<Delegate>> {
        let pod_label = pod_key.map_or_else(|| "(unnamed)".to_owned(), ToString::to_string);
        let namespace = pod_key.map_or_else(
            || Namespace::well_known(FALLBACK_NAMESPACE),
            |k| k.namespace.clone(),
        );
        let asking = Asking {
            pod: &pod_label,
            namespace: &namespace,
        };
        let cluster = self.cluster_network(pod, Some(asking)).await?;
        let mut secondaries = Vec::new();
        // plexusd's own default networks are the operator's choice: no isolation applies.
        for network in &self.default_networks {
            let (nad_namespace, name) = network.in_namespace(&namespace);
            let resolved = self.nad_network(&nad_namespace, &name, asking).await?;
            secondaries.push((Selection::new(network.clone()), resolved));
        }
        for selection in self.selections(pod, &pod_label)? {
            let (nad_namespace, name) = selection.network.in_namespace(&namespace);
            self.check_isolation(asking, &nad_namespace, &name)?;
            let resolved = self.nad_network(&nad_namespace, &name, asking).await?;
            secondaries.push((selection, resolved));
        }
        let cni_args =
            resolve::delegate_cni_args(&request.args.raw, pod.and_then(|p| p.uid.as_deref()));
        let context = PodContext {
            runtime_ifname: ifname,
            runtime_config: &request.conf.runtime_config,
            cni_args: &cni_args,
        };
        Ok(resolve::plan(cluster, secondaries, &context)?)
    }

    fn selections(&self, pod: Option<&PodInfo>, pod_label: &str) -> Result<Vec<Selection>> {
        let Some(annotation) = pod.and_then(|p| p.annotation(NETWORKS_ANNOTATION)) else {
            return Ok(Vec::new());
        };
        selection::parse_networks(annotation).map_err(|source| Error::Selection {
            pod: pod_label.to_owned(),
            source: Box::new(source),
        })
    }

    fn check_isolation(
        &self,
        asking: Asking<'_>,
        namespace: &Namespace,
        name: &ObjectName,
    ) -> Result<()> {
        if self.config.may_use(asking.namespace, namespace) {
            return Ok(());
        }
        Err(Error::Isolated {
            pod: asking.pod.to_owned(),
            network: format!("{namespace}/{name}"),
        })
    }

    /// The cluster network: Multus's `v1.multus-cni.io/default-network` annotation when the
    /// pod has one, else plexusd's `clusterNetwork`, else the first conf in the conf dir.
    async fn cluster_network(
        &self,
        pod: Option<&PodInfo>,
        asking: Option<Asking<'_>>,
    ) -> Result<Network> {
        let asking = asking.unwrap_or(Asking {
            pod: "(none)",
            namespace: &self.config.system_namespace,
        });
        if let Some(annotation) = pod.and_then(|p| p.annotation(DEFAULT_NETWORK_ANNOTATION)) {
            let network =
                NetworkRef::parse(annotation.trim()).map_err(|source| Error::DefaultNetwork {
                    pod: asking.pod.to_owned(),
                    source,
                })?;
            let (namespace, name) = network.in_namespace(&self.config.system_namespace);
            self.check_isolation(asking, &namespace, &name)?;
            return self.nad_network(&namespace, &name, asking).await;
        }
        let wanted = self.config.cluster_network.as_deref();
        let conf_error = |source| Error::ConfDir {
            network: wanted.unwrap_or("(cluster network)").to_owned(),
            source,
        };
        let file = match wanted {
            Some(path) if path.starts_with('/') => {
                confdir::load(std::path::Path::new(path)).map_err(conf_error)?
            }
            Some(reference) if reference.contains('/') => {
                let network =
                    NetworkRef::parse(reference).map_err(|source| Error::DefaultNetwork {
                        pod: "clusterNetwork".to_owned(),
                        source,
                    })?;
                let (namespace, name) = network.in_namespace(&self.config.system_namespace);
                return self.nad_network(&namespace, &name, asking).await;
            }
            _ => match confdir::cluster_network(&self.config.cni_conf_dir, wanted) {
                Ok(file) => file,
                Err(error @ ConfDirError::NoSuchNetwork { .. }) => {
                    // Multus also takes a bare clusterNetwork as a NAD in its own namespace.
                    let name = wanted
                        .and_then(|w| ObjectName::parse(w).ok())
                        .ok_or_else(|| conf_error(error))?;
                    return self
                        .nad_network(&self.config.system_namespace, &name, asking)
                        .await;
                }
                Err(error) => return Err(conf_error(error)),
            },
        };
        let name = file.name().unwrap_or_default().to_owned();
        self.settle_version(Unversioned::parse(&name, &name, &file.bytes)?)
            .await
    }

    /// A NAD's network: its inline config, or the conf file of its name (NPWG §3.4.1).
    async fn nad_network(
        &self,
        namespace: &Namespace,
        name: &ObjectName,
        asking: Asking<'_>,
    ) -> Result<Network> {
        let label = format!("{namespace}/{name}");
        let nad = self
            .source
            .nad(namespace, name)
            .await
            .map_err(|source| Error::Source {
                pod: asking.pod.to_owned(),
                source,
            })?
            .ok_or_else(|| Error::UnknownNetwork {
                pod: asking.pod.to_owned(),
                network: label.clone(),
            })?;
        let bytes = match nad.inline_config() {
            Some(inline) => inline.as_bytes().to_vec(),
            None => {
                confdir::find_by_name(&self.config.cni_conf_dir, name.as_str())
                    .map_err(|source| Error::ConfDir {
                        network: label.clone(),
                        source,
                    })?
                    .bytes
            }
        };
        self.settle_version(Unversioned::parse(&label, name.as_str(), &bytes)?)
            .await
    }

    async fn settle_version(&self, network: Unversioned) -> Result<Network> {
        let supported = match network.version {
            Some(_) => Vec::new(),
            None => {
                self.executor
                    .supported_versions(network.first_plugin())
                    .await
            }
        };
        Ok(network.with_plugin_versions(&supported)?)
    }

    /// DEL: undoes whatever the record says was attached. Succeeds for a container never seen.
    pub async fn del(&self, request: &CniRequest) -> Result<()> {
        let (id, _) = Self::attachment_of(request)?;
        let _container = self.locks.lock(id).await;
        let _gc = self.gc_gate.read().await;
        match self.records.load(id)? {
            Some(record) => self.detach_record(record, &request.netns).await,
            None => {
                self.del_unrecorded(request).await;
                Ok(())
            }
        }
    }

    /// A container with no record was attached before Plexus ran on this node (by Multus,
    /// say), or never. The cluster network's DEL goes out anyway, as Multus sends it without
    /// a cache, so a pod from before the switch does not leak its address. DEL must succeed
    /// for a container never seen, so a failure here is only logged.
    async fn del_unrecorded(&self, request: &CniRequest) {
        let (Some(id), Some(ifname)) = (&request.container_id, &request.ifname) else {
            return;
        };
        let cluster = match self.cluster_network(None, None).await {
            Ok(cluster) => cluster,
            Err(error) => {
                tracing::debug!(%error, "DEL without a record and without a cluster network");
                return;
            }
        };
        let cni_args = resolve::delegate_cni_args(&request.args.raw, None);
        let pod = PodContext {
            runtime_ifname: ifname,
            runtime_config: &request.conf.runtime_config,
            cni_args: &cni_args,
        };
        let delegate = resolve::cluster_delegate(cluster, &pod);
        let target = Target {
            container_id: id.as_str(),
            netns: &request.netns,
        };
        if let Err(error) = attach::del_chain(self.executor.as_ref(), &delegate, None, target).await
        {
            tracing::warn!(container = %id, %error, "DEL of the cluster network for a container without a record failed");
        }
    }

    /// Deletes every attachment of the record; what could not be deleted stays recorded, so
    /// the runtime's next DEL tries exactly those again.
    async fn detach_record(&self, mut record: PodRecord, netns: &str) -> Result<()> {
        let target = Target {
            container_id: record.container_id.as_str(),
            netns,
        };
        let span = tracing::info_span!("detach_pod", container = %record.container_id, pod = ?record.pod.as_ref().map(ToString::to_string));
        let failures = attach::detach_all(self.executor.as_ref(), &record.attachments, target)
            .instrument(span)
            .await;
        if failures.is_empty() {
            self.records.remove(&record.container_id)?;
            return Ok(());
        }
        let failed: Vec<usize> = failures.iter().map(|f| f.index).collect();
        record.attachments = record
            .attachments
            .into_iter()
            .enumerate()
            .filter(|(i, _)| failed.contains(i))
            .map(|(_, a)| a)
            .collect();
        self.records.save(&record)?;
        Err(Error::Detach(failures))
    }

    /// CHECK: every recorded attachment, in ADD order, against its ADD result.
    pub async fn check(&self, request: &CniRequest) -> Result<()> {
        let (id, _) = Self::attachment_of(request)?;
        let _container = self.locks.lock(id).await;
        let record = self
            .records
            .load(id)?
            .ok_or_else(|| Error::UnknownContainer(id.clone()))?;
        let target = Target {
            container_id: id.as_str(),
            netns: &request.netns,
        };
        for attachment in &record.attachments {
            let result = attachment
                .result
                .as_ref()
                .ok_or_else(|| Error::UnknownContainer(id.clone()))?;
            attach::check_chain(self.executor.as_ref(), &attachment.delegate, result, target)
                .await?;
        }
        Ok(())
    }

    /// STATUS: ready when the source is and the cluster network's plugins say so.
    pub async fn status(&self) -> Result<()> {
        let readiness = self.source.readiness();
        if !readiness.ready {
            return Err(Error::NotReady(format!(
                "the source has not loaded: {}",
                readiness.problems.join("; ")
            )));
        }
        let cluster = self
            .cluster_network(None, None)
            .await
            .map_err(|e| Error::NotReady(e.to_string()))?;
        // STATUS carries no container parameters; the ones here never reach the plugin.
        let no_pod = PodContext {
            runtime_ifname: &IfName::numbered(0),
            runtime_config: &Default::default(),
            cni_args: "",
        };
        let delegate = resolve::cluster_delegate(cluster, &no_pod);
        attach::status_chain(self.executor.as_ref(), &delegate)
            .await
            .map_err(|e| Error::NotReady(e.to_string()))
    }

    /// GC: fully deletes every recorded attachment the runtime no longer lists, then lets each
    /// delegate network collect its own garbage with the pairs still valid for it.
    pub async fn gc(&self, request: &CniRequest) -> Result<()> {
        let valid = request.conf.valid_attachments.clone().unwrap_or_default();
        let _exclusive = self.gc_gate.write().await;
        let mut failures = Vec::new();
        let mut kept = Vec::new();
        for record in self.records.list()? {
            let record = record?;
            let listed = valid
                .iter()
                .any(|(c, i)| c == record.container_id.as_str() && i == record.ifname.as_str());
            if listed {
                kept.push(record);
                continue;
            }
            tracing::info!(container = %record.container_id, "GC: attachment not in the valid list; deleting");
            let netns = record.netns.clone();
            match self.detach_record(record, &netns).await {
                Ok(()) => {}
                Err(Error::Detach(mut f)) => failures.append(&mut f),
                Err(other) => return Err(other),
            }
        }
        failures.extend(
            attach::gc_networks(self.executor.as_ref(), &kept)
                .await
                .into_iter()
                .map(|error| DetachFailure { index: 0, error }),
        );
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Detach(failures))
        }
    }

    /// How many containers have records, for the metrics.
    pub fn record_count(&self) -> usize {
        self.records.count()
    }

    /// The network-status entries recorded for a container (after the operation on it that
    /// is under way, if any, has finished writing its record).
    pub async fn network_status(&self, id: &ContainerId) -> Result<Option<Vec<NetworkStatus>>> {
        let _container = self.locks.lock(id).await;
        Ok(self.records.load(id)?.map(|r| r.network_status))
    }
}

fn parse_result(delegate: &Delegate, result: &Value) -> Result<CniResult> {
    CniResult::parse(result.to_string().as_bytes(), delegate.version)
        .map(|(r, _)| r)
        .map_err(|e| {
            Error::Attach(AttachError::BadResult {
                network: delegate.network.clone(),
                ifname: delegate.ifname.to_string(),
                command: crate::cni::Command::Add,
                plugin: "(recorded result)".into(),
                reason: e.to_string(),
            })
        })
}

/// The gateways a default-route selection ended up with, for network-status.
fn delegate_gateways(delegate: &Delegate, result: &CniResult) -> Vec<IpAddr> {
    match delegate.default_route.as_deref() {
        Some(gateways) if !gateways.is_empty() => gateways.to_vec(),
        _ => result.ips.iter().filter_map(|ip| ip.gateway).collect(),
    }
}
