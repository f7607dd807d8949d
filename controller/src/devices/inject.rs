//! Puts a device into the config its delegate runs with. The delegate's config is what the
//! record keeps and what DEL, CHECK and GC run with, so they pass the same device.

use std::path::PathBuf;

use serde_json::Value;

use super::{Device, DeviceSource};
use crate::resolve::Delegate;

/// Gives `delegate` its device: `deviceID` (and `pciBusID`, which older SR-IOV and host-device
/// plugins read) at the top level of every plugin of the chain when the device belongs to the
/// NAD's resource or a claim, as Multus does for sriov-cni; `runtimeConfig.deviceID` and
/// `runtimeConfig.CNIDeviceInfoFile` for the plugins that declare those capabilities.
pub fn give(delegate: &mut Delegate, mut device: Device, info_file: Option<PathBuf>) {
    let id = Value::String(device.id.clone());
    let from_a_pool = device.resource.is_some() || matches!(device.source, DeviceSource::Claim(_));
    if from_a_pool {
        for plugin in plugins_mut(&mut delegate.config) {
            plugin.insert("deviceID".into(), id.clone());
            plugin.insert("pciBusID".into(), id.clone());
        }
    }
    delegate.runtime_config.insert("deviceID".into(), id);
    if let Some(path) = &info_file {
        delegate.runtime_config.insert(
            "CNIDeviceInfoFile".into(),
            path.display().to_string().into(),
        );
    }
    device.info_file = info_file;
    delegate.device = Some(device);
}

/// The plugin objects of a config: each of a conflist's `plugins`, or the single-plugin config.
fn plugins_mut(config: &mut Value) -> Vec<&mut serde_json::Map<String, Value>> {
    let Some(object) = config.as_object_mut() else {
        return Vec::new();
    };
    if object.get("plugins").is_some_and(Value::is_array) {
        return object
            .get_mut("plugins")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object_mut)
            .collect();
    }
    vec![object]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cni::{CniVersion, Command};
    use crate::testing::{RecordingExecutor, chain};

    fn device(resource: Option<&str>, source: DeviceSource) -> Device {
        Device {
            id: "0000:03:00.2".into(),
            resource: resource.map(str::to_owned),
            source,
            info_file: None,
        }
    }

    #[tokio::test]
    async fn every_plugin_of_a_conflist_gets_the_device_and_capable_ones_the_runtime_config() {
        let config = json!({
            "cniVersion": "1.0.0", "name": "vf",
            "plugins": [
                {"type": "sriov", "vlan": 100},
                {"type": "tuning", "capabilities": {"deviceID": true, "CNIDeviceInfoFile": true}},
            ],
        });
        let mut delegate = Delegate::test("tenant/vf", config);
        give(
            &mut delegate,
            device(Some("example.com/vf"), DeviceSource::DevicePlugin),
            Some("/devinfo/cni/tenant-vf-c1_net1".into()),
        );
        let recorded = delegate.device.clone().unwrap();
        assert_eq!(
            recorded.info_file,
            Some(PathBuf::from("/devinfo/cni/tenant-vf-c1_net1"))
        );

        let exec = RecordingExecutor::new();
        let target = crate::attach::Target {
            container_id: "c1",
            netns: "/var/run/netns/pod",
        };
        crate::attach::add_chain(&exec, &delegate, target)
            .await
            .unwrap();
        crate::attach::del_chain(&exec, &delegate, None, target)
            .await
            .unwrap();
        for call in exec.calls() {
            assert_eq!(call.stdin["deviceID"], "0000:03:00.2", "{}", call.line());
            assert_eq!(call.stdin["pciBusID"], "0000:03:00.2", "{}", call.line());
        }
        assert_eq!(
            exec.calls().iter().map(|c| c.command).collect::<Vec<_>>(),
            [Command::Add, Command::Add, Command::Del, Command::Del]
        );
        let calls = exec.calls();
        let tuning = calls.iter().find(|c| c.plugin == "tuning").unwrap();
        assert_eq!(
            tuning.runtime_config(),
            Some(
                &json!({"deviceID": "0000:03:00.2", "CNIDeviceInfoFile": "/devinfo/cni/tenant-vf-c1_net1"})
            )
        );
        let sriov = calls.iter().find(|c| c.plugin == "sriov").unwrap();
        assert_eq!(sriov.runtime_config(), None, "sriov declares nothing");
        assert_eq!(sriov.stdin["vlan"], 100);
        assert_eq!(sriov.stdin["cniVersion"], CniVersion::V1_0_0.as_str());
    }

    #[test]
    fn a_device_named_for_a_network_without_a_resource_goes_to_runtime_config_only() {
        let mut delegate = Delegate::test("tenant/host", chain("host", "1.0.0", &["host-device"]));
        give(&mut delegate, device(None, DeviceSource::Selection), None);
        assert!(delegate.config["plugins"][0].get("deviceID").is_none());
        assert_eq!(
            Value::Object(delegate.runtime_config.clone()),
            json!({"deviceID": "0000:03:00.2"})
        );

        // A single-plugin config gets it at its top level.
        let mut single = Delegate::test(
            "tenant/vf",
            json!({"cniVersion": "1.0.0", "name": "vf", "type": "sriov"}),
        );
        give(
            &mut single,
            device(Some("example.com/vf"), DeviceSource::DevicePlugin),
            None,
        );
        assert_eq!(single.config["deviceID"], "0000:03:00.2");
        assert_eq!(single.config["type"], "sriov");
    }
}
