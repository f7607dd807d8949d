//! The CNI commands as plexusd carries them out: source -> selection -> resolution ->
//! attachment -> records. The server turns requests into calls here and errors into answers.
//! One module per command; `networks` is what ADD resolves a pod's networks with.

mod add;
mod adopt;
mod check;
mod del;
mod devices;
mod gc;
mod hotplug;
mod inspect;
mod networks;

use std::sync::Arc;

pub use adopt::{AdoptError, Adopted};
pub use hotplug::{Followed, HotplugFailure, Operation, PodChanges};

use crate::attach::{AttachError, DetachFailure};
use crate::cni::{CniError, Executor, code};
use crate::confdir::ConfDirError;
use crate::config::Config;
use crate::devices::DeviceError;
use crate::devices::devinfo::DeviceInfoDir;
use crate::devices::podresources::PodResources;
use crate::failures::RecentFailures;
use crate::locks::ContainerLocks;
use crate::names::{ContainerId, IfName, NameError, Namespace, NetworkRef, PodKey};
use crate::netlink::NetlinkError;
use crate::records::{RecordError, RecordStore};
use crate::request::CniRequest;
use crate::resolve::ResolveError;
use crate::selection::{NETWORKS_ANNOTATION, SelectionError};
use crate::source::{Source, SourceError};
use crate::status::NetworkStatus;

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
    Devices(#[from] DeviceError),
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
    #[error("cannot write to the records directory {dir}, so nothing was attached: {source}")]
    RecordsUnwritable {
        dir: std::path::PathBuf,
        source: RecordError,
    },
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
            Self::Devices(e) => e.cni_code(),
            Self::Attach(e) => e.cni_code(),
            Self::DefaultRoute { .. } | Self::Records(_) | Self::RecordsUnwritable { .. } => {
                code::IO_FAILURE
            }
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
            Self::Devices(_) => "devices",
            Self::Attach(_) => "delegate",
            Self::DefaultRoute { .. } | Self::NoGateway { .. } => "default_route",
            Self::Records(_) | Self::RecordsUnwritable { .. } => "records",
            Self::Detach(_) => "detach",
            Self::UnknownContainer(_) => "unknown_container",
            Self::NotReady(_) => "not_ready",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A container whose ADD has just been recorded, for hot-plug to compare with its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub pod: PodKey,
    pub container: ContainerId,
}

/// How many ADD notifications may wait for hot-plug; a listener that falls further behind
/// is told so and looks at every record again.
const RECORDED_BACKLOG: usize = 1024;

/// Everything a CNI command needs, shared by all requests.
pub struct Plexus {
    config: Config,
    default_networks: Vec<NetworkRef>,
    source: Arc<dyn Source>,
    executor: Arc<dyn Executor>,
    records: RecordStore,
    /// Device plugins' devices, from the kubelet.
    kubelet: PodResources,
    devinfo: DeviceInfoDir,
    locks: ContainerLocks,
    /// GC excludes ADD and DEL (CNI §3 Lifecycle, exception): they hold it shared, GC alone.
    gc_gate: Arc<tokio::sync::RwLock<()>>,
    /// Every ADD that recorded a pod's container, once its record is written.
    recorded: tokio::sync::broadcast::Sender<Recorded>,
    /// The last failed ADDs, for `plexusd inspect`.
    failures: RecentFailures,
}

impl Plexus {
    pub fn new(
        config: Config,
        source: Arc<dyn Source>,
        executor: Arc<dyn Executor>,
        records: RecordStore,
    ) -> Result<Self, String> {
        let default_networks = config.default_network_refs()?;
        let kubelet = PodResources::new(
            config.pod_resources_socket.clone(),
            config.pod_resources_timeout(),
        );
        let devinfo = DeviceInfoDir::new(config.device_info_dir.clone());
        Ok(Self {
            config,
            default_networks,
            source,
            executor,
            records,
            kubelet,
            devinfo,
            locks: ContainerLocks::default(),
            gc_gate: Default::default(),
            recorded: tokio::sync::broadcast::Sender::new(RECORDED_BACKLOG),
            failures: RecentFailures::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn source(&self) -> &dyn Source {
        self.source.as_ref()
    }

    /// The containers recorded by ADD from now on.
    pub fn subscribe_recorded(&self) -> tokio::sync::broadcast::Receiver<Recorded> {
        self.recorded.subscribe()
    }

    /// Every container with a record, and its pod when the runtime named one. Unreadable
    /// records are logged and left to DEL and GC.
    pub fn recorded_containers(&self) -> Result<Vec<(ContainerId, Option<PodKey>)>> {
        let mut found = Vec::new();
        for record in self.records.list()? {
            match record {
                Ok(record) => found.push((record.container_id, record.pod)),
                Err(error) => tracing::warn!(%error, "record skipped"),
            }
        }
        Ok(found)
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
