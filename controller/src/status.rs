//! What Plexus reports: the network-status annotation (NPWG §5) and the merged CNI result
//! that goes back to the runtime.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::cni::CniResult;

pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";

/// One entry of the network-status annotation (NPWG §5.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Bare addresses, the form every consumer of Multus's annotation parses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    pub default: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<StatusDns>,
    #[serde(
        rename = "default-route",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub default_route: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
}

/// The entry for one attachment (NPWG §5.1.1): the first sandbox interface and its addresses,
/// or a minimal entry when the delegate returned nothing to report.
pub fn status_entry(
    network: &str,
    is_default: bool,
    result: Option<&CniResult>,
    default_route: Option<&[IpAddr]>,
) -> NetworkStatus {
    let mut entry = NetworkStatus {
        name: network.to_owned(),
        interface: None,
        ips: Vec::new(),
        mac: None,
        default: is_default,
        dns: None,
        default_route: default_route.map(|gws| gws.iter().map(IpAddr::to_string).collect()),
    };
    let Some(result) = result else { return entry };
    let sandbox = result.first_sandbox_interface();
    // With no sandbox interface, the addresses that belong to no interface are the pod's.
    entry.ips = result
        .ips
        .iter()
        .filter(|ip| ip.interface == sandbox)
        .map(|ip| ip.address.addr.to_string())
        .collect();
    if let Some(interface) = sandbox.and_then(|i| result.interfaces.get(i)) {
        entry.interface = Some(interface.name.clone());
        entry.mac = interface.mac.clone().filter(|m| !m.is_empty());
    }
    let dns = &result.dns;
    if !dns.nameservers.is_empty() || dns.domain.is_some() || !dns.search.is_empty() {
        entry.dns = Some(StatusDns {
            nameservers: dns.nameservers.clone(),
            domain: dns.domain.clone(),
            search: dns.search.clone(),
        });
    }
    entry
}

/// The result the runtime gets: every interface, cluster network's first, but only the
/// cluster network's addresses, routes and DNS, because runtimes report every address of the
/// result as a pod IP (DESIGN: decisions). A `prev_result` from an earlier plugin is kept.
pub fn merged_result(
    prev_result: Option<CniResult>,
    cluster: CniResult,
    secondaries: Vec<CniResult>,
    default_route_moved: bool,
) -> CniResult {
    let mut merged = prev_result.unwrap_or_default();
    let mut cluster = cluster;
    if default_route_moved {
        cluster.routes.retain(|route| route.dst.prefix != 0);
    }
    merged.append(cluster, true);
    for secondary in secondaries {
        merged.append(secondary, false);
    }
    merged
}
