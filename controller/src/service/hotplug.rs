//! Hot-plug: a running pod's recorded attachments brought in line with its networks
//! annotation. New selections go through the same resolution, ADD, default-route and rollback
//! code as at pod start; removed ones through the same DEL as at teardown. It runs under the
//! container's lock, like every CNI command, and records its intent before any delegate runs:
//! an attachment marked `Attach` or `Detach` is in an unknown state after a crash, and the
//! next reconcile undoes (`Attach`) or finishes (`Detach`) it before anything else.

use std::net::IpAddr;
use std::sync::Arc;

use tracing::Instrument;

use super::add::{parse_result, status_of};
use super::{Asking, Error, Plexus, Result};
use crate::attach::{self, Target};
use crate::cni::CniResult;
use crate::devices::{Device, DeviceSource, Need};
use crate::hotplug::plan::{self, Held, Role, Wanted};
use crate::names::{ContainerId, IfName};
use crate::netlink;
use crate::records::{Attachment, Origin, Pending, PodRecord};
use crate::resolve::{self, Delegate, ResolveError};
use crate::selection::Selection;
use crate::source::PodInfo;
use crate::status::{self, NETWORK_STATUS_ANNOTATION, NetworkStatus};

/// What a hot-plug step did to one attachment, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Attach,
    Detach,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attach => "attach",
            Self::Detach => "detach",
        }
    }
}

/// One attachment hot-plug could not add or remove.
#[derive(Debug)]
pub struct HotplugFailure {
    /// The network as `namespace/name` (for an annotation that does not parse: the pod).
    pub network: String,
    pub operation: Operation,
    pub error: Error,
    /// Whether trying again may succeed without the annotation changing (a NAD that does
    /// not exist yet, a delegate that fails); a refused interface name or an invalid
    /// annotation waits for the annotation to change instead.
    pub retry: bool,
}

/// What one reconcile changed in a pod.
#[derive(Debug, Default)]
pub struct PodChanges {
    /// Networks attached, as `namespace/name`.
    pub attached: Vec<String>,
    pub detached: Vec<String>,
    pub failures: Vec<HotplugFailure>,
}

impl PodChanges {
    pub fn worth_retrying(&self) -> bool {
        self.failures.iter().any(|f| f.retry)
    }

    fn changed(&self) -> bool {
        !self.attached.is_empty() || !self.detached.is_empty()
    }

    fn fail(&mut self, network: &str, operation: Operation, error: Error, retry: bool) {
        tracing::warn!(network, operation = operation.as_str(), %error, "hot-plug failed");
        self.failures.push(HotplugFailure {
            network: network.to_owned(),
            operation,
            error,
            retry,
        });
    }
}

/// Whether hot-plug acted on a container, and if not, why.
#[derive(Debug)]
pub enum Followed {
    /// The container has no record (its DEL came first), or the record is of another pod.
    NoRecord,
    /// The record belongs to an earlier pod of the same name (another uid).
    OtherPod,
    /// A DEL of the container started and could not finish: the pod is being torn down.
    Deleting,
    Done(PodChanges),
}

/// The interface events and status a change produced, for the pod.
#[derive(Default)]
struct Report {
    added: Vec<NetworkStatus>,
    removed: Vec<NetworkStatus>,
}

impl Plexus {
    /// Brings container `id`'s attachments in line with `pod`'s networks annotation: new
    /// selections attached, removed ones detached, the others untouched. The pod then gets
    /// its network-status and an event per interface that came or went, and a Warning event
    /// per failure.
    pub async fn follow_annotation(&self, id: &ContainerId, pod: &PodInfo) -> Result<Followed> {
        let _container = self.locks.lock(id).await;
        let _gc = self.gc_gate.read().await;
        let Some(mut record) = self.records.load(id)? else {
            return Ok(Followed::NoRecord);
        };
        if record.pod.as_ref() != Some(&pod.key) {
            return Ok(Followed::NoRecord);
        }
        if record.deleting {
            return Ok(Followed::Deleting);
        }
        if !same_pod(&record, pod) {
            return Ok(Followed::OtherPod);
        }
        let span = tracing::info_span!("hotplug", container = %id, pod = %pod.key);
        async {
            let mut changes = PodChanges::default();
            let mut report = Report::default();
            let recovered = self
                .undo_interrupted(&mut record, &mut changes, &mut report)
                .await;
            let planned = self
                .change_toward(&mut record, pod, &mut changes, &mut report)
                .await?;
            if recovered && !planned {
                self.save_changed(&mut record)?;
            }
            self.tell_pod_changed(&record, pod.uid.as_deref(), &changes, &report);
            if !changes.changed() {
                self.republish_if_stale(&record, pod);
            }
            Ok(Followed::Done(changes))
        }
        .instrument(span)
        .await
    }

