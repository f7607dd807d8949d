//! The kube source's DRA part: the ResourceClaims allocated to devices this node can use and
//! this node's ResourceSlices (`spec.nodeName`), reflected and cut down to what device lookup
//! reads, so that a warm ADD makes no API read; a miss costs one. Nothing is watched until the
//! API server says it serves resource.k8s.io/v1, and nothing at all if it does not.
//!
//! ResourceClaims cannot be selected by node on the server, so the watch sees every claim and
//! keeps only those whose allocation this node may use: the allocator pins a claim of
//! node-local devices to the node with `matchFields: metadata.name In [node]`; a claim with no
//! node selector (network-attached devices) or one that selects by labels is kept too.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::TryStreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorTerm};
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Deserialize;

use super::kube::{Health, Probe, follow};
use crate::devices::claims::{
    AllocatedClaim, AllocationResult, ClaimCatalog, DEVICE_ID_ATTRIBUTE, DeviceAttributes,
    RESOURCE_NAME_ATTRIBUTE,
};

const GROUP_VERSION: &str = "resource.k8s.io/v1";
const CLAIMS: &str = "resourceclaims";
const SLICES: &str = "resourceslices";

/// A ResourceClaim as device lookup reads it; the rest of the object is never built.
#[derive(kube::Resource, Deserialize, Clone, Debug)]
#[resource(inherit = "ResourceClaim")]
pub(super) struct ClaimObject {
    pub metadata: ObjectMeta,
    #[serde(default)]
    status: Option<ClaimStatus>,
}

#[derive(Deserialize, Clone, Debug, Default)]
struct ClaimStatus {
    #[serde(default)]
    allocation: Option<Allocation>,
}

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct Allocation {
    #[serde(default)]
    devices: Option<AllocatedDevices>,
    #[serde(default)]
    node_selector: Option<NodeSelector>,
}

#[derive(Deserialize, Clone, Debug, Default)]
struct AllocatedDevices {
    #[serde(default)]
    results: Vec<ResultObject>,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
struct ResultObject {
    request: String,
    driver: String,
    pool: String,
    device: String,
    #[serde(default, rename = "shareID")]
    share_id: Option<String>,
}

/// A ResourceSlice as device lookup reads it.
#[derive(kube::Resource, Deserialize, Clone, Debug)]
#[resource(inherit = "ResourceSlice")]
pub(super) struct SliceObject {
    pub metadata: ObjectMeta,
    spec: SliceSpec,
}

#[derive(Deserialize, Clone, Debug)]
struct SliceSpec {
    driver: String,
    pool: SlicePool,
    #[serde(default)]
    devices: Vec<SliceDevice>,
}

#[derive(Deserialize, Clone, Debug)]
struct SlicePool {
    name: String,
}

#[derive(Deserialize, Clone, Debug)]
struct SliceDevice {
    name: String,
    #[serde(default)]
    attributes: BTreeMap<String, AttributeValue>,
}

/// A device attribute; only string values carry what Plexus reads.
#[derive(Deserialize, Clone, Debug)]
struct AttributeValue {
    #[serde(default)]
    string: Option<String>,
}

/// Whether the API server serves resource.k8s.io/v1.
const UNKNOWN: u8 = 0;
const SERVED: u8 = 1;
const NOT_SERVED: u8 = 2;

pub(super) struct Dra {
    client: Client,
    claims: ClaimStore,
    slices: OnceLock<Store<SliceObject>>,
    served: AtomicU8,
}

impl Dra {
    /// Starts following claims and slices for `node` once the API server says it serves them.
    pub(super) fn start(client: Client, node: &str, health: Arc<Health>) -> Arc<Self> {
        let dra = Arc::new(Self {
            client,
            claims: ClaimStore::new(node),
            slices: OnceLock::new(),
            served: AtomicU8::new(UNKNOWN),
        });
        tokio::spawn(Arc::clone(&dra).discover_then_watch(node.to_owned(), health));
        dra
    }

    /// False once the API server has said it does not serve DRA: nothing to look up then.
    pub(super) fn may_serve(&self) -> bool {
        self.served.load(Ordering::Acquire) != NOT_SERVED
    }

    /// What the reflectors hold, for readiness.
    pub(super) fn counts(&self) -> Vec<(&'static str, usize)> {
        if self.served.load(Ordering::Acquire) != SERVED {
            return Vec::new();
        }
        let slices = self.slices.get().map_or(0, Store::len);
        vec![("claims", self.claims.len()), ("slices", slices)]
    }

