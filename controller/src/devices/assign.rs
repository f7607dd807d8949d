//! Hands each attachment its device. Devices named outright come first (a `device-id`, then a
//! claim request), so a device a later selection names is never given away to an earlier one;
//! then every attachment that only names a resource gets the next free device of it, in
//! selection order. A resource's devices come from the pod's claims when any claim device
//! carries that resource name, else from the device plugins (asked only then, and only once).

use std::collections::HashMap;

use super::claims::{ClaimCatalog, DeviceAttributes, PodClaim, answers};
use super::podresources::{PodResources, ResourceDevices};
use super::{ClaimDevice, Device, DeviceError, DeviceProblem, DeviceSource};
use crate::names::PodKey;
use crate::selection::ClaimRequest;

/// What one attachment asks of devices.
#[derive(Debug, Clone, Default)]
pub struct Need {
    /// The network as operators name it, for errors.
    pub network: String,
    /// The NAD's `k8s.v1.cni.cncf.io/resourceName`.
    pub resource: Option<String>,
    /// The selection's `device-id`.
    pub explicit: Option<String>,
    /// The selection's claim request.
    pub claim: Option<ClaimRequest>,
}

impl Need {
    /// Whether the attachment runs with a device at all.
    pub fn wants_device(&self) -> bool {
        self.resource.is_some() || self.explicit.is_some() || self.claim.is_some()
    }
}

/// Where the pod's devices are looked up.
pub struct PodDevices<'a> {
    pub pod: Option<&'a PodKey>,
    /// The pod's resource claims, in `spec.resourceClaims` order.
    pub claims: &'a [PodClaim],
    /// `None` when the source has no ResourceClaims (the files source, or `dra: false`).
    pub catalog: Option<&'a dyn ClaimCatalog>,
    pub kubelet: &'a PodResources,
}

/// A device of one of the pod's claims, with what its ResourceSlice says about it.
#[derive(Debug, Clone)]
struct ClaimedDevice {
    /// The claim's name inside the pod.
    pod_claim: String,
    device: ClaimDevice,
    attributes: DeviceAttributes,
}

/// The device of every attachment (aligned with `needs`; `None` where none is wanted).
pub async fn assign(
    pod: &PodDevices<'_>,
    needs: &[Need],
) -> Result<Vec<Option<Device>>, DeviceError> {
    let label = pod
        .pod
        .map_or_else(|| "(unnamed)".to_owned(), ToString::to_string);
    let Some(looking) = needs
        .iter()
        .find(|n| n.wants_device() && n.explicit.is_none())
    else {
        // Nothing to look up: at most devices named outright.
        return choose(
            &label,
            needs,
            &[],
            &ResourceDevices::new(),
            pod.catalog.is_some(),
        );
    };
    let Some(key) = pod.pod else {
        return Err(DeviceError::new(
            "(unnamed)",
            &looking.network,
            DeviceProblem::NoPod {
                resource: looking
                    .resource
                    .clone()
                    .unwrap_or_else(|| "(claim request)".to_owned()),
            },
        ));
    };
    let claimed = claimed_devices(pod, key, &label, &looking.network).await?;
    let from_plugins = plugin_resources(needs, &claimed);
    let plugin = match from_plugins.first() {
        None => ResourceDevices::new(),
        Some(first) => pod
            .kubelet
            .devices(key.namespace.as_str(), key.name.as_str())
            .await
            .map_err(|cause| {
                DeviceError::new(
                    &label,
                    &first.network,
                    DeviceProblem::Kubelet {
                        resource: first.resource.clone().unwrap_or_default(),
                        socket: pod.kubelet.socket().to_owned(),
                        cause,
                    },
                )
            })?,
    };
    choose(&label, needs, &claimed, &plugin, pod.catalog.is_some())
}

