//! The most recent failed ADDs, kept in memory so `plexusd inspect` can say why a pod has no
//! net1 after its rollback left no record. Bounded: the oldest go first.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::names::{ContainerId, PodKey};

/// How many failed ADDs plexusd remembers.
pub const KEPT: usize = 100;

/// One failed ADD, as the runtime was told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub at: Timestamp,
    pub container_id: ContainerId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    pub netns: String,
    /// The CNI error code the runtime got.
    pub code: u32,
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl Failure {
    /// Whether this failure is about `pod` (by name) or, for a request that named no pod, about
    /// `container`.
    pub fn concerns(&self, pod: Option<&PodKey>, container: &ContainerId) -> bool {
        match (&self.pod, pod) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => &self.container_id == container,
        }
    }
}

/// The last [`KEPT`] failed ADDs.
pub struct RecentFailures {
    limit: usize,
    entries: Mutex<VecDeque<Failure>>,
}

impl Default for RecentFailures {
    fn default() -> Self {
        Self::with_limit(KEPT)
    }
}

impl RecentFailures {
    pub fn with_limit(limit: usize) -> Self {
        Self {
            limit,
            entries: Mutex::new(VecDeque::with_capacity(limit)),
        }
    }

    pub fn remember(&self, failure: Failure) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() == self.limit {
            entries.pop_front();
        }
        entries.push_back(failure);
    }

    /// Every remembered failure, newest first.
    pub fn newest_first(&self) -> Vec<Failure> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{Namespace, ObjectName};

    fn failure(n: u64, pod: Option<&str>) -> Failure {
        Failure {
            at: Timestamp::from_millis(n),
            container_id: ContainerId::parse(&format!("c{n}")).unwrap(),
            pod: pod.map(|name| PodKey {
                namespace: Namespace::parse("tenant").unwrap(),
                name: ObjectName::parse(name).unwrap(),
            }),
            uid: None,
            netns: String::new(),
            code: 7,
            message: format!("failure {n}"),
            details: String::new(),
        }
    }

    #[test]
    fn only_the_newest_are_kept_newest_first() {
        let failures = RecentFailures::with_limit(3);
        for n in 1..=5 {
            failures.remember(failure(n, Some("web")));
        }
        let kept: Vec<u64> = failures
            .newest_first()
            .iter()
            .map(|f| f.at.millis())
            .collect();
        assert_eq!(kept, [5, 4, 3]);
    }

    #[test]
    fn a_failure_concerns_its_pod_or_without_one_its_container() {
        let named = failure(1, Some("web"));
        let web = named.pod.clone();
        let other = ContainerId::parse("other").unwrap();
        assert!(named.concerns(web.as_ref(), &other));
        let db = Some(PodKey {
            namespace: Namespace::parse("tenant").unwrap(),
            name: ObjectName::parse("db").unwrap(),
        });
        assert!(!named.concerns(db.as_ref(), &named.container_id));
        let unnamed = failure(2, None);
        assert!(unnamed.concerns(web.as_ref(), &unnamed.container_id));
        assert!(!unnamed.concerns(None, &other));
    }
}
