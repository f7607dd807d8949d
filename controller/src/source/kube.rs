//! The `kube` source: NADs and this node's pods from the API server, through kube-rs
//! reflectors, plus the writes back to the pods (network-status and events).
//!
//! Lookups answer from the caches; only a miss (kubelet often runs CNI before the pod's watch
//! event arrives) costs one GET. Writes never hold up a CNI answer: they run in the background
//! and the status write is retried until it lands or the pod is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use futures::future::BoxFuture;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use plexus_crds::NetworkAttachmentDefinition;

use super::claim_status::ClaimStatusWriter;
use super::dra::Dra;
use super::events::EventWriter;
use super::pod_object::PodObject;
use super::writes::{Bounded, LatestWins, Outcome, WriteFn};
use super::{PodEvent, PodInfo, Readiness, Source, SourceError};
use crate::devices::claims::{ClaimCatalog, ClaimRef, DeviceNetworkData};
use crate::names::{Namespace, ObjectName, PodKey};
use crate::status::{NETWORK_STATUS_ANNOTATION, NetworkStatus};

/// Status patches and events in flight at once; more wait (status: the latest per pod).
const STATUS_WRITERS: usize = 2;
const EVENT_WRITERS: usize = 2;
/// Events waiting past that; more are dropped (and logged), as client-go's broadcaster does.
const EVENT_QUEUE: usize = 1000;

/// A pod's network-status as it is to be written: its uid, if known, and the entries.
type StatusWrite = (Option<String>, serde_json::Value);

pub struct KubeSource {
    client: Client,
    nads: Store<NetworkAttachmentDefinition>,
    pods: Store<PodObject>,
    health: Arc<Health>,
    events: Arc<EventWriter>,
    /// One status patch per pod in flight, the latest one (`writes`).
    status_writes: LatestWins<PodKey, StatusWrite>,
    event_writes: Bounded,
    /// Every pod the watch brings, once the cache holds its new state.
    pod_updates: tokio::sync::broadcast::Sender<PodKey>,
    /// ResourceClaims and ResourceSlices, when DRA is on.
    dra: Option<Arc<Dra>>,
    claim_status: Arc<ClaimStatusWriter>,
}

/// What the watches report about themselves.
#[derive(Default)]
pub(super) struct Health {
    nads_synced: AtomicBool,
    pods_synced: AtomicBool,
    errors: Mutex<HashMap<&'static str, String>>,
}

impl Health {
    pub(super) fn has_error(&self, watch: &'static str) -> bool {
        self.errors
            .lock()
            .map(|e| e.contains_key(watch))
            .unwrap_or(false)
    }

    pub(super) fn set_error(&self, watch: &'static str, error: Option<String>) {
        if let Ok(mut errors) = self.errors.lock() {
            match error {
                Some(error) => errors.insert(watch, error),
                None => errors.remove(watch),
            };
        }
    }
}

impl KubeSource {
    /// Starts the NAD and pod watches; the source is ready once both have listed. With `dra`,
    /// the ResourceClaim and ResourceSlice watches too, once the API server says it serves them.
    pub fn start(client: Client, node_name: &str, dra: bool) -> Arc<Self> {
        let health = Arc::new(Health::default());
        let nads = spawn_reflector(
            Api::<NetworkAttachmentDefinition>::all(client.clone()),
            watcher::Config::default(),
            "nads",
            Arc::clone(&health),
            |nad: &mut NetworkAttachmentDefinition| nad.metadata.managed_fields = None,
            |_| {},
        );
        let pod_updates = tokio::sync::broadcast::Sender::new(super::POD_UPDATES_BACKLOG);
        let updates = pod_updates.clone();
        // Only this node's pods: memory stays flat however many pods the cluster runs.
        let pods = spawn_reflector(
            Api::<PodObject>::all(client.clone()),
            watcher::Config::default().fields(&format!("spec.nodeName={node_name}")),
            "pods",
            Arc::clone(&health),
            // Nothing to strip: a `PodObject` is built of what the cache keeps.
            |_| {},
            move |event| {
                if let Some(key) = changed_pod(event) {
                    let _ = updates.send(key);
                }
            },
        );
        let events = EventWriter::new(client.clone(), "plexus", node_name);
        let dra = dra.then(|| Dra::start(client.clone(), node_name, Arc::clone(&health)));
        let claim_status = Arc::new(ClaimStatusWriter::new(client.clone()));
        let status_writes = LatestWins::start(STATUS_WRITERS, status_writer(client.clone()));
        let source = Arc::new(Self {
            client,
            nads,
            pods,
            health,
            events: Arc::new(events),
            status_writes,
            event_writes: Bounded::start(EVENT_WRITERS, EVENT_QUEUE),
            pod_updates,
            dra,
            claim_status,
        });
        source.watch_readiness();
        source
    }

