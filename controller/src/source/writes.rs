//! The kube source's background writes to the API server, coalesced and bounded.
//!
//! A burst of pods (50 ADDs at once) wants a status patch per pod and an event per
//! interface, and on a small cluster the API server runs on the same CPUs as the pods'
//! delegates. So the writes are shaped the way client-go's controllers shape theirs:
//! - [`LatestWins`]: one write per key (a pod) at a time, and only the latest value: a value
//!   that arrives while an older one waits replaces it, and one that arrives while the older
//!   is being written waits for it, so an older patch can never land after a newer one. A
//!   fixed number of writers serve every key, retrying failures with backoff.
//! - [`Bounded`]: at most a fixed number of writes in flight and a bounded queue behind them;
//!   past it, new writes are dropped and counted (client-go's event broadcaster drops the
//!   same way rather than holding the caller).

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{Notify, mpsc};

/// What one attempt at a write came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Written.
    Done,
    /// Not to be written any more (the pod is gone or was replaced).
    Abandon,
    /// Failed for now; tried again after a pause, with the key's latest value.
    Retry,
}

/// Writes one value of one key.
pub type WriteFn<K, V> = Arc<dyn Fn(K, V) -> BoxFuture<'static, Outcome> + Send + Sync>;

/// First pause after a failed write, doubled per failure up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_millis(200);
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// Latest-wins writes per key, by a fixed set of writer tasks.
pub struct LatestWins<K, V> {
    shared: Arc<Shared<K, V>>,
}

struct Shared<K, V> {
    queue: Mutex<Queue<K, V>>,
    ready: Notify,
}

struct Queue<K, V> {
    /// The value waiting to be written, per key.
    latest: HashMap<K, V>,
    /// Keys with a waiting value and no write in flight, oldest first.
    order: VecDeque<K>,
    /// Keys being written.
    busy: HashSet<K>,
}

impl<K, V> LatestWins<K, V>
where
    K: Clone + Eq + Hash + Send + 'static,
    V: Clone + Send + 'static,
{
    /// Starts `writers` tasks on the current runtime; they run as long as it does.
    pub fn start(writers: usize, write: WriteFn<K, V>) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                latest: HashMap::new(),
                order: VecDeque::new(),
                busy: HashSet::new(),
            }),
            ready: Notify::new(),
        });
        for _ in 0..writers.max(1) {
            tokio::spawn(writer(Arc::clone(&shared), Arc::clone(&write)));
        }
        Self { shared }
    }

    /// Queues `value` as the one to write for `key`, replacing any that still waits.
    pub fn submit(&self, key: K, value: V) {
        let Ok(mut queue) = self.shared.queue.lock() else {
            return;
        };
        let waiting = queue.latest.insert(key.clone(), value).is_some();
        if !waiting && !queue.busy.contains(&key) {
            queue.order.push_back(key);
            drop(queue);
            self.shared.ready.notify_one();
        }
    }
}

impl<K: Clone + Eq + Hash, V> Shared<K, V> {
    /// The oldest waiting key and its value, now marked busy.
    fn next(&self) -> Option<(K, V)> {
        let mut queue = self.queue.lock().ok()?;
        let key = queue.order.pop_front()?;
        let value = queue.latest.remove(&key)?;
        queue.busy.insert(key.clone());
        Some((key, value))
    }

    /// A value for `key` that arrived while it was being written.
    fn newer(&self, key: &K) -> Option<V> {
        self.queue.lock().ok()?.latest.remove(key)
    }

    /// `key` is no longer being written; a value that came meanwhile gets its turn.
    fn release(&self, key: &K) {
        let Ok(mut queue) = self.queue.lock() else {
            return;
        };
        queue.busy.remove(key);
        if queue.latest.contains_key(key) {
            queue.order.push_back(key.clone());
            drop(queue);
            self.ready.notify_one();
        }
    }
}

async fn writer<K, V>(shared: Arc<Shared<K, V>>, write: WriteFn<K, V>)
where
    K: Clone + Eq + Hash,
    V: Clone,
{
    loop {
        // Drains the queue before waiting: a wake-up that came while busy is not lost.
        let Some((key, mut value)) = shared.next() else {
            shared.ready.notified().await;
            continue;
        };
        let mut delay = RETRY_FIRST;
        loop {
            if write(key.clone(), value.clone()).await != Outcome::Retry {
                break;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RETRY_MAX);
            if let Some(newer) = shared.newer(&key) {
                value = newer;
            }
        }
        shared.release(&key);
    }
}

/// At most `writers` writes in flight, `capacity` more waiting; the rest are dropped.
pub struct Bounded {
    queue: mpsc::Sender<BoxFuture<'static, ()>>,
    dropped: Arc<AtomicU64>,
}

