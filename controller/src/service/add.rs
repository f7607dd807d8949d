//! ADD: resolve, record the intent, attach, route, report, and tell the pod.

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::oneshot;

use super::{Error, Plexus, Result};
use crate::attach::{self, Added, AttachError, Target};
use crate::clock::Timestamp;
use crate::cni::gate::Gated;
use crate::cni::{CniError, CniResult, Executor, code};
use crate::devices::devinfo;
use crate::failures::Failure;
use crate::locks::ContainerGuard;
use crate::names::{ContainerId, IfName, PodKey};
use crate::netlink;
use crate::records::{Attachment, Intent, PodRecord};
use crate::request::CniRequest;
use crate::resolve::Delegate;
use crate::service::Recorded;
use crate::source::{PodEvent, PodInfo};
use crate::status::{self, NetworkStatus};

impl Plexus {
    /// ADD: attaches every network and returns the result for the runtime. What happened is
    /// also told to the pod: its network-status and an event per interface or failure; a
    /// failure is also kept for `plexusd inspect`.
    pub async fn add(&self, request: &CniRequest) -> Result<Vec<u8>> {
        let outcome = self.try_add(request).await;
        if let Err(error) = &outcome {
            self.remember_failure(request, error);
        }
        outcome
    }

    async fn try_add(&self, request: &CniRequest) -> Result<Vec<u8>> {
        let (id, ifname) = Self::attachment_of(request)?;
        let container = self.locks.lock(id).await;
        let gc = Arc::clone(&self.gc_gate).read_owned().await;
        self.clean_leftovers(id, &request.netns).await?;
        let pod_key = request.args.pod().map_err(Error::Request)?;
        let runtime_uid = request.args.get("K8S_POD_UID");
        let pod = self.pod_info(pod_key.as_ref(), runtime_uid).await?;
        let uid = runtime_uid.or_else(|| pod.as_ref().and_then(|p| p.uid.as_deref()));
        let outcome = self
            .attach_pod(request, id, ifname, pod_key.as_ref(), pod.as_deref(), uid)
            .await;
        if let Some(key) = &pod_key {
            match &outcome {
                Ok((_, record, _)) => self.tell_pod_attached(key, uid, &record.network_status),
                Err(error) => self.tell_pod_failed(key, uid, error),
            }
        }
        if let Ok((_, record, _)) = &outcome {
            self.publish_claim_devices(&record.attachments);
        }
        let (reply, record, intent) = outcome?;
        self.save_after_reply(record, intent, container, gc);
        Ok(reply)
    }

    /// Writes the record with the results once the reply is on its way, fsynced, and then lets
    /// go of its intent. The intent, durable before any delegate ran, already lets DEL and GC
    /// undo everything after a crash, so neither the runtime nor the container's next
    /// operation waits for this fsync; what a crash in between loses is only the results,
    /// which CHECK and the network-status read-back use. The container's lock and the GC gate
    /// stay held until the record is in place, so every later operation on the container (DEL,
    /// CHECK, GC, another ADD, the read-back) sees it.
    fn save_after_reply(
        &self,
        record: PodRecord,
        intent: Intent,
        container: ContainerGuard,
        gc: tokio::sync::OwnedRwLockReadGuard<()>,
    ) {
        let records = self.records.clone();
        let recorded = self.recorded.clone();
        crate::background::after_reply(move || {
            if let Err(error) = records.settle_then(&record, intent, || drop((container, gc))) {
                tracing::error!(container = %record.container_id, %error, "the ADD's results were not made durable; they stand in memory, and its intent in the journal, until the container's DEL");
            }
            // Hot-plug compares this record with the pod's annotation now: the annotation may
            // have changed while the ADD ran. Nobody listening is fine.
            if let Some(pod) = record.pod {
                let _ = recorded.send(Recorded {
                    pod,
                    container: record.container_id,
                });
            }
        });
    }