    fn watch_readiness(&self) {
        for (store, flag) in [
            (self.nads.clone().wait_until_ready_boxed(), "nads"),
            (self.pods.clone().wait_until_ready_boxed(), "pods"),
        ] {
            let health = Arc::clone(&self.health);
            tokio::spawn(async move {
                if store.await.is_ok() {
                    let synced = if flag == "nads" {
                        &health.nads_synced
                    } else {
                        &health.pods_synced
                    };
                    synced.store(true, Ordering::Release);
                    tracing::info!(watch = flag, "cache synced");
                }
            });
        }
    }

    fn pod_api(&self, namespace: &Namespace) -> Api<PodObject> {
        Api::namespaced(self.client.clone(), namespace.as_str())
    }
}

/// Writes a pod's network-status until it lands, the pod is gone or was replaced, or a newer
/// status takes its place (`writes::LatestWins`).
fn status_writer(client: Client) -> WriteFn<PodKey, StatusWrite> {
    Arc::new(move |pod: PodKey, (uid, body): StatusWrite| {
        let client = client.clone();
        Box::pin(async move {
            match write_status(client, &pod, uid.as_deref(), &body).await {
                Ok(()) => {
                    tracing::debug!(%pod, "network-status written");
                    Outcome::Done
                }
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 422 => {
                    tracing::info!(%pod, code = status.code, "pod gone or replaced; network-status not written");
                    Outcome::Abandon
                }
                Err(error) => {
                    tracing::warn!(%pod, %error, "network-status write failed; retrying");
                    Outcome::Retry
                }
            }
        })
    })
}

async fn write_status(
    client: Client,
    pod: &PodKey,
    uid: Option<&str>,
    body: &serde_json::Value,
) -> Result<(), kube::Error> {
    let mut patch = serde_json::json!({ "metadata": { "annotations": {
        NETWORK_STATUS_ANNOTATION: body.to_string()
    }}});
    // The uid is immutable, so naming it makes the patch fail on a pod of the same name
    // that replaced ours, instead of writing our status onto it.
    if let Some(uid) = uid {
        patch["metadata"]["uid"] = uid.into();
    }
    Api::<PodObject>::namespaced(client, pod.namespace.as_str())
        .patch(
            pod.name.as_str(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map(drop)
}

/// The pod a watch event is about; a relist brings every pod again, so nothing changed
/// while the watch was down goes unnoticed.
fn changed_pod(event: &watcher::Event<PodObject>) -> Option<PodKey> {
    match event {
        watcher::Event::Apply(pod)
        | watcher::Event::InitApply(pod)
        | watcher::Event::Delete(pod) => pod.key(),
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

fn spawn_reflector<K>(
    api: Api<K>,
    config: watcher::Config,
    name: &'static str,
    health: Arc<Health>,
    strip: fn(&mut K),
    on_event: impl Fn(&watcher::Event<K>) + Send + 'static,
) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let probe = Probe::new(api.clone(), &config, name, health);
    let stream = watcher(api, config)
        .default_backoff()
        .modify(strip)
        .reflect(writer)
        // After `reflect`: the store holds the event's object by the time it is told.
        .inspect_ok(move |event| on_event(event));
    follow(stream, probe);
    reader
}

/// Drives a watch stream for as long as plexusd runs. A failure is reported in readiness
/// (the watch retries with backoff), and while it lasts the probe notices when the API server
/// is back.
pub(super) fn follow<K, T>(
    stream: impl futures::Stream<Item = Result<T, watcher::Error>> + Send + 'static,
    probe: Probe<K>,
) where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default,
    T: Send,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut probing = None;
        let (name, health) = (probe.name, Arc::clone(&probe.health));
        loop {
            match stream.try_next().await {
                Ok(Some(_)) => health.set_error(name, None),
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(watch = name, %error, "watch failed; retrying with backoff");
                    health.set_error(name, Some(error.to_string()));
                    if probing
                        .as_ref()
                        .is_none_or(tokio::task::JoinHandle::is_finished)
                    {
                        probing = Some(tokio::spawn(probe.clone().until_reachable()));
                    }
                }
            }
        }
    });
}

