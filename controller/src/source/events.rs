//! Events on pods (events.k8s.io/v1), aggregated as client-go aggregates them: an event that
//! repeats one sent recently (same pod, type, reason, action and note) bumps that event's
//! series instead of creating another, so a hot-plug retry that keeps failing shows as one
//! Warning with a count. kube-rs's `Recorder` leaves the note out of that comparison: every
//! `AddedInterface` of a pod after the first would update the first and lose what it says.
//!
//! What is remembered of a sent event is small and bounded: a digest of what makes it the
//! same event, its name, count and time, for at most [`REMEMBERED`] events. Almost every
//! event is an `AddedInterface` that never repeats (its note names the pod's address), so the
//! memory is there for the few that do; keeping whole keys for six minutes of a busy node's
//! pods cost plexusd ~0.5 KiB per interface attached.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::PodEvent;
use crate::names::PodKey;

/// How long a sent event can still be repeated into a series (client-go and kube-rs: 6 min).
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// Sent events remembered at most, as client-go's event correlator bounds its cache; the
/// least recently sent are forgotten first.
const REMEMBERED: usize = 4096;

/// What makes two events the same event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    pod: PodKey,
    uid: Option<String>,
    warning: bool,
    reason: &'static str,
    action: &'static str,
    note: String,
}

struct Sent {
    name: String,
    count: i32,
    last: Instant,
}

/// Writes events for one reporting controller and instance (plexus on this node).
pub struct EventWriter {
    client: Client,
    controller: String,
    instance: String,
    /// By [`digest`] of their key: two different keys sharing a digest (odds of 2^-64 per
    /// pair) would merge into one series, which only miscounts an event.
    sent: Mutex<HashMap<u64, Sent>>,
}

fn digest(key: &Key) -> u64 {
    // Fixed keys: the same key gives the same digest for the life of the process.
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

impl EventWriter {
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.to_owned(),
            instance: instance.to_owned(),
            sent: Mutex::default(),
        }
    }

    pub async fn publish(
        &self,
        pod: &PodKey,
        uid: Option<&str>,
        event: PodEvent,
    ) -> Result<(), kube::Error> {
        let key = Key {
            pod: pod.clone(),
            uid: uid.map(str::to_owned),
            warning: event.warning,
            reason: event.reason,
            action: event.action,
            note: event.message,
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), pod.namespace.as_str());
        let now = MicroTime(Timestamp::now());
        if let Some((name, count)) = self.repeat_of(&key) {
            let series = EventSeries {
                count,
                last_observed_time: now,
            };
            let patch = serde_json::json!({ "series": series });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            return Ok(());
        }
        let created = api
            .create(&PostParams::default(), &self.new_event(&key, now))
            .await?;
        if let (Some(name), Ok(mut sent)) = (created.metadata.name, self.sent.lock()) {
            remember(&mut sent, digest(&key), name);
        }
        Ok(())
    }

    /// The name and new count of the recent event `key` repeats, if there is one; events
    /// older than the window are forgotten on the way.
    fn repeat_of(&self, key: &Key) -> Option<(String, i32)> {
        let mut sent = self.sent.lock().ok()?;
        sent.retain(|_, s| s.last.elapsed() < SERIES_WINDOW);
        let repeated = sent.get_mut(&digest(key))?;
        repeated.count += 1;
        repeated.last = Instant::now();
        Some((repeated.name.clone(), repeated.count))
    }

    fn new_event(&self, key: &Key, now: MicroTime) -> Event {
        let regarding = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(key.pod.namespace.to_string()),
            name: Some(key.pod.name.to_string()),
            uid: key.uid.clone(),
            ..Default::default()
        };
        Event {
            metadata: ObjectMeta {
                namespace: Some(key.pod.namespace.to_string()),
                name: Some(format!("{}.{:x}", key.pod.name, now.0.as_nanosecond())),
                ..Default::default()
            },
            event_time: Some(now),
            action: Some(key.action.into()),
            reason: Some(key.reason.into()),
            note: Some(key.note.clone()),
            regarding: Some(regarding),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(if key.warning { "Warning" } else { "Normal" }.into()),
            ..Default::default()
        }
    }
}

/// Adds a newly created event, forgetting the least recently sent one when full (not when
/// it replaces one it holds: a repeat whose series patch failed is created anew).
fn remember(sent: &mut HashMap<u64, Sent>, digest: u64, name: String) {
    if sent.len() >= REMEMBERED
        && !sent.contains_key(&digest)
        && let Some(oldest) = sent.iter().min_by_key(|(_, s)| s.last).map(|(d, _)| *d)
    {
        sent.remove(&oldest);
    }
    sent.insert(
        digest,
        Sent {
            name,
            count: 1,
            last: Instant::now(),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{Namespace, ObjectName};

    fn key(pod: &str, note: &str) -> Key {
        Key {
            pod: PodKey {
                namespace: Namespace::parse("tenant").unwrap(),
                name: ObjectName::parse(pod).unwrap(),
            },
            uid: Some("0f7e3c52-1c1a-4f7b-9d55-2f0e6c2b7a10".into()),
            warning: false,
            reason: "AddedInterface",
            action: "Add",
            note: note.into(),
        }
    }

    #[test]
    fn the_same_event_has_the_same_digest_and_another_note_another() {
        let added = key("web", "Add net1 [198.18.0.7/24] from tenant/data");
        assert_eq!(digest(&added), digest(&added.clone()));
        assert_ne!(
            digest(&added),
            digest(&key("web", "Add net2 [198.18.1.7/24] from tenant/data"))
        );
        assert_ne!(digest(&added), digest(&key("db", &added.note)));
    }

    #[test]
    fn at_most_remembered_events_are_kept_and_the_least_recent_goes_first() {
        let mut sent = HashMap::new();
        for i in 0..REMEMBERED as u64 {
            remember(&mut sent, i, format!("web.{i}"));
        }
        // Event 0 repeats, so it is the most recent; event 1 is now the least recent.
        sent.get_mut(&0).unwrap().last = Instant::now() + Duration::from_secs(1);
        remember(&mut sent, u64::MAX, "web.new".into());
        assert_eq!(sent.len(), REMEMBERED);
        assert!(sent.contains_key(&0) && sent.contains_key(&u64::MAX));
        assert!(!sent.contains_key(&1));
        // One it holds, created anew: it replaces itself and costs no other.
        remember(&mut sent, 5, "web.5b".into());
        assert_eq!(sent.len(), REMEMBERED);
        assert!(
            sent.contains_key(&2),
            "the least recent was forgotten for nothing"
        );
        assert_eq!(sent[&5].name, "web.5b");
    }
}
