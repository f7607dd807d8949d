//! What Multus 4.3 did for a pod before a node switched to Plexus: every delegate run directly
//! with the real plugins, as libcni runs a conf or conflist (plugin by plugin, `name`,
//! `cniVersion` and the previous result injected), then Multus's cache written in its own
//! format, which plexusd adopts:
//! - `<cniDir>/<containerID>`: the delegate list as Multus's Go structs marshal it;
//! - `<cniDir>/results/<network>-<containerID>-<ifname>`: libcni's `cniCacheV1` result cache.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::{Value, json};

use crate::{Netns, Pod, binaries};

/// One network Multus attached: the cluster network first, then the pod's NADs.
#[derive(Debug, Clone)]
pub struct MultusDelegate {
    /// Multus's `Name`: a NAD's `namespace/name`; empty for the cluster network's conf file.
    pub name: String,
    /// The conf or conflist, as in the NAD's spec.config or the conf file.
    pub config: Value,
    /// The interface the selection asked for (`name@ifname`).
    pub ifname_request: Option<String>,
}

impl MultusDelegate {
    pub fn cluster(config: &Value) -> Self {
        Self {
            name: String::new(),
            config: config.clone(),
            ifname_request: None,
        }
    }

    pub fn nad(name: &str, config: &Value) -> Self {
        Self {
            name: name.to_owned(),
            config: config.clone(),
            ifname_request: None,
        }
    }

    pub fn on(mut self, ifname: &str) -> Self {
        self.ifname_request = Some(ifname.to_owned());
        self
    }

    /// Multus's rule: the request, the runtime's interface for the first, else net<position>.
    fn ifname(&self, position: usize) -> String {
        match (&self.ifname_request, position) {
            (Some(request), _) => request.clone(),
            (None, 0) => "eth0".to_owned(),
            (None, n) => format!("net{n}"),
        }
    }

    fn config_name(&self) -> String {
        self.config["name"].as_str().unwrap_or_default().to_owned()
    }
}

/// Multus's `cniDir` on a test node.
pub struct MultusCacheDir {
    pub dir: PathBuf,
}

impl MultusCacheDir {
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("results")).expect("mkdir multus cache");
        Self {
            dir: dir.to_owned(),
        }
    }

    pub fn file(&self, pod: &Pod) -> PathBuf {
        self.dir.join(&pod.container_id)
    }

    /// Attaches `pod` as Multus would have, from inside the node's namespace, and writes
    /// Multus's cache. Returns each delegate's ADD result.
    pub fn attach(&self, node: &Netns, pod: &Pod, delegates: &[MultusDelegate]) -> Vec<Value> {
        let mut results = Vec::new();
        for (position, delegate) in delegates.iter().enumerate() {
            let ifname = delegate.ifname(position);
            let result = run_conf(node, pod, &ifname, &delegate.config);
            self.write_result_cache(pod, delegate, &ifname, &result);
            results.push(result);
        }
        let entries: Vec<Value> = delegates.iter().map(delegate_entry).collect();
        std::fs::write(self.file(pod), Value::Array(entries).to_string())
            .expect("write Multus cache");
        results
    }

    fn write_result_cache(
        &self,
        pod: &Pod,
        delegate: &MultusDelegate,
        ifname: &str,
        result: &Value,
    ) {
        let name = delegate.config_name();
        let cache = json!({
            "kind": "cniCacheV1",
            "containerId": pod.container_id,
            "config": base64(&delegate.config),
            "ifName": ifname,
            "networkName": name,
            "netns": pod.netns.path(),
            "cniArgs": libcni_args(pod),
            "result": result,
        });
        let file = format!("{name}-{}-{ifname}", pod.container_id);
        std::fs::write(self.dir.join("results").join(file), cache.to_string())
            .expect("write libcni result cache");
    }

    /// Every file under the cache dir with its contents: Plexus must leave them as they are.
    pub fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        for sub in [self.dir.clone(), self.dir.join("results")] {
            for entry in std::fs::read_dir(&sub).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    let bytes = std::fs::read(entry.path()).expect("read cache file");
                    files.push((entry.path().display().to_string(), bytes));
                }
            }
        }
        files.sort();
        files
    }
}

