//! Watch streams: newline-delimited `{"type":..,"object":..}` events over a chunked response.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep_until};

use super::Shared;
use super::select::Selectors;
use super::state::{ChangeType, ResourceInfo, State, status};

/// How often a watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct WatchSpec {
    pub info: ResourceInfo,
    pub namespace: Option<String>,
    pub selectors: Selectors,
    /// `None` (resourceVersion unset or "0"): start with ADDED for every current object.
    pub since: Option<u64>,
    pub send_initial_events: bool,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
}

struct Cursor {
    shared: Arc<Shared>,
    spec: WatchSpec,
    changed: tokio::sync::watch::Receiver<u64>,
    epoch: u64,
    last_rv: u64,
    pending: VecDeque<Bytes>,
    done: bool,
    deadline: Instant,
    next_bookmark: Instant,
}

/// The response body of a watch.
pub(crate) fn start(shared: Arc<Shared>, spec: WatchSpec) -> Body {
    // Subscribed before the snapshot, so no change between the two is slept through.
    let changed = shared.changed.subscribe();
    let now = Instant::now();
    let mut cursor = Cursor {
        shared: shared.clone(),
        changed,
        epoch: 0,
        last_rv: 0,
        pending: VecDeque::new(),
        done: false,
        deadline: now + spec.timeout.unwrap_or(Duration::from_secs(3600)),
        next_bookmark: now + BOOKMARK_EVERY,
        spec,
    };
    {
        let state = shared.lock();
        cursor.epoch = state.epoch;
        match cursor.spec.since {
            Some(rv) if rv < state.compacted => {
                cursor.push_expired();
            }
            since => {
                cursor.last_rv = since.unwrap_or(state.rv);
                if since.is_none() || cursor.spec.send_initial_events {
                    cursor.last_rv = state.rv;
                    let added: Vec<Value> = state
                        .objects_of(&cursor.spec.info, cursor.spec.namespace.as_deref())
                        .filter(|o| cursor.spec.selectors.matches(o))
                        .cloned()
                        .collect();
                    for obj in added {
                        cursor.push_event("ADDED", obj);
                    }
                }
                if cursor.spec.send_initial_events {
                    let mut bookmark = cursor.bookmark(state.rv);
                    bookmark["metadata"]["annotations"] =
                        json!({"k8s.io/initial-events-end": "true"});
                    cursor.push_event("BOOKMARK", bookmark);
                }
            }
        }
    }
    Body::from_stream(futures::stream::unfold(cursor, |mut c| async move {
        c.next().await.map(|line| (Ok::<_, Infallible>(line), c))
    }))
}

impl Cursor {
    fn push_event(&mut self, ty: &str, object: Value) {
        let mut line =
            serde_json::to_vec(&json!({"type": ty, "object": object})).expect("JSON serializes");
        line.push(b'\n');
        self.pending.push_back(Bytes::from(line));
    }

    /// The 410 a real API server sends for a compacted resourceVersion; the stream ends.
    fn push_expired(&mut self) {
        self.push_event(
            "ERROR",
            status(410, "Expired", "too old resource version", None),
        );
        self.done = true;
    }

    fn bookmark(&self, rv: u64) -> Value {
        json!({
            "kind": self.spec.info.kind,
            "apiVersion": self.spec.info.api_version(),
            "metadata": {"resourceVersion": rv.to_string()},
        })
    }

    fn relevant(&self, state: &State) -> Vec<(&'static str, Value)> {
        let start = state.history.partition_point(|c| c.rv <= self.last_rv);
        let info = &self.spec.info;
        let sel = &self.spec.selectors;
        let mut out = Vec::new();
        for change in state.history.range(start..) {
            let key = &change.key;
            if key.group != info.group
                || key.plural != info.plural
                || self
                    .spec
                    .namespace
                    .as_deref()
                    .is_some_and(|ns| ns != key.namespace)
            {
                continue;
            }
            let now_matches = sel.matches(&change.new);
            match change.ty {
                ChangeType::Added if now_matches => out.push(("ADDED", change.new.clone())),
                ChangeType::Deleted if now_matches => out.push(("DELETED", change.new.clone())),
                ChangeType::Modified => {
                    let old = change.old.as_ref();
                    let was_matching = old.is_some_and(|o| sel.matches(o));
                    match (was_matching, now_matches) {
                        (true, true) => out.push(("MODIFIED", change.new.clone())),
                        (false, true) => out.push(("ADDED", change.new.clone())),
                        (true, false) => {
                            // Left the selection: gone for this watcher, at this version.
                            let mut gone = old.cloned().unwrap_or_default();
                            gone["metadata"]["resourceVersion"] = change.rv.to_string().into();
                            out.push(("DELETED", gone));
                        }
                        (false, false) => {}
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Queues what happened since `last_rv` (or the 410 after a compaction).
    fn catch_up(&mut self) {
        let shared = self.shared.clone();
        let state = shared.lock();
        if state.epoch != self.epoch || self.last_rv < state.compacted {
            drop(state);
            self.push_expired();
            return;
        }
        let events = self.relevant(&state);
        self.last_rv = state.rv;
        drop(state);
        for (ty, obj) in events {
            self.push_event(ty, obj);
        }
    }

    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some(line);
            }
            if self.done {
                return None;
            }
            self.catch_up();
            if !self.pending.is_empty() || self.done {
                continue;
            }
            tokio::select! {
                changed = self.changed.changed() => {
                    if changed.is_err() {
                        self.done = true;
                    }
                }
                () = sleep_until(self.next_bookmark), if self.spec.bookmarks => {
                    self.catch_up();
                    if !self.done {
                        let bookmark = self.bookmark(self.last_rv);
                        self.push_event("BOOKMARK", bookmark);
                    }
                    self.next_bookmark = Instant::now() + BOOKMARK_EVERY;
                }
                () = sleep_until(self.deadline) => {
                    self.done = true;
                }
            }
        }
    }
}
