//! Which networks a pod gets: the cluster network, plexusd's defaults, then its selections.

use std::sync::Arc;

use super::{Asking, Error, FALLBACK_NAMESPACE, Plexus, Result};
use crate::confdir::{self, ConfDirError};
use crate::devices::RESOURCE_NAME_ANNOTATION;
use crate::names::{IfName, Namespace, NetworkRef, ObjectName, PodKey};
use crate::records::Origin;
use crate::request::CniRequest;
use crate::resolve::{self, Delegate, Network, PodContext, Unversioned};
use crate::selection::{self, NETWORKS_ANNOTATION, Selection};
use crate::service::DEFAULT_NETWORK_ANNOTATION;
use crate::source::PodInfo;

impl Plexus {
    pub(super) async fn pod_info(
        &self,
        key: Option<&PodKey>,
        uid: Option<&str>,
    ) -> Result<Option<Arc<PodInfo>>> {
        let Some(key) = key else { return Ok(None) };
        let pod = self
            .source
            .pod(key, uid)
            .await
            .map_err(|source| Error::Source {
                pod: key.to_string(),
                source,
            })?;
        if pod.is_none() {
            tracing::info!(pod = %key, "pod not known to the source; attaching the cluster network only");
        }
        Ok(pod)
    }

    /// The pod's delegates: cluster network, default networks, then its selections.
    pub(super) async fn resolve(
        &self,
        request: &CniRequest,
        ifname: &IfName,
        pod_key: Option<&PodKey>,
        pod: Option<&PodInfo>,
    ) -> Result<Vec<Delegate>> {
        let pod_label = pod_key.map_or_else(|| "(unnamed)".to_owned(), ToString::to_string);
        let namespace = pod_key.map_or_else(
            || Namespace::well_known(FALLBACK_NAMESPACE),
            |k| k.namespace.clone(),
        );
        let asking = Asking {
            pod: &pod_label,
            namespace: &namespace,
        };
        let cluster = self.cluster_network(pod, Some(asking)).await?;
        let mut secondaries = Vec::new();
        // plexusd's own default networks are the operator's choice: no isolation applies.
        for network in &self.default_networks {
            let (nad_namespace, name) = network.in_namespace(&namespace);
            let resolved = self.nad_network(&nad_namespace, &name, asking).await?;
            secondaries.push((Selection::new(network.clone()), resolved));
        }
        for selection in self.selections(pod, &pod_label)? {
            let resolved = self.selection_network(&selection, asking).await?;
            secondaries.push((selection, resolved));
        }
        let cni_args =
            resolve::delegate_cni_args(&request.args.raw, pod.and_then(|p| p.uid.as_deref()));
        let context = PodContext {
            runtime_ifname: ifname,
            runtime_config: &request.conf.runtime_config,
            cni_args: &cni_args,
        };
        let needs = super::devices::needs(&cluster, &secondaries);
        let mut delegates = resolve::plan(cluster, secondaries, &context)?;
        if let Some(container) = &request.container_id {
            self.give_devices(container, &mut delegates, &needs, pod_key, pod)
                .await?;
        }
        Ok(delegates)
    }

    /// Why the delegate at `index` of [`Plexus::resolve`]'s answer is there: the cluster
    /// network comes first, then plexusd's default networks, then the pod's selections.
    pub(super) fn origin_at(&self, index: usize) -> Origin {
        match index {
            0 => Origin::ClusterNetwork,
            i if i <= self.default_networks.len() => Origin::DefaultNetwork,
            _ => Origin::Selection,
        }
    }

    /// The network a pod's selection names (in the pod's namespace when it names none),
    /// under the namespace isolation rules.
    pub(super) async fn selection_network(
        &self,
        selection: &Selection,
        asking: Asking<'_>,
    ) -> Result<Network> {
        let (nad_namespace, name) = selection.network.in_namespace(asking.namespace);
        self.check_isolation(asking, &nad_namespace, &name)?;
        self.nad_network(&nad_namespace, &name, asking).await
    }

    /// The selections of the pod's networks annotation; none without the annotation.
    pub(super) fn selections(
        &self,
        pod: Option<&PodInfo>,
        pod_label: &str,
    ) -> Result<Vec<Selection>> {
        let Some(annotation) = pod.and_then(|p| p.annotation(NETWORKS_ANNOTATION)) else {
            return Ok(Vec::new());
        };
        selection::parse_networks(annotation).map_err(|source| Error::Selection {
            pod: pod_label.to_owned(),
            source: Box::new(source),
        })
    }