    /// After a restart: finishes or undoes what a hot-plug change left in flight in
    /// container `id`'s record, whether or not hot-plug is on now.
    pub async fn finish_interrupted(&self, id: &ContainerId) -> Result<PodChanges> {
        let _container = self.locks.lock(id).await;
        let _gc = self.gc_gate.read().await;
        let mut changes = PodChanges::default();
        let Some(mut record) = self.records.load(id)? else {
            return Ok(changes);
        };
        // A pod being torn down: its DEL deletes these attachments with the rest.
        if record.deleting || record.attachments.iter().all(|a| a.pending.is_none()) {
            return Ok(changes);
        }
        let span = tracing::info_span!("hotplug_recovery", container = %id);
        let mut report = Report::default();
        if self
            .undo_interrupted(&mut record, &mut changes, &mut report)
            .instrument(span)
            .await
        {
            self.save_changed(&mut record)?;
            let uid = record.pod_uid.clone();
            self.tell_pod_changed(&record, uid.as_deref(), &changes, &report);
        }
        Ok(changes)
    }

    /// An attachment still marked `Attach` was being added when plexusd stopped: it may be
    /// half made, so it is undone (and made again if the annotation still asks for it).
    /// Then every attachment marked `Detach` is deleted. Returns whether the record changed.
    async fn undo_interrupted(
        &self,
        record: &mut PodRecord,
        changes: &mut PodChanges,
        report: &mut Report,
    ) -> bool {
        let mut interrupted = false;
        for attachment in &mut record.attachments {
            if attachment.pending.is_some() {
                interrupted = true;
            }
            if attachment.pending == Some(Pending::Attach) {
                tracing::info!(network = %attachment.delegate.network, ifname = %attachment.delegate.ifname, "undoing a hot-plug ADD that was interrupted");
                attachment.pending = Some(Pending::Detach);
            }
        }
        if interrupted {
            self.run_detaches(record, changes, report).await;
        }
        interrupted
    }

    /// Plans and carries out the change; returns whether the record was written.
    async fn change_toward(
        &self,
        record: &mut PodRecord,
        pod: &PodInfo,
        changes: &mut PodChanges,
        report: &mut Report,
    ) -> Result<bool> {
        let label = pod.key.to_string();
        let selections = match self.selections(Some(pod), &label) {
            Ok(selections) => selections,
            Err(error) => {
                // Nothing is detached on an annotation that does not parse: what it means is
                // unknown, and tearing the pod's networks down would be the worst guess.
                changes.fail(&label, Operation::Attach, error, false);
                return Ok(false);
            }
        };
        let asking = Asking {
            pod: &label,
            namespace: &pod.key.namespace,
        };
        let held: Vec<Held> = record.attachments.iter().map(|a| self.held(a)).collect();
        let wanted: Vec<Wanted> = selections
            .iter()
            .map(|s| {
                let (namespace, name) = s.network.in_namespace(asking.namespace);
                Wanted {
                    network: format!("{namespace}/{name}"),
                    interface: s.interface.clone(),
                }
            })
            .collect();
        let plan = plan::plan(&held, &wanted);
        for refused in &plan.refused {
            let leaving = held
                .iter()
                .any(|h| h.role == Role::Leaving && h.ifname == refused.ifname);
            let error = Error::Resolve(ResolveError::DuplicateInterface {
                network: wanted[refused.wanted].network.clone(),
                ifname: refused.ifname.clone(),
                other: refused.holder.clone(),
            });
            changes.fail(
                &wanted[refused.wanted].network,
                Operation::Attach,
                error,
                leaving,
            );
        }
        let base_args = pod_cni_args(record, pod);
        let mut new: Vec<Delegate> = Vec::new();
        for (w, ifname) in &plan.attach {
            let network = &wanted[*w].network;
            let (mut delegate, need) = match self
                .new_delegate(&selections[*w], ifname, asking, &base_args)
                .await
            {
                Ok(found) => found,
                Err(error) => {
                    let retry = worth_retrying(&error);
                    changes.fail(network, Operation::Attach, error, retry);
                    continue;
                }
            };
            // Devices of attachments that stay, and of those planned just now, are taken;
            // those of attachments about to be detached are free again by the time this
            // one runs (detaches go first).
            let taken: Vec<&Device> = record
                .attachments
                .iter()
                .enumerate()
                .filter(|(i, _)| !plan.detach.contains(i))
                .map(|(_, a)| &a.delegate)
                .chain(&new)
                .filter_map(|d| d.device.as_ref())
                .collect();
            let given = self
                .give_device_besides(&record.container_id, &taken, &mut delegate, need, pod)
                .await;
            match given {
                Ok(()) => new.push(delegate),
                // No device yet: the device plugin or the DRA driver may still hand one out,
                // so it is tried again while the pod asks for the network.
                Err(error) => changes.fail(network, Operation::Attach, error, true),
            }
        }
        if plan.detach.is_empty() && new.is_empty() {
            return Ok(false);
        }
        for &h in &plan.detach {
            record.attachments[h].pending = Some(Pending::Detach);
        }
        record.attachments.extend(new.into_iter().map(|d| {
            Attachment::intended(d)
                .with_origin(Origin::Selection)
                .with_pending(Pending::Attach)
        }));
        // The intent: from here on a crash leaves marks that say what to finish or undo.
        self.records.save(record)?;
        self.run_detaches(record, changes, report).await;
        self.run_attaches(record, changes, report).await;
        self.save_changed(record)?;
        if !report.added.is_empty() && record.attachments.iter().any(has_claim_device) {
            self.publish_claim_devices(&record.attachments);
        }
        Ok(true)
    }