/// While a watch is failing: a resumed watch on an idle resource yields nothing, so nothing
/// would tell that the API server is back. One small list per second, only while degraded,
/// tells it, with the watch's own credentials and permissions.
#[derive(Clone)]
pub(super) struct Probe<K: Clone> {
    api: Api<K>,
    params: ListParams,
    name: &'static str,
    health: Arc<Health>,
}

const PROBE_INTERVAL: Duration = Duration::from_secs(1);

impl<K> Probe<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    /// A probe for the watch `name` of `api` with `config`'s selectors.
    pub(super) fn new(
        api: Api<K>,
        config: &watcher::Config,
        name: &'static str,
        health: Arc<Health>,
    ) -> Self {
        Self {
            api,
            params: probe_params(config),
            name,
            health,
        }
    }

    async fn until_reachable(self) {
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            if !self.health.has_error(self.name) {
                return;
            }
            if self.api.list_metadata(&self.params).await.is_ok() {
                tracing::info!(watch = self.name, "API server reachable again");
                self.health.set_error(self.name, None);
                return;
            }
        }
    }
}

fn probe_params(config: &watcher::Config) -> ListParams {
    let mut params = ListParams::default().limit(1);
    if let Some(fields) = &config.field_selector {
        params = params.fields(fields);
    }
    params
}

fn lookup_error(error: kube::Error) -> SourceError {
    SourceError::Lookup(error.to_string())
}

impl Source for KubeSource {
    fn pod<'a>(
        &'a self,
        key: &'a PodKey,
        uid: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Arc<PodInfo>>, SourceError>> {
        Box::pin(async move {
            let cached = self
                .pods
                .get(&ObjectRef::new(key.name.as_str()).within(key.namespace.as_str()));
            // A cached pod of the same name but another uid is an older incarnation.
            let fresh = cached.filter(|pod| uid.is_none() || pod.metadata.uid.as_deref() == uid);
            let pod = match fresh {
                Some(pod) => pod,
                None => {
                    tracing::debug!(pod = %key, "pod cache miss; asking the API server");
                    match self
                        .pod_api(&key.namespace)
                        .get_opt(key.name.as_str())
                        .await
                        .map_err(lookup_error)?
                    {
                        Some(pod) => Arc::new(pod),
                        None => return Ok(None),
                    }
                }
            };
            Ok(pod.info().map(Arc::new))
        })
    }

