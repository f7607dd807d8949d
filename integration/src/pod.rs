//! A pod: its own network namespace, a container id and the CNI_ARGS a runtime would send.

use std::sync::Mutex;

use serde_json::Value;

use crate::Netns;

pub struct Pod {
    pub netns: Netns,
    pub namespace: String,
    pub name: String,
    pub container_id: String,
    /// What the runtime passes as K8S_POD_UID; a real API server assigns it on create.
    uid: Mutex<String>,
}

/// One interface as `ip -j addr` shows it.
#[derive(Debug, Clone)]
pub struct Link {
    pub name: String,
    pub mac: String,
    pub addresses: Vec<String>,
}

impl Pod {
    pub fn new(namespace: &str, name: &str) -> Self {
        let container_id = crate::unique("ctr");
        Self {
            netns: Netns::new("pod"),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: Mutex::new(format!("uid-{container_id}")),
            container_id,
        }
    }

    pub fn uid(&self) -> String {
        self.uid.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes the uid the API server gave the pod, as kubelet would pass it.
    pub fn set_uid(&self, uid: &str) {
        *self.uid.lock().unwrap_or_else(|p| p.into_inner()) = uid.to_owned();
    }

    pub fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.namespace,
            self.name,
            self.container_id,
            self.uid()
        )
    }

    /// The pod as the manifest a user would apply, with its networks annotation.
    pub fn manifest(&self, networks: &str) -> String {
        let annotations = serde_json::json!({ "k8s.v1.cni.cncf.io/networks": networks });
        pod_object(&self.namespace, &self.name, &self.uid(), annotations, None).to_string()
    }

    /// The interfaces in the pod besides loopback, with their addresses in CIDR form.
    pub fn links(&self) -> Vec<Link> {
        parse_links(&self.netns.ip(&["-j", "addr", "show"]))
    }

    pub fn link(&self, name: &str) -> Option<Link> {
        self.links().into_iter().find(|l| l.name == name)
    }

    pub fn link_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.links().into_iter().map(|l| l.name).collect();
        names.sort();
        names
    }

    /// The pod's routes, as `ip -j route` prints them.
    pub fn routes(&self) -> Vec<Value> {
        let json: Value =
            serde_json::from_str(&self.netns.ip(&["-j", "route", "show"])).expect("ip -j route");
        json.as_array().cloned().unwrap_or_default()
    }

    /// Whether `address` answers a ping sent out of `ifname`.
    pub fn ping(&self, ifname: &str, address: &str) -> bool {
        self.netns
            .exec_ok(&["ping", "-c", "1", "-W", "2", "-I", ifname, address])
    }
}

/// The interfaces besides loopback in `ip -j addr` output, with their addresses in CIDR form.
pub fn parse_links(ip_json: &str) -> Vec<Link> {
    let json: Value = serde_json::from_str(ip_json).expect("ip -j addr");
    json.as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["ifname"] != "lo")
        .map(|l| Link {
            name: l["ifname"].as_str().unwrap_or_default().to_owned(),
            mac: l["address"].as_str().unwrap_or_default().to_owned(),
            addresses: l["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["scope"] != "link")
                .map(|a| {
                    format!(
                        "{}/{}",
                        a["local"].as_str().unwrap_or_default(),
                        a["prefixlen"]
                    )
                })
                .collect(),
        })
        .collect()
}

/// A Pod object (JSON is YAML), scheduled on `node` when one is named.
pub fn pod_object(
    namespace: &str,
    name: &str,
    uid: &str,
    annotations: Value,
    node: Option<&str>,
) -> Value {
    let mut spec = serde_json::json!({"containers": [{"name": "app", "image": "app"}]});
    if let Some(node) = node {
        spec["nodeName"] = node.into();
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "annotations": annotations},
        "spec": spec
    })
}