    async fn new_delegate(
        &self,
        selection: &Selection,
        ifname: &IfName,
        asking: Asking<'_>,
        base_args: &str,
    ) -> Result<(Delegate, Need)> {
        let network = self.selection_network(selection, asking).await?;
        let need = Need {
            network: network.label.clone(),
            resource: network.resource_name.clone(),
            explicit: selection.device_id.clone(),
            claim: selection.resource_claim.clone(),
        };
        let delegate =
            resolve::secondary_delegate(selection.clone(), network, ifname.clone(), base_args)?;
        Ok((delegate, need))
    }

    /// DEL of every attachment marked `Detach`, newest first. What is gone leaves the record;
    /// what failed stays marked and is tried again by the next reconcile (and the pod's DEL).
    async fn run_detaches(
        &self,
        record: &mut PodRecord,
        changes: &mut PodChanges,
        report: &mut Report,
    ) {
        let leaving: Vec<usize> = (0..record.attachments.len())
            .filter(|&i| record.attachments[i].pending == Some(Pending::Detach))
            .collect();
        if leaving.is_empty() {
            return;
        }
        let attachments: Vec<Attachment> = leaving
            .iter()
            .map(|&i| record.attachments[i].clone())
            .collect();
        let target = Target {
            container_id: record.container_id.as_str(),
            netns: &record.netns,
        };
        let failures = attach::detach_all(self.executor.as_ref(), &attachments, target).await;
        let failed: Vec<usize> = failures.iter().map(|f| f.index).collect();
        for failure in failures {
            let network = attachments[failure.index].delegate.network.clone();
            changes.fail(
                &network,
                Operation::Detach,
                Error::Attach(failure.error),
                true,
            );
        }
        let mut carried_route = false;
        for (n, attachment) in attachments.iter().enumerate() {
            if failed.contains(&n) {
                continue;
            }
            carried_route |= attachment.delegate.default_route.is_some();
            // An attachment whose ADD never finished was never announced.
            if attachment.result.is_some() {
                changes.detached.push(attachment.delegate.network.clone());
                report.removed.push(recorded_status(attachment));
            }
        }
        let gone: Vec<Attachment> = attachments
            .into_iter()
            .enumerate()
            .filter(|(n, _)| !failed.contains(n))
            .map(|(_, a)| a)
            .collect();
        let mut index = 0;
        record.attachments.retain(|_| {
            let keep = !leaving.contains(&index) || failed.iter().any(|&f| leaving[f] == index);
            index += 1;
            keep
        });
        self.release_devices(&gone, &record.attachments);
        if carried_route {
            self.restore_cluster_route(record).await;
        }
    }

    /// ADD of every attachment marked `Attach`, each on its own: one that fails is rolled
    /// back and leaves the record, and the others are not touched.
    async fn run_attaches(
        &self,
        record: &mut PodRecord,
        changes: &mut PodChanges,
        report: &mut Report,
    ) {
        let mut index = 0;
        while index < record.attachments.len() {
            if record.attachments[index].pending != Some(Pending::Attach) {
                index += 1;
                continue;
            }
            let delegate = record.attachments[index].delegate.clone();
            // A DEL that failed just now leaves its interface where this one would go.
            if let Some(holder) = record.attachments.iter().find(|a| {
                a.pending == Some(Pending::Detach) && a.delegate.ifname == delegate.ifname
            }) {
                let error = Error::Resolve(ResolveError::DuplicateInterface {
                    network: delegate.network.clone(),
                    ifname: delegate.ifname.clone(),
                    other: holder.delegate.network.clone(),
                });
                changes.fail(&delegate.network, Operation::Attach, error, true);
                record.attachments.remove(index);
                continue;
            }
            let target = Target {
                container_id: record.container_id.as_str(),
                netns: &record.netns,
            };
            let span = tracing::info_span!("hotplug_attach", network = %delegate.network, ifname = %delegate.ifname);
            self.offer_device_info(std::slice::from_ref(&delegate));
            let outcome = self
                .attach_and_route(
                    self.executor.as_ref(),
                    std::slice::from_ref(&delegate),
                    target,
                )
                .instrument(span)
                .await;
            match outcome {
                Ok(mut added) => {
                    let attachment = &mut record.attachments[index];
                    if let Some(added) = added.pop() {
                        attachment.result = Some(added.result);
                        attachment.attached = Some(added.attached);
                    }
                    attachment.pending = None;
                    changes.attached.push(delegate.network.clone());
                    report.added.push(recorded_status(attachment));
                    index += 1;
                }
                Err((error, leftovers)) => {
                    changes.fail(&delegate.network, Operation::Attach, error, true);
                    if leftovers.is_empty() {
                        let gone = record.attachments.remove(index);
                        self.release_devices(&[gone], &record.attachments);
                    } else {
                        // Its rollback failed: it stays, marked for removal, until a DEL of
                        // it succeeds (the next reconcile's, or the pod's).
                        record.attachments[index].pending = Some(Pending::Detach);
                        index += 1;
                    }
                }
            }
        }
    }

