//! When hot-plug runs: for every pod the source says changed, for every container an ADD has
//! just recorded, once for every recorded pod after the source has synced, and again with
//! backoff while a failure may go away by itself (a NAD created later, a plugin fixed).
//! Level-triggered: each run compares the pod's annotation as it is now with the record, so a
//! missed or repeated update costs nothing but the comparison.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::names::{ContainerId, PodKey};
use crate::selection::NETWORKS_ANNOTATION;
use crate::service::{Followed, Plexus, PodChanges, Recorded};

/// Backoff of the retries while an attachment keeps failing.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How often the source's readiness is looked at until it has synced.
const SYNC_POLL: Duration = Duration::from_millis(100);

/// How long to wait before trying a pod again after its `failures`-th failure in a row.
pub fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    RETRY_FIRST.saturating_mul(1 << doublings).min(RETRY_MAX)
}

/// Runs for the life of plexusd. Changes a crash left in flight are finished or undone
/// first, whether hot-plug is on or not; with `dynamicNetworks` on, pods then follow their
/// annotations.
pub async fn run(plexus: Arc<Plexus>, metrics: Arc<Metrics>) {
    // Subscribed before anything else, so that no update between here and the first pass
    // over the records is missed.
    let updates = plexus.source().pod_updates();
    let recorded = plexus.subscribe_recorded();
    finish_interrupted(&plexus, &metrics).await;
    if !plexus.config().dynamic_networks {
        tracing::info!("dynamic networks off: pods keep the networks they started with");
        return;
    }
    let Some(updates) = updates else {
        tracing::warn!("dynamic networks on, but the source does not follow pods");
        return;
    };
    while !plexus.source().readiness().ready {
        tokio::time::sleep(SYNC_POLL).await;
    }
    tracing::info!("dynamic networks on: pods follow their networks annotation");
    Reconciler::new(plexus, metrics)
        .run(updates, recorded)
        .await;
}

async fn finish_interrupted(plexus: &Arc<Plexus>, metrics: &Metrics) {
    for (id, _) in recorded_containers(plexus).await {
        match plexus.finish_interrupted(&id).await {
            Ok(changes) => count(metrics, &changes),
            Err(error) => {
                tracing::warn!(container = %id, %error, "cannot finish a hot-plug change left in flight; the pod's DEL will delete it")
            }
        }
    }
}

async fn recorded_containers(plexus: &Arc<Plexus>) -> Vec<(ContainerId, Option<PodKey>)> {
    let plexus = Arc::clone(plexus);
    match tokio::task::spawn_blocking(move || plexus.recorded_containers()).await {
        Ok(Ok(containers)) => containers,
        Ok(Err(error)) => {
            tracing::error!(%error, "cannot list the records");
            Vec::new()
        }
        Err(error) => {
            tracing::error!(%error, "listing the records failed");
            Vec::new()
        }
    }
}

fn count(metrics: &Metrics, changes: &PodChanges) {
    for network in &changes.attached {
        metrics.count_hotplug(network, "attach", false);
    }
    for network in &changes.detached {
        metrics.count_hotplug(network, "detach", false);
    }
    for failure in &changes.failures {
        metrics.count_hotplug(&failure.network, failure.operation.as_str(), true);
    }
}

/// Why a pod is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The source says the pod changed: while the pod waits out a backoff with the same
    /// annotation, nothing is done (kubelet's status updates would otherwise retry it at
    /// once, over and over).
    Update,
    /// A backoff ran out, a record is new, or plexusd started: the pod is looked at anyway.
    Look,
}

/// A pod whose last run failed in a way that may go away by itself.
struct Backoff {
    failures: u32,
    /// The networks annotation the failing run saw.
    annotation: Option<String>,
    /// Only the latest timer counts; an earlier one that fires is ignored.
    generation: u64,
}

enum Work {
    Retry(PodKey, u64),
    Done(PodKey, Outcome),
}

#[derive(Default)]
struct Outcome {
    annotation: Option<String>,
    retry: bool,
    /// Nothing was done: the pod waits out its backoff.
    waited: bool,
    /// Containers whose record is gone (DEL came first).
    gone: Vec<ContainerId>,
}

struct Reconciler {
    plexus: Arc<Plexus>,
    metrics: Arc<Metrics>,
    /// The recorded containers of each pod on this node.
    index: HashMap<PodKey, BTreeSet<ContainerId>>,
    /// Pods being reconciled now; a pod never runs twice at once.
    running: HashSet<PodKey>,
    /// Pods to look at again once their current run ends.
    again: HashMap<PodKey, Trigger>,
    backoff: HashMap<PodKey, Backoff>,
    next_generation: u64,
    work: mpsc::UnboundedSender<Work>,
    done: mpsc::UnboundedReceiver<Work>,
}

impl Reconciler {
    fn new(plexus: Arc<Plexus>, metrics: Arc<Metrics>) -> Self {
        let (work, done) = mpsc::unbounded_channel();
        Self {
            plexus,
            metrics,
            index: HashMap::new(),
            running: HashSet::new(),
            again: HashMap::new(),
            backoff: HashMap::new(),
            next_generation: 0,
            work,
            done,
        }
    }

