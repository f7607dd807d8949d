//! The read-only view behind `plexusd inspect`: records and recent failures, nothing else.

use super::{Plexus, Result};
use crate::inspect::{self, Filter, Report};

impl Plexus {
    /// The report for `filter`. Each record is read under its container's lock, so an ADD
    /// whose results are still being written is shown as it ends up, not half way.
    pub async fn inspect(&self, filter: &Filter) -> Result<Report> {
        let ids = match &filter.container {
            Some(id) => vec![id.clone()],
            None => self.records.ids()?,
        };
        let mut records = Vec::with_capacity(ids.len());
        let mut problems = Vec::new();
        for id in ids {
            let _container = self.locks.lock(&id).await;
            match self.records.load(&id) {
                Ok(Some(record)) => records.push(record),
                Ok(None) => {}
                Err(error) => problems.push(error.to_string()),
            }
        }
        let mut report = inspect::build(records, &self.failures.newest_first(), filter);
        report.problems = problems;
        Ok(report)
    }
}