/// The attachments whose resource no claim device carries: the device plugins must have it.
fn plugin_resources<'a>(needs: &'a [Need], claimed: &[ClaimedDevice]) -> Vec<&'a Need> {
    needs
        .iter()
        .filter(|n| n.explicit.is_none() && n.claim.is_none())
        .filter(|n| {
            n.resource.as_deref().is_some_and(|r| {
                !claimed
                    .iter()
                    .any(|c| c.attributes.resource_name.as_deref() == Some(r))
            })
        })
        .collect()
}

/// Every allocated device of the pod's claims, in claim order then allocation order.
async fn claimed_devices(
    pod: &PodDevices<'_>,
    key: &PodKey,
    label: &str,
    network: &str,
) -> Result<Vec<ClaimedDevice>, DeviceError> {
    let Some(catalog) = pod.catalog else {
        return Ok(Vec::new());
    };
    let namespace = key.namespace.as_str();
    let lookup_error = |claim: &str, cause: String| {
        DeviceError::new(
            label,
            network,
            DeviceProblem::ClaimLookup {
                claim: format!("{namespace}/{claim}"),
                cause,
            },
        )
    };
    let mut devices = Vec::new();
    for pod_claim in pod.claims {
        let Some(name) = &pod_claim.claim else {
            continue;
        };
        let Some(allocated) = catalog
            .claim(namespace, name)
            .await
            .map_err(|cause| lookup_error(name, cause))?
        else {
            tracing::debug!(pod = %label, claim = %name, "resource claim missing or not allocated");
            continue;
        };
        for result in &allocated.results {
            let attributes = catalog
                .device(&result.driver, &result.pool, &result.device)
                .await
                .map_err(|cause| lookup_error(name, cause))?
                .unwrap_or_default();
            devices.push(ClaimedDevice {
                pod_claim: pod_claim.name.clone(),
                device: ClaimDevice {
                    namespace: namespace.to_owned(),
                    claim: name.clone(),
                    uid: allocated.uid.clone(),
                    request: result.request.clone(),
                    driver: result.driver.clone(),
                    pool: result.pool.clone(),
                    device: result.device.clone(),
                    share_id: result.share_id.clone(),
                },
                attributes,
            });
        }
    }
    Ok(devices)
}

/// The devices given out so far: ids (whatever their source) and claim devices.
#[derive(Default)]
struct Taken {
    ids: HashMap<String, String>,
    claimed: Vec<usize>,
}

impl Taken {
    fn take(&mut self, id: &str, network: &str) {
        self.ids.insert(id.to_owned(), network.to_owned());
    }

    fn has(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }
}

/// The pure part: who gets which device, in the order the module comment gives.
fn choose(
    pod: &str,
    needs: &[Need],
    claimed: &[ClaimedDevice],
    plugin: &ResourceDevices,
    has_claims: bool,
) -> Result<Vec<Option<Device>>, DeviceError> {
    let mut devices: Vec<Option<Device>> = vec![None; needs.len()];
    let mut taken = Taken::default();
    for (slot, need) in devices.iter_mut().zip(needs) {
        let Some(id) = need.explicit.as_deref() else {
            continue;
        };
        if let Some(other) = taken.ids.get(id) {
            return Err(DeviceError::new(
                pod,
                &need.network,
                DeviceProblem::NamedTwice {
                    other: other.clone(),
                    id: id.to_owned(),
                },
            ));
        }
        taken.take(id, &need.network);
        *slot = Some(device(need, id, DeviceSource::Selection));
    }
    for (slot, need) in devices.iter_mut().zip(needs) {
        let Some(request) = need.claim.as_ref().filter(|_| need.explicit.is_none()) else {
            continue;
        };
        *slot = Some(from_claim_request(
            pod, need, request, claimed, &mut taken, has_claims,
        )?);
    }
    for (slot, need) in devices.iter_mut().zip(needs) {
        if slot.is_some() {
            continue;
        }
        let Some(resource) = need.resource.as_deref() else {
            continue;
        };
        *slot = Some(from_resource(
            pod, need, resource, claimed, plugin, &mut taken,
        )?);
    }
    Ok(devices)
}