    async fn run(
        mut self,
        mut updates: broadcast::Receiver<PodKey>,
        mut recorded: broadcast::Receiver<Recorded>,
    ) {
        self.look_at_everything(Trigger::Look).await;
        loop {
            tokio::select! {
                update = updates.recv() => match update {
                    Ok(pod) => self.trigger(pod, Trigger::Update),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "pod updates missed; looking at every recorded pod");
                        self.look_at_everything(Trigger::Update).await;
                    }
                    Err(RecvError::Closed) => break,
                },
                added = recorded.recv() => match added {
                    Ok(Recorded { pod, container }) => {
                        self.index.entry(pod.clone()).or_default().insert(container);
                        self.trigger(pod, Trigger::Look);
                    }
                    Err(RecvError::Lagged(_)) => self.look_at_everything(Trigger::Look).await,
                    Err(RecvError::Closed) => break,
                },
                Some(work) = self.done.recv() => match work {
                    Work::Retry(pod, generation) => {
                        if self.backoff.get(&pod).is_some_and(|b| b.generation == generation) {
                            self.trigger(pod, Trigger::Look);
                        }
                    }
                    Work::Done(pod, outcome) => self.finished(pod, outcome),
                },
            }
        }
    }

    /// Rebuilds the index from the records and looks at every pod in it.
    async fn look_at_everything(&mut self, trigger: Trigger) {
        self.index.clear();
        for (id, pod) in recorded_containers(&self.plexus).await {
            if let Some(pod) = pod {
                self.index.entry(pod).or_default().insert(id);
            }
        }
        let pods: Vec<PodKey> = self.index.keys().cloned().collect();
        for pod in pods {
            self.trigger(pod, trigger);
        }
    }

    fn trigger(&mut self, pod: PodKey, trigger: Trigger) {
        // Most updates are of pods without a record here (not started yet, or not ours).
        if !self.index.contains_key(&pod) {
            return;
        }
        if self.running.contains(&pod) {
            let queued = self.again.entry(pod).or_insert(trigger);
            if trigger == Trigger::Look {
                *queued = Trigger::Look;
            }
            return;
        }
        let containers: Vec<ContainerId> = self.index[&pod].iter().cloned().collect();
        let waiting = match trigger {
            Trigger::Update => self.backoff.get(&pod).map(|b| b.annotation.clone()),
            Trigger::Look => None,
        };
        self.running.insert(pod.clone());
        let (plexus, metrics, work) = (
            Arc::clone(&self.plexus),
            Arc::clone(&self.metrics),
            self.work.clone(),
        );
        tokio::spawn(async move {
            let outcome = reconcile(&plexus, &metrics, &pod, containers, waiting).await;
            let _ = work.send(Work::Done(pod, outcome));
        });
    }

    fn finished(&mut self, pod: PodKey, outcome: Outcome) {
        self.running.remove(&pod);
        if let Some(containers) = self.index.get_mut(&pod) {
            for id in &outcome.gone {
                containers.remove(id);
            }
            if containers.is_empty() {
                self.index.remove(&pod);
                self.backoff.remove(&pod);
            }
        }
        if outcome.retry && self.index.contains_key(&pod) {
            self.next_generation += 1;
            let backoff = self.backoff.entry(pod.clone()).or_insert(Backoff {
                failures: 0,
                annotation: None,
                generation: 0,
            });
            backoff.failures += 1;
            backoff.annotation = outcome.annotation;
            backoff.generation = self.next_generation;
            let delay = retry_delay(backoff.failures);
            tracing::info!(%pod, failures = backoff.failures, retry_in_ms = delay.as_millis() as u64, "hot-plug will try again");
            let (work, generation, key) = (self.work.clone(), backoff.generation, pod.clone());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = work.send(Work::Retry(key, generation));
            });
        } else if !outcome.waited {
            self.backoff.remove(&pod);
        }
        if let Some(trigger) = self.again.remove(&pod) {
            self.trigger(pod, trigger);
        }
    }
}

/// One run for one pod: every recorded container of it follows the pod's annotation.
async fn reconcile(
    plexus: &Plexus,
    metrics: &Metrics,
    key: &PodKey,
    containers: Vec<ContainerId>,
    waiting: Option<Option<String>>,
) -> Outcome {
    let pod = match plexus.source().pod(key, None).await {
        Ok(Some(pod)) => pod,
        // The pod is gone: tearing its networks down is the runtime's DEL's job.
        Ok(None) => return Outcome::default(),
        Err(error) => {
            tracing::warn!(pod = %key, %error, "cannot look the pod up for hot-plug");
            return Outcome {
                retry: true,
                ..Outcome::default()
            };
        }
    };
    let annotation = pod.annotation(NETWORKS_ANNOTATION).map(str::to_owned);
    if waiting.as_ref() == Some(&annotation) {
        return Outcome {
            annotation,
            waited: true,
            ..Outcome::default()
        };
    }
    let mut outcome = Outcome {
        annotation,
        ..Outcome::default()
    };
    for id in containers {
        match plexus.follow_annotation(&id, &pod).await {
            Ok(Followed::Done(changes)) => {
                count(metrics, &changes);
                outcome.retry |= changes.worth_retrying();
            }
            Ok(Followed::NoRecord) => outcome.gone.push(id),
            Ok(Followed::OtherPod) => {
                tracing::debug!(container = %id, pod = %key, "the record is of an earlier pod of this name; left alone")
            }
            Ok(Followed::Deleting) => {
                tracing::debug!(container = %id, pod = %key, "the container is being deleted; left alone")
            }
            Err(error) => {
                tracing::warn!(container = %id, pod = %key, %error, "hot-plug failed");
                outcome.retry = true;
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_doubling_up_to_thirty_seconds() {
        let delays: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
    }
}
