//! A test Kubernetes API server: enough of the REST wire protocol (list, watch with bookmarks
//! and 410 Gone, get, create, update, merge and JSON patch, delete) for pods, NADs and events
//! that kube-rs's reflectors, `Api` calls and event recorder run against it unmodified.
//!
//! It listens on 127.0.0.1 inside a given network namespace (a test node), never in the
//! machine's own. Its state can also be changed in-process, as `kubectl` would, and it counts
//! the requests it serves so tests can assert that a warm ADD makes no read.

mod apply;
mod http;
mod patch;
mod select;
mod state;
mod watch;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use nix::sched::CloneFlags;
use serde_json::Value;
use tokio::task::JoinHandle;

use state::State;

/// Requests served: reads are get and list (not watch), writes are create, update, patch and
/// delete. Every request for a served resource counts, also one refused with 401 or 404.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub reads: u64,
    pub watches: u64,
    pub writes: u64,
}

impl std::ops::AddAssign for Counters {
    fn add_assign(&mut self, other: Self) {
        self.reads += other.reads;
        self.watches += other.watches;
        self.writes += other.writes;
    }
}

/// What the HTTP side and the in-process side share.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Signalled after every change of the state; watches wait on it.
    changed: tokio::sync::watch::Sender<u64>,
    /// The tasks serving accepted connections (aborted by `pause`).
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the state and wakes every watch.
    fn mutate<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (result, rv) = {
            let mut state = self.lock();
            let result = f(&mut state);
            (result, state.rv)
        };
        self.changed.send_replace(rv);
        result
    }
}

pub struct ApiServer {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
    netns_path: String,
    port: u16,
    /// The accept loop while serving.
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl ApiServer {
    /// Listens on 127.0.0.1:<free port> inside the network namespace at `netns_path`; plexusd
    /// in that namespace reaches it at [`url`](Self::url).
    pub fn start_in(netns_path: &str) -> Self {
        let listener = bind_in_netns(netns_path, 0).expect("bind the test API server");
        let port = listener.local_addr().expect("local address").port();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-apiserver")
            .enable_all()
            .build()
            .expect("tokio runtime");
        let server = Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::new()),
                changed: tokio::sync::watch::Sender::new(0),
                connections: Mutex::new(Vec::new()),
            }),
            runtime: Some(runtime),
            netns_path: netns_path.to_owned(),
            port,
            acceptor: Mutex::new(None),
        };
        server.serve(listener);
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Writes a kubeconfig for plexusd (server = `url()`, the current token if any) and
    /// returns its path.
    pub fn write_kubeconfig(&self, path: &Path) -> PathBuf {
        let user = match &self.shared.lock().token {
            Some(token) => format!("  user:\n    token: {token}\n"),
            None => "  user: {}\n".to_owned(),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: plexus-test\n  cluster:\n    server: {url}\ncontexts:\n- name: plexus-test\n  context:\n    cluster: plexus-test\n    user: plexus-test\n    namespace: default\ncurrent-context: plexus-test\nusers:\n- name: plexus-test\n{user}",
            url = self.url(),
        );
        std::fs::write(path, text).expect("write kubeconfig");
        path.to_path_buf()
    }

    /// `Some(token)`: every request must carry `Authorization: Bearer <token>` (401
    /// otherwise); `None`: no authentication. Takes effect for the next request.
    pub fn set_token(&self, token: Option<&str>) {
        self.shared.lock().token = token.map(str::to_owned);
    }

    /// Creates or replaces an object by apiVersion/kind/namespace/name (namespace "default"
    /// when unset), as `kubectl apply` would; watches see ADDED or MODIFIED. Returns the
    /// stored object.
    pub fn apply(&self, object: Value) -> Value {
        self.shared
            .mutate(|s| s.apply(object))
            .unwrap_or_else(|e| panic!("apply: {}", e.message))
    }

    /// Deletes an object (kind as `Pod`, `pods` or `NetworkAttachmentDefinition`); watches
    /// see DELETED. Returns whether it was there.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> bool {
        self.shared.mutate(|s| {
            let info = s
                .resource_by_kind(kind)
                .unwrap_or_else(|| panic!("unknown kind {kind}"));
            s.delete(&info.key(namespace, name)).is_some()
        })
    }

    pub fn object(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let state = self.shared.lock();
        let info = state.resource_by_kind(kind)?;
        state.objects.get(&info.key(namespace, name)).cloned()
    }

    /// The events that exist (both the events.k8s.io and the core group), oldest first.
    pub fn events(&self) -> Vec<Value> {
        let state = self.shared.lock();
        let mut events: Vec<Value> = state
            .objects
            .iter()
            .filter(|(k, _)| k.plural == "events")
            .map(|(_, v)| v.clone())
            .collect();
        events.sort_by(|a, b| {
            let uid = |v: &Value| v["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
            uid(a).cmp(&uid(b))
        });
        events
    }

    /// All requests served since the start (or the last `reset_counters`).
    pub fn counters(&self) -> Counters {
        let mut total = Counters::default();
        for c in self.shared.lock().counters.values() {
            total += *c;
        }
        total
    }

    /// The requests for one resource by plural: `pods`, `network-attachment-definitions`,
    /// `events`.
    pub fn counters_for(&self, plural: &str) -> Counters {
        self.shared
            .lock()
            .counters
            .get(plural)
            .copied()
            .unwrap_or_default()
    }

    /// Zeroes the counters and clears the request log.
    pub fn reset_counters(&self) {
        let mut state = self.shared.lock();
        state.counters.clear();
        state.requests.clear();
    }

    /// `"GET /api/v1/pods?fieldSelector=..."`, one per request, in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// While `true`, every request (watches included) is answered 500 InternalError, as an
    /// API server whose storage is failing would; open watches keep streaming.
    pub fn fail_requests(&self, failing: bool) {
        self.shared.lock().failing = failing;
    }

    /// Makes every resourceVersion handed out so far too old: open watches get a 410 ERROR
    /// event and end, and a watch resuming from an older version gets the same.
    pub fn compact(&self) {
        self.shared.mutate(State::compact);
    }

    /// Stops serving: the listener and every open connection (watches included) are closed;
    /// connections are refused until `resume`. The state stays.
    pub fn pause(&self) {
        let Some(acceptor) = self.acceptor.lock().expect("acceptor").take() else {
            return;
        };
        acceptor.abort();
        wait_finished(&acceptor);
        let connections =
            std::mem::take(&mut *self.shared.connections.lock().expect("connections"));
        for c in &connections {
            c.abort();
        }
        for c in &connections {
            wait_finished(c);
        }
    }

    /// Serves again, on the same port and with the same state.
    pub fn resume(&self) {
        // Held throughout, so that two threads resuming at once bind the port only once.
        let mut acceptor = self.acceptor.lock().expect("acceptor");
        if acceptor.is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match bind_in_netns(&self.netns_path, self.port) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("rebind the test API server on port {}: {e}", self.port),
            }
        };
        *acceptor = Some(self.accept(listener));
    }

    fn serve(&self, listener: TcpListener) {
        let handle = self.accept(listener);
        *self.acceptor.lock().expect("acceptor") = Some(handle);
    }

    fn accept(&self, listener: TcpListener) -> JoinHandle<()> {
        let shared = self.shared.clone();
        let runtime = self.runtime.as_ref().expect("runtime");
        runtime.spawn(accept_loop(listener, shared))
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.pause();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn wait_finished(handle: &JoinHandle<()>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !handle.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let router = http::router(shared.clone());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let mut connections = shared.connections.lock().expect("connections");
        connections.retain(|c| !c.is_finished());
        connections.push(connection);
    }
}

