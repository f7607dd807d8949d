//! The `files` source: a directory of the YAML manifests a user would `kubectl apply`.
//!
//! The whole directory is re-read whenever anything in it changes, and the new catalog is
//! swapped in at once, so a lookup never sees half a reload. A file that does not parse is
//! reported (log and readiness) and skipped; the other files still count.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use plexus_crds::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
use serde::Deserialize;

use super::metadata::Metadata;
use super::{PodInfo, Readiness, Source, SourceError};
use crate::dirwatch::DirChanges;
use crate::names::{Namespace, ObjectName, PodKey};

/// The namespace of a manifest that names none, as `kubectl apply` does.
const DEFAULT_NAMESPACE: &str = "default";
/// Editors write a file in several steps; wait for them to settle before re-reading.
const SETTLE: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
struct Catalog {
    nads: HashMap<(Namespace, ObjectName), Arc<NetworkAttachmentDefinition>>,
    pods: HashMap<PodKey, Arc<PodInfo>>,
    problems: Vec<String>,
}

pub struct FilesSource {
    dir: PathBuf,
    catalog: RwLock<Arc<Catalog>>,
    pod_updates: tokio::sync::broadcast::Sender<PodKey>,
}

impl FilesSource {
    /// Loads the directory once; call [`FilesSource::watch`] to follow changes.
    pub fn load(dir: impl Into<PathBuf>) -> Arc<Self> {
        let dir = dir.into();
        let catalog = Arc::new(read_catalog(&dir));
        Arc::new(Self {
            dir,
            catalog: RwLock::new(catalog),
            pod_updates: tokio::sync::broadcast::Sender::new(super::POD_UPDATES_BACKLOG),
        })
    }

    /// Re-reads the directory now.
    pub fn reload(&self) {
        let catalog = Arc::new(read_catalog(&self.dir));
        tracing::info!(
            dir = %self.dir.display(),
            nads = catalog.nads.len(),
            pods = catalog.pods.len(),
            problems = catalog.problems.len(),
            "manifests loaded"
        );
        let previous = match self.catalog.write() {
            Ok(mut current) => std::mem::replace(&mut *current, Arc::clone(&catalog)),
            Err(_) => return,
        };
        // Told after the swap, so a listener that looks the pod up sees the new manifest.
        for key in changed_pods(&previous, &catalog) {
            let _ = self.pod_updates.send(key);
        }
    }

    /// Follows changes to the directory for as long as the source lives.
    pub fn watch(self: &Arc<Self>) -> notify::Result<()> {
        let mut changes = DirChanges::watch(&self.dir)?;
        let source = Arc::downgrade(self);
        tokio::spawn(async move {
            while changes.next(SETTLE).await.is_some() {
                let Some(source) = source.upgrade() else {
                    break;
                };
                tokio::task::spawn_blocking(move || source.reload())
                    .await
                    .ok();
            }
        });
        Ok(())
    }

    fn snapshot(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .map(|c| Arc::clone(&c))
            .unwrap_or_default()
    }
}

impl Source for FilesSource {
    fn pod<'a>(
        &'a self,
        key: &'a PodKey,
        _uid: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Arc<PodInfo>>, SourceError>> {
        let found = self.snapshot().pods.get(key).cloned();
        Box::pin(async move { Ok(found) })
    }

    fn nad<'a>(
        &'a self,
        namespace: &'a Namespace,
        name: &'a ObjectName,
    ) -> BoxFuture<'a, Result<Option<Arc<NetworkAttachmentDefinition>>, SourceError>> {
        let found = self
            .snapshot()
            .nads
            .get(&(namespace.clone(), name.clone()))
            .cloned();
        Box::pin(async move { Ok(found) })
    }

    fn pod_updates(&self) -> Option<tokio::sync::broadcast::Receiver<PodKey>> {
        Some(self.pod_updates.subscribe())
    }

    fn readiness(&self) -> Readiness {
        let catalog = self.snapshot();
        Readiness {
            ready: true,
            connected: true,
            counts: vec![("nads", catalog.nads.len()), ("pods", catalog.pods.len())],
            problems: catalog.problems.clone(),
        }
    }
}

/// The pods whose manifest appeared, went, or says something else now.
fn changed_pods(old: &Catalog, new: &Catalog) -> Vec<PodKey> {
    let gone = old.pods.keys().filter(|k| !new.pods.contains_key(k));
    let changed = new
        .pods
        .iter()
        .filter(|(k, pod)| old.pods.get(*k) != Some(*pod))
        .map(|(k, _)| k);
    changed.chain(gone).cloned().collect()
}

fn read_catalog(dir: &Path) -> Catalog {
    let mut catalog = Catalog::default();
    let files = match manifest_files(dir) {
        Ok(files) => files,
        Err(e) => {
            catalog.problems.push(format!(
                "cannot read manifest directory {}: {e}",
                dir.display()
            ));
            return catalog;
        }
    };
    for file in files {
        if let Err(problem) = read_file(&file, &mut catalog) {
            tracing::warn!(file = %file.display(), %problem, "manifest skipped");
            catalog
                .problems
                .push(format!("{}: {problem}", file.display()));
        }
    }
    catalog
}

