//! KEP-4817: after Plexus attached devices of a ResourceClaim, the claim's `status.devices[]`
//! says what network each device got (`networkData`: interface name, IPs in CIDR form,
//! hardware address) and carries a `Ready` condition. Written as a server-side apply of the
//! status subresource with Plexus's own field manager: the entries are keyed by driver, pool
//! and device, so the DRA driver's own fields stay its own, and a field another manager already
//! set is a conflict that Plexus leaves alone instead of forcing. Applying no entries releases
//! what Plexus wrote (DEL).
//!
//! Like network-status the write never holds up a CNI answer: it runs in the background and is
//! retried until it lands, the claim is gone or replaced, or a newer write for the claim
//! supersedes it. Writes for one claim go one at a time, so a DEL's release and the next ADD's
//! write land in the order they were made.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::dra::ClaimObject;
use crate::devices::claims::{ClaimRef, DeviceNetworkData};

/// The field manager of everything Plexus writes into claims.
pub const FIELD_MANAGER: &str = "plexus";

const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);

type ClaimKey = (String, String);

#[derive(Default)]
struct Pending {
    generation: u64,
    /// Held while a write for the claim is under way.
    turn: Arc<tokio::sync::Mutex<()>>,
}

pub(super) struct ClaimStatusWriter {
    client: Client,
    pending: Mutex<HashMap<ClaimKey, Pending>>,
    /// Where the writes run: the source's runtime, not the caller's (an ADD on the CNI worker).
    runtime: tokio::runtime::Handle,
}

impl ClaimStatusWriter {
    /// On the current runtime, whose tasks write the claims' status.
    pub(super) fn new(client: Client) -> Self {
        Self {
            client,
            pending: Mutex::default(),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Writes (in the background) the entries of the devices Plexus attached from `claim`.
    pub(super) fn publish(self: &Arc<Self>, claim: &ClaimRef, devices: Vec<DeviceNetworkData>) {
        let key = (claim.namespace.clone(), claim.name.clone());
        let Some((generation, turn)) = self.next(&key) else {
            return;
        };
        let body = apply_body(claim, &devices, &now());
        let writer = Arc::clone(self);
        let claim = claim.clone();
        self.runtime.spawn(async move {
            let _turn = turn.lock().await;
            writer.retry_loop(&claim, &key, generation, &body).await;
            writer.finish(&key, generation);
        });
    }

    fn next(&self, key: &ClaimKey) -> Option<(u64, Arc<tokio::sync::Mutex<()>>)> {
        let mut pending = self.pending.lock().ok()?;
        let entry = pending.entry(key.clone()).or_default();
        entry.generation += 1;
        Some((entry.generation, Arc::clone(&entry.turn)))
    }

    fn is_current(&self, key: &ClaimKey, generation: u64) -> bool {
        self.pending
            .lock()
            .map(|p| p.get(key).is_some_and(|e| e.generation == generation))
            .unwrap_or(false)
    }

    fn finish(&self, key: &ClaimKey, generation: u64) {
        if let Ok(mut pending) = self.pending.lock()
            && pending.get(key).is_some_and(|e| e.generation == generation)
        {
            pending.remove(key);
        }
    }

    async fn retry_loop(&self, claim: &ClaimRef, key: &ClaimKey, generation: u64, body: &Value) {
        let api = Api::<ClaimObject>::namespaced(self.client.clone(), &claim.namespace);
        let params = PatchParams::apply(FIELD_MANAGER);
        let mut delay = RETRY_FIRST;
        let mut attempt = 1u32;
        while self.is_current(key, generation) {
            match api
                .patch_status(&claim.name, &params, &Patch::Apply(body))
                .await
            {
                Ok(_) => {
                    tracing::debug!(%claim, attempt, "claim device status written");
                    return;
                }
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409 | 422) => {
                    // Gone, replaced (uid), owned by another manager, or refused: no retry
                    // would change that.
                    tracing::info!(%claim, code = status.code, reason = %status.message, "claim device status not written");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%claim, attempt, %error, retry_in_ms = delay.as_millis() as u64, "claim device status write failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                    attempt += 1;
                }
            }
        }
    }
}

/// The applied configuration: the claim (its uid as a precondition) and one entry per device.
fn apply_body(claim: &ClaimRef, devices: &[DeviceNetworkData], now: &str) -> Value {
    let mut metadata = json!({"name": claim.name, "namespace": claim.namespace});
    if let Some(uid) = &claim.uid {
        metadata["uid"] = uid.clone().into();
    }
    let entries: Vec<Value> = devices.iter().map(|d| device_entry(d, now)).collect();
    let status = if entries.is_empty() {
        json!({})
    } else {
        json!({"devices": entries})
    };
    json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": metadata,
        "status": status,
    })
}

fn device_entry(device: &DeviceNetworkData, now: &str) -> Value {
    let mut network = json!({"interfaceName": device.interface_name});
    if !device.ips.is_empty() {
        network["ips"] = device.ips.clone().into();
    }
    if let Some(mac) = &device.hardware_address {
        network["hardwareAddress"] = mac.clone().into();
    }
    let mut entry = json!({
        "driver": device.driver,
        "pool": device.pool,
        "device": device.device,
        "conditions": [{
            "type": "Ready",
            "status": "True",
            "reason": "NetworkAttached",
            "message": format!("attached as {} by network {}", device.interface_name, device.network),
            "lastTransitionTime": now,
        }],
        "networkData": network,
    });
    if let Some(share) = &device.share_id {
        entry["shareID"] = share.clone().into();
    }
    entry
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_applied_status_names_each_device_and_its_network() {
        let claim = ClaimRef {
            namespace: "tenant".into(),
            name: "web-nics".into(),
            uid: Some("u1".into()),
        };
        let device = DeviceNetworkData {
            driver: "net.example.com".into(),
            pool: "node-a".into(),
            device: "vf-0".into(),
            share_id: None,
            interface_name: "net1".into(),
            ips: vec!["198.18.5.2/24".into(), "fd00::2/64".into()],
            hardware_address: Some("02:00:00:00:00:01".into()),
            network: "tenant/vf".into(),
        };
        let body = apply_body(&claim, &[device], "2026-01-01T00:00:00Z");
        assert_eq!(
            body,
            json!({
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaim",
                "metadata": {"name": "web-nics", "namespace": "tenant", "uid": "u1"},
                "status": {"devices": [{
                    "driver": "net.example.com", "pool": "node-a", "device": "vf-0",
                    "conditions": [{
                        "type": "Ready", "status": "True", "reason": "NetworkAttached",
                        "message": "attached as net1 by network tenant/vf",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }],
                    "networkData": {
                        "interfaceName": "net1",
                        "ips": ["198.18.5.2/24", "fd00::2/64"],
                        "hardwareAddress": "02:00:00:00:00:01",
                    },
                }]},
            })
        );
        // Releasing: nothing applied, so whatever Plexus owned goes.
        let release = apply_body(&claim, &[], "2026-01-01T00:00:00Z");
        assert_eq!(release["status"], json!({}));
    }
}
