//! Device information files (NPWG device-info spec v1.1.0). A device plugin writes one file per
//! device it offers, `dp/<resource>-<device id>-device.json` (every `/` turned into `-`);
//! Plexus copies it, for each attachment, to a file of its own under `cni/` (§4.2.1), whose
//! path the delegates that declare `CNIDeviceInfoFile` get (§5.1.1); after the ADD the file's
//! content is the attachment's `device-info` in network-status (§6.1.1); DEL removes it.
//! Device information only informs: a missing or broken file never fails an attachment.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::Device;
use crate::names::{ContainerId, IfName};

/// The device-info directory (`/var/run/k8s.cni.cncf.io/devinfo` on a node).
#[derive(Debug, Clone)]
pub struct DeviceInfoDir {
    root: PathBuf,
}

const PLUGIN_DIR: &str = "dp";
const CNI_DIR: &str = "cni";

impl DeviceInfoDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The device plugin's file for `id` of `resource` (§4.1).
    pub fn plugin_file(&self, resource: &str, id: &str) -> PathBuf {
        self.root.join(PLUGIN_DIR).join(format!(
            "{}-{}-device.json",
            resource.replace('/', "-"),
            id.replace('/', "-")
        ))
    }

    /// Plexus's file for one attachment: unique per network, container and interface, named
    /// as Multus names it.
    pub fn attachment_file(
        &self,
        network: &str,
        container: &ContainerId,
        ifname: &IfName,
    ) -> PathBuf {
        self.root.join(CNI_DIR).join(format!(
            "{}-{container}_{ifname}",
            network.replace('/', "-")
        ))
    }

    /// Copies the device plugin's file for `device` to its attachment file, before the
    /// delegate runs. Without a plugin file (a DRA device, a named one, a plugin that writes
    /// none) there is nothing to copy; the delegate may still write the attachment file itself.
    pub fn offer(&self, device: &Device) {
        let (Some(resource), Some(target)) = (&device.resource, &device.info_file) else {
            return;
        };
        let source = self.plugin_file(resource, &device.id);
        let info = match read(&source) {
            Ok(Some(info)) => info,
            Ok(None) => {
                tracing::debug!(file = %source.display(), "no device-info file from the device plugin");
                return;
            }
            Err(error) => {
                tracing::warn!(file = %source.display(), %error, "device plugin's device-info file skipped");
                return;
            }
        };
        if let Err(error) = write(target, &info) {
            tracing::warn!(file = %target.display(), %error, "cannot write the attachment's device-info file");
        }
    }
}

/// The device information in `path`: `None` when there is no file.
pub fn read(path: &Path) -> io::Result<Option<Value>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let info: Value = serde_json::from_slice(&bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if !info.is_object() || info.get("type").is_none() || info.get("version").is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a device-info object (it needs type and version)",
        ));
    }
    Ok(Some(info))
}

/// The attachment's device information after its ADD, for network-status.
pub fn collect(device: &Device) -> Option<Value> {
    let path = device.info_file.as_deref()?;
    match read(path) {
        Ok(info) => info,
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "device-info left out of network-status");
            None
        }
    }
}

/// Removes the attachment's file (DEL); one that is already gone is fine.
pub fn remove(device: &Device) {
    let Some(path) = &device.info_file else {
        return;
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "cannot remove the attachment's device-info file")
        }
    }
}

/// Writes `info` to `path` whole (temp file, rename), creating the directory (§4.2.1).
fn write(path: &Path, info: &Value) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    std::fs::write(&temp, info.to_string())?;
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::devices::DeviceSource;

    fn device(dir: &DeviceInfoDir, resource: Option<&str>) -> Device {
        Device {
            id: "0000:03:00.2".into(),
            resource: resource.map(str::to_owned),
            source: DeviceSource::DevicePlugin,
            info_file: Some(dir.attachment_file(
                "tenant/vf",
                &ContainerId::parse("c1").unwrap(),
                &IfName::parse("net1").unwrap(),
            )),
        }
    }

    #[test]
    fn file_names_follow_the_spec_and_multus() {
        let dir = DeviceInfoDir::new("/run/devinfo");
        assert_eq!(
            dir.plugin_file("intel.com/sriov_netdevice", "0000:03:00.2"),
            PathBuf::from("/run/devinfo/dp/intel.com-sriov_netdevice-0000:03:00.2-device.json")
        );
        assert_eq!(
            device(&dir, None).info_file.unwrap(),
            PathBuf::from("/run/devinfo/cni/tenant-vf-c1_net1")
        );
    }

    #[test]
    fn the_plugins_file_is_copied_read_back_and_removed() {
        let temp = tempfile::tempdir().unwrap();
        let dir = DeviceInfoDir::new(temp.path());
        let info =
            json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:00.2"}});
        let plugin_file = dir.plugin_file("example.com/vf", "0000:03:00.2");
        std::fs::create_dir_all(plugin_file.parent().unwrap()).unwrap();
        std::fs::write(&plugin_file, info.to_string()).unwrap();

        let device = device(&dir, Some("example.com/vf"));
        dir.offer(&device);
        assert_eq!(collect(&device), Some(info));
        remove(&device);
        assert!(!device.info_file.as_ref().unwrap().exists());
        assert!(
            plugin_file.exists(),
            "the device plugin's file is not Plexus's to remove"
        );
        remove(&device);
    }

    #[test]
    fn a_missing_or_broken_plugin_file_offers_nothing_and_fails_nothing() {
        let temp = tempfile::tempdir().unwrap();
        let dir = DeviceInfoDir::new(temp.path());
        let device = device(&dir, Some("example.com/vf"));
        dir.offer(&device);
        assert_eq!(collect(&device), None);

        let plugin_file = dir.plugin_file("example.com/vf", "0000:03:00.2");
        std::fs::create_dir_all(plugin_file.parent().unwrap()).unwrap();
        for broken in ["{not json", "[1]", r#"{"pci": {}}"#] {
            std::fs::write(&plugin_file, broken).unwrap();
            dir.offer(&device);
            assert_eq!(collect(&device), None, "{broken}");
        }
        // Without a resource there is no plugin file to look for.
        dir.offer(&Device {
            resource: None,
            ..device.clone()
        });
        assert_eq!(collect(&device), None);
    }
}