impl Bounded {
    /// Starts `writers` tasks on the current runtime; they run as long as it does.
    pub fn start(writers: usize, capacity: usize) -> Self {
        let (queue, waiting) = mpsc::channel::<BoxFuture<'static, ()>>(capacity.max(1));
        let waiting = Arc::new(tokio::sync::Mutex::new(waiting));
        for _ in 0..writers.max(1) {
            let waiting = Arc::clone(&waiting);
            tokio::spawn(async move {
                loop {
                    let next = waiting.lock().await.recv().await;
                    match next {
                        Some(write) => write.await,
                        None => return,
                    }
                }
            });
        }
        Self {
            queue,
            dropped: Arc::default(),
        }
    }

    /// Queues `write`; `false` if the queue is full and it was dropped.
    pub fn submit(&self, write: BoxFuture<'static, ()>) -> bool {
        match self.queue.try_send(write) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Writes dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::Semaphore;

    use super::*;

    /// Records every write; each waits for a permit, so the test decides when it lands.
    #[derive(Clone)]
    struct Api {
        written: Arc<Mutex<Vec<(&'static str, u32)>>>,
        gate: Arc<Semaphore>,
        fail_first: Arc<AtomicUsize>,
    }

    impl Api {
        fn new() -> Self {
            Self {
                written: Arc::default(),
                gate: Arc::new(Semaphore::new(0)),
                fail_first: Arc::default(),
            }
        }

        fn write_fn(&self) -> WriteFn<&'static str, u32> {
            let api = self.clone();
            Arc::new(move |key, value| {
                let api = api.clone();
                Box::pin(async move {
                    let Ok(permit) = api.gate.acquire().await else {
                        return Outcome::Abandon;
                    };
                    permit.forget();
                    if api
                        .fail_first
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        return Outcome::Retry;
                    }
                    api.written.lock().unwrap().push((key, value));
                    Outcome::Done
                })
            })
        }

        fn written(&self) -> Vec<(&'static str, u32)> {
            self.written.lock().unwrap().clone()
        }

        async fn wait_for(&self, count: usize) {
            while self.written().len() < count {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    #[tokio::test]
    async fn values_that_arrive_while_one_is_written_collapse_into_the_latest() {
        let api = Api::new();
        let writes = LatestWins::start(2, api.write_fn());
        writes.submit("pod-a", 1);
        // The first write is in flight (waiting for its permit) ...
        tokio::task::yield_now().await;
        for value in 2..=5 {
            writes.submit("pod-a", value);
        }
        // ... and lands first; then only the latest of the rest.
        api.gate.add_permits(10);
        api.wait_for(2).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(api.written(), [("pod-a", 1), ("pod-a", 5)]);
    }

    #[tokio::test]
    async fn every_key_gets_its_latest_value_written() {
        let api = Api::new();
        let writes = LatestWins::start(1, api.write_fn());
        for (key, value) in [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2)] {
            writes.submit(key, value);
        }
        api.gate.add_permits(10);
        api.wait_for(3).await;
        let mut written = api.written();
        written.sort();
        assert_eq!(written, [("a", 2), ("b", 2), ("c", 1)]);
    }

    #[tokio::test]
    async fn a_failed_write_is_retried_with_the_value_that_came_meanwhile() {
        let api = Api::new();
        api.fail_first.store(1, Ordering::SeqCst);
        let writes = LatestWins::start(1, api.write_fn());
        writes.submit("pod-a", 1);
        api.gate.add_permits(1);
        // The first attempt fails; a newer value arrives during the pause.
        while api.gate.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        writes.submit("pod-a", 2);
        api.gate.add_permits(10);
        api.wait_for(1).await;
        assert_eq!(api.written(), [("pod-a", 2)]);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let bounded = Bounded::start(1, 2);
        let release = Arc::new(Semaphore::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let write = || -> BoxFuture<'static, ()> {
            let (release, done) = (Arc::clone(&release), Arc::clone(&done));
            Box::pin(async move {
                let _ = release.acquire().await.map(|p| p.forget());
                done.fetch_add(1, Ordering::SeqCst);
            })
        };
        // One in flight once the writer picks it up, two waiting, the rest dropped.
        assert!(bounded.submit(write()));
        while bounded.queue.capacity() < 2 {
            tokio::task::yield_now().await;
        }
        assert!(bounded.submit(write()));
        assert!(bounded.submit(write()));
        assert!(!bounded.submit(write()));
        assert_eq!(bounded.dropped(), 1);
        release.add_permits(10);
        while done.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
        assert_eq!(done.load(Ordering::SeqCst), 3);
    }
}