    async fn discover_then_watch(self: Arc<Self>, node: String, health: Arc<Health>) {
        let mut delay = Duration::from_secs(1);
        loop {
            match self.client.list_api_group_resources(GROUP_VERSION).await {
                Ok(list) => {
                    let names: Vec<&str> = list.resources.iter().map(|r| r.name.as_str()).collect();
                    if names.contains(&CLAIMS) && names.contains(&SLICES) {
                        break;
                    }
                    return self.not_served();
                }
                Err(kube::Error::Api(status)) if status.code == 404 => return self.not_served(),
                Err(error) => {
                    tracing::warn!(%error, retry_in_s = delay.as_secs(), "cannot ask the API server whether it serves {GROUP_VERSION}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
        self.served.store(SERVED, Ordering::Release);
        tracing::info!(node = %node, "following ResourceClaims and this node's ResourceSlices");
        self.watch_claims(Arc::clone(&health));
        let slices = Api::<SliceObject>::all(self.client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let (reader, writer) = reflector::store();
        let probe = Probe::new(slices.clone(), &config, "slices", health);
        let stream = watcher(slices, config)
            .default_backoff()
            .modify(strip_slice)
            .reflect(writer);
        follow(stream, probe);
        let _ = self.slices.set(reader);
    }

    fn not_served(&self) {
        tracing::info!(
            "the API server does not serve {GROUP_VERSION}: devices come from device plugins only"
        );
        self.served.store(NOT_SERVED, Ordering::Release);
    }

    fn watch_claims(self: &Arc<Self>, health: Arc<Health>) {
        let claims = Api::<ClaimObject>::all(self.client.clone());
        let config = watcher::Config::default();
        let probe = Probe::new(claims.clone(), &config, "claims", health);
        let dra = Arc::clone(self);
        let stream = watcher(claims, config)
            .default_backoff()
            .map_ok(move |event| dra.claims.apply(event));
        follow(stream, probe);
    }

    async fn fetch_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<AllocatedClaim>>, String> {
        tracing::debug!(claim = %format!("{namespace}/{name}"), "claim cache miss; asking the API server");
        let claim = Api::<ClaimObject>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?;
        Ok(claim.and_then(|c| allocated(&c)).map(Arc::new))
    }

    async fn fetch_device(
        &self,
        driver: &str,
        pool: &str,
        device: &str,
    ) -> Result<Option<DeviceAttributes>, String> {
        tracing::debug!(%driver, %pool, %device, "device not in this node's slices; asking the API server");
        let params = ListParams::default().fields(&format!("spec.driver={driver}"));
        let slices = Api::<SliceObject>::all(self.client.clone())
            .list(&params)
            .await
            .map_err(|e| e.to_string())?;
        Ok(slices
            .items
            .iter()
            .find_map(|slice| attributes(slice, driver, pool, device)))
    }
}

impl ClaimCatalog for Dra {
    fn claim<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<AllocatedClaim>>, String>> {
        Box::pin(async move {
            match self.claims.get(namespace, name) {
                Some(claim) => Ok(Some(claim)),
                None => self.fetch_claim(namespace, name).await,
            }
        })
    }

    fn device<'a>(
        &'a self,
        driver: &'a str,
        pool: &'a str,
        device: &'a str,
    ) -> BoxFuture<'a, Result<Option<DeviceAttributes>, String>> {
        Box::pin(async move {
            let cached = self.slices.get().and_then(|store| {
                store
                    .state()
                    .iter()
                    .find_map(|slice| attributes(slice, driver, pool, device))
            });
            match cached {
                Some(found) => Ok(Some(found)),
                None => self.fetch_device(driver, pool, device).await,
            }
        })
    }
}

/// The attributes of `device` if `slice` describes it.
fn attributes(
    slice: &SliceObject,
    driver: &str,
    pool: &str,
    device: &str,
) -> Option<DeviceAttributes> {
    if slice.spec.driver != driver || slice.spec.pool.name != pool {
        return None;
    }
    let found = slice.spec.devices.iter().find(|d| d.name == device)?;
    let string = |key: &str| found.attributes.get(key).and_then(|a| a.string.clone());
    Some(DeviceAttributes {
        resource_name: string(RESOURCE_NAME_ATTRIBUTE),
        device_id: string(DEVICE_ID_ATTRIBUTE),
    })
}

fn strip_slice(slice: &mut SliceObject) {
    slice.metadata = ObjectMeta {
        name: slice.metadata.name.take(),
        resource_version: slice.metadata.resource_version.take(),
        ..ObjectMeta::default()
    };
    // Devices without these attributes stay (by name): a pod's other claims (a GPU, say) are
    // looked up too, and must not miss the cache.
    for device in &mut slice.spec.devices {
        device
            .attributes
            .retain(|key, _| key == RESOURCE_NAME_ATTRIBUTE || key == DEVICE_ID_ATTRIBUTE);
    }
}

/// The claim's allocation, when it has one.
fn allocated(claim: &ClaimObject) -> Option<AllocatedClaim> {
    let allocation = claim.status.as_ref()?.allocation.as_ref()?;
    let results = allocation.devices.as_ref()?.results.iter();
    Some(AllocatedClaim {
        uid: claim.metadata.uid.clone(),
        results: results
            .map(|r| AllocationResult {
                request: r.request.clone(),
                driver: r.driver.clone(),
                pool: r.pool.clone(),
                device: r.device.clone(),
                share_id: r.share_id.clone(),
            })
            .collect(),
    })
}

/// Whether this node may use the claim's devices (see the module comment).
fn usable_on(claim: &ClaimObject, node: &str) -> bool {
    let Some(allocation) = claim.status.as_ref().and_then(|s| s.allocation.as_ref()) else {
        return false;
    };
    match &allocation.node_selector {
        None => true,
        Some(selector) => selector
            .node_selector_terms
            .iter()
            .any(|term| may_select(term, node)),
    }
}

fn may_select(term: &NodeSelectorTerm, node: &str) -> bool {
    let by_name = term.match_fields.iter().flatten();
    by_name.filter(|r| r.key == "metadata.name").all(|r| {
        let listed = r.values.iter().flatten().any(|v| v == node);
        match r.operator.as_str() {
            "In" => listed,
            "NotIn" => !listed,
            _ => true,
        }
    })
}

type ClaimKey = (String, String);

/// The claims this node may use, replaced whole after every (re)list.
struct ClaimStore {
    node: String,
    claims: Mutex<HashMap<ClaimKey, Arc<AllocatedClaim>>>,
    /// Filled during a (re)list, swapped in when it is done.
    listing: Mutex<Option<HashMap<ClaimKey, Arc<AllocatedClaim>>>>,
}

impl ClaimStore {
    fn new(node: &str) -> Self {
        Self {
            node: node.to_owned(),
            claims: Mutex::default(),
            listing: Mutex::default(),
        }
    }

    fn len(&self) -> usize {
        self.claims.lock().map(|c| c.len()).unwrap_or(0)
    }

    fn get(&self, namespace: &str, name: &str) -> Option<Arc<AllocatedClaim>> {
        let claims = self.claims.lock().ok()?;
        claims
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// What this node keeps of a claim: its allocation, if the node may use it.
    fn entry(&self, claim: &ClaimObject) -> Option<(ClaimKey, Arc<AllocatedClaim>)> {
        let key = (
            claim.metadata.namespace.clone()?,
            claim.metadata.name.clone()?,
        );
        if !usable_on(claim, &self.node) {
            return None;
        }
        Some((key, Arc::new(allocated(claim)?)))
    }

    fn key(claim: &ClaimObject) -> Option<ClaimKey> {
        Some((
            claim.metadata.namespace.clone()?,
            claim.metadata.name.clone()?,
        ))
    }

    fn apply(&self, event: watcher::Event<ClaimObject>) {
        use watcher::Event;
        match event {
            Event::Init => {
                if let Ok(mut listing) = self.listing.lock() {
                    *listing = Some(HashMap::new());
                }
            }
            Event::InitApply(claim) => {
                if let (Ok(mut listing), Some((key, entry))) =
                    (self.listing.lock(), self.entry(&claim))
                    && let Some(listing) = listing.as_mut()
                {
                    listing.insert(key, entry);
                }
            }
            Event::InitDone => {
                let listed = self.listing.lock().ok().and_then(|mut l| l.take());
                if let (Some(listed), Ok(mut claims)) = (listed, self.claims.lock()) {
                    *claims = listed;
                }
            }
            Event::Apply(claim) => {
                let Ok(mut claims) = self.claims.lock() else {
                    return;
                };
                match self.entry(&claim) {
                    Some((key, entry)) => {
                        claims.insert(key, entry);
                    }
                    None => {
                        if let Some(key) = Self::key(&claim) {
                            claims.remove(&key);
                        }
                    }
                }
            }
            Event::Delete(claim) => {
                if let (Some(key), Ok(mut claims)) = (Self::key(&claim), self.claims.lock()) {
                    claims.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claim(name: &str, node_selector: serde_json::Value) -> ClaimObject {
        let mut allocation = json!({"devices": {"results": [
            {"request": "vf", "driver": "net.example.com", "pool": "node-a", "device": "vf-0", "adminAccess": false},
        ]}});
        if !node_selector.is_null() {
            allocation["nodeSelector"] = node_selector;
        }
        serde_json::from_value(json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": "tenant", "uid": format!("uid-{name}"), "labels": {"a": "b"}},
            "spec": {"devices": {"requests": [{"name": "vf", "exactly": {"deviceClassName": "vf"}}]}},
            "status": {"allocation": allocation, "reservedFor": [{"resource": "pods", "name": "web", "uid": "u"}]},
        }))
        .unwrap()
    }

    fn pinned_to(node: &str) -> serde_json::Value {
        json!({"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]})
    }

    #[test]
    fn only_claims_this_node_may_use_are_kept() {
        let store = ClaimStore::new("node-a");
        store.apply(watcher::Event::Init);
        for claim in [
            claim("here", pinned_to("node-a")),
            claim("there", pinned_to("node-b")),
            claim("anywhere", serde_json::Value::Null),
            claim(
                "labelled",
                json!({"nodeSelectorTerms": [{"matchExpressions": [{"key": "rack", "operator": "In", "values": ["r1"]}]}]}),
            ),
        ] {
            store.apply(watcher::Event::InitApply(claim));
        }
        let unallocated: ClaimObject = serde_json::from_value(json!({
            "metadata": {"name": "pending", "namespace": "tenant"}, "spec": {}
        }))
        .unwrap();
        store.apply(watcher::Event::InitApply(unallocated));
        assert_eq!(store.len(), 0, "nothing until the list is complete");
        store.apply(watcher::Event::InitDone);
        let mut kept: Vec<String> = ["here", "there", "anywhere", "labelled", "pending"]
            .iter()
            .filter(|n| store.get("tenant", n).is_some())
            .map(|n| (*n).to_owned())
            .collect();
        kept.sort();
        assert_eq!(kept, ["anywhere", "here", "labelled"]);
        let here = store.get("tenant", "here").unwrap();
        assert_eq!(here.uid.as_deref(), Some("uid-here"));
        assert_eq!(
            here.results,
            [AllocationResult {
                request: "vf".into(),
                driver: "net.example.com".into(),
                pool: "node-a".into(),
                device: "vf-0".into(),
                share_id: None,
            }]
        );

        // Moved elsewhere by an update, then deleted.
        store.apply(watcher::Event::Apply(claim("here", pinned_to("node-b"))));
        assert!(store.get("tenant", "here").is_none());
        store.apply(watcher::Event::Delete(claim(
            "anywhere",
            serde_json::Value::Null,
        )));
        assert!(store.get("tenant", "anywhere").is_none());
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_slice_keeps_only_the_devices_and_attributes_plexus_reads() {
        let mut slice: SliceObject = serde_json::from_value(json!({
            "metadata": {"name": "node-a-net", "labels": {"x": "y"}, "managedFields": [{"manager": "driver"}]},
            "spec": {
                "driver": "net.example.com", "pool": {"name": "node-a", "generation": 1, "resourceSliceCount": 1},
                "nodeName": "node-a",
                "devices": [
                    {"name": "vf-0", "attributes": {
                        "k8s.cni.cncf.io/resourceName": {"string": "example.com/vf"},
                        "k8s.cni.cncf.io/deviceID": {"string": "0000:03:00.2"},
                        "pciRoot": {"string": "pci0000:00"},
                        "numa": {"int": 0}
                    }, "capacity": {"bandwidth": {"value": "10G"}}},
                    {"name": "gpu-0", "attributes": {"model": {"string": "x"}}}
                ]
            }
        }))
        .unwrap();
        strip_slice(&mut slice);
        let kept: Vec<usize> = slice
            .spec
            .devices
            .iter()
            .map(|d| d.attributes.len())
            .collect();
        assert_eq!(kept, [2, 0]);
        assert!(slice.metadata.labels.is_none() && slice.metadata.managed_fields.is_none());
        assert_eq!(
            attributes(&slice, "net.example.com", "node-a", "vf-0"),
            Some(DeviceAttributes {
                resource_name: Some("example.com/vf".into()),
                device_id: Some("0000:03:00.2".into()),
            })
        );
        assert_eq!(
            attributes(&slice, "net.example.com", "node-b", "vf-0"),
            None
        );
        assert_eq!(
            attributes(&slice, "other.example.com", "node-a", "vf-0"),
            None
        );
        assert_eq!(
            attributes(&slice, "net.example.com", "node-a", "gpu-0"),
            Some(DeviceAttributes::default()),
            "known, without network attributes"
        );
        assert_eq!(
            attributes(&slice, "net.example.com", "node-a", "vf-9"),
            None
        );
    }
}
