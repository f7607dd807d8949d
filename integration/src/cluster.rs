//! Where a `kube` node's API objects live: the test API server inside the node's namespace,
//! or, when `PLEXUS_TEST_KUBECONFIG` names one, a real cluster.
//!
//! Against a real cluster the test process talks to the API server directly, and plexusd,
//! which runs inside the node's namespace, reaches it through a TCP forwarder listening on
//! 127.0.0.1 in that namespace (its kubeconfig keeps the real server's name for TLS).
//! Objects a test creates are deleted again when the node goes. Tests that need to control
//! the API server itself (pause it, count its requests, rotate its token) run only against
//! the test API server and say so when skipped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceSlice};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use plexus_crds::NetworkAttachmentDefinition;
use serde_json::Value;

use crate::apiserver::{ApiServer, in_netns};

/// The variable that points the kube tests at a real cluster.
pub const KUBECONFIG_VAR: &str = "PLEXUS_TEST_KUBECONFIG";

thread_local! {
    static REAL_CLUSTER: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with the kube nodes this thread builds on the cluster `kubeconfig` names, as if
/// `PLEXUS_TEST_KUBECONFIG` named it: how the real-cluster mode is tested without a real
/// cluster and without touching the process's environment.
pub fn with_real_cluster<T>(kubeconfig: &Path, f: impl FnOnce() -> T) -> T {
    let before = REAL_CLUSTER.with(|real| real.replace(Some(kubeconfig.to_owned())));
    let result = f();
    REAL_CLUSTER.with(|real| real.replace(before));
    result
}

pub enum Cluster {
    Fixture(ApiServer),
    Real(Box<RealCluster>),
}

impl Cluster {
    /// A real cluster when `PLEXUS_TEST_KUBECONFIG` is set (or [`with_real_cluster`] runs),
    /// else the test API server; either way reachable from the namespace at `netns_path`.
    pub fn for_node(netns_path: &str) -> Self {
        if let Some(path) = REAL_CLUSTER.with(|real| real.borrow().clone()) {
            return Self::real(&path, netns_path);
        }
        match std::env::var_os(KUBECONFIG_VAR) {
            Some(path) if !path.is_empty() => Self::real(Path::new(&path), netns_path),
            _ => Self::Fixture(ApiServer::start_in(netns_path)),
        }
    }

    /// The cluster `kubeconfig` names, reached from the namespace at `netns_path` through a
    /// forwarder. The forwarder dials out from the namespace of the calling thread.
    pub fn real(kubeconfig: &Path, netns_path: &str) -> Self {
        Self::Real(Box::new(RealCluster::connect(kubeconfig, netns_path)))
    }

    /// The test API server, for tests that steer it; `None` on a real cluster.
    pub fn fixture(&self) -> Option<&ApiServer> {
        match self {
            Self::Fixture(api) => Some(api),
            Self::Real(_) => None,
        }
    }

    /// Creates or replaces an object, as `kubectl apply` does.
    pub fn apply(&self, object: Value) -> Value {
        match self {
            Self::Fixture(api) => api.apply(object),
            Self::Real(real) => real.apply(object),
        }
    }

    /// Creates or replaces an object together with its status, as the controllers that own
    /// the status would write it (a claim's allocation, a pod's claim statuses). A real API
    /// server takes the status only through the status subresource.
    pub fn apply_with_status(&self, object: Value) -> Value {
        match self {
            Self::Fixture(api) => api.apply(object),
            Self::Real(real) => real.apply_with_status(object),
        }
    }

    /// Whether the API server serves DRA (resource.k8s.io/v1); the test API server does.
    pub fn serves_dra(&self) -> bool {
        match self {
            Self::Fixture(_) => true,
            Self::Real(real) => real.serves_dra(),
        }
    }

    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> bool {
        match self {
            Self::Fixture(api) => api.delete(kind, namespace, name),
            Self::Real(real) => real.delete(kind, namespace, name),
        }
    }

    pub fn object(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        match self {
            Self::Fixture(api) => api.object(kind, namespace, name),
            Self::Real(real) => real.object(kind, namespace, name),
        }
    }

    /// Events (events.k8s.io/v1) in the namespaces this test used.
    pub fn events(&self) -> Vec<Value> {
        match self {
            Self::Fixture(api) => api.events(),
            Self::Real(real) => real.events(),
        }
    }

    /// Writes plexusd's kubeconfig; with a real cluster, pointing at the forwarder.
    pub fn write_kubeconfig(&self, path: &Path, token_file: &Path) -> PathBuf {
        match self {
            Self::Fixture(api) => {
                let text = format!(
                    "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: plexusd\ncurrent-context: test\nusers:\n- name: plexusd\n  user:\n    tokenFile: {token}\n",
                    url = api.url(),
                    token = token_file.display(),
                );
                std::fs::write(path, text).expect("write kubeconfig");
            }
            Self::Real(real) => real.write_kubeconfig(path),
        }
        path.to_path_buf()
    }
}

/// A real cluster, reached from the test process directly and from plexusd's namespace
/// through a forwarder.
pub struct RealCluster {
    kubeconfig: kube::config::Kubeconfig,
    forwarder_port: u16,
    runtime: tokio::runtime::Runtime,
    client: kube::Client,
    created: Mutex<Vec<(String, String, String)>>,
}

/// The kinds the tests create, and whether they are namespaced.
fn resource(kind: &str) -> (ApiResource, bool) {
    match kind {
        "Pod" | "pods" => (ApiResource::erase::<Pod>(&()), true),
        "NetworkAttachmentDefinition" | "network-attachment-definitions" => {
            (ApiResource::erase::<NetworkAttachmentDefinition>(&()), true)
        }
        "ResourceClaim" | "resourceclaims" => (ApiResource::erase::<ResourceClaim>(&()), true),
        "ResourceSlice" | "resourceslices" => (ApiResource::erase::<ResourceSlice>(&()), false),
        other => {
            panic!("the real-cluster mode handles pods, NADs, claims and slices, not {other}")
        }
    }
}

impl RealCluster {
    fn connect(kubeconfig_path: &Path, netns_path: &str) -> Self {
        let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig_path)
            .unwrap_or_else(|e| panic!("{KUBECONFIG_VAR}={}: {e}", kubeconfig_path.display()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let client = runtime.block_on(async {
            let config =
                kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &Default::default())
                    .await
                    .expect("kubeconfig");
            kube::Client::try_from(config).expect("kube client")
        });
        let upstream = server_address(&current_server(&kubeconfig));
        let listener =
            in_netns(netns_path, || TcpListener::bind("127.0.0.1:0")).expect("forwarder listener");
        let forwarder_port = listener.local_addr().expect("forwarder address").port();
        listener.set_nonblocking(true).expect("nonblocking");
        runtime.spawn(forward(listener, upstream));
        Self {
            kubeconfig,
            forwarder_port,
            runtime,
            client,
            created: Mutex::default(),
        }
    }

    fn write_kubeconfig(&self, path: &Path) {
        let mut kubeconfig = self.kubeconfig.clone();
        let server = current_server(&kubeconfig);
        let host = server_host(&server);
        let scheme = server
            .split("://")
            .next()
            .filter(|s| *s != server)
            .unwrap_or("https");
        let cluster_name = current_cluster_name(&kubeconfig);
        for named in &mut kubeconfig.clusters {
            if named.name == cluster_name
                && let Some(cluster) = named.cluster.as_mut()
            {
                cluster.server = Some(format!("{scheme}://127.0.0.1:{}", self.forwarder_port));
                // The certificate names the real server, not the forwarder.
                cluster.tls_server_name = Some(host.clone());
            }
        }
        let text = serde_saphyr::to_string(&kubeconfig).expect("kubeconfig YAML");
        std::fs::write(path, text).expect("write kubeconfig");
    }

    fn api(&self, kind: &str, namespace: &str) -> Api<DynamicObject> {
        match resource(kind) {
            (resource, true) => Api::namespaced_with(self.client.clone(), namespace, &resource),
            (resource, false) => Api::all_with(self.client.clone(), &resource),
        }
    }

    fn apply_with_status(&self, object: Value) -> Value {
        let status = object.get("status").cloned();
        let applied = self.apply(object.clone());
        let Some(status) = status else {
            return applied;
        };
        let kind = object["kind"].as_str().expect("kind").to_owned();
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let name = object["metadata"]["name"].as_str().expect("name");
        let mut body = object.clone();
        body["status"] = status;
        if let Some(meta) = body["metadata"].as_object_mut() {
            meta.remove("uid");
        }
        let api = self.api(&kind, namespace);
        let patched = self.runtime.block_on(async {
            let params = PatchParams::apply("plexus-test").force();
            api.patch_status(name, &params, &Patch::Apply(&body))
                .await
                .expect("apply status")
        });
        serde_json::to_value(patched).expect("object JSON")
    }

    fn serves_dra(&self) -> bool {
        self.runtime.block_on(async {
            self.client
                .list_api_group_resources("resource.k8s.io/v1")
                .await
                .is_ok_and(|list| list.resources.iter().any(|r| r.name == "resourceclaims"))
        })
    }

    fn apply(&self, object: Value) -> Value {
        let kind = object["kind"].as_str().expect("kind").to_owned();
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let name = object["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        let mut object = object;
        // The API server assigns uids; the pod's CNI_ARGS take the one it gives.
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("uid");
        }
        let api = self.api(&kind, &namespace);
        let applied = self.runtime.block_on(async {
            ensure_namespace(&self.client, &namespace).await;
            let params = PatchParams::apply("plexus-test").force();
            api.patch(&name, &params, &Patch::Apply(&object))
                .await
                .expect("apply")
        });
        self.created
            .lock()
            .expect("created")
            .push((kind, namespace, name));
        serde_json::to_value(applied).expect("object JSON")
    }

    fn delete(&self, kind: &str, namespace: &str, name: &str) -> bool {
        let api = self.api(kind, namespace);
        self.runtime.block_on(async {
            api.delete(name, &DeleteParams::default().grace_period(0))
                .await
                .is_ok()
        })
    }

    fn object(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let api = self.api(kind, namespace);
        self.runtime
            .block_on(async { api.get_opt(name).await.expect("get") })
            .map(|o| serde_json::to_value(o).expect("object JSON"))
    }

    fn events(&self) -> Vec<Value> {
        let namespaces: Vec<String> = {
            let created = self.created.lock().expect("created");
            let mut namespaces: Vec<String> = created.iter().map(|(_, ns, _)| ns.clone()).collect();
            namespaces.sort();
            namespaces.dedup();
            namespaces
        };
        self.runtime.block_on(async {
            let mut all = Vec::new();
            for namespace in namespaces {
                let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
                let list = api.list(&ListParams::default()).await.expect("list events");
                all.extend(
                    list.items
                        .into_iter()
                        .map(|e| serde_json::to_value(e).expect("event JSON")),
                );
            }
            all
        })
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        let created = std::mem::take(&mut *self.created.lock().unwrap_or_else(|p| p.into_inner()));
        for (kind, namespace, name) in created.into_iter().rev() {
            self.delete(&kind, &namespace, &name);
        }
    }
}

async fn ensure_namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await.expect("get namespace").is_none() {
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
                .expect("namespace");
        // Another test may have created it meanwhile; that is fine.
        let _ = api.create(&PostParams::default(), &namespace).await;
    }
}