fn device(need: &Need, id: &str, source: DeviceSource) -> Device {
    Device {
        id: id.to_owned(),
        resource: need.resource.clone(),
        source,
        info_file: None,
    }
}

fn from_claim_request(
    pod: &str,
    need: &Need,
    request: &ClaimRequest,
    claimed: &[ClaimedDevice],
    taken: &mut Taken,
    has_claims: bool,
) -> Result<Device, DeviceError> {
    if !has_claims {
        return Err(DeviceError::new(
            pod,
            &need.network,
            DeviceProblem::NoClaims {
                request: request.to_string(),
            },
        ));
    }
    let claim = request.claim_name.as_str();
    let candidates: Vec<usize> = claimed
        .iter()
        .enumerate()
        .filter(|(_, c)| c.pod_claim == claim || c.device.claim == claim)
        .filter(|(_, c)| {
            request
                .request_name
                .as_ref()
                .is_none_or(|r| answers(&c.device.request, r.as_str()))
        })
        .map(|(i, _)| i)
        .collect();
    if candidates.is_empty() {
        return Err(DeviceError::new(
            pod,
            &need.network,
            DeviceProblem::NoClaimRequest {
                request: request.to_string(),
            },
        ));
    }
    let Some(&index) = candidates.iter().find(|i| is_free(claimed, **i, taken)) else {
        return Err(DeviceError::new(
            pod,
            &need.network,
            DeviceProblem::RequestExhausted {
                request: request.to_string(),
                have: candidates.len(),
            },
        ));
    };
    let found = &claimed[index];
    if let Some(wanted) = need.resource.as_deref()
        && found.attributes.resource_name.as_deref() != Some(wanted)
    {
        return Err(DeviceError::new(
            pod,
            &need.network,
            DeviceProblem::ResourceMismatch {
                wanted: wanted.to_owned(),
                claim: found.device.claim.clone(),
                request: found.device.request.clone(),
                device: found.device.device.clone(),
                found: found
                    .attributes
                    .resource_name
                    .clone()
                    .unwrap_or_else(|| "(none)".to_owned()),
            },
        ));
    }
    take_claimed(pod, need, claimed, index, taken)
}

fn is_free(claimed: &[ClaimedDevice], index: usize, taken: &Taken) -> bool {
    !taken.claimed.contains(&index)
        && claimed[index]
            .attributes
            .device_id
            .as_deref()
            .is_none_or(|id| !taken.has(id))
}

fn take_claimed(
    pod: &str,
    need: &Need,
    claimed: &[ClaimedDevice],
    index: usize,
    taken: &mut Taken,
) -> Result<Device, DeviceError> {
    let found = &claimed[index];
    let Some(id) = found.attributes.device_id.as_deref() else {
        return Err(DeviceError::new(
            pod,
            &need.network,
            DeviceProblem::NoDeviceId {
                claim: format!("{}/{}", found.device.namespace, found.device.claim),
                device: found.device.device.clone(),
            },
        ));
    };
    taken.claimed.push(index);
    taken.take(id, &need.network);
    Ok(device(need, id, DeviceSource::Claim(found.device.clone())))
}

