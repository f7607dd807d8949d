//! GC: delete what the runtime no longer lists.

use super::{Error, Plexus, Result};
use crate::attach::{self, DetachFailure};
use crate::request::CniRequest;

impl Plexus {
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
}
