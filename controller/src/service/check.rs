//! CHECK and STATUS.

use super::{Error, Plexus, Result};
use crate::attach::{self, Target};
use crate::names::IfName;
use crate::request::CniRequest;
use crate::resolve::{self, PodContext};

impl Plexus {
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
        // An attachment hot-plug is still adding or removing is not part of the pod yet (or
        // any more); everything else is checked, hot-plugged attachments included.
        for attachment in record.attachments.iter().filter(|a| a.pending.is_none()) {
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
}