fn from_resource(
    pod: &str,
    need: &Need,
    resource: &str,
    claimed: &[ClaimedDevice],
    plugin: &ResourceDevices,
    taken: &mut Taken,
) -> Result<Device, DeviceError> {
    let of_resource: Vec<usize> = claimed
        .iter()
        .enumerate()
        .filter(|(_, c)| c.attributes.resource_name.as_deref() == Some(resource))
        .map(|(i, _)| i)
        .collect();
    let exhausted = |ids: Vec<&str>| {
        DeviceError::new(
            pod,
            &need.network,
            DeviceProblem::Exhausted {
                resource: resource.to_owned(),
                have: ids.len(),
                ids: ids.join(", "),
            },
        )
    };
    if !of_resource.is_empty() {
        return match of_resource.iter().find(|i| is_free(claimed, **i, taken)) {
            Some(&index) => take_claimed(pod, need, claimed, index, taken),
            None => Err(exhausted(
                of_resource
                    .iter()
                    .map(|i| claimed[*i].device.device.as_str())
                    .collect(),
            )),
        };
    }
    let ids = plugin.get(resource).map(Vec::as_slice).unwrap_or_default();
    if ids.is_empty() {
        return Err(DeviceError::new(
            pod,
            &need.network,
            DeviceProblem::NoDevice {
                resource: resource.to_owned(),
            },
        ));
    }
    match ids.iter().find(|id| !taken.has(id)) {
        Some(id) => {
            taken.take(id, &need.network);
            Ok(device(need, id, DeviceSource::DevicePlugin))
        }
        None => Err(exhausted(ids.iter().map(String::as_str).collect())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::future::BoxFuture;

    use super::*;
    use crate::devices::claims::{AllocatedClaim, AllocationResult};
    use crate::names::{Label, Namespace, ObjectName};

    fn need(network: &str, resource: Option<&str>) -> Need {
        Need {
            network: network.to_owned(),
            resource: resource.map(str::to_owned),
            ..Need::default()
        }
    }

    fn plugin(resource: &str, ids: &[&str]) -> ResourceDevices {
        let mut devices = ResourceDevices::new();
        devices.insert(
            resource.to_owned(),
            ids.iter().map(|i| (*i).to_owned()).collect(),
        );
        devices
    }

    fn ids(devices: &[Option<Device>]) -> Vec<Option<&str>> {
        devices
            .iter()
            .map(|d| d.as_ref().map(|d| d.id.as_str()))
            .collect()
    }

    /// A claim device `device` of request `request` in pod claim `pod_claim` (object
    /// `<pod_claim>-obj`), with these attributes.
    fn claimed(
        pod_claim: &str,
        request: &str,
        device: &str,
        resource: Option<&str>,
        id: Option<&str>,
    ) -> ClaimedDevice {
        ClaimedDevice {
            pod_claim: pod_claim.to_owned(),
            device: ClaimDevice {
                namespace: "tenant".into(),
                claim: format!("{pod_claim}-obj"),
                uid: None,
                request: request.to_owned(),
                driver: "net.example.com".into(),
                pool: "node-a".into(),
                device: device.to_owned(),
                share_id: None,
            },
            attributes: DeviceAttributes {
                resource_name: resource.map(str::to_owned),
                device_id: id.map(str::to_owned),
            },
        }
    }

    /// `choose` for pod tenant/web with these claim devices and no device plugins.
    fn from_claims(
        needs: &[Need],
        claimed: &[ClaimedDevice],
    ) -> Result<Vec<Option<Device>>, DeviceError> {
        choose("tenant/web", needs, claimed, &ResourceDevices::new(), true)
    }

    fn claim_request(claim: &str, request: Option<&str>) -> ClaimRequest {
        ClaimRequest {
            claim_name: Label::parse(claim).unwrap(),
            request_name: request.map(|r| Label::parse(r).unwrap()),
        }
    }

    #[test]
    fn two_attachments_on_one_pool_get_distinct_devices_in_selection_order() {
        let needs = [
            need("cluster", None),
            need("tenant/vf-a", Some("example.com/vf")),
            need("tenant/plain", None),
            need("tenant/vf-b", Some("example.com/vf")),
        ];
        let plugin = plugin("example.com/vf", &["0000:03:00.2", "0000:03:00.3"]);
        let devices = choose("tenant/web", &needs, &[], &plugin, false).unwrap();
        assert_eq!(
            ids(&devices),
            [None, Some("0000:03:00.2"), None, Some("0000:03:00.3")]
        );
        let device = devices[1].as_ref().unwrap();
        assert_eq!(device.source, DeviceSource::DevicePlugin);
        assert_eq!(device.resource.as_deref(), Some("example.com/vf"));
    }

    #[test]
    fn a_named_device_is_used_as_given_and_is_never_handed_out_again() {
        // The second selection names the first device of the pool: the first selection,
        // though earlier, gets the other one.
        let mut named = need("tenant/vf-b", Some("example.com/vf"));
        named.explicit = Some("0000:03:00.2".into());
        let needs = [need("tenant/vf-a", Some("example.com/vf")), named];
        let plugin = plugin("example.com/vf", &["0000:03:00.2", "0000:03:00.3"]);
        let devices = choose("tenant/web", &needs, &[], &plugin, false).unwrap();
        assert_eq!(ids(&devices), [Some("0000:03:00.3"), Some("0000:03:00.2")]);
        assert_eq!(devices[1].as_ref().unwrap().source, DeviceSource::Selection);

        // Named outside the pool: still used as given.
        let mut elsewhere = need("tenant/host", None);
        elsewhere.explicit = Some("0000:81:00.0".into());
        let devices = choose(
            "tenant/web",
            &[elsewhere],
            &[],
            &ResourceDevices::new(),
            false,
        )
        .unwrap();
        assert_eq!(ids(&devices), [Some("0000:81:00.0")]);
        assert_eq!(devices[0].as_ref().unwrap().resource, None);
    }

    #[test]
    fn the_same_device_named_twice_is_refused_naming_both_networks() {
        let mut first = need("tenant/a", None);
        first.explicit = Some("dev0".into());
        let mut second = need("tenant/b", None);
        second.explicit = Some("dev0".into());
        let error = choose(
            "tenant/web",
            &[first, second],
            &[],
            &ResourceDevices::new(),
            false,
        )
        .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("tenant/a") && text.contains("tenant/b") && text.contains("dev0"),
            "{text}"
        );
    }

    #[test]
    fn a_pool_with_too_few_devices_fails_naming_pod_network_and_resource() {
        let needs = [
            need("tenant/vf-a", Some("example.com/vf")),
            need("tenant/vf-b", Some("example.com/vf")),
        ];
        let one = plugin("example.com/vf", &["0000:03:00.2"]);
        let error = choose("tenant/web", &needs, &[], &one, false).unwrap_err();
        assert!(
            matches!(*error.problem, DeviceProblem::Exhausted { have: 1, .. }),
            "{error}"
        );
        let text = error.to_string();
        for part in [
            "tenant/web",
            "tenant/vf-b",
            "example.com/vf",
            "0000:03:00.2",
        ] {
            assert!(text.contains(part), "{part} missing in {text}");
        }
        let error =
            choose("tenant/web", &needs, &[], &plugin("other/x", &["a"]), false).unwrap_err();
        assert!(
            matches!(*error.problem, DeviceProblem::NoDevice { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("tenant/vf-a"), "{error}");
        assert_eq!(error.cni_code(), crate::cni::code::INVALID_CONFIG);
    }

    #[test]
    fn claim_devices_are_matched_by_their_resource_name_attribute() {
        let claimed = [
            claimed(
                "nics",
                "vf",
                "vf-0",
                Some("example.com/east"),
                Some("tdev0"),
            ),
            claimed(
                "nics",
                "vf",
                "vf-1",
                Some("example.com/west"),
                Some("tdev1"),
            ),
            // Not a network device: no attributes at all.
            claimed("gpus", "gpu", "gpu-0", None, None),
        ];
        let needs = [
            need("tenant/west", Some("example.com/west")),
            need("tenant/east", Some("example.com/east")),
        ];
        let devices = from_claims(&needs, &claimed).unwrap();
        assert_eq!(ids(&devices), [Some("tdev1"), Some("tdev0")]);
        match &devices[0].as_ref().unwrap().source {
            DeviceSource::Claim(device) => {
                assert_eq!(
                    (device.claim.as_str(), device.device.as_str()),
                    ("nics-obj", "vf-1")
                )
            }
            other => panic!("{other:?}"),
        }
        // The device plugins are not needed then.
        assert!(plugin_resources(&needs, &claimed).is_empty());
    }

    #[test]
    fn a_named_claim_request_supplies_the_device_and_a_wrong_resource_is_refused() {
        let claimed = [
            claimed(
                "nics",
                "east",
                "vf-0",
                Some("example.com/vf"),
                Some("tdev0"),
            ),
            claimed(
                "nics",
                "west/high",
                "vf-1",
                Some("example.com/vf"),
                Some("tdev1"),
            ),
            claimed(
                "other",
                "east",
                "vf-2",
                Some("example.com/other"),
                Some("tdev2"),
            ),
        ];
        let west = claim_request("nics", Some("west"));
        let mut by_claim = need("tenant/vf-a", Some("example.com/vf"));
        by_claim.claim = Some(west);
        // The unnamed one must not take vf-1 although it comes first.
        let needs = [need("tenant/vf-b", Some("example.com/vf")), by_claim];
        let devices = from_claims(&needs, &claimed).unwrap();
        assert_eq!(ids(&devices), [Some("tdev0"), Some("tdev1")]);

        let wrong = claim_request("other", None);
        let mut mismatched = need("tenant/vf-a", Some("example.com/vf"));
        mismatched.claim = Some(wrong);
        let error = choose(
            "tenant/web",
            &[mismatched],
            &claimed,
            &ResourceDevices::new(),
            true,
        )
        .unwrap_err();
        assert!(
            matches!(*error.problem, DeviceProblem::ResourceMismatch { .. }),
            "{error}"
        );
        let text = error.to_string();
        for part in [
            "tenant/vf-a",
            "example.com/vf",
            "example.com/other",
            "vf-2",
            "other-obj",
        ] {
            assert!(text.contains(part), "{part} missing in {text}");
        }

        let missing = claim_request("nics", Some("north"));
        let mut asks = need("tenant/vf-a", Some("example.com/vf"));
        asks.claim = Some(missing);
        let asks = [asks];
        let error = from_claims(&asks, &claimed).unwrap_err();
        assert!(
            matches!(*error.problem, DeviceProblem::NoClaimRequest { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("nics/north"), "{error}");
        let error = choose("tenant/web", &asks, &[], &ResourceDevices::new(), false).unwrap_err();
        assert!(
            matches!(*error.problem, DeviceProblem::NoClaims { .. }),
            "{error}"
        );
    }

    #[test]
    fn a_claim_device_without_a_device_id_attribute_is_an_error() {
        let claimed = [claimed("nics", "vf", "vf-0", Some("example.com/vf"), None)];
        let error = choose(
            "tenant/web",
            &[need("tenant/vf", Some("example.com/vf"))],
            &claimed,
            &ResourceDevices::new(),
            true,
        )
        .unwrap_err();
        assert!(
            matches!(*error.problem, DeviceProblem::NoDeviceId { .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains("k8s.cni.cncf.io/deviceID"),
            "{error}"
        );
    }

    /// Claims and slices held in memory.
    struct Catalog {
        claims: Vec<(&'static str, AllocatedClaim)>,
        lookups: std::sync::Mutex<Vec<String>>,
    }

    impl ClaimCatalog for Catalog {
        fn claim<'a>(
            &'a self,
            _namespace: &'a str,
            name: &'a str,
        ) -> BoxFuture<'a, Result<Option<Arc<AllocatedClaim>>, String>> {
            self.lookups.lock().unwrap().push(format!("claim {name}"));
            let found = self
                .claims
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| Arc::new(c.clone()));
            Box::pin(async move { Ok(found) })
        }

        fn device<'a>(
            &'a self,
            _driver: &'a str,
            _pool: &'a str,
            device: &'a str,
        ) -> BoxFuture<'a, Result<Option<DeviceAttributes>, String>> {
            self.lookups
                .lock()
                .unwrap()
                .push(format!("device {device}"));
            let attributes = DeviceAttributes {
                resource_name: Some("example.com/vf".into()),
                device_id: Some(format!("id-{device}")),
            };
            Box::pin(async move { Ok(Some(attributes)) })
        }
    }

    fn pod_key() -> PodKey {
        PodKey {
            namespace: Namespace::parse("tenant").unwrap(),
            name: ObjectName::parse("web").unwrap(),
        }
    }

    #[tokio::test]
    async fn claims_are_read_through_the_catalog_and_the_kubelet_is_not_asked() {
        let catalog = Catalog {
            claims: vec![(
                "web-nics-x7",
                AllocatedClaim {
                    uid: Some("u1".into()),
                    results: vec![AllocationResult {
                        request: "vf".into(),
                        driver: "net.example.com".into(),
                        pool: "node-a".into(),
                        device: "vf-3".into(),
                        share_id: None,
                    }],
                },
            )],
            lookups: Default::default(),
        };
        let key = pod_key();
        let claims = [
            PodClaim {
                name: "nics".into(),
                claim: Some("web-nics-x7".into()),
            },
            // Not created yet: skipped.
            PodClaim {
                name: "later".into(),
                claim: None,
            },
        ];
        // A socket that does not exist: asking the kubelet would fail the test.
        let kubelet = PodResources::new(
            "/nonexistent/kubelet.sock",
            std::time::Duration::from_secs(1),
        );
        let pod = PodDevices {
            pod: Some(&key),
            claims: &claims,
            catalog: Some(&catalog),
            kubelet: &kubelet,
        };
        let devices = assign(&pod, &[need("tenant/vf", Some("example.com/vf"))])
            .await
            .unwrap();
        let device = devices[0].as_ref().unwrap();
        assert_eq!(device.id, "id-vf-3");
        match &device.source {
            DeviceSource::Claim(claim) => {
                assert_eq!(claim.claim, "web-nics-x7");
                assert_eq!(claim.uid.as_deref(), Some("u1"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            *catalog.lookups.lock().unwrap(),
            ["claim web-nics-x7", "device vf-3"]
        );

        // Nothing wanted: nothing looked up.
        catalog.lookups.lock().unwrap().clear();
        assert_eq!(
            assign(&pod, &[need("cluster", None)]).await.unwrap(),
            [None]
        );
        assert!(catalog.lookups.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_unreachable_kubelet_fails_naming_pod_network_resource_and_socket() {
        let key = pod_key();
        let kubelet = PodResources::new(
            "/nonexistent/kubelet.sock",
            std::time::Duration::from_secs(1),
        );
        let pod = PodDevices {
            pod: Some(&key),
            claims: &[],
            catalog: None,
            kubelet: &kubelet,
        };
        let error = assign(&pod, &[need("tenant/vf", Some("example.com/vf"))])
            .await
            .unwrap_err();
        assert_eq!(error.cni_code(), crate::cni::code::TRY_AGAIN_LATER);
        let text = error.to_string();
        for part in [
            "tenant/web",
            "tenant/vf",
            "example.com/vf",
            "/nonexistent/kubelet.sock",
        ] {
            assert!(text.contains(part), "{part} missing in {text}");
        }
        let no_pod = PodDevices { pod: None, ..pod };
        let error = assign(&no_pod, &[need("tenant/vf", Some("example.com/vf"))])
            .await
            .unwrap_err();
        assert!(
            matches!(*error.problem, DeviceProblem::NoPod { .. }),
            "{error}"
        );
    }
}
