//! The device side of ADD and DEL: each delegate's device, asked for once during resolution;
//! the device-info files around the delegates; the KEP-4817 status of claim devices after an
//! ADD, and its release after a DEL.

use std::collections::BTreeMap;

use super::{Plexus, Result};
use crate::cni::CniResult;
use crate::devices::claims::{ClaimRef, DeviceNetworkData};
use crate::devices::{self, Device, DeviceSource, Need, PodDevices, devinfo};
use crate::names::{ContainerId, PodKey};
use crate::records::Attachment;
use crate::resolve::{Delegate, Network};
use crate::selection::Selection;
use crate::source::PodInfo;

/// What each network asks of devices: the cluster network's, then each selection's; nothing
/// at all when none asks for a device (the common case costs no allocation).
pub(super) fn needs(cluster: &Network, secondaries: &[(Selection, Network)]) -> Vec<Need> {
    let wanted = cluster.resource_name.is_some()
        || secondaries.iter().any(|(selection, network)| {
            network.resource_name.is_some()
                || selection.device_id.is_some()
                || selection.resource_claim.is_some()
        });
    if !wanted {
        return Vec::new();
    }
    let mut needs = Vec::with_capacity(secondaries.len() + 1);
    needs.push(Need {
        network: cluster.label.clone(),
        resource: cluster.resource_name.clone(),
        ..Need::default()
    });
    needs.extend(secondaries.iter().map(|(selection, network)| Need {
        network: network.label.clone(),
        resource: network.resource_name.clone(),
        explicit: selection.device_id.clone(),
        claim: selection.resource_claim.clone(),
    }));
    needs
}

impl Plexus {
    /// Gives every delegate that needs one its device (aligned with `needs`).
    pub(super) async fn give_devices(
        &self,
        container: &ContainerId,
        delegates: &mut [Delegate],
        needs: &[Need],
        pod_key: Option<&PodKey>,
        pod: Option<&PodInfo>,
    ) -> Result<()> {
        if !needs.iter().any(Need::wants_device) {
            return Ok(());
        }
        let chosen = self.choose_devices(needs, pod_key, pod).await?;
        for (delegate, device) in delegates.iter_mut().zip(chosen) {
            if let Some(device) = device {
                self.hand_device(container, delegate, device);
            }
        }
        Ok(())
    }

    /// Hot-plug: gives a new attachment its device, if its network asks for one, among those
    /// of the pod's devices that the attachments in `taken` do not hold. They are asked for
    /// as devices named outright, so they count as taken exactly as a `device-id` does.
    pub(super) async fn give_device_besides(
        &self,
        container: &ContainerId,
        taken: &[&Device],
        delegate: &mut Delegate,
        need: Need,
        pod: &PodInfo,
    ) -> Result<()> {
        if !need.wants_device() {
            return Ok(());
        }
        let mut needs: Vec<Need> = taken
            .iter()
            .map(|device| Need {
                network: String::new(),
                resource: device.resource.clone(),
                explicit: Some(device.id.clone()),
                claim: None,
            })
            .collect();
        needs.push(need);
        let chosen = self
            .choose_devices(&needs, Some(&pod.key), Some(pod))
            .await?;
        if let Some(Some(device)) = chosen.into_iter().next_back() {
            self.hand_device(container, delegate, device);
        }
        Ok(())
    }

    async fn choose_devices(
        &self,
        needs: &[Need],
        pod_key: Option<&PodKey>,
        pod: Option<&PodInfo>,
    ) -> Result<Vec<Option<Device>>> {
        let scope = PodDevices {
            pod: pod_key,
            claims: pod.map(|p| p.claims.as_slice()).unwrap_or_default(),
            catalog: self.source.claims(),
            kubelet: &self.kubelet,
        };
        Ok(devices::assign(&scope, needs).await?)
    }

    fn hand_device(&self, container: &ContainerId, delegate: &mut Delegate, device: Device) {
        tracing::info!(network = %delegate.network, ifname = %delegate.ifname, device = %device.id, "device chosen");
        let file = self
            .devinfo
            .attachment_file(&delegate.network, container, &delegate.ifname);
        devices::give(delegate, device, Some(file));
    }

    /// Before the delegates run: the device plugins' device-info, copied for each attachment.
    pub(super) fn offer_device_info(&self, delegates: &[Delegate]) {
        for device in delegates.iter().filter_map(|d| d.device.as_ref()) {
            self.devinfo.offer(device);
        }
    }

    /// After an ADD: each claim Plexus attached devices from gets their network data.
    pub(super) fn publish_claim_devices(&self, attachments: &[Attachment]) {
        for (claim, devices) in claim_network_data(attachments) {
            std::sync::Arc::clone(&self.source).publish_claim_status(&claim, devices);
        }
    }