    /// The pod's default route went with the attachment that carried it: the cluster
    /// network's default routes come back, as they were before the route was moved.
    async fn restore_cluster_route(&self, record: &PodRecord) {
        if record
            .attachments
            .iter()
            .any(|a| a.pending.is_none() && a.delegate.default_route.is_some())
        {
            return;
        }
        let Some(cluster) = record.attachments.iter().find(|a| a.delegate.is_default) else {
            return;
        };
        let Some(result) = cluster
            .result
            .as_ref()
            .and_then(|r| parse_result(&cluster.delegate, r).ok())
        else {
            return;
        };
        let gateways = default_gateways(&result);
        if gateways.is_empty() {
            return;
        }
        let ifname = cluster.delegate.ifname.as_str();
        match netlink::move_default_route(&record.netns, ifname, gateways).await {
            Ok(()) => tracing::info!(ifname, "default route back on the cluster network"),
            Err(error) => {
                tracing::warn!(ifname, %error, "cannot put the default route back on the cluster network")
            }
        }
    }

    /// Writes the record with its network-status recomputed from what is attached now.
    fn save_changed(&self, record: &mut PodRecord) -> Result<()> {
        record.network_status = record
            .attachments
            .iter()
            .filter(|a| a.pending.is_none())
            .map(recorded_status)
            .collect();
        Ok(self.records.save(record)?)
    }

    fn tell_pod_changed(
        &self,
        record: &PodRecord,
        uid: Option<&str>,
        changes: &PodChanges,
        report: &Report,
    ) {
        let Some(pod) = &record.pod else { return };
        let uid = uid.or(record.pod_uid.as_deref());
        if changes.changed() {
            Arc::clone(&self.source).publish_status(pod, uid, &record.network_status);
            self.tell_pod_interfaces(pod, uid, &report.added, &report.removed);
        }
        for failure in &changes.failures {
            let (reason, action) = match failure.operation {
                Operation::Attach => ("NetworkAttachFailed", "Attach"),
                Operation::Detach => ("NetworkDetachFailed", "Detach"),
            };
            self.tell_pod_warning(pod, uid, reason, action, &failure.error);
        }
    }

    /// The pod's network-status says something else than the record, e.g. plexusd stopped
    /// after recording a change and before writing its status: it is written again.
    fn republish_if_stale(&self, record: &PodRecord, pod: &PodInfo) {
        let published = pod
            .annotation(NETWORK_STATUS_ANNOTATION)
            .and_then(|text| serde_json::from_str::<Vec<NetworkStatus>>(text).ok());
        // An empty status is a record whose ADD results were lost: the pod's own is better.
        if record.network_status.is_empty() || published.as_ref() == Some(&record.network_status) {
            return;
        }
        tracing::info!(pod = %pod.key, "network-status differs from the record; writing it again");
        Arc::clone(&self.source).publish_status(
            &pod.key,
            pod.uid.as_deref(),
            &record.network_status,
        );
    }

    /// How hot-plug treats an attachment of the record.
    fn held(&self, attachment: &Attachment) -> Held {
        let delegate = &attachment.delegate;
        let origin = attachment.origin.unwrap_or_else(|| {
            // A record from before origins were kept: ADD put the cluster network first and
            // plexusd's default networks next; what is neither came from the annotation.
            if delegate.is_default {
                Origin::ClusterNetwork
            } else if self
                .default_networks
                .iter()
                .any(|n| n.to_string() == delegate.network)
            {
                Origin::DefaultNetwork
            } else {
                Origin::Selection
            }
        });
        let role = match (attachment.pending, origin) {
            (Some(_), _) => Role::Leaving,
            (None, Origin::Selection) => Role::Selected,
            (None, _) => Role::Fixed,
        };
        Held {
            network: delegate.network.clone(),
            ifname: delegate.ifname.clone(),
            role,
        }
    }
}

/// Whether the attachment holds a device of one of the pod's DRA claims, whose status then
/// tells what Plexus attached (KEP-4817).
fn has_claim_device(attachment: &Attachment) -> bool {
    attachment
        .delegate
        .device
        .as_ref()
        .is_some_and(|d| matches!(d.source, DeviceSource::Claim(_)))
}

/// Whether the record is of this very pod: the uids match. A pod without a uid (a manifest
/// of the `files` source that gives none) cannot be told from another of its name, and is
/// taken as the same.
fn same_pod(record: &PodRecord, pod: &PodInfo) -> bool {
    let Some(uid) = &pod.uid else { return true };
    let recorded = record.pod_uid.clone().or_else(|| {
        // Records from before the uid was kept still carry it in the delegates' CNI_ARGS.
        record
            .attachments
            .iter()
            .find(|a| a.delegate.is_default)
            .and_then(|a| {
                crate::request::CniArgs::parse(&a.delegate.cni_args)
                    .get("K8S_POD_UID")
                    .map(str::to_owned)
            })
    });
    recorded.as_deref() == Some(uid.as_str())
}

/// The CNI_ARGS the pod's delegates got at ADD (the cluster network's), which new selections
/// get too.
fn pod_cni_args(record: &PodRecord, pod: &PodInfo) -> String {
    if let Some(cluster) = record.attachments.iter().find(|a| a.delegate.is_default) {
        return cluster.delegate.cni_args.clone();
    }
    let runtime = format!(
        "K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
        pod.key.namespace, pod.key.name, record.container_id
    );
    resolve::delegate_cni_args(&runtime, record.pod_uid.as_deref().or(pod.uid.as_deref()))
}

