//! Which device each attachment runs with. A NAD naming a resource
//! (`k8s.v1.cni.cncf.io/resourceName`, e.g. an SR-IOV pool) gets one of the devices the pod was
//! given: by a device plugin (the kubelet's PodResources API) or by a DRA driver (the pod's
//! ResourceClaims and the ResourceSlices that describe their devices). A selection may also name
//! a device (`device-id`) or a claim request ([`crate::selection::RESOURCE_CLAIM_KEY`]) outright.
//!
//! Resolution asks once per ADD; the device is recorded with its attachment, so DEL, CHECK and
//! GC run with the recorded one and never ask again (DESIGN: "Where the next capabilities fit").

mod assign;
pub mod claims;
pub mod devinfo;
mod inject;
pub mod podresources;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use assign::{Need, PodDevices, assign};
pub use inject::give;

/// The NAD annotation naming the device pool its delegate needs a device from.
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";

/// The device an attachment runs with, as recorded with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// What the delegate gets as `deviceID`: a PCI address for SR-IOV, whatever id the device
    /// plugin or the DRA driver publishes otherwise.
    pub id: String,
    /// The NAD's resource, when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub source: DeviceSource,
    /// The device-info file offered to the delegate (NPWG device-info spec §4.2), removed when
    /// the attachment goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info_file: Option<PathBuf>,
}

/// Where a device came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum DeviceSource {
    /// The pod's selection named it (`device-id`).
    Selection,
    /// A device plugin allocated it; the kubelet's PodResources API said which.
    DevicePlugin,
    /// A DRA driver allocated it through one of the pod's ResourceClaims.
    Claim(ClaimDevice),
}

/// A device allocated through a ResourceClaim: the claim, and the device's triple (KEP-4817
/// keys its status entry by driver, pool and device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimDevice {
    pub namespace: String,
    /// The ResourceClaim object's name.
    pub claim: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    pub request: String,
    pub driver: String,
    pub pool: String,
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_id: Option<String>,
}

impl ClaimDevice {
    /// The claim it came from.
    pub fn claim_ref(&self) -> claims::ClaimRef {
        claims::ClaimRef {
            namespace: self.namespace.clone(),
            name: self.claim.clone(),
            uid: self.uid.clone(),
        }
    }
}

/// Why an attachment gets no device: the pod, the network, and the problem.
#[derive(Debug, thiserror::Error)]
#[error("pod {pod}: network {network}: {problem}")]
pub struct DeviceError {
    pub pod: String,
    pub network: String,
    pub problem: Box<DeviceProblem>,
}

impl DeviceError {
    pub fn new(pod: &str, network: &str, problem: DeviceProblem) -> Self {
        Self {
            pod: pod.to_owned(),
            network: network.to_owned(),
            problem: Box::new(problem),
        }
    }

    pub fn cni_code(&self) -> u32 {
        use crate::cni::code;
        match *self.problem {
            // The kubelet or the API server may answer the runtime's retry.
            DeviceProblem::Kubelet { .. } | DeviceProblem::ClaimLookup { .. } => {
                code::TRY_AGAIN_LATER
            }
            _ => code::INVALID_CONFIG,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceProblem {
    #[error(
        "needs a device of resource {resource} ({RESOURCE_NAME_ANNOTATION}), but the pod was given none: no device plugin allocated one (kubelet PodResources) and no device of its ResourceClaims has {attribute}={resource}",
        attribute = claims::RESOURCE_NAME_ATTRIBUTE
    )]
    NoDevice { resource: String },
    #[error(
        "needs a device of resource {resource}, but the pod's {have} device(s) of it ({ids}) are all taken by earlier attachments"
    )]
    Exhausted {
        resource: String,
        have: usize,
        ids: String,
    },
    #[error(
        "needs a device of resource {resource}, but the kubelet's PodResources API at {socket} did not answer: {cause}"
    )]
    Kubelet {
        resource: String,
        socket: PathBuf,
        cause: podresources::PodResourcesError,
    },
    #[error("cannot read the pod's ResourceClaim {claim}: {cause}")]
    ClaimLookup { claim: String, cause: String },
    #[error(
        "asks for claim request {request}, but the pod has no allocated resource claim request of that name"
    )]
    NoClaimRequest { request: String },
    #[error(
        "asks for claim request {request}, but the source has no ResourceClaims (the kube source with dra: true reads them)"
    )]
    NoClaims { request: String },
    #[error(
        "has resource {wanted}, but device {device} of claim {claim} (request {request}) has {attribute}={found}",
        attribute = claims::RESOURCE_NAME_ATTRIBUTE
    )]
    ResourceMismatch {
        wanted: String,
        claim: String,
        request: String,
        device: String,
        found: String,
    },
    #[error(
        "device {device} of claim {claim} has no {attribute} attribute in its ResourceSlice, so there is no device id to pass",
        attribute = claims::DEVICE_ID_ATTRIBUTE
    )]
    NoDeviceId { claim: String, device: String },
    #[error(
        "asks for claim request {request}, but its {have} device(s) are all taken by earlier attachments"
    )]
    RequestExhausted { request: String, have: usize },
    #[error("names device {id}, which network {other} names too")]
    NamedTwice { other: String, id: String },
    #[error(
        "needs a device of resource {resource}, but the runtime named no pod (K8S_POD_NAMESPACE, K8S_POD_NAME) to look it up for"
    )]
    NoPod { resource: String },
}