    /// After `gone` were deleted (by DEL, GC or a failed ADD's rollback): their device-info
    /// files go, and each claim they had devices from is told which of its devices Plexus
    /// still has attached (those in `kept`).
    pub(super) fn release_devices(&self, gone: &[Attachment], kept: &[Attachment]) {
        for device in gone.iter().filter_map(|a| a.delegate.device.as_ref()) {
            devinfo::remove(device);
        }
        let mut still = claim_network_data(kept);
        let released: BTreeMap<String, ClaimRef> = gone
            .iter()
            .filter(|a| a.result.is_some())
            .filter_map(|a| match &a.delegate.device.as_ref()?.source {
                DeviceSource::Claim(device) => Some(device.claim_ref()),
                _ => None,
            })
            .map(|claim| (claim.to_string(), claim))
            .collect();
        for claim in released.into_values() {
            let devices = still.remove(&claim).unwrap_or_default();
            std::sync::Arc::clone(&self.source).publish_claim_status(&claim, devices);
        }
    }
}

/// The network data of every attached claim device, by claim.
fn claim_network_data(attachments: &[Attachment]) -> BTreeMap<ClaimRef, Vec<DeviceNetworkData>> {
    let mut by_claim: BTreeMap<ClaimRef, Vec<DeviceNetworkData>> = BTreeMap::new();
    for attachment in attachments {
        let delegate = &attachment.delegate;
        let (Some(device), Some(result)) = (&delegate.device, &attachment.result) else {
            continue;
        };
        let DeviceSource::Claim(claimed) = &device.source else {
            continue;
        };
        let parsed = CniResult::parse(result.to_string().as_bytes(), delegate.version)
            .map(|(r, _)| r)
            .unwrap_or_default();
        let sandbox = parsed.first_sandbox_interface();
        let interface = sandbox.and_then(|i| parsed.interfaces.get(i));
        by_claim
            .entry(claimed.claim_ref())
            .or_default()
            .push(DeviceNetworkData {
                driver: claimed.driver.clone(),
                pool: claimed.pool.clone(),
                device: claimed.device.clone(),
                share_id: claimed.share_id.clone(),
                interface_name: interface
                    .map_or_else(|| delegate.ifname.to_string(), |i| i.name.clone()),
                ips: parsed
                    .ips
                    .iter()
                    .filter(|ip| ip.interface == sandbox)
                    .map(|ip| ip.address.to_string())
                    .collect(),
                hardware_address: interface
                    .and_then(|i| i.mac.clone())
                    .filter(|m| !m.is_empty()),
                network: delegate.network.clone(),
            });
    }
    by_claim
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::devices::{ClaimDevice, Device};
    use crate::testing::chain;

    fn claimed(device: &str, claim: &str) -> Device {
        Device {
            id: format!("id-{device}"),
            resource: Some("example.com/vf".into()),
            source: DeviceSource::Claim(ClaimDevice {
                namespace: "tenant".into(),
                claim: claim.into(),
                uid: Some(format!("uid-{claim}")),
                request: "vf".into(),
                driver: "net.example.com".into(),
                pool: "node-a".into(),
                device: device.into(),
                share_id: None,
            }),
            info_file: None,
        }
    }

    fn attached(ifname: &str, device: Option<Device>, address: &str) -> Attachment {
        let mut delegate = Delegate::test("tenant/vf", chain("vf", "1.0.0", &["sriov"])).on(ifname);
        delegate.device = device;
        Attachment::added(
            delegate,
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [{"name": ifname, "mac": "02:00:00:00:00:01", "sandbox": "/var/run/netns/pod"}],
                "ips": [{"interface": 0, "address": address}],
            }),
        )
    }

    #[test]
    fn network_data_is_grouped_by_claim_with_cidr_addresses() {
        let attachments = [
            attached("net1", Some(claimed("vf-0", "a")), "198.18.5.2/24"),
            attached("net2", None, "198.18.6.2/24"),
            attached("net3", Some(claimed("vf-1", "a")), "198.18.7.2/24"),
            attached("net4", Some(claimed("vf-2", "b")), "198.18.8.2/24"),
            // Intended only (a crash before its result): nothing to report.
            Attachment::intended(attached("net5", Some(claimed("vf-3", "c")), "x").delegate),
        ];
        let data = claim_network_data(&attachments);
        let claims: Vec<String> = data.keys().map(ToString::to_string).collect();
        assert_eq!(claims, ["tenant/a", "tenant/b"]);
        let a = &data.values().next().unwrap();
        let summary: Vec<(&str, &str, &[String], Option<&str>)> = a
            .iter()
            .map(|d| {
                (
                    d.device.as_str(),
                    d.interface_name.as_str(),
                    d.ips.as_slice(),
                    d.hardware_address.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "vf-0",
                    "net1",
                    &["198.18.5.2/24".to_owned()][..],
                    Some("02:00:00:00:00:01")
                ),
                (
                    "vf-1",
                    "net3",
                    &["198.18.7.2/24".to_owned()][..],
                    Some("02:00:00:00:00:01")
                ),
            ]
        );
        assert_eq!(a[0].network, "tenant/vf");
    }
}