/// A non-blocking listener on 127.0.0.1:`port` created inside the network namespace.
fn bind_in_netns(netns_path: &str, port: u16) -> std::io::Result<TcpListener> {
    in_netns(netns_path, move || {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })
}

/// Runs `f` on a fresh OS thread that has entered the network namespace at `netns_path`
/// (setns, CLONE_NEWNET), so every socket it opens lives there; returns its result. A panic
/// in `f` is re-raised here.
pub fn in_netns<T: Send>(netns_path: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("in-netns".into())
            .spawn_scoped(scope, move || {
                let ns = File::open(netns_path)
                    .unwrap_or_else(|e| panic!("open netns {netns_path}: {e}"));
                nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {netns_path}: {e}"));
                f()
            })
            .expect("spawn thread");
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs the future `f` makes to completion on a current-thread tokio runtime, on a thread
/// inside the network namespace at `netns_path` (see [`in_netns`]): the way to run kube-rs
/// client code against an [`ApiServer`] in that namespace.
pub fn block_in_netns<T, Fut>(netns_path: &str, f: impl FnOnce() -> Fut + Send) -> T
where
    T: Send,
    Fut: Future<Output = T>,
{
    in_netns(netns_path, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(f())
    })
}

/// A kube-rs client from a kubeconfig file (such as [`ApiServer::write_kubeconfig`] writes).
/// Call it inside the network namespace the server is reachable from.
pub async fn kube_client(kubeconfig: &Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("read kubeconfig {}: {e}", kubeconfig.display()));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig");
    kube::Client::try_from(config).expect("kube client")
}