fn current_cluster_name(kubeconfig: &kube::config::Kubeconfig) -> String {
    let context = kubeconfig.current_context.clone().unwrap_or_default();
    kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .unwrap_or_default()
}

fn current_server(kubeconfig: &kube::config::Kubeconfig) -> String {
    let cluster = current_cluster_name(kubeconfig);
    kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == cluster)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .expect("the kubeconfig's current context names a cluster with a server")
}

/// `https://host:port/...` -> `host`.
fn server_host(server: &str) -> String {
    let rest = server.split("://").nth(1).unwrap_or(server);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => {
            host.trim_matches(['[', ']']).to_owned()
        }
        _ => authority.trim_matches(['[', ']']).to_owned(),
    }
}

/// `https://host:port/...` -> `host:port` (443 when the URL names no port).
fn server_address(server: &str) -> String {
    let rest = server.split("://").nth(1).unwrap_or(server);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((_, port))
            if port.chars().all(|c| c.is_ascii_digit()) && !authority.ends_with(']') =>
        {
            authority.to_owned()
        }
        _ => format!("{authority}:443"),
    }
}

/// Copies every connection accepted in the node's namespace to the real API server.
async fn forward(listener: TcpListener, upstream: String) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    while let Ok((mut inbound, _)) = listener.accept().await {
        let upstream = upstream.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_split_into_host_and_address() {
        assert_eq!(
            server_host("https://api.example.com:6443"),
            "api.example.com"
        );
        assert_eq!(
            server_address("https://api.example.com:6443"),
            "api.example.com:6443"
        );
        assert_eq!(
            server_address("https://api.example.com"),
            "api.example.com:443"
        );
        assert_eq!(server_host("https://[fd00::1]:6443/prefix"), "fd00::1");
        assert_eq!(
            server_address("https://[fd00::1]:6443/prefix"),
            "[fd00::1]:6443"
        );
    }
}