/// The manifest files in name order, so that a later file wins over an earlier one.
fn manifest_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .collect();
    files.sort();
    Ok(files)
}

/// What plexusd reads of a manifest: its kind, identity and annotations, and a NAD's config.
/// The rest (a pod's spec and status, managed fields, labels) is skipped while parsing rather
/// than built and thrown away, so a directory of full pod manifests costs little memory.
#[derive(Deserialize)]
struct Document {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: Option<Spec>,
}

/// A NAD's spec; of a pod's, nothing is kept.
#[derive(Deserialize, Default)]
struct Spec {
    #[serde(default)]
    config: Option<String>,
}

fn read_file(path: &Path, catalog: &mut Catalog) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    // Parse the whole file before adding anything, so a broken file adds nothing.
    let documents: Vec<Option<Document>> =
        serde_saphyr::from_multiple(&text).map_err(|e| e.to_string())?;
    let mut objects = Vec::new();
    for (index, document) in documents.into_iter().enumerate() {
        let Some(document) = document else { continue };
        let object = parse_object(document).map_err(|e| format!("document {}: {e}", index + 1))?;
        objects.extend(object);
    }
    for object in objects {
        match object {
            Object::Nad(key, nad) => {
                catalog.nads.insert(key, Arc::new(*nad));
            }
            Object::Pod(pod) => {
                catalog.pods.insert(pod.key.clone(), Arc::new(pod));
            }
        }
    }
    Ok(())
}

enum Object {
    Nad((Namespace, ObjectName), Box<NetworkAttachmentDefinition>),
    Pod(PodInfo),
}

fn parse_object(document: Document) -> Result<Option<Object>, String> {
    let Document {
        kind,
        metadata,
        spec,
    } = document;
    match kind.as_str() {
        "NetworkAttachmentDefinition" => {
            let key = object_key(metadata.namespace.as_deref(), metadata.name.as_deref())?;
            // A NAD may come without a spec at all (NPWG §3.2); it means an empty one.
            let spec = NetworkAttachmentDefinitionSpec {
                config: spec.and_then(|s| s.config),
            };
            let mut nad = NetworkAttachmentDefinition::new(key.1.as_str(), spec);
            nad.metadata.namespace = Some(key.0.as_str().to_owned());
            nad.metadata.uid = metadata.uid;
            nad.metadata.annotations = metadata.annotations;
            Ok(Some(Object::Nad(key, Box::new(nad))))
        }
        "Pod" => {
            let (namespace, name) =
                object_key(metadata.namespace.as_deref(), metadata.name.as_deref())?;
            Ok(Some(Object::Pod(PodInfo {
                key: PodKey { namespace, name },
                uid: metadata.uid,
                annotations: metadata.annotations.unwrap_or_default(),
                claims: Vec::new(),
            })))
        }
        other => {
            tracing::debug!(kind = other, "manifest of another kind ignored");
            Ok(None)
        }
    }
}

fn object_key(
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<(Namespace, ObjectName), String> {
    let namespace =
        Namespace::parse(namespace.unwrap_or(DEFAULT_NAMESPACE)).map_err(|e| e.to_string())?;
    let name =
        ObjectName::parse(name.ok_or("metadata.name is missing")?).map_err(|e| e.to_string())?;
    Ok((namespace, name))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const NADS: &str = r#"
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: macvlan-a
  namespace: tenant
spec:
  config: '{"cniVersion":"1.0.0","type":"macvlan","master":"eth1"}'
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: from-file
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: tenant
  uid: "1234"
  annotations:
    k8s.v1.cni.cncf.io/networks: macvlan-a@net5
spec:
  containers: [{name: c, image: i}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
"#;

    fn key(ns: &str, name: &str) -> (Namespace, ObjectName) {
        (
            Namespace::parse(ns).unwrap(),
            ObjectName::parse(name).unwrap(),
        )
    }

    #[tokio::test]
    async fn several_documents_per_file_are_read_and_other_kinds_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("all.yaml"), NADS).unwrap();
        let source = FilesSource::load(dir.path());
        let (ns, name) = key("tenant", "macvlan-a");
        let nad = source
            .nad(&ns, &name)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{:?}", source.readiness().problems));
        assert!(nad.inline_config().unwrap().contains("macvlan"));
        let (ns, name) = key("default", "from-file");
        assert!(
            source
                .nad(&ns, &name)
                .await
                .unwrap()
                .unwrap()
                .inline_config()
                .is_none()
        );
        let pod = source
            .pod(
                &PodKey {
                    namespace: key("tenant", "web").0,
                    name: key("tenant", "web").1,
                },
                None,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            pod.annotation("k8s.v1.cni.cncf.io/networks"),
            Some("macvlan-a@net5")
        );
        assert_eq!(pod.uid.as_deref(), Some("1234"));
        assert!(
            source.readiness().problems.is_empty(),
            "{:?}",
            source.readiness().problems
        );
    }

    #[tokio::test]
    async fn of_a_full_pod_only_identity_and_annotations_are_kept() {
        // As `kubectl get pod -o yaml` prints it: spec, status and managed fields are skipped.
        let pod = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web-7d9f8b6c5d-x2x9z
  namespace: tenant
  uid: 6f1c
  labels: {app: web}
  annotations: {k8s.v1.cni.cncf.io/networks: "a,b"}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web, uid: r1, controller: true}]
  managedFields: [{manager: kubelet, fieldsType: FieldsV1, fieldsV1: {f:status: {f:podIP: {}}}}]
