//! The kubelet's PodResources API (gRPC v1 on a unix socket): which device-plugin devices a
//! pod's containers were given, by resource name. `Get` asks about one pod; kubelets that do
//! not offer it (it is behind a feature gate) are asked with `List`, as Multus does, and are
//! not asked with `Get` again. Every lookup has a deadline, connecting included, so a kubelet
//! that hangs fails the ADD instead of holding it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// The generated client and messages (controller/proto/podresources/v1/api.proto).
pub mod proto {
    tonic::include_proto!("v1");
}

use proto::pod_resources_lister_client::PodResourcesListerClient;

/// Device ids by resource name, in the order the kubelet lists them.
pub type ResourceDevices = BTreeMap<String, Vec<String>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum PodResourcesError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Call(String),
}

/// A client for one socket; cheap to keep, it connects per lookup (a local unix socket).
pub struct PodResources {
    socket: PathBuf,
    timeout: Duration,
    /// The kubelet refused `Get` once (feature gate off, or too old): use `List` from now on.
    get_unavailable: AtomicBool,
}

impl PodResources {
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self {
            socket: socket.into(),
            timeout,
            get_unavailable: AtomicBool::new(false),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The devices the kubelet allocated to pod `namespace/name`, across all its containers.
    /// A pod the kubelet does not know has none.
    pub async fn devices(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<ResourceDevices, PodResourcesError> {
        tokio::time::timeout(self.timeout, self.lookup(namespace, name))
            .await
            .map_err(|_| PodResourcesError::Timeout(self.timeout))?
    }

    async fn lookup(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<ResourceDevices, PodResourcesError> {
        let mut client = PodResourcesListerClient::new(self.connect().await?);
        if !self.get_unavailable.load(Ordering::Relaxed) {
            let request = proto::GetPodResourcesRequest {
                pod_name: name.to_owned(),
                pod_namespace: namespace.to_owned(),
            };
            match client.get(request).await {
                Ok(answer) => {
                    return Ok(answer
                        .into_inner()
                        .pod_resources
                        .map(|pod| by_resource(&pod))
                        .unwrap_or_default());
                }
                Err(status) => {
                    // Kubelets without the KubeletPodResourcesGet gate answer with an error
                    // that says "disabled" (code Unknown), older ones with Unimplemented.
                    if status.code() == tonic::Code::Unimplemented
                        || status.message().contains("disabled")
                    {
                        tracing::info!(socket = %self.socket.display(), "the kubelet does not offer PodResources Get; using List");
                        self.get_unavailable.store(true, Ordering::Relaxed);
                    } else {
                        tracing::debug!(error = %status.message(), "PodResources Get failed; trying List");
                    }
                }
            }
        }
        let list = client
            .list(proto::ListPodResourcesRequest {})
            .await
            .map_err(|status| PodResourcesError::Call(status.message().to_owned()))?
            .into_inner();
        Ok(list
            .pod_resources
            .iter()
            .find(|pod| pod.namespace == namespace && pod.name == name)
            .map(by_resource)
            .unwrap_or_default())
    }

    async fn connect(&self) -> Result<Channel, PodResourcesError> {
        let socket = self.socket.clone();
        // The URI is a placeholder: the connector below dials the socket whatever it says.
        Endpoint::from_static("http://kubelet.invalid")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
            .map_err(|e| PodResourcesError::Connect(error_chain(&e)))
    }
}

/// Every container's devices of one pod, merged by resource; an id listed twice counts once.
fn by_resource(pod: &proto::PodResources) -> ResourceDevices {
    let mut devices = ResourceDevices::new();
    for container in &pod.containers {
        for allocated in &container.devices {
            let ids = devices.entry(allocated.resource_name.clone()).or_default();
            for id in &allocated.device_ids {
                if !ids.contains(id) {
                    ids.push(id.clone());
                }
            }
        }
    }
    devices
}

/// tonic's transport error says only "transport error"; the cause is in its sources.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, devices: &[(&str, &[&str])]) -> proto::ContainerResources {
        proto::ContainerResources {
            name: name.to_owned(),
            devices: devices
                .iter()
                .map(|(resource, ids)| proto::ContainerDevices {
                    resource_name: (*resource).to_owned(),
                    device_ids: ids.iter().map(|i| (*i).to_owned()).collect(),
                    topology: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn devices_of_every_container_are_merged_by_resource_in_order() {
        let pod = proto::PodResources {
            name: "web".into(),
            namespace: "tenant".into(),
            containers: vec![
                container(
                    "app",
                    &[("example.com/vf", &["0000:03:00.2", "0000:03:00.3"])],
                ),
                container(
                    "sidecar",
                    &[
                        ("example.com/vf", &["0000:03:00.4", "0000:03:00.2"]),
                        ("example.com/gpu", &["gpu0"]),
                    ],
                ),
            ],
        };
        let devices = by_resource(&pod);
        assert_eq!(
            devices["example.com/vf"],
            ["0000:03:00.2", "0000:03:00.3", "0000:03:00.4"]
        );
        assert_eq!(devices["example.com/gpu"], ["gpu0"]);
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error_naming_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let client = PodResources::new(dir.path().join("kubelet.sock"), Duration::from_secs(2));
        match client.devices("tenant", "web").await {
            Err(PodResourcesError::Connect(cause)) => {
                assert!(cause.contains("No such file"), "{cause}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_kubelet_that_never_answers_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubelet.sock");
        // Accepts connections and never says a word.
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let client = PodResources::new(&path, Duration::from_millis(300));
        match client.devices("tenant", "web").await {
            Err(PodResourcesError::Timeout(after)) => {
                assert_eq!(after, Duration::from_millis(300))
            }
            other => panic!("{other:?}"),
        }
        silent.abort();
    }
}