    fn check_isolation(
        &self,
        asking: Asking<'_>,
        namespace: &Namespace,
        name: &ObjectName,
    ) -> Result<()> {
        if self.config.may_use(asking.namespace, namespace) {
            return Ok(());
        }
        Err(Error::Isolated {
            pod: asking.pod.to_owned(),
            network: format!("{namespace}/{name}"),
        })
    }

    /// The cluster network: Multus's `v1.multus-cni.io/default-network` annotation when the
    /// pod has one, else plexusd's `clusterNetwork`, else the first conf in the conf dir.
    pub(super) async fn cluster_network(
        &self,
        pod: Option<&PodInfo>,
        asking: Option<Asking<'_>>,
    ) -> Result<Network> {
        let asking = asking.unwrap_or(Asking {
            pod: "(none)",
            namespace: &self.config.system_namespace,
        });
        if let Some(annotation) = pod.and_then(|p| p.annotation(DEFAULT_NETWORK_ANNOTATION)) {
            let network =
                NetworkRef::parse(annotation.trim()).map_err(|source| Error::DefaultNetwork {
                    pod: asking.pod.to_owned(),
                    source,
                })?;
            let (namespace, name) = network.in_namespace(&self.config.system_namespace);
            self.check_isolation(asking, &namespace, &name)?;
            return self.nad_network(&namespace, &name, asking).await;
        }
        let wanted = self.config.cluster_network.as_deref();
        let conf_error = |source| Error::ConfDir {
            network: wanted.unwrap_or("(cluster network)").to_owned(),
            source,
        };
        let file = match wanted {
            Some(path) if path.starts_with('/') => {
                confdir::load(std::path::Path::new(path)).map_err(conf_error)?
            }
            Some(reference) if reference.contains('/') => {
                let network =
                    NetworkRef::parse(reference).map_err(|source| Error::DefaultNetwork {
                        pod: "clusterNetwork".to_owned(),
                        source,
                    })?;
                let (namespace, name) = network.in_namespace(&self.config.system_namespace);
                return self.nad_network(&namespace, &name, asking).await;
            }
            _ => match confdir::cluster_network(&self.config.cni_conf_dir, wanted) {
                Ok(file) => file,
                Err(error @ ConfDirError::NoSuchNetwork { .. }) => {
                    // Multus also takes a bare clusterNetwork as a NAD in its own namespace.
                    let name = wanted
                        .and_then(|w| ObjectName::parse(w).ok())
                        .ok_or_else(|| conf_error(error))?;
                    return self
                        .nad_network(&self.config.system_namespace, &name, asking)
                        .await;
                }
                Err(error) => return Err(conf_error(error)),
            },
        };
        let name = file.name().unwrap_or_default().to_owned();
        self.settle_version(Unversioned::parse(&name, &name, &file.bytes)?)
            .await
    }

    /// A NAD's network: its inline config, or the conf file of its name (NPWG §3.4.1).
    async fn nad_network(
        &self,
        namespace: &Namespace,
        name: &ObjectName,
        asking: Asking<'_>,
    ) -> Result<Network> {
        let label = format!("{namespace}/{name}");
        let nad = self
            .source
            .nad(namespace, name)
            .await
            .map_err(|source| Error::Source {
                pod: asking.pod.to_owned(),
                source,
            })?
            .ok_or_else(|| Error::UnknownNetwork {
                pod: asking.pod.to_owned(),
                network: label.clone(),
            })?;
        let bytes = match nad.inline_config() {
            Some(inline) => inline.as_bytes().to_vec(),
            None => {
                confdir::find_by_name(&self.config.cni_conf_dir, name.as_str())
                    .map_err(|source| Error::ConfDir {
                        network: label.clone(),
                        source,
                    })?
                    .bytes
            }
        };
        let mut network = self
            .settle_version(Unversioned::parse(&label, name.as_str(), &bytes)?)
            .await?;
        network.resource_name = nad
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RESOURCE_NAME_ANNOTATION))
            .filter(|r| !r.is_empty())
            .cloned();
        Ok(network)
    }

    pub(super) async fn settle_version(&self, network: Unversioned) -> Result<Network> {
        let supported = match network.version {
            Some(_) => Vec::new(),
            None => {
                self.executor
                    .supported_versions(network.first_plugin())
                    .await
            }
        };
        Ok(network.with_plugin_versions(&supported)?)
    }
}