spec:
  nodeName: node-1
  containers: [{name: app, image: web, ports: [{containerPort: 8080}], resources: {limits: {memory: 1Gi}}}]
status:
  phase: Running
  podIPs: [{ip: 10.0.0.7}]
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: a, namespace: tenant}
spec:
  config: '{"cniVersion":"1.0.0","type":"bridge"}'
"#;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pod.yaml"), pod).unwrap();
        let source = FilesSource::load(dir.path());
        assert!(
            source.readiness().problems.is_empty(),
            "{:?}",
            source.readiness().problems
        );
        let (namespace, name) = key("tenant", "web-7d9f8b6c5d-x2x9z");
        let pod = source
            .pod(&PodKey { namespace, name }, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(pod.uid.as_deref(), Some("6f1c"));
        assert_eq!(
            pod.annotations,
            BTreeMap::from([("k8s.v1.cni.cncf.io/networks".to_owned(), "a,b".to_owned())])
        );
        let (ns, name) = key("tenant", "a");
        let nad = source.nad(&ns, &name).await.unwrap().unwrap();
        assert_eq!(nad.metadata.namespace.as_deref(), Some("tenant"));
        assert_eq!(
            nad.inline_config(),
            Some(r#"{"cniVersion":"1.0.0","type":"bridge"}"#)
        );
    }

    #[tokio::test]
    async fn a_broken_file_is_reported_and_does_not_hide_the_others() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good.yaml"), NADS).unwrap();
        std::fs::write(
            dir.path().join("bad.yaml"),
            "kind: NetworkAttachmentDefinition\nmetadata: [unclosed\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("bad-name.yaml"),
            "kind: NetworkAttachmentDefinition\nmetadata: {name: Bad_Name}\n",
        )
        .unwrap();
        let source = FilesSource::load(dir.path());
        let (ns, name) = key("tenant", "macvlan-a");
        assert!(source.nad(&ns, &name).await.unwrap().is_some());
        let problems = source.readiness().problems;
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("bad.yaml")));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("bad-name.yaml") && p.contains("Bad_Name"))
        );
    }

    #[tokio::test]
    async fn a_reload_tells_which_pods_changed_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let pod = |name: &str, networks: &str| {
            format!(
                "kind: Pod\nmetadata: {{name: {name}, namespace: tenant, uid: u-{name}, annotations: {{k8s.v1.cni.cncf.io/networks: \"{networks}\"}}}}\n---\n"
            )
        };
        let write = |text: String| std::fs::write(dir.path().join("pods.yaml"), text).unwrap();
        write(pod("web", "a") + &pod("db", "a") + &pod("cache", "a"));
        let source = FilesSource::load(dir.path());
        let mut updates = source.pod_updates().unwrap();

        // web changes its annotation, cache goes, queue comes; db stays as it was.
        write(pod("web", "a,b") + &pod("db", "a") + &pod("queue", "a"));
        source.reload();
        let mut told = Vec::new();
        while let Ok(key) = updates.try_recv() {
            told.push(key.to_string());
        }
        told.sort();
        assert_eq!(told, ["tenant/cache", "tenant/queue", "tenant/web"]);
        // By the time a listener hears of web, the source answers with the new annotation.
        let (namespace, name) = key("tenant", "web");
        let web = source
            .pod(&PodKey { namespace, name }, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(web.annotation("k8s.v1.cni.cncf.io/networks"), Some("a,b"));

        source.reload();
        assert!(
            updates.try_recv().is_err(),
            "a reload without changes tells nothing"
        );
    }

    #[tokio::test]
    async fn changes_in_the_directory_are_seen_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let source = FilesSource::load(dir.path());
        source.watch().unwrap();
        let (ns, name) = key("tenant", "macvlan-a");
        assert!(source.nad(&ns, &name).await.unwrap().is_none());
        std::fs::write(dir.path().join("all.yaml"), NADS).unwrap();
        let mut seen = false;
        for _ in 0..100 {
            if source.nad(&ns, &name).await.unwrap().is_some() {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(seen, "new manifest not picked up");
        std::fs::remove_file(dir.path().join("all.yaml")).unwrap();
        for _ in 0..100 {
            if source.nad(&ns, &name).await.unwrap().is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("deleted manifest still served");
    }
}