    async fn attach_pod(
        &self,
        request: &CniRequest,
        id: &ContainerId,
        ifname: &IfName,
        pod_key: Option<&PodKey>,
        pod: Option<&PodInfo>,
        uid: Option<&str>,
    ) -> Result<(Vec<u8>, PodRecord, Intent)> {
        let delegates = self.resolve(request, ifname, pod_key, pod).await?;
        let mut record = PodRecord {
            container_id: id.clone(),
            ifname: ifname.clone(),
            netns: request.netns.clone(),
            pod: pod_key.cloned(),
            pod_uid: uid.map(str::to_owned),
            adopted: None,
            runtime_version: request.conf.cni_version,
            attachments: delegates
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, d)| Attachment::intended(d).with_origin(self.origin_at(i)))
                .collect(),
            network_status: Vec::new(),
            deleting: false,
            intent: None,
        };
        self.offer_device_info(&delegates);
        let target = Target {
            container_id: id.as_str(),
            netns: &request.netns,
        };
        // The intent covers every delegate before any acts: after a crash, DEL undoes them
        // all, and DEL of a delegate that never ran is harmless. Without it nothing may run.
        // The first plugin starts while the intent is made durable and gets its config only
        // once that is done (`cni::gate`), so the intent costs no time of its own. The intent
        // is polled first, so that its write is under way before the plugin's exec.
        let (durable, ready) = oneshot::channel();
        let exec = Gated::new(self.executor.as_ref(), ready);
        let (saved, attached) = tokio::join!(
            self.save_intent(&mut record, durable),
            self.attach_and_route(&exec, &delegates, target),
        );
        let intent = match saved {
            Ok(intent) => intent,
            Err(error) => {
                self.undo_unrecorded(id, &delegates, attached, target).await;
                return Err(error);
            }
        };
        let added = match attached {
            Ok(added) => added,
            Err((error, leftovers)) => {
                self.keep_only(record, leftovers, intent)?;
                return Err(error);
            }
        };
        let results: Vec<Value> = added.iter().map(|a| a.result.clone()).collect();
        let (reply, statuses) = match self.report(request, &delegates, &results) {
            Ok(reported) => reported,
            Err(error) => {
                // Everything stays attached for the runtime's DEL, which the intent's record
                // finds, so it is made durable before the intent is let go of.
                self.records.settle(&record, intent)?;
                return Err(error);
            }
        };
        for (attachment, added) in record.attachments.iter_mut().zip(added) {
            attachment.result = Some(added.result);
            attachment.attached = Some(added.attached);
        }
        record.network_status = statuses;
        Ok((reply, record, intent))
    }

    /// After an intent that could not be saved. The gate stops the first plugin unfed, so the
    /// attach failed and nothing acted. An executor that let the plugins act all the same is
    /// undone here, as no record will let a DEL find them; a failed attach has already rolled
    /// itself back. What is still left cannot be recorded, so it is at least named.
    async fn undo_unrecorded(
        &self,
        id: &ContainerId,
        delegates: &[Delegate],
        attached: Result<Vec<Added>, (Error, Vec<Attachment>)>,
        target: Target<'_>,
    ) {
        let left = match attached {
            Ok(added) => {
                let acted = attach::attachments(delegates, added);
                attach::rollback(self.executor.as_ref(), acted, target).await
            }
            Err((_, leftovers)) => leftovers,
        };
        for attachment in &left {
            tracing::error!(container = %id, network = %attachment.delegate.network, ifname = %attachment.delegate.ifname, "left attached with no record to undo it by: the records dir is unwritable");
        }
    }

    /// Makes the intent durable (`RecordStore::save_intent`); `durable` learns whether it
    /// worked.
    async fn save_intent(
        &self,
        record: &mut PodRecord,
        durable: oneshot::Sender<bool>,
    ) -> Result<Intent> {
        let saved = self.records.save_intent(record).await;
        // Nobody listens when the ADD failed before its first plugin: nothing to hold back.
        let _ = durable.send(saved.is_ok());
        saved.map_err(|source| Error::RecordsUnwritable {
            dir: self.records.dir().to_owned(),
            source,
        })
    }

    fn tell_pod_attached(&self, pod: &PodKey, uid: Option<&str>, statuses: &[NetworkStatus]) {
        Arc::clone(&self.source).publish_status(pod, uid, statuses);
        self.tell_pod_interfaces(pod, uid, statuses, &[]);
    }

    /// An event per interface that came (`AddedInterface`) and went (`RemovedInterface`).
    pub(super) fn tell_pod_interfaces(
        &self,
        pod: &PodKey,
        uid: Option<&str>,
        added: &[NetworkStatus],
        removed: &[NetworkStatus],
    ) {
        let changes = removed
            .iter()
            .map(|s| ("Remove", "RemovedInterface", "Detach", s))
            .chain(added.iter().map(|s| ("Add", "AddedInterface", "Attach", s)));
        for (verb, reason, action, status) in changes {
            let message = format!(
                "{verb} {} [{}] from {}",
                status.interface.as_deref().unwrap_or("-"),
                status.ips.join(","),
                status.name
            );
            let event = PodEvent {
                warning: false,
                reason,
                action,
                message,
            };
            Arc::clone(&self.source).publish_event(pod, uid, event);
        }
    }

    /// Keeps a failed ADD for `plexusd inspect`: after its rollback there may be no record
    /// left to say why the pod has no network.
    fn remember_failure(&self, request: &CniRequest, error: &Error) {
        let Some(container_id) = request.container_id.clone() else {
            return;
        };
        let answer = error.to_cni();
        self.failures.remember(Failure {
            at: Timestamp::now(),
            container_id,
            pod: request.args.pod().ok().flatten(),
            uid: request.args.get("K8S_POD_UID").map(str::to_owned),
            netns: request.netns.clone(),
            code: answer.code,
            message: answer.msg,
            details: answer.details,
        });
    }

    fn tell_pod_failed(&self, pod: &PodKey, uid: Option<&str>, error: &Error) {
        self.tell_pod_warning(pod, uid, "NetworkAttachFailed", "Attach", error);
    }

    /// A Warning event on the pod: `reason` says what failed, the message names the network
    /// and the cause.
    pub(super) fn tell_pod_warning(
        &self,
        pod: &PodKey,
        uid: Option<&str>,
        reason: &'static str,
        action: &'static str,
        error: &Error,
    ) {
        let event = PodEvent {
            warning: true,
            reason,
            action,
            message: error.to_string(),
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
    pub(super) async fn attach_and_route(
        &self,
        exec: &dyn Executor,
        delegates: &[Delegate],
        target: Target<'_>,
    ) -> Result<Vec<Added>, (Error, Vec<Attachment>)> {
        let added = attach::attach_all_timed(exec, delegates, target)
            .await
            .map_err(|failure| (Error::Attach(failure.error), failure.leftovers))?;
        let results: Vec<Value> = added.iter().map(|a| a.result.clone()).collect();
        if let Err(error) = self
            .move_default_route(delegates, &results, target.netns)
            .await
        {
            let done = attach::attachments(delegates, added);
            let leftovers = attach::rollback(exec, done, target).await;
            return Err((error, leftovers));
        }
        Ok(added)
    }

    /// After a failed ADD: the record keeps only what the rollback could not remove, so the
    /// runtime's DEL retries exactly that; with nothing left, the record goes. Either way its
    /// intent is let go of.
    fn keep_only(
        &self,
        mut record: PodRecord,
        leftovers: Vec<Attachment>,
        intent: Intent,
    ) -> Result<()> {
        let gone: Vec<Attachment> = record
            .attachments
            .iter()
            .filter(|a| {
                !leftovers
                    .iter()
                    .any(|l| l.delegate.ifname == a.delegate.ifname)
            })
            .cloned()
            .collect();
        self.release_devices(&gone, &leftovers);
        if leftovers.is_empty() {
            return Ok(self.records.remove_settled(&record, intent)?);
        }
        record.attachments = leftovers;
        Ok(self.records.settle(&record, intent)?)
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
            statuses.push(status_of(delegate, &result));
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
}

/// The network-status entry of a delegate whose ADD returned `result`.
pub(super) fn status_of(delegate: &Delegate, result: &CniResult) -> NetworkStatus {
    let moved = delegate
        .default_route
        .as_ref()
        .map(|_| delegate_gateways(delegate, result));
    let mut entry = status::status_entry(
        &delegate.network,
        delegate.is_default,
        Some(result),
        moved.as_deref(),
    );
    entry.device_info = delegate.device.as_ref().and_then(devinfo::collect);
    entry
}

pub(super) fn parse_result(delegate: &Delegate, result: &Value) -> Result<CniResult> {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::records::RecordStore;
    use crate::request::WireRequest;
    use crate::testing::{RecordingExecutor, TestSource, chain, node_config};

    #[tokio::test]
    async fn no_plugin_is_fed_when_the_intent_cannot_be_saved() {
        let dir = tempfile::tempdir().unwrap();
        let config = node_config(dir.path());
        let source = Arc::new(TestSource::default());
        source.set_nad("tenant", "a", &chain("a", "1.0.0", &["net-a"]));
        source.set_pod("tenant", "web", "u1", "a");
        let records = RecordStore::open(&config.records_dir).unwrap();
        // The record's temp file cannot be written: a directory has its name.
        std::fs::create_dir(config.records_dir.join("c1.tmp")).unwrap();
        let exec = Arc::new(RecordingExecutor::new());
        let plexus = Plexus::new(config, source, exec.clone(), records.clone()).unwrap();
        let request = CniRequest::parse(&WireRequest {
            command: "ADD".into(),
            container_id: "c1".into(),
            netns: "/var/run/netns/c1".into(),
            ifname: "eth0".into(),
            args: "K8S_POD_NAMESPACE=tenant;K8S_POD_NAME=web;K8S_POD_UID=u1".into(),
            path: "/opt/cni/bin".into(),
            config: r#"{"cniVersion":"1.0.0","name":"plexus","type":"plexus"}"#.into(),
        })
        .unwrap();

        let error = plexus.add(&request).await.unwrap_err();

        assert!(matches!(error, Error::RecordsUnwritable { .. }), "{error}");
        assert!(exec.lines().is_empty(), "{:?}", exec.lines());
        assert_eq!(
            records.load(&ContainerId::parse("c1").unwrap()).unwrap(),
            None
        );
    }
}