/// Failures that may go away by themselves (a NAD created later, a plugin fixed, the API
/// server back); the others wait for the annotation or plexusd's config to change.
fn worth_retrying(error: &Error) -> bool {
    !matches!(
        error,
        Error::Selection { .. }
            | Error::Isolated { .. }
            | Error::Resolve(ResolveError::DuplicateInterface { .. })
    )
}

/// The network-status entry of a recorded attachment; a minimal one when its result is
/// missing or unreadable (NPWG §5.1.1).
fn recorded_status(attachment: &Attachment) -> NetworkStatus {
    let delegate = &attachment.delegate;
    match attachment
        .result
        .as_ref()
        .and_then(|r| parse_result(delegate, r).ok())
    {
        Some(result) => status_of(delegate, &result),
        None => status::status_entry(&delegate.network, delegate.is_default, None, None),
    }
}

/// The gateways of a result's default routes; a route without one goes through the gateway
/// of the result's address of its family.
fn default_gateways(result: &CniResult) -> Vec<IpAddr> {
    result
        .routes
        .iter()
        .filter(|r| r.dst.prefix == 0)
        .filter_map(|r| {
            r.gw.or_else(|| {
                result
                    .ips
                    .iter()
                    .find(|ip| ip.address.is_ipv4() == r.dst.is_ipv4())
                    .and_then(|ip| ip.gateway)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::future::BoxFuture;
    use serde_json::json;

    use super::*;
    use crate::cni::{Command, DelegateCall, ExecError, Executor};
    use crate::config::Config;
    use crate::records::RecordStore;
    use crate::request::{CniRequest, WireRequest};
    use crate::testing::{RecordingExecutor, Reply, TestSource, chain, node_config};

    /// The recording executor, plus the pending mark the record on disk held for the
    /// attachment each call was about, at the moment of the call.
    struct IntentWatcher {
        inner: RecordingExecutor,
        records: RecordStore,
        seen: Mutex<Vec<String>>,
    }

    impl Executor for IntentWatcher {
        fn run(&self, call: DelegateCall) -> BoxFuture<'_, Result<Vec<u8>, ExecError>> {
            let id = ContainerId::parse(&call.container_id).unwrap();
            let mark = self.records.load(&id).ok().flatten().and_then(|r| {
                r.attachments
                    .iter()
                    .find(|a| {
                        a.delegate.ifname.as_str() == call.ifname
                            && a.delegate.network == call.network
                    })
                    .map(|a| a.pending)
            });
            self.seen.lock().unwrap().push(format!(
                "{} {} {} {mark:?}",
                call.command, call.ifname, call.network
            ));
            self.inner.run(call)
        }

        fn supported_versions<'a>(&'a self, plugin: &'a str) -> BoxFuture<'a, Vec<String>> {
            self.inner.supported_versions(plugin)
        }
    }

    struct World {
        _dir: tempfile::TempDir,
        source: Arc<TestSource>,
        exec: Arc<IntentWatcher>,
        records: RecordStore,
        plexus: Plexus,
    }

    const CONTAINER: &str = "c1";

    /// plexusd with a cluster network and NADs tenant/a, b and c (plugins `net-a`, ...),
    /// and pod tenant/web (uid u1) selecting `networks`, ADDed as container c1.
    async fn world(networks: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            dynamic_networks: true,
            ..node_config(dir.path())
        };
        let source = Arc::new(TestSource::default());
        for name in ["a", "b", "c"] {
            let plugin = format!("net-{name}");
            source.set_nad("tenant", name, &chain(name, "1.0.0", &[plugin.as_str()]));
        }
        source.set_pod("tenant", "web", "u1", networks);
        let records = RecordStore::open(&config.records_dir).unwrap();
        let exec = Arc::new(IntentWatcher {
            inner: RecordingExecutor::new(),
            records: records.clone(),
            seen: Mutex::default(),
        });
        let plexus = Plexus::new(config, source.clone(), exec.clone(), records.clone()).unwrap();
        let world = World {
            _dir: dir,
            source,
            exec,
            records,
            plexus,
        };
        world.plexus.add(&world.request("ADD")).await.unwrap();
        // The results are written after the reply, under the container's lock.
        world.plexus.network_status(&world.id()).await.unwrap();
        world.calls_so_far();
        world
    }

    impl World {
        fn request(&self, command: &str) -> CniRequest {
            CniRequest::parse(&WireRequest {
                command: command.into(),
                container_id: CONTAINER.into(),
                netns: "/var/run/netns/c1".into(),
                ifname: "eth0".into(),
                args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=tenant;K8S_POD_NAME=web;K8S_POD_UID=u1"
                    .into(),
                path: "/opt/cni/bin".into(),
                config: r#"{"cniVersion":"1.0.0","name":"plexus","type":"plexus"}"#.into(),
            })
            .unwrap()
        }

        fn id(&self) -> ContainerId {
            ContainerId::parse(CONTAINER).unwrap()
        }

        fn record(&self) -> PodRecord {
            self.records.load(&self.id()).unwrap().expect("a record")
        }

        /// `"eth0 cluster"`, `"net1 tenant/a"`, ... with ` (Attach)` for pending marks.
        fn attachments(&self) -> Vec<String> {
            self.record()
                .attachments
                .iter()
                .map(|a| {
                    let mark = a.pending.map(|p| format!(" ({p:?})")).unwrap_or_default();
                    format!("{} {}{mark}", a.delegate.ifname, a.delegate.network)
                })
                .collect()
        }

        /// The delegate calls since the last look, as `"ADD net-c net3"`.
        fn calls_so_far(&self) -> Vec<String> {
            let lines = self.exec.inner.lines();
            self.exec.inner.clear();
            self.exec.seen.lock().unwrap().clear();
            lines
        }

        /// What the record said about each call's attachment when the call ran.
        fn marks_seen(&self) -> Vec<String> {
            self.exec.seen.lock().unwrap().clone()
        }

        async fn follow(&self, networks: &str) -> PodChanges {
            self.follow_as("u1", networks)
                .await
                .expect("hot-plug acted")
        }

        async fn follow_as(&self, uid: &str, networks: &str) -> Option<PodChanges> {
            self.source.set_pod("tenant", "web", uid, networks);
            let pod = self.source.pod_info("tenant", "web").await;
            match self
                .plexus
                .follow_annotation(&self.id(), &pod)
                .await
                .unwrap()
            {
                Followed::Done(changes) => Some(changes),
                _ => None,
            }
        }

        /// No delegate ran and the record is as it was.
        fn assert_untouched(&self, before: &PodRecord) {
            assert!(self.calls_so_far().is_empty());
            assert_eq!(&self.record(), before);
        }

        fn edit_record(&self, edit: impl FnOnce(&mut PodRecord)) {
            let mut record = self.record();
            edit(&mut record);
            self.records.save(&record).unwrap();
        }

        fn event_notes(&self, reason: &str) -> Vec<String> {
            self.source
                .events()
                .into_iter()
                .filter(|e| e.reason == reason)
                .map(|e| e.message)
                .collect()
        }
    }

    fn names(failures: &[HotplugFailure]) -> Vec<(&str, Operation, bool)> {
        failures
            .iter()
            .map(|f| (f.network.as_str(), f.operation, f.retry))
            .collect()
    }

    #[tokio::test]
    async fn added_and_removed_selections_are_attached_and_detached_and_the_rest_is_untouched() {
        let w = world("a,b").await;
        assert_eq!(
            w.attachments(),
            ["eth0 cluster", "net1 tenant/a", "net2 tenant/b"]
        );
        let before = w.record();

        let changes = w.follow("a,b,c").await;
        assert_eq!(changes.attached, ["tenant/c"]);
        assert!(changes.failures.is_empty(), "{:?}", changes.failures);
        assert_eq!(w.calls_so_far(), ["ADD net-c net3"]);
        let after = w.record();
        assert_eq!(after.attachments[..3], before.attachments[..3]);
        let new = &after.attachments[3];
        assert_eq!(new.origin, Some(Origin::Selection));
        // The new delegate gets the pod's CNI_ARGS, as the others did at ADD.
        assert_eq!(
            new.delegate.cni_args,
            before.attachments[2].delegate.cni_args
        );
        assert_eq!(after.network_status.len(), 4);
        assert_eq!(after.network_status[3].interface.as_deref(), Some("net3"));

        let changes = w.follow("a,c").await;
        assert_eq!(changes.detached, ["tenant/b"]);
        assert_eq!(w.calls_so_far(), ["DEL net-b net2"]);
        assert_eq!(
            w.attachments(),
            ["eth0 cluster", "net1 tenant/a", "net3 tenant/c"]
        );

        // b comes back on the name it left free.
        w.follow("a,c,b").await;
        assert_eq!(w.calls_so_far(), ["ADD net-b net2"]);
        assert_eq!(
            w.attachments(),
            [
                "eth0 cluster",
                "net1 tenant/a",
                "net3 tenant/c",
                "net2 tenant/b"
            ]
        );

        // Nothing to do: no call, no write, no event.
        let events = w.source.events().len();
        let changes = w.follow("a,c,b").await;
        assert!(changes.attached.is_empty() && changes.detached.is_empty());
        assert!(w.calls_so_far().is_empty());
        assert_eq!(w.source.events().len(), events);

        let statuses = w.source.statuses();
        let last = statuses.last().unwrap();
        let interfaces: Vec<&str> = last.iter().filter_map(|s| s.interface.as_deref()).collect();
        assert_eq!(interfaces, ["eth0", "net1", "net3", "net2"]);
        assert_eq!(w.event_notes("RemovedInterface").len(), 1);
        let added = w.event_notes("AddedInterface");
        // Three at ADD (eth0, net1, net2), then net3 and net2 again.
        assert_eq!(added.len(), 5, "{added:?}");
        assert!(
            added[3].starts_with("Add net3 [") && added[3].ends_with("from tenant/c"),
            "{added:?}"
        );
    }

    #[tokio::test]
    async fn a_network_status_that_differs_from_the_record_is_written_again() {
        let w = world("a").await;
        let published = w.source.statuses().len();
        let recorded = w.record().network_status;
        // The pod's annotation lacks the status (a crash before it was written, say).
        w.follow("a").await;
        let statuses = w.source.statuses();
        assert_eq!(statuses.len(), published + 1);
        assert_eq!(statuses.last(), Some(&recorded));
        // Once the pod says what the record says, nothing more is written.
        let status = serde_json::to_string(&recorded).unwrap();
        w.source.set_pod_with(
            "tenant",
            "web",
            "u1",
            &[
                ("k8s.v1.cni.cncf.io/networks", "a"),
                (NETWORK_STATUS_ANNOTATION, &status),
            ],
        );
        let pod = w.source.pod_info("tenant", "web").await;
        w.plexus.follow_annotation(&w.id(), &pod).await.unwrap();
        assert_eq!(w.source.statuses().len(), published + 1);
        assert!(w.calls_so_far().is_empty());
    }

    #[tokio::test]
    async fn the_intent_is_on_disk_before_any_delegate_runs() {
        let w = world("a,b").await;
        w.follow("a,c").await;
        assert_eq!(
            w.marks_seen(),
            [
                "DEL net2 tenant/b Some(Some(Detach))",
                "ADD net2 tenant/c Some(Some(Attach))"
            ]
        );
        // And once done, nothing is marked any more.
        assert_eq!(
            w.attachments(),
            ["eth0 cluster", "net1 tenant/a", "net2 tenant/c"]
        );
    }

    #[tokio::test]
    async fn a_failing_attach_is_rolled_back_warned_about_and_worth_retrying() {
        let w = world("a").await;
        w.exec.inner.set(
            "net-c",
            Command::Add,
            Reply::Fails(crate::cni::CniError::new(11, "no carrier", "")),
        );
        let before = w.record();

        let changes = w.follow("a,c").await;
        assert_eq!(
            names(&changes.failures),
            [("tenant/c", Operation::Attach, true)]
        );
        assert_eq!(w.calls_so_far(), ["ADD net-c net2", "DEL net-c net2"]);
        assert_eq!(
            w.record(),
            before,
            "the pod's other interfaces stay as they were"
        );
        let published = w.source.statuses();
        assert!(
            published.iter().flatten().all(|s| s.name != "tenant/c"),
            "{published:?}"
        );
        let warnings = w.event_notes("NetworkAttachFailed");
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("tenant/c")
                && warnings[0].contains("net-c")
                && warnings[0].contains("no carrier"),
            "{warnings:?}"
        );

        // The plugin is fixed: the next try attaches it.
        w.exec.inner.set("net-c", Command::Add, Reply::Success);
        let changes = w.follow("a,c").await;
        assert_eq!(changes.attached, ["tenant/c"]);
        assert_eq!(
            w.attachments(),
            ["eth0 cluster", "net1 tenant/a", "net2 tenant/c"]
        );
    }

    #[tokio::test]
    async fn an_unknown_nad_changes_nothing_until_it_exists() {
        let w = world("a").await;
        let before = w.record();
        let changes = w.follow("a,ghost").await;
        assert_eq!(
            names(&changes.failures),
            [("tenant/ghost", Operation::Attach, true)]
        );
        assert!(changes.failures[0].error.to_string().contains("not found"));
        w.assert_untouched(&before);

        w.source
            .set_nad("tenant", "ghost", &chain("ghost", "1.0.0", &["net-ghost"]));
        let changes = w.follow("a,ghost").await;
        assert_eq!(changes.attached, ["tenant/ghost"]);
        assert_eq!(w.calls_so_far(), ["ADD net-ghost net2"]);
    }

    #[tokio::test]
    async fn an_annotation_that_does_not_parse_detaches_nothing_and_waits_for_a_new_one() {
        let w = world("a,b").await;
        let before = w.record();
        let changes = w.follow("a,,b").await;
        assert_eq!(
            names(&changes.failures),
            [("tenant/web", Operation::Attach, false)]
        );
        assert!(!changes.worth_retrying());
        w.assert_untouched(&before);
        assert_eq!(w.event_notes("NetworkAttachFailed").len(), 1);
    }

    #[tokio::test]
    async fn a_named_interface_that_is_taken_is_refused_naming_its_holder() {
        let w = world("a").await;
        let changes = w.follow("a,b@net1").await;
        assert_eq!(
            names(&changes.failures),
            [("tenant/b", Operation::Attach, false)]
        );
        let text = changes.failures[0].error.to_string();
        assert!(text.contains("net1") && text.contains("tenant/a"), "{text}");
        assert!(w.calls_so_far().is_empty());
        // An explicit name that is free is honoured.
        w.follow("a,b@data0").await;
        assert_eq!(w.calls_so_far(), ["ADD net-b data0"]);
    }

    #[tokio::test]
    async fn a_pod_recreated_under_the_same_name_never_reaches_the_old_container() {
        let w = world("a").await;
        let before = w.record();
        assert_eq!(before.pod_uid.as_deref(), Some("u1"));
        assert!(w.follow_as("u2", "a,b,c").await.is_none());
        w.assert_untouched(&before);
    }

    #[tokio::test]
    async fn a_record_from_before_uids_were_kept_is_matched_by_its_cni_args() {
        let w = world("a").await;
        w.edit_record(|r| {
            r.pod_uid = None;
            for a in &mut r.attachments {
                a.origin = None;
            }
        });
        assert!(w.follow_as("u2", "a,b").await.is_none());
        let changes = w.follow("b").await;
        assert_eq!(
            (changes.attached, changes.detached),
            (vec!["tenant/b".to_owned()], vec!["tenant/a".to_owned()])
        );
    }

    #[tokio::test]
    async fn an_attach_a_crash_interrupted_is_undone_then_made_again() {
        let w = world("a").await;
        w.edit_record(|r| {
            let c = Delegate::test("tenant/c", chain("c", "1.0.0", &["net-c"])).on("net2");
            r.attachments.push(
                Attachment::intended(c)
                    .with_origin(Origin::Selection)
                    .with_pending(Pending::Attach),
            );
        });
        w.follow("a,c").await;
        assert_eq!(w.calls_so_far(), ["DEL net-c net2", "ADD net-c net2"]);
        assert_eq!(
            w.attachments(),
            ["eth0 cluster", "net1 tenant/a", "net2 tenant/c"]
        );
        assert!(w.record().attachments[2].result.is_some());
    }

    #[tokio::test]
    async fn changes_left_in_flight_are_finished_after_a_restart_even_with_hot_plug_off() {
        let w = world("a").await;
        w.edit_record(|r| {
            r.attachments[1].pending = Some(Pending::Detach);
            let c = Delegate::test("tenant/c", chain("c", "1.0.0", &["net-c"])).on("net2");
            r.attachments
                .push(Attachment::intended(c).with_pending(Pending::Attach));
        });
        let changes = w.plexus.finish_interrupted(&w.id()).await.unwrap();
        assert_eq!(
            changes.detached,
            ["tenant/a"],
            "only what had been announced"
        );
        assert_eq!(w.calls_so_far(), ["DEL net-c net2", "DEL net-a net1"]);
        assert_eq!(w.attachments(), ["eth0 cluster"]);
        assert_eq!(w.record().network_status.len(), 1);
        // Nothing in flight: nothing to do.
        w.plexus.finish_interrupted(&w.id()).await.unwrap();
        assert!(w.calls_so_far().is_empty());
    }

    #[tokio::test]
    async fn a_failed_detach_stays_marked_holds_its_name_and_is_tried_again() {
        let w = world("a,b").await;
        w.exec.inner.set(
            "net-b",
            Command::Del,
            Reply::Fails(crate::cni::CniError::new(5, "busy", "")),
        );
        let changes = w.follow("a,c@net2").await;
        assert_eq!(
            names(&changes.failures),
            [
                ("tenant/b", Operation::Detach, true),
                ("tenant/c", Operation::Attach, true)
            ]
        );
        assert_eq!(w.calls_so_far(), ["DEL net-b net2"]);
        assert_eq!(
            w.attachments(),
            ["eth0 cluster", "net1 tenant/a", "net2 tenant/b (Detach)"]
        );
        // CHECK leaves the leaving attachment out.
        w.plexus.check(&w.request("CHECK")).await.unwrap();
        w.calls_so_far();

        w.exec.inner.set("net-b", Command::Del, Reply::Success);
        let changes = w.follow("a,c@net2").await;
        assert_eq!(
            (changes.detached, changes.attached),
            (vec!["tenant/b".to_owned()], vec!["tenant/c".to_owned()])
        );
        assert_eq!(w.calls_so_far(), ["DEL net-b net2", "ADD net-c net2"]);
    }

    #[tokio::test]
    async fn check_del_and_gc_cover_hot_plugged_attachments() {
        let w = world("a").await;
        w.follow("a,b").await;
        w.calls_so_far();
        w.plexus.check(&w.request("CHECK")).await.unwrap();
        assert_eq!(
            w.calls_so_far(),
            ["CHECK bridge eth0", "CHECK net-a net1", "CHECK net-b net2"]
        );
        w.plexus.del(&w.request("DEL")).await.unwrap();
        assert_eq!(
            w.calls_so_far(),
            ["DEL net-b net2", "DEL net-a net1", "DEL bridge eth0"]
        );
        assert!(w.records.load(&w.id()).unwrap().is_none());
        assert!(matches!(
            w.plexus
                .follow_annotation(&w.id(), &*w.source.pod_info("tenant", "web").await)
                .await
                .unwrap(),
            Followed::NoRecord
        ));
    }

    #[tokio::test]
    async fn a_container_being_deleted_is_left_alone() {
        let w = world("a").await;
        w.edit_record(|r| r.deleting = true);
        w.source.set_pod("tenant", "web", "u1", "b");
        let pod = w.source.pod_info("tenant", "web").await;
        let followed = w.plexus.follow_annotation(&w.id(), &pod).await.unwrap();
        assert!(matches!(followed, Followed::Deleting), "{followed:?}");
        assert!(w.calls_so_far().is_empty());
    }

    #[test]
    fn the_cluster_networks_default_routes_come_back_through_their_gateways() {
        let result: CniResult = serde_json::from_value(json!({
            "ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}, {"address": "fd00::5/64", "gateway": "fd00::1"}],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00::fe"}, {"dst": "10.9.0.0/16", "gw": "10.0.0.9"}],
        }))
        .unwrap();
        let gateways: Vec<String> = default_gateways(&result)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(gateways, ["10.0.0.1", "fd00::fe"]);
    }
}
