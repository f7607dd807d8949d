//! Events on pods (events.k8s.io/v1), aggregated as client-go aggregates them: an event that
//! repeats one sent recently (same pod, type, reason, action and note) bumps that event's
//! series instead of creating another, so a hot-plug retry that keeps failing shows as one
//! Warning with a count. kube-rs's `Recorder` leaves the note out of that comparison: every
//! `AddedInterface` of a pod after the first would update the first and lose what it says.

use std::collections::HashMap;
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
    sent: Mutex<HashMap<Key, Sent>>,
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
            sent.insert(
                key,
                Sent {
                    name,
                    count: 1,
                    last: Instant::now(),
                },
            );
        }
        Ok(())
    }

    /// The name and new count of the recent event `key` repeats, if there is one; events
    /// older than the window are forgotten on the way.
    fn repeat_of(&self, key: &Key) -> Option<(String, i32)> {
        let mut sent = self.sent.lock().ok()?;
        sent.retain(|_, s| s.last.elapsed() < SERIES_WINDOW);
        let repeated = sent.get_mut(key)?;
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