/// One of Multus's DelegateNetConf records as Go's encoding/json writes it: exported fields by
/// their Go names, `[]byte` in base64, the `json:"-"` housekeeping flags left out.
fn delegate_entry(delegate: &MultusDelegate) -> Value {
    let config = &delegate.config;
    let is_list = config.get("plugins").is_some();
    let mut entry = json!({
        "Conf": if is_list { json!({"ipam": {}, "dns": {}}) } else {
            json!({"cniVersion": config["cniVersion"], "name": config["name"], "type": config["type"], "ipam": {"type": config["ipam"]["type"]}, "dns": {}})
        },
        "ConfList": if is_list {
            json!({"cniVersion": config["cniVersion"], "name": config["name"], "plugins": config["plugins"]})
        } else { json!({"plugins": null}) },
        "CNINetworkConfigList": {"Name": "", "CNIVersion": "", "DisableCheck": false, "DisableGC": false, "Plugins": null, "Bytes": null},
        "Name": delegate.name,
        "IsFilterV4Gateway": false,
        "IsFilterV6Gateway": false,
        "Bytes": base64(config),
    });
    if let Some(request) = &delegate.ifname_request {
        entry["ifnameRequest"] = request.as_str().into();
    }
    entry
}

fn base64(config: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(config.to_string())
}

/// CNI_ARGS as Multus builds them for every delegate.
fn libcni_args(pod: &Pod) -> Value {
    json!([
        ["IgnoreUnknown", "true"],
        ["K8S_POD_NAMESPACE", pod.namespace],
        ["K8S_POD_NAME", pod.name],
        ["K8S_POD_INFRA_CONTAINER_ID", pod.container_id],
        ["K8S_POD_UID", pod.uid()],
    ])
}

/// Runs a conf or conflist's ADD the way libcni does; the last plugin's result.
pub fn run_conf(node: &Netns, pod: &Pod, ifname: &str, config: &Value) -> Value {
    let plugins: Vec<Value> = match config.get("plugins") {
        Some(Value::Array(plugins)) => plugins.clone(),
        _ => vec![config.clone()],
    };
    let args = libcni_args(pod)
        .as_array()
        .into_iter()
        .flatten()
        .map(|pair| {
            format!(
                "{}={}",
                pair[0].as_str().unwrap_or_default(),
                pair[1].as_str().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(";");
    let mut prev: Option<Value> = None;
    for plugin in plugins {
        let mut stdin = plugin.clone();
        stdin["name"] = config["name"].clone();
        stdin["cniVersion"] = config["cniVersion"].clone();
        if let Some(prev) = &prev {
            stdin["prevResult"] = prev.clone();
        }
        let plugin_type = plugin["type"].as_str().expect("plugin type").to_owned();
        let stdout = exec_plugin(
            node,
            &plugin_type,
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", &pod.container_id),
                ("CNI_NETNS", &pod.netns.path()),
                ("CNI_IFNAME", ifname),
                ("CNI_ARGS", &args),
                ("CNI_PATH", binaries::CNI_BIN_DIR),
            ],
            &stdin,
        );
        prev = Some(serde_json::from_slice(&stdout).expect("plugin result"));
    }
    prev.expect("a config with plugins")
}

/// Runs one plugin inside the node's namespace; its stdout, panicking with stderr on failure.
fn exec_plugin(node: &Netns, plugin: &str, env: &[(&str, &str)], stdin: &Value) -> Vec<u8> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", node.name()])
        .arg(Path::new(binaries::CNI_BIN_DIR).join(plugin))
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run plugin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.to_string().as_bytes())
        .expect("write plugin stdin");
    let output = child.wait_with_output().expect("plugin output");
    assert!(
        output.status.success(),
        "{plugin} ADD failed: {} {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}