    fn nad<'a>(
        &'a self,
        namespace: &'a Namespace,
        name: &'a ObjectName,
    ) -> BoxFuture<'a, Result<Option<Arc<NetworkAttachmentDefinition>>, SourceError>> {
        Box::pin(async move {
            if let Some(nad) = self
                .nads
                .get(&ObjectRef::new(name.as_str()).within(namespace.as_str()))
            {
                return Ok(Some(nad));
            }
            let api: Api<NetworkAttachmentDefinition> =
                Api::namespaced(self.client.clone(), namespace.as_str());
            Ok(api
                .get_opt(name.as_str())
                .await
                .map_err(lookup_error)?
                .map(Arc::new))
        })
    }

    fn readiness(&self) -> Readiness {
        let synced = self.health.nads_synced.load(Ordering::Acquire)
            && self.health.pods_synced.load(Ordering::Acquire);
        let mut problems: Vec<String> = self
            .health
            .errors
            .lock()
            .map(|e| {
                e.iter()
                    .map(|(watch, error)| format!("{watch} watch: {error}"))
                    .collect()
            })
            .unwrap_or_default();
        problems.sort();
        let mut counts = vec![("nads", self.nads.len()), ("pods", self.pods.len())];
        if let Some(dra) = &self.dra {
            counts.extend(dra.counts());
        }
        Readiness {
            ready: synced,
            connected: problems.is_empty(),
            counts,
            problems,
        }
    }

    fn publish_status(self: Arc<Self>, pod: &PodKey, uid: Option<&str>, status: &[NetworkStatus]) {
        let Ok(body) = serde_json::to_value(status) else {
            return;
        };
        self.status_writes
            .submit(pod.clone(), (uid.map(str::to_owned), body));
    }

    fn pod_updates(&self) -> Option<tokio::sync::broadcast::Receiver<PodKey>> {
        Some(self.pod_updates.subscribe())
    }

    fn publish_event(self: Arc<Self>, pod: &PodKey, uid: Option<&str>, event: PodEvent) {
        let (pod, uid) = (pod.clone(), uid.map(str::to_owned));
        let events = Arc::clone(&self.events);
        let queued = self.event_writes.submit(Box::pin(async move {
            if let Err(error) = events.publish(&pod, uid.as_deref(), event).await {
                tracing::warn!(%pod, %error, "event not recorded");
            }
        }));
        if !queued {
            let dropped = self.event_writes.dropped();
            tracing::warn!(dropped, "event queue full; event dropped");
        }
    }

    fn claims(&self) -> Option<&dyn ClaimCatalog> {
        self.dra
            .as_deref()
            .filter(|dra| dra.may_serve())
            .map(|dra| dra as &dyn ClaimCatalog)
    }

    fn publish_claim_status(self: Arc<Self>, claim: &ClaimRef, devices: Vec<DeviceNetworkData>) {
        self.claim_status.publish(claim, devices);
    }
}

/// Lets `Store::wait_until_ready` be awaited from a spawned task.
trait WaitReady {
    fn wait_until_ready_boxed(self) -> BoxFuture<'static, Result<(), ()>>;
}

impl<K> WaitReady for Store<K>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    fn wait_until_ready_boxed(self) -> BoxFuture<'static, Result<(), ()>> {
        Box::pin(async move { self.wait_until_ready().await.map_err(drop) })
    }
}

/// Why the API server cannot be reached from the configured credentials.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        path: std::path::PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("no in-cluster service account: {0}")]
    InCluster(#[from] kube::config::InClusterError),
    #[error("cannot build the API client: {0}")]
    Client(#[from] kube::Error),
}

/// A client from a kubeconfig, or else from the pod's service account. Either way a token
/// file is re-read as it rotates (kube-rs reloads it every minute).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig_err = |source| ClientError::Kubeconfig {
                path: path.to_owned(),
                source,
            };
            let raw = kube::config::Kubeconfig::read_from(path).map_err(kubeconfig_err)?;
            kube::Config::from_custom_kubeconfig(raw, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(kubeconfig_err)?
        }
        None => kube::Config::incluster()?,
    };
    Ok(Client::try_from(config)?)
}
