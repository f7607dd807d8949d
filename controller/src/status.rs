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
    /// The attachment's device information (NPWG §5.3.7, device-info spec §3).
    #[serde(
        rename = "device-info",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub device_info: Option<serde_json::Value>,
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
        device_info: None,
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
/// Default routes of the families a secondary's `default-route` took over are left out, as
/// they are gone from the pod.
pub fn merged_result(
    prev_result: Option<CniResult>,
    cluster: CniResult,
    secondaries: Vec<CniResult>,
    moved_gateways: &[IpAddr],
) -> CniResult {
    let mut merged = prev_result.unwrap_or_default();
    let mut cluster = cluster;
    cluster.routes.retain(|route| {
        let family_moved = moved_gateways
            .iter()
            .any(|gw| gw.is_ipv4() == route.dst.is_ipv4());
        route.dst.prefix != 0 || !family_moved
    });
    merged.append(cluster, true);
    for secondary in secondaries {
        merged.append(secondary, false);
    }
    merged
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::cni::CniVersion;

    fn result(value: Value) -> CniResult {
        CniResult::parse(value.to_string().as_bytes(), CniVersion::V1_1_0)
            .unwrap()
            .0
    }

    fn entry_json(
        network: &str,
        is_default: bool,
        result: Option<&CniResult>,
        default_route: Option<&[IpAddr]>,
    ) -> Value {
        serde_json::to_value(status_entry(network, is_default, result, default_route)).unwrap()
    }

    /// What the bridge plugin prints: the bridge, the host veth, then the pod's interface.
    fn bridge_result() -> CniResult {
        result(json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "3a:00:00:00:00:01"},
                {"name": "veth1234", "mac": "3a:00:00:00:00:02"},
                {"name": "net1", "mac": "c2:11:22:33:44:55", "sandbox": "/var/run/netns/pod"},
            ],
            "ips": [
                {"interface": 2, "address": "10.1.0.5/24", "gateway": "10.1.0.1"},
                {"interface": 1, "address": "169.254.1.1/32"},
                {"interface": 2, "address": "fd00::5/64", "gateway": "fd00::1"},
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
            "dns": {"nameservers": ["10.1.0.53"], "domain": "example.test", "search": ["svc.example.test"], "options": ["ndots:5"]},
        }))
    }

    #[test]
    fn a_bridge_result_is_reported_by_its_pod_side_only() {
        assert_eq!(
            entry_json("ns1/br", false, Some(&bridge_result()), None),
            json!({
                "name": "ns1/br",
                "interface": "net1",
                "ips": ["10.1.0.5", "fd00::5"],
                "mac": "c2:11:22:33:44:55",
                "default": false,
                "dns": {"nameservers": ["10.1.0.53"], "domain": "example.test", "search": ["svc.example.test"]},
            })
        );
    }

    #[test]
    fn default_route_is_listed_only_when_the_selection_gave_one() {
        let gateways: Vec<IpAddr> = vec!["10.1.0.1".parse().unwrap(), "fd00::1".parse().unwrap()];
        let with = entry_json("ns1/br", false, Some(&bridge_result()), Some(&gateways));
        assert_eq!(with["default-route"], json!(["10.1.0.1", "fd00::1"]));
        let without = entry_json("ns1/br", false, Some(&bridge_result()), None);
        assert!(without.get("default-route").is_none(), "{without}");
        assert!(without.get("gateway").is_none(), "{without}");
    }

    #[test]
    fn mac_and_dns_appear_only_when_there_is_something_to_say() {
        let cases = [
            // A sandbox interface without a mac, dns with options only.
            (
                json!({
                    "interfaces": [{"name": "net1", "sandbox": "/var/run/netns/pod"}],
                    "ips": [{"interface": 0, "address": "10.1.0.5/24"}],
                    "dns": {"options": ["ndots:5"]},
                }),
                json!({"name": "n", "interface": "net1", "ips": ["10.1.0.5"], "default": true}),
            ),
            // Macs on host interfaces only: no interface, so no mac either.
            (
                json!({
                    "interfaces": [{"name": "veth1", "mac": "3a:00:00:00:00:02"}],
                    "ips": [{"address": "10.1.0.5/24"}],
                    "dns": {"domain": "example.test"},
                }),
                json!({"name": "n", "ips": ["10.1.0.5"], "default": true, "dns": {"domain": "example.test"}}),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                entry_json("n", true, Some(&result(input.clone())), None),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn without_a_sandbox_interface_the_ips_without_an_interface_are_the_pods() {
        let cases = [
            json!({
                "interfaces": [{"name": "veth1", "mac": "3a:00:00:00:00:02"}],
                "ips": [
                    {"address": "10.1.0.5/24"},
                    {"interface": 0, "address": "169.254.1.1/32"},
                    {"address": "fd00::5/64"},
                ],
            }),
            json!({"ips": [{"address": "10.1.0.5/24"}, {"address": "fd00::5/64"}]}),
        ];
        for input in cases {
            let entry = status_entry("ns1/ipam-only", false, Some(&result(input.clone())), None);
            assert_eq!(entry.ips, ["10.1.0.5", "fd00::5"], "{input}");
            assert_eq!(entry.interface, None);
            assert_eq!(entry.mac, None);
        }
    }

    #[test]
    fn no_result_gives_a_minimal_entry() {
        for is_default in [true, false] {
            assert_eq!(
                entry_json("cluster", is_default, None, None),
                json!({"name": "cluster", "default": is_default})
            );
        }
    }

    #[test]
    fn an_entry_reads_back_as_it_was_written() {
        let gateways: Vec<IpAddr> = vec!["10.1.0.1".parse().unwrap()];
        let entry = status_entry("ns1/br", false, Some(&bridge_result()), Some(&gateways));
        let text = serde_json::to_string(&entry).unwrap();
        assert_eq!(serde_json::from_str::<NetworkStatus>(&text).unwrap(), entry);
    }

    fn cluster_result() -> CniResult {
        result(json!({
            "interfaces": [
                {"name": "veth0", "mac": "3a:00:00:00:00:10"},
                {"name": "eth0", "mac": "c2:00:00:00:00:10", "sandbox": "/var/run/netns/pod"},
            ],
            "ips": [{"interface": 1, "address": "10.244.0.5/24", "gateway": "10.244.0.1"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.0.1"}, {"dst": "10.96.0.0/12"}],
            "dns": {"nameservers": ["10.96.0.10"]},
        }))
    }

    fn secondary_result(ifname: &str, address: &str) -> CniResult {
        result(json!({
            "interfaces": [
                {"name": format!("host-{ifname}")},
                {"name": ifname, "sandbox": "/var/run/netns/pod"},
            ],
            "ips": [{"interface": 1, "address": address, "gateway": "192.168.1.1"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "192.168.1.1"}],
            "dns": {"nameservers": ["192.168.1.53"]},
        }))
    }

    fn interface_of(merged: &CniResult, address: &str) -> Option<String> {
        merged
            .ips
            .iter()
            .find(|ip| ip.address.to_string() == address)
            .and_then(|ip| ip.interface)
            .map(|i| merged.interfaces[i].name.clone())
    }

    #[test]
    fn the_merged_result_has_every_interface_but_only_the_cluster_networks_addresses() {
        let merged = merged_result(
            None,
            cluster_result(),
            vec![
                secondary_result("net1", "192.168.1.5/24"),
                secondary_result("net2", "192.168.2.5/24"),
            ],
            &[],
        );
        let names: Vec<&str> = merged.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            ["veth0", "eth0", "host-net1", "net1", "host-net2", "net2"]
        );
        let cluster = cluster_result();
        assert_eq!(merged.ips, cluster.ips);
        assert_eq!(
            interface_of(&merged, "10.244.0.5/24").as_deref(),
            Some("eth0")
        );
        assert_eq!(merged.routes, cluster.routes);
        assert_eq!(merged.dns, cluster.dns);
    }

    #[test]
    fn a_moved_default_route_is_dropped_from_the_cluster_networks_routes() {
        let merged = merged_result(
            None,
            cluster_result(),
            vec![secondary_result("net1", "192.168.1.5/24")],
            &["192.168.1.1".parse().unwrap()],
        );
        let routes: Vec<String> = merged.routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(routes, ["10.96.0.0/12"]);
    }

    #[test]
    fn a_moved_ipv4_default_route_leaves_the_ipv6_default_route_in_place() {
        let mut cluster = cluster_result();
        cluster.routes.push(crate::cni::result::Route {
            dst: "::/0".parse().unwrap(),
            gw: Some("fd00::1".parse().unwrap()),
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        });
        let merged = merged_result(None, cluster, vec![], &["192.168.1.1".parse().unwrap()]);
        let routes: Vec<String> = merged.routes.iter().map(|r| r.dst.to_string()).collect();
        assert!(
            routes.contains(&"::/0".to_owned()) && !routes.contains(&"0.0.0.0/0".to_owned()),
            "{routes:?}"
        );
        assert_eq!(merged.ips, cluster_result().ips, "addresses are untouched");
    }

    #[test]
    fn a_prev_result_is_kept_at_the_front() {
        let prev = result(json!({
            "interfaces": [{"name": "lo0", "sandbox": "/var/run/netns/pod"}],
            "ips": [{"interface": 0, "address": "127.0.0.2/8"}],
            "routes": [{"dst": "203.0.113.0/24"}],
            "dns": {"nameservers": ["127.0.0.53"], "search": ["local"]},
        }));
        let merged = merged_result(
            Some(prev),
            cluster_result(),
            vec![secondary_result("net1", "192.168.1.5/24")],
            &[],
        );
        let names: Vec<&str> = merged.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["lo0", "veth0", "eth0", "host-net1", "net1"]);
        let addresses: Vec<String> = merged.ips.iter().map(|ip| ip.address.to_string()).collect();
        assert_eq!(addresses, ["127.0.0.2/8", "10.244.0.5/24"]);
        assert_eq!(interface_of(&merged, "127.0.0.2/8").as_deref(), Some("lo0"));
        assert_eq!(
            interface_of(&merged, "10.244.0.5/24").as_deref(),
            Some("eth0")
        );
        let routes: Vec<String> = merged.routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(routes, ["203.0.113.0/24", "0.0.0.0/0", "10.96.0.0/12"]);
        assert_eq!(merged.dns.nameservers, ["127.0.0.53", "10.96.0.10"]);
        assert_eq!(merged.dns.search, ["local"]);
    }

    #[test]
    fn merging_prints_a_valid_result_in_the_runtimes_version() {
        let merged = merged_result(
            None,
            cluster_result(),
            vec![secondary_result("net1", "192.168.1.5/24")],
            &[],
        );
        for version in CniVersion::ALL {
            let (back, written) = CniResult::parse(&merged.to_bytes(version), version).unwrap();
            assert_eq!(written, version);
            assert_eq!(back.interfaces.len(), 4, "{version}");
            assert_eq!(
                interface_of(&back, "10.244.0.5/24").as_deref(),
                Some("eth0")
            );
        }
    }
}
