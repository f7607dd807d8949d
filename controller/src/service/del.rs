//! DEL: undo what the record says was attached.

use tracing::Instrument;

use super::{Error, Plexus, Result};
use crate::attach::{self, Target};
use crate::records::{Attachment, PodRecord};
use crate::request::CniRequest;
use crate::resolve::{self, PodContext};

impl Plexus {
    /// DEL: undoes whatever the record says was attached (a container Multus attached gets its
    /// record from Multus's cache first). Succeeds for a container never seen.
    pub async fn del(&self, request: &CniRequest) -> Result<()> {
        let (id, _) = Self::attachment_of(request)?;
        let _container = self.locks.lock(id).await;
        let _gc = self.gc_gate.read().await;
        let record = match self.records.load(id)? {
            Some(record) => Some(record),
            None => self.adopt_for_del(request).await,
        };
        match record {
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
    pub(super) async fn detach_record(&self, mut record: PodRecord, netns: &str) -> Result<()> {
        let target = Target {
            container_id: record.container_id.as_str(),
            netns,
        };
        let span = tracing::info_span!("detach_pod", container = %record.container_id, pod = ?record.pod.as_ref().map(ToString::to_string));
        let failures = attach::detach_all(self.executor.as_ref(), &record.attachments, target)
            .instrument(span)
            .await;
        let failed: Vec<usize> = failures.iter().map(|f| f.index).collect();
        let (kept, gone): (Vec<_>, Vec<_>) = record
            .attachments
            .into_iter()
            .enumerate()
            .partition(|(i, _)| failed.contains(i));
        let gone: Vec<Attachment> = gone.into_iter().map(|(_, a)| a).collect();
        record.attachments = kept.into_iter().map(|(_, a)| a).collect();
        self.release_devices(&gone, &record.attachments);
        if failures.is_empty() {
            self.records.remove(&record.container_id)?;
            return Ok(());
        }
        record.deleting = true;
        self.records.save(&record)?;
        Err(Error::Detach(failures))
    }
}
