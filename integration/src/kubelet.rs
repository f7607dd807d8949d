//! A test kubelet's PodResources API: gRPC v1 (tonic) on a unix socket, served from the
//! published proto plexusd's client is built from. Tests tell it which devices each pod's
//! containers were given, and can make it refuse `Get` (as a kubelet without the
//! KubeletPodResourcesGet gate does) or never answer at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tonic::{Request, Response, Status};

use crate::Pod;

/// The generated server and messages.
pub mod proto {
    tonic::include_proto!("v1");
}

use proto::pod_resources_lister_server::{PodResourcesLister, PodResourcesListerServer};

/// How the test kubelet answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `Get` and `List` both answer.
    Answers,
    /// `Get` fails as on a kubelet whose KubeletPodResourcesGet gate is off; `List` answers.
    WithoutGet,
    /// Accepts connections and never answers.
    Silent,
}

/// container -> resource -> device ids.
type Containers = BTreeMap<String, BTreeMap<String, Vec<String>>>;

struct State {
    /// (namespace, name) -> the pod's containers.
    pods: BTreeMap<(String, String), Containers>,
    mode: Mode,
    calls: Vec<&'static str>,
}

#[derive(Clone)]
struct Service(Arc<Mutex<State>>);

impl Service {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the call and waits forever when silent.
    async fn called(&self, call: &'static str) -> Mode {
        let mode = {
            let mut state = self.lock();
            state.calls.push(call);
            state.mode
        };
        if mode == Mode::Silent {
            std::future::pending::<()>().await;
        }
        mode
    }

    fn pod(&self, namespace: &str, name: &str) -> Option<proto::PodResources> {
        let state = self.lock();
        let containers = state.pods.get(&(namespace.to_owned(), name.to_owned()))?;
        Some(proto::PodResources {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            containers: containers
                .iter()
                .map(|(container, devices)| proto::ContainerResources {
                    name: container.clone(),
                    devices: devices
                        .iter()
                        .map(|(resource, ids)| proto::ContainerDevices {
                            resource_name: resource.clone(),
                            device_ids: ids.clone(),
                            topology: None,
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        })
    }
}

#[tonic::async_trait]
impl PodResourcesLister for Service {
    async fn list(
        &self,
        _: Request<proto::ListPodResourcesRequest>,
    ) -> Result<Response<proto::ListPodResourcesResponse>, Status> {
        self.called("List").await;
        let keys: Vec<(String, String)> = self.lock().pods.keys().cloned().collect();
        let pod_resources = keys
            .iter()
            .filter_map(|(namespace, name)| self.pod(namespace, name))
            .collect();
        Ok(Response::new(proto::ListPodResourcesResponse {
            pod_resources,
        }))
    }

    async fn get_allocatable_resources(
        &self,
        _: Request<proto::AllocatableResourcesRequest>,
    ) -> Result<Response<proto::AllocatableResourcesResponse>, Status> {
        self.called("GetAllocatableResources").await;
        Ok(Response::new(proto::AllocatableResourcesResponse::default()))
    }

    async fn get(
        &self,
        request: Request<proto::GetPodResourcesRequest>,
    ) -> Result<Response<proto::GetPodResourcesResponse>, Status> {
        if self.called("Get").await == Mode::WithoutGet {
            // The kubelet's own words, code Unknown.
            return Err(Status::unknown("PodResources API Get method disabled"));
        }
        let request = request.into_inner();
        match self.pod(&request.pod_namespace, &request.pod_name) {
            Some(pod) => Ok(Response::new(proto::GetPodResourcesResponse {
                pod_resources: Some(pod),
            })),
            None => Err(Status::unknown(format!(
                "pod {} not found in {}",
                request.pod_name, request.pod_namespace
            ))),
        }
    }
}

/// The test kubelet, serving until dropped.
pub struct Kubelet {
    socket: PathBuf,
    service: Service,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Kubelet {
    /// Serves on a new unix socket at `socket`.
    pub fn start(socket: &Path) -> Self {
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir).expect("socket dir");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-kubelet")
            .enable_all()
            .build()
            .expect("tokio runtime");
        let service = Service(Arc::new(Mutex::new(State {
            pods: BTreeMap::new(),
            mode: Mode::Answers,
            calls: Vec::new(),
        })));
        let listener = {
            let _entered = runtime.enter();
            tokio::net::UnixListener::bind(socket).expect("bind the test kubelet's socket")
        };
        let incoming = futures::stream::unfold(listener, |listener| async move {
            let accepted = listener.accept().await.map(|(stream, _)| stream);
            Some((accepted, listener))
        });
        let server = tonic::transport::Server::builder()
            .add_service(PodResourcesListerServer::new(service.clone()))
            .serve_with_incoming(incoming);
        runtime.spawn(server);
        Self {
            socket: socket.to_owned(),
            service,
            runtime: Some(runtime),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `pod`'s container `app` was given these devices of `resource` (added to any before).
    pub fn allocate(&self, pod: &Pod, resource: &str, ids: &[&str]) {
        self.allocate_to(pod, "app", resource, ids);
    }

    pub fn allocate_to(&self, pod: &Pod, container: &str, resource: &str, ids: &[&str]) {
        let mut state = self.service.lock();
        let devices = state
            .pods
            .entry((pod.namespace.clone(), pod.name.clone()))
            .or_default()
            .entry(container.to_owned())
            .or_default()
            .entry(resource.to_owned())
            .or_default();
        devices.extend(ids.iter().map(|id| (*id).to_owned()));
    }

    /// Forgets the pod, as the kubelet does once its containers are gone.
    pub fn forget(&self, pod: &Pod) {
        self.service
            .lock()
            .pods
            .remove(&(pod.namespace.clone(), pod.name.clone()));
    }

    pub fn set_mode(&self, mode: Mode) {
        self.service.lock().mode = mode;
    }

    /// The calls served so far, in order (`Get`, `List`).
    pub fn calls(&self) -> Vec<&'static str> {
        self.service.lock().calls.clone()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}
