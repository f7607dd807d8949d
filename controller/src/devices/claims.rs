//! What devices come from DRA: the pod's ResourceClaims (`status.allocation.devices.results`
//! names driver, pool and device) and the ResourceSlices that describe those devices (whose
//! attributes carry the resource name and the device id a CNI plugin needs), as Multus reads
//! them. The kube source answers from reflected objects; this module only names the shapes.

use std::sync::Arc;

use futures::future::BoxFuture;

/// The device attribute that must equal the NAD's `k8s.v1.cni.cncf.io/resourceName`.
pub const RESOURCE_NAME_ATTRIBUTE: &str = "k8s.cni.cncf.io/resourceName";
/// The device attribute whose value the delegate gets as `deviceID`.
pub const DEVICE_ID_ATTRIBUTE: &str = "k8s.cni.cncf.io/deviceID";

/// One entry of a pod's `spec.resourceClaims`, with the ResourceClaim it stands for: named
/// there directly (`resourceClaimName`), or generated from a template and named in
/// `status.resourceClaimStatuses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodClaim {
    /// The name inside the pod.
    pub name: String,
    /// The ResourceClaim object (in the pod's namespace); `None` while it does not exist yet.
    pub claim: Option<String>,
}

/// A claim's allocation, as far as Plexus needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllocatedClaim {
    pub uid: Option<String>,
    pub results: Vec<AllocationResult>,
}

/// One allocated device (`status.allocation.devices.results[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationResult {
    /// The request, `request` or `request/subrequest`.
    pub request: String,
    pub driver: String,
    pub pool: String,
    pub device: String,
    pub share_id: Option<String>,
}

/// Whether a device allocated for `allocated` (`request` or `request/subrequest`) answers
/// `request`: a subrequest answers its parent request.
pub fn answers(allocated: &str, request: &str) -> bool {
    allocated == request
        || allocated
            .strip_prefix(request)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The attributes of a device Plexus reads (string values only, as drivers publish them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceAttributes {
    pub resource_name: Option<String>,
    pub device_id: Option<String>,
}

/// Where claims and device attributes are looked up: the kube source's reflectors, falling
/// back to the API server on a miss. Errors are the API server's, as text.
pub trait ClaimCatalog: Send + Sync {
    /// The allocation of ResourceClaim `namespace/name`; `None` when it does not exist or is
    /// not allocated.
    fn claim<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Arc<AllocatedClaim>>, String>>;

    /// The attributes of `device` in `driver`'s `pool`; `None` when no ResourceSlice has it.
    fn device<'a>(
        &'a self,
        driver: &'a str,
        pool: &'a str,
        device: &'a str,
    ) -> BoxFuture<'a, Result<Option<DeviceAttributes>, String>>;
}

/// A ResourceClaim a status write is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClaimRef {
    pub namespace: String,
    pub name: String,
    /// The claim Plexus read; a claim of the same name that replaced it is not written.
    pub uid: Option<String>,
}

impl std::fmt::Display for ClaimRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The KEP-4817 status of one device Plexus attached (`status.devices[]` of its claim): which
/// device, and the network it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNetworkData {
    pub driver: String,
    pub pool: String,
    pub device: String,
    pub share_id: Option<String>,
    /// The interface inside the pod.
    pub interface_name: String,
    /// Addresses in CIDR form.
    pub ips: Vec<String>,
    pub hardware_address: Option<String>,
    /// Which network attached it, for the Ready condition's message.
    pub network: String,
}
